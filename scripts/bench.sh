#!/usr/bin/env bash
# The benchmark suite: builds a release binary, starts its own
# redis-server, nats-server and two nodes on loopback, runs the standard
# set with `switchboard bench`, and writes BENCHMARKS.md. Everything it
# starts, it stops. Every run is bounded in time.
#
#   scripts/bench.sh            # full run (~45 minutes on 2 cores)
#   QUICK=1 scripts/bench.sh    # short windows, for trying the script
#   OUT=/tmp/b.md scripts/bench.sh
#
# Needs: redis-server, nats-server, memcached (scripts/install-deps.sh),
# python3 (to assemble the report), node and npm (the second generator,
# scripts/loadgen; skipped without node).
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-0}
OUT=${OUT:-BENCHMARKS.md}
if [ "$QUICK" = 1 ]; then DUR=2; STEP=2; IDLE=(2000); else DUR=10; STEP=5; IDLE=(10000 19000); fi

command -v python3 >/dev/null || { echo "bench.sh: python3 is needed to write the report" >&2; exit 1; }
ME=bench.sh
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

# monitor: nats-server's monitoring port, for the bus messages per routed
# send (/varz).
start_redis; start_nats monitor
MONITOR=(--nats-monitor "http://127.0.0.1:$NM")

# --max-sessions high: the idle-memory runs fill a node up to the fd limit.
# --worker-threads 1: two nodes, NATS, Redis and the generator share the
# machine's cores; each node gets its share (one row below runs the
# default, a thread per core, for comparison).
# --api-key: the group runs make their groups through the API.
# --max-connect-rate: the idle and connect-rate runs open sessions as fast
# as the generator can; admission control (scripts/bench-storm.sh) is not
# what they measure.
NODE_FLAGS=(--redis-url "redis://127.0.0.1:$RP" --nats-url "nats://127.0.0.1:$NP" --rate-limit 0 --max-sessions 1000000 --log warn --api-key bench --max-connect-rate 1000000)
THREADS=1
# start_nodes [extra node flags...]
start_nodes() {
    AP=$(free_port); BP=$(free_port)
    "$BIN" serve --listen "127.0.0.1:$AP" --node-id bench-a "${NODE_FLAGS[@]}" --worker-threads "$THREADS" "$@" >"$WORK/a.log" 2>&1 &
    A_PID=$!; PIDS+=("$A_PID")
    "$BIN" serve --listen "127.0.0.1:$BP" --node-id bench-b "${NODE_FLAGS[@]}" --worker-threads "$THREADS" "$@" >"$WORK/b.log" 2>&1 &
    B_PID=$!; PIDS+=("$B_PID")
    wait_port "$AP"; wait_port "$BP"
    URLS="ws://127.0.0.1:$AP,ws://127.0.0.1:$BP"
}
stop_nodes() { kill "$A_PID" "$B_PID"; wait "$A_PID" "$B_PID" 2>/dev/null || true; }

RESULTS="$WORK/results.jsonl"
COMMANDS="$WORK/commands.txt"
# run LABEL ARGS...: one bench run; its JSON goes to the results with a label.
run() {
    local label=$1; shift
    echo ">>> $label: switchboard bench $*" >&2
    echo "$label|switchboard bench $*" >>"$COMMANDS"
    "$BIN" bench "$@" --json | sed "s/^/$label|/" >>"$RESULTS"
}
# check LABEL ARGS...: the same traffic from the second, independent
# generator (scripts/loadgen, Node.js).
check() {
    local label=$1; shift
    echo ">>> $label: node scripts/loadgen/loadgen.mjs $*" >&2
    echo "$label|node scripts/loadgen/loadgen.mjs $*" >>"$COMMANDS"
    node scripts/loadgen/loadgen.mjs "$@" | sed "s/^/$label|/" >>"$RESULTS"
}
if command -v node >/dev/null && [ ! -d scripts/loadgen/node_modules ]; then
    (cd scripts/loadgen && npm ci --no-audit --no-fund --silent)
fi

