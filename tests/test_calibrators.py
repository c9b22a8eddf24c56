"""Calibrators against independent references: scikit-learn, netcal, statsmodels, known temperatures,
and real CIFAR classifier outputs (Kumar et al. 2019; netcal examples)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from validate.calibrators import (
    METHODS,
    CalibrationFitError,
    calibrator_from_json,
    get_calibrator,
    logits_from_probabilities,
    methods_for,
)
from validate.errors import InputError

BINARY = methods_for("binary")
MULTICLASS = methods_for("multiclass")
FAST_BINARY = [m for m in BINARY if m not in ("bbq", "enir")]  # netcal-backed ones are tested apart


@pytest.fixture(scope="module")
def netcal():
    import netcal  # ~8 s: once per module

    return netcal


def simulate_binary(n, temperature=2.5, seed=0):
    """True logit z ~ N(0, 2^2), y ~ Bernoulli(sigmoid(z)); the model reports temperature * z."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, n)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(int)
    return temperature * z, y


def simulate_multiclass(n, k=10, temperature=2.5, seed=0):
    """True logits ~ N(0, 2^2) per class, y drawn from softmax; the model reports temperature * logits."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, (n, k))
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    y = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return temperature * z, y


class Passthrough(ClassifierMixin, BaseEstimator):
    """A 'classifier' whose decision function is its input, to hand fixed logits to scikit-learn."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def decision_function(self, X):
        return X[:, 0] if X.shape[1] == 1 else X

    def predict(self, X):
        return self.classes_[(X[:, 0] > 0).astype(int)] if X.shape[1] == 1 else self.classes_[X.argmax(axis=1)]


# ---- temperature ------------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_temperature_recovers_known_temperature(task):
    z, y = simulate_binary(40000) if task == "binary" else simulate_multiclass(20000)
    cal = get_calibrator("temperature", task).fit(z, y)
    assert cal.temperature == pytest.approx(2.5, rel=0.02)
    assert cal.to_json()["temperature"] == cal.temperature  # T itself, not 1/T


def test_temperature_matches_sklearn_multiclass():
    z, y = simulate_multiclass(3000, k=6, seed=1)
    ref = CalibratedClassifierCV(FrozenEstimator(Passthrough().fit(z, y)), method="temperature").fit(z, y)
    beta = ref.calibrated_classifiers_[0].calibrators[0].beta_  # sklearn stores 1/T
    cal = get_calibrator("temperature", "multiclass").fit(z, y)
    assert cal.temperature == pytest.approx(1.0 / beta, rel=1e-6)
    np.testing.assert_allclose(cal.predict_proba(z), ref.predict_proba(z), atol=1e-7)


