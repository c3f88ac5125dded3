#!/usr/bin/env bash
# Switchboard against Socket.IO 4.8 with the Redis adapter, on one run,
# with one generator for both (scripts/loadgen/loadgen.mjs, which speaks
# either; socketio-server.mjs is the Socket.IO side). Each side gets two
# nodes of one thread (Socket.IO's Node.js is one thread; a Switchboard
# node runs with --worker-threads 1), its own Redis, and Switchboard its
# NATS. 500 clients in cross-node pairs send with Poisson arrivals at
# 2,000 and 10,000 msgs/s, the two sides alternating, REPS times; Socket.IO
# twice, with its acknowledgement asked for each send (as Switchboard acks
# each) and without. Then memory per idle connection: IDLE connections on
# a fresh node of each.
#
# Prints one row per run and per side: the nodes' CPU per message, the
# whole servers' (nodes + Redis, + NATS for Switchboard), p50/p99, and the
# generator's own cores (it shares the 2 cores: a heavier client library
# leaves the servers less); then the idle rows. The ratios in BENCHMARKS.md are Switchboard / Socket.IO.
#
#   scripts/bench-socketio.sh              # ~7 minutes
#   REPS=1 RATES=2000 IDLE=2000 scripts/bench-socketio.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-2}; DUR=${DUR:-10}; RATES=${RATES:-2000 10000}; IDLE=${IDLE:-8000}
ME=bench-socketio.sh
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
command -v node >/dev/null || { echo "$ME: needs Node.js (scripts/install-deps.sh)" >&2; exit 1; }
if [ ! -d scripts/loadgen/node_modules/socket.io ]; then
    (cd scripts/loadgen && npm ci --no-audit --no-fund --silent)
fi

# Switchboard's servers, then Socket.IO's own Redis.
start_redis; SB_RP=$RP; SB_REDIS=$REDIS_PID
start_nats
start_redis; IO_RP=$RP; IO_REDIS=$REDIS_PID

FLAGS=(--redis-url "redis://127.0.0.1:$SB_RP" --nats-url "nats://127.0.0.1:$NP" --rate-limit 0
    --max-sessions 1000000 --max-connect-rate 1000000 --log warn --worker-threads 1)
# start_switchboard NAME: a node; sets STARTED (pid) and PORT.
start_switchboard() {
    PORT=$(free_port)
    "$BIN" serve --listen "127.0.0.1:$PORT" --node-id "$1" "${FLAGS[@]}" >"$WORK/$1.log" 2>&1 &
    STARTED=$!; PIDS+=("$STARTED")
    wait_port "$PORT" "$WORK/$1.log"
}
# start_socketio NAME: a Socket.IO node; sets STARTED (pid) and PORT.
start_socketio() {
    PORT=$(free_port)
    node scripts/loadgen/socketio-server.mjs --port "$PORT" --redis "redis://127.0.0.1:$IO_RP" >"$WORK/$1.log" 2>&1 &
    STARTED=$!; PIDS+=("$STARTED")
    wait_port "$PORT" "$WORK/$1.log"
}

start_switchboard sb-a; SA=$STARTED; SA_PORT=$PORT
start_switchboard sb-b; SB=$STARTED; SB_PORT=$PORT
start_socketio io-a; IA=$STARTED; IA_PORT=$PORT
start_socketio io-b; IB=$STARTED; IB_PORT=$PORT

row() { # row SIDE RATE JSON
    python3 - "$@" <<'PY'
import json, sys
side, rate, r = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
print(f"| {side} | {rate:,} | {r['delivered_rate']:,.0f} | {r['nodes_cpu_us_per_msg']:.1f} | {r['server_cpu_us_per_msg']:.1f} "
      f"| {r['p50_ms']:.2f} / {r['p99_ms']:.2f} | {r['generator_cores']:.2f} |")
PY
}

echo "| side | rate | delivered/s | nodes' µs per msg | servers' µs per msg | p50 / p99 ms | generator cores |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for rep in $(seq "$REPS"); do
    for rate in $RATES; do
        sb=$(node scripts/loadgen/loadgen.mjs --url "ws://127.0.0.1:$SA_PORT,ws://127.0.0.1:$SB_PORT" \
            --pids "$SA,$SB,$NATS_PID,$SB_REDIS" --node-pids "$SA,$SB" --clients 500 --rate "$rate" --duration "$DUR")
        row switchboard "$rate" "$sb"
        io=$(node scripts/loadgen/loadgen.mjs --proto socketio --url "http://127.0.0.1:$IA_PORT,http://127.0.0.1:$IB_PORT" \
            --pids "$IA,$IB,$IO_REDIS" --node-pids "$IA,$IB" --clients 500 --rate "$rate" --duration "$DUR")
        row socket.io "$rate" "$io"
        io=$(node scripts/loadgen/loadgen.mjs --proto socketio --ack 0 --url "http://127.0.0.1:$IA_PORT,http://127.0.0.1:$IB_PORT" \
            --pids "$IA,$IB,$IO_REDIS" --node-pids "$IA,$IB" --clients 500 --rate "$rate" --duration "$DUR")
        row "socket.io, no ack" "$rate" "$io"
    done
done

# Memory per idle connection, on fresh nodes (the ones above have grown
# with the traffic).
echo
echo "| side | idle connections | RSS before → after MiB | KiB per connection |"
echo "| --- | --- | --- | --- |"
idle_row() { # idle_row SIDE JSON
    python3 - "$@" <<'PY'
import json, sys
side, r = sys.argv[1], json.loads(sys.argv[2])
print(f"| {side} | {r['sessions']:,} | {r['rss_before_mib']} → {r['rss_after_mib']} | {r['kib_per_session']} |")
PY
}
for rep in $(seq "$REPS"); do
    start_switchboard sb-idle-$rep
    idle_row switchboard "$(node scripts/loadgen/idle.mjs --proto switchboard --url "ws://127.0.0.1:$PORT" --pid "$STARTED" --sessions "$IDLE")"
    kill "$STARTED"
    start_socketio io-idle-$rep
    idle_row socket.io "$(node scripts/loadgen/idle.mjs --proto socketio --url "http://127.0.0.1:$PORT" --pid "$STARTED" --sessions "$IDLE")"
    kill "$STARTED"
done