# The floors, on the same machine: a bare WebSocket echo, a bare NATS
# relay, and the relay floor (WebSocket in, NATS, WebSocket out, nothing
# else) at the rates and client counts of the traffic rows.
EP=$(free_port)
"$BIN" bench echo-server --listen "127.0.0.1:$EP" >"$WORK/echo.log" 2>&1 &
ECHO_PID=$!; PIDS+=("$ECHO_PID")
wait_port "$EP"
run floor-echo --url "ws://127.0.0.1:$EP" --pids "$ECHO_PID" --mode echo --clients 500 --rate 25000 --duration "$DUR"
kill "$ECHO_PID"
run floor-nats nats-floor --nats-url "nats://127.0.0.1:$NP" --pids "$NATS_PID" --rate 50000 --duration "$DUR"
R1=$(free_port); R2=$(free_port)
# One thread each, like the nodes.
TOKIO_WORKER_THREADS=1 "$BIN" bench relay-server --listen "127.0.0.1:$R1" --nats-url "nats://127.0.0.1:$NP" >"$WORK/relay1.log" 2>&1 &
R1_PID=$!; PIDS+=("$R1_PID")
TOKIO_WORKER_THREADS=1 "$BIN" bench relay-server --listen "127.0.0.1:$R2" --nats-url "nats://127.0.0.1:$NP" >"$WORK/relay2.log" 2>&1 &
R2_PID=$!; PIDS+=("$R2_PID")
wait_port "$R1"; wait_port "$R2"
RELAY=(--url "ws://127.0.0.1:$R1,ws://127.0.0.1:$R2" --pids "$NATS_PID,$R1_PID,$R2_PID" "${MONITOR[@]}" --mode relay)
for rate in 2000 10000 25000; do
    run "relay-$((rate / 1000))k" "${RELAY[@]}" --clients 500 --rate "$rate" --duration "$DUR"
done
run relay-10k-5000 "${RELAY[@]}" --clients 5000 --rate 10000 --duration "$DUR"
kill "$R1_PID" "$R2_PID"

start_nodes
SERVERS=(--url "$URLS" --pids "$REDIS_PID,$NATS_PID" "${MONITOR[@]}")

# Cross-node traffic at fixed rates, 500 clients with Poisson arrivals;
# the same at 10k from 5,000 clients.
for rate in 2000 10000 25000; do
    run "cross-$((rate / 1000))k" "${SERVERS[@]}" --mode cross --clients 500 --rate "$rate" --duration "$DUR"
done
run cross-10k-5000 "${SERVERS[@]}" --mode cross --clients 5000 --rate 10000 --duration "$DUR"
# Acks mode: every session confirms what it reads (as the Rust client does).
run cross-10k-acks "${SERVERS[@]}" --mode cross --clients 500 --rate 10000 --acks --duration "$DUR"
run local-25k "${SERVERS[@]}" --mode local --clients 500 --rate 25000 --duration "$DUR"
run mixed-20k "${SERVERS[@]}" --mode mixed --clients 500 --rate 20000 --duration "$DUR"
run offline-20k "${SERVERS[@]}" --mode offline --clients 500 --rate 20000 --duration "$DUR"
# Devices: every client on 3 devices spread over both nodes; device 0
# sends, every device of the recipient receives, the sender's other two get
# carbons. Compare with cross-* at the same message rate.
for rate in 5000 10000; do
    run "devices-$((rate / 1000))k" "${SERVERS[@]}" --mode cross --clients 500 --devices 3 --rate "$rate" --duration "$DUR"
done
# Groups: members spread over both nodes, every member sending to its
# group; --rate counts group sends. 1,000 clients (2,000 for 1,000-member
# groups, so that there are two groups).
GROUP=("${SERVERS[@]}" --mode group --api-key bench --duration "$DUR")
run group-10-5k "${GROUP[@]}" --group-size 10 --clients 1000 --rate 5000
run group-100-500 "${GROUP[@]}" --group-size 100 --clients 1000 --rate 500
run group-100-1500 "${GROUP[@]}" --group-size 100 --clients 1000 --rate 1500
run group-1000-50 "${GROUP[@]}" --group-size 1000 --clients 2000 --rate 50
run group-1000-200 "${GROUP[@]}" --group-size 1000 --clients 2000 --rate 200

# The second generator, on the same nodes: it must agree within 20% on
# p50 and on server CPU per message. Low-rate figures swing by 10-20%
# from run to run on a shared VM, so each generator runs three times,
# alternating, and the report compares medians.
if command -v node >/dev/null; then
    for rate in 2000 10000; do
        for rep in 1 2 3; do
            run "gen-$((rate / 1000))k-$rep" "${SERVERS[@]}" --mode cross --clients 500 --rate "$rate" --duration "$DUR"
            check "check-$((rate / 1000))k-$rep" --url "$URLS" --pids "$REDIS_PID,$NATS_PID,$A_PID,$B_PID" --clients 500 --rate "$rate" --duration "$DUR"
        done
    done
