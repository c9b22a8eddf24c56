"""ECE, adaptive ECE and MCE intervals (validate.metrics.ece_interval): they contain their estimate, equal
a naive loop over materialised resamples, and cover the true error at the nominal rate on perfectly
calibrated data (where the old percentile interval never did)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from validate.metrics import MetricSettings, binary_block
from validate.metrics.bootstrap import bootstrap_weights

from test_run_helpers import synthetic_bundle  # noqa: F401 (fixture)

BINS = 15


def _data(n, seed, power=1.0):
    rng = np.random.default_rng(seed)
    p = rng.beta(2, 5, n)
    y = (rng.random(n) < p**power).astype(int)
    return y, p


def _bins(p):
    """Equal-width right-closed bins, written out independently of the engine: bin = ceil(p·B) − 1, p = 0
    in the first."""
    return np.maximum(np.ceil(p * BINS).astype(int) - 1, 0)


def test_ece_interval_equals_naive_bound_and_contains_estimate():
    """ci = ECE ± c, c the 95% quantile over resamples of Σ_b |S*_b/N* − S_b/N| (S_b = Σ_{i∈b}(y − p)),
    computed here by a plain loop over materialised resamples with the same replicate weights."""
    y, p = _data(400, seed=3)
    settings = MetricSettings(n_bootstrap=200, seed=7, min_cases=1, min_events=1)
    block = binary_block(y, p, settings=settings)
    b = _bins(p)
    S = np.bincount(b, weights=y - p, minlength=BINS) / y.size
    ece = np.abs(S).sum()
    errors, plugin = [], []
    for w in bootstrap_weights(200, y.size, seed=7):
        idx = np.repeat(np.arange(y.size), w.astype(int))
        Sr = np.bincount(b[idx], weights=(y - p)[idx], minlength=BINS) / idx.size
        errors.append(np.abs(Sr - S).sum())
        plugin.append(np.abs(Sr).sum())
    c = np.quantile(errors, 0.95)
    e = block["ece"]
    assert e["method"] == "bootstrap_bound"
    assert e["estimate"] == pytest.approx(ece, rel=1e-12)
    assert e["ci_low"] == pytest.approx(max(0.0, ece - c), rel=1e-9, abs=1e-12)
    # the upper end: ECE + c, never below the percentile interval's upper end (97.5% of ECE*)
    top = np.quantile(plugin, 0.975)
    assert e["ci_high"] == pytest.approx(max(ece + c, top), rel=1e-9)
    for k in ("ece", "ece_adaptive", "mce"):
        assert block[k]["ci_low"] <= block[k]["estimate"] <= block[k]["ci_high"], k


def test_adaptive_ece_bound_uses_the_sample_equal_mass_groups():
    y, p = _data(301, seed=5)
    settings = MetricSettings(n_bootstrap=100, seed=2, min_cases=1, min_events=1)
    block = binary_block(y, p, settings=settings)
    order = np.argsort(p, kind="stable")
    groups = np.repeat(np.arange(BINS), [len(a) for a in np.array_split(np.arange(y.size), BINS)])
    g = np.empty(y.size, dtype=int)
    g[order] = groups
    S = np.bincount(g, weights=y - p, minlength=BINS) / y.size
    errors = []
    for w in bootstrap_weights(100, y.size, seed=2):
        idx = np.repeat(np.arange(y.size), w.astype(int))
        errors.append(np.abs(np.bincount(g[idx], weights=(y - p)[idx], minlength=BINS) / idx.size - S).sum())
    c = np.quantile(errors, 0.95)
    e = block["ece_adaptive"]
    assert e["estimate"] == pytest.approx(np.abs(S).sum(), rel=1e-12)
    assert e["ci_low"] == pytest.approx(max(0.0, e["estimate"] - c), rel=1e-9, abs=1e-12)
    assert e["ci_high"] >= e["estimate"] + c - 1e-12


def test_mce_interval_is_wilson_bonferroni_projection():
    """[max_b dist(0, G_b), max_b max|G_b|], G_b the bin's Wilson interval (level 1 − 0.05/K) minus its
    mean p; the Wilson interval written out from its formula (Newcombe 1998, method 3)."""
    y, p = _data(250, seed=11)
    block = binary_block(y, p, settings=MetricSettings(n_bootstrap=50, seed=1, min_cases=1, min_events=1))
    b = _bins(p)
    lows, highs = [], []
    K = len(np.unique(b))
    z = norm.ppf(1 - 0.05 / K / 2)
    for k in np.unique(b):
        m = b == k
        n, r = m.sum(), y[m].mean()
        centre = (r + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * math.sqrt(r * (1 - r) / n + z * z / (4 * n * n))
        lo, hi = max(0.0, centre - half) - p[m].mean(), min(1.0, centre + half) - p[m].mean()
        lows.append(0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi)))
        highs.append(max(abs(lo), abs(hi)))
    e = block["mce"]
    assert e["method"] == "wilson_bonferroni"
    assert e["ci_low"] == pytest.approx(max(lows), rel=1e-9, abs=1e-12)
    # never below the percentile interval's upper end (97.5% of the replicates' MCE, naive loop)
    reps = []
    for w in bootstrap_weights(50, y.size, seed=1):
        idx = np.repeat(np.arange(y.size), w.astype(int))
        gaps = [abs(y[idx][b[idx] == k].mean() - p[idx][b[idx] == k].mean()) for k in np.unique(b[idx])]
        reps.append(max(gaps))
    assert e["ci_high"] == pytest.approx(max(max(highs), np.quantile(reps, 0.975)), rel=1e-9)


def test_debiased_ece_is_kumar_gaussian_correction():
    """Kumar et al. 2019's normal_debiased_ce: 2 ECE − E[ECE of labels' means drawn from N(ȳ_b, σ_b²)],
    evaluated here by Monte Carlo as in their code (the engine uses the closed form)."""
    y, p = _data(500, seed=13)
    block = binary_block(y, p, settings=MetricSettings(n_bootstrap=20, seed=1, min_cases=1, min_events=1))
    b = _bins(p)
    ks = np.unique(b)
    n = np.array([np.sum(b == k) for k in ks])
    ybar = np.array([y[b == k].mean() for k in ks])
    pbar = np.array([p[b == k].mean() for k in ks])
    sd = np.sqrt(ybar * (1 - ybar) / n)
    rng = np.random.default_rng(0)
    draws = rng.normal(ybar, sd, size=(200_000, ks.size))
    mc = (np.abs(draws - pbar) * n).sum(axis=1).mean() / y.size
    plugin = (np.abs(ybar - pbar) * n).sum() / y.size
    assert block["ece"]["debiased"] == pytest.approx(2 * plugin - mc, abs=2e-4)


def _coverage(power: float, sims: int, n: int, n_rep: int) -> tuple[float, float, float]:
    """Share of simulated samples whose ECE interval covers the true ECE (population bins), with the new
    interval and the old percentile interval."""
    rng = np.random.default_rng(99)
    big = rng.beta(2, 5, 2_000_000)
    b = _bins(big)
    true = np.abs(np.bincount(b, weights=big**power - big, minlength=BINS)).sum() / big.size
    new = old = 0
    settings = MetricSettings(n_bootstrap=n_rep, seed=0, min_cases=1, min_events=1)
    for s in range(sims):
        y, p = _data(n, seed=1000 + s, power=power)
        e = binary_block(y, p, settings=settings, smooth_intervals=False)["ece"]
        new += e["ci_low"] <= true <= e["ci_high"]
        onehot = np.eye(BINS)[_bins(p)]
        W = bootstrap_weights(n_rep, n, seed=0)
        reps = np.abs(W @ (onehot * (y - p)[:, None])).sum(axis=1) / W.sum(axis=1)
        lo, hi = np.quantile(reps, [0.025, 0.975])
        old += lo <= true <= hi
    return new / sims, old / sims, true


@pytest.mark.slow
def test_coverage_on_perfectly_calibrated_data():
    """y ~ Bernoulli(p): the true ECE is 0. The interval covers it at the nominal 95% (exactly, in
    theory: there ECE equals the bounded error); binomial sd of the share over 300 samples is 1.3%. The
    percentile interval of the replicates covers it in (almost) none."""
    new, old, true = _coverage(1.0, sims=300, n=500, n_rep=300)
    assert true == 0.0
    assert 0.91 <= new <= 0.99, new
    assert old < 0.05, old


@pytest.mark.slow
def test_coverage_on_miscalibrated_data_is_at_least_nominal():
    """y ~ Bernoulli(p^1.5), true ECE ≈ 0.115: the bound is conservative away from 0 (coverage ≥ 95%)."""
    new, _, true = _coverage(1.5, sims=100, n=500, n_rep=300)
    assert true > 0.1
    assert new >= 0.93, new


def test_an_estimate_outside_its_percentile_interval_carries_a_note():
    from validate.metrics.ece_interval import with_note

    inside = with_note({"estimate": 0.2, "ci_low": 0.1, "ci_high": 0.3, "method": "bootstrap"})
    assert "note" not in inside
    below = with_note({"estimate": 0.02, "ci_low": 0.03, "ci_high": 0.07, "method": "bootstrap"})
    assert "lies below" in below["note"] and "biased upward" in below["note"]
    # wired into the blocks: a percentile entry from replicates that all lie above the estimate
    from validate.metrics.blocks import _BinaryEntries

    entries = _BinaryEntries({"emax": 0.02}, {"emax": np.linspace(0.03, 0.07, 101)}, MetricSettings(), True)
    e = entries("emax")
    assert e["ci_low"] == pytest.approx(0.031) and "lies below" in e["note"]


def test_report_marks_a_noted_entry_and_states_the_interval_methods(synthetic_bundle):  # noqa: F811
    import json

    from validate.contract import Block
    from validate.report.render import _block_cell

    note = "the estimate lies below its bootstrap percentile interval: ..."
    block = Block.model_validate(
        {"n": 10, "emax": {"estimate": 0.02, "ci_low": 0.03, "ci_high": 0.07, "method": "bootstrap", "note": note}}
    )
    html, _ = _block_cell(block, "emax")
    assert "†" in html and note in html
    plain = Block.model_validate({"n": 10, "eavg": {"estimate": 0.05, "ci_low": 0.03, "ci_high": 0.07}})
    assert "†" not in _block_cell(plain, "eavg")[0]
    # a real run: the methods text names the intervals; its ECE entries use them and contain their estimate
    report = (synthetic_bundle["bundle"] / "report.html").read_text(encoding="utf-8")
    assert "Kumar, Liang &amp; Ma 2019" in report and "pointwise, not simultaneous" in report
    metrics = json.loads((synthetic_bundle["bundle"] / "metrics.json").read_text())
    for block in [metrics["overall"], *metrics["sites"].values()]:
        for k in ("ece", "ece_adaptive", "mce"):
            e = block[k]
            assert e["method"] in ("bootstrap_bound", "wilson_bonferroni"), k
            assert e["ci_low"] <= e["estimate"] <= e["ci_high"], k
