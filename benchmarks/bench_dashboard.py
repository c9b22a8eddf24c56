"""Dashboard scale: does the Overview of a 1,000,000-prediction bundle open as fast as a 1,000-prediction one?

Two synthetic bundles with the same 10 sites and the same JSON parts (metrics, calibration, gates,
subgroups) differ only in ``predictions.parquet`` (1,000,000 vs 1,000 rows). Each Overview is opened
in a fresh Streamlit ``AppTest`` session (cold caches: every bundle path is new to the process), several
times in alternation; the medians are compared. Target: ratio <= 2 (the Overview reads the precomputed
JSON only, never the predictions). The Cases page, which does read the predictions, is timed too for
contrast.

Run: ``.venv/bin/python benchmarks/bench_dashboard.py [--repeats 5]``. Prints timings and the ratio;
exits 1 when the ratio exceeds the target.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGET = 2.0
N_SITES = 10


def _entry(est, half, method="bootstrap"):
    return {"estimate": est, "ci_low": est - half, "ci_high": est + half, "method": method}


def _block(rng, n, events):
    b = {"n": int(n), "n_events": int(events), "prevalence": events / n}
    half = 1.0 / np.sqrt(n)
    for m, centre in (
        ("auroc", 0.8),
        ("auprc", 0.7),
        ("brier", 0.18),
        ("scaled_brier", 0.25),
        ("log_loss", 0.5),
        ("ece", 0.05),
        ("ece_adaptive", 0.05),
        ("mce", 0.12),
        ("calibration_slope", 1.0),
        ("calibration_intercept", 0.0),
        ("eavg", 0.04),
        ("e50", 0.03),
        ("e90", 0.08),
        ("emax", 0.15),
        ("ici", 0.04),
    ):
        b[m] = _entry(float(centre + rng.normal(0, 0.02)), float(half), "delong" if m == "auroc" else "bootstrap")
    b["hosmer_lemeshow"] = {"statistic": 8.0, "df": 8, "p_value": 0.4}
    b["spiegelhalter_z"] = {"statistic": 0.5, "p_value": 0.6}
    return b


def write_bundle(folder: Path, n_predictions: int, seed: int = 0) -> Path:
    """A complete synthetic bundle: 10 sites, ``n_predictions`` rows split evenly."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sites = [f"site{k:02d}" for k in range(N_SITES)]
    per_site = n_predictions // N_SITES
    y = rng.integers(0, 2, n_predictions).astype(np.int8)
    logit = rng.normal(0, 1.5, n_predictions) + 1.2 * (2 * y - 1)
    pred = pd.DataFrame(
        {
            "case_id": [f"{i:020x}" for i in range(n_predictions)],
            "site": np.repeat(sites, per_site)[:n_predictions],
            "patient_id": [f"{i:020x}" for i in range(n_predictions)],
            "y": y,
            "logit": logit,
            "sex": rng.choice(["female", "male"], n_predictions),
            "age": rng.integers(20, 90, n_predictions),
        }
    )
    pred.to_parquet(folder / "predictions.parquet", index=False)
    # the JSON parts hold the same numbers for both bundles (seeded), only n differs
    jr = np.random.default_rng(1)
    metrics = {
        "task": "binary",
        "n_bootstrap": 1000,
        "ci_level": 0.95,
        "seed": 0,
        "overall": _block(jr, n_predictions, n_predictions // 2),
        "sites": {s: _block(jr, per_site, per_site // 2) for s in sites},
        "subgroups": {"sex": {g: _block(jr, n_predictions // 2, n_predictions // 4) for g in ("female", "male")}},
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    rows = [
        {
            "gate": "auroc-each-site",
            "metric": "auroc",
            "scope": "each_site",
            "item": f"site {s}",
            "on": "ci_low",
            "direction": "min",
            "threshold": 0.7,
            "verdict": "pass",
            "reason": "ok",
            "value": 0.78,
            "site": s,
        }
        for s in sites
    ]
    (folder / "gates.json").write_text(
        json.dumps({"verdict": "pass", "counts": {"pass": len(rows), "warn": 0, "fail": 0}, "rows": rows})
    )
    cal = {
        "task": "binary",
        "design": "held-out",
        "fit_on": [sites[0]],
        "recommended": "platt",
        "methods": {
            m: {"params": {}, "sites": {s: _block(jr, per_site, per_site // 2) for s in sites[1:]}}
            for m in ("none", "temperature", "platt", "isotonic")
        },
    }
    (folder / "calibration.json").write_text(json.dumps(cal))
    (folder / "provenance.json").write_text(
        json.dumps(
            {
                "protocol": {"name": "bench", "version": "1"},
                "checkpoint": {"sha256": "0" * 64},
                "started_at": "2024-01-01T00:00:00",
                "finished_at": "2024-01-01T00:10:00",
            }
        )
    )
    site_yaml = "\n".join(
        f"  - {{id: {s}, name: Hospital {s}, manifest: {s}.csv, role: {'development' if i == 0 else 'external'}}}"
        for i, s in enumerate(sites)
    )
    (folder / "protocol.yaml").write_text(
        f"name: bench\nversion: '1'\ntask: binary\nclasses: [neg, pos]\nsites:\n{site_yaml}\nattributes: [sex, age]\n"
    )
    pd.DataFrame(columns=["site", "case_id", "reason"]).to_csv(folder / "failures.csv", index=False)
    (folder / "report.html").write_text("<html><body>bench</body></html>")
    return folder


def open_page(runs_dir: Path, page: str | None = None) -> float:
    """Seconds to open the app on ``runs_dir`` (Overview) in a fresh session, then ``page`` if given."""
    from streamlit.testing.v1 import AppTest

    os.environ["VALIDATE_DASHBOARD_RUNS"] = str(runs_dir)
    t0 = time.perf_counter()
    at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=600).run()
    if page is not None:
        at.switch_page(page).run()
    elapsed = time.perf_counter() - t0
    if at.exception:
        raise RuntimeError(f"the dashboard raised on {runs_dir}: {at.exception[0].message}")
    return elapsed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--large", type=int, default=1_000_000)
    ap.add_argument("--small", type=int, default=1_000)
    args = ap.parse_args(argv)
    import logging

    logging.getLogger("streamlit").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        write_bundle(tmp / "warmup" / "run", args.small, seed=2)
        small = [write_bundle(tmp / f"small{r}" / "run", args.small) for r in range(args.repeats)]
        large_src = write_bundle(tmp / "large0" / "run", args.large)
        large = [large_src]
        for r in range(1, args.repeats):  # same bytes, new paths (so each open is a cold cache)
            dst = tmp / f"large{r}" / "run"
            dst.mkdir(parents=True)
            for f in large_src.iterdir():
                os.link(f, dst / f.name)
            large.append(dst)
        print(
            f"bundles written in {time.perf_counter() - t0:.1f} s "
            f"(predictions.parquet: {(large_src / 'predictions.parquet').stat().st_size / 1e6:.1f} MB large, "
            f"{(small[0] / 'predictions.parquet').stat().st_size / 1e3:.1f} kB small)"
        )
        open_page(tmp / "warmup")  # imports and the first AppTest start-up are not part of either number
        t_small, t_large = [], []
        for r in range(args.repeats):
            t_small.append(open_page(small[r].parent))
            t_large.append(open_page(large[r].parent))
        ms, ml = statistics.median(t_small), statistics.median(t_large)
        ratio = ml / ms
        print(
            f"Overview, {args.small:>9,} predictions: median {ms * 1000:7.1f} ms  (runs: "
            + ", ".join(f"{t * 1000:.0f}" for t in t_small)
            + ")"
        )
        print(
            f"Overview, {args.large:>9,} predictions: median {ml * 1000:7.1f} ms  (runs: "
            + ", ".join(f"{t * 1000:.0f}" for t in t_large)
            + ")"
        )
        print(f"ratio large/small: {ratio:.2f} (target <= {TARGET:.0f})")
        # for contrast: the Cases page reads predictions.parquet
        cs = open_page(tmp / "warmup", "views/cases.py")
        cl = open_page(large[0].parent, "views/cases.py")
        print(
            f"Cases page (reads predictions): {args.small:,}: {cs * 1000:.0f} ms, {args.large:,}: {cl * 1000:.0f} ms "
            f"(ratio {cl / cs:.1f}, not a target)"
        )
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
