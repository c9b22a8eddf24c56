"""Metric values against independent Python references: scikit-learn, statsmodels, netcal."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from validate.metrics import (
    accuracy,
    auprc,
    auroc,
    auroc_macro,
    brier,
    calibration_intercept,
    calibration_slope,
    classwise_ece,
    clowess,
    ece,
    ece_adaptive,
    log_loss,
    mce,
    multiclass_brier,
    multiclass_log_loss,
    scaled_brier,
    top_label_ece,
    weighted_auprc,
    weighted_auroc,
)

from conftest import SHARED_DATA

TOL = dict(rel=1e-9, abs=1e-12)


@pytest.fixture(scope="module")
def binary():
    rng = np.random.default_rng(7)
    n = 1200
    p = rng.beta(1.5, 4, n)
    y = (rng.random(n) < np.clip(p * 1.3, 0, 1)).astype(int)
    return y, p


@pytest.fixture(scope="module")
def cifar():
    path = SHARED_DATA / "calibration" / "wideresnet-16-4-cifar-10.npz"
    if not path.exists():
        pytest.skip("shared calibration data missing")
    d = np.load(path)
    P = d["predictions"].astype(np.float64)[:3000]
    P = P / P.sum(axis=1, keepdims=True)
    return d["ground_truth"].reshape(-1)[:3000], P


def test_discrimination_matches_sklearn(binary):
    y, p = binary
    assert auroc(y, p) == pytest.approx(skm.roc_auc_score(y, p), **TOL)
    assert auprc(y, p) == pytest.approx(skm.average_precision_score(y, p), **TOL)
    # ties
    q = np.round(p, 2)
    assert auroc(y, q) == pytest.approx(skm.roc_auc_score(y, q), **TOL)
    assert auprc(y, q) == pytest.approx(skm.average_precision_score(y, q), **TOL)


def test_weighted_rank_metrics_match_sklearn_sample_weight(binary):
    y, p = binary
    rng = np.random.default_rng(1)
    w = rng.integers(0, 4, size=(3, y.size)).astype(float)
    q = np.round(p, 2)
    for r in range(3):
        assert weighted_auroc(y.astype(float), q, w[r]) == pytest.approx(
            skm.roc_auc_score(y, q, sample_weight=w[r]), **TOL
        )
        assert weighted_auprc(y.astype(float), q, w[r]) == pytest.approx(
            skm.average_precision_score(y, q, sample_weight=w[r]), **TOL
        )
    np.testing.assert_allclose(
        weighted_auroc(y.astype(float), q, w), [skm.roc_auc_score(y, q, sample_weight=wr) for wr in w], rtol=1e-12
    )


def test_scores_match_sklearn(binary):
    y, p = binary
    assert brier(y, p) == pytest.approx(skm.brier_score_loss(y, p), **TOL)
    assert log_loss(y, p) == pytest.approx(skm.log_loss(y, p), **TOL)
    prev = y.mean()
    ref = skm.brier_score_loss(y, np.full(y.size, prev))
    assert scaled_brier(y, p) == pytest.approx(1 - skm.brier_score_loss(y, p) / ref, **TOL)


def test_log_loss_clips_at_1e_15_only():
    y = np.array([1, 0, 1, 0])
    p = np.array([1e-12, 0.5, 1.0, 0.0])
    expected = -(np.log(1e-12) + np.log(0.5) + np.log(1 - 1e-15) + np.log1p(-1e-15)) / 4
    assert log_loss(y, p) == pytest.approx(expected, rel=1e-12)


def test_intercept_and_slope_match_statsmodels(binary):
    sm = pytest.importorskip("statsmodels.api")
    y, p = binary
    z = np.log(p / (1 - p))
    glm = sm.GLM(y, np.ones((y.size, 1)), family=sm.families.Binomial(), offset=z).fit(tol=1e-14, maxiter=100)
    ours = calibration_intercept(y, p)
    assert ours["estimate"] == pytest.approx(glm.params[0], rel=1e-7)
    lo, hi = glm.conf_int()[0]
    assert ours["ci_low"] == pytest.approx(lo, rel=1e-6)
    assert ours["ci_high"] == pytest.approx(hi, rel=1e-6)
    logit = sm.Logit(y, sm.add_constant(z)).fit(disp=0, tol=1e-14, maxiter=100, method="newton")
    s = calibration_slope(y, p)
    assert s["estimate"] == pytest.approx(logit.params[1], rel=1e-7)
    assert s["intercept"] == pytest.approx(logit.params[0], rel=1e-7)
    lo, hi = logit.conf_int()[1]
    assert s["ci_low"] == pytest.approx(lo, rel=1e-6)
    assert s["ci_high"] == pytest.approx(hi, rel=1e-6)


def test_slope_with_logits_avoids_clipping():
    rng = np.random.default_rng(3)
    z = rng.normal(0, 20, 400)  # many |logit| > 34.5 would be clipped as probabilities
    y = (rng.random(400) < 1 / (1 + np.exp(-z / 10))).astype(int)
    s = calibration_slope(y, logits=z)
    assert s["converged"]
    assert s["estimate"] == pytest.approx(0.1, abs=0.05)


def test_separation_is_reported_not_converged():
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    assert not calibration_slope(y, p)["converged"]


def test_clowess_without_delta_matches_statsmodels(binary):
    # statsmodels' lowess equals R's clowess when no points are skipped (delta = 0); its delta
    # handling differs from R's, which tests/test_metrics_r.py covers against R itself
    sm_lowess = pytest.importorskip("statsmodels.nonparametric.smoothers_lowess").lowess
    y, p = binary
    order = np.argsort(p, kind="stable")
    ours = clowess(p[order], y[order].astype(float), delta=0.0)
    ref = sm_lowess(y[order], p[order], frac=2 / 3, it=0, delta=0.0, return_sorted=False)
    np.testing.assert_allclose(ours, ref, rtol=1e-7, atol=1e-9)


def test_ece_mce_match_netcal(binary):
    netcal = pytest.importorskip("netcal.metrics")
    y, p = binary
    # continuous scores: no value sits on a bin edge, so bin conventions agree
    edges = np.linspace(0, 1, 16)
    assert np.min(np.abs(p[:, None] - edges[None, :])) > 1e-9
    assert ece(y, p) == pytest.approx(netcal.ECE(bins=15).measure(p, y), rel=1e-9)
    assert mce(y, p) == pytest.approx(netcal.MCE(bins=15).measure(p, y), rel=1e-9)


def test_top_label_ece_matches_netcal_multiclass():
    netcal = pytest.importorskip("netcal.metrics")
    rng = np.random.default_rng(11)
    P = rng.dirichlet([0.6] * 4, 2000)
    y = np.array([rng.choice(4, p=r) for r in P])
    assert top_label_ece(y, P) == pytest.approx(netcal.ECE(bins=15).measure(P, y), rel=1e-9)


def test_right_closed_bins_and_no_extra_bin_for_one():
    # p exactly on an edge belongs to the bin it closes; p = 1 is in the last bin, p = 0 in the first
    from validate.metrics import reliability_bins

    y = np.array([1, 0, 1, 1, 0])
    p = np.array([0.0, 0.25, 0.5, 1.0, 0.26])  # edges k/4 are exact in binary
    rb = reliability_bins(y, p, bins=4)
    np.testing.assert_array_equal(rb["count"], [2, 2, 0, 1])
    # ECE over those bins: |1 - 0.25| + |1 - 0.76| + |1 - 1| over 5 cases
    assert ece(y, p, bins=4) == pytest.approx((0.75 + 0.24) / 5)


def test_ece_adaptive_equal_mass():
    rng = np.random.default_rng(5)
    p = rng.random(300)
    y = (rng.random(300) < p).astype(int)
    order = np.argsort(p, kind="stable")
    groups = np.array_split(order, 15)
    expected = sum(len(g) / 300 * abs(y[g].mean() - p[g].mean()) for g in groups)
    assert ece_adaptive(y, p) == pytest.approx(expected, rel=1e-12)


def test_multiclass_matches_sklearn(cifar):
    y, P = cifar
    assert accuracy(y, P) == pytest.approx(skm.accuracy_score(y, P.argmax(1)), **TOL)
    assert auroc_macro(y, P) == pytest.approx(skm.roc_auc_score(y, P, multi_class="ovr"), **TOL)
    assert multiclass_log_loss(y, P) == pytest.approx(
        skm.log_loss(y, np.clip(P, 1e-15, 1 - 1e-15), labels=range(10)), rel=1e-7
    )
    onehot = np.eye(10)[y]
    assert multiclass_brier(y, P) == pytest.approx(np.mean(((P - onehot) ** 2).sum(1)), **TOL)
    expected = np.mean([ece((y == k).astype(int), P[:, k]) for k in range(10)])
    assert classwise_ece(y, P) == pytest.approx(expected, **TOL)
