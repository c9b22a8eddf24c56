"""Two-sample shift statistics against independent references (statsmodels, scipy, hand formulas)."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint, proportions_ztest
from statsmodels.stats.weightstats import ttest_ind as sm_ttest_ind

from validate.analysis import two_sample as ts


@pytest.mark.parametrize("k,n", [(0, 20), (3, 20), (10, 20), (20, 20), (137, 303)])
@pytest.mark.parametrize("level", [0.9, 0.95])
def test_wilson_matches_statsmodels(k, n, level):
    lo, hi = ts.wilson_interval(k, n, level)
    ref = proportion_confint(k, n, alpha=1 - level, method="wilson")
    assert lo == pytest.approx(ref[0], abs=1e-12)
    assert hi == pytest.approx(ref[1], abs=1e-12)


@pytest.mark.parametrize("ka,na,kb,nb", [(53, 294, 139, 303), (115, 123, 139, 303), (0, 40, 5, 50), (9, 10, 1, 10)])
def test_newcombe_matches_statsmodels(ka, na, kb, nb):
    d, lo, hi = ts.newcombe_difference(ka, na, kb, nb, 0.95)
    ref = confint_proportions_2indep(ka, na, kb, nb, method="newcomb", compare="diff", alpha=0.05)
    assert d == pytest.approx(ka / na - kb / nb)
    assert lo == pytest.approx(ref[0], abs=1e-12)
    assert hi == pytest.approx(ref[1], abs=1e-12)


def test_two_proportion_z_matches_statsmodels():
    res = ts.two_proportion_test(106, 294, 139, 303)
    z, p = proportions_ztest([106, 139], [294, 303])
    assert res["test"] == "two_proportion_z"
    assert res["statistic"] == pytest.approx(z, rel=1e-12)
    assert res["p_value"] == pytest.approx(p, rel=1e-10)


def test_two_proportion_small_counts_use_fisher():
    res = ts.two_proportion_test(1, 12, 6, 14)
    assert res["test"] == "fisher_exact"
    assert res["p_value"] == pytest.approx(stats.fisher_exact([[1, 11], [6, 8]]).pvalue, rel=1e-12)


def test_two_proportion_undefined_when_no_events():
    res = ts.proportion_shift(0, 30, 0, 40)
    assert res["p_value"] is None and "reason" in res
    assert res["effect"] == 0.0


def test_smd_by_hand():
    a = [1.0, 2.0, 3.0, 4.0]
    b = [2.0, 4.0, 6.0]
    expected = (statistics.mean(a) - statistics.mean(b)) / math.sqrt(
        (statistics.variance(a) + statistics.variance(b)) / 2
    )
    assert ts.standardized_mean_difference(np.array(a), np.array(b)) == pytest.approx(expected, rel=1e-14)
    assert expected == pytest.approx(-0.8911327886790069)


def test_numeric_shift_welch_and_missing():
    rng = np.random.default_rng(1)
    a = rng.normal(0.3, 1.0, 80)
    b = rng.normal(0.0, 2.0, 120)
    a_nan = np.r_[a, [np.nan, np.nan]]
    res = ts.numeric_shift(a_nan, b)
    t, p, _ = sm_ttest_ind(a, b, usevar="unequal")
    assert res["statistic"] == pytest.approx(t, rel=1e-10)
    assert res["p_value"] == pytest.approx(p, rel=1e-8)
    assert res["site"]["missing"] == 2 and res["site"]["n"] == 80
    assert res["effect"] == pytest.approx((a.mean() - b.mean()) / np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2))


def test_numeric_shift_constant():
    res = ts.numeric_shift(np.ones(10), np.ones(12))
    assert res["p_value"] is None and res["effect"] == 0.0


def test_categorical_matches_scipy():
    rng = np.random.default_rng(2)
    a = rng.choice(["GE", "Siemens", "Philips"], 150, p=[0.5, 0.3, 0.2]).tolist() + [None, np.nan]
    b = rng.choice(["GE", "Siemens", "Philips", "Canon"], 200, p=[0.3, 0.3, 0.3, 0.1]).tolist()
    res = ts.categorical_shift(a, b)
    frame = pd.DataFrame({"v": a + b, "g": ["a"] * len(a) + ["b"] * len(b)}).dropna()
    table = pd.crosstab(frame["g"], frame["v"]).to_numpy()
    chi2, p, df, _ = stats.chi2_contingency(table, correction=False)
    assert res["statistic"] == pytest.approx(chi2, rel=1e-12)
    assert res["p_value"] == pytest.approx(p, rel=1e-10)
    assert res["df"] == df == 3
    assert res["effect"] == pytest.approx(stats.contingency.association(table, method="cramer"), rel=1e-12)
    assert res["site"]["missing"] == 2
    assert res["levels"] == ["Canon", "GE", "Philips", "Siemens"]


def test_categorical_float_codes_equal_int_codes():
    # a column read as float after a missing value must not split level 1 into "1" and "1.0"
    res = ts.categorical_shift([1.0, 0.0, 1.0, np.nan], [1, 0, 0])
    assert res["levels"] == ["0", "1"]


def test_categorical_2x2_is_uncorrected_pearson():
    a = ["m"] * 30 + ["f"] * 20
    b = ["m"] * 20 + ["f"] * 30
    res = ts.categorical_shift(a, b)
    chi2, p, _, _ = stats.chi2_contingency([[30, 20], [20, 30]], correction=False)
    assert res["statistic"] == pytest.approx(chi2) and res["p_value"] == pytest.approx(p)


def _ecdf_sup(a, b):
    grid = np.sort(np.r_[a, b])
    fa = np.searchsorted(np.sort(a), grid, side="right") / a.size
    fb = np.searchsorted(np.sort(b), grid, side="right") / b.size
    return np.abs(fa - fb).max()


def _w1(a, b):
    grid = np.sort(np.r_[a, b])
    fa = np.searchsorted(np.sort(a), grid[:-1], side="right") / a.size
    fb = np.searchsorted(np.sort(b), grid[:-1], side="right") / b.size
    return np.sum(np.abs(fa - fb) * np.diff(grid))


def test_score_shift_ks_and_wasserstein():
    rng = np.random.default_rng(3)
    a = stats.beta(2, 3).rvs(300, random_state=rng)
    b = stats.beta(2, 4).rvs(400, random_state=rng)
    res = ts.score_shift(a, b)
    ks = stats.ks_2samp(a, b)
    assert res["ks"] == pytest.approx(ks.statistic) == pytest.approx(_ecdf_sup(a, b))
    assert res["p_value"] == pytest.approx(ks.pvalue)
    assert res["wasserstein"] == pytest.approx(stats.wasserstein_distance(a, b), rel=1e-10)
    assert res["wasserstein"] == pytest.approx(_w1(a, b), rel=1e-10)


def _psi_pandas(a, b, eps=1e-4):
    edges = np.unique(pd.Series(b).quantile(np.arange(1, 10) / 10).to_numpy())
    bins = np.r_[-np.inf, edges, np.inf]
    pa = pd.cut(pd.Series(a), bins, right=True).value_counts(sort=False, normalize=True).to_numpy()
    pb = pd.cut(pd.Series(b), bins, right=True).value_counts(sort=False, normalize=True).to_numpy()
    pa, pb = np.maximum(pa, eps), np.maximum(pb, eps)
    return float(np.sum((pa - pb) * np.log(pa / pb)))


def test_psi_matches_pandas_binning():
    rng = np.random.default_rng(4)
    b = rng.uniform(size=1000)
    for a in (rng.uniform(size=700), rng.beta(3, 1, size=500), np.full(50, 0.05)):
        res = ts.population_stability_index(a, b)
        assert res["psi"] == pytest.approx(_psi_pandas(a, b), rel=1e-12)


def test_psi_ties_at_edges():
    b = np.repeat([0.1, 0.2, 0.3, 0.9], 25)  # deciles tie: edges merge
    a = np.repeat([0.1, 0.9], 50)
    res = ts.population_stability_index(a, b)
    assert res["psi"] == pytest.approx(_psi_pandas(a, b), rel=1e-12)
    assert len(res["site"]) == len(res["edges"]) + 1


def _mmd2_loop(a, b, sigma):
    def k(x, y):
        return math.exp(-np.sum((x - y) ** 2) / (2 * sigma**2))

    m, n = len(a), len(b)
    saa = sum(k(a[i], a[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    sbb = sum(k(b[i], b[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    sab = sum(k(a[i], b[j]) for i in range(m) for j in range(n)) / (m * n)
    return saa + sbb - 2 * sab


def test_mmd_statistic_by_hand():
    rng = np.random.default_rng(5)
    a = rng.normal(0, 1, (12, 3))
    b = rng.normal(0.5, 1, (15, 3))
    res = ts.mmd_permutation_test(a, b, n_permutations=50, seed=0)
    z = np.vstack([a, b])
    d = [np.linalg.norm(z[i] - z[j]) for i in range(len(z)) for j in range(i + 1, len(z))]
    sigma = float(np.median(d))
    assert res["bandwidth"] == pytest.approx(sigma, rel=1e-10)
    assert res["statistic"] == pytest.approx(_mmd2_loop(a, b, sigma), rel=1e-9)


def test_mmd_detects_shift_and_is_seeded():
    rng = np.random.default_rng(6)
    a = rng.normal(0.6, 1, (80, 8))
    b = rng.normal(0.0, 1, (100, 8))
    r1 = ts.mmd_permutation_test(a, b, n_permutations=200, seed=3)
    r2 = ts.mmd_permutation_test(a, b, n_permutations=200, seed=3)
    assert r1["p_value"] == r2["p_value"] < 0.01


def test_mmd_null_rejection_rate():
    # 200 null comparisons: rejections at 0.05 stay inside the binomial 99% band
    rng = np.random.default_rng(7)
    rejections = 0
    reps = 200
    for r in range(reps):
        z = rng.normal(size=(60, 4))
        res = ts.mmd_permutation_test(z[:25], z[25:], n_permutations=99, seed=r)
        rejections += res["p_value"] <= 0.05
    lo, hi = stats.binom.ppf([0.005, 0.995], reps, 0.05)
    assert lo <= rejections <= hi


def test_histogram_shift():
    a = np.array([[1, 1, 0, 0], [2, 2, 0, 0]], float)
    b = np.array([[0, 0, 1, 1]], float)
    res = ts.histogram_shift(a, b)
    assert res["total_variation"] == pytest.approx(1.0)
    assert res["site"] == [0.5, 0.5, 0.0, 0.0]


@pytest.mark.parametrize("seed", range(3))
def test_corrections_match_statsmodels(seed):
    p = np.random.default_rng(seed).uniform(0, 0.2, 17)
    p[3] = p[5]  # a tie
    assert np.allclose(ts.holm(p), multipletests(p, method="holm")[1], atol=1e-15)
    assert np.allclose(ts.benjamini_hochberg(p), multipletests(p, method="fdr_bh")[1], atol=1e-15)
