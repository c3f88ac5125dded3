#!/usr/bin/env bash
# The presence and signals figures (v3) of BENCHMARKS.md: starts its own
# redis-server, nats-server (with monitoring, for bus messages) and two
# nodes on loopback (one worker thread each, as scripts/bench.sh does),
# runs `switchboard bench fanout|watch-idle|storm` and `--mode signal`, and
# checks the fan-out and the signal rows with the second generator
# (scripts/loadgen: fanout.mjs, loadgen.mjs --kind signal). Prints the
# section in markdown. Everything it starts, it stops; every run is bounded.
#
#   scripts/bench-presence.sh            # ~6 minutes on 2 cores
#   QUICK=1 scripts/bench-presence.sh    # small and short, to try it
# scripts/bench.sh appends its section to BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
    DUR=2; WATCHERS=1000; CHANGES=6; IDLE_SESSIONS=1000; IDLE_WATCH=50; STORM=1000; STORM_WATCH=20; STORM_WITHIN=3; REPS=1
else
    DUR=10; WATCHERS=10000; CHANGES=20; IDLE_SESSIONS=5000; IDLE_WATCH=200; STORM=5000; STORM_WATCH=50; STORM_WITHIN=10; REPS=3
fi
ME=bench-presence.sh
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

start_redis; start_nats monitor
REDIS="redis://127.0.0.1:$RP"
MONITOR=(--nats-monitor "http://127.0.0.1:$NM")

# --signal-rate 1000: the signal rows offer each client ~10 a second, in
# Poisson bursts; the default (10) would drop the bursts' excess.
NODE_FLAGS=(--redis-url "$REDIS" --nats-url "nats://127.0.0.1:$NP" --rate-limit 0 --max-sessions 1000000 --log warn --worker-threads 1 --signal-rate 1000)
start_nodes() {
    redis-cli -p "$RP" flushall >/dev/null
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
    local label=$1 script=$2; shift 2
    echo ">>> $label: node scripts/loadgen/$script $*" >&2
    echo "$label: node scripts/loadgen/$script $*" >>"$WORK/commands.txt"
    node "scripts/loadgen/$script" "$@" | sed "s/^/$label|/" >>"$WORK/results.jsonl"
}
HAVE_NODE=0
if command -v node >/dev/null; then
    HAVE_NODE=1
    [ -d scripts/loadgen/node_modules ] || (cd scripts/loadgen && npm ci --no-audit --no-fund --silent)
fi

# 1. One client watched by many sessions over both nodes comes and goes:
# once with each generator, on fresh nodes each time.
start_nodes
run fanout fanout --url "$URLS" --pids "$REDIS_PID,$NATS_PID" "${MONITOR[@]}" --watchers "$WATCHERS" --changes "$CHANGES"
stop_nodes
if [ "$HAVE_NODE" = 1 ]; then
    start_nodes
    check fanout-check fanout.mjs --url "$URLS" --pids "$REDIS_PID,$NATS_PID,$A_PID,$B_PID" --watchers "$WATCHERS" --changes "$CHANGES"
    stop_nodes
fi

# 2. Memory per watch: every session on one node watches the next ones.
start_nodes
run watch-idle watch-idle --url "ws://127.0.0.1:$AP" --sessions "$IDLE_SESSIONS" --watch "$IDLE_WATCH" --redis-url "$REDIS"
stop_nodes

# 3. Signals against messages, cross-node at the same rate, alternating;
# the signal rows also from the second generator.
start_nodes
SERVERS=(--url "$URLS" --pids "$REDIS_PID,$NATS_PID" "${MONITOR[@]}")
for rep in $(seq "$REPS"); do
    run "messages-5k-$rep" "${SERVERS[@]}" --mode cross --clients 500 --rate 5000 --duration "$DUR"
    run "signals-5k-$rep" "${SERVERS[@]}" --mode signal --clients 500 --rate 5000 --duration "$DUR"
    if [ "$HAVE_NODE" = 1 ]; then
        check "messages-5k-check-$rep" loadgen.mjs --url "$URLS" --pids "$REDIS_PID,$NATS_PID,$A_PID,$B_PID" --clients 500 --rate 5000 --duration "$DUR"
        check "signals-5k-check-$rep" loadgen.mjs --url "$URLS" --pids "$REDIS_PID,$NATS_PID,$A_PID,$B_PID" --clients 500 --rate 5000 --duration "$DUR" --kind signal
    fi
