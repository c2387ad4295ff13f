#!/usr/bin/env python3
"""An example Operator for mlua-swarm-grpc.

It holds one operator session and answers what the engine asks while tasks run:

* ``hook_before`` -> approves the spawn (``hook_ack{ok: true}``);
* ``spawn``       -> plays the sub-agent itself: ``WorkerService.GetPrompt`` and
                     ``WorkerService.Submit`` with the spawn's worker handle, then
                     ``spawn_ack``;
* ``ask``         -> answers with a configurable JSON value;
* ``ping``        -> ``pong``;
* every frame with ``seq > 0`` is acknowledged (``ack{seq}``) after it was handled.

When the stream breaks it reconnects with ``hello{sid, last_seq}`` (exponential backoff),
so the server re-sends exactly the frames that were not acknowledged yet.

Run it (stubs generated first, see README.md)::

    python operator.py --addr 127.0.0.1:7777 --roles remote

Note: this file shares its name with the standard library's ``operator`` module. Running
it as a script is fine; to use it as a library, load it under another name (the tests do
``importlib.util.spec_from_file_location("mse_operator", ".../operator.py")``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import signal
import sys
import threading
from typing import Callable, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
GEN = os.path.join(HERE, "gen")
if GEN not in sys.path:
    sys.path.insert(0, GEN)

import grpc  # noqa: E402
from google.protobuf import json_format, struct_pb2  # noqa: E402

try:
    from mlua_swarm.v1 import operator_pb2 as op_pb  # noqa: E402
    from mlua_swarm.v1 import operator_pb2_grpc as op_grpc  # noqa: E402
    from mlua_swarm.v1 import worker_pb2 as wk_pb  # noqa: E402
    from mlua_swarm.v1 import worker_pb2_grpc as wk_grpc  # noqa: E402
except ImportError as e:  # pragma: no cover - a friendlier message than a traceback
    sys.exit(
        f"cannot import the generated stubs ({e}); generate them first:\n"
        f"  cd {HERE} && mkdir -p gen && python3 -m grpc_tools.protoc -I ../../proto "
        "--python_out=gen --grpc_python_out=gen --pyi_out=gen ../../proto/mlua_swarm/v1/*.proto "
        "&& touch gen/mlua_swarm/__init__.py gen/mlua_swarm/v1/__init__.py"
    )

log = logging.getLogger("mse.operator")

# Statuses before `welcome` that retrying cannot fix.
FATAL_CODES = {
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED,
}

# What a sub-agent produces from its prompt: (body, outcome).
Work = Callable[[wk_pb.GetPromptResponse], Tuple[str, int]]


class OperatorError(Exception):
    """The session cannot be served (wrong token, unknown sid, ...)."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code


class StreamLost(Exception):
    """Raised from a frame handler to drop the current stream (it is then resumed)."""


def to_value(obj) -> struct_pb2.Value:
    """A JSON-able Python object as a google.protobuf.Value."""
    return json_format.ParseDict(obj, struct_pb2.Value())


def from_value(value: struct_pb2.Value):
    """A google.protobuf.Value as a plain Python object."""
    return json_format.MessageToDict(value)


def uppercase_echo(prompt: wk_pb.GetPromptResponse) -> Tuple[str, int]:
    """The default sub-agent: echoes the prompt in upper case and passes."""
    return prompt.prompt.upper(), wk_pb.SUBMIT_OUTCOME_PASS


