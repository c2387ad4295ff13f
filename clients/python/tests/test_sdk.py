"""The SDK against real servers: tasks served through its handlers, a stream dropped
mid-spawn, a server killed (-9) mid-flow and started again, a hook rejection, an ask, and a
stale reply surfacing as a logged warning."""

from __future__ import annotations

import logging
import threading
from collections import Counter

import grpc
import pytest
from conftest import fixture_json, plain, struct, wait_until
from mlua_swarm.v1 import operator_pb2 as op_pb
from mlua_swarm.v1 import task_pb2 as task_pb
from mlua_swarm.v1 import operator_pb2_grpc, task_pb2_grpc
from mlua_swarm_operator import Operator, OperatorError, Outcome
from recording import upper

RPC = 10  # seconds, every unary call
RUN = 30  # seconds, RunTask


def steps(n: int) -> dict:
    """n operator steps for the seat "remote" in a row, with hooks (main_ai) and asks:
    $.input -> s1 -> $.o1 -> s2 -> ... -> $.o<n>."""
    def step(i: int) -> dict:
        src = "$.input" if i == 1 else f"$.o{i - 1}"
        return {"kind": "step", "ref": f"s{i}", "in": {"op": "path", "at": src},
                "out": {"op": "path", "at": f"$.o{i}"}}

    return {
        "schema_version": "0.1.0", "id": f"py-sdk-{n}-steps",
        "flow": {"kind": "seq", "children": [step(i) for i in range(1, n + 1)]},
        "agents": [{"name": f"s{i}", "kind": "operator", "spec": {"operator_ref": "remote"}}
                   for i in range(1, n + 1)],
        "operators": [{"name": "remote", "kind": "main_ai"}],
        "spawner_hints": {"layers": ["main_ai", "senior_escalation"]},
    }


def request(blueprint: dict, input_: str, cls=task_pb.RunTaskRequest):
    return cls(blueprint=task_pb.BlueprintRef(inline=struct(blueprint)),
               init_ctx=struct({"input": input_}))


def session_of(stubs_operators, op) -> op_pb.Session:
    return stubs_operators.GetSession(op_pb.GetSessionRequest(sid=op.sid),
                                      metadata=[("authorization", f"Bearer {op.token}")],
                                      timeout=RPC).session


def handled_once(op) -> None:
    """No request was handed to a handler twice (the SDK dedupes by req_id)."""
    for kind, items in op.seen.items():
        twice = [r for r, n in Counter(i.req_id for i in items).items() if n > 1]
        assert not twice, f"{kind} handled twice: {twice}"


def test_one_step_and_multi_step_tasks_complete_and_every_frame_is_acked(stubs, start_operator):
    op = start_operator(work=lambda p: (f"{p}!", Outcome.PASS))
    one = stubs.tasks.RunTask(request(fixture_json("operator.json"), "hi"), timeout=RUN).task
    assert one.state == task_pb.TASK_STATE_COMPLETED, one.error
    assert plain(one.final_ctx)["output"] == "hi!"
    three = stubs.tasks.RunTask(request(steps(3), "go"), timeout=RUN).task
    assert three.state == task_pb.TASK_STATE_COMPLETED, three.error
    assert plain(three.final_ctx) == {"input": "go", "o1": "go!", "o2": "go!!", "o3": "go!!!"}
    assert [w.agent for w in op.seen["spawn"]] == ["worker", "s1", "s2", "s3"]
    assert [h.agent for h in op.seen["hook_before"]] == ["worker", "s1", "s2", "s3"]
    wait_until(lambda: len(op.seen["hook_after"]) == 4, 5, "4 hook_after")
    handled_once(op)
    # Every request frame was handled and acked: the server holds nothing unacked.
    wait_until(lambda: (lambda s: s.acked_seq == s.last_seq == 12)(session_of(stubs.operators, op)),
               5, "acked_seq == last_seq == 12")
    assert len(op.welcomes) == 1


@pytest.mark.parametrize("finish", ["after_resume", "while_detached"])
def test_a_stream_dropped_mid_spawn_is_resumed_and_the_spawn_handled_once(
        stubs, start_operator, finish):
    """The stream is cut while a spawn is in the handler. The handler finishes after the
    resume (its reply goes on the new stream) or at once, while detached (its reply is kept
    and sent again when the server re-sends the spawn)."""
    op = start_operator()
    dropped = []

    def drop_once(worker):
        if not dropped:
            dropped.append(worker.req_id)
            op.drop_stream()
            if finish == "after_resume":
                wait_until(lambda: len(op.welcomes) == 2, 10, "the stream to be resumed")

    op.spawn_gate = drop_once
    t = stubs.tasks.RunTask(request(fixture_json("operator.json"), "survive"), timeout=RUN).task
    assert t.state == task_pb.TASK_STATE_COMPLETED, t.error
    assert plain(t.final_ctx)["output"] == "SURVIVE"
    first, second = op.welcomes
    assert second.epoch == first.epoch + 1 and not second.server_restarted
    if finish == "after_resume":
        assert second.acked_seq == 1, "the hook_before was handled and acked before the drop"
    else:  # the hello may already ack the spawn (handled, its reply lost with the stream)
        assert second.acked_seq in (1, 2), second
    assert second.replayed == 1, "exactly the spawn still awaited is re-sent"
    assert op.counts["spawn"] == 2, "the server sent the spawn twice ..."
    assert [w.req_id for w in op.seen["spawn"]] == dropped, "... the handler saw it once"
    handled_once(op)
    wait_until(lambda: session_of(stubs.operators, op).acked_seq == 3, 5, "acked_seq 3")


