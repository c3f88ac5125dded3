#!/usr/bin/env bash
# A/B of two builds on the same machine, the same servers and the same
# generator: alternating runs of cross-node traffic (500 clients, Poisson
# arrivals, two nodes with one runtime thread each, as scripts/bench.sh's
# cross rows) and of idle memory (sessions held by one node). For a
# change that must not move the figures (a refactoring), or one that must.
#
#   scripts/bench-ab.sh OLD_BINARY NEW_BINARY
#   REPS=5 RATE=2000 IDLE=8000 DUR=10 scripts/bench-ab.sh old new
#
# The generator is NEW_BINARY's `bench` for both builds, so only the
# nodes differ. Prints one row per run, then the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: scripts/bench-ab.sh OLD_BINARY NEW_BINARY" >&2; exit 2; }
OLD=$(realpath "$1"); NEW=$(realpath "$2")
REPS=${REPS:-3}; RATE=${RATE:-10000}; IDLE=${IDLE:-8000}; DUR=${DUR:-10}
ME=bench-ab.sh
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

start_redis; start_nats monitor
# --max-connect-rate: the idle runs open sessions as fast as the generator
# can; admission control is not what they measure.
FLAGS=(--redis-url "redis://127.0.0.1:$RP" --nats-url "nats://127.0.0.1:$NP" --rate-limit 0 --max-sessions 1000000 --log warn --worker-threads 1 --max-connect-rate 1000000)

# nodes BINARY: starts bench-a and bench-b of BINARY; sets URLS, A, B.
nodes() {
    local ap bp
    ap=$(free_port); bp=$(free_port)
    "$1" serve --listen "127.0.0.1:$ap" --node-id bench-a "${FLAGS[@]}" >"$WORK/a.log" 2>&1 &
    A=$!; PIDS+=("$A")
    "$1" serve --listen "127.0.0.1:$bp" --node-id bench-b "${FLAGS[@]}" >"$WORK/b.log" 2>&1 &
    B=$!; PIDS+=("$B")
    wait_port "$ap" "$WORK/a.log"; wait_port "$bp" "$WORK/b.log"
    URLS="ws://127.0.0.1:$ap,ws://127.0.0.1:$bp"; FIRST="ws://127.0.0.1:$ap"
}
stop() { kill "$A" "$B"; wait "$A" "$B" 2>/dev/null || true; }

OUTFILE="$WORK/ab.jsonl"
for rep in $(seq "$REPS"); do
    for side in old new; do
        bin=$OLD; [ "$side" = new ] && bin=$NEW
        nodes "$bin"
        "$NEW" bench --url "$URLS" --pids "$REDIS_PID,$NATS_PID" --nats-monitor "http://127.0.0.1:$NM" \
            --mode cross --clients 500 --rate "$RATE" --duration "$DUR" --json |
            sed "s/^/$side|traffic|/" >>"$OUTFILE"
        stop
        nodes "$bin"
        "$NEW" bench idle --url "$FIRST" --sessions "$IDLE" --concurrency 256 --sources 8 --json |
            sed "s/^/$side|idle|/" >>"$OUTFILE"
        stop
    done
done

python3 - "$OUTFILE" "$RATE" "$IDLE" <<'EOF'
import json, statistics, sys
path, rate, idle = sys.argv[1], sys.argv[2], sys.argv[3]
rows = {"old": {"cpu": [], "p50": [], "p99": [], "kib": []}, "new": {"cpu": [], "p50": [], "p99": [], "kib": []}}
print(f"cross-node at {rate} msgs/s (500 clients), idle with {idle} sessions:")
print("build  server µs/msg  p50 ms  p99 ms  |  idle KiB/session")
for line in open(path):
    side, kind, text = line.split("|", 2)
    data = json.loads(text)
    r = rows[side]
    if kind == "traffic":
        r["cpu"].append(data["server_cpu_us_per_msg"])
        r["p50"].append(data["latency"]["p50_us"] / 1000)
        r["p99"].append(data["latency"]["p99_us"] / 1000)
        print(f"{side:5}  {r['cpu'][-1]:13.1f}  {r['p50'][-1]:6.2f}  {r['p99'][-1]:6.2f}")
    else:
        r["kib"].append(data["nodes"][0]["bytes_per_session"] / 1024)
        print(f"{side:5}  {'':13}  {'':6}  {'':6}  |  {r['kib'][-1]:.2f}")
for side, r in rows.items():
    med = lambda xs: statistics.median(xs) if xs else float("nan")
    print(f"median {side}: {med(r['cpu']):.1f} µs/msg, p50 {med(r['p50']):.2f} ms, p99 {med(r['p99']):.2f} ms, idle {med(r['kib']):.2f} KiB/session")
EOF
