#!/usr/bin/env bash
# Exercises every RPC of every mlua_swarm.v1 service (plus health and reflection) with grpcurl
# against a running server, using reflection only (no .proto), and checks each outcome.
#
#   bash clients/grpcurl/rpcs.sh [ADDR]        # or env MSE_ADDR; default 127.0.0.1:7777
#
# Needs grpcurl and python3 (for the JSON checks). Ids, roles and producer names carry a
# per-run suffix, so it can run again and again against a persistent server. The server
# must not require an API token (--api-token). Ends with "N passed, M failed"; exits 1 on any
# failure.
#
# grpcurl's JSON: field names are camelCase (reqId), 64-bit integers are strings ("seq": "1"),
# default values (false, 0, "") are left out unless -emit-defaults is given.
set -uo pipefail

ADDR="${1:-${MSE_ADDR:-127.0.0.1:7777}}"
RUN="$(date +%s)-$$"
ROLE="rpcs-remote-$RUN"
export ADDR RUN ROLE # the checks read them as env["..."]
V1=mlua_swarm.v1
TMP="$(mktemp -d "${TMPDIR:-/tmp}/rpcs.XXXXXX")"
PASS=0
FAIL=0
BG_PIDS=()

cleanup() {
  exec 3>&- 2>/dev/null || true
  for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

command -v grpcurl >/dev/null || { echo "rpcs.sh: grpcurl not found" >&2; exit 2; }
PY="$(python3 -c 'import sys; print(sys.executable)')" # skips a version manager's shim per call

# ---- JSON helper (python3) -------------------------------------------------------------
# check EXPR / get EXPR: evaluate EXPR over stdin, where `rs` is every JSON object grpcurl
# printed (a stream prints several), `r` the first one, `out` the raw text, `env` the environment.
# wait FILE EXPR SECS: print the first object `f` in FILE (a stream's output, still being
# written) for which EXPR holds; exit 1 if none shows up in time.
cat >"$TMP/h.py" <<'PY'
import json, os, re, sys, time
env = os.environ
_ws = re.compile(r"\s*")

def objs(text):
    dec, i, found = json.JSONDecoder(), 0, []
    while True:
        i = _ws.match(text, i).end()
        if i >= len(text):
            return found
        try:
            o, i = dec.raw_decode(text, i)
        except ValueError:  # a partial object, or an "ERROR:" block
            return found
        found.append(o)

def show(v):
    print(v if isinstance(v, str) else json.dumps(v))

mode = sys.argv[1]
if mode in ("check", "get"):
    out = sys.stdin.read()
    rs = objs(out)
    r = rs[0] if rs else None
    try:
        v = eval("(" + sys.argv[2] + "\n)")  # parenthesized: checks may span lines
    except Exception as e:
        print(f"    ({mode} {sys.argv[2]!r}: {e!r})", file=sys.stderr)
        sys.exit(1)
    if mode == "check":
        sys.exit(0 if v else 1)
    show(v)
elif mode == "wait":
    path, expr, limit = sys.argv[2], sys.argv[3], float(sys.argv[4])
    deadline = time.monotonic() + limit
    while True:
        try:
            with open(path) as fh:
                text = fh.read()
        except FileNotFoundError:
            text = ""
        for f in objs(text):
            try:
                hit = eval("(" + expr + "\n)", {"env": env, "f": f})
            except Exception:
                hit = False
            if hit:
                show(f)
                sys.exit(0)
        if time.monotonic() > deadline:
            sys.exit(1)
        time.sleep(0.1)
PY

# ---- helpers -------------------------------------------------------------------------
section() { printf '\n== %s\n' "$*"; }
pass() { PASS=$((PASS + 1)); printf '  ok    %s\n' "$*"; }
fail() {
  FAIL=$((FAIL + 1))
  printf '  FAIL  %s\n' "$*"
  printf '%s\n' "$OUT" | head -40 | sed 's/^/        | /'
}

# call METHOD JSON [grpcurl flags...]: one grpcurl call; sets OUT (stdout+stderr) and RC.
call() {
  local method=$1 data=$2
  shift 2
  printf '  -> %s %s\n' "${method#"$V1".}" "$(printf '%s' "$data" | tr -s ' \n' ' ' | cut -c1-150)"
  OUT=$(grpcurl -plaintext -connect-timeout 5 -max-time 30 "$@" -d "$data" "$ADDR" "$method" 2>&1)
  RC=$?
}

# expect DESC EXPR: the last call succeeded and EXPR holds.
expect() {
  if [[ $RC -eq 0 ]] && printf '%s' "$OUT" | "$PY" "$TMP/h.py" check "$2"; then
    pass "$1"
  else
    fail "$1 (rc=$RC)"
  fi
}

# expect_code CODE DESC: the last call failed with this gRPC status (grpcurl's name for it).
expect_code() {
  if [[ $RC -ne 0 ]] && grep -q "Code: $1\$" <<<"$OUT"; then
    pass "$2 -> $1"
  else
    fail "$2: expected $1 (rc=$RC)"
  fi
}

# get EXPR: a value out of the last call's output (or of the text given as $2).
get() { printf '%s' "${2-$OUT}" | "$PY" "$TMP/h.py" get "$1"; }

# wait_frame FILE DESC EXPR [SECS]: waits for a frame on a stream; sets FRAME.
wait_frame() {
  if FRAME=$("$PY" "$TMP/h.py" wait "$1" "$3" "${4:-15}"); then
    pass "$2"
    return 0
  fi
  FRAME=""
  OUT=$(tail -c 3000 "$1")
  fail "$2 (not seen within ${4:-15}s; the stream so far is below)"
  return 1
}

# need VALUE DESC: stop here (a later step cannot work without it).
need() {
  [[ -n "$1" ]] && return 0
  FAIL=$((FAIL + 1))
  printf '  FAIL  %s is missing; stopping\n' "$2"
  summary
}

summary() {
  printf '\n%d passed, %d failed\n' "$PASS" "$FAIL"
  [[ $FAIL -eq 0 ]] && exit 0
  exit 1
}

# Blueprints, without "id" (PutBlueprint writes the request's id into them).
HELLO_BP='{"schema_version": "0.1.0",
  "flow": {"kind": "step", "ref": "echo",
           "in": {"op": "path", "at": "$.input"}, "out": {"op": "path", "at": "$.output"}},
  "agents": [{"name": "echo", "kind": "rust_fn", "spec": {"fn_id": "identity"}}]}'
