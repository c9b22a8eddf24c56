"""The ``validate`` command.

Subcommands live in :mod:`validate.commands`, one module each, discovered at start-up so that each
capability owns its own argument parsing. Exit codes (DESIGN.md): 0 all gates pass, 1 a gate failed,
2 bad input, 3 the run could not complete. Bad input is reported as one clear line per problem; a run
that could not complete prints one line and writes its traceback to a log file (``VALIDATE_DEBUG=1``
prints it on the terminal too). Nothing but a judged verdict ever exits 0 or 1.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import pkgutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from validate import __version__
from validate.errors import EXIT_BAD_INPUT, EXIT_INCOMPLETE, InputError, RunIncomplete


def _command_modules():
    import validate.commands as pkg

    mods = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        mods.append(importlib.import_module(f"validate.commands.{info.name}"))
    return mods


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="validate",
        description="External validation and calibration of medical AI models across sites.",
    )
    parser.add_argument("--version", action="version", version=f"validate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _command_modules():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP))
        mod.register(p)
        p.set_defaults(_run=mod.run)
    return parser


# Errors of the machine rather than of the user's files: said in one line, exit 3.
_ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EDQUOT: "disk quota exceeded",
    errno.ENOMEM: "out of memory",
}


def _log_candidates(args) -> list[Path]:
    """Where a crash log may go: beside the output (never inside a bundle folder, which must stay a
    bundle), the cache folder, the runs folder, then the system's temporary folder."""
    out: list[Path] = []
    for name in ("cache", "runs_dir"):
        value = getattr(args, name, None)
        if value:
            out.append(Path(value))
    target = getattr(args, "out", None)
    if target:
        out.append(Path(target).resolve().parent)
    out.append(Path(tempfile.gettempdir()))
    return out


def write_crash_log(args, text: str) -> Path | None:
    """Write ``text`` to ``validate-error-<time>-<pid>.log`` in the first folder that takes it."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    for folder in _log_candidates(args):
        try:
            # a bundle holds only its own files (a later run may replace it only then): no log goes there
            if not folder.is_dir() or any((folder / m).is_file() for m in ("provenance.json", "metrics.json")):
                continue
            path = folder / f"validate-error-{stamp}-{os.getpid()}.log"
            with open(path, "x", encoding="utf-8") as fh:
                fh.write(text)
            return path
        except OSError:
            continue
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, RunIncomplete):
        return str(exc)
    if isinstance(exc, SystemExit):
        return (
            f"code inside the run tried to end the process (SystemExit({exc.code!r})); "
            "a factory or model module must not call sys.exit"
        )
    if isinstance(exc, OSError) and exc.errno in _ENVIRONMENT_ERRNOS:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{_ENVIRONMENT_ERRNOS[exc.errno]}{where}"
    if isinstance(exc, MemoryError):
        return "out of memory"
    if isinstance(exc, RecursionError):
        return "input nested too deeply to process (maximum recursion depth exceeded)"
    text = str(exc).strip().splitlines()
    return f"internal error: {type(exc).__name__}" + (f": {text[0][:300]}" if text else "")


def _incomplete(args, exc: BaseException) -> int:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    log = write_crash_log(args, f"validate {' '.join(sys.argv[1:])}\n{text}")
    where = f" (details: {log})" if log else ""
    print(f"validate {args.command}: could not complete: {_describe(exc)}{where}", file=sys.stderr)
    if os.environ.get("VALIDATE_DEBUG"):
        print(text, file=sys.stderr)
    return EXIT_INCOMPLETE


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    try:
        code = int(args._run(args) or 0)
    except InputError as exc:
        for line in str(exc).splitlines():
            print(f"validate {args.command}: error: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("validate: interrupted", file=sys.stderr)
        return 130
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the contract: exit 3, never a traceback
        return _incomplete(args, exc)
    if code not in (0, 1, 2, 3):
        return _incomplete(args, RunIncomplete(f"unexpected exit code {code}"))
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
