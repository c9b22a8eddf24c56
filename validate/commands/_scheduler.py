"""The ``--scheduler`` flag of the commands that compute metrics (``metrics``, ``run``): their metric
blocks run on a Dask cluster (:mod:`validate.metrics.cluster`). Imported at start-up, so Dask and the
metrics engine are imported only when a command runs."""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

HELP = (
    "compute the metric blocks on this Dask scheduler (tcp://host:8786; default: the environment "
    "variable VALIDATE_SCHEDULER, else this machine): the same numbers as one machine"
)


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scheduler", metavar="ADDRESS", help=HELP)


def session(args: argparse.Namespace, *, local: bool = False) -> contextlib.AbstractContextManager[Any]:
    """The cluster session of the command: ``--scheduler``, else ``VALIDATE_SCHEDULER`` unless ``local``
    (an explicit choice of this machine on the command line, which overrides the environment).
    Connects now, so an unreachable scheduler stops the command before any work."""
    from validate.metrics.cluster import SCHEDULER_ENV, scheduler_address, session as cluster_session

    flag = getattr(args, "scheduler", None)
    if flag is None and local:
        return contextlib.nullcontext()
    source = "--scheduler" if flag is not None else SCHEDULER_ENV
    return cluster_session(scheduler_address(flag), source=source)
