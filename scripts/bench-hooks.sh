#!/usr/bin/env bash
# The backend-hook figures (v3) of BENCHMARKS.md: starts its own
# redis-server, nats-server, two nodes on loopback (one worker thread each,
# as scripts/bench.sh does) and two hook backends (`switchboard bench
# hook-backend`: one answers at once, one after 20 ms; both check the
# signature), and measures
#   - the send hook's cost: server CPU per message and latency, cross-node
#     at 2k msgs/s, nodes restarted with and without --hook-url,
#     alternating on the same Redis and NATS; the pair also from the
#     second generator (scripts/loadgen). Server CPU is the nodes, Redis
#     and NATS: the backend's own CPU is the application's, excluded;
#   - a backend that answers after 20 ms: the total rate at 2k and 10k
#     msgs/s (--hook-concurrency sized as rate x latency for 10k), and one
#     session sending 1,000 msgs/s through it (calls overlap per session);
#   - the connect rate with the connect hook against without it.
# Prints the section in markdown. Everything it starts, it stops.
#
#   scripts/bench-hooks.sh            # ~5 minutes on 2 cores
#   QUICK=1 scripts/bench-hooks.sh    # short windows, to try it
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then DUR=2; REPS=1; SESSIONS=2000; else DUR=10; REPS=3; SESSIONS=10000; fi
ME=bench-hooks.sh
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

start_redis; start_nats monitor
HP=$(free_port); SP=$(free_port)
SECRET=bench-hook-secret
"$BIN" bench hook-backend --listen "127.0.0.1:$HP" --secret "$SECRET" >"$WORK/hook-fast.log" 2>&1 &
FAST_PID=$!; PIDS+=("$FAST_PID")
"$BIN" bench hook-backend --listen "127.0.0.1:$SP" --secret "$SECRET" --delay-ms 20 >"$WORK/hook-slow.log" 2>&1 &
SLOW_PID=$!; PIDS+=("$SLOW_PID")
wait_port "$HP" "$WORK/hook-fast.log"; wait_port "$SP" "$WORK/hook-slow.log"
MONITOR=(--nats-monitor "http://127.0.0.1:$NM")
FAST=(--hook-url "http://127.0.0.1:$HP/hook" --hook-secret "$SECRET")
SLOW=(--hook-url "http://127.0.0.1:$SP/hook" --hook-secret "$SECRET")

