#!/usr/bin/env bash
# What --bus-linger-ms does to cross-node traffic at low and high rates:
# its own Redis, nats-server (with monitoring, to count the bus messages)
# and two nodes of one worker thread each (as scripts/bench.sh's cross
# rows); 500 clients with Poisson sends at 500, 2,000 and 10,000 msgs/s,
# with the linger off and at 1 and 2 ms, alternating. Prints one row per
# run: bus messages per routed message, latency, server CPU per message
# (nodes + Redis + NATS) and the nodes' share.
#
#   scripts/bench-linger.sh            # ~4 minutes
#   REPS=2 DUR=10 LINGERS="0 1" RATES="2000" scripts/bench-linger.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-1}; DUR=${DUR:-10}; LINGERS=${LINGERS:-0 1 2}; RATES=${RATES:-500 2000 10000}
ME=bench-linger.sh
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

start_redis; start_nats monitor
FLAGS=(--redis-url "redis://127.0.0.1:$RP" --nats-url "nats://127.0.0.1:$NP" --rate-limit 0 --max-sessions 1000000 --log warn --worker-threads 1)

echo "| rate | linger | bus msgs per routed | p50 / p99 ms | server µs per msg | nodes' µs per msg |"
echo "| --- | --- | --- | --- | --- | --- |"
for rep in $(seq "$REPS"); do
    for rate in $RATES; do
        for linger in $LINGERS; do
            ap=$(free_port); bp=$(free_port)
            "$BIN" serve --listen "127.0.0.1:$ap" --node-id linger-a --bus-linger-ms "$linger" "${FLAGS[@]}" >"$WORK/a.log" 2>&1 &
            A=$!; PIDS+=("$A")
            "$BIN" serve --listen "127.0.0.1:$bp" --node-id linger-b --bus-linger-ms "$linger" "${FLAGS[@]}" >"$WORK/b.log" 2>&1 &
            B=$!; PIDS+=("$B")
            wait_port "$ap" "$WORK/a.log"; wait_port "$bp" "$WORK/b.log"
            urls="ws://127.0.0.1:$ap,ws://127.0.0.1:$bp"
            # Twice: with Redis and NATS counted, then the nodes alone.
            all=$("$BIN" bench --url "$urls" --pids "$REDIS_PID,$NATS_PID" --nats-monitor "http://127.0.0.1:$NM" \
                --mode cross --clients 500 --rate "$rate" --duration "$DUR" --json 2>/dev/null)
            nodes=$("$BIN" bench --url "$urls" --mode cross --clients 500 --rate "$rate" --duration "$DUR" --json 2>/dev/null)
            python3 - "$rate" "$linger" "$all" "$nodes" <<'PY'
import json, sys
rate, linger, all_, nodes = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
s = lambda d: d["steps"][0] if "steps" in d else d
a, n = s(all_), s(nodes)
print(f"| {int(rate):,} | {linger} ms | {a['bus_msgs_per_routed']:.2f} | {a['latency']['p50_us']/1000:.2f} / {a['latency']['p99_us']/1000:.2f} "
      f"| {a['server_cpu_us_per_msg']:.1f} | {n['server_cpu_us_per_msg']:.1f} |")
PY
            kill "$A" "$B"; wait "$A" "$B" 2>/dev/null || true
        done
    done
done
