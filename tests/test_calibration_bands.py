"""Pointwise bands of the lowess and loess calibration curves (validate.metrics.smooth_band): the band of
curves.json equals percentiles of a naive loop that fits R's smoothers (the engine's own ports, checked
against R in tests/test_metrics_r.py) to each materialised resample of the metrics' replicates; the
moment engine's curves equal the expanded-sample fits; the figure draws it, captioned pointwise."""

from __future__ import annotations

import numpy as np
import pytest

from validate import charts
from validate.analysis.sites import binary_curves
from validate.metrics.bootstrap import bootstrap_weights
from validate.metrics.smooth import clowess, loess_smooth
from validate.metrics.smooth_band import replicate_curves, smooth_band, smooth_grid


def _data(n, seed):
    rng = np.random.default_rng(seed)
    p = np.round(rng.beta(2, 4, n), 3)  # rounded: ties, as real scores have
    y = (rng.random(n) < p**1.2).astype(int)
    return y, p


def _naive_curves(y, p, w, grid):
    """One resample's smooths on the grid: R's lowess(p, y, iter = 0) interpolated as approx(ties =
    mean) (distinct x, mean fitted value per x), and loess(y ~ p) at the grid; NaN outside the resample."""
    idx = np.repeat(np.arange(y.size), w.astype(int))
    o = np.argsort(p[idx], kind="stable")
    xs, ys = p[idx][o], y[idx][o].astype(float)
    fit = clowess(xs, ys)
    ux = np.unique(xs)
    uy = np.array([fit[xs == u].mean() for u in ux])
    inside = (grid >= xs[0]) & (grid <= xs[-1])
    low = np.where(inside, np.interp(grid, ux, uy), np.nan)
    loe = np.where(inside, loess_smooth(xs, ys, xout=grid), np.nan)
    return np.clip(low, 0, 1), np.clip(loe, 0, 1)


def test_band_equals_naive_percentiles_of_refitted_resamples():
    y, p = _data(250, seed=1)
    clusters = np.arange(250) // 2  # two cases per patient: the replicates are patient-clustered
    band = smooth_band(y, p, n_rep=60, seed=4, level=0.9, clusters=clusters)
    grid = np.linspace(p.min(), p.max(), 101)
    assert band["kind"] == "pointwise" and band["level"] == 0.9 and band["replicates"] == 60
    assert np.allclose(band["grid"], grid, rtol=0, atol=1e-15)
    rows = [_naive_curves(y, p, w, grid) for w in bootstrap_weights(60, 250, clusters=clusters, seed=4)]
    for j, key in enumerate(("lowess", "loess")):
        vals = np.array([r[j] for r in rows])
        for g in (0, 10, 50, 90, 100):
            col = vals[:, g][np.isfinite(vals[:, g])]
            if col.size < 30:
                assert band[f"{key}_low"][g] is None
                continue
            lo, hi = np.quantile(col, [0.05, 0.95])
            assert band[f"{key}_low"][g] == pytest.approx(lo, abs=1e-10), (key, g)
            assert band[f"{key}_high"][g] == pytest.approx(hi, abs=1e-10), (key, g)
    # the point smooths on the grid are those of the cases themselves
    low, loe = _naive_curves(y, p, np.ones(250), grid)
    assert np.allclose(np.array(band["lowess"], dtype=float), low, atol=1e-12)
    assert np.allclose(np.array(band["loess"], dtype=float), loe, atol=1e-12)


def test_moment_engine_curves_equal_expanded_sample_fits():
    y, p = _data(1200, seed=2)
    grid = smooth_grid(p)
    W = bootstrap_weights(8, y.size, seed=9)
    fast = replicate_curves(y, p, W, grid, fast=True)
    slow = replicate_curves(y, p, W, grid, fast=False)
    for a, b in zip(fast, slow, strict=True):
        assert np.array_equal(np.isnan(a), np.isnan(b))
        assert np.nanmax(np.abs(a - b)) < 1e-10


def test_band_in_curves_json_and_pooled_band_is_site_stratified():
    y, p = _data(300, seed=3)
    sites = np.array(["a"] * 100 + ["b"] * 200, dtype=object)
    curves = binary_curves(y, p, n_rep=40, seed=1, level=0.95, strata=sites)
    band = curves["reliability"]["smooth_band"]
    want = smooth_band(y, p, n_rep=40, seed=1, level=0.95, strata=sites)
    assert band == want
    plain = smooth_band(y, p, n_rep=40, seed=1, level=0.95)
    assert band["lowess_low"] != plain["lowess_low"]  # a different resampling scheme, not ignored
    assert "smooth_band" not in binary_curves(y, p, n_rep=0)["reliability"]


def test_band_is_inside_unit_interval_and_brackets_the_smooth_mostly():
    y, p = _data(400, seed=5)
    band = smooth_band(y, p, n_rep=100, seed=0, level=0.95)
    for key in ("lowess", "loess"):
        lo = np.array([np.nan if v is None else v for v in band[f"{key}_low"]])
        hi = np.array([np.nan if v is None else v for v in band[f"{key}_high"]])
        mid = np.array(band[key], dtype=float)
        ok = np.isfinite(lo)
        assert ok.mean() > 0.9
        assert np.all((lo[ok] >= 0) & (hi[ok] <= 1) & (lo[ok] <= hi[ok]))
        assert np.mean((lo[ok] <= mid[ok]) & (mid[ok] <= hi[ok])) > 0.9


def test_reliability_figure_draws_band_captioned_pointwise():
    y, p = _data(200, seed=6)
    curve = binary_curves(y, p, n_rep=30, seed=0)
    fig = charts.reliability_figure(curve)
    names = [t.name for t in fig.data]
    assert "lowess 95% band (pointwise, not simultaneous)" in names
    assert "loess 95% band (pointwise, not simultaneous)" in names
    assert any(n and "(Wilson)" in n for n in names)
    band = next(t for t in fig.data if t.name.startswith("lowess 95% band"))
    assert band.fill == "toself" and band.visible is not False
    loess = next(t for t in fig.data if t.name.startswith("loess 95% band"))
    assert loess.visible == "legendonly"
    # without replicates: no band, nothing claims one
    fig0 = charts.reliability_figure(binary_curves(y, p, n_rep=0))
    assert not any(t.name and "band" in t.name for t in fig0.data)
