#!/usr/bin/env bash
# The test command: installs the test dependencies when missing, then runs
# the whole suite (unit tests of every crate of the workspace, the
# integration suite against real redis-server, nats-server, memcached and
# Chromium, doc tests), the JavaScript client's build and tests and the
# Python client's type check and tests (both against the node binary that
# `cargo test` built), and the checks that keep the code in shape. Extra arguments go to `cargo test`.
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

# The Python client: its pinned test dependencies in a virtualenv, the
# package installed as a user installs it (pip install ./clients/python),
# mypy --strict over the package, its examples and its tests (the
# README's blocks are checked by a test), then the tests against the node
# binary. The build directory goes first: a stale copy must not pass for
# the sources.
PY_VENV=target/py-venv
[ -x "$PY_VENV/bin/python" ] || python3 -m venv "$PY_VENV"
"$PY_VENV/bin/pip" install --quiet --disable-pip-version-check -r clients/python/requirements-test.txt
rm -rf clients/python/build
"$PY_VENV/bin/pip" install --quiet --disable-pip-version-check --no-build-isolation --no-deps --force-reinstall ./clients/python
(cd clients/python && "../../$PY_VENV/bin/mypy" --strict switchboard_client examples tests bench.py)
SWITCHBOARD_BIN=target/debug/switchboard "$PY_VENV/bin/python" -m unittest discover -s clients/python/tests -t clients/python/tests
