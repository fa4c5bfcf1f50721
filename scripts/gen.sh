#!/usr/bin/env bash
# Regenerate gen/ from proto/ with the pinned grpcio-tools in the project venv.
# gen/ is committed and never edited by hand; CI runs this and fails on any difference.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
protos=$(cd proto && find . -name '*.proto' | sed 's|^\./||' | sort)
rm -rf gen/kubeedge gen/cri
"$PY" -m grpc_tools.protoc -I proto \
  --python_out=gen --pyi_out=gen --grpc_python_out=gen $protos
# Packages for the generated modules, so gen/ is an ordinary source root.
find gen -mindepth 1 -type d ! -name __pycache__ -exec sh -c 'touch "$1/__init__.py"' _ {} \;
echo "gen: regenerated $(echo "$protos" | wc -w) proto file(s) into gen/"