def test_an_ephemeral_server_restart_gets_a_new_session(start_server, start_operator):
    srv = start_server([])  # --ephemeral: the session does not survive
    op = start_operator(srv.addr)
    old_sid = op.sid
    srv.kill_9()
    srv.start()
    wait_until(lambda: len(op.welcomes) == 2, 20, "the operator to attach again")
    assert op.sid != old_sid and op.welcomes[1].sid == op.sid
    with grpc.insecure_channel(srv.addr) as ch:
        t = task_pb2_grpc.TaskServiceStub(ch).RunTask(
            request(fixture_json("operator.json"), "again"), timeout=RUN).task
    assert t.state == task_pb.TASK_STATE_COMPLETED, t.error
    assert plain(t.final_ctx)["output"] == "AGAIN"


def test_a_server_killed_mid_flow_resumes_and_only_the_step_in_flight_runs_again(
        start_server, start_operator, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="mlua_swarm_operator")
    srv = start_server([], data_dir=str(tmp_path / "data"))
    op = start_operator(srv.addr, work=lambda p: (f"{p}!", Outcome.PASS))
    in_step_2 = threading.Event()

    def hold_step_2(worker):
        if worker.agent == "s2" and not in_step_2.is_set():
            in_step_2.set()
            # Inside step 2 while the server dies; the restart voids this request.
            assert worker.wait_cancelled(30), "the restart should withdraw this spawn"

    op.spawn_gate = hold_step_2
    with grpc.insecure_channel(srv.addr) as ch:
        tasks = task_pb2_grpc.TaskServiceStub(ch)
        task_id = tasks.StartTask(request(steps(3), "go", task_pb.StartTaskRequest),
                                  timeout=RPC).task_id
        assert in_step_2.wait(20), "step 2 never reached the handler"
        srv.kill_9()
        srv.start()  # same data dir, same port: the SDK reconnects to the same address

        def state():
            try:
                return tasks.GetTask(task_pb.GetTaskRequest(task_id=task_id), timeout=RPC).task
            except grpc.RpcError:
                return None

        wait_until(lambda: (t := state()) is not None and t.state == task_pb.TASK_STATE_COMPLETED,
                   30, "the resumed task to complete")
        t = state()
    assert plain(t.final_ctx)["o3"] == "go!!!", plain(t.final_ctx)
    restarted = [w for w in op.welcomes if w.server_restarted]
    assert len(restarted) == 1 and restarted[0].epoch > op.welcomes[0].epoch, op.welcomes
    spawns = op.seen["spawn"]
    assert [w.agent for w in spawns] == ["s1", "s2", "s2", "s3"], [w.agent for w in spawns]
    assert spawns[1].req_id != spawns[2].req_id, "the step in flight came again as a new request"
    assert spawns[1].cancelled and not spawns[2].cancelled
    hooks = Counter(h.agent for h in op.seen["hook_before"])
    assert hooks["s1"] == 1 and hooks["s3"] == 1, hooks
    handled_once(op)
    # The void step-2 request got no reply (it would have come back as UNKNOWN_REQ).
    assert not [r.getMessage() for r in caplog.records if "notice" in r.getMessage()]
    assert any("server restarted" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)


def test_pings_are_answered_while_every_handler_thread_is_busy(stubs, start_operator):
    op = start_operator(max_concurrency=1)
    pings_at_start = []

    def busy(worker):  # holds the only handler thread for more than 3 ping intervals
        pings_at_start.append(op.counts.get("ping", 0))
        wait_until(lambda: op.counts.get("ping", 0) >= pings_at_start[0] + 4, 15, "4 pings")

    op.spawn_gate = busy
    t = stubs.tasks.RunTask(request(fixture_json("operator.json"), "busy"), timeout=RUN).task
    assert t.state == task_pb.TASK_STATE_COMPLETED, t.error
    assert len(op.welcomes) == 1, "the stream stayed up: the pongs did not wait for a thread"


def test_a_session_deleted_elsewhere_ends_the_operator_without_reconnecting(stubs, start_operator):
    op = start_operator()
    stubs.operators.DeleteSession(op_pb.DeleteSessionRequest(sid=op.sid),
                                  metadata=[("authorization", f"Bearer {op.token}")], timeout=RPC)
    assert op.wait(10), "closing{retry_after_ms: 0} ends the operator"
    assert op.error is None and len(op.welcomes) == 1 and op.counts["closing"] == 1


