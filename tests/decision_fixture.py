"""Net benefit and precision added by hand to the dashboard's fixture bundle (tests/test_dashboard_data.py),
shaped exactly as docs/SPEC (session 5, #15): ``decision`` items in every binary BLOCK, the ``decision``
curves in ``curves.json`` and the ``precision`` summary in every BLOCK.

The numbers are computed here from the fixture's predictions with a naive loop over patients (Vickers &
Elkin 2006: NB(t) = TP/n − FP/n · t/(1−t), treat = p ≥ t) and a plain case-resampling bootstrap; the
presentation tests compare what is drawn and tabulated with these numbers, read back from the bundle.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit

DECISION_THRESHOLDS = (0.1, 0.3)
GRID = [round(0.05 + i * 0.05, 10) for i in range(10)]  # 0.05 ... 0.5
N_BOOT = 200
# gamma's standardised net benefit at 0.3 is recorded as undefined, to test how a null entry is shown
UNDEFINED = ("gamma", "standardized_net_benefit", 0.3, "no replicate kept an event (hand-made for the test)")


def net_benefit(y: np.ndarray, p: np.ndarray, t: float) -> float:
    """NB(t) by counting: true and false positives among the patients with p ≥ t, over n."""
    tp = fp = 0
    for yi, pi in zip(y, p, strict=True):
        if pi >= t:
            if yi == 1:
                tp += 1
            else:
                fp += 1
    n = len(y)
    return tp / n - fp / n * t / (1 - t)


def treat_all(y: np.ndarray, t: float) -> float:
    prev = float(np.mean(y))
    return prev - (1 - prev) * t / (1 - t)


def _entry(est, reps):
    reps = np.asarray(reps, float)
    return {
        "estimate": float(est),
        "ci_low": float(np.percentile(reps, 2.5)),
        "ci_high": float(np.percentile(reps, 97.5)),
        "method": "bootstrap",
        "se": float(np.std(reps, ddof=1)),
    }


def _replicates(y, p, seed=0):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), size=(N_BOOT, len(y)))
    return [(y[i], p[i]) for i in idx]


def curve(y: np.ndarray, p: np.ndarray) -> dict:
    reps = _replicates(y, p)
    nb = [net_benefit(y, p, t) for t in GRID]
    ta = [treat_all(y, t) for t in GRID]
    nb_r = np.array([[net_benefit(a, b, t) for t in GRID] for a, b in reps])
    ta_r = np.array([[treat_all(a, t) for t in GRID] for a, _ in reps])
    return {
        "n": int(len(y)),
        "n_events": int(y.sum()),
        "prevalence": float(y.mean()),
        "net_benefit": nb,
        "net_benefit_ci_low": list(np.percentile(nb_r, 2.5, axis=0)),
        "net_benefit_ci_high": list(np.percentile(nb_r, 97.5, axis=0)),
        "treat_all": ta,
        "treat_all_ci_low": list(np.percentile(ta_r, 2.5, axis=0)),
        "treat_all_ci_high": list(np.percentile(ta_r, 97.5, axis=0)),
    }


def decision_items(y: np.ndarray, p: np.ndarray) -> list[dict]:
    reps = _replicates(y, p)
    out = []
    for t in DECISION_THRESHOLDS:
        odds = t / (1 - t)
        nb, ta = net_benefit(y, p, t), treat_all(y, t)
        nb_r = np.array([net_benefit(a, b, t) for a, b in reps])
        ta_r = np.array([treat_all(a, t) for a, _ in reps])
        prev_r = np.array([a.mean() for a, _ in reps])
        out.append(
            {
                "threshold": t,
                "prevalence": float(y.mean()),
                "net_benefit": _entry(nb, nb_r),
                "net_benefit_treat_all": _entry(ta, ta_r),
                "net_benefit_vs_treat_all": _entry(nb - ta, nb_r - ta_r),
                "interventions_avoided": _entry((nb - ta) / odds * 100, (nb_r - ta_r) / odds * 100),
                "standardized_net_benefit": _entry(nb / y.mean(), nb_r / prev_r),
                "beats_defaults": float(np.mean(nb_r > np.maximum(0.0, ta_r))),
            }
        )
    return out


def precision_summary(n: int, events: int, site: str) -> dict:
    """A ``precision`` summary as the spec shapes it: the small site (gamma) falls short on the slope."""
    short = site == "gamma"
    criteria = [
        {
            "metric": "auroc",
            "width": 0.22 if short else 0.16,
            "target": 0.1,
            "adequate": False,
            "needed_n": 420,
            "needed_events": 168,
            "n": n,
            "basis": "observed prevalence, C 0.80",
        },
        {
            "metric": "calibration_slope",
            "width": 0.94 if short else 0.18,
            "target": 0.2,
            "adequate": not short,
            "needed_n": 1350 if short else None,
            "needed_events": 486 if short else None,
            "n": n,
            "basis": f"observed prevalence {events / n:.2f}, empirical logits",
        },
        {
            "metric": "oe_ratio",
            "width": 0.31,
            "target": 0.2,
            "adequate": False,
            "needed_n": 610,
            "needed_events": 244,
            "n": n,
            "basis": "observed prevalence",
        },
    ]
    reason = (
        f"slope CI width 0.94 > 0.20 target: needs ≈ 1,350 patients (has {n})"
        if short
        else f"C-statistic CI width 0.16 > 0.10 target: needs ≈ 420 patients (has {n})"
    )
    return {"adequate": False, "criteria": criteria, "reason": reason}


def add_decision_and_precision(folder: Path, *, decision: bool = True) -> Path:
    """Add ``decision`` (curves and block items; unless ``decision`` is false) and ``precision`` to the
    fixture bundle in ``folder``."""
    folder = Path(folder)
    pred = pd.read_parquet(folder / "predictions.parquet")
    pred["p"] = expit(pred["logit"])
    metrics = json.loads((folder / "metrics.json").read_text())
    curves = json.loads((folder / "curves.json").read_text())
    parts = {"overall": pred, **{s: g for s, g in pred.groupby("site")}}
    blocks = {"overall": None, "sites": {}}
    for name, frame in parts.items():
        y, p = frame["y"].to_numpy(int), frame["p"].to_numpy(float)
        block = metrics["overall"] if name == "overall" else metrics["sites"][name]
        block["decision"] = decision_items(y, p)
        block["precision"] = precision_summary(len(y), int(y.sum()), name)
        if name == "overall":
            blocks["overall"] = curve(y, p)
        else:
            blocks["sites"][name] = curve(y, p)
    site, metric, t, why = UNDEFINED
    item = next(d for d in metrics["sites"][site]["decision"] if d["threshold"] == t)
    item[metric] = None
    metrics["sites"][site].setdefault("undefined", {})[f"{metric}@{t}"] = why
    curves["decision"] = {"thresholds": GRID, "ci_level": 0.95, "blocks": blocks}
    if not decision:  # a protocol without a decision section: precision alone
        for block in [metrics["overall"], *metrics["sites"].values()]:
            del block["decision"]
            block["undefined"] = {k: v for k, v in (block.get("undefined") or {}).items() if "@" not in k}
        del curves["decision"]
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "curves.json").write_text(json.dumps(curves))
    return folder
