#!/usr/bin/env bash
# The test command: installs the test dependencies when missing, then runs
# the whole suite (unit tests of every crate of the workspace, the
# integration suite against real redis-server, nats-server, memcached and
# Chromium, doc tests), the JavaScript client's build and tests (against
# the node binary that `cargo test` built), and the checks that keep the
# code in shape. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo fmt --all --check
python3 scripts/check-layers.py
python3 scripts/check-shape.py
scripts/check-manifests.sh
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked "$@"

# The JavaScript client: its locked dev dependencies, its build (dist/ is
# committed, since the node compiles the bundle in: it must be what the
# sources build), its tests against the node binary.
(
    cd clients/js
    npm ci --no-audit --no-fund --loglevel=error
    npm run build --silent
    git diff --exit-code --stat -- dist || {
        echo "clients/js/dist differs from a fresh build: run npm run build there and commit dist/" >&2
        exit 1
    }
    SWITCHBOARD_BIN=../../target/debug/switchboard npm test --silent
)
