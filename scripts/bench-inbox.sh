#!/usr/bin/env bash
# The inbox, last-seen and events figures of BENCHMARKS.md: starts its own
# redis-server, nats-server and two nodes on loopback (one worker thread
# each, as scripts/bench.sh does), runs them with `switchboard bench`, and
# prints the rows. Everything it starts, it stops; every run is bounded.
#
#   scripts/bench-inbox.sh            # ~3 minutes on 2 cores; markdown on stdout
#   QUICK=1 scripts/bench-inbox.sh    # short windows
# scripts/bench.sh appends its section to BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then DUR=2; else DUR=10; fi
ME=bench-inbox.sh
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

start_redis; start_nats
REDIS="redis://127.0.0.1:$RP"
used_memory() { redis-cli -p "$RP" info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p'; }

NODE_FLAGS=(--redis-url "$REDIS" --nats-url "nats://127.0.0.1:$NP" --rate-limit 0 --log warn --worker-threads 1)
start_nodes() {
    AP=$(free_port); BP=$(free_port)
    "$BIN" serve --listen "127.0.0.1:$AP" --node-id bench-a "${NODE_FLAGS[@]}" "$@" >"$WORK/a.log" 2>&1 &
    A_PID=$!; PIDS+=("$A_PID")
    "$BIN" serve --listen "127.0.0.1:$BP" --node-id bench-b "${NODE_FLAGS[@]}" "$@" >"$WORK/b.log" 2>&1 &
    B_PID=$!; PIDS+=("$B_PID")
    wait_port "$AP"; wait_port "$BP"
    URLS="ws://127.0.0.1:$AP,ws://127.0.0.1:$BP"
}
stop_nodes() { kill "$A_PID" "$B_PID"; wait "$A_PID" "$B_PID" 2>/dev/null || true; }
run() {
    local label=$1; shift
    echo ">>> $label: switchboard bench $*" >&2
    echo "$label: switchboard bench $*" >>"$WORK/commands.txt"
    "$BIN" bench "$@" --json | sed "s/^/$label|/" >>"$WORK/results.jsonl"
}

# 1. Offline sends with store: true, and the drain of 1,000 on connect.
start_nodes --inbox "$REDIS" --inbox-max-messages 1000000
SERVERS=(--url "$URLS" --pids "$REDIS_PID,$NATS_PID")
redis-cli -p "$RP" flushall >/dev/null
before=$(used_memory)
run offline-store-2k "${SERVERS[@]}" --mode offline --store --clients 500 --rate 2000 --duration "$DUR" --warmup 1
run offline-nostore-2k "${SERVERS[@]}" --mode offline --clients 500 --rate 2000 --duration "$DUR" --warmup 1
after=$(used_memory)
stored=$(redis-cli -p "$RP" --scan --pattern 'sb:inbox:*' | grep -v ':drain$' | while read -r k; do redis-cli -p "$RP" xlen "$k"; done | paste -sd+ | bc)
echo "memory|{\"stored\":$stored,\"bytes\":$((after - before))}" >>"$WORK/results.jsonl"
run drain-1000 drain --url "$URLS" --messages 1000
run drain-1000-acks drain --url "$URLS" --messages 1000 --acks
stop_nodes

# 2. Last-seen: 10,000 clients connect and leave; the records they leave.
redis-cli -p "$RP" flushall >/dev/null
start_nodes
before=$(used_memory)
run connect-10k connect --url "$URLS" --sessions 10000
sleep 1
after=$(used_memory)
seen=$(redis-cli -p "$RP" --scan --pattern 'sb:seen:*' | wc -l)
echo "last-seen|{\"records\":$seen,\"bytes\":$((after - before))}" >>"$WORK/results.jsonl"
stop_nodes

# 3. Routing with events off, on (NATS, nobody listening), and on with a
# webhook that answers after 5 s.
start_nodes --events false
SERVERS=(--url "$URLS" --pids "$REDIS_PID,$NATS_PID")
run events-off "${SERVERS[@]}" --mode cross --clients 500 --rate 10000 --duration "$DUR"
stop_nodes
start_nodes
SERVERS=(--url "$URLS" --pids "$REDIS_PID,$NATS_PID")
run events-on "${SERVERS[@]}" --mode cross --clients 500 --rate 10000 --duration "$DUR"
stop_nodes
HP=$(free_port)
python3 - "$HP" >"$WORK/hook.log" 2>&1 <<'PY' &
import http.server, socketserver, sys, time
class Slow(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        time.sleep(5)
        self.send_response(204); self.end_headers()
    def log_message(self, *a): pass
socketserver.ThreadingTCPServer.daemon_threads = True
socketserver.ThreadingTCPServer(("127.0.0.1", int(sys.argv[1])), Slow).serve_forever()
PY
HOOK_PID=$!; PIDS+=("$HOOK_PID")
wait_port "$HP"
start_nodes --webhook-url "http://127.0.0.1:$HP/hook" --webhook-secret bench
SERVERS=(--url "$URLS" --pids "$REDIS_PID,$NATS_PID")
run events-webhook-5s "${SERVERS[@]}" --mode cross --clients 500 --rate 10000 --duration "$DUR"
dropped=$(curl -s "http://127.0.0.1:$AP/metrics" | sed -n 's/^switchboard_events_dropped_total{sink="webhook"} //p')
echo "webhook-dropped|{\"dropped\":${dropped:-0}}" >>"$WORK/results.jsonl"
stop_nodes

python3 - "$WORK/results.jsonl" "$WORK/commands.txt" <<'PY'
import json, sys
rows, commands = {}, []
for line in open(sys.argv[1]):
    label, _, body = line.partition("|")
    rows[label] = json.loads(body)
for line in open(sys.argv[2]):
    commands.append(line.rstrip("\n"))
out = []
w = out.append
w("## Inbox, last-seen and events\n")
w("From `scripts/bench-inbox.sh` (its own Redis, NATS and two nodes with one worker thread each; the")
w("commands are below). Server CPU is both nodes plus Redis and NATS.\n")
def traffic(label):
    r = rows[label]
    done = (r["acked_offline"] + r["acked_remote"] + r["acked_local"]) / r["duration_s"]
    return r, done, r["server_cores"] / done * 1e6
w("| run | rate | server CPU per send | ack p50 / p99 (ms) | end-to-end p50 / p99 (ms) | loss |")
w("| --- | --- | --- | --- | --- | --- |")
for label, what in [
    ("offline-nostore-2k", "offline sends (reason read from last-seen), 500 clients"),
    ("offline-store-2k", "offline sends with `store: true` (each appended to an inbox)"),
    ("events-off", "cross-node, `--events false`"),
    ("events-on", "cross-node, events on (NATS)"),
    ("events-webhook-5s", "cross-node, events on, webhook answering after 5 s"),
]:
    r, done, us = traffic(label)
    e2e = r["latency"]
    e2e_text = "-" if e2e["count"] == 0 else f"{e2e['p50_us']/1000:.2f} / {e2e['p99_us']/1000:.2f}"
    a = r["ack_latency"]
    w(f"| {what} | {done:.0f}/s | {us:.0f} µs | {a['p50_us']/1000:.2f} / {a['p99_us']/1000:.2f} | {e2e_text} | {r['loss']*100:.3f}% |")
_, _, with_store = traffic("offline-store-2k")
_, _, without = traffic("offline-nostore-2k")
w("")
w(f"- Storing costs **{with_store - without:.0f} µs of server CPU per stored message** over a plain offline send.")
m = rows["memory"]
w(f"- Redis memory per stored message (100-byte body): **{m['bytes']/m['stored']:.0f} bytes** ({m['stored']} stored, `used_memory` before and after).")
for label in ("drain-1000", "drain-1000-acks"):
    d = rows[label]
    mode = " in acks mode" if label.endswith("acks") else ""
    w(f"- Draining {d['messages']} stored messages on connect{mode}: welcome after {d['welcome_ms']:.1f} ms, **last stored message after {d['last_stored_ms']:.1f} ms**; storing them took {d['store_seconds']*1000:.0f} ms ({d['stores_per_second']:.0f}/s from one sender, 64 in flight).")
s = rows["last-seen"]
w(f"- Last-seen: {s['records']} clients connected and left; **{s['bytes']/s['records']:.0f} bytes of Redis memory per client**.")
w(f"- The webhook answering after 5 s dropped {rows['webhook-dropped']['dropped']} events in that run (steady cross-node traffic emits none; its queue held the connects').")
w("\n```")
out.extend(commands)
w("```")
print("\n".join(out))
PY
