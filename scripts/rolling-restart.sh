#!/usr/bin/env bash
# Restarts the nodes of a running scripts/local-cluster.sh one by one,
# without losing a message of acks-mode clients (the chat page,
# `switchboard chat`, the Rust ResumingClient):
#
#   scripts/rolling-restart.sh                  # the newest local cluster
#   scripts/rolling-restart.sh /tmp/switchboard-local.XXXXXX
#
# For each node: SIGTERM (the node drains: its acks-mode sessions close with
# 1001 and resume on the other nodes, or are passed on to them), wait until
# it has exited, wait until local-cluster.sh has started it again and its
# /readyz answers 200, then the next. Bounded: each step gives up after
# 30 s. The same procedure for compose and Kubernetes is in
# docs/operations.md ("Upgrading without loss").
set -euo pipefail

LOGS=${1:-$(ls -dt /tmp/switchboard-local.* 2>/dev/null | head -1)}
if [ -z "$LOGS" ] || ! ls "$LOGS"/node-*.pid >/dev/null 2>&1; then
    echo "rolling-restart: no running local cluster found (start scripts/local-cluster.sh first)" >&2
    exit 2
fi

# The port a node listens on (local-cluster.sh writes it down).
port_of() { cat "$LOGS/node-$1.port"; }
ready() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3 && head -1 <&3 | grep -q ' 200 ') 2>/dev/null
}
within() { # within SECONDS CONDITION...: polls until it holds
    local deadline=$((SECONDS + $1)); shift
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}
gone() { ! kill -0 "$1" 2>/dev/null; }
restarted() { [ "$(cat "$LOGS/node-$1.pid")" != "$2" ] && ready "$3"; }

for pidfile in $(ls "$LOGS"/node-*.pid | sort -V); do
    i=$(basename "$pidfile" .pid); i=${i#node-}
    pid=$(cat "$pidfile")
    port=$(port_of "$i")
    echo "node-$i (pid $pid, port $port): draining"
    started=$SECONDS
    kill -TERM "$pid"
    within 30 gone "$pid" || { echo "rolling-restart: node-$i did not exit within 30 s" >&2; exit 1; }
    echo "node-$i: exited after $((SECONDS - started)) s; waiting for its new run"
    within 30 restarted "$i" "$pid" "$port" || { echo "rolling-restart: node-$i did not come back ready within 30 s" >&2; exit 1; }
    echo "node-$i: back (pid $(cat "$pidfile")), ready"
done
echo "rolling-restart: every node restarted"
