#!/usr/bin/env bash
# The Python client's figures of BENCHMARKS.md: one release node of its own
# (rate limit off), and clients/python/bench.py run against it in the
# Python client's virtualenv (target/py-venv, made by scripts/test.sh).
# Each row is a separate process; its CPU is measured twice: by the bench
# itself (time.process_time) and from outside (/usr/bin/time), and the
# node's own count of sends must match the bench's. Prints the section in
# markdown. Everything it starts, it stops.
#
#   scripts/bench-python.sh            # ~1 minute
#   QUICK=1 scripts/bench-python.sh    # a few seconds
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then N=3000; else N=30000; fi
ME=bench-python.sh
PY=target/py-venv/bin/python
[ -x "$PY" ] || { echo "$ME: $PY missing: run scripts/test.sh once (it makes the virtualenv)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "$ME: /usr/bin/time missing (apt install time)" >&2; exit 1; }
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

PORT=$(free_port)
"$BIN" serve --listen "127.0.0.1:$PORT" --rate-limit 0 --log warn >"$WORK/node.log" 2>&1 &
PIDS+=("$!")
wait_port "$PORT" "$WORK/node.log"

# run LABEL ARGS...: one bench process, its JSON and its outside CPU.
run() {
    local label=$1; shift
    local cmd=(clients/python/bench.py --url "ws://127.0.0.1:$PORT" "$@")
    echo ">>> $label: python3 ${cmd[*]}" >&2
    echo "$label: python3 ${cmd[*]}" >>"$WORK/commands.txt"
    /usr/bin/time -f '%U %S' -o "$WORK/time" "$PY" "${cmd[@]}" >"$WORK/out.json"
    printf '%s|%s|%s\n' "$label" "$(cat "$WORK/out.json")" "$(cat "$WORK/time")" >>"$WORK/results.txt"
}
# What starting the interpreter and importing the package costs, to take
# off the outside measurement.
/usr/bin/time -f '%U %S' -o "$WORK/base" "$PY" -c 'import asyncio, cProfile, switchboard_client' 
run "one in flight, acks" --messages $((N / 4)) --window 1
run "64 in flight, acks" --messages "$N" --window 64
run "64 in flight, plain" --messages "$N" --window 64 --no-acks
run "64 in flight, 1 KiB bodies" --messages "$N" --window 64 --size 1024
run "profiled (64, acks)" --messages $((N / 3)) --window 64 --profile

python3 - "$WORK/results.txt" "$WORK/commands.txt" "$WORK/base" <<'PY'
import json, sys
base = sum(map(float, open(sys.argv[3]).read().split()))
out = []
w = out.append
w("## The Python client (v3)\n")
w("From `scripts/bench-python.sh`: one release node (all cores, `--rate-limit 0`) and `clients/python/bench.py`:")
w("two clients in one Python 3.11 process, `sender` keeping W sends in flight (each waits for its ack) and")
w("`receiver` iterating them (acks mode confirms lazily). A message counts once acked and iterated. CPU is")
w("the Python process's per message (send, ack, delivery, confirmation), measured by the bench")
w("(`time.process_time`) and from outside (`/usr/bin/time`, less the interpreter's start); the node's own")
w("count of sends matched the bench's in every row.\n")
w("| run | messages | msgs/s | CPU per message (bench) | (outside) | where the CPU goes (profiled) |")
w("| --- | --- | --- | --- | --- | --- |")
for line in open(sys.argv[1]):
    label, body, times = line.rstrip("\n").split("|")
    r = json.loads(body)
    outside = (sum(map(float, times.split())) - base) / r["messages"] * 1e6
    share = ", ".join(f"{k} {v:.0%}" for k, v in r.get("cpu_share", {}).items()) or "—"
    rate = f"{r['msgs_per_s']:,}" + (" (slowed by the profiler)" if "cpu_share" in r else "")
    w(f"| {label} | {r['messages']:,} | {rate} | {r['cpu_us_per_msg']:.1f} µs | {outside:.1f} µs | {share} |")
w("\n```")
out.extend(l.rstrip("\n") for l in open(sys.argv[2]))
w("```")
print("\n".join(out))
PY