def test_temperature_matches_sklearn_binary():
    z, y = simulate_binary(3000, seed=2)
    X = z[:, None]
    ref = CalibratedClassifierCV(FrozenEstimator(Passthrough().fit(X, y)), method="temperature").fit(X, y)
    beta = ref.calibrated_classifiers_[0].calibrators[0].beta_
    cal = get_calibrator("temperature", "binary").fit(z, y)
    # sklearn turns a binary decision value x into the logits (-x, x): p = sigmoid(2 beta x), so T = 1/(2 beta)
    assert cal.temperature == pytest.approx(1.0 / (2.0 * beta), rel=1e-6)
    np.testing.assert_allclose(cal.predict_proba(z), ref.predict_proba(X)[:, 1], atol=1e-7)


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_temperature_matches_netcal(netcal, task):
    from netcal.scaling import TemperatureScaling as NetcalTS

    if task == "binary":
        z, y = simulate_binary(3000, seed=3)
        probs = 1.0 / (1.0 + np.exp(-z))
    else:
        z, y = simulate_multiclass(3000, k=5, seed=3)
        probs = np.exp(z - z.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
    ref = NetcalTS().fit(probs, y)
    inv_t = float(np.asarray(ref.temperature).ravel()[0])  # netcal's "temperature" is the weight 1/T
    cal = get_calibrator("temperature", task).fit(z, y)
    assert cal.temperature == pytest.approx(1.0 / inv_t, rel=1e-3)


# ---- Platt, beta, isotonic, vector, matrix -----------------------------------------------------
def test_platt_equals_unpenalised_logistic_regression():
    z, y = simulate_binary(2000, temperature=0.6, seed=4)
    z = z + 0.7  # a shifted logit, so the intercept matters
    ref = LogisticRegression(C=1e12, tol=1e-12, max_iter=10000).fit(z[:, None], y)
    cal = get_calibrator("platt", "binary").fit(z, y)
    assert cal.slope == pytest.approx(ref.coef_[0, 0], rel=1e-5)
    assert cal.intercept == pytest.approx(ref.intercept_[0], rel=1e-5, abs=1e-7)
    np.testing.assert_allclose(cal.predict_proba(z), ref.predict_proba(z[:, None])[:, 1], atol=1e-7)


def test_beta_equals_statsmodels_logit_on_beta_features():
    import statsmodels.api as sm

    rng = np.random.default_rng(5)
    s = rng.beta(0.6, 0.9, 3000)  # skewed scores where a and b differ
    y = (rng.random(3000) < s**0.7).astype(int)
    z = np.log(s) - np.log1p(-s)
    feats = np.column_stack([np.log(s), -np.log1p(-s)])
    ref = sm.Logit(y, sm.add_constant(feats)).fit(disp=0, tol=1e-12, maxiter=200)
    c, a, b = ref.params
    assert a > 0 and b > 0  # the unconstrained fit is the answer here
    cal = get_calibrator("beta", "binary").fit(z, y)
    assert (cal.a, cal.b, cal.c) == pytest.approx((a, b, c), rel=1e-5)


def test_beta_keeps_coefficients_non_negative():
    z, y = simulate_binary(3000, temperature=1.0, seed=6)
    cal = get_calibrator("beta", "binary").fit(z, y)
    assert cal.a >= 0 and cal.b >= 0


def test_isotonic_equals_sklearn():
    z, y = simulate_binary(1500, temperature=1.7, seed=7)
    z_new = np.concatenate([np.linspace(z.min() - 3, z.max() + 3, 500), z[:50]])
    ref = IsotonicRegression(out_of_bounds="clip").fit(z, y)
    cal = get_calibrator("isotonic", "binary").fit(z, y)
    np.testing.assert_allclose(cal.predict_proba(z_new), ref.predict(z_new), atol=1e-12)


def test_isotonic_with_tied_scores_equals_sklearn():
    rng = np.random.default_rng(8)
    z = np.round(rng.normal(0, 1.5, 800), 1)  # many ties
    y = (rng.random(800) < 1 / (1 + np.exp(-z))).astype(int)
    ref = IsotonicRegression(out_of_bounds="clip").fit(z, y)
    cal = get_calibrator("isotonic", "binary").fit(z, y)
    grid = np.linspace(-6, 6, 301)
    np.testing.assert_allclose(cal.predict_proba(grid), ref.predict(grid), atol=1e-12)


def test_multiclass_isotonic_one_vs_rest_renormalised_against_sklearn():
    z, y = simulate_multiclass(1500, k=4, seed=9)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    cols = [IsotonicRegression(out_of_bounds="clip").fit(p[:, k], y == k).predict(p[:, k]) for k in range(4)]
    ref = np.column_stack(cols)
    ref /= ref.sum(axis=1, keepdims=True)
    cal = get_calibrator("isotonic", "multiclass").fit(z, y)
    np.testing.assert_allclose(cal.predict_proba(z), ref, atol=1e-12)
    from validate.calibrators import predicted_class_changed

    changed = predicted_class_changed(z, cal.predict_proba(z))
    assert changed == pytest.approx(np.mean(ref.argmax(axis=1) != z.argmax(axis=1)))


def test_vector_scaling_matches_netcal(netcal):
    from netcal.scaling import LogisticCalibration

    z, y = simulate_multiclass(1500, k=4, seed=10)
    z = z * np.array([1.0, 1.5, 0.7, 2.0]) + np.array([0.3, 0.0, -0.2, 0.1])
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))  # netcal takes probabilities, logs them back
    ref = LogisticCalibration().fit(np.exp(logp), y)
    cal = get_calibrator("vector", "multiclass").fit(logp, y)
    np.testing.assert_allclose(cal.predict_proba(logp), ref.transform(np.exp(logp)), atol=2e-3)


