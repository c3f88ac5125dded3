#!/usr/bin/env bash
# The test command: installs the test dependencies when missing, then runs
# the whole suite (unit, integration against real redis-server and
# nats-server, doc tests). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked "$@"
