#!/usr/bin/env bash
# Builds the operator console and runs its end-to-end test: a real server (plain HTTP,
# with --api-token, HTTPS with a test CA made in Node at test time, and one on a data dir
# killed with SIGKILL and restarted), Debian's
# Chromium (headless, driven by playwright-core; no browser download), the test acting as
# the sub-agent. Works from a fresh clone after `cargo build` (the server binary at
# target/debug/mse-grpc, or wherever MSE_GRPC_BIN points).
#
#   bash clients/web/test.sh
#
# Env: MSE_GRPC_BIN   server binary (default <repo>/target/debug/mse-grpc)
#      CHROMIUM       browser (default /usr/bin/chromium, installed with apt if missing)
#      CI / STRICT_DIST=1   a committed dist/ that differs from the fresh build fails the run
#                           (otherwise it is a warning: commit clients/web/dist)
#      UPDATE_SCREENSHOT=1  refresh docs/console.png
# Last line on success: "N passed, 0 failed".
set -euo pipefail
cd "$(dirname "$0")"
WEB="$(pwd)"
NAME=clients/web/test.sh
# shellcheck source=../node-env.sh
source ../node-env.sh

if [ -z "${CHROMIUM:-}" ] && [ ! -x /usr/bin/chromium ]; then
  say "installing chromium (apt)"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

say "npm run build"
npm run --silent build

# The server embeds the committed dist/ at compile time: it must be what the sources build.
if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1 \
  && git -C "$REPO" ls-files --error-unmatch clients/web/dist/app.js >/dev/null 2>&1; then
  if ! git -C "$REPO" diff --quiet -- clients/web/dist; then
    git -C "$REPO" --no-pager diff --stat -- clients/web/dist
    if [ -n "${CI:-}" ] || [ "${STRICT_DIST:-}" = 1 ]; then
      say "clients/web/dist differs from a fresh build: run 'npm run build' in clients/web and commit dist/" >&2
      exit 1
    fi
    say "warning: clients/web/dist differs from the committed one; commit it (the binary embeds it)"
  else
    say "dist/ matches the committed build"
  fi
fi

say "end-to-end test (server $MSE_GRPC_BIN)"
node test/console.spec.mjs