def test_matrix_scaling_without_penalty_is_multinomial_logistic_regression():
    z, y = simulate_multiclass(2000, k=4, temperature=1.3, seed=11)
    ref = LogisticRegression(C=1e12, tol=1e-12, max_iter=20000).fit(z, y)
    cal = get_calibrator("matrix", "multiclass", odir_lambda=0.0, odir_mu=0.0).fit(z, y)
    np.testing.assert_allclose(cal.predict_proba(z), ref.predict_proba(z), atol=1e-4)

    def nll(q):
        return -np.mean(np.log(q[np.arange(len(y)), y]))

    assert nll(cal.predict_proba(z)) == pytest.approx(nll(ref.predict_proba(z)), abs=1e-8)


def test_matrix_odir_shrinks_off_diagonal():
    z, y = simulate_multiclass(600, k=5, seed=12)
    off = ~np.eye(5, dtype=bool)
    weak = get_calibrator("matrix", "multiclass", odir_lambda=0.0, odir_mu=0.0).fit(z, y)
    strong = get_calibrator("matrix", "multiclass", odir_lambda=100.0, odir_mu=100.0).fit(z, y)
    assert np.abs(strong.matrix[off]).mean() < 0.5 * np.abs(weak.matrix[off]).mean()
    assert np.abs(strong.bias).mean() < np.abs(weak.bias).mean()


def test_histogram_binning_equals_netcal(netcal):
    from netcal.binning import HistogramBinning

    z, y = simulate_binary(800, temperature=1.5, seed=27)
    p = 1.0 / (1.0 + np.exp(-z))
    ref = HistogramBinning(bins=10).fit(p, y)
    cal = get_calibrator("histogram", "binary").fit(z, y)
    z_new = np.r_[np.random.default_rng(28).normal(0, 4, 1000), np.log(0.3 / 0.7)]  # 0.3: a bin edge
    np.testing.assert_allclose(cal.predict_proba(z_new), ref.transform(1.0 / (1.0 + np.exp(-z_new))), atol=1e-12)


# ---- netcal-backed BBQ and ENIR ----------------------------------------------------------------
@pytest.mark.parametrize("method", ["bbq", "enir"])
def test_bbq_enir_step_map_equals_netcal_transform(netcal, method):
    from netcal.binning import BBQ, ENIR

    z, y = simulate_binary(400, temperature=2.0, seed=13)
    cal = get_calibrator(method, "binary").fit(z, y)
    p = 1.0 / (1.0 + np.exp(-z))
    ref = BBQ() if method == "bbq" else ENIR()
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        ref.fit(p, y)
    z_new = np.random.default_rng(14).normal(0, 5, 2000)
    p_new = 1.0 / (1.0 + np.exp(-z_new))
    if method == "enir":
        # netcal's ENIR.transform gives 0 outside its members' (lo, hi] groups (see ENIR's docstring);
        # compare where every member has a group holding the score
        def inside(m):
            gb = np.asarray(m._group_bounds)
            return ((p_new[:, None] > gb[:, 0]) & (p_new[:, None] <= gb[:, 1])).any(axis=1)

        keep = np.all([inside(m) for m in ref._binning_models], axis=0)
        assert keep.mean() > 0.5
        z_new, p_new = z_new[keep], p_new[keep]
    np.testing.assert_allclose(cal.predict_proba(z_new), ref.transform(p_new), atol=1e-12)
    again = calibrator_from_json(method, "binary", json.loads(json.dumps(cal.to_json())))
    np.testing.assert_array_equal(again.predict_proba(z_new), cal.predict_proba(z_new))


# ---- properties shared by every method ---------------------------------------------------------
@pytest.mark.parametrize("method", FAST_BINARY)
def test_binary_probabilities_valid_and_json_round_trip(method):
    z, y = simulate_binary(600, temperature=1.8, seed=15)
    cal = get_calibrator(method, "binary").fit(z, y)
    z_new = np.random.default_rng(16).normal(0, 8, 1000)
    p = cal.predict_proba(z_new)
    assert p.shape == (1000,) and np.all(np.isfinite(p)) and p.min() >= 0 and p.max() <= 1
    params = json.loads(json.dumps(cal.to_json(), allow_nan=False))
    np.testing.assert_array_equal(calibrator_from_json(method, "binary", params).predict_proba(z_new), p)


