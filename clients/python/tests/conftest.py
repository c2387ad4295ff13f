"""Fixtures: a real mse-grpc server on a free loopback port, stubs, and SDK operators."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request

import pytest

CLIENT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(os.path.dirname(CLIENT_DIR))
SRC = os.path.join(CLIENT_DIR, "src")
FIXTURES = os.path.join(REPO, "tests", "fixtures")
PING_INTERVAL_SECS = 1  # short, so the tests see pings being answered

sys.path.insert(0, SRC)  # the package and its committed stubs, as they are in the checkout

import grpc  # noqa: E402
from google.protobuf import json_format, struct_pb2  # noqa: E402
from mlua_swarm.v1 import blueprint_pb2_grpc, operator_pb2_grpc, task_pb2_grpc  # noqa: E402
from mlua_swarm.v1 import worker_pb2_grpc  # noqa: E402
from recording import recording_operator  # noqa: E402


def struct(d: dict) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(d)
    return s


def plain(value) -> object:
    """A protobuf Struct / Value as plain Python."""
    return json_format.MessageToDict(value)


def wait_until(cond, within: float, what: str):
    """Polls cond() every 50 ms until it is truthy; fails after `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)  # poll interval
    raise AssertionError(f"timed out after {within}s waiting for {what}")


def fixture_json(name: str) -> dict:
    with open(os.path.join(FIXTURES, name)) as f:
        return json.load(f)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(port: int, tls: ssl.SSLContext | None = None) -> bool:
    scheme = "https" if tls else "http"
    try:
        with urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}/healthz", timeout=1,
                                    context=tls) as r:
            return r.status == 200 and r.read().decode().strip() == "ok"
    except OSError:
        return False


class Server:
    """The server binary on a free port; `extra_args` go to `serve`, and `tls` (a client
    context trusting its CA) makes the readiness check use https."""

    def __init__(self, binary: str, log_path: str, extra_args=(), tls: ssl.SSLContext | None = None,
                 data_dir: str | None = None):
        self.binary, self.log_path = binary, log_path
        self.extra_args, self.tls = list(extra_args), tls
        # In memory unless a data dir is given (then it survives kill_9() + start()).
        self.storage = ["--data-dir", data_dir] if data_dir else ["--ephemeral"]
        self.proc = None
        self.addr = None
        self.port: int | None = None

    def start(self, attempts: int = 3, ready_within: float = 30.0) -> None:
        """Starts on a free port, or again on the port it had (after kill_9)."""
        for _ in range(1 if self.port else attempts):
            port = self.port or free_port()
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                [self.binary, "serve", *self.storage, "--bind", f"127.0.0.1:{port}",
                 "--ping-interval-secs", str(PING_INTERVAL_SECS), *self.extra_args],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
            log.close()
            deadline = time.monotonic() + ready_within
            while time.monotonic() < deadline and self.proc.poll() is None:
                if healthy(port, self.tls):
                    self.addr, self.port = f"127.0.0.1:{port}", port
                    return
                time.sleep(0.05)  # poll interval, not a readiness wait
            self.stop()  # exited (port taken?) or never healthy: try another port
        raise RuntimeError(f"server did not become healthy; log: {self.log_path}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def kill_9(self) -> None:
        """SIGKILL, and wait until the process is gone (its port stays ours for start())."""
        self.proc.kill()
        self.proc.wait(10)

    def log_tail(self, n: int = 40) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""


def server_binary() -> str:
    binary = os.environ.get("MSE_GRPC_BIN") or os.path.join(REPO, "target", "debug", "mse-grpc")
    if not os.access(binary, os.X_OK):
        pytest.fail(f"server binary not found or not executable: {binary} (set MSE_GRPC_BIN)")
    return binary


@pytest.fixture(scope="session")
def server(request, tmp_path_factory):
    srv = Server(server_binary(), str(tmp_path_factory.mktemp("server") / "server.log"))
    srv.start()
    yield srv
    srv.stop()
    if request.session.testsfailed:
        sys.stderr.write(f"\n--- server log tail ({srv.log_path}) ---\n{srv.log_tail()}\n")


@pytest.fixture
def start_server(tmp_path):
    """start_server(extra_args, tls=None, data_dir=None) -> a Server of the test's own, stopped
    after it."""
    started = []

    def start(extra_args, tls: ssl.SSLContext | None = None, data_dir: str | None = None) -> Server:
        srv = Server(server_binary(), str(tmp_path / f"server-{len(started)}.log"), extra_args, tls,
                     data_dir)
        started.append(srv)
        srv.start()
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture(scope="session")
def channel(server):
    ch = grpc.insecure_channel(server.addr)
    grpc.channel_ready_future(ch).result(timeout=10)
    yield ch
    ch.close()


@pytest.fixture(scope="session")
def stubs(channel):
    class Stubs:
        blueprints = blueprint_pb2_grpc.BlueprintServiceStub(channel)
        tasks = task_pb2_grpc.TaskServiceStub(channel)
        operators = operator_pb2_grpc.OperatorServiceStub(channel)
        workers = worker_pb2_grpc.WorkerServiceStub(channel)

    return Stubs


@pytest.fixture
def start_operator(server):
    """start_operator(addr=None, **kwargs) -> a started, attached recording SDK Operator
    (tests/recording.py) holding the seat "remote"; stopped (session deleted) after the test."""
    started = []

    def start(addr: str | None = None, **kwargs):
        kwargs.setdefault("roles", ["remote"])
        op = recording_operator(addr or server.addr, **kwargs)
        started.append(op)
        op.start()
        assert op.wait_connected(10), f"operator never attached: {op.error}"
        return op

    yield start
    for op in started:
        op.stop()
