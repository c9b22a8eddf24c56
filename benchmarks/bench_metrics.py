"""Benchmark of the metrics engine (plain script; prints ratios measured in the same run).

(a) The full binary metric set with 1000-replicate intervals on 100,000 predictions over 5 sites
    (pooled block stratified by site + one block per site) against the naive approach: a Python loop of
    scikit-learn / statsmodels calls per bootstrap replicate (timed on a few replicates and scaled).
    Target: >= 20x faster.
(b) ECE on 10^7 predictions against a bare ``np.bincount`` pass (bin index + one weighted bincount).
    Target: within 1.5x.
(c) Peak memory of (a): peak resident set size while (a) runs, sampled by psutil, this process and its
    worker processes together. Target: < 2 GB.
(d) Scale (``--scale 100000,1000000,10000000``): the same report at each size, each in a child process
    of its own (one process, ``workers=1``, so its ``ru_maxrss`` is the whole peak), printing time and
    peak RSS, the peak over the input table per case, and both as ratios to the first size.
    Targets (issue #21): 10M × 1000 replicates × 5 sites ≤ 4 GB; time(10M) / time(1M) ≤ 11.

"Ours" is ``metrics_report`` as users get it: by default its blocks (pooled + 5 sites) run in one
worker process per CPU (validate/metrics/workers.py). The same run in a single process is printed
too (``--workers 1`` skips the parallel run), so the share of the vectorised engine and the share of
the processes are both visible.

Usage: .venv/bin/python benchmarks/bench_metrics.py [--n 100000] [--sites 5] [--replicates 1000]
       .venv/bin/python benchmarks/bench_metrics.py --scale 100000,1000000,10000000 [--replicates 1000]
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

# this checkout's validate, not whichever one the environment installed (an editable install of
# another worktree would otherwise be what the children measure)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_table(n: int, sites: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    site = np.repeat([f"site{i}" for i in range(sites)], n // sites)
    shift = np.repeat(rng.normal(0, 0.4, sites), n // sites)
    z = rng.normal(-1.2, 1.4, site.size)
    y = (rng.random(site.size) < 1 / (1 + np.exp(-(0.8 * z + shift)))).astype(int)
    return pd.DataFrame({"site": site, "y": y, "logit": z})


class PeakRSS:
    """Peak resident set size of this process and its children while the block runs (psutil, sampled
    every 20 ms)."""

    def __enter__(self):
        import psutil

        self.proc = psutil.Process()
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _rss(self) -> int:
        import psutil

        total = self.proc.memory_info().rss
        for child in self.proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:  # a worker that just exited
                pass
        return total

    def _run(self):
        while not self.stop:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.02)

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join()
        self.peak = max(self.peak, self._rss())


def naive_replicate(y, p, bins=15, thresholds=(0.5,), smooth=True):
    """What a straightforward implementation does for one bootstrap replicate of one block."""
    from scipy.stats import mstats  # noqa: F401  (import cost outside the timing)
    from sklearn import metrics as skm
    from statsmodels.nonparametric.smoothers_lowess import lowess

    from validate.metrics import loess_smooth

    out = {
        "auprc": skm.average_precision_score(y, p),
        "brier": skm.brier_score_loss(y, p),
        "log_loss": skm.log_loss(y, np.clip(p, 1e-15, 1 - 1e-15)),
    }
    prev = y.mean()
    out["scaled_brier"] = 1 - out["brier"] / (prev * (1 - prev))
    idx = np.clip(np.ceil(p * bins).astype(int) - 1, 0, bins - 1)
    gaps = []
    for b in range(bins):
        m = idx == b
        if m.any():
            gaps.append((m.sum(), abs(y[m].mean() - p[m].mean())))
    out["ece"] = sum(c * g for c, g in gaps) / y.size
    out["mce"] = max(g for _, g in gaps)
    order = np.argsort(p, kind="stable")
    groups = np.array_split(order, bins)
    out["ece_adaptive"] = sum(len(g) * abs(y[g].mean() - p[g].mean()) for g in groups) / y.size
    if smooth:
        sm = lowess(y, p, frac=2 / 3, it=0, delta=0.01 * np.ptp(p))
        ux, first = np.unique(sm[:, 0], return_index=True)
        e = np.abs(p - np.interp(p, ux, sm[first, 1]))
        out.update(eavg=e.mean(), e50=np.median(e), e90=np.quantile(e, 0.9), emax=e.max())
        out["ici"] = np.mean(np.abs(p - loess_smooth(p, y)))
    for t in thresholds:
        tn, fp, fn, tp = skm.confusion_matrix(y, (p >= t).astype(int), labels=[0, 1]).ravel()
        out[f"sens@{t}"] = tp / (tp + fn)
        out[f"spec@{t}"] = tn / (tn + fp)
        out[f"ppv@{t}"] = tp / max(tp + fp, 1)
        out[f"npv@{t}"] = tn / max(tn + fn, 1)
    return out


def bench_a(n, sites, reps, naive_reps, smooth_intervals=True, workers=None):
    from validate.metrics import MetricSettings, metrics_report
    from validate.predictions import table_from_frame

    df = make_table(n, sites)
    table = table_from_frame(df)
    settings = MetricSettings(n_bootstrap=reps)
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        report = metrics_report(table, settings=settings, smooth_intervals=smooth_intervals, workers=workers)
        ours = time.perf_counter() - t0
    y = table.y().astype(int)
    p = table.prob()
    site = table.site_ids
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    for _ in range(naive_reps):
        # pooled block: resample within each site, then every site block on its own resample
        idx = np.concatenate([rng.choice(np.flatnonzero(site == s), (site == s).sum()) for s in table.sites()])
        naive_replicate(y[idx], p[idx], smooth=smooth_intervals)
        for s in table.sites():
            m = np.flatnonzero(site == s)
            j = rng.choice(m, m.size)
            naive_replicate(y[j], p[j], smooth=smooth_intervals)
    naive = (time.perf_counter() - t0) / naive_reps * reps if naive_reps else float("nan")
    return ours, naive, mem, report


def bench_b(n=10_000_000, repeats=5):
    from validate.metrics import ece

    rng = np.random.default_rng(0)
    p = rng.random(n)
    y = (rng.random(n) < p).astype(np.int64)

    def bare():
        idx = np.minimum((p * 15).astype(np.intp), 14)
        return np.bincount(idx, weights=y - p, minlength=15)

    def ours():
        return ece(y, p)

    times = {"bare": [], "ours": []}
    for _ in range(repeats):  # interleaved, best of each: the machine is shared
        for name, f in (("bare", bare), ("ours", ours)):
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
    return min(times["ours"]), min(times["bare"])


def _current_rss() -> int:
    """This process's resident set size now, in bytes (Linux /proc/self/statm)."""
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def scale_child(n: int, sites: int, reps: int) -> dict:
    """One size of (d), run in this (child) process: seconds of ``metrics_report`` and the process's
    resident size before it (the input table) and peak RSS after it (``ru_maxrss``, KiB on Linux)."""
    from validate.metrics import MetricSettings, metrics_report
    from validate.predictions import table_from_frame

    table = table_from_frame(make_table(n, sites))
    gc.collect()
    # the input's resident size now (not the peak so far: building the table may have peaked higher,
    # and that transient belongs to neither the input nor the report)
    before = _current_rss()
    t0 = time.perf_counter()
    metrics_report(table, settings=MetricSettings(n_bootstrap=reps), workers=1)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"n": n, "seconds": seconds, "peak": peak, "input": before}


