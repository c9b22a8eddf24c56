"""`validate dashboard` stops the Streamlit server it started when it is told to stop (SIGTERM, as
`kill PID` sends; SIGHUP, a closed terminal): no orphaned server keeps the port.

The real server is started on a free port (its own session, so the test can clean up whatever
happens), its health endpoint polled, then only the `validate` process is signalled.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
            return r.status == 200 and r.read().strip() == b"ok"
    except OSError:
        return False


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _children(pid: int) -> list[int]:
    """The process ids whose parent is ``pid`` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.25)
    return condition()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process parents from /proc (Linux)")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_dashboard_exits_on_signal_and_its_server_with_it(tmp_path, sig):
    port = _free_port()
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "validate", "dashboard", str(tmp_path), "--port", str(port)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server: list[int] = []
    try:
        assert _wait(lambda: _healthy(port) or proc.poll() is not None, 120), "the dashboard never became healthy"
        assert proc.poll() is None, (tmp_path / "server.log").read_text()
        server = _children(proc.pid)
        assert len(server) == 1 and _alive(server[0])  # the Streamlit server, child of `validate dashboard`
        os.kill(proc.pid, sig)  # the validate process only, as `kill PID` does
        assert proc.wait(timeout=30) == 0
        assert not _alive(server[0]), "the Streamlit server outlived `validate dashboard`"
        assert _wait(lambda: not _port_open(port), 10), f"port {port} still accepts connections"
    finally:
        log.close()
        for pid in [proc.pid, *server]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=10)


def test_a_server_that_ignores_sigterm_is_killed_after_the_grace_period():
    from validate.commands.dashboard import stop_server

    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"1"  # its handler is in place
    stop_server(proc, grace_s=0.5)
    assert proc.returncode == -signal.SIGKILL
