"""Blocks of a metrics report computed side by side in worker processes.

Every block (pooled, each site, each subgroup value) is an independent, seeded computation, so the
blocks of a report can run in separate processes and give the same numbers as one process
evaluating them in turn, up to rounding (a worker's BLAS runs one thread, whose sums go in another
order: differences ~1e-15; tests/test_metrics_workers.py). The bootstrap engine is a stream of
NumPy calls on arrays of a block's size; most of them hold the GIL, so threads do not overlap them —
processes do.

Processes start only when the work pays for them: ``workers=None`` (the default) uses up to one
process per available CPU once the report's bootstrap work (Σ cases × replicates over its blocks)
reaches :data:`AUTO_MIN_WORK`, and no more than half the free memory holds (each worker may carry
the largest block's replicate arrays), else evaluates in this process. ``workers=1`` never starts one. The
environment variable ``VALIDATE_METRICS_WORKERS`` overrides the default. Each worker limits BLAS
to one thread: the workers already occupy the cores. Blocks are handed out largest first (LPT
scheduling), and results are placed in the report's order whatever order they finish in.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from validate.errors import InputError
from validate.machine import available_cpus, available_memory as _available_memory

# ~2 s of single-process work (e.g. 5,000 cases x 1,000 replicates): below it a pool costs more than
# it saves
AUTO_MIN_WORK = 5_000_000

#: Peak memory a binary block adds per case while its bootstrap runs, beyond the input table (a worker
#: holds one block at a time; forked, it shares the input). Source: ``benchmarks/bench_metrics.py --scale``
#: on the session-8 engine (5 sites, one process): 469 B per case over the input at 1,000,000 cases (501
#: with RSS sampled every 2 ms), most of it the replicate chunk's arrays (bounded by ``CHUNK_CELLS``, so
#: fewer bytes a case in larger blocks: 118 at 10,000,000 cases). Independent of the number of
#: replicates. Rounded up.
BYTES_PER_CASE = 520


def choose_workers(workers: int | None, sizes: Sequence[int], n_bootstrap: int) -> int:
    """Processes for blocks of ``sizes`` cases: ``workers`` when given (1 = this process), else the
    environment's ``VALIDATE_METRICS_WORKERS``, else the automatic rule of the module docstring."""
    if workers is None:
        env = os.environ.get("VALIDATE_METRICS_WORKERS", "").strip()
        if env:
            try:
                workers = int(env)
            except ValueError:
                workers = 0
            if workers < 1:
                raise InputError(
                    f"VALIDATE_METRICS_WORKERS is {env!r}",
                    field="VALIDATE_METRICS_WORKERS",
                    expected="a positive integer (1 = no worker processes)",
                )
    if workers is not None:
        if workers < 1:
            raise InputError(f"workers is {workers}", field="workers", expected="a positive integer")
        return max(1, min(int(workers), len(sizes)))
    work = sum(int(s) for s in sizes) * max(int(n_bootstrap), 0)
    if work < AUTO_MIN_WORK or len(sizes) < 2:
        return 1
    n = min(available_cpus(), len(sizes))
    free = _available_memory()
    if free is not None:  # each worker may hold the largest block's replicate arrays at once
        n = min(n, int(0.5 * free // max(BYTES_PER_CASE * max(int(s) for s in sizes), 1)))
    return max(1, n)


def _limit_threads() -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def _context():
    import multiprocessing as mp

    # fork where it exists: no re-import of the caller's __main__ (a script without a main guard would
    # otherwise re-run itself in every worker) and nothing to pickle but each block's arrays. The
    # workers only run NumPy code, never the OpenMP pool a loaded torch may have started.
    if sys.platform.startswith("linux"):
        return mp.get_context("fork")
    return mp.get_context("spawn")


def run_blocks(
    fn: Callable[..., Any],
    jobs: Sequence[dict],
    sizes: Sequence[int],
    workers: int,
    on_done: Callable[[int], None] | None = None,
) -> list:
    """``[fn(**job) for job in jobs]``, in ``workers`` processes when ``workers`` > 1. ``fn`` must be a
    module-level function and the jobs picklable. A pool that cannot start or dies falls back to this
    process (the same numbers, only slower); an exception raised by ``fn`` itself propagates. Inside
    :func:`validate.metrics.cluster.session` the jobs run on that Dask cluster instead.
    ``on_done(i)`` is called in this process as job ``i`` finishes (progress), in finishing order."""
    import multiprocessing as mp

    done = on_done if on_done is not None else (lambda i: None)
    from validate.metrics.cluster import active_client, run_on_cluster

    client = active_client()
    if client is not None:  # inside cluster.session: the same jobs as Dask tasks
        return run_on_cluster(client, fn, jobs, sizes, done)
    # a daemonic process (itself a pool worker) may not start children: evaluate here
    if workers <= 1 or len(jobs) <= 1 or mp.current_process().daemon:
        return _in_turn(fn, jobs, done)
    order = sorted(range(len(jobs)), key=lambda i: -int(sizes[i]))  # largest first
    results: list = [None] * len(jobs)
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=_context(), initializer=_limit_threads) as pool:
            futures = {pool.submit(fn, **jobs[i]): i for i in order}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                done(futures[fut])
    except (BrokenProcessPool, OSError):
        return _in_turn(fn, jobs, done)
    return results


def _in_turn(fn: Callable[..., Any], jobs: Sequence[dict], done: Callable[[int], None]) -> list:
    results = []
    for i, job in enumerate(jobs):
        results.append(fn(**job))
        done(i)
    return results
