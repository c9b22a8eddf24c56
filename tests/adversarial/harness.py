"""Helpers for the hostile-input tests (a module, not a conftest: tests/conftest.py owns that name):
run the real command line, and prove nothing else changed on disk.

Every test in this folder runs ``python -m validate ...`` in a subprocess (the console users and CI
see), then asserts three things: the exit code of the contract (0 pass, 1 gate failed, 2 bad input,
3 could not complete), a message that names what went wrong, and that no file outside the places the
command may write was created, changed or removed.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


#: A line of the progress log in lines mode (validate/progress.py): a finished phase with its time, or a
#: heartbeat of a running one.
PROGRESS_LINE = re.compile(r"^(?!validate )[a-z][\w -]*: .*\b(in [\d.]+ (s|min)\b|so far$)")


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err

    def assert_no_traceback(self) -> None:
        assert "Traceback (most recent call last)" not in self.text, self.text

    @property
    def error_lines(self) -> list[str]:
        """stderr without the progress log that comes before it (one line per finished phase, e.g.
        ``metrics: 15 blocks in 0.1 s``, see validate/progress.py): what the command said went wrong."""
        return [line for line in self.err.splitlines() if not PROGRESS_LINE.match(line)]


def run_cli(
    *args: str | os.PathLike, cwd: str | os.PathLike | None = None, env: dict | None = None, timeout: float = 600
) -> Result:
    """``python -m validate ARGS`` in a fresh interpreter; never a traceback on the terminal."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    full_env.pop("VALIDATE_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "validate", *map(str, args)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    result.assert_no_traceback()
    return result


def tree_state(root: str | os.PathLike) -> dict[str, str]:
    """Relative path -> content hash (folders as ``<dir>``, links as their target) of everything under root."""
    root = Path(root)
    state: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                state[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                state[rel] = "<dir>"
            else:
                state[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return state


class Unchanged:
    """``with Unchanged(folder, allow=[...]):`` fails if anything under folder changed, except allowed names.

    ``allow`` holds path prefixes (relative to folder) the command may create or change, e.g. its
    cache folder or a crash log pattern; everything else must be byte-identical afterwards.
    """

    def __init__(self, root: str | os.PathLike, allow: tuple[str, ...] | list[str] = ()):
        self.root = Path(root)
        self.allow = tuple(allow)

    def _keep(self, rel: str) -> bool:
        return not any(
            rel == a or rel.startswith(a.rstrip("/") + "/") or (a.endswith("*") and rel.startswith(a[:-1]))
            for a in self.allow
        )

    def __enter__(self):
        self.before = {k: v for k, v in tree_state(self.root).items() if self._keep(k)}
        return self

    def __exit__(self, *exc):
        if exc[0] is not None:
            return False
        after = {k: v for k, v in tree_state(self.root).items() if self._keep(k)}
        added = sorted(set(after) - set(self.before))
        removed = sorted(set(self.before) - set(after))
        changed = sorted(k for k in set(after) & set(self.before) if after[k] != self.before[k])
        assert not (added or removed or changed), f"disk changed: added {added}, removed {removed}, changed {changed}"
        return False