done
stop_nodes

# 4. A login storm: clients that watch each other connect within seconds.
start_nodes
run storm watch-storm --url "$URLS" --pids "$REDIS_PID,$NATS_PID" "${MONITOR[@]}" --sessions "$STORM" --watch "$STORM_WATCH" --within "$STORM_WITHIN" --redis-url "$REDIS"
stop_nodes

python3 - "$WORK/results.jsonl" "$WORK/commands.txt" "$("$NATS_SERVER" --version)" "$("$REDIS_SERVER" --version | sed 's/ sha=.*//')" <<'PY'
import json, statistics, sys
rows, commands = {}, []
for line in open(sys.argv[1]):
    label, _, body = line.partition("|")
    rows[label] = json.loads(body)
commands = [l.rstrip("\n") for l in open(sys.argv[2])]
out = []
w = out.append
w("## Presence and signals (v3)\n")
w("From `scripts/bench-presence.sh` (its own Redis, NATS and two nodes with one worker thread each,")
w("default `--presence-coalesce-ms 1000`; the commands are below). Server CPU is both nodes plus Redis")
w(f"and NATS ({sys.argv[3]}; {sys.argv[4]}). Watchers read and drop every frame.\n")
f = rows.get("fanout")
if f:
    l = f["latency"]
    w("**A presence change fanned out.** One client watched by "
      f"{f['watchers']:,} sessions spread over {f['nodes']} nodes connects and leaves in turn "
      f"({f['changes']} changes, 1.2 s apart so that each goes out at once).\n")
    w("| generator | frames (missing) | to each watcher p50 / p99 (ms) | the last watcher p50 / p99 / max (ms) | `watched` hops per change | bus messages per change | server CPU per frame |")
    w("| --- | --- | --- | --- | --- | --- | --- |")
    lw = f["last_watcher_ms"]
    w(f"| switchboard bench | {f['frames']} ({f['missing']}) | {l['p50_us']/1000:.2f} / {l['p99_us']/1000:.2f} | {lw['p50']:.1f} / {lw['p99']:.1f} / {lw['max']:.1f} | {f['watched_hops_per_change']:.2f} | {f['bus_msgs_per_change']:.2f} | {f['server_cpu_us_per_frame']:.2f} µs |")
    c = rows.get("fanout-check")
    if c:
        lw = c["last_watcher_ms"]
        w(f"| scripts/loadgen/fanout.mjs | {c['frames']} ({c['missing']}) | {c['p50_ms']:.2f} / {c['p99_ms']:.2f} | {lw['p50']:.1f} / {lw['p99']:.1f} / {lw['max']:.1f} | – | – | {c['server_cpu_us_per_frame']:.2f} µs |")
    w("")
    w("`watched` hops per change: the node where the client connects sends one to the other node (its")
    w("watchers there), none to itself, whatever the number of watchers. Bus messages per change count")
    w("everything NATS carried meanwhile: the `watched` hop, the route-cache broadcast on `sb.nodes` and")
    w("the presence event on `sb.events.presence`.\n")
i = rows.get("watch-idle")
if i:
    w(f"**Idle cost of watching.** {i['sessions']:,} sessions on one node, each watching {i['watch']} others "
      f"({i['sessions']*i['watch']:,} watches): node RSS {i['rss_before']/1048576:.1f} -> {i['rss_after']/1048576:.1f} MiB, "
      f"**{i['bytes_per_watch']:.0f} bytes per watch**"
      + (f"; Redis {i['redis_bytes_per_entry']:.0f} bytes per watcher entry (one per watched client and node with watchers)" if i.get("redis_bytes_per_entry") else "")
      + ".\n")