@pytest.mark.parametrize("method", MULTICLASS)
def test_multiclass_rows_sum_to_one_and_json_round_trip(method):
    z, y = simulate_multiclass(800, k=5, temperature=1.8, seed=17)
    cal = get_calibrator(method, "multiclass").fit(z, y)
    z_new = np.random.default_rng(18).normal(0, 6, (500, 5))
    p = cal.predict_proba(z_new)
    assert p.shape == (500, 5) and np.all(np.isfinite(p)) and p.min() >= 0 and p.max() <= 1
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    params = json.loads(json.dumps(cal.to_json(), allow_nan=False))
    np.testing.assert_array_equal(calibrator_from_json(method, "multiclass", params).predict_proba(z_new), p)


def test_multilabel_calibrates_each_label_on_its_own():
    za, ya = simulate_binary(700, temperature=2.5, seed=19)
    zb, yb = simulate_binary(700, temperature=0.5, seed=20)
    z, y = np.column_stack([za, zb]), np.column_stack([ya, yb])
    cal = get_calibrator("temperature", "multilabel").fit(z, y)
    p = cal.predict_proba(z)
    np.testing.assert_allclose(p[:, 0], get_calibrator("temperature", "binary").fit(za, ya).predict_proba(za))
    np.testing.assert_allclose(p[:, 1], get_calibrator("temperature", "binary").fit(zb, yb).predict_proba(zb))
    again = calibrator_from_json("temperature", "multilabel", json.loads(json.dumps(cal.to_json())))
    np.testing.assert_array_equal(again.predict_proba(z), p)


@pytest.mark.parametrize("method", ["temperature", "platt", "beta"])
def test_strictly_monotone_methods_keep_auroc(method):
    z, y = simulate_binary(1000, temperature=1.5, seed=21)
    z_new, y_new = simulate_binary(1000, temperature=1.5, seed=22)
    cal = get_calibrator(method, "binary").fit(z, y)
    assert roc_auc_score(y_new, cal.predict_proba(z_new)) == pytest.approx(roc_auc_score(y_new, z_new), abs=1e-12)


@pytest.mark.parametrize("method", ["isotonic", "histogram"])
def test_non_decreasing_methods_never_reverse_order(method):
    z, y = simulate_binary(1000, temperature=1.5, seed=23)
    cal = get_calibrator(method, "binary").fit(z, y)
    grid = np.linspace(-15, 15, 3001)
    assert np.all(np.diff(cal.predict_proba(grid)) >= 0) or method == "histogram"
    if method == "histogram":  # bin rates need not be monotone, but a bin maps to one value
        p = cal.predict_proba(grid)
        assert np.unique(p).size <= 10


def test_temperature_keeps_predicted_class():
    z, y = simulate_multiclass(1000, k=6, seed=24)
    cal = get_calibrator("temperature", "multiclass").fit(z, y)
    np.testing.assert_array_equal(cal.predict_proba(z).argmax(axis=1), z.argmax(axis=1))


# ---- degenerate fitting data ----------------------------------------------------------------
@pytest.mark.parametrize("method", FAST_BINARY)
def test_single_class_fitting_data_is_a_clear_error(method):
    z = np.linspace(-2, 2, 50)
    with pytest.raises(CalibrationFitError, match="both outcomes"):
        get_calibrator(method, "binary").fit(z, np.ones(50, dtype=int))


@pytest.mark.parametrize("method", FAST_BINARY)
def test_too_few_cases_is_a_clear_error(method):
    with pytest.raises(CalibrationFitError, match="too few"):
        get_calibrator(method, "binary").fit([0.1, -0.3, 2.0, 1.0], [0, 0, 1, 1])


@pytest.mark.parametrize("method", MULTICLASS)
def test_all_scores_equal_is_a_clear_error(method):
    z = np.tile([1.0, 2.0, 3.0], (40, 1)) + np.arange(40)[:, None]  # equal up to a row shift
    with pytest.raises(CalibrationFitError, match="all fitting scores are equal"):
        get_calibrator(method, "multiclass").fit(z, np.arange(40) % 3)


@pytest.mark.parametrize("method", ["temperature", "platt", "beta"])
def test_perfectly_separated_fitting_data_is_a_clear_error(method):
    z = np.concatenate([np.linspace(-5, -1, 20), np.linspace(1, 5, 20)])
    y = np.repeat([0, 1], 20)
    with pytest.raises(CalibrationFitError, match="separated"):
        get_calibrator(method, "binary").fit(z, y)


def test_multiclass_temperature_on_perfectly_classified_cases_is_a_clear_error():
    z, _ = simulate_multiclass(200, k=3, seed=25)
    with pytest.raises(CalibrationFitError, match="perfectly classified"):
        get_calibrator("temperature", "multiclass").fit(z, z.argmax(axis=1))


