#!/usr/bin/env bash
# Smoke test of scripts/cluster.sh (run by scripts/test.sh): `up` in a temp MSE_CLUSTER_DIR,
# then through the balancer with grpcurl: health SERVING; an in-process Blueprint
# (tests/fixtures/identity.json) run MSE_SMOKE_TASKS times (default 5), one connection
# each, so round robin spreads them over the replicas; each task read back with GetTask
# once per replica (again through the balancer: consecutive connections land on each
# replica in turn, so most reads are served by a replica that did not run the task),
# then watched (WatchTask) and listed (ListTasks). Then `down`, checking no process of
# the cluster runs and its dirs are gone. Tears down on any exit. Skips (saying so)
# without PostgreSQL binaries.
set -euo pipefail
shopt -s inherit_errexit
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib/common.sh
source "$REPO/scripts/lib/common.sh"

TASKS="${MSE_SMOKE_TASKS:-5}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/mse-cluster-smoke.XXXXXX")"
export MSE_CLUSTER_DIR="$WORK/cluster"
PASS=0
FAIL=0

cleanup() {
  if [ -e "$MSE_CLUSTER_DIR" ]; then bash "$REPO/scripts/cluster.sh" down >/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

ok() {
  PASS=$((PASS + 1))
  echo "  ok    $*"
}
bad() {
  FAIL=$((FAIL + 1))
  echo "  FAIL  $*"
}
PY="$(python3 -c 'import sys; print(sys.executable)')" # skips a version manager's shim per call
now() { date +%s.%N; }
secs() { "$PY" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$2"; }

# json EXPR [ARG...]: EXPR over the JSON grpcurl printed on stdin (`rs`: every object, a
# stream prints several; `r`: the first; `kinds()`: the events' kinds; sys.argv[2:]: the
# ARGs), printed; "" when it does not parse.
json() { "$PY" -c 'import json, sys
text, dec, i, rs = sys.stdin.read(), json.JSONDecoder(), 0, []
KINDS = ("started", "stepDispatched", "stepFinished", "completed", "failed", "cancelled")
try:
    while (i := len(text) - len(text[i:].lstrip())) < len(text):
        o, i = dec.raw_decode(text, i)
        rs.append(o)
    r = rs[0] if rs else None
    kinds = lambda: " ".join(next(k for k in KINDS if k in e["event"]) for e in rs)
    print(eval(sys.argv[1]))
except Exception:
    print("")' "$@"; }

# rpc ADDR METHOD JSON: one grpcurl call (one connection); sets OUT and RC.
rpc() {
  RC=0
  OUT="$(grpcurl -plaintext -connect-timeout 5 -max-time 30 -d "$3" "$1" "$2" 2>&1)" || RC=$?
}

# last_backend: the replica the balancer gave its newest connection.
last_backend() { grep -o ' -> r[0-9]*' "$MSE_CLUSTER_DIR/logs/balancer.log" | tail -1 | cut -c5-; }

deps_postgres
if ! deps_pg_bin >/dev/null; then
  echo "SKIPPED: no PostgreSQL 15+ binaries (apt-get install postgresql, or set MSE_PG_BIN)"
  exit 0
fi
deps_grpcurl
deps_nats_server

echo "== cluster.sh up (MSE_CLUSTER_DIR=$MSE_CLUSTER_DIR)"
t0="$(now)"
if ! bash "$REPO/scripts/cluster.sh" up; then
  echo "0 passed, 1 failed (cluster.sh up)"
  exit 1
fi
UP_SECS="$(secs "$t0" "$(now)")"
# shellcheck source=/dev/null
source "$MSE_CLUSTER_DIR/cluster.env"
read -r -a PORT_OF <<<"$REPLICA_PORTS"
LB="127.0.0.1:$BALANCER_PORT"
t1="$(now)"

echo "== through the balancer $LB"
rpc "$LB" grpc.health.v1.Health/Check '{}'
if [ "$RC" = 0 ] && [ "$(json 'r["status"]' <<<"$OUT")" = SERVING ]; then
  ok "gRPC health: SERVING ($(last_backend))"
else
  bad "gRPC health (rc=$RC): $OUT"
fi

BP="$("$PY" -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1]))))' \
  "$REPO/tests/fixtures/identity.json")"
declare -A RUNNER=()
IDS=()
for ((i = 1; i <= TASKS; i++)); do
  rpc "$LB" mlua_swarm.v1.TaskService/RunTask \
    "{\"blueprint\": {\"inline\": $BP}, \"init_ctx\": {\"input\": \"smoke-$i\"}}"
  id="$(json 'r["task"]["taskId"]' <<<"$OUT")"
  runner="$(last_backend)"
  if [ "$RC" = 0 ] && [ -n "$id" ] &&
    [ "$(json 'r["task"]["state"] + " " + r["task"]["finalCtx"]["output"]["echoed"]' <<<"$OUT")" = \
      "TASK_STATE_COMPLETED smoke-$i" ]; then
    ok "RunTask $i: $id completed on $runner"
    IDS+=("$id")
    RUNNER[$id]="$runner"
  else
    bad "RunTask $i (rc=$RC, on $runner): $(head -c 600 <<<"$OUT")"
  fi
done
used="$(printf '%s\n' "${RUNNER[@]}" | sort -u | wc -l)"
want=$((TASKS < REPLICAS ? TASKS : REPLICAS))
if ((used == want)); then
  ok "the tasks ran on $used replicas"
else
  bad "the tasks ran on $used replicas, expected $want"
fi

ELSEWHERE=0
for id in "${IDS[@]}"; do
  runner="${RUNNER[$id]}"
  for ((k = 0; k < REPLICAS; k++)); do
    rpc "$LB" mlua_swarm.v1.TaskService/GetTask "{\"task_id\": \"$id\"}"
    reader="$(last_backend)"
    if [ "$RC" = 0 ] && [ "$(json 'r["task"]["state"]' <<<"$OUT")" = TASK_STATE_COMPLETED ]; then
      ok "GetTask $id on $reader (ran on $runner): COMPLETED"
      if [ "$reader" != "$runner" ]; then ELSEWHERE=$((ELSEWHERE + 1)); fi
    else
      bad "GetTask $id on $reader (ran on $runner; rc=$RC): $(head -c 600 <<<"$OUT")"
    fi
  done
done
want=$((${#IDS[@]} * (REPLICAS - 1)))
if ((ELSEWHERE == want)); then
  ok "$ELSEWHERE of the reads landed on a replica that had not run the task"
else
  bad "$ELSEWHERE reads landed on a replica that had not run the task, expected $want"
fi

for id in "${IDS[@]}"; do
  rpc "$LB" mlua_swarm.v1.TaskService/WatchTask "{\"task_id\": \"$id\"}"
  reader="$(last_backend)"
  events="$(json 'kinds() + " " + rs[-1]["event"]["completed"]["finalCtx"]["output"]["echoed"]' <<<"$OUT")"
  if [ "$RC" = 0 ] && [[ "$events" == "started "*" completed smoke-"* ]]; then
    ok "WatchTask $id on $reader (ran on ${RUNNER[$id]}): $events"
  else
    bad "WatchTask $id on $reader (ran on ${RUNNER[$id]}; rc=$RC): $(head -c 600 <<<"$OUT")"
  fi
done

rpc "$LB" mlua_swarm.v1.TaskService/ListTasks '{}'
listed="$(json 'len(set(t["taskId"] for t in r["tasks"]) & set(sys.argv[2:]))' "${IDS[@]}" <<<"$OUT")"
if [ "$RC" = 0 ] && [ "$listed" = "${#IDS[@]}" ]; then
  ok "ListTasks on $(last_backend) lists all ${#IDS[@]} tasks"
else
  bad "ListTasks on $(last_backend) (rc=$RC) lists ${listed:-none} of the ${#IDS[@]} tasks"
fi
CALLS_SECS="$(secs "$t1" "$(now)")"

echo "== cluster.sh down"
pids=()
for f in "$MSE_CLUSTER_DIR"/pids/*.pid; do pids+=("$(cat "$f")"); done
pg_pid="$(head -1 "$PG_ROOT/data/postmaster.pid")"
pids+=("$pg_pid $(proc_start_time "$pg_pid")")
t2="$(now)"
if bash "$REPO/scripts/cluster.sh" down; then ok "down"; else bad "down failed"; fi
DOWN_SECS="$(secs "$t2" "$(now)")"
left=()
for p in "${pids[@]}"; do
  read -r pid started <<<"$p"
  if proc_alive "$pid" "$started"; then left+=("$pid"); fi
done
if ((${#left[@]} == 0)); then ok "no process of the cluster runs (${#pids[@]} checked)"; else bad "still running: ${left[*]}"; fi
if [ ! -e "$MSE_CLUSTER_DIR" ] && [ ! -e "$PG_ROOT" ]; then
  ok "the cluster dir and PostgreSQL's dir are gone"
else
  bad "left behind: $MSE_CLUSTER_DIR or $PG_ROOT"
fi
for port in "$BALANCER_PORT" "${PORT_OF[@]}" "$NATS_PORT" "$PG_PORT"; do
  if { : >"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null; then bad "port $port still answers"; fi
done

echo "   up ${UP_SECS}s, the calls ${CALLS_SECS}s, down ${DOWN_SECS}s"
echo "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
