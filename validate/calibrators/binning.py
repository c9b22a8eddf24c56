"""Non-parametric calibrators: isotonic regression, histogram binning, and netcal's BBQ and ENIR.

Binary maps act on the positive-class score; multiclass isotonic and histogram binning calibrate each
class one-vs-rest on its softmax probability and renormalise the rows (Zadrozny & Elkan 2002).
Renormalising can change the predicted class; :func:`predicted_class_changed` measures how often (the
comparison designs report it for every evaluated site).
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
from scipy.optimize import isotonic_regression

from validate.calibrators.base import CalibrationFitError, Calibrator, as_float_list, renormalise, sigmoid, softmax


def predicted_class_changed(logits: np.ndarray, probs: np.ndarray) -> float:
    """Fraction of cases whose argmax class differs between the logits and calibrated probabilities."""
    return float(np.mean(np.argmax(logits, axis=1) != np.argmax(probs, axis=1)))


# ---- isotonic -----------------------------------------------------------------------------------
def fit_isotonic(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares non-decreasing fit of y on x (pool-adjacent-violators, scipy's
    ``isotonic_regression``) with tied x values merged first (their mean y, weighted by their count).
    Returns the knots (x, fitted y) with interior points of flat runs dropped (interpolation unchanged)."""
    order = np.argsort(x)
    xs, ys = x[order], y[order].astype(np.float64)
    start = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    counts = np.diff(np.r_[start, xs.size])
    ux = xs[start]
    means = np.add.reduceat(ys, start) / counts
    fitted = isotonic_regression(means, weights=counts.astype(np.float64), increasing=True).x
    if fitted.size > 2:
        keep = np.ones(fitted.size, dtype=bool)
        keep[1:-1] = (fitted[1:-1] != fitted[:-2]) | (fitted[1:-1] != fitted[2:])
        ux, fitted = ux[keep], fitted[keep]
    return ux, fitted


class IsotonicCalibration(Calibrator):
    """Isotonic regression calibration (Zadrozny & Elkan, "Transforming classifier scores into accurate
    multiclass probability estimates", KDD 2002): the non-decreasing step map of the score minimising
    the squared error to the 0/1 outcome (pool-adjacent-violators), linearly interpolated between its
    knots and held constant beyond the end knots (scikit-learn's ``IsotonicRegression(out_of_bounds=
    "clip")``). Binary: on the logit. Multiclass: one-vs-rest on each class's softmax probability,
    then rows renormalised (a row with no support anywhere becomes uniform); a class absent from the
    fitting cases gets probability 0 before renormalisation."""

    name = "isotonic"
    tasks = ("binary", "multiclass")

    def __init__(self) -> None:
        super().__init__()
        self.knots: list[tuple[np.ndarray, np.ndarray]] = []

    def _fit(self, z: np.ndarray, y: np.ndarray) -> None:
        if z.ndim == 1:
            self.knots = [fit_isotonic(z, y)]
            return
        p = softmax(z)
        self.knots = [fit_isotonic(p[:, k], (y == k)) for k in range(z.shape[1])]

    def _predict(self, z: np.ndarray) -> np.ndarray:
        if z.ndim == 1:
            x, v = self.knots[0]
            return np.interp(z, x, v)
        p = softmax(z)
        out = np.column_stack([np.interp(p[:, k], x, v) for k, (x, v) in enumerate(self.knots)])
        return renormalise(out)

    def _params(self) -> dict:
        return {"knots": [{"x": as_float_list(x), "y": as_float_list(v)} for x, v in self.knots]}

    def _load(self, params: dict) -> None:
        want = 1 if self.task == "binary" else self.n_classes
        knots = params["knots"]
        if len(knots) != want:
            raise ValueError(f"expected {want} knot list(s), got {len(knots)}")
        self.knots = []
        for kn in knots:
            x, v = np.asarray(kn["x"], dtype=np.float64), np.asarray(kn["y"], dtype=np.float64)
            if x.ndim != 1 or x.shape != v.shape or x.size == 0 or np.any(np.diff(x) <= 0):
                raise ValueError("knots need increasing x and one y per x")
            self.knots.append((x, v))


