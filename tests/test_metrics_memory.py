"""Issue #21 (scale, memory): the per-case matrices of a binary block are written column by column into
one buffer instead of being stacked from copies. Their values must be bit for bit those of the column
stacks of their definitions (built here with plain NumPy, the construction the engine used before), and
building one must hold little more than the matrix itself (tracemalloc sees NumPy's allocations)."""

from __future__ import annotations

import os
import tracemalloc

import numpy as np
import pytest

from validate.metrics.ece_interval import BinnedGaps, adaptive_membership
from validate.metrics.replicates import BinaryCases
from validate.metrics.smooth_bootstrap import SortedCases

BINS = 15


def _cases(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.random(n)
    p[:4] = [0.0, 1.0, 0.5, 1e-18]  # the clip, the closed right edge, a bin edge
    y = (rng.random(n) < p).astype(np.int64)
    return y, p


def _bits(a: np.ndarray) -> np.ndarray:
    """The float64 bit patterns: equal bits, not merely equal values (−0.0 differs from 0.0)."""
    return np.ascontiguousarray(a).view(np.int64)


def _bin_matrix(p_sorted: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width, right-closed bins (k/B, (k+1)/B], p = 0 in the first: the indicator matrix."""
    idx = np.maximum(np.ceil(p_sorted * bins).astype(np.intp) - 1, 0)
    m = np.zeros((p_sorted.size, bins))
    m[np.arange(p_sorted.size), idx] = 1.0
    return m


def _stacked_linear(y: np.ndarray, p: np.ndarray, thresholds) -> np.ndarray:
    """The linear columns as a stack of their definitions: (p − y)², −log-likelihood (p clipped to
    [1e-15, 1 − 1e-15]), y, bin indicator × (y − p), bin indicator, then [p ≥ t, y·(p ≥ t)]."""
    q = np.clip(p, 1e-15, 1 - 1e-15)
    nll = -(y * np.log(q) + (1 - y) * np.log1p(-q))
    bm = _bin_matrix(p, BINS)
    cols = [np.column_stack([(p - y) ** 2, nll, y, bm * (y - p)[:, None], bm])]
    for t in thresholds:
        call = (p >= t).astype(np.float64)
        cols.append(np.column_stack([call, y * call]))
    return np.column_stack(cols)


@pytest.mark.parametrize("n", [7, 1000, 30_011])
@pytest.mark.parametrize("thresholds", [(), (0.5,), (0.1, 0.5, 0.9)])
def test_linear_columns_are_the_stacked_definitions_bit_for_bit(n, thresholds):
    y, p = _cases(n)
    cases = BinaryCases(y, p, BINS)
    got = cases.linear_with_calls(thresholds)
    expected = _stacked_linear(cases.y, cases.p, thresholds)
    assert got.shape == expected.shape and got.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(_bits(got), _bits(expected))


def _stacked_ece_columns(cases: BinaryCases) -> np.ndarray:
    """Residual y − p in its equal-width bin's column, then in its equal-mass group's column."""
    n = cases.n
    resid = cases.y_float - cases.p
    adaptive = np.zeros((n, BINS))
    adaptive[np.arange(n), adaptive_membership(n, BINS)] = resid
    return np.column_stack([_bin_matrix(cases.p, BINS) * resid[:, None], adaptive])


def _error_replicates(cases: BinaryCases, ws: np.ndarray) -> dict[str, np.ndarray]:
    """Δ* = Σ_b |S*_b / N* − S_b / N| (ECE, adaptive ECE) from the stacked residual columns."""
    columns = _stacked_ece_columns(cases)
    sums = ws @ columns
    full = columns.sum(axis=0) / cases.n
    total = ws.sum(axis=1)[:, None]
    return {
        "ece~error": np.abs(sums[:, :BINS] / total - full[:BINS]).sum(axis=1),
        "ece_adaptive~error": np.abs(sums[:, BINS:] / total - full[BINS:]).sum(axis=1),
    }


@pytest.mark.parametrize("n", [7, 1000, 30_011])
@pytest.mark.parametrize("monotone", [True, False])
def test_ece_error_replicates_equal_the_stacked_columns_product(n, monotone):
    """By runs of sorted cases (a score monotone in p) or by the residual columns (a score that is
    not): the bootstrap errors of ECE and adaptive ECE of the product with the stacked columns."""
    y, p = _cases(n, seed=1)
    score = None if monotone else np.random.default_rng(8).random(n)
    cases = BinaryCases(y, p, BINS, score=score)
    gaps = BinnedGaps(cases)
    assert (gaps.columns is None) == monotone
    ws = _replicate_weights(n, 6)
    got = gaps.error_replicates(ws)
    for name, expected in _error_replicates(cases, ws).items():
        np.testing.assert_allclose(got[name], expected, rtol=1e-12, atol=1e-15, err_msg=name)


@pytest.mark.parametrize("n", [9, 1000, 30_011])
def test_smoother_powers_are_the_cumulative_products_bit_for_bit(n):
    rng = np.random.default_rng(2)
    x = np.sort(rng.random(n))
    y = (rng.random(n) < x).astype(np.float64)
    sc = SortedCases(x, y)
    v = sc.x - sc.center[np.arange(n) // sc.L]
    powers = np.cumprod(np.column_stack([np.ones(n)] + [v] * 13), axis=1)  # v^0 .. v^13
    expected = np.zeros((sc.G * sc.L, 26))
    expected[:n] = np.concatenate([powers, y[:, None] * powers[:, :12]], axis=1)
    # formed range by range of leaves (ranges that do not start at leaf 0 included)
    mid = sc.G // 2
    got = np.concatenate([sc.leaf_powers(0, mid), sc.leaf_powers(mid, sc.G)]).reshape(-1, 26)
    np.testing.assert_array_equal(
        _bits(
            np.concatenate([sc.leaf_powers(0, mid, with_y=False), sc.leaf_powers(mid, sc.G, with_y=False)]).reshape(
                -1, 14
            )
        ),
        _bits(expected[:, :14]),
    )
    np.testing.assert_array_equal(_bits(got), _bits(expected))


def _peak_over(build) -> tuple[object, int]:
    """What ``build()`` returns and the peak of NumPy's allocations while it ran, in bytes."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        out = build()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return out, peak


N_MEMORY = 200_000


def test_linear_matrix_is_built_without_stacked_copies():
    y, p = _cases(N_MEMORY)
    cases = BinaryCases(y, p, BINS)
    mat, peak = _peak_over(lambda: cases.linear_with_calls((0.5,)))
    # the matrix (35 columns) and a few columns of temporaries; stacking pieces held ~2.5 matrices
    assert peak <= mat.nbytes + 8 * 8 * N_MEMORY


def test_ece_sums_need_no_per_case_matrix():
    y, p = _cases(N_MEMORY)
    cases = BinaryCases(y, p, BINS)
    gaps, peak = _peak_over(lambda: BinnedGaps(cases))
    live = tracemalloc_live(lambda: BinnedGaps(cases))
    # while built: the bin matrix (15 columns) of the point sums and a few columns; kept: a column
    assert peak <= 8 * BINS * N_MEMORY + 8 * 8 * N_MEMORY
    assert live <= 3 * 8 * N_MEMORY


def tracemalloc_live(build) -> int:
    """Bytes of NumPy's allocations still held once ``build()`` returned, its result kept."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        out = build()
        live = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    del out
    return live


def test_smoother_moments_keep_no_per_case_powers():
    """The sorted cases keep nothing per case beside x and y, and the moments of a replicate hold the
    tree and a cache-sized range of powers, not the 26 powers of every case (208 bytes a case)."""
    rng = np.random.default_rng(3)
    x = np.sort(rng.random(N_MEMORY))
    y = (rng.random(N_MEMORY) < x).astype(np.float64)
    sc, peak = _peak_over(lambda: SortedCases(x, y))
    assert peak <= 3 * N_MEMORY  # per leaf and tree node only
    W = _replicate_weights(N_MEMORY, 1)
    T, peak = _peak_over(lambda: sc.moments(W))
    # beside the tree: the (14, 14) shift matrices of one level's parents (a few copies; at most 4096
    # leaves, so bounded whatever n) and a few columns of counts
    shifts = 3 * 8 * 14 * 14 * sc.size // 2
    assert peak <= T.nbytes + shifts + 4 * 8 * N_MEMORY


def _replicate_weights(n: int, k: int, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(k)]).astype(np.float64)


def test_smoothers_in_parts_equal_one_batch(monkeypatch):
    """A chunk of replicates smoothed a few rows at a time gives each replicate's smoother errors as one
    batch of all rows does (each replicate's fits are its own; a BLAS sum order may differ)."""
    from validate.metrics import replicates

    y, p = _cases(5_000, seed=6)
    cases = BinaryCases(y, p, BINS)
    ws = _replicate_weights(cases.n, 10)
    whole = cases.smooth_replicates_fast(ws)
    monkeypatch.setattr(replicates, "SMOOTH_CELLS", 3 * cases.n)  # parts of 3, 3, 3 and 1 rows
    parts = replicates.Draw(cases, ws, [0.5]).smooth()
    assert sorted(parts) == sorted(whole)
    for name, values in whole.items():
        assert parts[name].shape == (10,)
        np.testing.assert_allclose(parts[name], values, rtol=1e-12, atol=1e-15, err_msg=name)


def test_smoothers_of_a_chunk_hold_a_part_of_its_rows(monkeypatch):
    from validate.metrics import replicates

    y, p = _cases(N_MEMORY, seed=7)
    cases = BinaryCases(y, p, BINS)
    ws = _replicate_weights(cases.n, 16)
    cases.smooth_replicates_fast(ws[:1])  # the sorted cases and their powers, kept for every chunk
    monkeypatch.setattr(replicates, "SMOOTH_CELLS", 2 * cases.n)
    _, peak = _peak_over(lambda: replicates.Draw(cases, ws, [0.5]).smooth())
    # two rows at a time: ~45 bytes a case and replicate, i.e. ~90 a case (16 rows at once: ~720)
    assert peak <= 250 * N_MEMORY


def test_replicate_rows_are_drawn_without_a_matrix_of_draws():
    """Rows of an RNG block (the chunks of a large sample) hold their weights and one row's draws, not
    the (k, cases) draws and the bounded generator's temporaries over all of them."""
    from validate.metrics.bootstrap import RNG_BLOCK, Resampling

    res = Resampling(N_MEMORY)
    k = 16
    res.rows(7, 0, 0, 1)  # the block's stream offsets (a pass of fixed size) are counted once, kept
    weights, peak = _peak_over(lambda: res.rows(7, 0, 3, k))
    # the row-by-row result equals NumPy's own draws of the whole block
    drawn = np.random.default_rng([7, 0]).integers(0, N_MEMORY, size=(RNG_BLOCK, N_MEMORY), dtype=np.int32)
    expected = np.stack([np.bincount(drawn[r], minlength=N_MEMORY) for r in range(3, 3 + k)])
    np.testing.assert_array_equal(weights, expected)
    # the weights and ~a dozen columns of one row's draws (all k rows at once: ~3 times the weights)
    assert peak <= weights.nbytes + 12 * 8 * N_MEMORY


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_a_block_keeps_freed_large_arrays_and_returns_them_after():
    """Inside a metrics block (machine.freed_memory_kept) a freed 128 MiB array stays resident for the
    next one instead of being unmapped — outside, glibc unmaps it at once — and leaving the block hands
    it back."""
    from validate.machine import _glibc, freed_memory_kept

    if _glibc() is None:
        pytest.skip("the allocator is not glibc's")
    mib = 1 << 20
    a = np.ones(16 * mib)  # 128 MiB: beyond glibc's largest heap allocation, so mmap'd
    held = _rss()
    del a
    assert held - _rss() > 100 * mib  # the control: unmapped as soon as freed
    with freed_memory_kept():
        a = np.ones(16 * mib)
        held = _rss()
        del a
        assert held - _rss() < 10 * mib  # kept by the allocator
        b = np.ones(16 * mib)  # the next array of the size takes the same memory
        assert _rss() - held < 10 * mib
        del b
        kept = _rss()
    assert kept - _rss() > 100 * mib  # handed back on leaving
