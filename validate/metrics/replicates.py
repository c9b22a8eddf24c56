"""The two ways a registered metric is evaluated besides its point estimate (see
:mod:`validate.metrics.registry`):

- :class:`BinaryCases` / :class:`Draw`: one block's cases sorted once by their ranking score, and one chunk of bootstrap
  replicate weights ``ws`` (k, n) over them. Quantities many metrics share (the weighted sums of squared
  error, log-likelihood, events and per-bin gaps, the called and true positives at each threshold, the
  smoothers) are computed once per chunk and cached on the :class:`Draw`; each metric's *replicate
  kernel* ``f(draw) -> (k,)`` (``f(draw, i)`` for operating-point metrics at threshold ``i``) reads them.
- :class:`WeightedCases`: one set of cases in their own order, for the *weighted* functions
  ``f(cases, w) -> (k,)`` that paired comparisons use (subgroup gaps, recalibration designs), where the
  weights are masked or the probabilities change between calls. ``w=None`` is the unweighted point
  estimate.

Both compute the same definitions (DESIGN.md, Metrics JSON); the kernels are the fast path of the
metric blocks, the weighted functions the general one.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from validate.metrics.calibration import bin_index
from validate.metrics.checks import clip_probability
from validate.metrics.discrimination import ScoreOrder
from validate.metrics.smooth import _ici, _interp_ties_mean, _lowess_errors, clowess, loess_smooth

# below this many cases the smoothers are cheaper on the expanded sample than from segment moments
SMOOTH_ENGINE_MIN_N = 1000
LOWESS_METRICS = ("eavg", "e50", "e90", "emax")


class BinaryCases:
    """One block's cases sorted once by their ranking score; weighted metrics of replicate weights in
    that order.

    ``score`` (default p) is any score monotone in p — the logits when the model gave them: AUROC and
    AUPRC rank it and its ties are the ties of the ranking. sigmoid(logit) is 1.0 for every logit above
    ~36.7 in float64, so ranking p would tie cases the model told apart. p is non-decreasing in this
    order too, as the calibration metrics need.

    ``y``/``p``/``score`` as given are kept (``y_in``, ``p_in``, ``score_in``) for the point estimates
    that are computed on the cases in their own order (the smoothers, the Wald and DeLong fits);
    ``logits`` (when given) feed the calibration intercept and slope instead of logit(p)."""

    def __init__(self, y, p, bins, logits=None, score=None):
        from validate.metrics.checks import logit as to_logit

        self.y_in, self.p_in = y, p
        self.score_in = p if score is None else np.asarray(score, dtype=np.float64)
        self.logits = to_logit(p) if logits is None else np.asarray(logits, dtype=np.float64)
        self.order = np.argsort(self.score_in, kind="stable")
        self.y = y[self.order]
        self.p = p[self.order]
        self.score = self.score_in[self.order]
        self.n = y.size
        self.bins = bins
        s = self.score
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
        self.score_order = ScoreOrder(np.arange(self.n), starts)
        self.ties = starts.size < self.n
        idx = bin_index(self.p, bins)
        # bin indicator: per-bin sums of all replicates are one matrix product
        self.bin_matrix = np.zeros((self.n, bins))
        self.bin_matrix[np.arange(self.n), idx] = 1.0
        q = clip_probability(self.p)
        nll = -(self.y * np.log(q) + (1 - self.y) * np.log1p(-q))
        # columns: squared error, negative log-likelihood, y, per-bin (y − p), per-bin count
        self.linear = np.column_stack([(self.p - self.y) ** 2, nll, self.y,
                                       self.bin_matrix * (self.y - self.p)[:, None], self.bin_matrix])
        self.positives = np.flatnonzero(self.y)
        self.y_float = self.y.astype(np.float64)
        self._with_calls: dict = {}
        self._lowess: Optional[dict] = None
        self._sorted_cases = None
        self._weighted: Optional[WeightedCases] = None

    def linear_with_calls(self, thresholds) -> np.ndarray:
        """:attr:`linear` followed, per threshold t, by the columns [p >= t, y·(p >= t)]: one matrix
        product then gives every replicate's called-positive weight and true positives."""
        key = tuple(float(t) for t in thresholds)
        mat = self._with_calls.get(key)
        if mat is None:
            cols = [self.linear]
            for t in key:
                call = (self.p >= t).astype(np.float64)
                cols.append(np.column_stack([call, self.y * call]))
            mat = np.ascontiguousarray(np.column_stack(cols)) if key else self.linear
            self._with_calls[key] = mat
        return mat

    def lowess_point(self) -> dict:
        """Point estimates of the lowess errors (eavg, e50, e90, emax) and the loess ICI, on the cases
        in their own order (one smoother fit each, shared by the five metrics)."""
        if self._lowess is None:
            self._lowess = dict(_lowess_errors(self.y_in, self.p_in))
            self._lowess["ici"] = _ici(self.y_in, self.p_in)
        return self._lowess

    def replicate(self, ws: np.ndarray, thresholds, want_smooth: bool, auroc: bool = False) -> dict:
        """Every registered binary metric with a replicate kernel, for replicate weights ``ws`` (k, n)
        given in sorted order: ``{name: (k,)}``, operating-point metrics as ``name@threshold``. AUROC
        (a DeLong interval in blocks) only when ``auroc``; the smoothers only when ``want_smooth``."""
        from validate.metrics.registry import metrics_for

        draw = Draw(self, ws, thresholds)
        out = {}
        for m in metrics_for("binary"):
            if (m.interval == "delong" and not auroc) or (m.smooth and not want_smooth):
                continue
            if m.replicate is not None:
                if m.at_threshold:
                    for i, t in enumerate(draw.thresholds):
                        out[f"{m.name}@{t!r}"] = m.replicate(draw, i)
                else:
                    out[m.name] = m.replicate(draw)
            elif m.weighted is not None and m.interval == "bootstrap" and not m.at_threshold:
                # no kernel declared: the general weighted function on the sorted cases
                out[m.name] = np.asarray(m.weighted(self.weighted_cases, draw.ws), dtype=np.float64).reshape(-1)
        return out

    @property
    def weighted_cases(self) -> WeightedCases:
        """These cases (sorted) for a metric's weighted function, its fallback when it has no kernel."""
        if self._weighted is None:
            self._weighted = WeightedCases(self.y, self.p, bins=self.bins, score=self.score)
        return self._weighted

    def smooth_replicates_fast(self, ws: np.ndarray) -> dict:
        """As :meth:`smooth_replicate` for every row of ``ws``, from segment moments of the counts
        (no expanded samples): see :mod:`validate.metrics.smooth_bootstrap`."""
        from validate.metrics.smooth_bootstrap import SortedCases, smooth_errors

        if self._sorted_cases is None:
            self._sorted_cases = SortedCases(self.p, self.y)
        return smooth_errors(self._sorted_cases, ws)

    def smooth_replicate(self, w: np.ndarray) -> dict:
        """Lowess and loess errors of the replicate sample (cases repeated by their counts, kept in sorted
        order): these smoothers depend on the multiset, so they are evaluated on it directly."""
        rep = np.repeat(np.arange(self.n), w.astype(np.int64))
        xs, ys = self.p[rep], self.y[rep]
        if xs.size < 3 or xs[0] == xs[-1]:
            e = np.full(xs.size, abs(xs[0] - ys.mean())) if xs.size else np.full(1, np.nan)
            ici = float(e.mean())
        else:
            fit = clowess(xs, ys)
            e = np.abs(xs - _interp_ties_mean(xs, fit, xs))
            try:
                ici = float(np.mean(np.abs(xs - loess_smooth(xs, ys))))
            except ValueError:
                ici = float("nan")
        return {"eavg": e.mean(), "e50": np.quantile(e, 0.5), "e90": np.quantile(e, 0.9), "emax": e.max(),
                "ici": ici}


