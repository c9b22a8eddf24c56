"""The functions a registered metric names (see :mod:`validate.metrics.registry`), apart from the
cases they read (:mod:`validate.metrics.replicates`):

- *replicate kernels* ``f(draw) -> (k,)`` (``f(draw, i)`` for operating-point metrics at threshold
  ``i``) of the binary metric blocks, reading the sums a :class:`~validate.metrics.replicates.Draw`
  shares between metrics;
- *weighted functions* ``f(cases, w) -> (k,)`` on
  :class:`~validate.metrics.replicates.WeightedCases` for paired comparisons (subgroup gaps,
  recalibration designs); ``w=None`` is the unweighted point estimate.

They live apart from the cases so that the registry can name them while the cases iterate over the
registry, with no import cycle between the two.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from validate.metrics.replicates import Draw, WeightedCases


# ---- replicate kernels of the binary metrics: f(draw) -> (k,), operating points f(draw, i) ------------


def _divide(a, b):
    with np.errstate(invalid="ignore", divide="ignore"):
        return a / b


def auroc_kernel(d: Draw) -> np.ndarray:
    from validate.metrics.discrimination import weighted_auroc

    c = d.cases
    if c.ties:
        return weighted_auroc(c.y, c.score, d.ws, order=c.score_order)
    return _auroc_untied(c.positives, d.ws)


def auprc_kernel(d: Draw) -> np.ndarray:
    from validate.metrics.discrimination import weighted_auprc

    c = d.cases
    if c.ties:
        return weighted_auprc(c.y, c.score, d.ws, order=c.score_order)
    return _auprc_untied(c.positives, d.ws)


def brier_kernel(d: Draw) -> np.ndarray:
    return d.lin[:, 0] / d.total


def scaled_brier_kernel(d: Draw) -> np.ndarray:
    brier = d.lin[:, 0] / d.total
    prev = d.lin[:, 2] / d.total
    ref = prev * (1 - prev)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ref > 0, 1 - brier / np.where(ref > 0, ref, 1.0), np.nan)


def log_loss_kernel(d: Draw) -> np.ndarray:
    return d.lin[:, 1] / d.total


def oe_ratio_kernel(d: Draw) -> np.ndarray:
    """Observed / expected events Σ w y / Σ w p of each replicate (NaN where no risk is predicted)."""
    expected = d.ws @ d.cases.p
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(expected > 0, d.events / np.where(expected > 0, expected, 1.0), np.nan)


def oe_ratio_weighted(c: WeightedCases, w) -> np.ndarray:
    """Σ w y / Σ w p on the cases in their own order (``w=None``: the plain ratio)."""
    ws = c.ones(w)
    expected = ws @ np.asarray(c.p, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(expected > 0, (ws @ c.y_float) / np.where(expected > 0, expected, 1.0), np.nan)


def ece_kernel(d: Draw) -> np.ndarray:
    return np.abs(d.bin_gaps).sum(axis=1) / d.total


def mce_kernel(d: Draw) -> np.ndarray:
    cnt = d.bin_counts
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = np.where(cnt > 0, np.abs(d.bin_gaps) / np.where(cnt > 0, cnt, 1.0), -np.inf)
    return gap.max(axis=1)


def ece_adaptive_kernel(d: Draw) -> np.ndarray:
    from validate.metrics.calibration import ece_adaptive_sorted

    c = d.cases
    return ece_adaptive_sorted(c.y_float, c.p, d.ws, c.bins)


def smooth_kernel(name: str):
    """The kernel of one of the smoother errors (eavg, e50, e90, emax, ici): one shared fit per replicate."""

    def kernel(d: Draw) -> np.ndarray:
        return d.smooth()[name]

    kernel.__name__ = f"{name}_kernel"
    return kernel


def sensitivity_kernel(d: Draw, i: int) -> np.ndarray:
    tp, fp, tn, fn = d.confusion(i)
    return _divide(tp, tp + fn)


def specificity_kernel(d: Draw, i: int) -> np.ndarray:
    tp, fp, tn, fn = d.confusion(i)
    return _divide(tn, tn + fp)


def ppv_kernel(d: Draw, i: int) -> np.ndarray:
    tp, fp, tn, fn = d.confusion(i)
    return _divide(tp, tp + fp)


def npv_kernel(d: Draw, i: int) -> np.ndarray:
    tp, fp, tn, fn = d.confusion(i)
    return _divide(tn, tn + fn)


def net_benefit_kernel(d: Draw, i: int) -> np.ndarray:
    from validate.metrics.net_benefit import net_benefit

    tp, fp, events, n = d.decision(i)
    return net_benefit(tp, fp, n, d.decision_thresholds[i])


def treat_all_kernel(d: Draw, i: int) -> np.ndarray:
    from validate.metrics.net_benefit import treat_all

    tp, fp, events, n = d.decision(i)
    return treat_all(events, n, d.decision_thresholds[i])


def net_benefit_vs_treat_all_kernel(d: Draw, i: int) -> np.ndarray:
    return net_benefit_kernel(d, i) - treat_all_kernel(d, i)


def interventions_avoided_kernel(d: Draw, i: int) -> np.ndarray:
    from validate.metrics.net_benefit import interventions_avoided

    return interventions_avoided(net_benefit_kernel(d, i), treat_all_kernel(d, i), d.decision_thresholds[i])


def standardized_net_benefit_kernel(d: Draw, i: int) -> np.ndarray:
    from validate.metrics.net_benefit import standardized_net_benefit

    tp, fp, events, n = d.decision(i)
    return standardized_net_benefit(net_benefit_kernel(d, i), events, n)


# ---- weighted functions f(cases, w) -> (k,) (w None: the point estimate) ---------------------------


def auroc_weighted(c: WeightedCases, w) -> np.ndarray:
    from validate.metrics.discrimination import weighted_auroc

    return weighted_auroc(c.y, c.score, c.ones(w), order=c.score_order)


def auprc_weighted(c: WeightedCases, w) -> np.ndarray:
    from validate.metrics.discrimination import weighted_auprc

    return weighted_auprc(c.y, c.score, c.ones(w), order=c.score_order)


def brier_weighted(c: WeightedCases, w):
    from validate.metrics.scores import brier

    return brier(c.y_float, c.p, sample_weight=w)


def scaled_brier_weighted(c: WeightedCases, w):
    from validate.metrics.scores import scaled_brier

    return scaled_brier(c.y_float, c.p, sample_weight=w)


def log_loss_weighted(c: WeightedCases, w):
    from validate.metrics.scores import log_loss

    return log_loss(c.y_float, c.p, sample_weight=w)


def ece_weighted(c: WeightedCases, w):
    from validate.metrics.calibration import weighted_ece

    out = weighted_ece(c.y_float, c.p, c.ones(w), bins=c.bins, idx=c.bin_idx)
    return float(out[0]) if w is None else out


def ece_adaptive_weighted(c: WeightedCases, w):
    from validate.metrics.calibration import weighted_ece_adaptive

    return weighted_ece_adaptive(c.y_float, c.p, c.ones(w), bins=c.bins, order=c.order)


def operating_weighted(name: str):
    """The weighted function of one operating-point metric at the cases' threshold."""

    def weighted(c: WeightedCases, w):
        from validate.metrics.operating import weighted_operating_point

        return weighted_operating_point(c.y_float, c.p, c.threshold, c.ones(w))[name]

    weighted.__name__ = f"{name}_weighted"
    return weighted


