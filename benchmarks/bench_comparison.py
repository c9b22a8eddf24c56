"""Benchmark of the paired comparison (validate/analysis/comparison.py; plain script, prints times
measured in the same run).

A heart-sized cohort (default 920 cases over 4 sites, one binary subgroup: 15 blocks — pooled, 4 sites,
2 groups pooled, 8 group x site cells) scored by two correlated models; ``compare`` with 1000 paired
replicates against the metrics engine's own blocks of the same cases for both models (``metrics_report``
without smoother intervals, in one process): the comparison evaluates both models on every replicate,
plus the per-replicate logistic refits of the calibration intercept and slope, so about 2x the blocks'
time and more is expected. Target: seconds, not minutes, for the heart sample.

Usage: .venv/bin/python benchmarks/bench_comparison.py [--n 920] [--sites 4] [--replicates 1000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from validate.analysis.comparison import compare  # noqa: E402
from validate.metrics import metrics_report  # noqa: E402
from validate.metrics.settings import MetricSettings  # noqa: E402
from validate.predictions import table_from_frame  # noqa: E402


def make_pair(n: int, sites: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    site = np.array([f"site{i}" for i in range(sites)])[rng.integers(0, sites, n)]
    truth = rng.normal(0, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-truth))).astype(int)
    z_new = truth + rng.normal(0, 0.8, n)
    z_base = 0.8 * z_new + rng.normal(0, 0.7, n) + 0.1
    ids = {
        "case_id": [f"c{i}" for i in range(n)],
        "site": site,
        "y": y,
        "sex": np.where(rng.random(n) < 0.4, "female", "male"),
    }
    return (
        table_from_frame(pd.DataFrame({**ids, "logit": z_new})),
        table_from_frame(pd.DataFrame({**ids, "logit": z_base})),
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=920)
    ap.add_argument("--sites", type=int, default=4)
    ap.add_argument("--replicates", type=int, default=1000)
    args = ap.parse_args()
    new, base = make_pair(args.n, args.sites)
    settings = MetricSettings(n_bootstrap=args.replicates)
    t0 = time.perf_counter()
    out = compare(new, base, settings=settings, subgroups={"sex": new.frame["sex"]})
    t_compare = time.perf_counter() - t0
    blocks = 1 + len(out["sites"]) + sum(1 + len(c["sites"]) for c in out["subgroups"]["sex"].values())
    t0 = time.perf_counter()
    for table in (new, base):
        metrics_report(table, settings=settings, subgroup_columns=["sex"], smooth_intervals=False, workers=1)
        for _, part in table.by_site():
            metrics_report(part, settings=settings, subgroup_columns=["sex"], smooth_intervals=False, workers=1)
    t_blocks = time.perf_counter() - t0
    print(f"compare: {blocks} blocks x {args.replicates} paired replicates on {args.n} cases: {t_compare:.2f} s")
    print(
        f"metrics blocks of the same cases, both models: {t_blocks:.2f} s "
        f"(compare / blocks = {t_compare / t_blocks:.2f})"
    )


if __name__ == "__main__":
    main()