class Draw:
    """One chunk of replicate weights ``ws`` (k, n), in :class:`BinaryCases` sorted order, with the
    sums many metrics share computed once (lazily) for the chunk."""

    def __init__(self, cases: BinaryCases, ws: np.ndarray, thresholds):
        self.cases = cases
        self.ws = np.ascontiguousarray(ws, dtype=np.float64)
        self.thresholds = list(thresholds)
        self.total = self.ws.sum(axis=1)
        self._lin: Optional[np.ndarray] = None
        self._smooth: Optional[dict] = None

    @property
    def lin(self) -> np.ndarray:
        """``ws @ linear_with_calls``: squared error, NLL, events, per-bin (y − p), per-bin counts,
        then [called, true positives] per threshold, summed per replicate."""
        if self._lin is None:
            self._lin = self.ws @ self.cases.linear_with_calls(self.thresholds)
        return self._lin

    @property
    def events(self) -> np.ndarray:
        return self.lin[:, 2]

    @property
    def bin_gaps(self) -> np.ndarray:
        """Per replicate and bin: Σ w (y − p)."""
        B = self.cases.bins
        return self.lin[:, 3:3 + B]

    @property
    def bin_counts(self) -> np.ndarray:
        B = self.cases.bins
        return self.lin[:, 3 + B:3 + 2 * B]

    def confusion(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(TP, FP, TN, FN) at threshold ``i``: with count weights every sum is an exact integer, so
        FN, FP, TN by difference equal their direct sums."""
        B = self.cases.bins
        called = self.lin[:, 3 + 2 * B + 2 * i]
        tp = self.lin[:, 4 + 2 * B + 2 * i]
        fp = called - tp
        tn = (self.total - self.events) - fp
        fn = self.events - tp
        return tp, fp, tn, fn

    def smooth(self) -> dict:
        """Lowess errors and ICI of every replicate (one smoother fit per replicate, shared)."""
        if self._smooth is None:
            c, ws = self.cases, self.ws
            if c.n >= SMOOTH_ENGINE_MIN_N:
                self._smooth = c.smooth_replicates_fast(ws)
            else:
                sm = {m: np.empty(ws.shape[0]) for m in (*LOWESS_METRICS, "ici")}
                for r in range(ws.shape[0]):
                    for m, v in c.smooth_replicate(ws[r]).items():
                        sm[m][r] = v
                self._smooth = sm
        return self._smooth


class WeightedCases:
    """One set of cases in their own order for the weighted functions ``f(cases, w)``: ``y`` labels,
    ``p`` probabilities (or the probability matrix), ``bins`` for the binned metrics, ``threshold`` for
    the operating-point metrics, ``score`` (binary; default p) the scores the ranking metrics (AUROC,
    AUPRC) rank: the logits when the model gave them, which sigmoid does not saturate. The sort orders
    and bin indices are computed once, on first use."""

    def __init__(self, y, p, *, bins: int = 15, threshold: float = 0.5, score=None):
        self.y = y
        self.p = p
        self.score = p if score is None else score
        self.bins = bins
        self.threshold = threshold
        self._cache: dict = {}

    def _cached(self, key: str, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def y_float(self) -> np.ndarray:
        return self._cached("y_float", lambda: self.y.astype(np.float64))

    @property
    def score_order(self) -> ScoreOrder:
        return self._cached("score_order", lambda: ScoreOrder.of(self.score))

    @property
    def bin_idx(self) -> np.ndarray:
        return self._cached("bin_idx", lambda: bin_index(self.p, self.bins))

    @property
    def order(self) -> np.ndarray:
        return self._cached("order", lambda: np.argsort(self.p, kind="stable"))

    def ones(self, w):
        """``w``, or unit weights (1, n) for the point estimate when ``w`` is None."""
        return np.ones((1, self.y.shape[0])) if w is None else w


# ---- replicate kernels of the binary metrics: f(draw) -> (k,), operating points f(draw, i) ------------

def _divide(a, b):
    with np.errstate(invalid="ignore", divide="ignore"):
        return a / b


def auroc_kernel(d: Draw) -> np.ndarray:
    from validate.metrics.discrimination import weighted_auroc

    c = d.cases
    return weighted_auroc(c.y, c.score, d.ws, order=c.score_order)


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
    called = np.add.reduceat(ws, positives, axis=1)       # weight in [event m, event m+1)
    cum = np.cumsum(called, axis=1)
    called -= cum
    called += cum[:, -1:]                                  # weight scored at least as high as event m
    wp = np.take(ws, positives, axis=1)
    tp = np.cumsum(wp, axis=1)
    total = tp[:, -1].copy()
    tp *= -1.0
    tp += total[:, None]
    tp += wp                                               # events scored at least as high as event m
    # called = 0 only where tp = 0 (and w = 0): precision 0 there, as defined
    np.maximum(called, np.finfo(np.float64).tiny, out=called)
    precision = np.divide(tp, called, out=tp)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.einsum("ij,ij->i", wp, precision) / total
    return np.where(total > 0, out, np.nan)