msgs = [rows[k] for k in sorted(rows) if k.startswith("messages-5k-") and "check" not in k]
sigs = [rows[k] for k in sorted(rows) if k.startswith("signals-5k-") and "check" not in k]
msg_chk = [rows[k] for k in sorted(rows) if k.startswith("messages-5k-check-")]
chk = [rows[k] for k in sorted(rows) if k.startswith("signals-5k-check-")]
if msgs and sigs:
    med = lambda xs: statistics.median(xs)
    m_us = [r["server_cpu_us_per_msg"] for r in msgs]
    s_us = [r["server_cpu_us_per_msg"] for r in sigs]
    each = lambda xs: "(" + ", ".join(f"{x:.1f}" for x in xs) + ")"
    w("**Signals against messages**, cross-node, 500 clients, 5,000 a second, Poisson arrivals; runs")
    w("alternating, medians (each run in brackets).\n")
    w("| generator | what | server CPU per delivery | end-to-end p50 / p99 (ms) | loss |")
    w("| --- | --- | --- | --- | --- |")
    w(f"| switchboard bench | messages (acked, tracked) | {med(m_us):.1f} µs {each(m_us)} | {med([r['latency']['p50_us'] for r in msgs])/1000:.2f} / {med([r['latency']['p99_us'] for r in msgs])/1000:.2f} | {med([r['loss'] for r in msgs])*100:.2f}% |")
    w(f"| switchboard bench | signals | {med(s_us):.1f} µs {each(s_us)} | {med([r['latency']['p50_us'] for r in sigs])/1000:.2f} / {med([r['latency']['p99_us'] for r in sigs])/1000:.2f} | {med([r['loss'] for r in sigs])*100:.2f}% |")
    ratios = [f"**{med(s_us)/med(m_us):.2f}×** (switchboard bench)"]
    for label, rs in (("messages", msg_chk), ("signals", chk)):
        if rs:
            c_us = [r["server_cpu_us_per_msg"] for r in rs]
            lost = med([1 - r["received"] / r["sent"] if r["sent"] else 0 for r in rs])
            w(f"| scripts/loadgen/loadgen.mjs | {label} | {med(c_us):.1f} µs {each(c_us)} | {med([r['p50_ms'] for r in rs]):.2f} / {med([r['p99_ms'] for r in rs]):.2f} | {lost*100:.2f}% |")
    if msg_chk and chk:
        ratios.append(f"**{med([r['server_cpu_us_per_msg'] for r in chk])/med([r['server_cpu_us_per_msg'] for r in msg_chk]):.2f}×** (loadgen)")
    w(f"\nA signal costs {' and '.join(ratios)} a message's server CPU (goal ≤ 0.8×).\n")
s = rows.get("storm")
if s:
    c, wl = s["connect_latency"], s["watch_latency"]
    cmds = s.get("redis_commands_per_connect")
    w(f"**A login storm.** {s['sessions']:,} clients, each watching {s['watch']} of the others, connect at independent")
    w(f"times within {s['within_s']:.0f} s ({s['failed']} failed): welcome p50 {c['p50_us']/1000:.1f} / p99 {c['p99_us']/1000:.1f} ms,")
    w(f"the `watching` answer p50 {wl['p50_us']/1000:.1f} / p99 {wl['p99_us']/1000:.1f} ms; **{s['frames_per_session']:.1f} presence frames per session**")
    w(f"(most {s['frames_most']}), " + (f"**{cmds:.1f} Redis commands per connect**" if cmds is not None else "") + f", {s['bus_msgs_per_connect']:.1f} bus messages and")
    w(f"{s['server_cpu_ms_per_connect']:.2f} ms of server CPU per connect.\n")
    w(f"What bounds them: a session gets one frame per watched client at its `watch`, then at most one per")
    w(f"watched client per coalescing window (1 s) while those come online, so at most {s['watch']} + {s['watch']} × ⌈{s['within_s']:.0f} s / 1 s⌉ here,")
    w("and in practice about two per watched client (its state at the watch, then its coming online).")
    w("Per connect, Redis sees the registration (a script and a read of the record), the watch (the")
    w("contacts and group index, one add of the node per newly watched client, the states of the")
    w("watched: records, invisibility, last-seen), the announcement of the change (who watches it),")
    w("and the watching nodes' reads of the new state: all batched per frame or per batch of changes.\n")
w("```")
out.extend(commands)
w("```")
print("\n".join(out))
PY
