"""Multiclass metrics on a probability matrix P [n, K] and integer labels y in 0..K-1.

Each takes optional frequency weights (n,) or (r, n) (bootstrap replicates in rows).
"""

from __future__ import annotations

import numpy as np

from validate.metrics.calibration import weighted_ece
from validate.metrics.checks import PROB_FLOOR, as_weights
from validate.metrics.discrimination import weighted_auroc


def multiclass_args(y, P) -> tuple[np.ndarray, np.ndarray]:
    """Checked (y int [n], P float64 [n, K]) with rows of P in [0, 1]."""
    P = np.asarray(P, dtype=np.float64)
    if P.ndim != 2 or P.shape[1] < 2:
        raise ValueError(f"P must be a matrix [n, K] with K >= 2, got shape {P.shape}")
    y = np.asarray(y)
    if y.shape != (P.shape[0],):
        raise ValueError(f"y must have shape ({P.shape[0]},), got {y.shape}")
    if not np.all(np.isfinite(P)) or np.any((P < 0) | (P > 1)):
        raise ValueError("P must hold probabilities in [0, 1]")
    yi = y.astype(np.int64)
    if np.any(yi != y) or np.any((yi < 0) | (yi >= P.shape[1])):
        raise ValueError(f"y must hold class indices 0..{P.shape[1] - 1}")
    return yi, P


def _wmean(v, w):
    if w is None:
        return float(np.mean(v))
    w = np.asarray(w, dtype=np.float64)
    return (w @ v) / w.sum(axis=-1)


def accuracy(y, P, sample_weight=None):
    """Share of cases whose arg-max class (first on ties, as ``np.argmax``) equals the label."""
    y, P = multiclass_args(y, P)
    return _wmean((P.argmax(axis=1) == y).astype(np.float64), _w(sample_weight, y.size))


def multiclass_brier(y, P, sample_weight=None):
    """Multiclass Brier score (Brier 1950): mean over cases of Σ_k (P_k − 1[y = k])², range [0, 2]."""
    y, P = multiclass_args(y, P)
    return _wmean(_brier_terms(y, P), _w(sample_weight, y.size))


def _brier_terms(y, P):
    onehot = np.zeros_like(P)
    onehot[np.arange(y.size), y] = 1.0
    return ((P - onehot) ** 2).sum(axis=1)


def multiclass_log_loss(y, P, sample_weight=None):
    """Log loss −mean log P[y] with P clipped to [1e-15, 1 − 1e-15] (rows are not renormalised)."""
    y, P = multiclass_args(y, P)
    return _wmean(_nll_terms(y, P), _w(sample_weight, y.size))


def _nll_terms(y, P):
    return -np.log(np.clip(P[np.arange(y.size), y], PROB_FLOOR, 1 - PROB_FLOOR))


def top_label_ece(y, P, *, bins: int = 15, sample_weight=None):
    """Top-label ECE (Guo et al. 2017): the binary ECE of confidence = max_k P_k against correct =
    (arg-max == label), same bins as :func:`validate.metrics.ece`."""
    y, P = multiclass_args(y, P)
    conf = P.max(axis=1)
    correct = (P.argmax(axis=1) == y).astype(np.float64)
    out = weighted_ece(correct, conf, _w(sample_weight, y.size), bins=bins)
    return float(out[0]) if sample_weight is None or np.ndim(sample_weight) == 1 else out


def classwise_ece(y, P, *, bins: int = 15, sample_weight=None):
    """Class-wise ECE (Kull et al. 2019; Nixon et al. 2019): mean over classes k of the binary ECE of
    P_k against 1[y = k], same bins as :func:`validate.metrics.ece`."""
    y, P = multiclass_args(y, P)
    w = _w(sample_weight, y.size)
    vals = [weighted_ece((y == k).astype(np.float64), P[:, k], w, bins=bins) for k in range(P.shape[1])]
    out = np.mean(vals, axis=0)
    return float(out[0]) if sample_weight is None or np.ndim(sample_weight) == 1 else out


def auroc_macro(y, P, sample_weight=None):
    """Macro one-vs-rest AUROC: unweighted mean over classes of the AUROC of P_k for class k against the
    rest; equals ``sklearn.metrics.roc_auc_score(y, P, multi_class="ovr", average="macro")``. Classes
    absent from y (or present in every case) make it NaN."""
    y, P = multiclass_args(y, P)
    w = _w(sample_weight, y.size)
    vals = [weighted_auroc((y == k).astype(np.float64), P[:, k], w) for k in range(P.shape[1])]
    out = np.mean(vals, axis=0)
    return float(out) if np.ndim(out) == 0 else (float(out[0]) if sample_weight is None else out)


def _w(sample_weight, n):
    return None if sample_weight is None else as_weights(sample_weight, n)
