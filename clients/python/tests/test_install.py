"""`pip install ./clients/python` into a fresh venv, then the README's code, as written there
(only the address is the test server's): the ten-line operator serves the README's task."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import CLIENT_DIR
from mlua_swarm.v1 import operator_pb2 as op_pb

README = os.path.join(CLIENT_DIR, "README.md")
INSTALL_TIMEOUT = 300  # seconds; wheels come from the registry (or pip's cache)


def readme_python_blocks() -> list[str]:
    with open(README) as f:
        return re.findall(r"```python\n(.*?)```", f.read(), re.S)


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=120)
    python = str(root / "bin" / "python")
    out = subprocess.run(
        [python, "-m", "pip", "install", "--disable-pip-version-check", "-q", CLIENT_DIR],
        capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    assert out.returncode == 0, out.stdout + out.stderr
    return python


def test_the_readme_operator_serves_a_task_from_a_fresh_venv(venv_python, server, stubs, tmp_path):
    operator_code, task_code = readme_python_blocks()[:2]
    assert len(operator_code.strip().splitlines()) <= 12, "the README starts with a short operator"
    (tmp_path / "my_operator.py").write_text(operator_code.replace("127.0.0.1:7777", server.addr))
    (tmp_path / "my_task.py").write_text(task_code.replace("127.0.0.1:7777", server.addr))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # The venv's own copy, not the checkout's src/.
    where = subprocess.run([venv_python, "-c", "import mlua_swarm_operator, mlua_swarm.v1.task_pb2;"
                            "print(mlua_swarm_operator.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=30)
    assert where.returncode == 0 and "site-packages" in where.stdout, where.stdout + where.stderr

    log = tmp_path / "operator.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([venv_python, "my_operator.py"], cwd=tmp_path, env=env,
                                stdout=err, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        def holding_remote() -> list:
            listed = stubs.operators.ListSessions(op_pb.ListSessionsRequest(), timeout=10).sessions
            return [s.sid for s in listed if "remote" in s.roles and s.connected]

        deadline = time.monotonic() + 20
        while not holding_remote():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the README operator never attached\n" + log.read_text()
            time.sleep(0.05)  # poll interval
        sid = holding_remote()[0]
        task = subprocess.run([venv_python, "my_task.py"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)
        assert task.returncode == 0, task.stderr
        assert "TASK_STATE_COMPLETED" in task.stdout and "'WRITE A HAIKU'" in task.stdout, \
            task.stdout + task.stderr + log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, log.read_text()
    listed = stubs.operators.ListSessions(op_pb.ListSessionsRequest(), timeout=10).sessions
    assert sid not in [s.sid for s in listed], "SIGTERM deletes the session it created"
