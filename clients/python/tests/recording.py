"""An SDK Operator whose handlers record what they saw (for the tests)."""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any, Callable, Dict, List, Tuple

from mlua_swarm_operator import (Ask, Backoff, Cancel, HookAfter, HookBefore, Operator, Outcome,
                                 Welcome, Worker)

FAST = dict(initial=0.05, maximum=0.5)  # reconnect quickly: servers restart within a test


def upper(prompt: str) -> Tuple[str, Outcome]:
    """The default sub-agent: the prompt in upper case."""
    return prompt.upper(), Outcome.PASS


def recording_operator(addr: str, *, work: Callable[[str], Tuple[str, Outcome]] = upper,
                       answer: Any = None, hook: Callable[[HookBefore], Any] = lambda h: True,
                       **kwargs: Any) -> Operator:
    """An Operator (not started) approving hooks with ``hook``, serving spawns with ``work``
    (prompt -> (body, outcome)), answering asks with ``answer``. It records every call in
    ``op.seen[kind]`` (HookBefore, Worker, Ask, HookAfter, Cancel) and every Welcome in
    ``op.welcomes``; ``op.spawn_gate`` (a callable(worker), default no-op) runs inside the
    spawn handler before the work, for tests that act mid-spawn."""
    kwargs.setdefault("backoff", Backoff(**FAST))
    op = Operator(addr, **kwargs)
    lock = threading.Lock()
    seen: Dict[str, List[Any]] = defaultdict(list)
    welcomes: List[Welcome] = []
    op.seen, op.welcomes = seen, welcomes  # type: ignore[attr-defined]
    op.spawn_gate = lambda worker: None  # type: ignore[attr-defined]
    answer = {"advice": "proceed"} if answer is None else answer

    def record(kind: str, item: Any) -> None:
        with lock:
            seen[kind].append(item)

    @op.on_welcome
    def _welcome(w: Welcome) -> None:
        welcomes.append(w)

    @op.on_hook_before
    def _hook(h: HookBefore) -> Any:
        record("hook_before", h)
        return hook(h)

    @op.on_spawn
    def _spawn(worker: Worker) -> None:
        record("spawn", worker)
        op.spawn_gate(worker)  # type: ignore[attr-defined]
        body, outcome = work(worker.get_prompt().prompt)
        worker.submit(body, outcome)

    @op.on_ask
    def _ask(a: Ask) -> Any:
        record("ask", a)
        return answer

    @op.on_hook_after
    def _after(h: HookAfter) -> None:
        record("hook_after", h)

    @op.on_cancel
    def _cancel(c: Cancel) -> None:
        record("cancel", c)

    return op
