#!/usr/bin/env bash
# The reconnect-storm figures (v3) of BENCHMARKS.md: its own redis-server,
# nats-server and three nodes on loopback (one worker thread each, as
# scripts/bench.sh does). For N = 5,000 and 15,000 sessions on one node,
# that node is SIGKILLed (plain and acks-mode clients) or drained with
# SIGTERM (acks mode, with 200 msgs/s sent to the storm's clients
# meanwhile), and `switchboard bench storm` reports how the clients come
# back to the other two. Every row restarts the three nodes.
# Prints the section in markdown. Everything it starts, it stops.
#
#   scripts/bench-storm.sh            # ~5 minutes on 2 cores
#   QUICK=1 scripts/bench-storm.sh    # 2,000 sessions only, to try it
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then SIZES=(2000); else SIZES=(5000 15000); fi
ME=bench-storm.sh
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

start_redis; start_nats
REDIS="redis://127.0.0.1:$RP"

NODE_FLAGS=(--redis-url "$REDIS" --nats-url "nats://127.0.0.1:$NP" --rate-limit 0 --max-sessions 1000000 --log warn --worker-threads 1 --resume-secret bench-storm)
start_nodes() {
    NODE_PIDS=(); URLS=""
    for name in a b c; do
        local port; port=$(free_port)
        "$BIN" serve --listen "127.0.0.1:$port" --node-id "storm-$name" "${NODE_FLAGS[@]}" "$@" >"$WORK/$name.log" 2>&1 &
        NODE_PIDS+=("$!"); PIDS+=("$!")
        wait_port "$port" "$WORK/$name.log"
        URLS="${URLS:+$URLS,}ws://127.0.0.1:$port"
    done
}
stop_nodes() {
    for pid in "${NODE_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${NODE_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
run() {
    local label=$1; shift
    echo ">>> $label: switchboard bench storm $*" >&2
    echo "$label: switchboard bench storm $*" >>"$WORK/commands.txt"
    "$BIN" bench storm "$@" --json | sed "s/^/$label|/" >>"$WORK/results.jsonl"
}

for n in "${SIZES[@]}"; do
    for row in kill kill-acks drain-acks kill-2k; do
        # kill-2k: the survivors admit 2,000 new sessions a second each
        # (the default is 5,000), the rate that keeps the connect p99
        # near 1 s for nodes of one thread on this 2-core machine.
        if [ "$row" = kill-2k ]; then start_nodes --max-connect-rate 2000; else start_nodes; fi
        # The first URL is the node stopped; --pids: Redis and NATS count
        # as server CPU with the two survivors.
        common=(--url "$URLS" --pids "$REDIS_PID,$NATS_PID" --victim-pid "${NODE_PIDS[0]}" --redis-url "$REDIS" --sessions "$n")
        case $row in
            kill) run "$row-$n" "${common[@]}" --how kill ;;
            kill-2k)
                echo "kill-2k-$n nodes: switchboard serve … --max-connect-rate 2000" >>"$WORK/commands.txt"
                run "$row-$n" "${common[@]}" --how kill ;;
            kill-acks) run "$row-$n" "${common[@]}" --how kill --acks ;;
            drain-acks) run "$row-$n" "${common[@]}" --how drain --acks --rate 200 ;;
        esac
        stop_nodes
        redis-cli -p "$RP" flushall >/dev/null 2>&1 || "$REDIS_SERVER" --version >/dev/null
    done
done

python3 - "$WORK/results.jsonl" "$WORK/commands.txt" <<'PY'
import json, sys
rows = []
for line in open(sys.argv[1]):
    label, _, body = line.partition("|")
    rows.append((label, json.loads(body)))
commands = [l.rstrip("\n") for l in open(sys.argv[2])]
out = []
w = out.append
w("## Reconnect storms (v3)\n")
w("From `scripts/bench-storm.sh`: its own Redis, NATS and three nodes with one worker thread each; N sessions")
w("on one node, which is SIGKILLed or drained (SIGTERM); the clients come back to the other two the way the")
w("clients do (a drain's `reconnect_after_ms` hint, default spread 2 s; else backoff with full jitter from")
w("100 ms; never before a `Retry-After`; default `--max-connect-rate` 5,000/s per node). Times are from the")
w("signal; connect latency is per attempt; CPU is the two survivors plus Redis and NATS over the storm.\n")
w("| N | stop | clients | 50 % back | 99 % | 100 % | resumed | connect p50 / p99 | refused | Redis cmds per reconnect | server CPU | traffic during it |")
w("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for label, r in rows:
    t = r.get("traffic")
    traffic = "—" if not t else (f"{t['acked_routed']} routed: {t['delivered_receipts']} delivered, {t['offline_later']} offline by receipt; "
                                 f"**{t['lost']} lost**, {t['duplicates']} twice, {t['false_delivered']} false deliveries; {t['acked_offline']} acked offline")
    refused = ", ".join(f"{k}: {v}" for k, v in sorted(r["refused"].items())) or "0"
    fmt = lambda v: "—" if v is None else f"{v / 1000:.2f} s"
    cmds = r.get("redis_commands_per_reconnect")
    stop = r['how'] + (", 2,000/s admitted" if label.startswith("kill-2k") else "")
    w(f"| {r['sessions']:,} | {stop} | {'acks' if r['acks'] else 'plain'} | {fmt(r['t50_ms'])} | {fmt(r['t99_ms'])} | {fmt(r['t100_ms'])} "
      f"| {r['resumed']} | {r['connect_p50_ms']:.1f} / {r['connect_p99_ms']:.1f} ms | {refused} | {'—' if cmds is None else f'{cmds:.1f}'} "
      f"| {r['server_cpu_s']:.1f} s ({r['server_cores']:.2f} cores) | {traffic} |")
w("\n```")
out.extend(commands)
w("```")
print("\n".join(out))
PY
