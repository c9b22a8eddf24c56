"""Discrimination: AUROC with DeLong intervals and the paired DeLong test, and AUPRC.

Weighted forms take case weights of shape (n,) or (r, n) — bootstrap replicate counts in rows — and
return one value per row, computed from a single sort of the scores (see :mod:`validate.metrics.bootstrap`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from validate.metrics.checks import as_labels, as_scores, as_weights


@dataclass(frozen=True)
class ScoreOrder:
    """Scores sorted once: ``order`` sorts ascending (None: the cases are in ascending order already);
    ``starts`` are the first index of each run of tied scores in sorted order. Reused by every weighted
    rank statistic of a bootstrap."""

    order: np.ndarray | None
    starts: np.ndarray

    @classmethod
    def of(cls, score: np.ndarray) -> ScoreOrder:
        order = np.argsort(score, kind="stable")
        s = score[order]
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
        return cls(order, starts)


def _placements(y: np.ndarray, s: np.ndarray):
    """DeLong placements: for each case (y=1) the share of controls scored lower (ties count 1/2),
    for each control the share of cases scored higher (ties 1/2)."""
    cases, controls = s[y == 1], s[y == 0]
    sc = np.sort(controls)
    sx = np.sort(cases)
    lo = np.searchsorted(sc, cases, side="left")
    hi = np.searchsorted(sc, cases, side="right")
    v10 = (lo + 0.5 * (hi - lo)) / controls.size
    lo = np.searchsorted(sx, controls, side="left")
    hi = np.searchsorted(sx, controls, side="right")
    v01 = (cases.size - hi + 0.5 * (hi - lo)) / cases.size
    return v10, v01


def _placements_unpaired(y: np.ndarray, s: np.ndarray):
    """:func:`_placements` with each group's placements in ascending score order instead of case order
    (what an unpaired statistic — a mean, a variance — needs): the groups' scores are sorted in place
    (no sorted copies; none at all when ``s`` is sorted already), and each placement is
    (lo + hi) / 2 / size, which equals lo + (hi − lo) / 2 over size exactly (integers and halves)."""
    cases, controls = s[y == 1], s[y == 0]
    if not bool(np.all(s[1:] >= s[:-1])):
        cases.sort()
        controls.sort()
    v10 = _half_ranks(controls, cases)
    v10 /= controls.size
    v01 = _half_ranks(cases, controls)
    np.subtract(cases.size, v01, out=v01)
    v01 /= cases.size
    return v10, v01


def _half_ranks(ref: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Per query value: # ref values below it + # equal to it / 2 (``ref`` sorted), i.e. (lo + hi) / 2
    of its two insertion points: exact (integers and halves)."""
    count = np.searchsorted(ref, query, side="left")
    count += np.searchsorted(ref, query, side="right")
    out = count.astype(np.float64)
    del count
    out *= 0.5
    return out


def auroc(y, score) -> float:
    """Area under the ROC curve: P(score of a random case > score of a random control) + 1/2 P(tie).

    Mann–Whitney form (Hanley & McNeil 1982), equal to ``sklearn.metrics.roc_auc_score`` and to pROC's
    ``auc`` with ``direction = "<"``. Higher scores mean the positive class. NaN if one class is absent.
    """
    y = as_labels(y)
    s = as_scores(score, y.size, "score")
    if y.min(initial=1) == y.max(initial=0):
        return float("nan")
    v10, _ = _placements(y, s)
    return float(v10.mean())


def delong_ci(y, score, *, level: float = 0.95) -> dict:
    """AUROC with DeLong's standard error and normal interval, as pROC ``ci.auc(method = "delong")``.

    DeLong, DeLong & Clarke-Pearson 1988; placements as Sun & Xu 2014. Variance
    S = var(V10)/m + var(V01)/n (sample variances, denominators m-1, n-1); interval
    auc ± z_{(1+level)/2} sqrt(S), clipped to [0, 1] as pROC does. Needs at least two cases and two
    controls (else the interval is NaN).
    Returns ``{"estimate", "ci_low", "ci_high", "se"}``.
    """
    y = as_labels(y)
    s = as_scores(score, y.size, "score")
    m, n = int(y.sum()), int(y.size - y.sum())
    if m == 0 or n == 0:
        nan = float("nan")
        return {"estimate": nan, "ci_low": nan, "ci_high": nan, "se": nan}
    v10, v01 = _placements_unpaired(y, s)
    theta = float(v10.mean())
    if m < 2 or n < 2:
        return {"estimate": theta, "ci_low": float("nan"), "ci_high": float("nan"), "se": float("nan")}
    var = np.sum((v10 - theta) ** 2) / (m - 1) / m + np.sum((v01 - theta) ** 2) / (n - 1) / n
    se = float(np.sqrt(var))
    z = norm.ppf(0.5 + level / 2)
    lo, hi = theta - z * se, theta + z * se
    return {
        "estimate": theta,
        "ci_low": float(min(max(lo, 0.0), 1.0)),
        "ci_high": float(min(max(hi, 0.0), 1.0)),
        "se": se,
    }


