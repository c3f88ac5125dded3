#!/usr/bin/env bash
# The test command: installs the test dependencies when missing, then runs
# the whole suite (unit tests of every crate of the workspace, the
# integration suite against real redis-server, nats-server, memcached and
# Chromium, doc tests) and the checks that keep the code in shape. Extra
# arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo fmt --all --check
python3 scripts/check-layers.py
scripts/check-manifests.sh
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked "$@"
