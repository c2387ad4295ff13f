"""End to end against a real server: SDK operators serve real tasks; the server's RPCs and
status codes; the example program (examples/echo_operator.py)."""

from __future__ import annotations

import copy
import os
import re
import signal
import subprocess
import sys
import threading

import grpc
import pytest
from conftest import CLIENT_DIR, PING_INTERVAL_SECS, fixture_json, plain, struct, wait_until
from mlua_swarm.v1 import blueprint_pb2 as bp_pb
from mlua_swarm.v1 import operator_pb2 as op_pb
from mlua_swarm.v1 import task_pb2 as task_pb
from mlua_swarm.v1 import worker_pb2 as wk_pb
from mlua_swarm_operator import Operator, OperatorError, Outcome

RPC = 10  # seconds, every unary call
RUN = 30  # seconds, RunTask
HEX64 = re.compile(r"^[0-9a-f]{64}$")


def inline_run(input_, blueprint=None) -> task_pb.RunTaskRequest:
    return task_pb.RunTaskRequest(
        blueprint=task_pb.BlueprintRef(inline=struct(blueprint or fixture_json("operator.json"))),
        init_ctx=struct({"input": input_}),
    )


def run(stubs, req) -> task_pb.Task:
    return stubs.tasks.RunTask(req, timeout=RUN).task


def code_of(fn) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as ei:
        fn()
    return ei.value.code()


def test_run_task_completes_with_the_submitted_output(stubs, start_operator):
    op = start_operator()
    t = run(stubs, inline_run("write a haiku"))
    assert t.state == task_pb.TASK_STATE_COMPLETED, t.error
    assert plain(t.final_ctx) == {"input": "write a haiku", "output": "WRITE A HAIKU"}
    assert t.blueprint_id == "op-one" and len(t.step_ids) == 1
    # hook_before was approved, the spawn served, hook_after seen; every frame acked.
    wait_until(lambda: len(op.seen["hook_after"]) == 1, 5, "hook_after")
    assert len(op.seen["hook_before"]) == 1 and len(op.seen["spawn"]) == 1
    wait_until(
        lambda: stubs.operators.GetSession(
            op_pb.GetSessionRequest(sid=op.sid), metadata=[("authorization", f"Bearer {op.token}")],
            timeout=RPC,
        ).session.acked_seq == 3,
        5, "acked_seq 3",
    )
    # The same task, read back and watched (events are replayed from the start).
    got = stubs.tasks.GetTask(task_pb.GetTaskRequest(task_id=t.task_id), timeout=RPC).task
    assert got.state == task_pb.TASK_STATE_COMPLETED
    kinds = [e.event.WhichOneof("kind")
             for e in stubs.tasks.WatchTask(task_pb.WatchTaskRequest(task_id=t.task_id), timeout=RPC)]
    assert kinds == ["started", "step_dispatched", "step_finished", "completed"]


def test_operator_runs_as_a_program(server, stubs, tmp_path):
    log = tmp_path / "operator.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, os.path.join(CLIENT_DIR, "examples", "echo_operator.py"),
             "--addr", server.addr,
             "--roles", "remote", "--reply", "done: {prompt}"],
            stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, text=True,
        )
    watchdog = threading.Timer(30, proc.kill)  # bounds the blocking reads below
    watchdog.start()
    try:
        first = proc.stdout.readline()  # "session <sid> token <token>"
        assert first.startswith("session op-"), (first, log.read_text())
        sid = first.split()[1]
        t = run(stubs, inline_run("from a process"))
        assert t.state == task_pb.TASK_STATE_COMPLETED, t.error
        assert plain(t.final_ctx)["output"] == "done: from a process"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
        watchdog.cancel()
    out = log.read_text()
    assert proc.returncode == 0, out
    assert "deleted session" in out, out
    listed = stubs.operators.ListSessions(op_pb.ListSessionsRequest(), timeout=RPC).sessions
    assert sid not in [s.sid for s in listed]


def test_stored_blueprint_runs_by_id_and_by_version(stubs, start_operator):
    start_operator(work=lambda p: (f"stored: {p}", Outcome.PASS))
    doc = copy.deepcopy(fixture_json("operator.json"))
    doc["id"] = bp_id = "py-e2e-stored"
    put = stubs.blueprints.PutBlueprint(bp_pb.PutBlueprintRequest(id=bp_id, blueprint=struct(doc)),
                                        timeout=RPC)
    assert put.created and HEX64.match(put.version), put
    again = stubs.blueprints.PutBlueprint(
        bp_pb.PutBlueprintRequest(id=bp_id, blueprint=struct(doc)), timeout=RPC)
    assert (again.created, again.version) == (False, put.version)

    versions = stubs.blueprints.ListVersions(bp_pb.ListVersionsRequest(id=bp_id), timeout=RPC)
    assert [v.version for v in versions.versions] == [put.version]
    assert all(HEX64.match(v.version) for v in versions.versions)
    head = stubs.blueprints.GetBlueprint(bp_pb.GetBlueprintRequest(id=bp_id), timeout=RPC)
    assert head.version == put.version and plain(head.blueprint)["id"] == bp_id
    exact = stubs.blueprints.GetBlueprint(
        bp_pb.GetBlueprintRequest(id=bp_id, version=put.version), timeout=RPC)
    assert exact.blueprint == head.blueprint
    listed = stubs.blueprints.ListBlueprints(bp_pb.ListBlueprintsRequest(), timeout=RPC)
    assert (bp_id, put.version) in [(b.id, b.head_version) for b in listed.blueprints]

    for selector in (None, task_pb.VersionSelector(latest=True),
                     task_pb.VersionSelector(fixed=versions.versions[0].version)):
        ref = task_pb.StoredBlueprintRef(id=bp_id, version=selector)
        t = run(stubs, task_pb.RunTaskRequest(blueprint=task_pb.BlueprintRef(stored=ref),
                                              init_ctx=struct({"input": "kept"})))
        assert t.state == task_pb.TASK_STATE_COMPLETED, t.error
        assert t.bound_version == put.version and t.blueprint_id == bp_id
        assert plain(t.final_ctx)["output"] == "stored: kept"