def delong_paired_test(y, score1, score2, *, level: float = 0.95) -> dict:
    """Paired DeLong test of two AUROCs on the same cases, as pROC ``roc.test(method = "delong", paired = TRUE)``.

    z = (auc1 - auc2) / sqrt(L S L'), L = (1, -1), S the 2x2 DeLong covariance
    (DeLong et al. 1988); two-sided p = 2 Φ(-|z|). The interval of the difference is
    (auc1 - auc2) ± z_{(1+level)/2} sqrt(L S L') (pROC's ``conf.int``).
    Returns ``{"auc1", "auc2", "difference", "statistic", "p_value", "ci_low", "ci_high"}``.
    """
    y = as_labels(y)
    s1 = as_scores(score1, y.size, "score1")
    s2 = as_scores(score2, y.size, "score2")
    m, n = int(y.sum()), int(y.size - y.sum())
    if m < 2 or n < 2:
        raise ValueError("the paired DeLong test needs at least two cases and two controls")
    a10, a01 = _placements(y, s1)
    b10, b01 = _placements(y, s2)
    t1, t2 = a10.mean(), b10.mean()
    sx = np.cov(np.vstack([a10, b10]))  # denominators m - 1, as pROC
    sy = np.cov(np.vstack([a01, b01]))
    s = sx / m + sy / n
    var = s[0, 0] + s[1, 1] - 2 * s[0, 1]
    diff = float(t1 - t2)
    sig = float(np.sqrt(max(var, 0.0)))
    if sig == 0:
        zstat = 0.0 if diff == 0 else float(np.sign(diff) * np.inf)
    else:
        zstat = diff / sig
    zq = norm.ppf(0.5 + level / 2)
    return {
        "auc1": float(t1),
        "auc2": float(t2),
        "difference": diff,
        "statistic": float(zstat),
        "p_value": float(2 * norm.sf(abs(zstat))),
        "ci_low": diff - zq * sig,
        "ci_high": diff + zq * sig,
    }


def _grouped(w: np.ndarray, y: np.ndarray, so: ScoreOrder):
    """Weighted positives and negatives per run of tied scores (ascending), shape (r, groups)."""
    ws = w if so.order is None else w[:, so.order]
    ys = y if so.order is None else y[so.order]
    pos = np.add.reduceat(ws * ys, so.starts, axis=1)
    neg = np.add.reduceat(ws * (1.0 - ys), so.starts, axis=1)
    return pos, neg


def weighted_auroc(y: np.ndarray, score: np.ndarray, w=None, *, order: ScoreOrder | None = None) -> np.ndarray:
    """AUROC with case weights (frequency weights: a count ``k`` is the case repeated ``k`` times).

    ``w`` of shape (n,) or (r, n); returns shape () or (r,). With integer counts it equals
    :func:`auroc` on the expanded sample. Rows with no positive or no negative weight give NaN.
    Arrays are assumed checked (internal to the bootstrap).
    """
    w = np.asarray(as_weights(w, y.size))
    squeeze = w.ndim == 1
    w2 = np.atleast_2d(w)
    so = order or ScoreOrder.of(score)
    pos, neg = _grouped(w2, y, so)
    below = np.cumsum(neg, axis=1) - neg
    num = np.sum(pos * (below + 0.5 * neg), axis=1)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return out[0] if squeeze else out


def auprc(y, score) -> float:
    """Area under the precision-recall curve as average precision, AP = Σ_k (R_k − R_{k−1}) P_k over
    distinct score thresholds (step-wise, no interpolation), equal to
    ``sklearn.metrics.average_precision_score``. NaN without positives."""
    y = as_labels(y)
    s = as_scores(score, y.size, "score")
    return float(weighted_auprc(y, s))


def weighted_auprc(y: np.ndarray, score: np.ndarray, w=None, *, order: ScoreOrder | None = None) -> np.ndarray:
    """Average precision with frequency weights (see :func:`weighted_auroc` for shapes); equals
    sklearn's ``average_precision_score(..., sample_weight=w)``."""
    w = np.asarray(as_weights(w, y.size))
    squeeze = w.ndim == 1
    w2 = np.atleast_2d(w)
    so = order or ScoreOrder.of(score)
    pos, neg = _grouped(w2, y, so)
    # thresholds descend: cumulate from the highest score group
    tp = np.cumsum(pos[:, ::-1], axis=1)
    fp = np.cumsum(neg[:, ::-1], axis=1)
    total = tp[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / np.where(tp + fp > 0, tp + fp, 1.0), 0.0)
        out = np.sum(pos[:, ::-1] * precision, axis=1) / total
    out = np.where(total > 0, out, np.nan)
    return out[0] if squeeze else out
