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
metric blocks, the weighted functions the general one. The kernels and weighted functions themselves
live in :mod:`validate.metrics.kernels`, which the registry names: these classes iterate over the
registry, and the registry does not import them.
"""

from __future__ import annotations

import numpy as np

from validate.metrics.calibration import bin_index
from validate.metrics.checks import clip_probability
from validate.metrics.discrimination import ScoreOrder
from validate.metrics.registry import metrics_for
from validate.metrics.smooth import _ici, _interp_ties_mean, _lowess_errors, clowess, loess_smooth

# below this many cases the smoothers are cheaper on the expanded sample than from segment moments
SMOOTH_ENGINE_MIN_N = 1000
# from this many cases a block's smoother point estimates come from the moment engine too (unit counts):
# the direct lowess costs ~5 s per million cases (200 fits over 2/3 of the cases each), the engine ~0.2 s
SMOOTH_POINT_ENGINE_MIN_N = 100_000
LOWESS_METRICS = ("eavg", "e50", "e90", "emax")
# cases x replicates per batch of the segment-moment smoothers: their expanded-sample positions take 8
# bytes per case and replicate, and one replicate at a time its errors ~36 bytes a case (measured by
# tracemalloc at 1M cases: 68 bytes a case for a part of 4 replicates), so a chunk of replicate weights
# (:data:`~validate.metrics.bootstrap.CHUNK_CELLS`, 4 times as many) is smoothed in parts to keep them
# off the block's peak (each replicate's smooths are its own; only a BLAS sum order may change, ~1e-15)
SMOOTH_CELLS = 1 << 22


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
        # one sorted copy serves both when the ranking score is p itself
        self.score = self.p if self.score_in is p else self.score_in[self.order]
        self.n = y.size
        self.bins = bins
        s = self.score
        tied = s[1:] == s[:-1]
        self.ties = bool(tied.any())
        # the cases are in sorted order already: no permutation to keep (ScoreOrder.order None); the runs
        # of tied scores only where there are ties (without, the kernels need none: n positions saved)
        self.score_order = ScoreOrder(None, np.flatnonzero(np.r_[True, ~tied])) if self.ties else None
        del tied
        self.positives = np.flatnonzero(self.y)
        # labels are float64 0/1 (as_labels): the float view is the labels themselves, not a copy
        self.y_float = np.asarray(self.y, dtype=np.float64)
        self.resid = self.y_float - self.p
        # p non-decreasing in score order (a ranking score monotone in p, as the contract asks): each
        # calibration bin is then one run of cases and each call p >= t a suffix, so every per-bin and
        # per-threshold replicate sum is a sum over a range (no per-case matrix). Otherwise (a score that
        # breaks the contract) the per-case matrix of :meth:`linear_with_calls` is used instead.
        self.monotone = bool(np.all(self.p[1:] >= self.p[:-1]))
        self.bin_edges = _run_edges(self.bin_idx, bins) if self.monotone else None
        self._loss: np.ndarray | None = None
        self._with_calls: dict = {}
        self._lowess: dict | None = None
        self._sorted_cases = None
        self._weighted: WeightedCases | None = None

    @property
    def bin_idx(self) -> np.ndarray:
        """The calibration bin of each sorted case (:func:`bin_index`), computed on each use, not kept."""
        return bin_index(self.p, self.bins)

    @property
    def loss_terms(self) -> np.ndarray:
        """(n, 2): squared error (p − y)² and negative log-likelihood of each sorted case, kept for
        the replicate sums (one matrix product per chunk gives both)."""
        if self._loss is None:
            q = clip_probability(self.p)
            m = np.empty((self.n, 2))
            m[:, 0] = (self.p - self.y) ** 2
            m[:, 1] = -(self.y * np.log(q) + (1 - self.y) * np.log1p(-q))
            self._loss = m
        return self._loss

    def first_called(self, t: float) -> int:
        """The first sorted case with p >= t (monotone cases only): the called cases are a suffix."""
        return int(np.searchsorted(self.p, t, side="left"))

    def _linear_columns(self, thresholds=()) -> np.ndarray:
        """Columns: squared error, negative log-likelihood, y, per-bin (y − p), per-bin count, then
        [p >= t, y·(p >= t)] per threshold t. Each column is written straight into the one matrix
        (the same elementwise products a column stack of the pieces holds) so that building it never
        holds more than the matrix itself and one column."""
        n, B = self.n, self.bins
        out = np.empty((n, 3 + 2 * B + 2 * len(thresholds)))
        q = clip_probability(self.p)
        out[:, 0] = (self.p - self.y) ** 2
        out[:, 1] = -(self.y * np.log(q) + (1 - self.y) * np.log1p(-q))
        out[:, 2] = self.y
        resid = self.y - self.p
        idx = self.bin_idx
        for b in range(B):
            in_bin = idx == b
            # the indicator times (y − p), as the bin matrix's product gives it (0.0 or −0.0 outside)
            np.multiply(in_bin, resid, out=out[:, 3 + b])
            out[:, 3 + B + b] = in_bin
        for i, t in enumerate(thresholds):
            call = out[:, 3 + 2 * B + 2 * i]
            call[:] = self.p >= t
            np.multiply(self.y, call, out=out[:, 4 + 2 * B + 2 * i])
        return out

    @property
    def linear(self) -> np.ndarray:
        """Squared error, negative log-likelihood, y, per-bin (y − p), per-bin count: one row per case."""
        return self.linear_with_calls(())

    def linear_with_calls(self, thresholds) -> np.ndarray:
        """:attr:`linear` followed, per threshold t, by the columns [p >= t, y·(p >= t)]: one matrix
        product then gives every replicate's called-positive weight and true positives. Cached per set
        of thresholds (a block asks for one). The replicate sums read it only when p is not monotone in
        the score order (:attr:`monotone`): 8 bytes a case per column, 296 at 15 bins and 2 thresholds."""
        key = tuple(float(t) for t in thresholds)
        mat = self._with_calls.get(key)
        if mat is None:
            mat = self._with_calls[key] = self._linear_columns(key)
        return mat

    def decision_matrix(self, thresholds) -> np.ndarray:
        """Per decision threshold t the columns [p >= t, y·(p >= t)] (treated, treated events), after a
        first column y: one matrix product gives every replicate's events and, per threshold, its
        treated cases and true positives (:mod:`validate.metrics.net_benefit`). Read only when p is not
        monotone in the score order (else suffix sums, :meth:`Draw.decision`)."""
        key = ("decision", *(float(t) for t in thresholds))
        mat = self._with_calls.get(key)
        if mat is None:
            cols = [self.y_float[:, None]]
            for t in key[1:]:
                call = (self.p >= t).astype(np.float64)
                cols.append(np.column_stack([call, self.y * call]))
            mat = np.ascontiguousarray(np.column_stack(cols))
            self._with_calls[key] = mat
        return mat

    def lowess_point(self) -> dict:
        """Point estimates of the lowess errors (eavg, e50, e90, emax) and the loess ICI (one smoother
        fit each, shared by the five metrics). Below :data:`SMOOTH_POINT_ENGINE_MIN_N` cases R's direct
        algorithms on the cases (:func:`~validate.metrics.smooth.clowess`, ``loess_smooth``); from there
        on the moment engine with every count 1 — the sample itself as a replicate, the same smooths up
        to rounding (~1e-14, tests/test_smooth_scale.py) — whose cost is a few passes over the cases
        where the direct lowess sums ~200 windows of 2/3 of them."""
        if self._lowess is None:
            if self.n >= SMOOTH_POINT_ENGINE_MIN_N:
                sm = self.smooth_replicates_fast(np.ones((1, self.n)))
                self._lowess = {m: float(v[0]) for m, v in sm.items()}
            else:
                self._lowess = dict(_lowess_errors(self.y_in, self.p_in))
                self._lowess["ici"] = _ici(self.y_in, self.p_in)
        return self._lowess

    def replicate(self, ws: np.ndarray, thresholds, want_smooth: bool, auroc: bool = False, decision=()) -> dict:
        """Every registered binary metric with a replicate kernel, for replicate weights ``ws`` (k, n)
        given in sorted order: ``{name: (k,)}``, operating-point metrics as ``name@threshold``, the
        net-benefit family as ``name@t`` at each of the ``decision`` thresholds. AUROC (a DeLong interval
        in blocks) only when ``auroc``; the smoothers only when ``want_smooth``."""
        draw = Draw(self, ws, thresholds, decision)
        out = {}
        for m in metrics_for("binary"):
            if (m.interval == "delong" and not auroc) or (m.smooth and not want_smooth):
                continue
            if m.replicate is not None:
                if m.at_decision:
                    for i, t in enumerate(draw.decision_thresholds):
                        out[f"{m.name}@{t!r}"] = m.replicate(draw, i)
                elif m.at_threshold:
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

        if self.monotone:
            if self._sorted_cases is None:
                self._sorted_cases = SortedCases(self.p, self.y)
            return smooth_errors(self._sorted_cases, ws)
        # p not sorted in the score order: the engine needs the cases sorted by p (a wrong order would
        # give wrong windows, not an error), so both are put in p's order for this call
        by_p = np.argsort(self.p, kind="stable")
        return smooth_errors(SortedCases(self.p[by_p], self.y[by_p]), np.asarray(ws)[:, by_p])

    def smooth_replicate(self, w: np.ndarray) -> dict:
        """Lowess and loess errors of the replicate sample (cases repeated by their counts, kept in sorted
        order): these smoothers depend on the multiset, so they are evaluated on it directly."""
        # the sample in p's order (clowess and loess need x sorted; the score order is p's when monotone)
        order = np.arange(self.n) if self.monotone else np.argsort(self.p, kind="stable")
        rep = np.repeat(order, w[order].astype(np.int64))
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
        return {"eavg": e.mean(), "e50": np.quantile(e, 0.5), "e90": np.quantile(e, 0.9), "emax": e.max(), "ici": ici}


class Draw:
    """One chunk of replicate weights ``ws`` (k, n), in :class:`BinaryCases` sorted order, with the
    sums many metrics share computed once (lazily) for the chunk."""

    def __init__(self, cases: BinaryCases, ws: np.ndarray, thresholds, decision=()):
        self.cases = cases
        self.ws = np.ascontiguousarray(ws, dtype=np.float64)
        self.thresholds = list(thresholds)
        self.decision_thresholds = [float(t) for t in decision]
        self.total = self.ws.sum(axis=1)
        self._lin: np.ndarray | None = None
        self._decision: np.ndarray | None = None
        self._smooth: dict | None = None

    def decision(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(TP, FP, events, n) at decision threshold ``i``, treated = p >= t, per replicate: a separate
        product from :attr:`lin`, so that the other metrics' sums are computed exactly as without it."""
        if self._decision is None:
            c = self.cases
            if c.monotone:
                out = np.empty((self.ws.shape[0], 1 + 2 * len(self.decision_thresholds)))
                out[:, 0] = self.ws @ c.y_float
                self._called_sums(self.decision_thresholds, out[:, 1:])
                self._decision = out
            else:
                self._decision = self.ws @ c.decision_matrix(self.decision_thresholds)
        called = self._decision[:, 1 + 2 * i]
        tp = self._decision[:, 2 + 2 * i]
        return tp, called - tp, self._decision[:, 0], self.total

    def _called_sums(self, thresholds, out: np.ndarray) -> None:
        """Per threshold t the columns [Σ w (p >= t), Σ w y (p >= t)] into ``out`` (k, 2T): sums over
        the suffix of cases with p >= t. Integer counts times 0/1 labels: exact in any order, so equal to
        the per-case matrix's product."""
        c, ws = self.cases, self.ws
        for i, t in enumerate(thresholds):
            s = c.first_called(t)
            out[:, 2 * i] = ws[:, s:].sum(axis=1)
            out[:, 2 * i + 1] = ws[:, s:] @ c.y_float[s:]

    def _range_sums(self) -> np.ndarray:
        """:attr:`lin` of monotone cases from sums over runs and suffixes: the squared error and NLL
        as one product with the kept (n, 2) terms; per bin Σ w (y − p) and Σ w over the bin's run;
        per threshold the suffix sums of :meth:`_called_sums`."""
        c, ws = self.cases, self.ws
        B, k = c.bins, ws.shape[0]
        assert c.bin_edges is not None
        out = np.zeros((k, 3 + 2 * B + 2 * len(self.thresholds)))
        out[:, :2] = ws @ c.loss_terms
        out[:, 2] = ws @ c.y_float
        for b in range(B):
            a, e = int(c.bin_edges[b]), int(c.bin_edges[b + 1])
            if e > a:
                out[:, 3 + b] = ws[:, a:e] @ c.resid[a:e]
                out[:, 3 + B + b] = ws[:, a:e].sum(axis=1)
        self._called_sums(self.thresholds, out[:, 3 + 2 * B :])
        return out

    @property
    def lin(self) -> np.ndarray:
        """Squared error, NLL, events, per-bin (y − p), per-bin counts, then [called, true positives]
        per threshold, summed per replicate: from ranges of the sorted cases when p is monotone in
        their order, else ``ws @ linear_with_calls``."""
        if self._lin is None:
            if self.cases.monotone:
                self._lin = self._range_sums()
            else:
                self._lin = self.ws @ self.cases.linear_with_calls(self.thresholds)
        return self._lin

    @property
    def events(self) -> np.ndarray:
        return self.lin[:, 2]

    @property
    def bin_gaps(self) -> np.ndarray:
        """Per replicate and bin: Σ w (y − p)."""
        B = self.cases.bins
        return self.lin[:, 3 : 3 + B]

    @property
    def bin_counts(self) -> np.ndarray:
        B = self.cases.bins
        return self.lin[:, 3 + B : 3 + 2 * B]

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
                step = max(1, SMOOTH_CELLS // c.n)
                parts = [c.smooth_replicates_fast(ws[r0 : r0 + step]) for r0 in range(0, ws.shape[0], step)]
                self._smooth = {m: np.concatenate([part[m] for part in parts]) for m in parts[0]}
            else:
                sm = {m: np.empty(ws.shape[0]) for m in (*LOWESS_METRICS, "ici")}
                for r in range(ws.shape[0]):
                    for m, v in c.smooth_replicate(ws[r]).items():
                        sm[m][r] = v
                self._smooth = sm
        return self._smooth


def _run_edges(idx: np.ndarray, bins: int) -> np.ndarray:
    """Where each bin's run of cases begins (and the last ends), for non-decreasing bin indices."""
    return np.searchsorted(idx, np.arange(bins + 1), side="left")


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
