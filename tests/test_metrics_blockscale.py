"""Issue #21 (scale, block side): a binary block's replicate sums come from ranges of its sorted cases
(each calibration bin a run, each call p >= t a suffix) instead of a per-case matrix; AUROC of untied
scores from the events only; replicate weights counted per stratum. Every value is checked against an
independent construction (the stacked per-case definitions, scikit-learn, NumPy's own draws); the
memory of a block is checked with tracemalloc (it sees NumPy's allocations)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from validate.metrics.bootstrap import RNG_BLOCK, Resampling, iter_bootstrap_weights
from validate.metrics.discrimination import _placements, _placements_unpaired, weighted_auroc
from validate.metrics.ece_interval import BinnedGaps
from validate.metrics.kernels import _auroc_untied
from validate.metrics.replicates import BinaryCases, Draw

BINS = 15


def _cases(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.random(n)
    p[:5] = [0.0, 1.0, 0.5, 1e-18, 0.2]  # the clip, the closed right edge, bin edges
    y = (rng.random(n) < p).astype(np.float64)
    return y, p


def _counts(n: int, k: int, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(k)]).astype(np.float64)


def _stacked(y: np.ndarray, p: np.ndarray, thresholds) -> np.ndarray:
    """The per-case columns by their definitions: (p − y)², −log-likelihood (p clipped to
    [1e-15, 1 − 1e-15]), y, bin indicator × (y − p), bin indicator (right-closed bins, p = 0 in the
    first), then [p ≥ t, y·(p ≥ t)] per threshold t."""
    q = np.clip(p, 1e-15, 1 - 1e-15)
    idx = np.maximum(np.ceil(p * BINS).astype(np.intp) - 1, 0)
    bm = np.zeros((p.size, BINS))
    bm[np.arange(p.size), idx] = 1.0
    cols = [(p - y) ** 2, -(y * np.log(q) + (1 - y) * np.log1p(-q)), y, *(bm * (y - p)[:, None]).T, *bm.T]
    for t in thresholds:
        call = (p >= t).astype(np.float64)
        cols += [call, y * call]
    return np.column_stack(cols)


# columns of :attr:`Draw.lin` that are sums of integer counts times 0/1: exact in any order
def _integer_columns(n_thresholds: int) -> np.ndarray:
    return np.r_[2, np.arange(3 + BINS, 3 + 2 * BINS), np.arange(3 + 2 * BINS, 3 + 2 * BINS + 2 * n_thresholds)]


@pytest.mark.parametrize("n", [7, 1000, 30_011])
@pytest.mark.parametrize("monotone", [True, False])
def test_replicate_sums_equal_the_per_case_matrix_product(n, monotone):
    """From runs and suffixes (p monotone in the score order) or from the matrix (a score that breaks
    the contract): the product of the weights with the stacked definitions."""
    y, p = _cases(n)
    score = None if monotone else np.random.default_rng(8).random(n)
    cases = BinaryCases(y, p, BINS, score=score)
    assert cases.monotone == monotone
    thresholds = [0.0, 0.2, 0.5, 0.9, 1.0, 1.5]
    ws = np.vstack([np.ones(n), _counts(n, 5)])
    got = Draw(cases, ws, thresholds).lin
    expected = ws @ _stacked(cases.y, cases.p, thresholds)
    ints = _integer_columns(len(thresholds))
    np.testing.assert_array_equal(got[:, ints], expected[:, ints])
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("monotone", [True, False])
def test_decision_sums_equal_the_masks(monotone):
    n = 2_001
    y, p = _cases(n, seed=3)
    score = None if monotone else np.random.default_rng(9).random(n)
    cases = BinaryCases(y, p, BINS, score=score)
    ws = _counts(n, 4)
    decision = [0.05, 0.2, 0.5]
    draw = Draw(cases, ws, [], decision)
    for i, t in enumerate(decision):
        tp, fp, events, total = draw.decision(i)
        treated = cases.p >= t
        np.testing.assert_array_equal(tp, ws @ (treated * cases.y))
        np.testing.assert_array_equal(fp, ws @ (treated * (1 - cases.y)))
        np.testing.assert_array_equal(events, ws @ cases.y)
        np.testing.assert_array_equal(total, ws.sum(axis=1))


@pytest.mark.parametrize("n", [2, 50, 4_000])
def test_untied_auroc_equals_sklearn_and_the_grouped_sums(n):
    rng = np.random.default_rng(n)
    s = np.sort(rng.normal(size=n))
    y = (rng.random(n) < 0.3).astype(np.float64)
    y[0], y[-1] = 0.0, 1.0
    ws = np.vstack([np.ones(n), rng.integers(0, 3, (6, n)).astype(np.float64)])
    got = _auroc_untied(np.flatnonzero(y), ws)
    for r, w in enumerate(ws):
        both = 0 < (w * y).sum() and 0 < (w * (1 - y)).sum()
        ref = roc_auc_score(y, s, sample_weight=w) if both else np.nan
        np.testing.assert_allclose(got[r], ref, rtol=1e-12, equal_nan=True)
    # count weights: every sum an exact integer, so the same bits as the grouped computation
    np.testing.assert_array_equal(got, weighted_auroc(y, s, ws))


def test_untied_auroc_without_events_or_controls_is_nan():
    ws = np.ones((2, 4))
    assert np.isnan(_auroc_untied(np.array([], dtype=np.intp), ws)).all()
    assert np.isnan(_auroc_untied(np.arange(4), ws)).all()


@pytest.mark.parametrize("ties", [False, True])
def test_unpaired_placements_are_the_sorted_placements(ties):
    rng = np.random.default_rng(4)
    s = rng.random(5_000)
    s = np.round(s, 2) if ties else s
    y = (rng.random(s.size) < s).astype(np.float64)
    v10, v01 = _placements(y, s)
    u10, u01 = _placements_unpaired(y, s)
    np.testing.assert_array_equal(np.sort(v10), u10)
    np.testing.assert_array_equal(np.sort(v01), np.sort(u01))


def _naive_weights(n_rep, n, strata, clusters, seed, order) -> np.ndarray:
    """NumPy's own bounded draws of each RNG block, stratum after stratum, counted per unit and given
    to every case of the unit; columns in ``order``."""
    s_codes = np.unique(strata, return_inverse=True)[1]
    c_codes = np.unique(clusters, return_inverse=True)[1] if clusters is not None else np.arange(n)
    units, unit_of_case = np.unique(s_codes * (c_codes.max() + 1) + c_codes, return_inverse=True)
    unit_stratum = units // (c_codes.max() + 1)
    rows = []
    for b in range(-(-n_rep // RNG_BLOCK)):
        rng = np.random.default_rng([seed, b])
        drawn = np.empty((RNG_BLOCK, units.size), dtype=np.int64)
        for st in np.unique(unit_stratum):
            members = np.flatnonzero(unit_stratum == st)
            drawn[:, members] = members[0] + rng.integers(0, members.size, (RNG_BLOCK, members.size), dtype=np.int32)
        rows += [np.bincount(d, minlength=units.size)[unit_of_case] for d in drawn]
    return np.stack(rows[:n_rep])[:, order].astype(np.float64)


@pytest.mark.parametrize("chunk", [3, 50])
@pytest.mark.parametrize("clustered", [False, True])
def test_weights_with_order_and_interleaved_strata_equal_numpys_draws(chunk, clustered):
    n = 3_000
    rng = np.random.default_rng(11)
    strata = rng.choice(["b", "a", "c"], n)  # not contiguous: units are not the cases in case order
    clusters = rng.integers(0, 900, n) if clustered else None
    order = rng.permutation(n)
    chunks = iter_bootstrap_weights(60, n, strata=strata, clusters=clusters, seed=2, chunk=chunk, order=order)
    got = np.concatenate([w for _, w in chunks])
    np.testing.assert_array_equal(got, _naive_weights(60, n, strata, clusters, 2, order))


def test_counts_of_256_and_more_are_gathered_whole():
    """A unit drawn 256 times or more (a stratum of at least 256 units) keeps its count: the one-byte
    gather is only used below 256."""
    res = Resampling(6, order=np.array([5, 4, 3, 2, 1, 0]))
    out = np.empty(6)
    res._weights_of(np.array([300, 0, 1, 2, 255, 3]), out)
    np.testing.assert_array_equal(out, [3, 255, 2, 1, 0, 300])


def test_order_must_be_a_permutation():
    for bad in (np.array([0, 0, 2]), np.array([0, 1, 3]), np.array([-1, 0, 1]), np.array([0, 1])):
        with pytest.raises(ValueError, match="permutation"):
            Resampling(3, order=bad)


N_MEMORY = 200_000


def _live_and_peak(build) -> tuple[object, int, int]:
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        out = build()
        live, peak = (v - base for v in tracemalloc.get_traced_memory())
    finally:
        tracemalloc.stop()
    return out, live, peak


def test_a_blocks_kept_arrays_and_replicate_transients_are_lean():
    """Kept by one block's cases and its ECE sums after the point estimates: ≤ 70 bytes a case (the
    per-case matrix of the replicate sums alone was 296); one replicate's sums: ≤ 50 bytes a case
    beyond its weights (the sorted copy of the weights and the products of AUROC were 24)."""
    rng = np.random.default_rng(0)
    z = rng.normal(-1.2, 1.4, N_MEMORY)
    y = (rng.random(N_MEMORY) < 1 / (1 + np.exp(-0.8 * z))).astype(np.float64)
    p = 1 / (1 + np.exp(-z))
    thresholds, decision = [0.5, 0.2], [0.1, 0.3]

    def build():
        cases = BinaryCases(y, p, BINS, logits=z, score=z)
        gaps = BinnedGaps(cases)
        cases.replicate(np.ones((1, N_MEMORY)), thresholds, want_smooth=False, auroc=True, decision=decision)
        return cases, gaps

    (cases, gaps), kept, _ = _live_and_peak(build)
    assert kept <= 70 * N_MEMORY
    ws = _counts(N_MEMORY, 1)

    def replicate():
        out = cases.replicate(ws, thresholds, want_smooth=False, auroc=True, decision=decision)
        out.update(gaps.error_replicates(ws))
        return out

    _, _, peak = _live_and_peak(replicate)
    assert peak <= 50 * N_MEMORY


def test_a_row_count_of_256_widens_the_row_counts():
    """The row path counts units in one byte until a count reaches 256 (a stratum of at least 256 units
    can, however rarely): from then on the row's counts are 64-bit, the strata counted before kept."""
    n = 900
    res = Resampling(n, strata=np.repeat([0, 1, 2], 300), order=np.arange(n)[::-1].copy())
    res.rows(4, 0, 0, 1)  # opens the block's stream

    class OneUnitTwice:  # stratum 1 draws its first unit 300 times (the real stream never would)
        def __init__(self, stream):
            self.stream = stream

        def draws(self, s, r0, k):
            return np.zeros((k, 300), dtype=np.int64) if s == 1 else self.stream.draws(s, r0, k)

    real = res._stream
    expected = np.concatenate(
        [
            np.bincount(real.draws(0, 0, 1)[0], minlength=300),
            np.r_[300, np.zeros(299)],
            np.bincount(real.draws(2, 0, 1)[0], minlength=300),
        ]
    )[::-1]
    res._stream = OneUnitTwice(real)
    counts = res._row_counts(0)
    assert counts.dtype == np.int64
    out = np.empty(n)
    res._gather(counts, out)
    np.testing.assert_array_equal(out, expected)
