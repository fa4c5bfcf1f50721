#!/usr/bin/env bash
# Set up everything kubeedge-py needs on a Debian 12 machine, as root: Debian packages, then a
# virtualenv in .venv with the project and its pinned tools. Safe to run again: each step is
# skipped when already done (the venv step re-runs when pyproject.toml changes).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: a venv-capable Python and the real programs the tests and `make run` drive:
# containerd + runc + CNI plugins for pods, busybox-static for the demo image, mosquitto for MQTT.
DEBS=(python3 python3-venv python3-dev gcc iproute2 containerd runc containernetworking-plugins busybox-static mosquitto mosquitto-clients)
missing=()
for pkg in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then echo "setup: run as root to install Debian packages" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The real Kubernetes control plane, built from the pinned Go modules in third_party/ (skipped
# when already built from these pins).
scripts/build-k8s.sh

PYTHON=${PYTHON:-python3}
stamp=.venv/.kubeedge-setup
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/python ]; then
  exit 0
fi
echo "setup: creating .venv and installing kubeedge-py with its dev tools (about a minute)"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
.venv/bin/python -m pip install -q -e '.[dev]' 2>&1 | grep -v "is ignored" || true
.venv/bin/python -c "import kubeedge.hub.v1.hub_pb2, cri.runtime.v1.api_pb2, common, cloud, edge" \
  || { echo "setup: the install is incomplete" >&2; exit 1; }
echo "$want" > "$stamp"
echo "setup: done"