class Operator:
    """One operator session served over one `Connect` stream at a time.

    ``run()`` blocks until ``stop()`` (or a fatal error); ``start()`` runs it in a thread.
    """

    def __init__(
        self,
        addr: str,
        roles: Sequence[str] = (),
        sid: Optional[str] = None,
        token: Optional[str] = None,
        work: Work = uppercase_echo,
        answer=None,
        api_token: Optional[str] = None,
        delete_on_stop: Optional[bool] = None,
        max_backoff: float = 5.0,
        rpc_timeout: float = 10.0,
    ):
        self.addr = addr
        self.roles = list(roles)
        self.sid, self.token = sid, token
        self.work = work
        self.answer = {"advice": "proceed"} if answer is None else answer
        self.api_token = api_token
        # Delete the session on stop only if we created it (unless told otherwise).
        self.delete_on_stop = (sid is None) if delete_on_stop is None else delete_on_stop
        self.max_backoff = max_backoff
        self.rpc_timeout = rpc_timeout

        self.channel = grpc.insecure_channel(addr)
        self.operators = op_grpc.OperatorServiceStub(self.channel)
        self.workers = wk_grpc.WorkerServiceStub(self.channel)

        self.acked = 0  # highest seq acknowledged; sent as hello.last_seq on reconnect
        self.error: Optional[BaseException] = None
        self.welcomes: list = []  # every Welcome received (one per attach)
        self.counts = {k: 0 for k in ("hook_before", "spawn", "hook_after", "ask",
                                      "cancel", "ping", "notice", "closing")}
        self.connected = threading.Event()  # set while a stream is attached
        self._stop = threading.Event()
        self._outbox: Optional[queue.Queue] = None
        self._call = None
        self._thread: Optional[threading.Thread] = None

    # ---- session -------------------------------------------------------------------

    def ensure_session(self) -> None:
        """Creates a session unless --sid/--token were given."""
        if self.sid and self.token:
            return
        md = [("authorization", f"Bearer {self.api_token}")] if self.api_token else None
        resp = self.operators.CreateSession(
            op_pb.CreateSessionRequest(roles=self.roles), metadata=md, timeout=self.rpc_timeout
        )
        self.sid, self.token = resp.sid, resp.token
        log.info("created session %s (roles %s)", self.sid, list(resp.roles))

    def _auth(self):
        return [("authorization", f"Bearer {self.token}")]

    # ---- lifecycle -----------------------------------------------------------------

    def start(self) -> "Operator":
        """Creates the session, then serves it in a background thread."""
        self.ensure_session()
        self._thread = threading.Thread(target=self.run, name="operator", daemon=True)
        self._thread.start()
        return self

    def run(self) -> None:
        """Serves the session until stop(), reconnecting with backoff when the stream breaks."""
        try:
            self.ensure_session()
            backoff = 0.2
            while not self._stop.is_set():
                try:
                    retry_after = self._attach_once()
                    backoff = 0.2
                    if retry_after is None:  # closing{retry_after_ms: 0}: do not come back
                        return
                    delay = retry_after
                except grpc.RpcError as e:
                    if self._stop.is_set():
                        return
                    delay = backoff
                    backoff = min(backoff * 2, self.max_backoff)
                    log.warning("stream error %s: %s; reconnecting in %.1fs",
                                e.code().name, e.details(), delay)
                except StreamLost as e:
                    delay = 0.0
                    log.warning("stream dropped (%s); resuming from seq %d", e, self.acked)
                self._stop.wait(delay)
        except BaseException as e:  # noqa: BLE001 - kept for whoever joins the thread
            self.error = e
            log.error("operator stopped: %s", e)
        finally:
            self.connected.clear()

    def stop(self, timeout: float = 10.0) -> None:
        """Ends the stream, waits for the loop and deletes the session if we created it."""
        self._stop.set()
        self._drop()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.delete_on_stop and self.sid:
            try:
                self.operators.DeleteSession(
                    op_pb.DeleteSessionRequest(sid=self.sid),
                    metadata=self._auth(), timeout=self.rpc_timeout,
                )
                log.info("deleted session %s", self.sid)
            except grpc.RpcError as e:
                log.warning("DeleteSession: %s %s", e.code().name, e.details())
        self.channel.close()

    def wait_connected(self, timeout: float = 10.0) -> bool:
        return self.connected.wait(timeout)

    def drop_stream(self) -> None:
        """Cancels the current stream (as a network failure would); run() resumes it."""
        self._drop()

    def _drop(self) -> None:
        call, outbox = self._call, self._outbox
        if call is not None:
            call.cancel()
        if outbox is not None:
            outbox.put(None)

    # ---- the stream ----------------------------------------------------------------

    def send(self, **body) -> None:
        """Queues one client frame, e.g. send(ack=op_pb.Ack(seq=3))."""
        if self._outbox is not None:
            self._outbox.put(op_pb.ClientFrame(**body))

    def _attach_once(self) -> Optional[float]:
        """One attach: hello, welcome, frames until the stream ends.

        Returns the delay before reconnecting, or None for "do not reconnect".
        """
        outbox: queue.Queue = queue.Queue()
        outbox.put(op_pb.ClientFrame(hello=op_pb.Hello(sid=self.sid, last_seq=self.acked)))

        def requests():
            while True:
                frame = outbox.get()
                if frame is None:
                    return
                yield frame

        self._outbox = outbox
        call = self.operators.Connect(requests(), metadata=self._auth())
        self._call = call
        if self._stop.is_set():
            call.cancel()
        welcomed = False
        retry_after: Optional[float] = 0.5  # the server ended the stream: come back soon
        try:
            for frame in call:
                kind = frame.WhichOneof("body")
                if kind == "welcome":
                    welcomed = True
                    self.welcomes.append(frame.welcome)
                    self.connected.set()
                    log.info("attached %s epoch %d (acked %d, %d replayed)", frame.welcome.sid,
                             frame.welcome.epoch, frame.welcome.acked_seq, frame.welcome.replayed)
                    continue
                if kind == "closing":
                    self.counts["closing"] += 1
                    c = frame.closing
                    log.info("closing: %s (retry after %d ms)", c.reason, c.retry_after_ms)
                    retry_after = c.retry_after_ms / 1000.0 if c.retry_after_ms else None
                    continue
                self.handle(frame)
                if frame.seq > 0:
                    self.send(ack=op_pb.Ack(seq=frame.seq))
                    self.acked = max(self.acked, frame.seq)
        except grpc.RpcError as e:
            if not welcomed and e.code() in FATAL_CODES:
                raise OperatorError(e.code(), e.details()) from None
            raise
        finally:
            self.connected.clear()
            outbox.put(None)
            call.cancel()
        return retry_after

    def handle(self, frame: op_pb.ServerFrame) -> None:
        """Handles one frame (all but welcome and closing). Raise StreamLost to drop the stream."""
        kind = frame.WhichOneof("body")
        if kind in self.counts:
            self.counts[kind] += 1
        if kind == "hook_before":
            hb = frame.hook_before
            log.info("hook_before %s: approving %s (step %s)", hb.req_id, hb.agent, hb.step_id)
            self.send(hook_ack=op_pb.HookAck(req_id=hb.req_id, ok=True))
        elif kind == "spawn":
            self.serve_spawn(frame.spawn)
        elif kind == "ask":
            a = frame.ask
            log.info("ask %s: %s -> answering %s", a.req_id, from_value(a.question), self.answer)
            self.send(answer=op_pb.Answer(req_id=a.req_id, value=to_value(self.answer)))
        elif kind == "hook_after":
            ha = frame.hook_after
            log.info("hook_after %s: %s", ha.step_id, from_value(ha.result))
        elif kind == "ping":
            self.send(pong=op_pb.Pong(nonce=frame.ping.nonce))
        elif kind == "cancel":
            log.info("cancel %s: %s", frame.cancel.req_id, frame.cancel.reason)
        elif kind == "notice":
            n = frame.notice
            log.warning("notice %s %s: %s", op_pb.NoticeCode.Name(n.code), n.req_id, n.message)

    def serve_spawn(self, spawn: op_pb.Spawn) -> None:
        """Plays the sub-agent: GetPrompt, Submit (both with the worker handle), spawn_ack."""
        cred = [("authorization", f"Bearer {spawn.worker_handle}")]
        try:
            prompt = self.workers.GetPrompt(
                wk_pb.GetPromptRequest(step_id=spawn.step_id), metadata=cred,
                timeout=self.rpc_timeout,
            )
            body, outcome = self.work(prompt)
            self.workers.Submit(
                wk_pb.SubmitRequest(body=body, outcome=outcome, step_id=spawn.step_id),
                metadata=cred, timeout=self.rpc_timeout,
            )
            log.info("spawn %s: %r -> %r (%s)", spawn.req_id, prompt.prompt, body,
                     wk_pb.SubmitOutcome.Name(outcome))
            self.send(spawn_ack=op_pb.SpawnAck(req_id=spawn.req_id))
        except grpc.RpcError as e:
            log.warning("spawn %s: worker call failed: %s %s", spawn.req_id, e.code().name,
                        e.details())
            self.send(spawn_ack=op_pb.SpawnAck(
                req_id=spawn.req_id, error=f"worker failed: {e.code().name}: {e.details()}"))


