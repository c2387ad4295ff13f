"""What the operator has handled: the cumulative ack point, requests by req_id, kept replies.

Not thread-safe: the Operator holds its lock around every call.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set, Tuple

from mlua_swarm.v1 import operator_pb2 as op_pb

# Request kinds a reply goes to (a `cancel` can withdraw any of them).
REPLIED = ("hook_before", "spawn", "ask")


@dataclass
class Request:
    """One request frame (hook_before, spawn, ask, hook_after, cancel), by (kind, req_id)."""

    kind: str
    req_id: str
    seq: int
    done: bool = False
    reply: Optional[op_pb.ClientFrame] = None
    tracked: bool = True  # its seq counts towards the ack point (False once voided by a restart)
    cancelled: threading.Event = field(default_factory=threading.Event)


class Ledger:
    """Frames are handled concurrently and finish in any order; ``ack{N}`` is cumulative, so
    the ack point is the highest finished seq below every seq still being handled. A frame
    seen again (re-sent after a reconnect) is recognised by (kind, req_id): still running →
    nothing to do; finished → its reply is sent again (replies are idempotent)."""

    def __init__(self, keep: int = 10_000) -> None:
        self.acked = 0  # highest seq known handled: sent as ack and as hello.last_seq
        self._running: Set[int] = set()  # seqs being handled
        self._finished: Set[int] = set()  # seqs handled, above the ack point
        self._live: Dict[Tuple[str, str], Request] = {}  # being handled
        self._done: "OrderedDict[Tuple[str, str], Request]" = OrderedDict()  # the last `keep`
        self._keep = keep

    def begin(self, kind: str, req_id: str, seq: int) -> Tuple[Request, bool]:
        """Records a request frame; returns (its record, True if it is new and must be handled)."""
        key = (kind, req_id)
        known = self._live.get(key) or self._done.get(key)
        if known is not None:
            return known, False
        rec = Request(kind, req_id, seq, tracked=seq > self.acked)
        self._live[key] = rec
        if rec.tracked:
            self._running.add(seq)
        return rec, True

    def cancel(self, req_id: str) -> Optional[Request]:
        """Marks the request ``req_id`` withdrawn (its reply will not be sent)."""
        for kind in REPLIED:
            rec = self._live.get((kind, req_id)) or self._done.get((kind, req_id))
            if rec is not None:
                rec.cancelled.set()
                return rec
        return None

    def finish(self, rec: Request, reply: Optional[op_pb.ClientFrame]) -> Tuple[bool, Optional[int]]:
        """The handler of ``rec`` returned ``reply`` (None: nothing to send). Returns (send the
        reply now?, the new ack point if it moved)."""
        void = rec.cancelled.is_set()
        rec.done = True
        rec.reply = None if void else reply
        key = (rec.kind, rec.req_id)
        if self._live.pop(key, None) is not None:
            self._done[key] = rec
            while len(self._done) > self._keep:  # forget the oldest finished ones
                self._done.popitem(last=False)
        if rec.tracked:
            rec.tracked = False
            self._running.discard(rec.seq)
            self._finished.add(rec.seq)
        return rec.reply is not None, self._advance()

    def _advance(self) -> Optional[int]:
        floor = min(self._running) if self._running else None
        below = [s for s in self._finished if floor is None or s < floor]
        if not below:
            return None
        self._finished.difference_update(below)
        top = max(below)
        if top <= self.acked:
            return None
        self.acked = top
        return top

    def void_in_flight(self) -> List[Request]:
        """The server restarted: frames it sent before will not come again and requests still
        being handled are void. Forgets their seqs and marks them cancelled; returns them."""
        void = list(self._live.values())
        for rec in void:
            rec.cancelled.set()
            rec.tracked = False
        self._running.clear()
        self._finished.clear()
        return void

    def in_flight(self) -> int:
        return len(self._live)

    def seen(self) -> Dict[Tuple[str, str], Request]:
        """Every request remembered: those being handled and the last ``keep`` finished."""
        return {**self._done, **self._live}