def test_a_rejecting_hook_fails_the_task_with_its_reason(stubs, start_operator):
    op = start_operator(hook=lambda h: (False, f"no {h.agent} today"))
    t = stubs.tasks.RunTask(request(fixture_json("operator.json"), "x"), timeout=RUN).task
    assert t.state == task_pb.TASK_STATE_FAILED
    assert "no worker today" in t.error, t.error
    assert len(op.seen["hook_before"]) == 1 and not op.seen["spawn"]


def test_a_blocked_submit_is_asked_and_the_answer_lands_in_ctx(stubs, start_operator):
    answer = {"advice": "split it in two", "confidence": 0.5}

    def work(prompt):
        return (f"blocked: {prompt}", Outcome.BLOCKED) if "hard" in prompt else upper(prompt)

    op = start_operator(work=work, answer=answer)
    t = stubs.tasks.RunTask(request(fixture_json("operator.json"), "a hard job"), timeout=RUN).task
    assert t.state == task_pb.TASK_STATE_COMPLETED, t.error
    out = plain(t.final_ctx)["output"]
    assert out["senior_answer"] == answer, out
    assert out["original"] == "blocked: a hard job", out
    assert len(op.seen["ask"]) == 1 and op.seen["ask"][0].task_id == t.task_id
    # The escalated answer is the step's result.
    events = list(stubs.tasks.WatchTask(task_pb.WatchTaskRequest(task_id=t.task_id), timeout=RPC))
    finished = [e.event.step_finished for e in events if e.event.HasField("step_finished")]
    assert len(finished) == 1, events
    assert plain(finished[0].result)["senior_answer"] == answer


def test_a_stale_reply_is_a_logged_warning_and_the_operator_keeps_serving(
        stubs, start_operator, caplog):
    caplog.set_level(logging.INFO, logger="mlua_swarm_operator")
    op = start_operator()
    in_spawn = threading.Event()

    def until_cancelled(worker):
        if not in_spawn.is_set():
            in_spawn.set()
            assert worker.wait_cancelled(20), "CancelTask should withdraw this spawn"

    op.spawn_gate = until_cancelled
    task_id = stubs.tasks.StartTask(
        request(fixture_json("operator.json"), "x", task_pb.StartTaskRequest), timeout=RPC).task_id
    assert in_spawn.wait(20)
    stubs.tasks.CancelTask(task_pb.CancelTaskRequest(task_id=task_id, reason="changed my mind"),
                           timeout=RPC)
    wait_until(lambda: op.seen["cancel"], 10, "on_cancel")
    spawn = op.seen["spawn"][0]
    assert op.seen["cancel"][0].req_id == spawn.req_id
    assert "changed my mind" in op.seen["cancel"][0].reason

    def stale_warnings():
        return [r for r in caplog.records
                if r.levelno == logging.WARNING and "NOTICE_CODE_STALE" in r.getMessage()]

    wait_until(lambda: any("withdrawn" in r.getMessage() for r in caplog.records), 10,
               "the handler's reply to be dropped")
    assert not stale_warnings(), "the SDK itself does not reply to a withdrawn request"
    # A reply that raced the cancel (as a slower SDK or a second process would send it):
    # injected on the live stream.
    op._stream.send(op_pb.ClientFrame(spawn_ack=op_pb.SpawnAck(req_id=spawn.req_id)))
    wait_until(stale_warnings, 10, "a STALE notice logged as a warning")
    assert spawn.req_id in stale_warnings()[0].getMessage()
    # The operator is still up, on the same stream, and serves the next task.
    assert op.connected.is_set() and len(op.welcomes) == 1 and op.error is None
    t = stubs.tasks.RunTask(request(fixture_json("operator.json"), "next"), timeout=RUN).task
    assert t.state == task_pb.TASK_STATE_COMPLETED, t.error
    assert plain(t.final_ctx)["output"] == "NEXT"


def test_the_api_token_goes_on_create_and_delete_session(start_server, start_operator):
    srv = start_server(["--api-token", "py-sdk-secret"])
    access = [("x-mse-access-token", "py-sdk-secret")]
    with pytest.raises(OperatorError) as ei:
        Operator(srv.addr, roles=["remote"]).start()
    assert ei.value.code == grpc.StatusCode.UNAUTHENTICATED
    op = start_operator(srv.addr, api_token="py-sdk-secret")
    with grpc.insecure_channel(srv.addr) as ch:
        tasks = task_pb2_grpc.TaskServiceStub(ch)
        t = tasks.RunTask(request(fixture_json("operator.json"), "gated"), metadata=access,
                          timeout=RUN).task
        assert t.state == task_pb.TASK_STATE_COMPLETED, t.error
        assert plain(t.final_ctx)["output"] == "GATED"
        op.stop()  # deletes the session it created, with the API token beside its own
        listed = operator_pb2_grpc.OperatorServiceStub(ch).ListSessions(
            op_pb.ListSessionsRequest(), metadata=access, timeout=RPC).sessions
        assert op.sid not in [s.sid for s in listed]
