#!/usr/bin/env bash
# `make run`: cloudcore plus one edgecore (edge-1) on this machine, until Ctrl-C.
# State lives under DATA_DIR (default ./run): DATA_DIR/cloud and DATA_DIR/edge-1.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR=${1:-run}
HUB=${HUB_LISTEN:-127.0.0.1:10000}
mkdir -p "$DATA_DIR"
pids=()
stop() {
  echo "run: stopping"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait || true
}
trap stop INT TERM EXIT
.venv/bin/cloudcore --data-dir "$DATA_DIR/cloud" --hub-listen "$HUB" &
pids+=($!)
.venv/bin/edgecore --data-dir "$DATA_DIR/edge-1" --node-name edge-1 --cloud "$HUB" &
pids+=($!)
cat <<MSG
run: cloudcore (hub on $HUB) and edgecore edge-1 are starting; state in $DATA_DIR/.
run: try, in another shell:
       .venv/bin/grpcurl -plaintext $HUB list
       .venv/bin/grpcurl -plaintext -d '{"service":"kubeedge.hub.v1.HubService"}' $HUB grpc.health.v1.Health/Check
run: Ctrl-C stops both.
MSG
wait -n
