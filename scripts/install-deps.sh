#!/usr/bin/env bash
# Installs what the test suite runs against, from Debian packages, when
# missing: redis-server (with redis-cli), nats-server (Debian puts it in
# /usr/sbin), memcached, chromium with chromium-driver for the chat
# page's browser test, haproxy (its `-c` checks compose's load balancer
# config), and Node.js with npm (the JavaScript client). Safe to run again: it installs nothing that is
# already there.
set -euo pipefail

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
# scripts/check-manifests.sh puts kubernetes-validate in a virtualenv.
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: redis-server, nats-server, memcached, chromium and haproxy are present"
    exit 0
fi

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
