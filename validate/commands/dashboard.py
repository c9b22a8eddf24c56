"""`validate dashboard [RUNS_DIR]`: open the results bundles in RUNS_DIR in the Streamlit dashboard.

Runs ``streamlit run dashboard/app.py -- RUNS_DIR`` bound to 127.0.0.1 (only this machine can
connect unless ``--host`` says otherwise), headless, with usage statistics off.

Stopping: Ctrl-C, ``kill PID`` (SIGTERM) or a closed terminal (SIGHUP) stops the Streamlit server
this command started, then the command itself (exit 0), so no server is left listening. On Linux the
server also receives SIGTERM should this process die without a chance to stop it (``kill -9``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from validate.errors import InputError

NAME = "dashboard"
HELP = "browse results bundles (runs/ by default) in a local Streamlit dashboard"
DESCRIPTION = (
    "Start the review dashboard on the results bundles in RUNS_DIR: every sub-folder holding "
    "provenance.json or metrics.json is a run (RUNS_DIR may itself be one bundle). The server "
    "listens on 127.0.0.1 unless --host says otherwise and reads only files under RUNS_DIR and "
    "the image folders named by each bundle's protocol."
)
RUNS_ENV = "VALIDATE_DASHBOARD_RUNS"  # the app also reads RUNS_DIR from here
#: Signals that stop the dashboard: the server is stopped first.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))
#: Seconds the server has to exit after SIGTERM before it is killed.
STOP_GRACE_S = 10.0


def app_path() -> Path:
    """``dashboard/app.py`` of this checkout (the dashboard ships beside the package)."""
    return Path(__file__).resolve().parents[2] / "dashboard" / "app.py"


def register(parser) -> None:
    parser.add_argument(
        "runs_dir",
        nargs="?",
        default="runs",
        metavar="RUNS_DIR",
        help="folder of results bundles, or one bundle (default: runs)",
    )
    parser.add_argument("--port", type=int, default=8501, help="port to listen on (default: 8501)")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it to the network)",
    )
    parser.add_argument(
        "--print-command", action="store_true", help="print the streamlit command instead of running it"
    )


def streamlit_command(runs_dir: Path, *, port: int, host: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app_path()),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--global.developmentMode",
        "false",
        "--client.toolbarMode",
        "minimal",
        "--",
        str(runs_dir),
    ]


def run(args) -> int:
    runs_dir = Path(args.runs_dir).expanduser()
    if not runs_dir.is_dir():
        raise InputError(
            "runs folder not found",
            file=runs_dir,
            field="RUNS_DIR",
            expected="a folder of results bundles (`validate demo` writes runs/) or one bundle",
        )
    if not 0 < args.port < 65536:
        raise InputError(f"port {args.port} is out of range", field="--port", expected="1 to 65535")
    app = app_path()
    if not app.is_file():
        raise InputError(
            "the dashboard app is not installed beside the package",
            file=app,
            expected="a source checkout holding dashboard/app.py",
        )
    cmd = streamlit_command(runs_dir.resolve(), port=args.port, host=args.host)
    if args.print_command:
        print(" ".join(cmd))
        return 0
    env = dict(os.environ, **{RUNS_ENV: str(runs_dir.resolve())})
    print(f"validate dashboard: serving {runs_dir.resolve()} at http://{args.host}:{args.port}", flush=True)
    return serve(cmd, env)


class _Stop(Exception):
    """A stop signal arrived (raised from its handler, so the wait for the server ends)."""


def _raise_stop(signum: int, frame: Any) -> None:
    raise _Stop(signum)


def serve(cmd: list[str], env: dict[str, str]) -> int:
    """Run the server ``cmd`` until it exits, or until Ctrl-C / SIGTERM / SIGHUP, which stop it
    first (0: a requested stop). The server's own exit code otherwise."""
    previous = {sig: signal.signal(sig, _raise_stop) for sig in STOP_SIGNALS}
    proc = None
    try:
        proc = subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        return proc.wait()
    except (KeyboardInterrupt, _Stop):
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc is not None:
            stop_server(proc)


def stop_server(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM to the server, SIGKILL if it has not exited ``grace_s`` seconds later; reaped either way."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _die_with_parent() -> None:
    # in the child before exec: Linux sends it SIGTERM when this process dies, even by SIGKILL, which
    # leaves no handler to stop it (prctl PR_SET_PDEATHSIG)
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