def test_temperature_on_anti_informative_scores_is_a_clear_error():
    # higher score, fewer events: NLL falls all the way to T -> infinity (p -> 1/2); T cannot flip
    z = np.repeat([-1.0, 1.0], 50)
    y = np.r_[np.ones(30, int), np.zeros(20, int), np.ones(20, int), np.zeros(30, int)]
    with pytest.raises(CalibrationFitError, match="no signal"):
        get_calibrator("temperature", "binary").fit(z, y)


def test_platt_refuses_to_flip_the_ranking():
    z, y = simulate_binary(500, seed=26)
    with pytest.raises(CalibrationFitError, match="reverse"):
        get_calibrator("platt", "binary").fit(-z, y)


def test_input_errors_name_the_problem():
    with pytest.raises(InputError, match="did you mean 'temperature'"):
        get_calibrator("temprature", "binary")
    with pytest.raises(InputError, match="does not apply to a binary task"):
        get_calibrator("matrix", "binary")
    with pytest.raises(InputError, match="does not apply to a multiclass task"):
        get_calibrator("platt", "multiclass")
    with pytest.raises(InputError, match="finite"):
        get_calibrator("temperature", "binary").fit(np.r_[np.nan, np.arange(20.0)], np.arange(21) % 2)
    with pytest.raises(InputError, match="labels must lie in 0..1"):
        get_calibrator("temperature", "binary").fit(np.arange(20.0), np.arange(20) % 3)
    with pytest.raises(InputError, match="incomplete or malformed"):
        calibrator_from_json("temperature", "binary", {"task": "binary", "n_classes": 2})
    with pytest.raises(InputError, match="positive"):
        calibrator_from_json("temperature", "binary", {"task": "binary", "n_classes": 2, "temperature": -1})
    assert set(METHODS) >= {"temperature", "vector", "matrix", "platt", "beta", "isotonic", "histogram", "bbq", "enir"}


def test_probabilities_become_logits_with_the_1e15_floor():
    p = np.array([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
    z = logits_from_probabilities(p, "multiclass")
    assert z[0, 1] == pytest.approx(np.log(1e-15))
    np.testing.assert_allclose(np.exp(z[1]), p[1])
    zb = logits_from_probabilities(np.array([0.0, 1.0, 0.25]), "binary")
    assert zb[0] == pytest.approx(np.log(1e-15) - np.log1p(-1e-15))
    assert zb[2] == pytest.approx(np.log(0.25 / 0.75))


# ---- real classifier outputs: CIFAR ----------------------------------------------------------
class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Loads numpy arrays and tuples only: the shared pickle cannot run arbitrary code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _cifar(shared_data, name):
    base = shared_data / "calibration"
    if name == "vgg16":
        with open(base / "vgg16_cifar10_probs.pkl", "rb") as fh:
            obj = _NumpyOnlyUnpickler(fh).load()
        assert isinstance(obj, tuple) and len(obj) == 2
        probs, labels = obj
        assert probs.shape == (10000, 10) and probs.dtype == np.float32
        assert labels.shape == (10000, 1) and labels.dtype == np.int64
        return probs, labels[:, 0]
    data = np.load(base / f"{name}.npz")
    return data["predictions"], data["ground_truth"]


@pytest.mark.parametrize(
    "name,min_ratio", [("vgg16", 2.0), ("wideresnet-16-4-cifar-10", 5.0), ("densenet-bc-100-cifar-100", 5.0)]
)
def test_temperature_scaling_cuts_top_label_ece_on_cifar(netcal, shared_data, name, min_ratio):
    from netcal.metrics import ECE

    probs, labels = _cifar(shared_data, name)
    logits = logits_from_probabilities(probs, "multiclass")
    cal = get_calibrator("temperature", "multiclass").fit(logits[:5000], labels[:5000])
    calibrated = cal.predict_proba(logits[5000:])
    before = ECE(bins=15).measure(probs[5000:].astype(np.float64), labels[5000:])
    after = ECE(bins=15).measure(calibrated, labels[5000:])
    assert cal.temperature > 1.2  # these networks are over-confident
    assert after * min_ratio < before
    # accuracy is untouched by a temperature
    assert np.mean(calibrated.argmax(axis=1) == labels[5000:]) == np.mean(probs[5000:].argmax(axis=1) == labels[5000:])
