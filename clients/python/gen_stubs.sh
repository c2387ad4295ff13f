#!/usr/bin/env bash
# Generates the Python stubs from proto/ into src/mlua_swarm/v1/ (committed; the package
# ships them). `--check` generates into a temp dir and fails if the committed ones differ.
# Needs grpcio-tools (requirements.txt pins the version the committed stubs come from).
set -euo pipefail
cd "$(dirname "$0")"
REPO="$(cd ../.. && pwd)"
PY="${PYTHON:-python3}"

generate() {  # $1: output root (gets mlua_swarm/v1/*)
  "$PY" -m grpc_tools.protoc -I "$REPO/proto" \
    --python_out="$1" --grpc_python_out="$1" --pyi_out="$1" \
    "$REPO"/proto/mlua_swarm/v1/*.proto
  printf '"""Generated protobuf / gRPC stubs of proto/mlua_swarm (clients/python/gen_stubs.sh)."""\n' \
    >"$1/mlua_swarm/__init__.py"
  printf '"""Generated from proto/mlua_swarm/v1 by clients/python/gen_stubs.sh; do not edit."""\n' \
    >"$1/mlua_swarm/v1/__init__.py"
}

if [[ "${1:-}" == "--check" ]]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  generate "$tmp"
  if ! diff -r -x __pycache__ "$tmp/mlua_swarm" src/mlua_swarm >"$tmp/diff" 2>&1; then
    head -40 "$tmp/diff" >&2
    echo "clients/python: the committed stubs in src/mlua_swarm/ do not match proto/;" \
      "regenerate them with: bash clients/python/gen_stubs.sh (and commit)" >&2
    exit 1
  fi
  echo "stubs in src/mlua_swarm/ match proto/"
  exit 0
fi

rm -rf src/mlua_swarm
mkdir -p src
generate src
echo "generated src/mlua_swarm/v1/ from proto/"
