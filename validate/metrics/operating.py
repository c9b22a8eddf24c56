"""Operating points: sensitivity, specificity, PPV and NPV at a probability threshold, and the threshold
reaching a target sensitivity (found at the development site, carried unchanged to other sites).

A case is called positive when p >= threshold.
"""

from __future__ import annotations

import math

import numpy as np

from validate.metrics.checks import as_weights, binary_args


def weighted_operating_point(y: np.ndarray, p: np.ndarray, threshold: float, w=None) -> dict:
    """Sensitivity, specificity, PPV, NPV with frequency weights (n,) or (r, n); NaN where a
    denominator is 0. Arrays assumed checked."""
    w = as_weights(w, y.size)
    call = (p >= threshold).astype(np.float64)
    tp = w @ (y * call)
    fn = w @ (y * (1 - call))
    fp = w @ ((1 - y) * call)
    tn = w @ ((1 - y) * (1 - call))
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "sensitivity": tp / (tp + fn),
            "specificity": tn / (tn + fp),
            "ppv": tp / (tp + fp),
            "npv": tn / (tn + fn),
        }


def operating_point(y, p, threshold: float) -> dict:
    """Sensitivity TP/(TP+FN), specificity TN/(TN+FP), PPV TP/(TP+FP) and NPV TN/(TN+FN) calling
    p >= threshold positive (Altman & Bland 1994). Undefined ratios are NaN.
    Returns ``{"threshold", "sensitivity", "specificity", "ppv", "npv"}``."""
    y, p = binary_args(y, p)
    out = weighted_operating_point(y, p, float(threshold))
    return {"threshold": float(threshold), **{k: float(v) for k, v in out.items()}}


def operating_points(y, p, thresholds) -> list[dict]:
    """:func:`operating_point` at each threshold."""
    return [operating_point(y, p, t) for t in thresholds]


def threshold_for_sensitivity(y, p, target: float) -> float:
    """The largest threshold t (an observed positive's p) with sensitivity(p >= t) >= target: with m
    positives sorted by p descending, t is the k-th, k = ceil(target · m). NaN without positives.
    Carried unchanged to other sites, it shows how sensitivity and specificity move when a threshold
    travels (DESIGN.md, operating points)."""
    y, p = binary_args(y, p)
    if not 0 < target <= 1:
        raise ValueError("target sensitivity must lie in (0, 1]")
    pos = np.sort(p[y == 1])[::-1]
    if pos.size == 0:
        return float("nan")
    k = max(1, math.ceil(target * pos.size - 1e-9))
    return float(pos[k - 1])
