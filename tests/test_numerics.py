"""validate.numerics: the one floor, logit, sigmoid, softmax and Wilson interval, against independent
references (scipy, statsmodels, hand-computed values)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import special
from statsmodels.stats.proportion import proportion_confint

from validate import numerics
from validate.numerics import (
    PROB_FLOOR,
    log_probability,
    log_sigmoid,
    log_softmax,
    logit,
    one_vs_rest_log_odds,
    sigmoid,
    softmax,
    wilson_interval,
)


def test_floor_and_logit_by_hand():
    assert PROB_FLOOR == 1e-15
    assert logit(0.5) == 0.0
    assert logit(0.75) == pytest.approx(math.log(3.0), rel=1e-15)
    # 0 and 1 are clipped to the floor, never to ±inf
    assert logit(0.0) == pytest.approx(math.log(1e-15 / (1 - 1e-15)), rel=1e-12)
    assert logit(1.0) == pytest.approx(-math.log(1e-15 / (1 - 1e-15)), rel=1e-3)
    p = np.array([1e-12, 0.01, 0.3, 0.999])
    np.testing.assert_allclose(logit(p), special.logit(p), rtol=1e-12)
    np.testing.assert_allclose(sigmoid(logit(p)), p, rtol=1e-12)


def test_log_probability_floor_without_upper_clip():
    assert log_probability(1.0) == 0.0
    assert log_probability(0.0) == pytest.approx(math.log(1e-15))
    np.testing.assert_allclose(log_probability([0.2, 0.5]), np.log([0.2, 0.5]), rtol=0)


def test_sigmoid_softmax_and_logs_match_scipy():
    z = np.array([[-800.0, 0.0, 3.5], [40.0, 39.0, -2.0], [1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(softmax(z), special.softmax(z, axis=1))
    np.testing.assert_allclose(log_softmax(z), special.log_softmax(z, axis=1), rtol=1e-14, atol=1e-300)
    np.testing.assert_array_equal(sigmoid(z), special.expit(z))
    np.testing.assert_allclose(log_sigmoid(z), special.log_expit(z), rtol=1e-14)
    assert np.all(np.isfinite(log_sigmoid(z)))


def test_one_vs_rest_log_odds_is_logit_of_softmax():
    z = np.random.default_rng(3).normal(0, 2, (50, 4))
    np.testing.assert_allclose(one_vs_rest_log_odds(z), special.logit(special.softmax(z, axis=1)), atol=1e-9)
    # distinct where softmax saturates to 1.0
    big = np.array([[50.0, 0.0], [60.0, 0.0]])
    assert np.all(softmax(big)[:, 0] == 1.0) and one_vs_rest_log_odds(big)[1, 0] > one_vs_rest_log_odds(big)[0, 0]


@pytest.mark.parametrize("level", [0.8, 0.9, 0.95, 0.99])
def test_wilson_matches_statsmodels_on_a_grid(level):
    n = np.repeat(np.arange(1, 61), 61)
    k = np.tile(np.arange(61), 60)
    keep = k <= n
    k, n = k[keep], n[keep]
    lo, hi = wilson_interval(k, n, level)
    ref_lo, ref_hi = proportion_confint(k, n, alpha=1 - level, method="wilson")
    np.testing.assert_allclose(lo, np.maximum(ref_lo, 0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(hi, np.minimum(ref_hi, 1), rtol=0, atol=1e-12)
    assert np.all((lo >= 0) & (hi <= 1) & (lo <= k / n + 1e-12) & (k / n <= hi + 1e-12))  # k/n inside, to rounding


def test_wilson_scalar_and_array_agree_bit_for_bit():
    k, n = np.array([0, 3, 137, 20]), np.array([20, 20, 303, 20])
    lo, hi = wilson_interval(k, n)
    for i in range(k.size):
        slo, shi = wilson_interval(int(k[i]), int(n[i]))
        assert isinstance(slo, float) and isinstance(shi, float)
        assert (slo, shi) == (lo[i], hi[i])


def test_wilson_by_hand():
    # k = 0, n = 10, z = 1.959964: upper bound z²/(n + z²) = 3.8415/13.8415
    z = 1.959963984540054
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(z * z / (10 + z * z), rel=1e-12)


def test_wilson_undefined_without_trials():
    """n = 0: no information, so no interval (NaN, written null), never [0, 1]."""
    lo, hi = wilson_interval(0, 0)
    assert math.isnan(lo) and math.isnan(hi)
    lo, hi = wilson_interval(np.array([0, 2]), np.array([0, 4]))
    assert np.isnan(lo[0]) and np.isnan(hi[0]) and 0 < lo[1] < 0.5 < hi[1] < 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = proportion_confint(0, 0, method="wilson")
    assert all(math.isnan(v) for v in ref)  # statsmodels has no interval either


def test_one_definition_each():
    """The floor and the transforms are defined once: every other module re-exports these objects."""
    from validate import predictions
    from validate.analysis import sites, two_sample
    from validate.calibrators import base
    from validate.metrics import checks

    assert (
        checks.PROB_FLOOR is base.PROB_FLOOR is predictions.PROB_FLOOR is numerics.PROB_FLOOR
        or checks.PROB_FLOOR == base.PROB_FLOOR == predictions.PROB_FLOOR == numerics.PROB_FLOOR
    )
    assert checks.logit is base.logit is numerics.logit
    assert checks.sigmoid is base.sigmoid is numerics.sigmoid
    assert base.softmax is numerics.softmax and base.log_sigmoid is numerics.log_sigmoid
    assert sites.wilson_interval is two_sample.wilson_interval is numerics.wilson_interval
    assert predictions.one_vs_rest_log_odds is numerics.one_vs_rest_log_odds


def test_wilson_bounds_at_zero_and_all_successes_are_exact():
    # rounding left lower bounds of ~1e-19 at k = 0 (n = 303), which put the estimate 0 outside its own
    # interval in shift.json's missingness entries
    k = np.array([0, 0, 303, 294, 7])
    n = np.array([303, 294, 303, 294, 10])
    lo, hi = wilson_interval(k, n)
    assert np.all(lo[:2] == 0.0) and np.all(hi[2:4] == 1.0)
    assert np.all((lo <= k / n) & (k / n <= hi))
