#!/usr/bin/env bash
# Installs the Python client's requirements, generates the stubs from proto/ into gen/, and
# runs the end-to-end tests against a real server (env MSE_GRPC_BIN, default
# <repo>/target/debug/mse-grpc; the tests start and stop it themselves).
set -euo pipefail
cd "$(dirname "$0")"
REPO="$(cd ../.. && pwd)"
export MSE_GRPC_BIN="${MSE_GRPC_BIN:-$REPO/target/debug/mse-grpc}"
PY="${PYTHON:-python3}"

if [[ ! -x "$MSE_GRPC_BIN" ]]; then
  echo "clients/python/test.sh: no server binary at $MSE_GRPC_BIN (build it or set MSE_GRPC_BIN)" >&2
  exit 1
fi

echo "== installing requirements"
"$PY" -m pip install -q --disable-pip-version-check -r requirements.txt

echo "== generating stubs into gen/"
rm -rf gen
mkdir -p gen
"$PY" -m grpc_tools.protoc -I "$REPO/proto" \
  --python_out=gen --grpc_python_out=gen --pyi_out=gen \
  "$REPO"/proto/mlua_swarm/v1/*.proto
touch gen/mlua_swarm/__init__.py gen/mlua_swarm/v1/__init__.py

echo "== pytest (server: $MSE_GRPC_BIN)"
rc=0
timeout 600 "$PY" -m pytest -p no:cacheprovider -v tests "$@" || rc=$?
if [[ $rc -eq 5 ]]; then
  echo "clients/python/test.sh: pytest collected no tests" >&2
  exit 1
fi
exit $rc
