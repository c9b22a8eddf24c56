"""`validate dashboard [RUNS_DIR]`: open the results bundles in RUNS_DIR in the Streamlit dashboard.

Runs ``streamlit run dashboard/app.py -- RUNS_DIR`` bound to 127.0.0.1 (only this machine can
connect unless ``--host`` says otherwise), headless, with usage statistics off.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 0
