#!/usr/bin/env bash
# Fuzzes the decoders that read untrusted input (client frames, bus
# envelopes) with cargo fuzz (libFuzzer), each for a bounded time.
#
#   scripts/fuzz.sh [seconds per target, default 600] [target ...]
#
# Targets: client_frame, envelope (fuzz/fuzz_targets/). Needs the nightly
# toolchain; installs cargo-fuzz when missing. The corpus grows in
# fuzz/corpus/<target> (kept between runs, not committed), seeded from
# fuzz/seeds/<target>. A crash stops the run, leaves its input in
# fuzz/artifacts/<target>/, and makes this script fail: add the input as a
# regression test (tests/decoders.rs) before fixing it.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(client_frame envelope)

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz.sh: cargo fuzz needs the nightly toolchain: rustup toolchain install nightly" >&2
    exit 1
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

status=0
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target" fuzz/logs
    log="fuzz/logs/$target.log"
    echo "== $target: ${seconds}s (log: $log)"
    if ! cargo +nightly fuzz run "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -max_len=4096 -dict=fuzz/json.dict \
        -print_final_stats=1 >"$log" 2>&1; then
        status=1
        echo "   CRASH: see $log and fuzz/artifacts/$target/"
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    rate=$(grep -o 'exec/s: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo '?')
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo '?')
    corpus=$(find "fuzz/corpus/$target" -type f | wc -l)
    echo "   executions: $runs, last exec/s: $rate, coverage: $cov edges, corpus: $corpus inputs"
done
exit $status