def bench_scale(sizes: list[int], sites: int, reps: int) -> list[dict]:
    """(d): each size in a fresh child process (a peak RSS is a process's whole life)."""
    rows = []
    for n in sizes:
        cmd = [sys.executable, __file__, "--scale-child", str(n), "--sites", str(sites), "--replicates", str(reps)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print_scale(rows, sites, reps, header=len(rows) == 1)
    return rows


def print_scale(rows: list[dict], sites: int, reps: int, header: bool) -> None:
    first = rows[0]
    if header:
        print(f"(d) scale: {sites} sites, {reps} replicates, full binary set, one process (workers=1)")
        print("    cases        time s  peak GiB  input GiB  B/case over input  time ratio  peak ratio")
    r = rows[-1]
    print(
        f"    {r['n']:>10,}  {r['seconds']:8.1f}  {r['peak'] / 2**30:8.2f}  {r['input'] / 2**30:9.2f}  "
        f"{(r['peak'] - r['input']) / r['n']:17.0f}  {r['seconds'] / first['seconds']:10.2f}  "
        f"{r['peak'] / first['peak']:10.2f}",
        flush=True,
    )
    if len(rows) >= 2 and r["n"] == 10 * rows[-2]["n"]:
        ratio = r["seconds"] / rows[-2]["seconds"]
        print(f"    time({r['n']:,}) / time({rows[-2]['n']:,}) = {ratio:.2f}  (target <= 11)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--sites", type=int, default=5)
    ap.add_argument("--replicates", type=int, default=1000)
    ap.add_argument("--naive-replicates", type=int, default=5)
    ap.add_argument(
        "--workers",
        type=int,
        default=None,
        help="metric worker processes (default: the automatic choice; 1 = one process)",
    )
    ap.add_argument(
        "--skip-smooth-split", action="store_true", help="skip the extra run without the lowess/loess intervals"
    )
    ap.add_argument("--scale", default=None, help="(d) only: comma-separated sizes, e.g. 100000,1000000,10000000")
    ap.add_argument("--scale-child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.scale_child is not None:
        print(json.dumps(scale_child(args.scale_child, args.sites, args.replicates)))
        return
    if args.scale:
        bench_scale([int(v) for v in args.scale.split(",")], args.sites, args.replicates)
        return

    from validate.metrics.workers import choose_workers

    auto = choose_workers(args.workers, [args.n] + [args.n // args.sites] * args.sites, args.replicates)
    ours, naive, mem, report = bench_a(args.n, args.sites, args.replicates, args.naive_replicates, workers=args.workers)
    print(f"(a) {args.n} predictions, {args.sites} sites, {args.replicates} replicates, full binary set")
    print(f"    ours   {ours:8.1f} s  ({auto} worker process{'es' if auto > 1 else ''}, the default here)")
    print(
        f"    naive  {naive:8.1f} s  (loop of sklearn/statsmodels calls, {args.naive_replicates} replicates "
        f"timed, scaled to {args.replicates})"
    )
    print(f"    ratio  {naive / ours:8.1f} x   (target >= 20x)")
    print(
        f"(c) peak RSS during (a): {mem.peak / 2**30:.2f} GiB "
        f"(+{(mem.peak - mem.base) / 2**30:.2f} GiB over the {mem.base / 2**30:.2f} GiB before; workers "
        f"included)  (target < 2 GB)"
    )
    if auto > 1:
        o1, _, mem1, _ = bench_a(args.n, args.sites, args.replicates, 0, workers=1)
        print(
            f"(a1) the same in one process: ours {o1:.1f} s, ratio {naive / o1:.1f} x; "
            f"peak RSS {mem1.peak / 2**30:.2f} GiB"
        )
    if not args.skip_smooth_split:
        o2, n2, _, _ = bench_a(
            args.n, args.sites, args.replicates, args.naive_replicates, smooth_intervals=False, workers=args.workers
        )
        print(
            f"(a') the same without the lowess/loess (Eavg..Emax, ICI) intervals: ours {o2:.1f} s, "
            f"naive {n2:.1f} s, ratio {n2 / o2:.1f} x"
        )
    t_ours, t_bare = bench_b()
    print(
        f"(b) ECE on 10^7 predictions: ours {t_ours * 1e3:.0f} ms, bare np.bincount pass {t_bare * 1e3:.0f} ms, "
        f"ratio {t_ours / t_bare:.2f} x  (target <= 1.5x)"
    )


if __name__ == "__main__":
    main()
