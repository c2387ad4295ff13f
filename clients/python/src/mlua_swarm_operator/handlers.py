"""The user's handlers (registered with decorators) and the reply each frame gets."""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Optional, Tuple, TypeVar, Union

from mlua_swarm.v1 import operator_pb2 as op_pb
from mlua_swarm.v1 import worker_pb2_grpc as wk_grpc

from .events import Ask, Cancel, HookAfter, HookBefore, Welcome
from .values import to_value
from .worker import Worker

log = logging.getLogger("mlua_swarm_operator")

# What an on_hook_before handler returns: True / None approve, False rejects, (ok, reason).
HookDecision = Union[None, bool, Tuple[bool, str]]

F = TypeVar("F", bound=Callable[..., Any])


class Handlers:
    """Decorators that register one handler per frame kind. Handlers run on a thread pool,
    several at once; each request is handed to its handler once (see ``Operator``)."""

    def __init__(self) -> None:
        self._hook_before: Optional[Callable[[HookBefore], HookDecision]] = None
        self._spawn: Optional[Callable[[Worker], Any]] = None
        self._ask: Optional[Callable[[Ask], Any]] = None
        self._hook_after: Optional[Callable[[HookAfter], None]] = None
        self._cancel: Optional[Callable[[Cancel], None]] = None
        self._welcome: Optional[Callable[[Welcome], None]] = None

    def on_hook_before(self, fn: F) -> F:
        """``fn(HookBefore) -> True | None | False | (ok, reason)``; raising rejects with the
        error as reason. Without a handler every spawn is approved."""
        self._hook_before = fn
        return fn

    def on_spawn(self, fn: F) -> F:
        """``fn(Worker) -> value``: work the step (``worker.get_prompt()`` /
        ``worker.submit(...)``); the return value is the ack's ``value`` (used only if nothing
        was submitted); raising fails the step with the error."""
        self._spawn = fn
        return fn

    def on_ask(self, fn: F) -> F:
        """``fn(Ask) -> value``: the JSON answer. Raising sends no answer (logged)."""
        self._ask = fn
        return fn

    def on_hook_after(self, fn: F) -> F:
        """``fn(HookAfter)``: a spawn finished."""
        self._hook_after = fn
        return fn

    def on_cancel(self, fn: F) -> F:
        """``fn(Cancel)``: a request was withdrawn (its ``Worker.cancelled`` is already set)."""
        self._cancel = fn
        return fn

    def on_welcome(self, fn: F) -> F:
        """``fn(Welcome)``: every attach, on the stream's thread (keep it short)."""
        self._welcome = fn
        return fn

    # ---- frame -> reply --------------------------------------------------------------

    def _reply_to(self, frame: op_pb.ServerFrame, worker_stub: wk_grpc.WorkerServiceStub,
              rpc_timeout: float, cancelled: threading.Event) -> Optional[op_pb.ClientFrame]:
        """Runs the handler for one request frame; returns the reply to send (or None)."""
        kind = frame.WhichOneof("body")
        if kind == "hook_before":
            return self._hook_ack(frame.hook_before)
        if kind == "spawn":
            return self._spawn_ack(Worker(frame.spawn, worker_stub, rpc_timeout, cancelled))
        if kind == "ask":
            return self._answer(frame.ask)
        if kind == "hook_after" and self._hook_after is not None:
            self._hook_after(HookAfter.of(frame.hook_after))
        elif kind == "cancel" and self._cancel is not None:
            self._cancel(Cancel.of(frame.cancel))
        return None

    def _call_welcome(self, w: Welcome) -> None:
        if self._welcome is not None:
            self._welcome(w)

    def _hook_ack(self, hb: op_pb.HookBefore) -> op_pb.ClientFrame:
        ok, reason = True, ""
        if self._hook_before is not None:
            try:
                ok, reason = decision(self._hook_before(HookBefore.of(hb)))
            except Exception as e:  # noqa: BLE001 - a failing hook rejects, it does not crash
                log.exception("hook_before %s: handler failed", hb.req_id)
                ok, reason = False, f"hook handler failed: {e}"
        return op_pb.ClientFrame(hook_ack=op_pb.HookAck(req_id=hb.req_id, ok=ok, reason=reason))

    def _spawn_ack(self, worker: Worker) -> op_pb.ClientFrame:
        ack = op_pb.SpawnAck(req_id=worker.req_id)
        if self._spawn is None:
            ack.error = "this operator has no on_spawn handler"
            return op_pb.ClientFrame(spawn_ack=ack)
        try:
            value = self._spawn(worker)
            if value is not None:
                ack.value.CopyFrom(to_value(value))
        except Exception as e:  # noqa: BLE001 - becomes the step's error
            if not worker.cancelled:
                log.exception("spawn %s: handler failed", worker.req_id)
            ack = op_pb.SpawnAck(req_id=worker.req_id, error=f"spawn handler failed: {e}")
        return op_pb.ClientFrame(spawn_ack=ack)

    def _answer(self, ask: op_pb.Ask) -> Optional[op_pb.ClientFrame]:
        if self._ask is None:
            log.warning("ask %s: no on_ask handler; not answered", ask.req_id)
            return None
        try:
            value = self._ask(Ask.of(ask))
        except Exception:  # noqa: BLE001 - no answer rather than a made-up one
            log.exception("ask %s: handler failed; not answered", ask.req_id)
            return None
        return op_pb.ClientFrame(answer=op_pb.Answer(req_id=ask.req_id, value=to_value(value)))


def decision(d: HookDecision) -> Tuple[bool, str]:
    """A hook handler's return value as (ok, reason)."""
    if d is None or d is True:
        return True, ""
    if d is False:
        return False, "rejected by the operator"
    if isinstance(d, tuple) and len(d) == 2:
        return bool(d[0]), str(d[1])
    raise TypeError(f"on_hook_before must return a bool, None or (ok, reason), not {d!r}")
