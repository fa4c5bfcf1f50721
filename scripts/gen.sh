#!/usr/bin/env bash
# Regenerate gen/ from proto/ with the pinned grpcio-tools in the project venv.
# gen/ is committed and never edited by hand; CI runs this and fails on any difference.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-gen}   # scripts/gen.sh DIR writes elsewhere (the CI check compares DIR with gen/)
protos=$(cd proto && find . -name '*.proto' | sed 's|^\./||' | sort)
mkdir -p "$OUT"
rm -rf "$OUT/kubeedge" "$OUT/cri"
"$PY" -m grpc_tools.protoc -I proto \
  --python_out="$OUT" --pyi_out="$OUT" --grpc_python_out="$OUT" $protos
# Packages for the generated modules, so gen/ is an ordinary source root.
find "$OUT" -mindepth 1 -type d ! -name __pycache__ -exec sh -c 'touch "$1/__init__.py"' _ {} \;
echo "gen: generated $(echo "$protos" | wc -w) proto file(s) into $OUT/"
