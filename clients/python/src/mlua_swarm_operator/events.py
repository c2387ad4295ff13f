"""What handlers are given: plain, typed views of the server's frames."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, List

from mlua_swarm.v1 import operator_pb2 as op_pb
from mlua_swarm.v1 import worker_pb2 as wk_pb

from .values import from_value


class Outcome(enum.IntEnum):
    """How a sub-agent's ``submit`` ended; ``BLOCKED`` makes the engine ``ask`` the operator."""

    PASS = wk_pb.SUBMIT_OUTCOME_PASS
    BLOCKED = wk_pb.SUBMIT_OUTCOME_BLOCKED
    SKIP = wk_pb.SUBMIT_OUTCOME_SKIP


@dataclass(frozen=True)
class Welcome:
    """The first frame of every attach."""

    sid: str
    epoch: int
    acked_seq: int
    replayed: int
    roles: List[str]
    ping_interval_secs: int
    server_restarted: bool

    @classmethod
    def of(cls, w: op_pb.Welcome) -> "Welcome":
        return cls(w.sid, w.epoch, w.acked_seq, w.replayed, list(w.roles),
                   w.ping_interval_secs, w.server_restarted)


@dataclass(frozen=True)
class HookBefore:
    """A spawn is about to happen: approve it or reject it with a reason."""

    req_id: str
    task_id: str
    step_id: str
    agent: str
    attempt: int
    deadline_unix_ms: int

    @classmethod
    def of(cls, h: op_pb.HookBefore) -> "HookBefore":
        return cls(h.req_id, h.task_id, h.step_id, h.agent, h.attempt, h.deadline_unix_ms)


@dataclass(frozen=True)
class HookAfter:
    """A spawn finished with ``result``; informational."""

    req_id: str
    task_id: str
    step_id: str
    agent: str
    attempt: int
    result: Any

    @classmethod
    def of(cls, h: op_pb.HookAfter) -> "HookAfter":
        return cls(h.req_id, h.task_id, h.step_id, h.agent, h.attempt, from_value(h.result))


@dataclass(frozen=True)
class Ask:
    """A worker reported blocked; the answer becomes ``{"original", "senior_answer"}``."""

    req_id: str
    task_id: str
    step_id: str
    question: Any
    deadline_unix_ms: int

    @classmethod
    def of(cls, a: op_pb.Ask) -> "Ask":
        return cls(a.req_id, a.task_id, a.step_id, from_value(a.question), a.deadline_unix_ms)


@dataclass(frozen=True)
class Cancel:
    """The request ``req_id`` was withdrawn; its reply is no longer wanted (the SDK drops it)."""

    req_id: str
    reason: str

    @classmethod
    def of(cls, c: op_pb.Cancel) -> "Cancel":
        return cls(c.req_id, c.reason)


@dataclass(frozen=True)
class Prompt:
    """What ``Worker.get_prompt()`` returns."""

    step_id: str
    attempt: int
    agent: str
    system: str
    prompt: str

    @classmethod
    def of(cls, p: wk_pb.GetPromptResponse) -> "Prompt":
        return cls(p.step_id, p.attempt, p.agent, p.system, p.prompt)
