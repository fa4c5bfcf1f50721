#!/usr/bin/env bash
# The checks CI runs before the tests: generated code is current, the contract lints and has
# not broken compatibility, and the Python code passes ruff and mypy.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
scripts/gen.sh "$tmp/gen" >/dev/null
if ! diff -r -x __pycache__ "$tmp/gen" gen >/dev/null; then
  echo "verify: gen/ is stale or hand-edited; run 'make gen' and commit the result" >&2
  diff -r -x __pycache__ "$tmp/gen" gen | head -20 >&2
  exit 1
fi
echo "verify: gen/ matches proto/"
.venv/bin/buf lint
.venv/bin/buf breaking --against proto/contract.binpb
echo "verify: buf lint and buf breaking (against proto/contract.binpb) pass"
.venv/bin/ruff check .
.venv/bin/ruff format --check . >/dev/null || { echo "verify: run 'make format'" >&2; .venv/bin/ruff format --diff . | head -40; exit 1; }
.venv/bin/mypy
echo "verify: ruff and mypy pass"