# ---- step functions (histogram binning, BBQ, ENIR) ---------------------------------------------
def step_values(upper: np.ndarray, values: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Evaluate a right-continuous step map on [0, 1]: value i on (upper[i-1], upper[i]], the first
    interval closed at 0 (the same right-closed bins as ECE in DESIGN.md)."""
    idx = np.searchsorted(upper, p, side="left")
    return values[np.minimum(idx, len(values) - 1)]


def uniform_bin_index(upper: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``searchsorted(upper, p, "left")`` (capped at the last bin) for equal-width edges ``upper`` =
    linspace(0, 1, B + 1)[1:], by arithmetic plus a one-step correction where rounding put p across
    an edge: the same bins, without a binary search per case."""
    b = upper.size
    idx = np.clip(np.ceil(p * b).astype(np.int64) - 1, 0, b - 1)
    idx += (p > upper[idx]) & (idx < b - 1)
    lower = np.where(idx > 0, upper[np.maximum(idx - 1, 0)], -np.inf)
    idx -= p <= lower
    return idx


def histogram_map(p: np.ndarray, y: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Equal-width bins on [0, 1], right-closed, value = event rate in the bin; an empty bin takes
    its midpoint (netcal's rule)."""
    upper = np.linspace(0.0, 1.0, n_bins + 1)[1:]
    idx = uniform_bin_index(upper, p)
    counts = np.bincount(idx, minlength=n_bins).astype(np.float64)
    events = np.bincount(idx, weights=y.astype(np.float64), minlength=n_bins)
    mid = upper - 0.5 / n_bins
    values = np.divide(events, counts, out=mid.copy(), where=counts > 0)
    return upper, values


class _StepCalibrator(Calibrator):
    """A calibrator whose map is a step function of the probability (one map per class one-vs-rest)."""

    def __init__(self) -> None:
        super().__init__()
        self.maps: list[tuple[np.ndarray, np.ndarray]] = []

    def _fit(self, z: np.ndarray, y: np.ndarray) -> None:
        if z.ndim == 1:
            self.maps = [self._fit_map(sigmoid(z), y)]
            return
        p = softmax(z)
        self.maps = [self._fit_map(p[:, k], (y == k).astype(np.int64)) for k in range(z.shape[1])]

    def _map_values(self, upper: np.ndarray, values: np.ndarray, p: np.ndarray) -> np.ndarray:
        return step_values(upper, values, p)

    def _fit_map(self, p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def _predict(self, z: np.ndarray) -> np.ndarray:
        if z.ndim == 1:
            upper, values = self.maps[0]
            return self._map_values(upper, values, sigmoid(z))
        p = softmax(z)
        out = np.column_stack([self._map_values(u, v, p[:, k]) for k, (u, v) in enumerate(self.maps)])
        return renormalise(out)

    def _params(self) -> dict:
        return {"maps": [{"upper": as_float_list(u), "values": as_float_list(v)} for u, v in self.maps]}

    def _load(self, params: dict) -> None:
        want = 1 if self.task == "binary" else self.n_classes
        maps = params["maps"]
        if len(maps) != want:
            raise ValueError(f"expected {want} map(s), got {len(maps)}")
        self.maps = []
        for m in maps:
            u, v = np.asarray(m["upper"], dtype=np.float64), np.asarray(m["values"], dtype=np.float64)
            if u.ndim != 1 or u.shape != v.shape or u.size == 0 or np.any(np.diff(u) <= 0):
                raise ValueError("a step map needs increasing bin edges and one value per bin")
            self.maps.append((u, v))


class HistogramBinning(_StepCalibrator):
    """Histogram binning (Zadrozny & Elkan, "Obtaining calibrated probability estimates from decision
    trees and naive Bayesian classifiers", ICML 2001): ``n_bins`` equal-width bins of the predicted
    probability, right-closed (a, b] with 0 in the first bin; each bin predicts the event rate of its
    fitting cases, an empty bin its midpoint. Multiclass: one-vs-rest, rows renormalised."""

    name = "histogram"
    tasks = ("binary", "multiclass")

    def __init__(self, n_bins: int = 10) -> None:
        super().__init__()
        self.n_bins = int(n_bins)

    def _fit_map(self, p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return histogram_map(p, y, self.n_bins)

    def _map_values(self, upper: np.ndarray, values: np.ndarray, p: np.ndarray) -> np.ndarray:
        if np.array_equal(upper, np.linspace(0.0, 1.0, upper.size + 1)[1:]):  # equal-width: no search
            return values[uniform_bin_index(upper, p)]
        return step_values(upper, values, p)


@contextlib.contextmanager
def _quiet():
    # netcal prints progress bars and messages; the calibration core must not print
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def _ensemble_step_map(models, scores, bounds_of) -> tuple[np.ndarray, np.ndarray]:
    """One step map equal to a weighted sum of step maps with right-closed bins: on the union of
    their bin edges each member is constant, so its value at each union edge is its value on the whole
    union interval ending there."""
    parts = [bounds_of(m) for m in models]
    upper = np.unique(np.concatenate([u for u, _ in parts] + [[1.0]]))
    upper = upper[(upper > 0) & (upper <= 1)]
    values = np.zeros_like(upper)
    for w, (u, v) in zip(scores, parts, strict=True):
        values += w * step_values(u, v, upper)
    return upper, np.clip(values, 0.0, 1.0)


class BBQ(_StepCalibrator):
    """Bayesian Binning into Quantiles (Naeini, Cooper & Hauskrecht, "Obtaining well calibrated
    probabilities using Bayesian binning", AAAI 2015), fitted by netcal's ``netcal.binning.BBQ``
    (its defaults: equal-width histograms of every bin count between N^(1/3)/10 and 10 N^(1/3), kept by
    BIC score and averaged with score weights). The averaged map is stored exactly as one step map on
    the union of the histograms' bin edges, so prediction and JSON need no netcal. Binary only."""

    name = "bbq"
    tasks = ("binary",)

    def _fit_map(self, p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from netcal.binning import BBQ as NetcalBBQ  # costs ~8 s: only when asked for

        with _quiet():
            model = NetcalBBQ().fit(p, y)

        def bounds(h):
            return np.asarray(h._bin_bounds[0][1:], dtype=np.float64), np.asarray(h._bin_map, dtype=np.float64)

        return _ensemble_step_map(model._binning_models, model._model_scores, bounds)


class ENIR(_StepCalibrator):
    """Ensemble of Near-Isotonic Regressions (Naeini & Cooper, "Binary classifier calibration using an
    ensemble of near isotonic regression models", ICDM 2016), fitted by netcal's ``netcal.binning.ENIR``
    (near-isotonic path by modified PAVA, models kept by BIC and averaged with score weights). Stored as
    one step map on the union of the members' group bounds, so prediction and JSON need no netcal.
    Each member group holds the fitting scores in [lo, hi]; here it covers (previous group's hi, hi],
    so a score between two groups takes the upper group's value. netcal 1.4's own ``transform`` treats
    a group as (lo, hi] and returns 0 for a group's lowest fitting score and for scores between
    groups; at every other score the two agree exactly. Binary only."""

    name = "enir"
    tasks = ("binary",)

    def _fit_map(self, p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from netcal.binning import ENIR as NetcalENIR  # costs ~8 s: only when asked for

        with _quiet():
            model = NetcalENIR().fit(p, y)
        if not model._binning_models:
            raise CalibrationFitError("enir: netcal kept no model for these fitting cases")

        def bounds(m):
            gb = np.asarray(m._group_bounds, dtype=np.float64)
            return gb[:, 1], np.asarray(m._group_values, dtype=np.float64)

        return _ensemble_step_map(model._binning_models, model._model_scores, bounds)
