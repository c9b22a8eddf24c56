"""The vectorised bootstrap equals the naive one (resample, then call the reference implementation)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from validate.metrics import (
    MetricSettings,
    binary_block,
    bootstrap_weights,
    ece,
    ece_adaptive,
    ici,
    iter_bootstrap_weights,
    lowess_calibration,
    mce,
    paired_bootstrap_difference,
    percentile_interval,
)
from validate.metrics.calibration import weighted_ece, weighted_ece_adaptive


def test_weights_are_deterministic_and_chunk_invariant():
    strata = np.repeat(["a", "b", "c"], [30, 50, 20])
    a = bootstrap_weights(230, 100, strata=strata, seed=9)
    b = np.concatenate([w for _, w in iter_bootstrap_weights(230, 100, strata=strata, seed=9, chunk=50)])
    c = bootstrap_weights(230, 100, strata=strata, seed=9)
    assert a.shape == (230, 100)
    assert np.array_equal(a, b) and np.array_equal(a, c)
    assert not np.array_equal(a, bootstrap_weights(230, 100, strata=strata, seed=10))
    # stratified: every replicate keeps each site's size
    for s, size in (("a", 30), ("b", 50), ("c", 20)):
        assert np.all(a[:, strata == s].sum(axis=1) == size)


def test_cluster_bootstrap_draws_patients_whole():
    patients = np.repeat(np.arange(40), 3)[:100]
    sites = np.where(np.arange(100) < 60, "x", "y")
    w = bootstrap_weights(50, 100, clusters=patients, strata=sites, seed=1)
    for pid in np.unique(patients):
        for s in ("x", "y"):
            m = (patients == pid) & (sites == s)
            if m.sum() > 1:
                assert np.all(w[:, m] == w[:, m][:, :1])  # cases of one patient move together
    # within each site as many patients are drawn as it holds
    for s in ("x", "y"):
        m = sites == s
        units = {(pid) for pid in patients[m]}
        first = {}
        for i in np.flatnonzero(m):
            first.setdefault(patients[i], i)
        assert np.all(w[:, list(first.values())].sum(axis=1) == len(units))


def _data(n=150, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.beta(2, 4, n)
    y = (rng.random(n) < p).astype(int)
    return y, p


def test_weighted_binned_errors_equal_expanded_sample():
    y, p = _data(200)
    w = bootstrap_weights(20, 200, seed=3)
    for r in range(20):
        idx = np.repeat(np.arange(200), w[r].astype(int))
        assert weighted_ece(y.astype(float), p, w[r : r + 1])[0] == pytest.approx(ece(y[idx], p[idx]), rel=1e-12)
        assert weighted_ece(y.astype(float), p, w[r : r + 1], kind="mce")[0] == pytest.approx(
            mce(y[idx], p[idx]), rel=1e-12
        )
        order = np.argsort(p, kind="stable")
        idx_sorted = np.repeat(order, w[r][order].astype(int))
        assert weighted_ece_adaptive(y.astype(float), p, w[r : r + 1])[0] == pytest.approx(
            ece_adaptive(y[idx_sorted], p[idx_sorted]), rel=1e-10
        )


def test_block_intervals_equal_naive_loop():
    """binary_block's percentile intervals equal those of a plain loop over materialised resamples using
    scikit-learn and the point-estimate functions (same replicate weights)."""
    y, p = _data(150, seed=4)
    settings = MetricSettings(n_bootstrap=60, seed=5, min_events=1, min_cases=1)
    block = binary_block(y, p, settings=settings)
    W = bootstrap_weights(60, y.size, seed=5)
    # ECE's interval is not a percentile interval (validate.metrics.ece_interval; tests/test_ece_interval.py)
    naive = {k: [] for k in ("auprc", "brier", "log_loss", "eavg", "e90", "emax", "ici", "sensitivity")}
    for w in W:
        idx = np.repeat(np.arange(y.size), w.astype(int))
        yy, pp = y[idx], p[idx]
        naive["auprc"].append(skm.average_precision_score(yy, pp))
        naive["brier"].append(skm.brier_score_loss(yy, pp))
        naive["log_loss"].append(skm.log_loss(yy, pp))
        lc = lowess_calibration(yy, pp)
        for k in ("eavg", "e90", "emax"):
            naive[k].append(lc[k])
        naive["ici"].append(ici(yy, pp))
        naive["sensitivity"].append(skm.recall_score(yy, (pp >= 0.5).astype(int)))
    for k, reps in naive.items():
        lo, hi = np.quantile(reps, [0.025, 0.975])
        assert block[k]["method"] == "bootstrap"
        assert block[k]["ci_low"] == pytest.approx(lo, rel=1e-9, abs=1e-12), k
        assert block[k]["ci_high"] == pytest.approx(hi, rel=1e-9, abs=1e-12), k


def test_percentile_interval_is_type7_and_ignores_nan():
    r = np.array([np.nan, 1.0, 2.0, 3.0, 4.0, np.inf])
    assert percentile_interval(r, 0.5) == pytest.approx((1.75, 3.25))
    assert all(np.isnan(percentile_interval(np.array([np.nan]), 0.95)))


def test_paired_difference_of_identical_metrics_is_zero():
    y, p = _data(120)
    f = lambda w: weighted_ece(y.astype(float), p, w)  # noqa: E731
    out = paired_bootstrap_difference(f, f, y.size, n_rep=50, seed=0)
    assert out["estimate"] == 0 and out["ci_low"] == 0 and out["ci_high"] == 0


def test_moment_engine_equals_smoothers_on_expanded_sample():
    """The segment-moment evaluation of a replicate's lowess/loess errors equals running the smoothers
    on the materialised resample (ties included)."""
    from validate.metrics.blocks import _BinaryData

    rng = np.random.default_rng(12)
    # n = 10000: leaves of 32 cases and a deep tree; clustered: replicates of different sizes
    for n, digits, reps, clustered in (
        (1500, None, 4, False),
        (1200, 2, 4, False),
        (10000, 3, 2, False),
        (3000, None, 4, True),
    ):
        p = rng.beta(1.2, 6, n)
        if digits:
            p = np.round(p, digits)
        y = (rng.random(n) < p).astype(float)
        data = _BinaryData(y, p, 15)
        clusters = rng.integers(0, n // 3, n) if clustered else None
        W = bootstrap_weights(reps, n, clusters=clusters, seed=n)
        if clustered:
            assert np.unique(W.sum(axis=1)).size > 1
        fast = data.smooth_replicates_fast(W)
        for r, w in enumerate(W):
            slow = data.smooth_replicate(w)
            for k in ("eavg", "e50", "e90", "emax", "ici"):
                assert fast[k][r] == pytest.approx(slow[k], rel=1e-9, abs=1e-12), k


@pytest.mark.parametrize("block", [1, 3, 16, 256])
def test_blocked_adaptive_ece_equals_array_split_of_expanded_sample(block):
    """The blocked adaptive-ECE kernel (block sums, then one block cumulated per edge) against equal-mass
    groups formed directly by ``np.array_split`` of the expanded sorted sample, with sparse and heavy
    counts so edges fall inside, between and after blocks."""
    from validate.metrics.calibration import ece_adaptive_sorted

    rng = np.random.default_rng(11)
    for trial in range(12):
        n = int(rng.integers(2, 400))
        p = np.sort(rng.random(n))
        y = (rng.random(n) < p).astype(float)
        lam = (0.05, 0.5, 1.0, 3.0)[trial % 4]
        W = rng.poisson(lam, (4, n)).astype(float)
        W[:, 0] += 1  # no empty replicate
        bins = int(rng.integers(2, 16))
        got = ece_adaptive_sorted(y, p, W, bins, block=block)
        for r in range(4):
            idx = np.repeat(np.arange(n), W[r].astype(int))
            groups = np.array_split(np.arange(idx.size), bins)
            expected = sum(abs((y[idx][g] - p[idx][g]).sum()) for g in groups) / idx.size
            assert got[r] == pytest.approx(expected, rel=1e-10, abs=1e-14)


def test_untied_auprc_kernel_equals_sklearn_weighted():
    """The event-segment average precision used for untied scores equals scikit-learn's with counts."""
    from validate.metrics.blocks import _auprc_untied

    rng = np.random.default_rng(12)
    n = 3000
    p = np.sort(rng.random(n))
    y = (rng.random(n) < p).astype(int)
    W = rng.poisson(1.0, (5, n)).astype(float)
    got = _auprc_untied(np.flatnonzero(y), W)
    for r in range(5):
        assert got[r] == pytest.approx(skm.average_precision_score(y, p, sample_weight=W[r]), rel=1e-12)