def make_work(reply: Optional[str], block_on: Optional[str]) -> Work:
    """The CLI's sub-agent: `--reply` text ({prompt} is replaced) or an uppercase echo;
    prompts containing `--block-on` are submitted as BLOCKED (the engine then asks)."""

    def work(prompt: wk_pb.GetPromptResponse) -> Tuple[str, int]:
        if block_on and block_on in prompt.prompt:
            return f"blocked: {prompt.prompt}", wk_pb.SUBMIT_OUTCOME_BLOCKED
        if reply is not None:
            return reply.replace("{prompt}", prompt.prompt), wk_pb.SUBMIT_OUTCOME_PASS
        return uppercase_echo(prompt)

    return work


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Example mlua-swarm operator (Connect stream).")
    p.add_argument("--addr", default="127.0.0.1:7777", help="server address (host:port)")
    p.add_argument("--roles", default="", help="comma-separated seats to hold, e.g. remote")
    p.add_argument("--sid", help="join this existing session instead of creating one")
    p.add_argument("--token", help="the session token (with --sid)")
    p.add_argument("--reply", help="what sub-agents submit ({prompt} is replaced); "
                                   "default: the prompt in upper case")
    p.add_argument("--block-on", help="submit BLOCKED when the prompt contains this text")
    p.add_argument("--answer", default='{"advice": "proceed"}', help="JSON answer to asks")
    p.add_argument("--api-token", default=os.environ.get("MSE_API_TOKEN"),
                   help="server API token for CreateSession (env MSE_API_TOKEN)")
    p.add_argument("--keep-session", action="store_true",
                   help="do not delete a session we created when stopping")
    args = p.parse_args(argv)
    if bool(args.sid) != bool(args.token):
        p.error("--sid and --token go together")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    op = Operator(
        args.addr,
        roles=[r for r in args.roles.split(",") if r],
        sid=args.sid,
        token=args.token,
        work=make_work(args.reply, args.block_on),
        answer=json.loads(args.answer),
        api_token=args.api_token,
        delete_on_stop=False if args.keep_session else None,
    )
    try:
        op.ensure_session()
    except grpc.RpcError as e:
        print(f"CreateSession failed: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    print(f"session {op.sid} token {op.token}", flush=True)

    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    op.start()
    while not done.is_set() and op._thread.is_alive():
        done.wait(0.5)
    op.stop()
    if op.error is not None:
        print(f"operator failed: {op.error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
