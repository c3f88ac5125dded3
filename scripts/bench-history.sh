#!/usr/bin/env bash
# The history figures (v3) of BENCHMARKS.md: starts its own redis-server,
# nats-server and two nodes on loopback (one worker thread each, as
# scripts/bench.sh does), and measures
#   - server CPU per message with history on against off, cross-node at 2k
#     and 10k msgs/s, alternating on the same Redis and NATS (the nodes
#     restarted with or without --history, which is the presence Redis);
#     the 2k pair also from the second generator (scripts/loadgen);
#   - with `switchboard bench history`: Redis memory per kept message and
#     per conversation, sync on login (1,000 missed messages in 50
#     conversations), and history pages and conversation lists while
#     2,000 msgs/s of traffic run beside them.
# Prints the section in markdown. Everything it starts, it stops.
#
#   scripts/bench-history.sh            # ~6 minutes on 2 cores
#   QUICK=1 scripts/bench-history.sh    # short windows, to try it
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then DUR=2; REPS=1; else DUR=10; REPS=3; fi
ME=bench-history.sh
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

start_redis; start_nats monitor
REDIS="redis://127.0.0.1:$RP"
MONITOR=(--nats-monitor "http://127.0.0.1:$NM")

NODE_FLAGS=(--redis-url "$REDIS" --nats-url "nats://127.0.0.1:$NP" --rate-limit 0 --max-sessions 1000000 --log warn --worker-threads 1)
start_nodes() {
    AP=$(free_port); BP=$(free_port)
    "$BIN" serve --listen "127.0.0.1:$AP" --node-id bench-a "${NODE_FLAGS[@]}" "$@" >"$WORK/a.log" 2>&1 &
    A_PID=$!; PIDS+=("$A_PID")
    "$BIN" serve --listen "127.0.0.1:$BP" --node-id bench-b "${NODE_FLAGS[@]}" "$@" >"$WORK/b.log" 2>&1 &
    B_PID=$!; PIDS+=("$B_PID")
    wait_port "$AP" "$WORK/a.log"; wait_port "$BP" "$WORK/b.log"
    URLS="ws://127.0.0.1:$AP,ws://127.0.0.1:$BP"
}
stop_nodes() { kill "$A_PID" "$B_PID"; wait "$A_PID" "$B_PID" 2>/dev/null || true; }
run() {
    local label=$1; shift
    echo ">>> $label: switchboard bench $*" >&2
    echo "$label: switchboard bench $*" >>"$WORK/commands.txt"
    "$BIN" bench "$@" --json | sed "s/^/$label|/" >>"$WORK/results.jsonl"
}
check() {
    local label=$1; shift
    echo ">>> $label: node scripts/loadgen/loadgen.mjs $*" >&2
    echo "$label: node scripts/loadgen/loadgen.mjs $*" >>"$WORK/commands.txt"
    node scripts/loadgen/loadgen.mjs "$@" | sed "s/^/$label|/" >>"$WORK/results.jsonl"
}
HAVE_NODE=0
if command -v node >/dev/null; then
    HAVE_NODE=1
    [ -d scripts/loadgen/node_modules ] || (cd scripts/loadgen && npm ci --no-audit --no-fund --silent)
fi

# 1. History off and on, alternating, at 2k and 10k msgs/s.
for rep in $(seq "$REPS"); do
    for mode in off on; do
        if [ "$mode" = on ]; then start_nodes --history "$REDIS"; else start_nodes; fi
        SERVERS=(--url "$URLS" --pids "$REDIS_PID,$NATS_PID" "${MONITOR[@]}")
        for rate in 2000 10000; do
            run "$mode-$((rate / 1000))k-$rep" "${SERVERS[@]}" --mode cross --clients 500 --rate "$rate" --duration "$DUR"
        done
        if [ "$HAVE_NODE" = 1 ] && [ "$rep" = 1 ]; then
            check "check-$mode-2k" --url "$URLS" --pids "$REDIS_PID,$NATS_PID,$A_PID,$B_PID" --clients 500 --rate 2000 --duration "$DUR"
        fi
        stop_nodes
    done
done

# 2. Memory and sync on login on quiet nodes (nothing else writes to the
# Redis meanwhile), then reads beside 2,000 msgs/s of traffic.
redis-cli -p "$RP" flushall >/dev/null
start_nodes --history "$REDIS"
run history history --url "$URLS" --redis-url "$REDIS" --conversations 50 --messages 10 --payload 100 --duration 0
"$BIN" bench --url "$URLS" --mode cross --clients 500 --rate 2000 --duration $((DUR * 3)) >/dev/null 2>&1 &
TRAFFIC=$!
echo "traffic beside the reads: switchboard bench --url $URLS --mode cross --clients 500 --rate 2000 --duration $((DUR * 3))" >>"$WORK/commands.txt"
sleep 3
run history-reads history --url "$URLS" --conversations 50 --messages 10 --payload 100 --logins 0 --rate 50 --duration "$DUR"
wait "$TRAFFIC" || true
stop_nodes