fi

# The ramp, then half its best rate.
run ramp "${SERVERS[@]}" --mode cross --clients 500 --rate 20000 --ramp --ramp-factor 1.2 --duration "$STEP"
BEST=$(sed -n 's/^ramp|//p' "$RESULTS" | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["best_rate"] or 10000)')
run cross-half "${SERVERS[@]}" --mode cross --clients 500 --rate $((BEST / 2)) --duration "$DUR"

# The patent's way, for comparison: a presence lookup for every send (the
# route cache off).
stop_nodes; start_nodes --route-cache 0
SERVERS=(--url "$URLS" --pids "$REDIS_PID,$NATS_PID" "${MONITOR[@]}")
run cross-25k-no-cache "${SERVERS[@]}" --mode cross --clients 500 --rate 25000 --duration "$DUR"
# A thread per core, as a node alone on a machine runs.
stop_nodes; THREADS=$(nproc) start_nodes
SERVERS=(--url "$URLS" --pids "$REDIS_PID,$NATS_PID" "${MONITOR[@]}")
run cross-10k-threads "${SERVERS[@]}" --mode cross --clients 500 --rate 10000 --duration "$DUR"
stop_nodes; start_nodes

# Connect rate, then idle memory on fresh nodes (one node holds them all).
"$BIN" bench connect --url "$URLS" --sessions 2000 --concurrency 256 >/dev/null 2>&1 # warm-up, not reported
run connect connect --url "$URLS" --sessions 10000 --concurrency 256
for k in "${IDLE[@]}"; do
    stop_nodes; start_nodes
    run "idle-$k" idle --url "ws://127.0.0.1:$AP" --sessions "$k" --concurrency 256 --sources 8
done

# Cluster-wide re-registration of 50,000 sessions (four nodes at once),
# straight against Redis and against three memcached servers.
run reregister-redis reregister --redis-url "redis://127.0.0.1:$RP" --sessions 50000 --nodes 4
if command -v memcached >/dev/null; then
    MEMCACHED_USER=(); [ "$(id -u)" = 0 ] && MEMCACHED_USER=(-u nobody)
    MC=()
    for _ in 1 2 3; do
        MP=$(free_port)
        memcached -l 127.0.0.1 -p "$MP" -U 0 -m 256 "${MEMCACHED_USER[@]}" >"$WORK/memcached-$MP.log" 2>&1 &
        PIDS+=("$!"); wait_port "$MP"; MC+=("127.0.0.1:$MP")
    done
    run reregister-memcached reregister --memcached-url "$(IFS=,; echo "${MC[*]}")" --sessions 50000 --nodes 4
fi

python3 - "$RESULTS" "$COMMANDS" "$OUT" "$REDIS_SERVER" "$NATS_SERVER" <<'PY'
import json, platform, subprocess, sys, datetime
results_path, commands_path, out, redis_bin, nats_bin = sys.argv[1:6]
results = {}
for line in open(results_path):
    label, _, data = line.partition("|")
    results[label] = json.loads(data)
commands = dict(l.rstrip("\n").split("|", 1) for l in open(commands_path))