NODE_FLAGS=(--redis-url "redis://127.0.0.1:$RP" --nats-url "nats://127.0.0.1:$NP" --rate-limit 0 --max-sessions 1000000 --log warn --worker-threads 1)
start_nodes() {
    AP=$(free_port); BP=$(free_port)
    "$BIN" serve --listen "127.0.0.1:$AP" --node-id bench-a "${NODE_FLAGS[@]}" "$@" >"$WORK/a.log" 2>&1 &
    A_PID=$!; PIDS+=("$A_PID")
    "$BIN" serve --listen "127.0.0.1:$BP" --node-id bench-b "${NODE_FLAGS[@]}" "$@" >"$WORK/b.log" 2>&1 &
    B_PID=$!; PIDS+=("$B_PID")
    wait_port "$AP" "$WORK/a.log"; wait_port "$BP" "$WORK/b.log"
    URLS="ws://127.0.0.1:$AP,ws://127.0.0.1:$BP"
    SERVERS=(--url "$URLS" --pids "$REDIS_PID,$NATS_PID" "${MONITOR[@]}")
}
stop_nodes() { kill "$A_PID" "$B_PID"; wait "$A_PID" "$B_PID" 2>/dev/null || true; }
# The node counts what failed (a bench with a wrong secret or a dead
# backend must show it, not flatter): the failures of both nodes, summed.
hook_failures() {
    local total=0 n
    for port in "$AP" "$BP"; do
        n=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^switchboard_hook_failures_total/ {s += $2} END {print s + 0}')
        total=$((total + n))
    done
    echo "$total"
}
run() {
    local label=$1; shift
    echo ">>> $label: switchboard bench $*" >&2
    echo "$label: switchboard bench $*" >>"$WORK/commands.txt"
    "$BIN" bench "$@" --json | sed "s/^/$label|/" >>"$WORK/results.jsonl"
    echo "$label-failures|{\"failures\": $(hook_failures)}" >>"$WORK/results.jsonl"
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

# 1. The send hook against none, alternating, at 2k msgs/s.
for rep in $(seq "$REPS"); do
    for mode in off on; do
        if [ "$mode" = on ]; then start_nodes "${FAST[@]}" --hooks send; else start_nodes; fi
        echo "nodes $mode: switchboard serve ${NODE_FLAGS[*]} $([ "$mode" = on ] && echo "${FAST[*]} --hooks send")" >>"$WORK/commands.txt"
        run "$mode-$rep" "${SERVERS[@]}" --mode cross --clients 500 --rate 2000 --duration "$DUR"
        if [ "$HAVE_NODE" = 1 ] && [ "$rep" = 1 ]; then
            check "check-$mode" --url "$URLS" --pids "$REDIS_PID,$NATS_PID,$A_PID,$B_PID" --clients 500 --rate 2000 --duration "$DUR"
        fi
        stop_nodes
    done
done

# 2. A backend that takes 20 ms: the same load, a heavier one, one busy
# session. At 10k msgs/s each node has 5,000 calls/s x 20 ms = 100 in
# flight, above the default --hook-concurrency of 64: sized to 256 there.
start_nodes
run slow-off-10k "${SERVERS[@]}" --mode cross --clients 500 --rate 10000 --duration "$DUR"
stop_nodes
start_nodes "${SLOW[@]}" --hooks send --hook-concurrency 256
echo "nodes slow: switchboard serve ${NODE_FLAGS[*]} ${SLOW[*]} --hooks send --hook-concurrency 256" >>"$WORK/commands.txt"
run slow-2k "${SERVERS[@]}" --mode cross --clients 500 --rate 2000 --duration "$DUR"
run slow-10k "${SERVERS[@]}" --mode cross --clients 500 --rate 10000 --duration "$DUR"
run slow-one "${SERVERS[@]}" --mode cross --clients 2 --rate 2000 --duration "$DUR"
stop_nodes

# 3. Connect rate with the connect hook against without, alternating.
for rep in $(seq "$REPS"); do
    for mode in off on; do
        if [ "$mode" = on ]; then start_nodes "${FAST[@]}" --hooks connect; else start_nodes; fi
        "$BIN" bench connect --url "$URLS" --sessions 2000 --concurrency 256 >/dev/null 2>&1 # warm-up
        run "connect-$mode-$rep" connect --url "$URLS" --sessions "$SESSIONS" --concurrency 256
        stop_nodes
    done
done

kill "$FAST_PID" "$SLOW_PID"; wait "$FAST_PID" "$SLOW_PID" 2>/dev/null || true
python3 - "$WORK/results.jsonl" "$WORK/commands.txt" "$WORK/hook-fast.log" "$WORK/hook-slow.log" <<'PY'
import json, re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    label, _, body = line.partition("|")
    rows[label] = json.loads(body)
commands = [l.rstrip("\n") for l in open(sys.argv[2])]
def calls(path):
    m = re.search(r"(\d+) calls answered, (\d+) with a bad signature", open(path).read())
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)
fast, slow = calls(sys.argv[3]), calls(sys.argv[4])
failures = sum(r["failures"] for l, r in rows.items() if l.endswith("-failures"))
med = statistics.median
each = lambda xs, f="{:.0f}": "(" + ", ".join(f.format(x) for x in xs) + ")"
out = []
w = out.append
w("## Backend hooks (v3)\n")
w("From `scripts/bench-hooks.sh`: its own Redis, NATS and two nodes with one worker thread each, and")
w("`switchboard bench hook-backend` as the application's backend (answers `{\"allow\":true}`, checks every")
w("signature; its own CPU is the application's and is not counted). Server CPU is both nodes plus Redis")
w(f"and NATS. The backends answered {fast[0] + slow[0]:,} calls, {fast[1] + slow[1]} with a bad signature; the nodes counted")
w(f"{failures} hook failures.\n")
off = [rows[l] for l in sorted(rows) if re.fullmatch(r"off-\d+", l)]
on = [rows[l] for l in sorted(rows) if re.fullmatch(r"on-\d+", l)]
if off and on:
    cpu = lambda rs: [r["server_cpu_us_per_msg"] for r in rs]
    p = lambda rs, q: [r["latency"][q] / 1000 for r in rs]
    w("**The send hook, backend answering at once**, cross-node, 500 clients, 2,000 msgs/s, Poisson arrivals;")
    w("the nodes restarted with and without `--hook-url … --hooks send`, alternating; medians (each run in brackets).\n")
    w("| | server CPU per message | p50 (ms) | p99 (ms) |")
    w("| --- | --- | --- | --- |")
    for name, rs in (("no hooks", off), ("send hook", on)):
        w(f"| {name} | {med(cpu(rs)):.1f} µs {each(cpu(rs))} | {med(p(rs, 'p50_us')):.2f} | {med(p(rs, 'p99_us')):.2f} {each(p(rs, 'p99_us'), '{:.2f}')} |")
    w(f"| **extra** | **{med(cpu(on)) - med(cpu(off)):.1f} µs** | {med(p(on, 'p50_us')) - med(p(off, 'p50_us')):.2f} | **{med(p(on, 'p99_us')) - med(p(off, 'p99_us')):.2f}** |")
