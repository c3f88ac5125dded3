#!/usr/bin/env bash
# A local Switchboard cluster without Docker: redis-server, nats-server
# (from the repository's nats.conf) and N nodes (default 2) on loopback.
# Prints each node's chat page; Ctrl-C stops everything it started.
#
#   scripts/local-cluster.sh        # two nodes
#   scripts/local-cluster.sh 3      # three
#
# Open two pages from two different nodes, sign in as two names, and send
# between them: the page shows each message's branch (remote across
# nodes, local on one node, offline to a name nobody uses) and receipts.
# The HTTP API's key is $SWITCHBOARD_API_KEY, or "local" (for
# `switchboard group --api-key local add team alice bob`).
# Needs redis-server and nats-server (scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-2}
if ! [[ $N =~ ^[1-9][0-9]?$ ]]; then
    echo "usage: scripts/local-cluster.sh [number of nodes, 1-99]" >&2
    exit 2
fi
find_bin() {
    command -v "$1" 2>/dev/null || { [ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1"; } ||
        { echo "local-cluster: $1 not found; run scripts/install-deps.sh" >&2; exit 1; }
}
REDIS_SERVER=$(find_bin redis-server)
NATS_SERVER=$(find_bin nats-server)

echo "building (cargo build --release)..."
cargo build --release --locked --quiet
BIN=target/release/switchboard

LOGS=$(mktemp -d /tmp/switchboard-local.XXXXXX)
PIDS=()
cleanup() {
    trap - EXIT INT TERM
    touch "$LOGS/stopping"
    for pidfile in "$LOGS"/node-*.pid; do [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    echo "stopped everything; logs are in $LOGS"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_use() { (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# The preferred port, or the next free one after it.
pick() {
    local port=$1
    while in_use "$port" || [[ " ${TAKEN[*]-} " == *" $port "* ]]; do port=$((port + 1)); done
    TAKEN+=("$port")
    echo "$port"
}
TAKEN=()
wait_port() {
    for _ in $(seq 200); do in_use "$1" && return; sleep 0.05; done
    echo "local-cluster: $2 did not start; see $LOGS" >&2
    exit 1
}

RP=$(pick 6379)
"$REDIS_SERVER" --port "$RP" --bind 127.0.0.1 --save "" --appendonly no >"$LOGS/redis.log" 2>&1 &
PIDS+=("$!")
NP=$(pick 4222); MP=$(pick 8222); CP=$(pick 6222)
"$NATS_SERVER" -c nats.conf -p "$NP" -m "$MP" --cluster "nats://127.0.0.1:$CP" >"$LOGS/nats.log" 2>&1 &
PIDS+=("$!")
wait_port "$RP" redis-server
wait_port "$NP" nats-server

# Each node runs in a loop: `kill -TERM $(cat $LOGS/node-1.pid)` drains
# node-1 (acks-mode sessions resume on the others) and starts it again,
# for trying a rolling restart by hand.
run_node() {
    local i=$1 port=$2
    echo "$port" >"$LOGS/node-$i.port"
    while [ ! -f "$LOGS/stopping" ]; do
        "$BIN" serve --listen "127.0.0.1:$port" --node-id "node-$i" \
            --redis-url "redis://127.0.0.1:$RP" --nats-url "nats://127.0.0.1:$NP" \
            --api-key "${SWITCHBOARD_API_KEY:-local}" \
            --resume-secret "${SWITCHBOARD_RESUME_SECRET:-local}" \
            >>"$LOGS/node-$i.log" 2>&1 &
        echo "$!" >"$LOGS/node-$i.pid"
        wait "$!" || true
        [ -f "$LOGS/stopping" ] || echo "node-$i stopped; starting it again" >&2
    done
}
URLS=()
for i in $(seq "$N"); do
    port=$(pick $((8080 + i)))
    run_node "$i" "$port" &
    PIDS+=("$!")
    wait_port "$port" "node-$i"
    URLS+=("http://127.0.0.1:$port/")
done

echo
echo "Redis on 127.0.0.1:$RP, NATS on 127.0.0.1:$NP, $N node(s):"
for i in $(seq "$N"); do echo "  node-$i  ${URLS[$((i - 1))]}"; done
echo
echo "Open two of these pages, sign in as two names, and send between them."
echo "Terminal instead: $BIN chat --url ${URLS[0]/http/ws} --as alice"
echo "Rolling restart: scripts/rolling-restart.sh (or one node: kill -TERM \$(cat $LOGS/node-1.pid))."
echo "Logs: $LOGS. Ctrl-C stops everything."
# Until Ctrl-C, or until something dies on its own.
set +e
wait -n "${PIDS[@]}"
echo "local-cluster: a process exited by itself; see $LOGS" >&2
exit 1
