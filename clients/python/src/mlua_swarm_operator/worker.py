"""A spawned step, ready to be worked: its prompt in, its result out."""

from __future__ import annotations

import threading
from typing import Any, List, Tuple, cast

from mlua_swarm.v1 import operator_pb2 as op_pb
from mlua_swarm.v1 import worker_pb2 as wk_pb
from mlua_swarm.v1 import worker_pb2_grpc as wk_grpc

from .events import Outcome, Prompt
from .values import to_value


class Worker:
    """One ``spawn``: the step's identity and the credentials to work it.

    ``get_prompt()`` / ``submit()`` call ``WorkerService`` with the spawn's worker handle;
    to hand the step to another process instead, give it ``worker_handle`` (or
    ``capability_token``) and the ``directive``. ``cancelled`` becomes true when the server
    withdraws the request (task cancelled, deadline passed, server restarted): stop working
    then; whatever the handler returns afterwards is not sent.
    """

    def __init__(self, spawn: op_pb.Spawn, stub: wk_grpc.WorkerServiceStub, timeout: float,
                 cancelled: threading.Event) -> None:
        self.req_id = spawn.req_id
        self.task_id = spawn.task_id
        self.step_id = spawn.step_id
        self.agent = spawn.agent
        self.attempt = spawn.attempt
        self.directive = spawn.directive
        self.worker_handle = spawn.worker_handle
        self.capability_token = spawn.capability_token
        self.deadline_unix_ms = spawn.deadline_unix_ms
        self.traceparent = spawn.traceparent
        self._stub = stub
        self._timeout = timeout
        self._cancelled = cancelled

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Blocks until the request is withdrawn (True) or ``timeout`` passes (False)."""
        return self._cancelled.wait(timeout)

    def _metadata(self, credential: str) -> List[Tuple[str, str]]:
        md = [("authorization", f"Bearer {credential}")]
        if self.traceparent:
            md.append(("traceparent", self.traceparent))
        return md

    def get_prompt(self) -> Prompt:
        """The step's prompt and its agent's rendered system prompt."""
        resp = self._stub.GetPrompt(wk_pb.GetPromptRequest(step_id=self.step_id),
                                    metadata=self._metadata(self.worker_handle),
                                    timeout=self._timeout)
        return Prompt.of(resp)

    def submit(self, body: str, outcome: Outcome = Outcome.PASS) -> None:
        """Submits the step's result as text."""
        req = wk_pb.SubmitRequest(body=body, step_id=self.step_id,
                                  outcome=cast(wk_pb.SubmitOutcome, int(outcome)))
        self._stub.Submit(req, metadata=self._metadata(self.worker_handle), timeout=self._timeout)

    def post_result(self, value: Any, ok: bool = True) -> None:
        """Submits the step's result as a JSON value (uses the capability token)."""
        self._stub.PostResult(
            wk_pb.PostResultRequest(step_id=self.step_id, value=to_value(value), ok=ok),
            metadata=self._metadata(self.capability_token), timeout=self._timeout)