if "check-off" in rows and "check-on" in rows:
    a, b = rows["check-off"], rows["check-on"]
    w(f"\nThe second generator (`scripts/loadgen/loadgen.mjs`, one run each, same load): {a['server_cpu_us_per_msg']:.1f} µs without,")
    w(f"{b['server_cpu_us_per_msg']:.1f} µs with the hook: **{b['server_cpu_us_per_msg'] - a['server_cpu_us_per_msg']:.1f} µs extra**; p99 {a['p99_ms']:.2f} and {b['p99_ms']:.2f} ms.")
if "slow-2k" in rows:
    w("\n**A backend that answers after 20 ms** (`--hook-concurrency 256`; 500 clients unless said):\n")
    w("Acked: sends answered by the end of the window plus the bench's grace (sends still waiting on the")
    w("backend when it stops reading are sent but not acked, not lost); received: of those, delivered.\n")
    w("| load | delivered/s | acked | received | errors | p50 (ms) | p99 (ms) | server CPU per message |")
    w("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, name in (("off-1", "2k msgs/s, no hooks"), ("slow-2k", "2k msgs/s, 20 ms hook"),
                        ("slow-off-10k", "10k msgs/s, no hooks"), ("slow-10k", "10k msgs/s, 20 ms hook"),
                        ("slow-one", "one session sending 1,000/s, 20 ms hook")):
        r = rows.get(label)
        if r:
            acked = r["acked_local"] + r["acked_remote"] + r["acked_offline"]
            w(f"| {name} | {r['delivered_rate']:.0f} | {acked} | {r['received']} | {r['errors']} | {r['latency']['p50_us']/1000:.2f} | {r['latency']['p99_us']/1000:.2f} | {r['server_cpu_us_per_msg']:.1f} µs |")
c_off = [rows[l]["rate"] for l in sorted(rows) if re.fullmatch(r"connect-off-\d+", l)]
c_on = [rows[l]["rate"] for l in sorted(rows) if re.fullmatch(r"connect-on-\d+", l)]
if c_off and c_on:
    w(f"\n**Connect rate** (connect and presence registration, 256 at once), alternating: **{med(c_on):,.0f}/s with the connect hook**")
    w(f"{each(c_on)} against {med(c_off):,.0f}/s without {each(c_off)}: **{100 * med(c_on) / med(c_off):.0f} %**.\n")
w("```")
out.extend(commands)
w("```")
print("\n".join(out))
PY
