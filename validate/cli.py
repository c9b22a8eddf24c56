"""The ``validate`` command.

Subcommands live in :mod:`validate.commands`, one module each, discovered at start-up so that each
capability owns its own argument parsing. Exit codes (DESIGN.md): 0 all gates pass, 1 a gate failed,
2 bad input. Bad input is reported as one clear line per problem, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from validate import __version__
from validate.errors import EXIT_BAD_INPUT, InputError


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


class _Parser(argparse.ArgumentParser):
    pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return int(args._run(args) or 0)
    except InputError as exc:
        for line in str(exc).splitlines():
            print(f"validate {args.command}: error: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("validate: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
