"""Proper scoring rules for binary predictions: Brier score, scaled Brier score, log loss.

Each takes optional frequency weights of shape (n,) or (r, n) and returns a float or shape (r,).
"""

from __future__ import annotations

import numpy as np

from validate.metrics.checks import as_weights, binary_args, clip_probability


def _wmean(values: np.ndarray, w) -> np.ndarray | float:
    if w is None:
        return float(np.mean(values))
    w = np.asarray(w, dtype=np.float64)
    tot = w.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (w @ values) / tot
    return out


def brier(y, p, sample_weight=None):
    """Brier score: mean of (p − y)² (Brier 1950); equals ``sklearn.metrics.brier_score_loss``."""
    y, p = binary_args(y, p)
    return _brier(y, p, None if sample_weight is None else as_weights(sample_weight, y.size))


def _brier(y, p, w=None):
    return _wmean((p - y) ** 2, w)


def scaled_brier(y, p, sample_weight=None):
    """Scaled Brier score 1 − Brier / Brier_ref, Brier_ref = π(1 − π) the Brier score of always predicting
    the (weighted) prevalence π (Steyerberg et al. 2010, "Assessing the performance of prediction
    models"). NaN when π is 0 or 1."""
    y, p = binary_args(y, p)
    return _scaled_brier(y, p, None if sample_weight is None else as_weights(sample_weight, y.size))


def _scaled_brier(y, p, w=None):
    b = _brier(y, p, w)
    prev = _wmean(y, w)
    ref = np.asarray(prev * (1.0 - prev), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(ref > 0, 1.0 - np.asarray(b) / np.where(ref > 0, ref, 1.0), np.nan)
    return float(out) if out.ndim == 0 else out


def log_loss(y, p, sample_weight=None):
    """Log loss −mean(y log p + (1 − y) log(1 − p)) with p clipped to [1e-15, 1 − 1e-15]; equals
    ``sklearn.metrics.log_loss`` on the same clipped probabilities."""
    y, p = binary_args(y, p)
    return _log_loss(y, p, None if sample_weight is None else as_weights(sample_weight, y.size))


def _log_loss(y, p, w=None):
    q = clip_probability(p)
    return _wmean(-(y * np.log(q) + (1.0 - y) * np.log1p(-q)), w)
