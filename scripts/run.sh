#!/usr/bin/env bash
# `make run`: keadm up in the foreground — cloudcore plus edgecore edge-1 (with its own
# containerd) on this machine, until Ctrl-C. State lives under DATA_DIR (default ./run);
# `.venv/bin/keadm reset --data-dir run` removes it all, pods included.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR=${1:-run}
exec .venv/bin/keadm up --data-dir "$DATA_DIR" --foreground \
  --api-listen "${API_LISTEN:-127.0.0.1:6443}" --hub-listen "${HUB_LISTEN:-127.0.0.1:10000}"
