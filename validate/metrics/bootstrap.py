"""The bootstrap as replicate weights: stratified, clustered, seeded, deterministic, vectorised.

A bootstrap replicate is represented by frequency weights: how many times each case was drawn. Every
weighted metric of :mod:`validate.metrics` takes weights of shape (r, n), so r replicates cost one pass
over a matrix instead of r calls (one sort of the scores serves all replicates).

Resampling scheme (Davison & Hinkley 1997, §3.8): within each stratum (site) draw as many units as it
holds, with replacement; a unit is a cluster (patient) when ``clusters`` is given — all cases of a drawn
patient enter together, as often as the patient was drawn — else a case. Replicates are generated in
fixed blocks of 50, block b from ``numpy.random.default_rng([seed, b])``, so replicate k is the same
whatever chunk size the caller uses. A chunk smaller than a block is cut out of it row by row
(:class:`BlockStream`), so memory follows the chunk, not the block (:func:`replicate_chunk` sizes the
chunks of large samples). Percentile intervals use type-7 quantiles of the finite replicates.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

RNG_BLOCK = 50


class Resampling:
    """Units (clusters within strata) of a sample of n cases, prepared once for many replicates.

    ``order`` (a permutation of the cases) asks for weight columns in that order — column i is case
    order[i] — so a caller that keeps its cases sorted gets its weights without a column gather of
    every replicate."""

    def __init__(self, n: int, clusters=None, strata=None, order=None):
        self.n = int(n)
        strata_codes = _codes(strata, self.n, "strata")
        if clusters is None:
            unit_of_case, self.stratum_start, self.stratum_size = _case_units(strata_codes)
        else:
            unit_of_case, self.stratum_start, self.stratum_size = _cluster_units(
                strata_codes, _codes(clusters, self.n, "clusters")
            )
        self.n_units = int(self.stratum_size.sum())
        order = None if order is None else np.asarray(order, dtype=np.intp)
        if order is not None and not _is_permutation(order, self.n):
            raise ValueError(f"order must be a permutation of {self.n} cases")
        # each case its own unit in case order (no clusters, strata contiguous): counts of units are
        # counts of cases. Otherwise (or with an order) the column of case order[i] takes the count of
        # its unit: with identity units that unit is order[i] itself, the caller's array, not a copy
        identity = unit_of_case is None
        self.unit_of_column: np.ndarray | None = None
        if identity and order is not None:
            self.unit_of_column = order
        elif not identity:
            self.unit_of_column = unit_of_case if order is None else unit_of_case[order]
        self.dtype = np.int32 if self.n_units < 2**31 else np.int64
        self._stream: BlockStream | None = None
        self._small: np.ndarray | None = None  # one-byte units' counts of the current row

    def block(self, seed: int, b: int, k: int) -> np.ndarray:
        """Case weights of replicates b*50 .. b*50+k-1 (k <= 50), shape (k, n): within each stratum,
        as many unit draws (uniform integers, NumPy's unbiased bounded generator) as it holds units."""
        rng = np.random.default_rng([int(seed), int(b)])
        drawn = np.empty((RNG_BLOCK, self.n_units), dtype=self.dtype)
        for start, size in zip(self.stratum_start, self.stratum_size, strict=True):
            part = drawn[:, start : start + size]
            part[...] = rng.integers(0, size, size=(RNG_BLOCK, size), dtype=self.dtype)
            part += start
        return self._counts(drawn[:k])

    def rows(self, seed: int, b: int, r0: int, k: int) -> np.ndarray:
        """Replicates b*50+r0 .. b*50+r0+k-1, shape (k, n): rows r0 .. r0+k-1 of :meth:`block`, equal to
        them draw for draw, without the block's (50, units) draws in memory (see :class:`BlockStream`)."""
        if self.dtype != np.int32:  # beyond 2^31 units NumPy draws 64-bit integers: whole blocks only
            return self.block(seed, b, r0 + k)[r0:]
        key = (int(seed), int(b))
        if self._stream is None or self._stream.key != key:
            self._stream = BlockStream(key, self.stratum_size)
        # one row's draws at a time: the (k, units) draws and their generation's temporaries would
        # hold several times the weights themselves
        out = np.empty((k, self.n))
        for r in range(k):
            self._gather(self._row_counts(r0 + r), out[r])
        return out

    def _row_counts(self, row: int) -> np.ndarray:
        """The units' counts of one row of the current block: each stratum's draws counted on their own
        (its counts are a slice of the units', and the bincount's scattered writes stay within the
        stratum's smaller range) into a one-byte buffer kept for the next row — the gather that follows
        reads it from cache and no units-sized array is faulted in per row — or into 64-bit counts
        when a count reaches 256 (a stratum of fewer than 256 units can)."""
        assert self._stream is not None
        if self._small is None:
            self._small = np.empty(self.n_units, dtype=np.uint8)
        counts: np.ndarray = self._small
        for s, (start, size) in enumerate(zip(self.stratum_start, self.stratum_size, strict=True)):
            c = np.bincount(self._stream.draws(s, row, 1)[0], minlength=size)
            if counts.dtype == np.uint8 and c.max(initial=0) >= 256:
                counts = counts.astype(np.int64)  # the strata counted so far, widened
            counts[start : start + size] = c
        return counts

    def _counts(self, drawn: np.ndarray) -> np.ndarray:
        """Weights (k, n) from unit draws (k, units): how often each case's unit was drawn."""
        out = np.empty((drawn.shape[0], self.n))
        for r in range(drawn.shape[0]):
            self._count_row(drawn[r], out[r])
        return out

    def _count_row(self, drawn: np.ndarray, out: np.ndarray) -> None:
        """One replicate's weights into ``out`` (n,) from its unit draws: the units' counts (one
        bincount), then :meth:`_weights_of`."""
        self._weights_of(np.bincount(drawn, minlength=self.n_units), out)

    def _weights_of(self, counts: np.ndarray, out: np.ndarray) -> None:
        """Case weights into ``out`` (n,) from the units' counts: each column's unit's count, gathered
        from a one-byte copy of the counts when every count is below 256 (a bootstrap's are, but for
        strata of fewer than 256 units), which the gather's random reads find in cache."""
        if self.unit_of_column is not None and counts.max(initial=0) < 256:
            counts = counts.astype(np.uint8)
        self._gather(counts, out)

    def _gather(self, counts: np.ndarray, out: np.ndarray) -> None:
        """``out`` (n,) = the count of each column's unit."""
        if self.unit_of_column is None:
            out[:] = counts
        else:
            out[:] = counts[self.unit_of_column]


class BlockStream:
    """The draws of one RNG block, row by row, exactly as ``rng.integers(0, size, (50, size),
    dtype=int32)`` makes them stratum after stratum from ``default_rng([seed, b])``, with memory
    bounded by the rows asked for.

    NumPy's bounded generator (Lemire 2019, "Fast random integer generation in an interval", ACM TOMACS
    29:3) takes 32-bit values from the PCG64 stream, low half of each 64-bit word first; a value v
    gives ``(v·size) >> 32`` unless ``(v·size) mod 2^32 < 2^32 mod size`` (rejected: the next value is
    tried). The 32-bit values form one stream across the strata's ``integers`` calls: a half word left
    over by one stratum is kept by the bit generator (``has_uint32``) and is the next stratum's first
    value; a stratum of one unit draws nothing. One counting pass per block finds where each row of
    each stratum starts in the stream; a row range is then drawn from there (``PCG64.advance``).
    tests/test_metrics_scale.py and tests/test_metrics_blockscale.py check the rows against
    :meth:`Resampling.block`."""

    PIECE = 1 << 20  # 64-bit words per pass of the counting walk

    def __init__(self, key: tuple[int, int], sizes):
        self.key = key
        bg = np.random.PCG64(list(key))  # the bit generator of default_rng([seed, b])
        self.origin: Any = bg.state
        self.begin: list[int] = []  # 32-bit offset in the block's stream where each stratum's call begins
        self.row_at: list[np.ndarray] = []  # offset of each row's start (and the end) within its stratum
        at = 0
        for size in (int(s) for s in sizes):
            self.begin.append(at)
            if size == 1:
                self.row_at.append(np.zeros(RNG_BLOCK + 1, dtype=np.int64))
                continue
            bg.state = self.origin
            bg.advance(at // 2)
            offsets = self._row_offsets(bg, size, skip=at % 2)
            self.row_at.append(offsets)
            at += int(offsets[-1])
        self.sizes = [int(s) for s in sizes]

    def _row_offsets(self, bg, size: int, skip: int = 0) -> np.ndarray:
        """Stream offsets (32-bit values) where rows 0..50 of a stratum of ``size`` units begin, counted
        from ``bg``'s next word after its first ``skip`` (0 or 1) values."""
        wanted = np.arange(RNG_BLOCK + 1, dtype=np.int64) * size  # accepted values before each row
        offsets = np.zeros(RNG_BLOCK + 1, dtype=np.int64)
        accepted = 0
        seen = 0
        i = 1
        while i <= RNG_BLOCK:
            v = bg.random_raw(self.PIECE).view(np.uint32)[skip:]
            skip = 0
            # rejections are rare (a fraction (2^32 mod size) / 2^32 < size / 2^32): their positions
            # locate every accepted value, with no running count of the piece
            rejected = np.flatnonzero(_rejected(v, size))
            got = accepted + v.size - rejected.size
            if i <= RNG_BLOCK and wanted[i] <= got:
                before = rejected - np.arange(rejected.size)  # accepted values before each rejection
                while i <= RNG_BLOCK and wanted[i] <= got:
                    # the row ends just after the piece's t-th accepted value, which has t − 1 accepted
                    # and every rejection with fewer than t accepted before it ahead of it
                    t = int(wanted[i] - accepted)
                    offsets[i] = seen + t + int(np.searchsorted(before, t - 1, side="right"))
                    i += 1
            accepted = got
            seen += v.size
        return offsets

    def draws(self, s: int, r0: int, k: int) -> np.ndarray:
        """Rows r0 .. r0+k-1 of stratum ``s``'s draws, shape (k, size), values in [0, size)."""
        size = self.sizes[s]
        if size == 1:
            return np.zeros((k, 1), dtype=np.int64)
        first = self.begin[s] + int(self.row_at[s][r0])
        end = self.begin[s] + int(self.row_at[s][r0 + k])
        bg = np.random.PCG64()
        bg.state = self.origin
        bg.advance(first // 2)
        words = bg.random_raw(-(-end // 2) - first // 2)
        v = words.view(np.uint32)[first % 2 : first % 2 + end - first]
        m = np.multiply(v, np.uint64(size), dtype=np.uint64)
        if sys.byteorder != "little":
            out = (m[(m & np.uint64(0xFFFFFFFF)) >= np.uint64((1 << 32) % size)] >> np.uint64(32)).astype(np.int64)
            return out.reshape(k, size)
        # the low and high 32-bit halves of each product, read in place: no shifted or masked copies
        halves = m.view(np.uint32)
        low, high = halves[0::2], halves[1::2]
        floor = (1 << 32) % size
        if floor:
            keep = low >= np.uint32(floor)
            if not keep.all():
                high = high[keep]
        return high.astype(np.int64).reshape(k, size)


def _rejected(v: np.ndarray, size: int) -> np.ndarray:
    """Which 32-bit values Lemire's method rejects for the range [0, size): (v·size) mod 2^32 below
    2^32 mod size — the low half of the product, which 32-bit multiplication leaves by wrapping."""
    low = np.multiply(v, np.uint32(size), dtype=np.uint32)
    return low < np.uint32((1 << 32) % size)


def _is_permutation(order: np.ndarray, n: int) -> bool:
    """Whether ``order`` holds each of 0 .. n−1 once (a count of each, not a sort)."""
    if order.shape != (n,):
        return False
    if n == 0:
        return True
    if order.min() < 0 or order.max() >= n:
        return False
    return bool(np.all(np.bincount(order, minlength=n) == 1))


def _cluster_units(strata_codes: np.ndarray, cluster_codes: np.ndarray):
    """(unit of each case or None when each case is its own unit in case order, first unit of each
    stratum, units per stratum). A unit is a (stratum, cluster) pair — a patient seen at two sites is
    resampled within each — numbered in the order of the pair code, so by stratum."""
    pair = strata_codes.astype(np.int64) * (cluster_codes.max() + 1) + cluster_codes
    uniq, unit_of_case = np.unique(pair, return_inverse=True)
    unit_stratum = uniq // (cluster_codes.max() + 1)
    _, start, size = np.unique(unit_stratum, return_index=True, return_counts=True)
    unit_of_case = unit_of_case.reshape(-1)
    if uniq.size == unit_of_case.size and np.array_equal(unit_of_case, np.arange(unit_of_case.size)):
        return None, start, size
    return unit_of_case, start, size


def _case_units(strata_codes: np.ndarray):
    """:func:`_cluster_units` when every case is its own cluster, without the pair codes' sort: the
    units are the cases ordered by stratum, then by position (a stable sort of the stratum codes),
    which is the order of the pair codes (stratum, case)."""
    n = strata_codes.size
    size = np.bincount(strata_codes)
    size = size[size > 0]
    start = np.r_[0, np.cumsum(size)[:-1]].astype(np.intp)
    if n == 0 or bool(np.all(strata_codes[1:] >= strata_codes[:-1])):
        return None, start, size
    unit_of_case = np.empty(n, dtype=np.intp)
    unit_of_case[np.argsort(strata_codes, kind="stable")] = np.arange(n)
    return unit_of_case, start, size


def _codes(values, n: int, name: str) -> np.ndarray:
    if values is None:
        return np.zeros(n, dtype=np.int64)
    arr = np.asarray(values)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    _, codes = np.unique(arr.astype(str) if arr.dtype == object else arr, return_inverse=True)
    return codes.reshape(-1).astype(np.int64)


def iter_bootstrap_weights(
    n_rep: int, n: int, *, clusters=None, strata=None, seed: int = 0, chunk: int = RNG_BLOCK, order=None
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_replicate, weights)`` chunks of at most ``chunk`` replicates, weights of shape
    (k, n) float64 counts. Deterministic in ``seed``; with ``order``, the same weights with columns
    permuted (column i is case order[i]). A ``chunk`` of 50 or more is rounded to whole RNG blocks of
    50; a smaller one cuts each block into row ranges (:class:`BlockStream`: the same draws, memory
    bounded by ``chunk`` × n instead of 50 × n) — what :func:`replicate_chunk` chooses for large n."""
    res = Resampling(n, clusters, strata, order)
    nblocks = -(-int(n_rep) // RNG_BLOCK)
    if int(chunk) < RNG_BLOCK:
        k = max(1, int(chunk))
        for b in range(nblocks):
            kb = min(RNG_BLOCK, int(n_rep) - b * RNG_BLOCK)
            for r0 in range(0, kb, k):
                yield b * RNG_BLOCK + r0, res.rows(seed, b, r0, min(k, kb - r0))
        return
    per = max(1, int(chunk) // RNG_BLOCK)
    for b0 in range(0, nblocks, per):
        parts = []
        for b in range(b0, min(nblocks, b0 + per)):
            k = min(RNG_BLOCK, int(n_rep) - b * RNG_BLOCK)
            parts.append(res.block(seed, b, k))
        yield b0 * RNG_BLOCK, np.concatenate(parts, axis=0)


#: cases × replicates per chunk of replicate weights (float64: 128 MB per (k, n) array): the block
#: engine's replicate arrays stay this size whatever n. Not smaller: each chunk streams the block's
#: per-case matrices (~300 B a case) once, so fewer replicates per chunk cost time (at one replicate
#: a chunk the products are bound by memory bandwidth)
CHUNK_CELLS = 1 << 24


def replicate_chunk(n: int, most: int = 100) -> int:
    """Replicates per chunk for a block of ``n`` cases: ``most`` (the former fixed chunk) while
    ``most`` × n stays within :data:`CHUNK_CELLS`, fewer beyond (at least one), so the memory of a
    chunk's weights and of every per-replicate array derived from them is bounded independently of n
    and of the number of replicates."""
    return int(max(1, min(int(most), CHUNK_CELLS // max(int(n), 1))))


def bootstrap_weights(n_rep: int, n: int, *, clusters=None, strata=None, seed: int = 0) -> np.ndarray:
    """All ``n_rep`` replicate weights at once, shape (n_rep, n) (see :func:`iter_bootstrap_weights`
    to bound memory). Row k is replicate k: how often each case was drawn."""
    if n_rep == 0:
        return np.zeros((0, n))
    return np.concatenate(
        [w for _, w in iter_bootstrap_weights(n_rep, n, clusters=clusters, strata=strata, seed=seed)], axis=0
    )


def bootstrap_replicates(
    statistic: Callable[[np.ndarray], np.ndarray],
    n: int,
    *,
    n_rep: int = 1000,
    clusters=None,
    strata=None,
    seed: int = 0,
    chunk: int = 200,
) -> np.ndarray:
    """Evaluate ``statistic(weights)`` — weights (k, n) -> values (k,) or (k, m) — on every replicate,
    chunk by chunk; returns shape (n_rep,) or (n_rep, m)."""
    out = [
        np.asarray(statistic(w))
        for _, w in iter_bootstrap_weights(n_rep, n, clusters=clusters, strata=strata, seed=seed, chunk=chunk)
    ]
    return np.concatenate(out, axis=0) if out else np.zeros((0,))


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Bootstrap percentile interval: type-7 quantiles (R's default, numpy "linear") at (1 ∓ level)/2
    of the finite replicates (Efron & Tibshirani 1993, §13.3). NaN when none is finite.
    For a 2-d array, intervals per column are returned as two arrays."""
    r = np.asarray(replicates, dtype=np.float64)
    qs = [0.5 - level / 2, 0.5 + level / 2]
    if r.ndim == 1:
        r = r[np.isfinite(r)]
        if r.size == 0:
            return float("nan"), float("nan")
        lo, hi = np.quantile(r, qs)
        return float(lo), float(hi)
    lo = np.full(r.shape[1], np.nan)
    hi = np.full(r.shape[1], np.nan)
    for j in range(r.shape[1]):
        lo[j], hi[j] = percentile_interval(r[:, j], level)
    return lo, hi


def paired_bootstrap_difference(
    metric_a: Callable[[np.ndarray], np.ndarray],
    metric_b: Callable[[np.ndarray], np.ndarray],
    n: int,
    *,
    n_rep: int = 1000,
    clusters=None,
    strata=None,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Paired bootstrap of a difference of two metrics on the same cases (e.g. ECE after two
    calibration methods): both see the same replicate weights. ``metric_x(weights (k, n)) -> (k,)``.

    Returns ``{"estimate", "ci_low", "ci_high", "method": "bootstrap", "p_value"}`` where estimate is
    metric_a − metric_b on the full sample and p_value the two-sided bootstrap p-value
    2 min(P*(d ≤ 0), P*(d ≥ 0)) (capped at 1)."""
    ones = np.ones((1, n))
    est = float(np.asarray(metric_a(ones))[0] - np.asarray(metric_b(ones))[0])
    d = bootstrap_replicates(
        lambda w: np.asarray(metric_a(w)) - np.asarray(metric_b(w)),
        n,
        n_rep=n_rep,
        clusters=clusters,
        strata=strata,
        seed=seed,
    )
    lo, hi = percentile_interval(d, level)
    fin = d[np.isfinite(d)]
    p = float(min(1.0, 2 * min(np.mean(fin <= 0), np.mean(fin >= 0)))) if fin.size else None
    return {"estimate": est, "ci_low": lo, "ci_high": hi, "method": "bootstrap", "p_value": p}
