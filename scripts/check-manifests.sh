#!/usr/bin/env bash
# Validates deploy/kubernetes/ against the Kubernetes API schemas (strict:
# unknown fields are errors) with kubernetes-validate, which bundles the
# schemas (no cluster needed), and deploy/haproxy.cfg with haproxy's own
# check. Run by scripts/test.sh; installs kubernetes-validate from PyPI
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