def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
    except Exception:
        return "?"

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = next((l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")), "0")
lines = []
w = lines.append
w("# Benchmarks\n")
w(f"Written by `scripts/bench.sh` on {datetime.date.today()}. Everything on one machine, over loopback:")
w("the load generator, two nodes, redis-server and nats-server share the same cores, so every")
w("figure includes the generator's own cost competing for CPU.\n")
w(f"- CPU: {cpu}, {sh('nproc')} cores; memory {int(mem)//1024//1024} GiB; kernel {platform.release()}")
w(f"- {sh('rustc', '--version')}; {sh(redis_bin, '--version').split(' sha=')[0]}; nats-server {sh(nats_bin, '--version')}")
w("- Nodes: `switchboard serve --rate-limit 0 --max-sessions 1000000 --log warn --worker-threads 1`, release build, default settings otherwise; the relay floor's servers run one thread each too.\n")

def lat(s):
    l = s["latency"]
    return f"{l['p50_us']/1000:.2f} / {l['p90_us']/1000:.2f} / {l['p99_us']/1000:.2f} / {l['p999_us']/1000:.2f} / {l['max_us']/1000:.1f}"

w("## Traffic\n")
w("Every client sends at the times of its own Poisson process (no shared tick); latency runs from the")
w("time each message was due. Burstiness is the coefficient of variation of sends per millisecond as")
w("they left (a Poisson stream of λ per ms: 1/√λ). The relay floor is a minimal WebSocket-NATS-WebSocket")
w("relay (`switchboard bench relay-server`: no presence, no acks, no receipts) under the same clients,")
w("rate and arrivals; `× floor` is server CPU per message over the floor's.\n")
w("| run | clients | offered msgs/s | delivered msgs/s | loss | end-to-end p50 / p90 / p99 / p99.9 / max (ms) | ack p99 (ms) | server CPU µs per msg | relay floor µs per msg | × floor | bus msgs per routed | context switches per msg | server cores | generator cores | burstiness | lookups per send |")
w("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
floor_of = {"cross-2k": "relay-2k", "cross-10k": "relay-10k", "cross-25k": "relay-25k", "cross-10k-5000": "relay-10k-5000", "cross-25k-no-cache": "relay-25k", "cross-10k-threads": "relay-10k", "cross-10k-acks": "relay-10k"}
rows = ["floor-echo", "floor-nats", "relay-2k", "relay-10k", "relay-25k", "relay-10k-5000", "cross-2k", "cross-10k", "cross-25k", "cross-10k-5000", "cross-10k-acks", "cross-25k-no-cache", "cross-10k-threads", "local-25k", "mixed-20k", "offline-20k", "cross-half"]
for label in rows:
    s = results.get(label)
    if not s:
        continue
    f = results.get(floor_of.get(label, ""))
    floor = f"{f['server_cpu_us_per_msg']:.1f}" if f else "–"
    times = f"{s['server_cpu_us_per_msg'] / f['server_cpu_us_per_msg']:.2f}" if f and f['server_cpu_us_per_msg'] else "–"
    w(f"| {label} | {s['clients']} | {s['offered_rate']} | {s['delivered_rate']:.0f} | {s['loss']*100:.2f}% | {lat(s)} | {s['ack_latency']['p99_us']/1000:.2f} | {s['server_cpu_us_per_msg']:.1f} | {floor} | {times} | {s.get('bus_msgs_per_routed', 0):.3f} | {s.get('context_switches_per_msg', 0):.2f} | {s['server_cores']:.2f} | {s['generator_cores']:.2f} | {s.get('burstiness', 0):.2f} | {s['lookups_per_send']:.3f} |")
w("\ncross-25k-no-cache: the same as cross-25k with `--route-cache 0`, a presence lookup per send as in")
w("the patent; compare its lookups per send and CPU with cross-25k. cross-10k-5000: 5,000 connected")
w("clients instead of 500 at the same rate. cross-10k-threads: the nodes with a runtime thread per")
w("core (the default) instead of `--worker-threads 1`. cross-10k-acks: cross-10k with every session in acks")
w("mode (`--acks`: numbered messages, confirmed every 32 or after 200 ms; `delivered` on confirmation).\n")
w("floor-echo: a bare WebSocket echo server (`switchboard bench echo-server`), round trip; floor-nats: a")
w("bare publish-to-subscriber relay through nats-server. Server CPU counts nodes + Redis + NATS (the echo")
w("server alone, nats-server alone, the relay servers + nats-server for the floors), per delivered message.\n")

dev = [(l, results[l]) for l in ("devices-5k", "devices-10k") if l in results]
if dev:
    w("## Devices\n")
    w("Every client on 3 devices, spread over both nodes (`--devices 3`): a send reaches the recipient's 3")
    w("sessions and copies to the sender's 2 other devices (carbons). Deliveries count recipient sessions")
    w("only; µs per delivery divides server CPU by deliveries + carbons. The 1-device row at the same")
    w("message rate is the cross-* row above.\n")
    w("| run | sessions | msgs/s | deliveries/s | carbons/s | loss | p99 (ms) | server cores | µs per delivery (incl. carbons) | hops per send | lookups per send |")
    w("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, s in dev:
        carbons = s["carbons"] / s["duration_s"]
        total = s["delivered_rate"] + carbons
        per = s["server_cores"] * 1e6 / total if total else 0
        w(f"| {label} | {s['clients'] * s['devices']} | {s['offered_rate']} | {s['delivered_rate']:.0f} | {carbons:.0f} | {s['loss']*100:.2f}% | {s['latency']['p99_us']/1000:.2f} | {s['server_cores']:.2f} | {per:.1f} | {s['hops_per_send']:.3f} | {s['lookups_per_send']:.3f} |")
    w("")

grp = [(l, s) for l, s in results.items() if l.startswith("group-")]
if grp:
    w("## Groups\n")
    w("Members of each group spread over both nodes in turn; every member sends to its group at")
    w("Poisson times (`--mode group`); a send reaches every other member's session. msgs/s counts")
    w("sends, deliveries/s the messages members received; server CPU counts nodes + Redis + NATS")
    w("per delivery. Presence round trips and hops are per send.\n")
    w("| run | members per group | clients | sends/s | deliveries/s | loss | p50 / p99 (ms) | server cores | generator cores | server µs per delivery | presence round trips per send | hops per send |")
    w("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, s in grp:
        l = s["latency"]
        w(f"| {label} | {s['group_size']} | {s['clients']} | {s['offered_rate']} | {s['delivered_rate']:.0f} | {s['loss']*100:.2f}% | {l['p50_us']/1000:.2f} / {l['p99_us']/1000:.2f} | {s['server_cores']:.2f} | {s['generator_cores']:.2f} | {s['server_cpu_us_per_msg']:.1f} | {s['lookups_per_send']:.3f} | {s['hops_per_send']:.3f} |")
    w("")

import statistics
checks = []
for k in ("2k", "10k"):
    rust = [results[f"gen-{k}-{i}"] for i in (1, 2, 3) if f"gen-{k}-{i}" in results]
    node = [results[f"check-{k}-{i}"] for i in (1, 2, 3) if f"check-{k}-{i}" in results]
    if rust and node:
        checks.append((k, rust, node))
if checks:
    w("## Checked by a second generator\n")
    w("`scripts/loadgen/loadgen.mjs`: Node.js with `ws`, two worker processes, one heap scheduler per worker")
    w("instead of a task per client, its own Poisson arrivals and clock; same nodes, clients and rate. Each")
    w("generator ran three times, alternating; medians (each run's figure in brackets).\n")
    w("| rate | p50 switchboard bench (ms) | p50 loadgen (ms) | differ | server µs/msg switchboard bench | server µs/msg loadgen | differ | within 20% |")
    w("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for k, rust, node in checks:
        pr = [r["latency"]["p50_us"] / 1000 for r in rust]
        pn = [n["p50_ms"] for n in node]
        cr = [r["server_cpu_us_per_msg"] for r in rust]
        cn = [n["server_cpu_us_per_msg"] for n in node]
        mp_r, mp_n, mc_r, mc_n = (statistics.median(x) for x in (pr, pn, cr, cn))
        dp, dc = abs(mp_n - mp_r) / mp_r, abs(mc_n - mc_r) / mc_r
        each = lambda xs, f: " (" + ", ".join(f.format(x) for x in xs) + ")"
        w(f"| {rust[0]['offered_rate']} | {mp_r:.2f}{each(pr, '{:.2f}')} | {mp_n:.2f}{each(pn, '{:.2f}')} | {dp*100:.0f}% | {mc_r:.1f}{each(cr, '{:.0f}')} | {mc_n:.1f}{each(cn, '{:.0f}')} | {dc*100:.0f}% | {'yes' if dp <= 0.2 and dc <= 0.2 else 'no'} |")
    w("")

ramp = results.get("ramp")
if ramp:
    w("## Ramp (cross-node)\n")
    w("Highest offered rate at which >= 99% is delivered with p99 under 50 ms (500 clients, Poisson arrivals); each step multiplies the rate by 1.2.\n")
    w("| offered msgs/s | delivered msgs/s | p99 (ms) | loss | server µs per msg | server cores | generator cores | result |")
    w("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for s in ramp["steps"]:
        ok = s["received"] >= 0.99 * s["offered_rate"] * s["duration_s"] and s["latency"]["p99_us"] <= 50000
        w(f"| {s['offered_rate']} | {s['delivered_rate']:.0f} | {s['latency']['p99_us']/1000:.2f} | {s['loss']*100:.2f}% | {s['server_cpu_us_per_msg']:.1f} | {s['server_cores']:.2f} | {s['generator_cores']:.2f} | {'ok' if ok else 'missed'} |")
    w(f"\n**Best: {ramp['best_rate']} msgs/s cross-node.** At half that rate (cross-half above): p99 {results.get('cross-half', {}).get('latency', {}).get('p99_us', 0)/1000:.2f} ms.\n")

w("## Sessions\n")
c = results.get("connect")
if c:
    w(f"- Connect + presence registration: **{c['rate']:.0f} sessions/s** ({c['sessions']} sessions over two nodes, {c['concurrency']} handshakes at a time).")
for label, s in results.items():
    if label.startswith("idle-"):
        for n in s["nodes"]:
            w(f"- Idle sessions: {n['sessions']:.0f} on one node, RSS {n['rss_before']/1048576:.1f} MiB -> {n['rss_after']/1048576:.1f} MiB: **{n['bytes_per_session']/1024:.2f} KiB per idle session**.")
rereg = [(label, s) for label, s in results.items() if label.startswith("reregister-")]
if rereg:
    w("\n## Presence re-registration\n")
    w("What the nodes do after the presence store lost its data: write back every live session's record")
    w("without overwriting a newer session's (batched and pipelined; `switchboard bench reregister`).\n")
    w("| store | sessions | nodes at once | into an empty store (s) | over present records (s) | removing them one by one (s) |")
    w("| --- | --- | --- | --- | --- | --- |")
    for label, s in rereg:
        w(f"| {s['backend']} | {s['sessions']} | {s['nodes']} | {s['into_empty_s']:.3f} | {s['refresh_s']:.3f} | {s['remove_s']:.3f} |")
    w("")
import resource
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
if hard != resource.RLIM_INFINITY and hard < 60000:
    w(f"\nThis machine allows {hard} open files per process (hard limit), so one node holds at most about")
    w(f"{hard - 100} sessions here; 50,000 idle sessions need a higher `ulimit -n`.\n")

w("## Commands\n")
w("```")
for label, cmd in commands.items():
    w(f"{label}: {cmd}")
w("```")
open(out, "w").write("\n".join(lines) + "\n")
print(f"wrote {out}", file=sys.stderr)
PY
# The inbox, last-seen and events rows: servers of their own.
for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
QUICK=$QUICK scripts/bench-inbox.sh >>"$OUT"
# Presence for clients and signals (v3): servers of their own too.
QUICK=$QUICK scripts/bench-presence.sh >>"$OUT"
# History and backend hooks (v3): servers of their own as well.
QUICK=$QUICK scripts/bench-history.sh >>"$OUT"
QUICK=$QUICK scripts/bench-hooks.sh >>"$OUT"
# Reconnect storms (v3): three nodes of their own.
QUICK=$QUICK scripts/bench-storm.sh >>"$OUT"
# The bus linger (v3): servers of its own; quick: one rate, off and 1 ms.
{
    echo "## The bus at low rates (v3)"
    echo
    echo "\`scripts/bench-linger.sh\`: two nodes of one thread, 500 clients, Poisson cross-node sends, \`--bus-linger-ms\` off and on."
    echo
    if [ "$QUICK" = 1 ]; then
        RATES=2000 LINGERS="0 1" DUR=5 scripts/bench-linger.sh
    else
        scripts/bench-linger.sh
    fi
    echo
} >>"$OUT"
# Against Socket.IO 4.8 + Redis adapter (v3): servers of its own, one
# generator for both; needs Node.js like the second generator.
if command -v node >/dev/null; then
    {
        echo "## Against Socket.IO (v3)"
        echo
        echo "\`scripts/bench-socketio.sh\`: two one-thread nodes a side, 500 clients, Poisson cross-node sends, one generator (\`scripts/loadgen\`) for both."
        echo
        if [ "$QUICK" = 1 ]; then
            REPS=1 DUR=5 IDLE=2000 scripts/bench-socketio.sh
        else
            scripts/bench-socketio.sh
        fi
        echo
    } >>"$OUT"
fi
# The Python client (v3): its own node; needs the virtualenv the test
# command makes.
if [ -x target/py-venv/bin/python ]; then
    QUICK=$QUICK scripts/bench-python.sh >>"$OUT"
else
    echo "bench.sh: no target/py-venv (scripts/test.sh makes it): the Python client's section is skipped" >&2
fi
