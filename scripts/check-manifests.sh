#!/usr/bin/env bash
# Validates deploy/kubernetes/ against the Kubernetes API schemas (strict:
# unknown fields are errors) with kubernetes-validate, which bundles the
# schemas (no cluster needed), deploy/haproxy.cfg with haproxy's own
# check, and compose.yaml with `docker-compose config` (Debian's Compose,
# which needs no Docker daemon), with and without the NATS cluster profile. Run by scripts/test.sh; installs kubernetes-validate from PyPI
# into a virtualenv under target/ when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=1.37.0
KUBERNETES=1.29.0
VENV=target/tools-venv
if [ ! -x "$VENV/bin/kubernetes-validate" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$VERSION"
fi
"$VENV/bin/kubernetes-validate" --strict --quiet -k "$KUBERNETES" deploy/kubernetes/*.yaml
echo "check-manifests: deploy/kubernetes/*.yaml valid against Kubernetes $KUBERNETES (strict)"
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
"$HAPROXY" -c -q -f deploy/haproxy.cfg
echo "check-manifests: deploy/haproxy.cfg valid (haproxy -c)"
COMPOSE=$(command -v docker-compose || true)
if [ -z "$COMPOSE" ]; then
    echo "check-manifests: docker-compose missing; run scripts/install-deps.sh" >&2
    exit 1
fi
"$COMPOSE" -f compose.yaml config -q
"$COMPOSE" -f compose.yaml --profile nats-cluster config -q
echo "check-manifests: compose.yaml valid (docker-compose config), with and without --profile nats-cluster"
