"""The Operator: one session, one ``Connect`` stream at a time, resumed until stopped."""

from __future__ import annotations

import logging
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

import grpc
from mlua_swarm.v1 import operator_pb2 as op_pb
from mlua_swarm.v1 import operator_pb2_grpc as op_grpc
from mlua_swarm.v1 import worker_pb2_grpc as wk_grpc

from .backoff import Backoff
from .errors import OperatorError
from .events import Welcome
from .handlers import Handlers
from .ledger import Ledger, Request
from .stream import Stream

log = logging.getLogger("mlua_swarm_operator")

# Statuses before `welcome` that retrying cannot fix.
FATAL = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
         grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
REQUESTS = {"hook_before", "spawn", "ask", "hook_after", "cancel"}

Tls = Union[None, bool, grpc.ChannelCredentials]


class _SessionGone(Exception):
    """The server does not know our (self-created) session: make a new one."""


class Operator(Handlers):
    """Serves one operator session: hooks, spawns, asks, pings, acks, resume.

    ``Operator(addr, roles=["remote"])`` creates a session holding those roles when it
    starts (and deletes it on ``stop()``); ``session=(sid, token)`` joins an existing one
    (kept on stop). ``api_token`` goes on ``CreateSession`` for servers started with
    ``--api-token``. ``tls``: True (system roots) or ``grpc.ssl_channel_credentials(...)``.

    Register handlers with the decorators (``on_spawn`` ...), then ``run()`` (blocks until
    Ctrl-C / SIGTERM / ``stop()``) or ``start()`` (a background thread) and ``stop()``.
    """

    def __init__(self, addr: str, roles: Sequence[str] = (), *,
                 session: Optional[Tuple[str, str]] = None, api_token: Optional[str] = None,
                 tls: Tls = None, max_concurrency: int = 32, backoff: Optional[Backoff] = None,
                 rpc_timeout: float = 10.0, delete_session_on_stop: Optional[bool] = None,
                 channel_options: Optional[List[Tuple[str, Any]]] = None) -> None:
        super().__init__()
        self.addr = addr
        self.roles = list(roles)
        self.sid, self.token = session if session else ("", "")
        self._created = False
        self._delete_on_stop = delete_session_on_stop
        self.api_token = api_token
        self.rpc_timeout = rpc_timeout
        self.backoff = backoff or Backoff()
        if tls is None or tls is False:
            self._channel = grpc.insecure_channel(addr, options=channel_options)
        else:
            creds = grpc.ssl_channel_credentials() if tls is True else tls
            self._channel = grpc.secure_channel(addr, creds, options=channel_options)
        # The generated service stubs carry no annotations.
        self._operators = op_grpc.OperatorServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._workers = wk_grpc.WorkerServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._max_concurrency = max_concurrency

        self._lock = threading.Lock()  # guards the ledger and the current stream
        self._ledger = Ledger()
        self._stream: Optional[Stream] = None  # attached (welcomed) stream, if any
        self._pending: Optional[Stream] = None  # the stream being opened or read
        self._resent: Set[str] = set()  # req_ids whose reply we sent again
        self._pool: Optional[ThreadPoolExecutor] = None
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._finished = threading.Event()
        self.connected = threading.Event()  # set while a stream is attached
        self.error: Optional[BaseException] = None  # what ended the operator, if not stop()
        self.counts: Dict[str, int] = {}  # server frames received, by kind (re-sent ones too)

    # ---- session ---------------------------------------------------------------------

    @property
    def session(self) -> Tuple[str, str]:
        """(sid, token): keep them to join the same session after a restart of this process."""
        return self.sid, self.token

    def _api(self) -> List[Tuple[str, str]]:
        """The server's API token (``--api-token``), beside any session credential."""
        return [("x-mse-access-token", self.api_token)] if self.api_token else []

    def _create_session(self) -> None:
        try:
            resp = self._operators.CreateSession(op_pb.CreateSessionRequest(roles=self.roles),
                                                 metadata=self._api(), timeout=self.rpc_timeout)
        except grpc.RpcError as e:
            raise OperatorError(f"CreateSession: {e.details()}", e.code()) from None
        self.sid, self.token, self._created = resp.sid, resp.token, True
        log.info("created session %s (roles %s)", self.sid, list(resp.roles))

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> "Operator":
        """Creates the session if needed (a refusal raises OperatorError here), then serves it
        in a background thread."""
        if self._thread is not None:
            raise RuntimeError("operator already started")
        if not self.sid:
            self._create_session()
        self._pool = ThreadPoolExecutor(self._max_concurrency, thread_name_prefix="mse-handler")
        self._thread = threading.Thread(target=self._serve, name="mse-operator", daemon=True)
        self._thread.start()
        return self

    def run(self) -> None:
        """Serves until ``stop()``, Ctrl-C, SIGTERM (when called from the main thread), a
        ``closing`` that says not to come back, or a fatal error (raised as OperatorError).
        Starts the operator unless ``start()`` already did."""
        if self._thread is None:
            self.start()
        restore = None
        if threading.current_thread() is threading.main_thread():
            restore = signal.signal(signal.SIGTERM, lambda *_: self._stop.set())
        try:
            while not self._finished.wait(0.2) and not self._stop.is_set():
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()
            if restore is not None:
                signal.signal(signal.SIGTERM, restore)
        if self.error is not None:
            raise self.error

    def stop(self, timeout: float = 10.0) -> None:
        """Ends the stream and the loop, marks handlers still running as cancelled, deletes
        the session if this operator created it, and closes the channel."""
        self._stop.set()
        self._close_streams()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        with self._lock:
            for rec in self._ledger.void_in_flight():
                log.info("stop: %s %s was still being handled", rec.kind, rec.req_id)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        delete = self._created if self._delete_on_stop is None else self._delete_on_stop
        if delete and self.sid:
            try:
                self._operators.DeleteSession(op_pb.DeleteSessionRequest(sid=self.sid),
                                              metadata=self._auth() + self._api(),
                                              timeout=self.rpc_timeout)
                log.info("deleted session %s", self.sid)
            except grpc.RpcError as e:
                log.warning("DeleteSession %s: %s %s", self.sid, e.code().name, e.details())
            self._created = False
        self._channel.close()

    def wait_connected(self, timeout: Optional[float] = None) -> bool:
        """True once a stream is attached (welcomed)."""
        return self.connected.wait(timeout)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """True once the operator has ended (``stop()``, a ``closing`` that says not to come
        back, or a fatal error in ``error``); False if ``timeout`` passed first."""
        return self._finished.wait(timeout)

    def drop_stream(self) -> None:
        """Cuts the current stream as a network failure would; the operator resumes it.
        (For tests and for forcing a reconnect.)"""
        self._close_streams()

    def __enter__(self) -> "Operator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- the loop --------------------------------------------------------------------

    def _auth(self) -> List[Tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")]

    def _close_streams(self) -> None:
        with self._lock:
            streams = [s for s in (self._pending, self._stream) if s is not None]
        for s in streams:
            s.close()

    def _serve(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    delay = self._attach_once()
                except _SessionGone:
                    log.warning("session %s is gone (server restarted without its data?); "
                                "creating a new one", self.sid)
                    with self._lock:
                        self._ledger.void_in_flight()
                        self._ledger = Ledger()
                    self._create_session()
                    continue
                if delay is None:
                    return
                self._stop.wait(delay)
        except BaseException as e:  # noqa: BLE001 - kept for run() / the caller to see
            if not self._stop.is_set():
                self.error = e
                log.error("operator stopped: %s", e)
        finally:
            self.connected.clear()
            self._finished.set()

    def _attach_once(self) -> Optional[float]:
        """One attach. Returns the delay before the next one, or None: do not come back."""
        with self._lock:
            stream = Stream(self._operators, self.sid, self._ledger.acked, self._auth())
            self._pending = stream
        if self._stop.is_set():
            stream.close()
        welcomed = False
        delay: Optional[float] = None
        try:
            for frame in stream:
                kind = frame.WhichOneof("body") or "empty"
                self.counts[kind] = self.counts.get(kind, 0) + 1
                if kind == "welcome":
                    welcomed = True
                    self._welcomed(stream, Welcome.of(frame.welcome))
                elif kind == "closing":
                    c = frame.closing
                    log.info("closing: %s (retry after %d ms)", c.reason, c.retry_after_ms)
                    if c.retry_after_ms == 0:
                        return None
                    delay = self.backoff.after(c.retry_after_ms / 1000.0)
                elif kind == "ping":
                    stream.send(op_pb.ClientFrame(pong=op_pb.Pong(nonce=frame.ping.nonce)))
                elif kind == "notice":
                    self._notice(frame.notice)
                elif kind in REQUESTS:
                    self._route(stream, frame)
        except grpc.RpcError as e:
            if self._stop.is_set():
                return None
            code = e.code()
            if not welcomed and code == grpc.StatusCode.NOT_FOUND and self._created:
                raise _SessionGone() from None
            if not welcomed and code in FATAL:
                raise OperatorError(e.details() or "Connect refused", code) from None
            # A stream that was serving is worth a warning; failed attempts to come back are not.
            (log.warning if welcomed else log.info)("stream lost: %s %s", code.name, e.details())
        finally:
            with self._lock:
                if self._stream is stream:
                    self._stream = None
                if self._pending is stream:
                    self._pending = None
            self.connected.clear()
            stream.close()
        if self._stop.is_set():
            return None
        if delay is None:
            delay = self.backoff.next()
            log.info("reconnecting in %.2fs (resuming after seq %d)", delay, self._ledger.acked)
        return delay

    def _welcomed(self, stream: Stream, w: Welcome) -> None:
        self.backoff.reset()
        with self._lock:
            if w.server_restarted:
                void = self._ledger.void_in_flight()
                log.warning("server restarted (epoch %d): %d request(s) in flight are void; "
                            "their steps come again as new requests", w.epoch, len(void))
            self._resent.clear()
            self._stream = stream
            if self._ledger.acked > w.acked_seq:  # acks lost with the old stream
                stream.send(op_pb.ClientFrame(ack=op_pb.Ack(seq=self._ledger.acked)))
        log.info("attached %s epoch %d (acked %d, %d replayed%s)", w.sid, w.epoch, w.acked_seq,
                 w.replayed, ", server restarted" if w.server_restarted else "")
        self.connected.set()
        try:
            self._call_welcome(w)
        except Exception:  # noqa: BLE001 - a failing callback never drops the stream
            log.exception("on_welcome handler failed")

    def _notice(self, n: op_pb.Notice) -> None:
        code = op_pb.NoticeCode.Name(n.code)
        if n.code == op_pb.NOTICE_CODE_DUPLICATE and n.req_id in self._resent:
            log.info("notice %s %s (a reply sent again after a reconnect): %s", code, n.req_id,
                     n.message)
            return
        log.warning("notice %s %s: %s", code, n.req_id, n.message)

    def _route(self, stream: Stream, frame: op_pb.ServerFrame) -> None:
        """A request frame: handle it once (on the pool), or re-send its kept reply."""
        kind = frame.WhichOneof("body")
        req_id = getattr(frame, kind).req_id
        with self._lock:
            rec, new = self._ledger.begin(kind, req_id, frame.seq)
            if not new:
                if rec.done and rec.reply is not None:
                    self._resent.add(req_id)
                    stream.send(rec.reply)
                log.debug("%s %s seen again (seq %d); handled once", kind, req_id, frame.seq)
                return
            if kind == "cancel":
                self._ledger.cancel(frame.cancel.req_id)
        pool = self._pool
        try:
            if pool is None:
                raise RuntimeError("no handler pool")
            pool.submit(self._handle, rec, frame)
        except RuntimeError:  # stopping: the pool is shut down
            log.debug("%s %s not handled: stopping", kind, req_id)

    def _handle(self, rec: Request, frame: op_pb.ServerFrame) -> None:
        reply: Optional[op_pb.ClientFrame] = None
        try:
            if rec.cancelled.is_set():  # withdrawn (or void) while it waited for a thread
                log.info("%s %s was withdrawn before its handler ran", rec.kind, rec.req_id)
            else:
                reply = self._reply_to(frame, self._workers, self.rpc_timeout, rec.cancelled)
        except Exception:  # noqa: BLE001 - a failing handler never kills the operator
            log.exception("%s %s: handler failed", rec.kind, rec.req_id)
        with self._lock:
            send, ack = self._ledger.finish(rec, reply)
            if reply is not None and not send:
                log.info("%s %s was withdrawn; its reply is not sent", rec.kind, rec.req_id)
            stream = self._stream
            if stream is None:
                return  # the next attach re-sends what the server still waits for
            if send and reply is not None:
                stream.send(reply)
            if ack is not None:
                stream.send(op_pb.ClientFrame(ack=op_pb.Ack(seq=ack)))
