#!/usr/bin/env bash
# Builds the operator SDK (@mlua-swarm/operator) and runs its tests against real servers:
# `npm ci` in clients/ (the npm workspace: this package and the console), `npm run build`
# (buf → src/gen/, tsc → dist/ with .d.ts), then `node --test` (test/*.test.mjs: the tests
# start and stop mse-grpc themselves, on free ports).
#
#   bash clients/ts/test.sh
#
# Env: MSE_GRPC_BIN   server binary (default <repo>/target/debug/mse-grpc)
# Last lines on success: node --test's summary ("# pass N", "# fail 0").
set -euo pipefail
cd "$(dirname "$0")"
REPO="$(cd ../.. && pwd)"
export MSE_GRPC_BIN="${MSE_GRPC_BIN:-$REPO/target/debug/mse-grpc}"

say() { echo "clients/ts/test.sh: $*"; }

if [ ! -x "$MSE_GRPC_BIN" ]; then
  say "no server binary at $MSE_GRPC_BIN: run 'cargo build' first or set MSE_GRPC_BIN" >&2
  exit 1
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  say "node and npm are needed (Node.js 20 or newer)" >&2
  exit 1
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  say "Node.js $(node --version) is too old: 20 or newer is needed" >&2
  exit 1
fi

say "npm ci (clients/ workspace)"
(cd .. && npm ci --no-audit --no-fund --loglevel=error)

say "npm run build"
npm run --silent build

say "node --test (server $MSE_GRPC_BIN)"
timeout 300 node --test --test-concurrency=1 test/*.test.mjs
