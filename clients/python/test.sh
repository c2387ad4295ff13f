#!/usr/bin/env bash
# Installs the test requirements, checks that the committed stubs (src/mlua_swarm) match
# proto/, and runs the tests against real servers (env MSE_GRPC_BIN, default
# <repo>/target/debug/mse-grpc; the tests start and stop them themselves). The tests import
# the package from src/; test_install.py also pip-installs it into a fresh venv.
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

echo "== stubs match proto/"
PYTHON="$PY" bash gen_stubs.sh --check

echo "== mypy --strict (the SDK)"
"$PY" -m mypy -p mlua_swarm_operator

echo "== pytest (server: $MSE_GRPC_BIN)"
rc=0
timeout 600 "$PY" -m pytest -p no:cacheprovider -v tests "$@" || rc=$?
if [[ $rc -eq 5 ]]; then
  echo "clients/python/test.sh: pytest collected no tests" >&2
  exit 1
fi
exit $rc