python3 - "$WORK/results.jsonl" "$WORK/commands.txt" "$("$NATS_SERVER" --version)" "$("$REDIS_SERVER" --version | sed 's/ sha=.*//')" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    label, _, body = line.partition("|")
    rows[label] = json.loads(body)
commands = [l.rstrip("\n") for l in open(sys.argv[2])]
out = []
w = out.append
med = statistics.median
w("## History (v3)\n")
w("From `scripts/bench-history.sh` (its own Redis, NATS and two nodes with one worker thread each; the")
w(f"history in the presence Redis; {sys.argv[3]}; {sys.argv[4]}). Server CPU is both nodes plus Redis and NATS.\n")
w("**The cost of keeping every message**, cross-node, 500 clients, Poisson arrivals; the nodes restarted")
w("with and without `--history`, alternating; medians (each run in brackets).\n")
w("| rate | server CPU per message, history off | on | extra per message | p50 / p99 off (ms) | p50 / p99 on (ms) |")
w("| --- | --- | --- | --- | --- | --- |")
for k in ("2k", "10k"):
    off = [rows[l] for l in sorted(rows) if l.startswith(f"off-{k}-")]
    on = [rows[l] for l in sorted(rows) if l.startswith(f"on-{k}-")]
    if not off or not on:
        continue
    cu = lambda rs: [r["server_cpu_us_per_msg"] for r in rs]
    each = lambda xs: "(" + ", ".join(f"{x:.0f}" for x in xs) + ")"
    lat = lambda rs: f"{med([r['latency']['p50_us'] for r in rs])/1000:.2f} / {med([r['latency']['p99_us'] for r in rs])/1000:.2f}"
    w(f"| {off[0]['offered_rate']} | {med(cu(off)):.1f} µs {each(cu(off))} | {med(cu(on)):.1f} µs {each(cu(on))} | **{med(cu(on)) - med(cu(off)):.1f} µs** | {lat(off)} | {lat(on)} |")
if "check-off-2k" in rows and "check-on-2k" in rows:
    a, b = rows["check-off-2k"], rows["check-on-2k"]
    w(f"\nThe second generator (`scripts/loadgen/loadgen.mjs`, one run each) at 2,000 msgs/s: {a['server_cpu_us_per_msg']:.1f} µs off,")
    w(f"{b['server_cpu_us_per_msg']:.1f} µs on: **{b['server_cpu_us_per_msg'] - a['server_cpu_us_per_msg']:.1f} µs extra**; p50 {a['p50_ms']:.2f} and {b['p50_ms']:.2f} ms.")
h = rows.get("history")
if h:
    total = 2 * h["conversations"] * h["messages"]
    w("")
    if h.get("redis_bytes_per_message") is not None:
        w(f"**Redis memory** (`MEMORY USAGE … SAMPLES 0`, key by key): **{h['redis_bytes_per_message']:.0f} bytes per kept message** with a")
        w(f"{h['payload']}-byte padding (a body of about {h['payload'] + 20} bytes of JSON; one conversation of {h.get('memory_messages', 2000)} messages), and")
        w(f"**{h['redis_bytes_per_conversation']:.0f} bytes per conversation** beyond its messages (its two hashes, its stream's own")
        w(f"structure, both clients' entries in their lists; {h['conversations']} conversations of {total // h['conversations']} messages).\n")
    l = h["login"]
    w(f"**Sync on login**: a fresh device of a client with {total} messages in {h['conversations']} conversations lists them")
    w(f"and pages every one (all pages asked for at once): **p50 {l['p50_us']/1000:.1f} ms, max {l['max_us']/1000:.1f} ms** from")
    w(f"connecting to the last page, over {l['count']} logins.\n")
h = rows.get("history-reads")
if h:
    p, c = h["page"], h["list"]
    w(f"**Reads under 2,000 msgs/s of traffic**: a `history` page of 50: p50 {p['p50_us']/1000:.2f} / **p99 {p['p99_us']/1000:.2f} ms**;")
    w(f"`conversations` of 50 with unread counts: p50 {c['p50_us']/1000:.2f} / **p99 {c['p99_us']/1000:.2f} ms** ({h['reads']} reads).\n")
w("```")
out.extend(commands)
w("```")
print("\n".join(out))
PY