def top_label_ece_weighted(c: WeightedCases, w):
    from validate.metrics.multiclass import top_label_ece

    return top_label_ece(c.y, c.p, bins=c.bins, sample_weight=w)


def multiclass_brier_weighted(c: WeightedCases, w):
    from validate.metrics.multiclass import multiclass_brier

    return multiclass_brier(c.y, c.p, sample_weight=w)


def multiclass_log_loss_weighted(c: WeightedCases, w):
    from validate.metrics.multiclass import multiclass_log_loss

    return multiclass_log_loss(c.y, c.p, sample_weight=w)


def _auroc_untied(positives: np.ndarray, ws: np.ndarray) -> np.ndarray:
    """AUROC of replicate weights (k, n) over cases sorted by a score without ties (Mann–Whitney, as
    :func:`~validate.metrics.discrimination.weighted_auroc`): Σ_events w_i · (negative weight scored
    below case i) / (P · N). ``positives``: ascending positions of the events.

    Only events carry terms: the weight below each event is the weight before the first event plus
    the segment sums between consecutive events (one reduceat pass), less the events' own weight
    below; arrays are (k, events), not (k, n). With count weights every sum is an exact integer, so
    the value equals the grouped computation's exactly."""
    k = ws.shape[0]
    if positives.size == 0:
        return np.full(k, np.nan)
    seg = np.add.reduceat(ws, positives, axis=1)  # weight in [event m, event m+1)
    total = ws.sum(axis=1)
    first = ws[:, : positives[0]].sum(axis=1)
    below = np.cumsum(seg, axis=1)  # weight before event m+1 (less the weight before event 0)
    below -= seg
    below += first[:, None]  # weight scored below event m, events included
    wp = np.take(ws, positives, axis=1)
    pos_below = np.cumsum(wp, axis=1)
    pos = pos_below[:, -1].copy()
    pos_below -= wp
    below -= pos_below  # negative weight scored below event m
    num = np.einsum("ij,ij->i", wp, below)
    den = pos * (total - pos)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _auprc_untied(positives: np.ndarray, ws: np.ndarray) -> np.ndarray:
    """Average precision of replicate weights (k, n) over cases sorted by a score without ties:
    Σ_i w_i y_i · precision at case i / Σ_i w_i y_i, precision = TP/(TP+FP) counting cases scored at
    least as high. ``positives``: ascending positions of the events.

    Only events carry terms, so the weight called at each event is a segment sum between consecutive
    events (one reduceat pass over the weights) cumulated from the top: no (k, n) cumulative sums."""
    k = ws.shape[0]
    if positives.size == 0:
        return np.full(k, np.nan)
    # suffix sums as total − exclusive prefix: forward cumulative sums over C-contiguous rows (exact for
    # count weights, whose partial sums are integers); in place, the arrays are (k, events)
    called = np.add.reduceat(ws, positives, axis=1)  # weight in [event m, event m+1)
    cum = np.cumsum(called, axis=1)
    called -= cum
    called += cum[:, -1:]  # weight scored at least as high as event m
    wp = np.take(ws, positives, axis=1)
    tp = np.cumsum(wp, axis=1)
    total = tp[:, -1].copy()
    tp *= -1.0
    tp += total[:, None]
    tp += wp  # events scored at least as high as event m
    # called = 0 only where tp = 0 (and w = 0): precision 0 there, as defined
    np.maximum(called, np.finfo(np.float64).tiny, out=called)
    precision = np.divide(tp, called, out=tp)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.einsum("ij,ij->i", wp, precision) / total
    return np.where(total > 0, out, np.nan)
