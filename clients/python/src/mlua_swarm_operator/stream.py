"""One ``Connect`` stream: hello first, then client frames from a queue; server frames out."""

from __future__ import annotations

import queue
from typing import Iterator, List, Optional, Tuple

from mlua_swarm.v1 import operator_pb2 as op_pb
from mlua_swarm.v1 import operator_pb2_grpc as op_grpc


class Stream:
    """A bidi ``Connect`` call. ``send`` may be called from any thread; ``close`` ends it."""

    def __init__(self, stub: op_grpc.OperatorServiceStub, sid: str, last_seq: int,
                 metadata: List[Tuple[str, str]]) -> None:
        self._outbox: "queue.Queue[Optional[op_pb.ClientFrame]]" = queue.Queue()
        self._outbox.put(op_pb.ClientFrame(hello=op_pb.Hello(sid=sid, last_seq=last_seq)))
        self._closed = False
        self._call = stub.Connect(self._frames(), metadata=metadata)

    def _frames(self) -> Iterator[op_pb.ClientFrame]:
        while True:
            frame = self._outbox.get()
            if frame is None:
                return
            yield frame

    def __iter__(self) -> Iterator[op_pb.ServerFrame]:
        return iter(self._call)

    def send(self, frame: op_pb.ClientFrame) -> None:
        if not self._closed:
            self._outbox.put(frame)

    def close(self) -> None:
        """Cancels the call (the reading thread then sees CANCELLED) and ends the writer."""
        self._closed = True
        self._outbox.put(None)
        self._call.cancel()
