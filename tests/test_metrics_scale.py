"""Issue #21 (scale): replicate weights in chunks smaller than an RNG block are the same draws as the
whole block, the references being NumPy's own ``Generator.integers`` (what the engine has always drawn)
and the report computed with the former fixed chunk of 100 replicates."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import validate.metrics.bootstrap as bootstrap
from validate.metrics.bootstrap import RNG_BLOCK, BlockStream, iter_bootstrap_weights, replicate_chunk


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000, 1_000_003])
def test_block_stream_rows_equal_numpy_integers(size):
    """Each stratum's rows, drawn from any row on, are NumPy's ``integers(0, size, (50, size), int32)``,
    stratum after stratum from ``default_rng([seed, b])``."""
    sizes = [size, 5, size]
    block = BlockStream((11, 3), sizes)
    rng = np.random.default_rng([11, 3])
    for s, full in enumerate(sizes):
        expected = rng.integers(0, full, size=(RNG_BLOCK, full), dtype=np.int32)
        for r0, k in ((0, 1), (0, RNG_BLOCK), (17, 5), (RNG_BLOCK - 1, 1)):
            np.testing.assert_array_equal(block.draws(s, r0, k), expected[r0 : r0 + k])
    if size == 1_000_003:
        # 2^32 mod 1000003 > 0: some 32-bit values were rejected, so the offsets had to count them
        assert block.row_at[0][-1] > RNG_BLOCK * size


@pytest.mark.parametrize(
    "case",
    ["plain", "strata", "clusters", "order", "single-unit stratum", "everything"],
)
@pytest.mark.parametrize("chunk", [1, 7, 49])
def test_small_chunks_are_the_whole_blocks_rows(case, chunk):
    rng = np.random.default_rng(0)
    n = 600
    strata = clusters = order = None
    if case in ("strata", "everything"):
        strata = rng.integers(0, 4, n)
    if case in ("clusters", "everything"):
        clusters = rng.integers(0, 150, n)
    if case in ("order", "everything"):
        order = rng.permutation(n)
    if case == "single-unit stratum":
        strata = np.r_[np.zeros(n - 1), 1]
    kw = dict(strata=strata, clusters=clusters, order=order, seed=7)
    for reps in (120, 37):
        whole = np.concatenate([w for _, w in iter_bootstrap_weights(reps, n, chunk=100, **kw)])
        parts = list(iter_bootstrap_weights(reps, n, chunk=chunk, **kw))
        assert all(w.shape[0] <= chunk for _, w in parts)
        assert [f for f, _ in parts] == list(np.cumsum([0] + [w.shape[0] for _, w in parts[:-1]]))
        np.testing.assert_array_equal(np.concatenate([w for _, w in parts]), whole)


def test_replicate_chunk_bounds_the_cells_of_a_chunk():
    assert replicate_chunk(1_000) == 100  # small blocks keep the former chunk
    for n in (100_000, 1_000_000, 10_000_000, 10**9):
        k = replicate_chunk(n)
        assert k >= 1
        assert k * n <= max(bootstrap.CHUNK_CELLS, n)


def _table(n: int, sites: int) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    z = rng.normal(-1.0, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-0.9 * z))).astype(int)
    return pd.DataFrame(
        {
            "site": np.repeat([f"s{i}" for i in range(sites)], n // sites),
            "patient_id": np.arange(n) // 2,
            "y": y,
            "logit": z,
        }
    )


def _assert_same_report(got, want, path="") -> None:
    """Equal structure and values; floats to 1e-12 relative: the replicates are the same draws, but a
    matrix product of k replicate rows may add in another order for another k (BLAS blocking), as
    between worker processes (tests/test_metrics_workers.py)."""
    if isinstance(want, dict):
        assert sorted(got) == sorted(want), path
        for k in want:
            _assert_same_report(got[k], want[k], f"{path}/{k}")
    elif isinstance(want, list):
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _assert_same_report(g, w, f"{path}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        assert got == pytest.approx(want, rel=1e-12, abs=1e-15), path
    else:
        assert got == want, path


def test_report_identical_with_row_chunks(monkeypatch):
    """The whole binary report (every metric, every interval, the smoothers included) with chunks of a
    few replicates cut out of RNG blocks equals the report with chunks of 100."""
    from validate.metrics import MetricSettings, metrics_report
    from validate.predictions import table_from_frame

    table = table_from_frame(_table(2400, 3))
    settings = MetricSettings(n_bootstrap=110)
    whole = metrics_report(table, settings=settings, workers=1)
    monkeypatch.setattr(bootstrap, "CHUNK_CELLS", 2400 * 3)  # pooled block: chunks of 3, sites: of 9
    assert replicate_chunk(2400) == 3
    small = metrics_report(table, settings=settings, workers=1)
    _assert_same_report(json.loads(json.dumps(small)), json.loads(json.dumps(whole)))
