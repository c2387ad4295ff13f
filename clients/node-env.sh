# Sourced by clients/ts/test.sh and clients/web/test.sh (with NAME set to the script's
# name): sets REPO and MSE_GRPC_BIN (default <repo>/target/debug/mse-grpc), defines `say`,
# checks that the server binary, node and npm (Node.js 20+) are there, and installs the
# clients/ npm workspace (the SDK and the console) with `npm ci`.
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export MSE_GRPC_BIN="${MSE_GRPC_BIN:-$REPO/target/debug/mse-grpc}"

say() { echo "$NAME: $*"; }

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

say "npm ci (the clients/ workspace: the operator SDK in ts/, the console in web/)"
(cd "$REPO/clients" && npm ci --no-audit --no-fund --loglevel=error)