def test_operator_joins_an_existing_session(stubs, start_operator):
    created = stubs.operators.CreateSession(op_pb.CreateSessionRequest(roles=["remote"]),
                                            timeout=RPC)
    auth = [("authorization", f"Bearer {created.token}")]
    op = start_operator(session=(created.sid, created.token), roles=())
    t = run(stubs, inline_run("joined"))
    assert t.state == task_pb.TASK_STATE_COMPLETED, t.error
    assert plain(t.final_ctx)["output"] == "JOINED"
    op.stop()  # a joined session is not ours to delete
    s = stubs.operators.GetSession(op_pb.GetSessionRequest(sid=created.sid), metadata=auth,
                                   timeout=RPC).session
    assert list(s.roles) == ["remote"]
    stubs.operators.DeleteSession(op_pb.DeleteSessionRequest(sid=created.sid), metadata=auth,
                                  timeout=RPC)


def test_pings_are_answered_and_keep_the_stream(stubs, start_operator):
    op = start_operator()
    wait_until(lambda: op.counts.get("ping", 0) >= 4, 8 * PING_INTERVAL_SECS + 5, "4 pings")
    # More than 3 ping intervals passed; the server would have dropped a silent stream.
    s = stubs.operators.GetSession(op_pb.GetSessionRequest(sid=op.sid),
                                   metadata=[("authorization", f"Bearer {op.token}")],
                                   timeout=RPC).session
    assert s.connected and s.epoch == 1 and len(op.welcomes) == 1


def test_bad_input_gets_the_right_status_codes(stubs, server, start_operator):
    # Unknown stored Blueprint.
    unknown = task_pb.RunTaskRequest(blueprint=task_pb.BlueprintRef(
        stored=task_pb.StoredBlueprintRef(id="no-such-blueprint")))
    assert code_of(lambda: stubs.tasks.RunTask(unknown, timeout=RPC)) == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: stubs.blueprints.GetBlueprint(
        bp_pb.GetBlueprintRequest(id="no-such-blueprint"), timeout=RPC)) == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: stubs.tasks.GetTask(
        task_pb.GetTaskRequest(task_id="task-nope"), timeout=RPC)) == grpc.StatusCode.NOT_FOUND
    # A Blueprint that is not one.
    assert code_of(lambda: stubs.blueprints.PutBlueprint(bp_pb.PutBlueprintRequest(
        id="broken", blueprint=struct({"flow": 42})), timeout=RPC)) == grpc.StatusCode.INVALID_ARGUMENT

    op = start_operator()
    # The seat is held by a live session.
    assert code_of(lambda: stubs.operators.CreateSession(
        op_pb.CreateSessionRequest(roles=["remote"]), timeout=RPC)) == grpc.StatusCode.ALREADY_EXISTS

    # Connect with a wrong token / an unknown sid: statuses before welcome.
    def connect(sid, token):
        frames = iter([op_pb.ClientFrame(hello=op_pb.Hello(sid=sid))])
        call = stubs.operators.Connect(frames, metadata=[("authorization", f"Bearer {token}")],
                                       timeout=RPC)
        return next(call)

    assert code_of(lambda: connect(op.sid, "0" * 32)) == grpc.StatusCode.UNAUTHENTICATED
    assert code_of(lambda: connect("op-unknown", op.token)) == grpc.StatusCode.NOT_FOUND
    # The SDK reports a wrong token as a fatal error instead of retrying.
    bad = Operator(server.addr, session=(op.sid, "wrong"))
    with pytest.raises(OperatorError) as ei:
        bad.run()
    assert ei.value.code == grpc.StatusCode.UNAUTHENTICATED
    # ... and the real operator's stream was not disturbed.
    assert op.connected.is_set() and len(op.welcomes) == 1

    # Worker credentials.
    assert code_of(lambda: stubs.workers.GetPrompt(
        wk_pb.GetPromptRequest(), metadata=[("authorization", "Bearer wh-deadbeef")],
        timeout=RPC)) == grpc.StatusCode.UNAUTHENTICATED

    # A task past the client's deadline keeps running; cancel it, then cancel again.
    endless = task_pb.RunTaskRequest(blueprint=task_pb.BlueprintRef(
        inline=struct(fixture_json("endless.json"))))
    assert code_of(lambda: stubs.tasks.RunTask(endless, timeout=0.5)) == \
        grpc.StatusCode.DEADLINE_EXCEEDED
    def running_endless():
        running = stubs.tasks.ListTasks(
            task_pb.ListTasksRequest(state=task_pb.TASK_STATE_RUNNING), timeout=RPC).tasks
        return [t.task_id for t in running if t.blueprint_id == "endless"]

    wait_until(running_endless, 5, "the endless task to show up as RUNNING")
    ids = running_endless()
    for task_id in ids:
        c = stubs.tasks.CancelTask(task_pb.CancelTaskRequest(task_id=task_id, reason="test over"),
                                   timeout=RPC).task
        assert c.state == task_pb.TASK_STATE_CANCELLED and "test over" in c.error
        assert code_of(lambda: stubs.tasks.CancelTask(
            task_pb.CancelTaskRequest(task_id=task_id), timeout=RPC)) == \
            grpc.StatusCode.FAILED_PRECONDITION
