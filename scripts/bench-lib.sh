# Sourced by the bench scripts: the server binaries, a release build, a
# work directory and the processes started, stopped on exit, and free
# loopback ports. $ME names the script in messages.

find_bin() { command -v "$1" 2>/dev/null || { [ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1"; } || { echo "$ME: $1 not found; run scripts/install-deps.sh" >&2; exit 1; }; }
REDIS_SERVER=$(find_bin redis-server)
# The nats-server deployments run (scripts/nats-version, installed by
# scripts/install-deps.sh), else whatever nats-server is on PATH.
if [ -x target/nats-venv/bin/nats-server ]; then
    NATS_SERVER=target/nats-venv/bin/nats-server
else
    NATS_SERVER=$(find_bin nats-server)
fi

cargo build --release --locked --quiet
BIN=target/release/switchboard
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    local port
    while :; do
        port=$(( (RANDOM % 30000) + 20000 ))
        (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
    done
}
# wait_port PORT [LOG]: waits up to 20 s; on failure shows the end of LOG.
wait_port() {
    for _ in $(seq 400); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.05; done
    echo "$ME: nothing listening on port $1" >&2
    [ -n "${2:-}" ] && tail -20 "$2" >&2
    exit 1
}

# start_redis: a redis-server of the script's own on a free port, without
# persistence; sets RP (its port) and REDIS_PID.
start_redis() {
    RP=$(free_port)
    "$REDIS_SERVER" --port "$RP" --bind 127.0.0.1 --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
    REDIS_PID=$!; PIDS+=("$REDIS_PID")
    wait_port "$RP" "$WORK/redis.log"
}

# start_nats [monitor]: a nats-server of the script's own on a free port;
# sets NP (its port) and NATS_PID, and with `monitor` NM (its monitoring
# port, for /varz).
start_nats() {
    NP=$(free_port)
    local monitor=()
    if [ "${1:-}" = monitor ]; then NM=$(free_port); monitor=(-m "$NM"); fi
    "$NATS_SERVER" -a 127.0.0.1 -p "$NP" "${monitor[@]}" >"$WORK/nats.log" 2>&1 &
    NATS_PID=$!; PIDS+=("$NATS_PID")
    wait_port "$NP" "$WORK/nats.log"
    if [ "${1:-}" = monitor ]; then wait_port "$NM" "$WORK/nats.log"; fi
}
