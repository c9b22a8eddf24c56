"""Blocks of a metrics report computed on a Dask cluster, beyond one machine.

The blocks of a report (pooled, each site, each subgroup value) are independent, seeded computations
(:mod:`validate.metrics.workers`); on a cluster each block is one Dask task running the very job
function :func:`validate.metrics.workers.run_blocks` runs locally, with the same arguments, so the
numbers are those of the local worker processes bit for bit (each worker limits its BLAS to one
thread, as they do) and those of one process to rounding.

Why Dask (``distributed``) and not Ray: the blocks are a handful of coarse NumPy tasks whose results
are small dicts, which is what ``distributed``'s futures do with nothing else to run (a scheduler and
workers started with ``dask scheduler`` / ``dask worker`` or any Dask deployment: Kubernetes, HPC job
queues via dask-jobqueue, cloud); it is pure Python, small, ships a ``LocalCluster`` that the tests run
in CI, and its schedulers are already where clinical research computing runs PyData work. Ray would
bring its own object store and cluster daemons for a workload that needs neither.

How it is used: ``validate metrics --scheduler ADDRESS`` / ``validate run --scheduler ADDRESS`` or the
environment variable ``VALIDATE_SCHEDULER`` (the flag wins; an explicit ``validate metrics --workers``
keeps the work local). In Python, ``with session(ADDRESS_OR_CLIENT): metrics_report(...)``. The command
connects before any work starts: an unreachable scheduler is exit 3 in one line (the connection waits
Dask's ``distributed.comm.timeouts.connect``, e.g. ``DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT=5s``), a
malformed address exit 2.

Identical numbers need identical code: every task first compares its worker's fingerprint of the
installed ``validate`` sources and NumPy/SciPy versions with the client's, and a worker that differs
fails the run (exit 3) rather than return numbers another version computed. Each block's arrays are
scattered to the cluster once; tasks are prioritised largest first, as the local pool does.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from validate.errors import InputError, RunIncomplete

#: The environment variable naming the Dask scheduler (``tcp://host:8786``) metrics run on.
SCHEDULER_ENV = "VALIDATE_SCHEDULER"
#: The key prefix of the block tasks on the cluster (visible in Dask's dashboard).
TASK_PREFIX = "validate-block"
INSTALL_HINT = "pip install 'validate[distributed]' (Dask's distributed)"

_active: contextvars.ContextVar[Any] = contextvars.ContextVar("validate_dask_client", default=None)


class WorkerMismatch(RunIncomplete):
    """A Dask worker runs other ``validate`` code or NumPy/SciPy than the client: its numbers could
    differ, so the run stops (exit 3)."""


def scheduler_address(flag: str | None, environ: dict[str, str] | None = None) -> str | None:
    """The scheduler to use: ``flag`` (``--scheduler``) when given, else ``VALIDATE_SCHEDULER``, else None
    (compute here). An empty value means none."""
    import os

    env = os.environ if environ is None else environ
    value = flag if flag is not None else env.get(SCHEDULER_ENV)
    value = (value or "").strip()
    return value or None


def active_client() -> Any:
    """The Dask client of the enclosing :func:`session`, or None (blocks run on this machine)."""
    return _active.get()


@contextlib.contextmanager
def session(target: Any, *, source: str = "--scheduler") -> Iterator[Any]:
    """Within the block, metrics reports run their blocks on the Dask cluster ``target``: a scheduler
    address (connected here, closed on exit) or an existing ``distributed.Client`` (left open). None:
    nothing changes. ``source`` names where the address came from, for the error messages."""
    if target is None:
        yield None
        return
    client, own = (connect(target, source=source), True) if isinstance(target, str) else (target, False)
    token = _active.set(client)
    try:
        yield client
    finally:
        _active.reset(token)
        if own:
            with contextlib.suppress(Exception):  # a lost scheduler must not hide the run's own error
                client.close()


def connect(address: str, *, source: str = "--scheduler") -> Any:
    """A ``distributed.Client`` of the scheduler at ``address``. Exit 2 (:class:`InputError`) for an
    address Dask cannot parse; exit 3 (:class:`RunIncomplete`) when Dask is not installed or the
    scheduler cannot be reached within Dask's connect timeout."""
    try:
        import distributed
        from distributed.comm import parse_address
        from distributed.comm.registry import get_backend
    except ImportError as exc:
        raise RunIncomplete(f"{source} {address}: Dask is not installed: {INSTALL_HINT}") from exc
    try:
        get_backend(parse_address(address)[0])  # the scheme: tcp, tls, ws, ...
    except ValueError as exc:
        raise InputError(
            f"{address!r} is not a Dask scheduler address ({_first_line(exc)})",
            field=source,
            expected="an address such as tcp://host:8786",
        ) from exc
    try:
        client = distributed.Client(address, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise RunIncomplete(f"could not reach the Dask scheduler at {address} ({source}): {_first_line(exc)}") from exc
    _wait_for_a_worker(client, address, source)
    return client


def _wait_for_a_worker(client: Any, address: str, source: str) -> None:
    """Wait (Dask's connect timeout) for the scheduler to have a worker: tasks sent to a scheduler
    without one would wait forever, and a run must end."""
    import dask
    from dask.utils import parse_timedelta

    if client.scheduler_info().get("workers"):
        return
    try:
        client.wait_for_workers(1, timeout=parse_timedelta(dask.config.get("distributed.comm.timeouts.connect")))
    except (TimeoutError, OSError) as exc:
        client.close()
        raise RunIncomplete(f"the Dask scheduler at {address} ({source}) has no worker") from exc


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


@functools.cache
def fingerprint() -> str:
    """sha256 of every ``validate`` source file (path and bytes, in path order) and the NumPy and SciPy
    versions: two processes with the same fingerprint compute the same block the same way."""
    import numpy
    import scipy

    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256(f"numpy {numpy.__version__}; scipy {scipy.__version__}\n".encode())
    for file in sorted(root.rglob("*.py")):
        h.update(file.relative_to(root).as_posix().encode() + b"\0")
        h.update(file.read_bytes())
    return h.hexdigest()


def evaluate(fn: Callable[..., Any], job: dict, expected: str) -> Any:
    """``fn(**job)`` on a worker whose :func:`fingerprint` is ``expected``, with BLAS on one thread.

    The thread limit stays for the worker's life (as in the local worker processes): a limit undone as
    each task ends would, with several tasks on one worker's threads, lift it under a task still running."""
    import socket

    from threadpoolctl import threadpool_limits

    if fingerprint() != expected:
        raise WorkerMismatch(
            f"Dask worker on {socket.gethostname()} runs other validate code or NumPy/SciPy than the "
            "client: install the same validate version (and NumPy, SciPy) on every worker"
        )
    threadpool_limits(1)
    return fn(**job)


def run_on_cluster(
    client: Any,
    fn: Callable[..., Any],
    jobs: Sequence[dict],
    sizes: Sequence[int],
    on_done: Callable[[int], None],
) -> list:
    """``[fn(**job) for job in jobs]`` as Dask tasks on ``client``'s cluster, largest first; results in
    the jobs' order, ``on_done(i)`` as each finishes. An exception raised by ``fn`` propagates as it is;
    a cluster that fails under the run (a worker killed, the scheduler lost, a worker without
    ``validate``) is :class:`RunIncomplete`."""
    import distributed

    expected = fingerprint()
    futures: dict[Any, int] = {}
    try:
        for i in sorted(range(len(jobs)), key=lambda i: -int(sizes[i])):
            [data] = client.scatter([jobs[i]], hash=False)
            key = f"{TASK_PREFIX}-{i}-{uuid.uuid4().hex}"
            future = client.submit(evaluate, fn, data, expected, key=key, pure=False, priority=int(sizes[i]))
            futures[future] = i
        results: list = [None] * len(jobs)
        for future in distributed.as_completed(list(futures), loop=client.loop):
            results[futures[future]] = future.result()
            on_done(futures[future])
        return results
    except (RunIncomplete, InputError):
        raise
    except _cluster_failures() as exc:
        raise RunIncomplete(f"the Dask cluster failed during the metrics: {_first_line(exc)}") from exc
    finally:
        with contextlib.suppress(Exception):
            client.cancel(list(futures))


def _cluster_failures() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the cluster, not the computation, failed."""
    import concurrent.futures

    from distributed import KilledWorker
    from distributed.comm import CommClosedError

    return (KilledWorker, CommClosedError, OSError, TimeoutError, concurrent.futures.CancelledError, ImportError)