ENDLESS_BP='{"schema_version": "0.1.0", "id": "rpcs-endless",
  "flow": {"kind": "loop", "counter": {"op": "path", "at": "$.i"}, "cond": {"op": "lit", "value": true},
           "max": 1000000,
           "body": {"kind": "step", "ref": "echo", "in": {"op": "path", "at": "$.i"},
                    "out": {"op": "path", "at": "$.last"}}},
  "agents": [{"name": "echo", "kind": "rust_fn", "spec": {"fn_id": "identity"}}]}'
OP_BP='{"schema_version": "0.1.0", "id": "rpcs-op-one",
  "flow": {"kind": "step", "ref": "worker",
           "in": {"op": "path", "at": "$.input"}, "out": {"op": "path", "at": "$.output"}},
  "agents": [{"name": "worker", "kind": "operator", "spec": {"operator_ref": "@ROLE@"},
              "profile": {"system_prompt": "You are a careful worker."}}],
  "operators": [{"name": "@ROLE@", "kind": "main_ai"}],
  "spawner_hints": {"layers": ["main_ai", "senior_escalation"]}}'
OP_BP=${OP_BP//@ROLE@/$ROLE}

echo "rpcs.sh: server $ADDR, run $RUN"

# ======================================================================================
section "Reflection and health"
printf '  -> list\n'
OUT=$(grpcurl -plaintext -connect-timeout 5 -max-time 30 "$ADDR" list 2>&1)
RC=$?
expect "list shows every service" '
all(s in out.split() for s in ["mlua_swarm.v1.BlueprintService", "mlua_swarm.v1.TaskService",
  "mlua_swarm.v1.OperatorService", "mlua_swarm.v1.WorkerService", "mlua_swarm.v1.DataService",
  "mlua_swarm.v1.ServerService", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"])'
printf '  -> list %s.OperatorService\n' "$V1"
OUT=$(grpcurl -plaintext -connect-timeout 5 -max-time 30 "$ADDR" list "$V1.OperatorService" 2>&1)
RC=$?
expect "list OperatorService shows its 7 methods" '
all(f"mlua_swarm.v1.OperatorService.{m}" in out.split() for m in
    ["CreateSession", "GetSession", "ListSessions", "DeleteSession", "Connect", "Subscribe", "Send"])'
call grpc.health.v1.Health/Check '{}'
expect "Health/Check is SERVING" 'r["status"] == "SERVING"'

# ======================================================================================
section "BlueprintService"
export BP_ID="rpcs-hello-$RUN"
call $V1.BlueprintService/PutBlueprint "{\"id\": \"$BP_ID\", \"blueprint\": $HELLO_BP}"
expect "PutBlueprint stores a new head" 'r["created"] is True and re.fullmatch("[0-9a-f]{64}", r["version"]) and r["id"] == env["BP_ID"]' 
VERSION=$(get 'r["version"]')
need "$VERSION" "the stored version"
export BP_ID VERSION

call $V1.BlueprintService/PutBlueprint "{\"id\": \"$BP_ID\", \"blueprint\": $HELLO_BP}" -emit-defaults
expect "PutBlueprint again: created false, same version" 'r["created"] is False and r["version"] == env["VERSION"]'

call $V1.BlueprintService/GetBlueprint "{\"id\": \"$BP_ID\"}"
expect "GetBlueprint head" 'r["version"] == env["VERSION"] and r["blueprint"]["id"] == env["BP_ID"] and r["blueprint"]["agents"][0]["spec"]["fn_id"] == "identity"'

call $V1.BlueprintService/GetBlueprint "{\"id\": \"$BP_ID\", \"version\": \"$VERSION\"}"
expect "GetBlueprint by version" 'r["version"] == env["VERSION"] and r["blueprint"]["id"] == env["BP_ID"]'

call $V1.BlueprintService/GetBlueprint "{\"id\": \"$BP_ID\", \"version\": \"$(printf '0%.0s' {1..64})\"}"
expect_code NotFound "GetBlueprint of an unknown version"

call $V1.BlueprintService/GetBlueprint '{"id": "rpcs-no-such-blueprint"}'
expect_code NotFound "GetBlueprint of an unknown id"

call $V1.BlueprintService/PutBlueprint '{"id": "rpcs-broken", "blueprint": {"flow": 42}}'
expect_code InvalidArgument "PutBlueprint of a malformed Blueprint"

call $V1.BlueprintService/ListBlueprints '{}'
expect "ListBlueprints has it with its head version" 'any(b["id"] == env["BP_ID"] and b["headVersion"] == env["VERSION"] for b in r.get("blueprints", []))'

call $V1.BlueprintService/ListVersions "{\"id\": \"$BP_ID\"}"
expect "ListVersions: one lowercase-hex version, rationale seed" '[v["version"] for v in r["versions"]] == [env["VERSION"]] and r["versions"][0]["rationale"] == "seed"'

call $V1.BlueprintService/ArchiveBlueprint "{\"id\": \"$BP_ID\"}"
expect "ArchiveBlueprint" 'r == {}'
call $V1.BlueprintService/ListBlueprints '{}'
expect "ListBlueprints leaves the archived id out" 'all(b["id"] != env["BP_ID"] for b in (r or {}).get("blueprints", []))'
call $V1.BlueprintService/PutBlueprint "{\"id\": \"$BP_ID\", \"blueprint\": $HELLO_BP}"
expect_code FailedPrecondition "PutBlueprint to an archived id"
call $V1.TaskService/RunTask "{\"blueprint\": {\"stored\": {\"id\": \"$BP_ID\"}}}"
expect_code FailedPrecondition "RunTask of an archived id"

call $V1.BlueprintService/UnarchiveBlueprint "{\"id\": \"$BP_ID\"}"
expect "UnarchiveBlueprint" 'r == {}'
call $V1.BlueprintService/ListBlueprints '{}'
expect "ListBlueprints has it again" 'any(b["id"] == env["BP_ID"] for b in r["blueprints"])'

# ======================================================================================
section "TaskService"
call $V1.TaskService/StartTask "{\"blueprint\": {\"stored\": {\"id\": \"$BP_ID\"}}, \"init_ctx\": {\"input\": \"bg\"}}"
expect "StartTask returns a task id at once" 'r["taskId"].startswith("task-")'
TASK=$(get 'r["taskId"]')
need "$TASK" "the started task id"
export TASK

call $V1.TaskService/WatchTask "{\"task_id\": \"$TASK\"}"
expect "WatchTask streams to the end: started, stepDispatched, stepFinished, completed" '
[next(k for k in ("started", "stepDispatched", "stepFinished", "completed", "failed", "cancelled") if k in e["event"]) for e in rs]
  == ["started", "stepDispatched", "stepFinished", "completed"]
and rs[-1]["event"]["completed"]["finalCtx"]["output"]["echoed"] == "bg"
and [int(e["event"]["seq"]) for e in rs] == [1, 2, 3, 4]'

call $V1.TaskService/GetTask "{\"task_id\": \"$TASK\"}"
expect "GetTask: COMPLETED, bound to the stored version" '
r["task"]["state"] == "TASK_STATE_COMPLETED" and r["task"]["boundVersion"] == env["VERSION"]
and r["task"]["blueprintId"] == env["BP_ID"] and r["task"]["finalCtx"]["output"]["echoed"] == "bg"
and r["task"]["ttlSource"] == "TTL_SOURCE_SERVER_DEFAULT" and r["task"]["effectiveTtlSecs"] == "1800"'

call $V1.TaskService/ListTasks '{}'
expect "ListTasks has it" 'any(t["taskId"] == env["TASK"] for t in r["tasks"])'
call $V1.TaskService/ListTasks '{"state": "TASK_STATE_COMPLETED", "limit": 2}'
expect "ListTasks by state, with a limit" '0 < len(r["tasks"]) <= 2 and all(t["state"] == "TASK_STATE_COMPLETED" for t in r["tasks"])'

call $V1.ServerService/GetStats '{}' -emit-defaults
expect "GetStats: a completed task in the last minute, the live figures all there" '
int(r["tasksCompletedLastMinute"]) >= 1 and all(k in r for k in ["tasksInFlight",
  "operatorPendingRequests", "operatorUnackedFrames", "operatorSessionsLive", "operatorSessionsAttached"])'

call $V1.TaskService/RunTask "{\"blueprint\": {\"stored\": {\"id\": \"$BP_ID\", \"version\": {\"fixed\": \"$VERSION\"}}}, \"init_ctx\": {\"input\": \"hi\"}, \"ttl_secs\": 600}"
expect "RunTask (fixed version, ttl_secs) waits for the result" '
r["task"]["state"] == "TASK_STATE_COMPLETED" and r["task"]["finalCtx"]["output"]["echoed"] == "hi"
and r["task"]["boundVersion"] == env["VERSION"] and r["task"]["ttlSource"] == "TTL_SOURCE_REQUEST_BODY"'

call $V1.TaskService/RunTask '{"blueprint": {"stored": {"id": "rpcs-no-such-blueprint"}}}'
expect_code NotFound "RunTask of an unknown Blueprint"

call $V1.TaskService/StartTask "{\"blueprint\": {\"inline\": $ENDLESS_BP}}"
expect "StartTask of an endless loop" 'r["taskId"].startswith("task-")'
ENDLESS=$(get 'r["taskId"]')
need "$ENDLESS" "the endless task id"
export ENDLESS
call $V1.TaskService/GetTask "{\"task_id\": \"$ENDLESS\"}"
expect "GetTask: it is RUNNING" 'r["task"]["state"] == "TASK_STATE_RUNNING" and "finishedAt" not in r["task"]'
call $V1.TaskService/CancelTask "{\"task_id\": \"$ENDLESS\", \"reason\": \"rpcs.sh is done with it\"}"
expect "CancelTask of a running task" 'r["task"]["state"] == "TASK_STATE_CANCELLED" and "rpcs.sh is done with it" in r["task"]["error"]'
call $V1.TaskService/CancelTask "{\"task_id\": \"$ENDLESS\"}"
expect_code FailedPrecondition "CancelTask of a finished task"
call $V1.TaskService/WatchTask "{\"task_id\": \"$ENDLESS\"}"
expect "WatchTask of the cancelled task ends with cancelled" 'rs[0]["event"].get("started") is not None and "cancelled" in rs[-1]["event"]'
call $V1.TaskService/GetTask '{"task_id": "task-00000000-0000-0000-0000-000000000000"}'
expect_code NotFound "GetTask of an unknown task"
call $V1.TaskService/ResumeTask "{\"task_id\": \"$TASK\"}"
expect_code FailedPrecondition "ResumeTask of a task that was not interrupted"
call $V1.TaskService/RerunTask "{\"task_id\": \"$TASK\", \"from_step\": \"no-such-step\"}"
expect_code InvalidArgument "RerunTask from a step the journal does not hold"
call $V1.TaskService/RerunTask "{\"task_id\": \"$TASK\", \"from_step\": \"echo\"}"
expect "RerunTask from a journaled step: RUNNING again, a second run" '
r["task"]["state"] == "TASK_STATE_RUNNING" and len(r["task"]["runs"]) == 2
and r["task"]["runs"][1]["start"] == "RUN_START_RERUN" and r["task"]["runs"][1]["fromStep"] == "echo"'

# ======================================================================================
section "OperatorService (Connect), WorkerService, DataService"
call $V1.OperatorService/CreateSession "{\"roles\": [\"$ROLE\"]}"
expect "CreateSession" 'r["sid"].startswith("op-") and re.fullmatch("[0-9a-f]{32}", r["token"]) and r["roles"] == [env["ROLE"]]' 
SID=$(get 'r["sid"]')
TOKEN=$(get 'r["token"]')
need "$TOKEN" "the session token"
export SID ROLE
AUTH=(-H "authorization: Bearer $TOKEN")

call $V1.OperatorService/CreateSession "{\"roles\": [\"$ROLE\"]}"
expect_code AlreadyExists "CreateSession of a held role"

call $V1.OperatorService/GetSession "{\"sid\": \"$SID\"}" "${AUTH[@]}"
expect "GetSession: not connected yet" 'r["session"]["sid"] == env["SID"] and r["session"]["roles"] == [env["ROLE"]] and not r["session"].get("connected")'
call $V1.OperatorService/GetSession "{\"sid\": \"$SID\"}" -H "authorization: Bearer wrong"
expect_code Unauthenticated "GetSession with a wrong token"

call $V1.OperatorService/ListSessions '{}'
expect "ListSessions has it, without its token" 'any(s["sid"] == env["SID"] for s in r["sessions"]) and all("token" not in s for s in r["sessions"])'

printf '  -> Connect with a wrong token\n'
OUT=$(printf '{"hello": {"sid": "%s"}}' "$SID" | grpcurl -plaintext -connect-timeout 5 -max-time 10 \
  -H "authorization: Bearer 00000000000000000000000000000000" -d @ "$ADDR" $V1.OperatorService/Connect 2>&1)
RC=$?
expect_code Unauthenticated "Connect with a wrong token"

# The operator stream: grpcurl reads ClientFrames from a FIFO that this shell keeps open for
# writing (fd 3), so the stream stays open while other commands run; its ServerFrames go to
# a file that wait_frame reads.
mkfifo "$TMP/connect.in"
exec 3<>"$TMP/connect.in"
printf '  -> Connect (stream; frames in via %s, out to %s)\n' "connect.in" "connect.out"
grpcurl -plaintext -connect-timeout 5 -max-time 120 "${AUTH[@]}" -d @ "$ADDR" $V1.OperatorService/Connect \
  <"$TMP/connect.in" >"$TMP/connect.out" 2>&1 3>&- &
CONNECT_PID=$!
BG_PIDS+=("$CONNECT_PID")
send() { printf '  <- %s\n' "$1"; printf '%s\n' "$1" >&3; }

send "{\"hello\": {\"sid\": \"$SID\", \"last_seq\": 0}}"
wait_frame "$TMP/connect.out" "Connect: welcome (epoch 1)" \
  '"welcome" in f and f["welcome"]["sid"] == env["SID"] and f["welcome"]["epoch"] == "1" and f["welcome"]["roles"] == [env["ROLE"]]'

call $V1.TaskService/StartTask "{\"blueprint\": {\"inline\": $OP_BP}, \"init_ctx\": {\"input\": \"write a haiku\"}}"
expect "StartTask of a Blueprint served by the seat" 'r["taskId"].startswith("task-")'
T1=$(get 'r["taskId"]')
need "$T1" "the operator task id"
export T1

wait_frame "$TMP/connect.out" "Connect: hookBefore for the task" \
  '"hookBefore" in f and f["hookBefore"]["taskId"] == env["T1"] and f["hookBefore"]["agent"] == "worker"'
need "$FRAME" "the hookBefore frame"
HB_SEQ=$(get 'r["seq"]' "$FRAME")
HB_REQ=$(get 'r["hookBefore"]["reqId"]' "$FRAME")
export HB_SEQ
send "{\"hook_ack\": {\"req_id\": \"$HB_REQ\", \"ok\": true}}"
send "{\"ack\": {\"seq\": $HB_SEQ}}"

wait_frame "$TMP/connect.out" "Connect: spawn with a worker handle and a capability token" \
  '"spawn" in f and f["spawn"]["taskId"] == env["T1"] and f["spawn"]["workerHandle"].startswith("wh-") and len(f["spawn"]["capabilityToken"]) > 100 and env["ADDR"] in f["spawn"]["directive"]' 
need "$FRAME" "the spawn frame"
SP_SEQ=$(get 'r["seq"]' "$FRAME")
SP_REQ=$(get 'r["spawn"]["reqId"]' "$FRAME")
WH=$(get 'r["spawn"]["workerHandle"]' "$FRAME")
CAP=$(get 'r["spawn"]["capabilityToken"]' "$FRAME")
STEP=$(get 'r["spawn"]["stepId"]' "$FRAME")
export STEP

call $V1.OperatorService/GetSession "{\"sid\": \"$SID\"}" "${AUTH[@]}"
expect "GetSession: connected, one pending request, hookBefore acked" '
r["session"]["connected"] is True and r["session"]["pending"] == 1 and r["session"]["ackedSeq"] == env["HB_SEQ"]' 

# --- WorkerService, as the sub-agent ---
call $V1.WorkerService/GetPrompt '{}' -H "authorization: Bearer $WH"
expect "GetPrompt with the worker handle" '
r["stepId"] == env["STEP"] and r["prompt"] == "write a haiku" and r["agent"] == "worker"
and r["system"] == "You are a careful worker." and r["attempt"] == 1'
call $V1.WorkerService/GetPrompt '{}'
expect_code Unauthenticated "GetPrompt without a credential"
call $V1.WorkerService/GetPrompt '{"step_id": "ST-0000000000000000"}' -H "authorization: Bearer $WH"
expect_code PermissionDenied "GetPrompt for another step"

# --- DataService ---
call $V1.DataService/Emit "{\"step_id\": \"$STEP\", \"event\": {\"progress\": {\"stage\": \"drafting\", \"note\": \"half way\"}}}" \
  -H "authorization: Bearer $WH"
expect "Emit (worker handle)" 'r["outId"].startswith("out-")'
OUT1=$(get 'r["outId"]')
NOTES="rpcs-notes-$RUN"
export OUT1 NOTES
call $V1.DataService/EmitNamed "{\"name\": \"$NOTES\", \"step_id\": \"$STEP\", \"event\": {\"final\": {\"content\": {\"inline\": {\"lines\": 3}}, \"ok\": true}}}" \
  -H "authorization: Bearer $CAP"
expect "EmitNamed (capability token)" 'r["outId"].startswith("out-") and r["outId"] != env["OUT1"]'
OUT2=$(get 'r["outId"]')
export OUT2
call $V1.DataService/Get "{\"key\": \"$OUT1\"}"
expect "Get by out id" '
r["record"]["outId"] == env["OUT1"] and r["record"]["stepId"] == env["STEP"] and r["record"]["producerAgent"] == "worker"
and r["record"]["event"]["progress"] == {"stage": "drafting", "note": "half way"}'
call $V1.DataService/Get "{\"key\": \"$NOTES\"}"
expect "Get by producer name" '
r["record"]["outId"] == env["OUT2"] and r["record"]["producerAgent"] == env["NOTES"]
and r["record"]["event"]["final"] == {"content": {"inline": {"lines": 3}}, "ok": True}'
call $V1.DataService/Get '{"key": "rpcs-nothing-by-this-name"}'
expect_code NotFound "Get of an unknown key"
call $V1.DataService/Emit "{\"step_id\": \"$STEP\", \"event\": {\"progress\": {\"stage\": \"x\"}}}"
expect_code Unauthenticated "Emit without a credential"

call $V1.WorkerService/Submit '{"body": "an old silent pond  \n"}' -H "authorization: Bearer $WH"
expect "Submit with the worker handle" 'r["stepId"] == env["STEP"] and r["attempt"] == 1'

# --- back on the operator stream ---
send "{\"spawn_ack\": {\"req_id\": \"$SP_REQ\"}}"
send "{\"ack\": {\"seq\": $SP_SEQ}}"
wait_frame "$TMP/connect.out" "Connect: hookAfter with the submitted result" \
  '"hookAfter" in f and f["hookAfter"]["taskId"] == env["T1"] and f["hookAfter"]["result"] == "an old silent pond"'
HA_SEQ=$(get 'r["seq"]' "$FRAME")
[[ -n "$HA_SEQ" ]] && send "{\"ack\": {\"seq\": $HA_SEQ}}"
export HA_SEQ

call $V1.TaskService/WatchTask "{\"task_id\": \"$T1\"}"
expect "WatchTask: the task completed with the submitted body (trailing whitespace trimmed)" '
rs[-1]["event"]["completed"]["finalCtx"] == {"input": "write a haiku", "output": "an old silent pond"}'
call $V1.WorkerService/GetPrompt '{}' -H "authorization: Bearer $WH"
expect_code Unauthenticated "GetPrompt with a finished step's handle"

send "{\"spawn_ack\": {\"req_id\": \"$SP_REQ\"}}"
export SP_REQ
wait_frame "$TMP/connect.out" "Connect: a second spawn_ack gets notice DUPLICATE" \
  '"notice" in f and f["notice"]["code"] == "NOTICE_CODE_DUPLICATE" and f["notice"]["reqId"] == env["SP_REQ"]'

call $V1.OperatorService/GetSession "{\"sid\": \"$SID\"}" "${AUTH[@]}"
expect "GetSession: nothing pending, every frame acked" '
not r["session"].get("pending") and r["session"]["ackedSeq"] == env["HA_SEQ"] == r["session"]["lastSeq"]'

# End the Connect stream: closing the FIFO's last writer ends grpcurl's input; grpcurl
# half-closes the stream and the server ends it.
exec 3>&-
for _ in $(seq 50); do kill -0 "$CONNECT_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$CONNECT_PID" 2>/dev/null; then
  kill "$CONNECT_PID" 2>/dev/null
  wait "$CONNECT_PID" 2>/dev/null
  OUT=$(tail -c 2000 "$TMP/connect.out")
  fail "Connect did not end within 5s of closing our side"
else
  wait "$CONNECT_PID"
  RC=$?
  OUT=$(tail -c 2000 "$TMP/connect.out")
  if [[ $RC -eq 0 ]]; then pass "Connect ends cleanly when the operator closes its side"; else fail "Connect ended with rc=$RC"; fi
fi

# ======================================================================================
section "OperatorService (Subscribe + Send, the browser door), WorkerService.PostResult"
printf '  -> Subscribe (stream in the background, out to subscribe.out)\n'
grpcurl -plaintext -connect-timeout 5 -max-time 60 "${AUTH[@]}" \
  -d "{\"sid\": \"$SID\", \"last_seq\": $HA_SEQ}" "$ADDR" $V1.OperatorService/Subscribe \
  >"$TMP/subscribe.out" 2>&1 3>&- &
SUB_PID=$!
BG_PIDS+=("$SUB_PID")
wait_frame "$TMP/subscribe.out" "Subscribe: welcome (epoch 2, nothing replayed)" \
  '"welcome" in f and f["welcome"]["epoch"] == "2" and f["welcome"]["ackedSeq"] == env["HA_SEQ"] and not f["welcome"].get("replayed")'

call $V1.TaskService/StartTask "{\"blueprint\": {\"inline\": $OP_BP}, \"init_ctx\": {\"input\": \"second job\"}}"
expect "StartTask" 'r["taskId"].startswith("task-")'
T2=$(get 'r["taskId"]')
export T2
wait_frame "$TMP/subscribe.out" "Subscribe: hookBefore" '"hookBefore" in f and f["hookBefore"]["taskId"] == env["T2"]'
HB2_SEQ=$(get 'r["seq"]' "$FRAME")
HB2_REQ=$(get 'r["hookBefore"]["reqId"]' "$FRAME")

call $V1.OperatorService/Send "{\"sid\": \"$SID\", \"frame\": {\"hook_ack\": {\"req_id\": \"$HB2_REQ\", \"ok\": true}}}" "${AUTH[@]}"
expect "Send hook_ack: ACCEPTED" 'r["outcome"] == "SEND_OUTCOME_ACCEPTED"'
call $V1.OperatorService/Send "{\"sid\": \"$SID\", \"frame\": {\"hook_ack\": {\"req_id\": \"$HB2_REQ\", \"ok\": true}}}" "${AUTH[@]}"
expect "Send the same hook_ack again: DUPLICATE" 'r["outcome"] == "SEND_OUTCOME_DUPLICATE"'
call $V1.OperatorService/Send "{\"sid\": \"$SID\", \"frame\": {\"ack\": {\"seq\": $HB2_SEQ}}}" "${AUTH[@]}"
expect "Send ack: ACCEPTED" 'r["outcome"] == "SEND_OUTCOME_ACCEPTED"'

wait_frame "$TMP/subscribe.out" "Subscribe: spawn" '"spawn" in f and f["spawn"]["taskId"] == env["T2"]'
SP2_SEQ=$(get 'r["seq"]' "$FRAME")
SP2_REQ=$(get 'r["spawn"]["reqId"]' "$FRAME")
WH2=$(get 'r["spawn"]["workerHandle"]' "$FRAME")
CAP2=$(get 'r["spawn"]["capabilityToken"]' "$FRAME")
STEP2=$(get 'r["spawn"]["stepId"]' "$FRAME")
export STEP2

call $V1.OperatorService/Send "{\"sid\": \"$SID\", \"frame\": {\"answer\": {\"req_id\": \"$SP2_REQ\", \"value\": 1}}}" "${AUTH[@]}"
expect "Send an answer to a spawn: WRONG_KIND" 'r["outcome"] == "SEND_OUTCOME_WRONG_KIND"'

call $V1.WorkerService/GetPrompt "{\"step_id\": \"$STEP2\"}" -H "authorization: Bearer $CAP2"
expect "GetPrompt with the capability token" 'r["stepId"] == env["STEP2"] and r["prompt"] == "second job"'
call $V1.WorkerService/PostResult "{\"step_id\": \"$STEP2\", \"value\": {\"lines\": [\"a\", \"b\"]}}" -H "authorization: Bearer $WH2"
expect_code Unauthenticated "PostResult with the worker handle (capability token only)"
call $V1.WorkerService/PostResult "{\"step_id\": \"$STEP2\", \"value\": {\"lines\": [\"a\", \"b\"]}, \"ok\": true}" -H "authorization: Bearer $CAP2"
expect "PostResult with the capability token" 'r["stepId"] == env["STEP2"] and r["attempt"] == 1'

call $V1.OperatorService/Send "{\"sid\": \"$SID\", \"frame\": {\"spawn_ack\": {\"req_id\": \"$SP2_REQ\"}}}" "${AUTH[@]}"
expect "Send spawn_ack: ACCEPTED" 'r["outcome"] == "SEND_OUTCOME_ACCEPTED"'
wait_frame "$TMP/subscribe.out" "Subscribe: hookAfter with the posted value" \
  '"hookAfter" in f and f["hookAfter"]["taskId"] == env["T2"] and f["hookAfter"]["result"] == {"lines": ["a", "b"]}'
HA2_SEQ=$(get 'r["seq"]' "$FRAME")
call $V1.OperatorService/Send "{\"sid\": \"$SID\", \"frame\": {\"ack\": {\"seq\": ${HA2_SEQ:-0}}}}" "${AUTH[@]}"
expect "Send ack of the last frame: ACCEPTED" 'r["outcome"] == "SEND_OUTCOME_ACCEPTED"'
call $V1.OperatorService/Send "{\"sid\": \"$SID\", \"frame\": {\"answer\": {\"req_id\": \"rpcs-never-sent\"}}}" "${AUTH[@]}"
expect "Send an answer to an unknown req_id: UNKNOWN" 'r["outcome"] == "SEND_OUTCOME_UNKNOWN"'

call $V1.TaskService/WatchTask "{\"task_id\": \"$T2\"}"
expect "WatchTask: the task completed with the posted value" 'rs[-1]["event"]["completed"]["finalCtx"]["output"] == {"lines": ["a", "b"]}'
kill "$SUB_PID" 2>/dev/null
wait "$SUB_PID" 2>/dev/null

call $V1.OperatorService/Subscribe "{\"sid\": \"$SID\", \"last_seq\": ${HA2_SEQ:-0}}" "${AUTH[@]}" -max-time 2
if [[ $RC -ne 0 ]] && grep -q 'Code: DeadlineExceeded$' <<<"$OUT" \
  && printf '%s' "$OUT" | "$PY" "$TMP/h.py" check 'r["welcome"]["epoch"] == "3"'; then
  pass "Subscribe briefly (-max-time 2): welcome epoch 3, then the deadline ends it"
else
  fail "Subscribe briefly"
fi

# ======================================================================================
section "OperatorService.DeleteSession"
call $V1.OperatorService/DeleteSession "{\"sid\": \"$SID\"}" "${AUTH[@]}"
expect "DeleteSession" 'r == {}'
call $V1.OperatorService/GetSession "{\"sid\": \"$SID\"}" "${AUTH[@]}"
expect_code NotFound "GetSession of the deleted session"
call $V1.OperatorService/ListSessions '{}'
expect "ListSessions leaves it out" 'all(s["sid"] != env["SID"] for s in (r or {}).get("sessions", []))'
call $V1.OperatorService/CreateSession "{\"roles\": [\"$ROLE\"]}"
expect "CreateSession: the role is free again" 'r["roles"] == [env["ROLE"]]'
SID2=$(get 'r["sid"]')
TOKEN2=$(get 'r["token"]')
call $V1.OperatorService/DeleteSession "{\"sid\": \"$SID2\"}" -H "authorization: Bearer $TOKEN2"
expect "DeleteSession (tidy up)" 'r == {}'

summary
