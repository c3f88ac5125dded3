#!/usr/bin/env bash
# A/B of two builds' connect + registration: one node (default threads)
# on its own Redis and NATS, `switchboard bench connect --sessions 15000
# --concurrency 256`, alternating builds. Per run: sessions/s, the node's
# and Redis' CPU per connect (from /proc) and Redis commands per connect
# (INFO stats; the bench's sessions close at its end, so their removal
# counts too).
#
#   scripts/bench-ab-connect.sh OLD_BINARY NEW_BINARY
#   REPS=5 SESSIONS=15000 scripts/bench-ab-connect.sh old new
#
# The generator is NEW_BINARY's `bench` for both builds.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: scripts/bench-ab-connect.sh OLD_BINARY NEW_BINARY" >&2; exit 2; }
OLD=$(realpath "$1"); NEW=$(realpath "$2")
REPS=${REPS:-3}; SESSIONS=${SESSIONS:-15000}
ME=bench-ab-connect.sh
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

start_redis; start_nats
# --max-connect-rate: admission control is not what this measures.
FLAGS=(--redis-url "redis://127.0.0.1:$RP" --nats-url "nats://127.0.0.1:$NP" --rate-limit 0 --max-sessions 1000000 --log warn --max-connect-rate 1000000)

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
commands() { redis-cli -p "$RP" info stats | awk -F: '/^total_commands_processed/ {print $2 + 0}'; }
TICK=$(getconf CLK_TCK)

for rep in $(seq "$REPS"); do
    for build in old new; do
        bin=$OLD; [ "$build" = new ] && bin=$NEW
        port=$(free_port)
        "$bin" serve --listen "127.0.0.1:$port" --node-id ab-connect "${FLAGS[@]}" >"$WORK/node.log" 2>&1 &
        node=$!; PIDS+=("$node")
        wait_port "$port" "$WORK/node.log"
        n0=$(cpu "$node"); r0=$(cpu "$REDIS_PID"); c0=$(commands)
        rate=$("$NEW" bench connect --url "ws://127.0.0.1:$port" --sessions "$SESSIONS" --concurrency 256 2>&1 | grep -o '= [0-9]* sessions/s' | tr -dc 0-9)
        n1=$(cpu "$node"); r1=$(cpu "$REDIS_PID"); c1=$(commands)
        awk -v b="$build" -v rep="$rep" -v rate="$rate" -v n=$((n1 - n0)) -v r=$((r1 - r0)) -v c=$((c1 - c0)) -v s="$SESSIONS" -v t="$TICK" \
            'BEGIN { printf "%s run %d: %d sessions/s, node %.0f us/connect, Redis %.0f us/connect, %.2f Redis commands/connect\n", b, rep, rate, n / t * 1e6 / s, r / t * 1e6 / s, c / s }'
        kill "$node"; wait "$node" 2>/dev/null || true
        redis-cli -p "$RP" flushall >/dev/null
    done
done
