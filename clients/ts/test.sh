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
NAME=clients/ts/test.sh
# shellcheck source=../node-env.sh
source ../node-env.sh

say "npm run build"
npm run --silent build

say "node --test (server $MSE_GRPC_BIN)"
timeout 300 node --test --test-concurrency=1 test/*.test.mjs
