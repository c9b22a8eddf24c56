"""The point-estimate smoothers (lowess for Eavg/E50/E90/Emax, loess for ICI) on large blocks: their
temporaries stay a few columns of the block whatever n (issue #21), and the pieces they now work in give
the same smooths as the whole-window arithmetic and independent references."""

from __future__ import annotations

import functools
import tracemalloc

import numpy as np
import pytest

from validate.metrics import smooth
from validate.metrics.smooth import _closer_than, _nearest_run, clowess, loess_smooth


def _peak(build) -> int:
    """Peak of NumPy's allocations while ``build()`` runs, in bytes above what was held before."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        build()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def _cases(n: int, seed: int = 0, decimals: int | None = None):
    rng = np.random.default_rng(seed)
    p = rng.random(n)
    if decimals is not None:
        p = np.round(p, decimals)
    y = (rng.random(n) < p).astype(np.float64)
    return y, p


N_BIG = 600_000
WINDOW_CELLS = 1 << 18  # smooth._local_lines' default block of window cells


def test_clowess_temporaries_are_a_few_columns():
    y, p = _cases(N_BIG)
    x = np.sort(p)
    peak = _peak(lambda: clowess(x, y))
    # the result and two index columns, plus a dozen arrays of one block of window cells; the whole
    # window (2/3 of the cases) per fit and per-case Python lists held ~600 bytes a case here
    assert peak <= 3 * 8 * N_BIG + 12 * 8 * WINDOW_CELLS


def test_lowess_errors_temporaries_are_a_few_columns():
    y, p = _cases(N_BIG, seed=1)
    peak = _peak(lambda: smooth._lowess_errors(y, p))
    assert peak <= 5 * 8 * N_BIG + 12 * 8 * WINDOW_CELLS


def test_loess_temporaries_are_a_few_columns():
    y, p = _cases(N_BIG, seed=2)
    peak = _peak(lambda: smooth._ici(y, p))
    # order, sorted x and y, the fit; the neighbourhood's weighted design (n x 3) and its SVD copies
    # held ~70 bytes a case
    assert peak <= 4 * 8 * N_BIG + 16 * 2**20


@pytest.mark.parametrize("decimals", [None, 2])
def test_clowess_in_column_blocks_matches_statsmodels_and_whole_windows(monkeypatch, decimals):
    """Windows wider than the block are summed in two passes over column blocks: the same smooth as the
    whole-window arithmetic to rounding, and as statsmodels' lowess (delta = 0: no skipped points)."""
    sm_lowess = pytest.importorskip("statsmodels.nonparametric.smoothers_lowess").lowess
    y, p = _cases(4000, seed=3, decimals=decimals)
    order = np.argsort(p, kind="stable")
    x, ys = p[order], y[order]
    whole = clowess(x, ys, delta=0.0)
    monkeypatch.setattr(smooth, "_local_lines", functools.partial(smooth._local_lines, max_cells=257))
    blocks = clowess(x, ys, delta=0.0)
    np.testing.assert_allclose(blocks, whole, rtol=0, atol=1e-13)
    ref = sm_lowess(ys, x, frac=2 / 3, it=0, delta=0.0, return_sorted=False)
    np.testing.assert_allclose(blocks, ref, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("decimals", [None, 1, 2])
def test_loess_neighbourhood_by_bisection_equals_partition(decimals):
    """The nf-th smallest squared distance and the run of cases closer than a radius, found by bisection
    on sorted x, equal np.partition's order statistic and a full scan (vertices inside, on and outside
    the cases, ties included)."""
    rng = np.random.default_rng(4)
    for n in (5, 17, 400):
        x = np.sort(_cases(n, seed=n, decimals=decimals)[1])
        for q in [x[0] - 0.01, x[0], x[-1], x[-1] + 0.3, *rng.uniform(x[0], x[-1], 6), *x[rng.integers(0, n, 4)]]:
            dist = (x - q) ** 2
            for nf in {1, 2, n // 2, max(1, n - 1), n}:
                lo, hi = _nearest_run(x, q, nf)
                assert hi - lo == nf
                rho = max((x[lo] - q) ** 2, (x[hi - 1] - q) ** 2)
                assert rho == np.partition(dist, nf - 1)[nf - 1]
                near = np.flatnonzero(dist < rho)
                a, b = _closer_than(x, q, rho, lo, hi)
                np.testing.assert_array_equal(np.arange(a, b), near)


def test_loess_vertex_fit_in_pieces_equals_one_piece():
    """The least-squares reduction ``piece`` rows at a time gives the fit of one piece to rounding."""
    y, p = _cases(3000, seed=5)
    order = np.argsort(p, kind="stable")
    xs, ys = p[order], y[order]
    for q in (xs[0] - 0.004, 0.31, 0.5, xs[-1] + 0.004):
        one = smooth._loess_vertex_fit(xs, ys, q, 2250, 0.75, 2, piece=1 << 20)
        pieces = smooth._loess_vertex_fit(xs, ys, q, 2250, 0.75, 2, piece=97)
        np.testing.assert_allclose(pieces, one, rtol=1e-12, atol=1e-14)


def test_loess_hermite_in_pieces_is_bit_identical():
    y, p = _cases(5000, seed=6)
    whole = loess_smooth(p, y)
    original = smooth._hermite
    pieces = functools.partial(original, piece=333)
    try:
        smooth._hermite = pieces
        got = loess_smooth(p, y)
    finally:
        smooth._hermite = original
    np.testing.assert_array_equal(got, whole)


def _weights(n: int, k: int, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(k)]).astype(np.float64)


def test_band_curves_in_parts_equal_one_batch(monkeypatch):
    """The band's replicate curves, smoothed a few replicates at a time, equal those of one batch."""
    from validate.metrics import replicates
    from validate.metrics.smooth_band import replicate_curves, smooth_grid

    y, p = _cases(400, seed=8)
    W = _weights(400, 7)
    grid = smooth_grid(p)
    whole = replicate_curves(y, p, W, grid, fast=True)
    monkeypatch.setattr(replicates, "SMOOTH_CELLS", 2 * 400)
    parts = replicate_curves(y, p, W, grid, fast=True)
    for got, expected in zip(parts, whole, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)


def test_band_curves_hold_a_part_of_the_chunk_at_a_time():
    from validate.metrics.smooth_band import replicate_curves, smooth_grid

    n = 200_000
    y, p = _cases(n, seed=9)
    W = _weights(n, 60)
    grid = smooth_grid(p)
    peak = _peak(lambda: replicate_curves(y, p, W, grid))
    # a part's reordered weights, positions and tree beside the chunk; the whole chunk's integer counts,
    # cumulative counts and reordered copy held ~6.5 times the chunk's weights
    assert peak <= 1.5 * W.nbytes


@pytest.mark.parametrize("decimals, rel", [(None, 1e-12), (2, 1e-9)])
def test_point_smooths_from_the_engine_equal_the_direct_algorithms(decimals, rel):
    """From SMOOTH_POINT_ENGINE_MIN_N cases a block's Eavg/E50/E90/Emax and ICI come from the moment
    engine with unit counts; they equal R's direct algorithms on the same cases (continuous scores to
    1e-12, scores rounded to 0.01 — heavy ties, where loess itself is ill-conditioned — to 1e-9)."""
    from validate.metrics.replicates import SMOOTH_POINT_ENGINE_MIN_N, BinaryCases
    from validate.metrics.smooth import _ici, _lowess_errors

    y, p = _cases(SMOOTH_POINT_ENGINE_MIN_N + 7, seed=3, decimals=decimals)
    y = y.astype(np.int64)
    engine = BinaryCases(y, p, 15).lowess_point()
    direct = dict(_lowess_errors(y, p), ici=_ici(y, p))
    assert set(engine) == set(direct)
    for m, v in direct.items():
        assert engine[m] == pytest.approx(v, rel=rel, abs=0), m


def test_smoother_replicates_of_scores_not_monotone_in_p_use_ps_order():
    """A ranking score that is not monotone in p (allowed by the agreement tolerance of a table giving
    both) leaves the score-sorted p unsorted; the smoother replicates must be those of the same cases in
    p's order, never windows of an unsorted x."""
    from validate.metrics.replicates import BinaryCases

    rng = np.random.default_rng(5)
    for n in (600, 5000):  # the expanded-sample path and the moment engine
        y, p = _cases(n, seed=n)
        y = y.astype(np.int64)
        score = np.log(p / (1 - p)) + rng.normal(0, 0.3, n)  # ranks differ from p's
        odd = BinaryCases(y, p, 15, score=score)
        assert not odd.monotone
        plain = BinaryCases(y, p, 15)
        w = rng.multinomial(n, np.full(n, 1 / n), size=3).astype(np.float64)
        # the same replicate multisets: weights follow the cases into each block's own order
        w_odd, w_plain = w[:, odd.order], w[:, plain.order]
        got = (
            odd.smooth_replicates_fast(w_odd)
            if n >= 1000
            else {
                m: np.array([odd.smooth_replicate(r)[m] for r in w_odd]) for m in ("eavg", "e50", "e90", "emax", "ici")
            }
        )
        want = (
            plain.smooth_replicates_fast(w_plain)
            if n >= 1000
            else {
                m: np.array([plain.smooth_replicate(r)[m] for r in w_plain])
                for m in ("eavg", "e50", "e90", "emax", "ici")
            }
        )
        for m in ("eavg", "e50", "e90", "emax", "ici"):
            np.testing.assert_allclose(got[m], want[m], rtol=1e-12, atol=0, err_msg=f"{m} at n={n}")


def _error_shapes(n: int, rng):
    """Distributions of lowess errors a bracket could mistake: smooth, heavily tied, a single value,
    monotone in case order (the subsample is systematic), mostly one value."""
    return {
        "smooth": np.abs(rng.normal(size=n)),
        "tied": np.round(rng.exponential(size=n), 1),
        "constant": np.full(n, 0.25),
        "monotone": np.sort(rng.random(n)),
        "spike": np.where(rng.random(n) < 0.97, 0.0, rng.random(n)),
        "periodic": np.tile(np.linspace(0.0, 1.0, 256), n // 256 + 1)[:n],
    }


@pytest.mark.parametrize("shape", ["smooth", "tied", "constant", "monotone", "spike", "periodic"])
def test_order_statistics_by_brackets_equal_the_expanded_sample(shape):
    # beyond 4 subsamples' worth the positions are bracketed, not expanded: the values must be the very
    # elements np.partition finds in the expanded sample, for every shape, with zero counts and ends
    from validate.metrics.smooth_bootstrap import _SELECT_SAMPLE, order_statistics

    rng = np.random.default_rng(5)
    n = 4 * _SELECT_SAMPLE + 12_345
    e = _error_shapes(n, rng)[shape]
    for c in (rng.poisson(1.0, n).astype(np.float64), np.where(np.arange(n) < n // 2, 0.0, rng.poisson(2.0, n))):
        N = int(c.sum())
        ks = [0, 1, N // 2 - 1, N // 2, int(0.9 * (N - 1)), int(0.9 * (N - 1)) + 1, N - 2, N - 1]
        expanded = np.repeat(e, c.astype(np.int64))
        expanded.partition(ks)
        assert order_statistics(e, c, ks) == [float(expanded[k]) for k in ks]


def test_order_statistics_of_errors_holding_nan_or_inf_are_the_expanded_samples():
    # NaN fails every comparison, so no bracket can place it: such a sample is expanded (NaN sorts last)
    from validate.metrics.smooth_bootstrap import _SELECT_SAMPLE, order_statistics

    rng = np.random.default_rng(6)
    n = 4 * _SELECT_SAMPLE + 1
    for bad in (np.nan, np.inf):
        e = rng.random(n)
        e[::1000] = bad
        c = rng.poisson(1.0, n).astype(np.float64)
        N = int(c.sum())
        ks = [N // 2, N - 2, N - 1]
        expanded = np.repeat(e, c.astype(np.int64))
        expanded.partition(ks)
        np.testing.assert_array_equal(order_statistics(e, c, ks), [expanded[k] for k in ks])
