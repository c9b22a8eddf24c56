"""The analyses beside the metrics blocks (site ROC bands, subgroup gaps, decision curves, model
comparison, fairness, segmentation summaries) draw their replicate weights in chunks sized by
``replicate_chunk(n)``: at most ``CHUNK_CELLS`` cases × replicates at once, whatever n, and the same
numbers as the former fixed chunk of 100 replicates (the draws do not depend on the chunk).

``CHUNK_CELLS`` is made small here so that a 300-case cohort needs chunks of 7 replicates; the spy on
the resampler records how many replicate rows each draw asks for."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from validate.metrics import bootstrap
from validate.metrics.bootstrap import bootstrap_weights
from validate.metrics.settings import MetricSettings

N, N_REP, SMALL_CHUNK = 300, 60, 7


@pytest.fixture
def cohort():
    rng = np.random.default_rng(11)
    z = rng.normal(0.0, 1.5, N)
    y = (rng.random(N) < 1.0 / (1.0 + np.exp(-z))).astype(np.float64)
    clusters = np.repeat(np.arange(N // 3), 3)
    return y, 1.0 / (1.0 + np.exp(-z)), z, clusters


def _spy(monkeypatch, small: bool) -> list[int]:
    """Replicate rows per draw, recorded; with ``small``, chunks of SMALL_CHUNK replicates at N cases."""
    drawn: list[int] = []
    block, rows = bootstrap.Resampling.block, bootstrap.Resampling.rows

    def spy_block(self, seed, b, k):
        drawn.append(int(k))
        return block(self, seed, b, k)

    def spy_rows(self, seed, b, r0, k):
        drawn.append(int(k))
        return rows(self, seed, b, r0, k)

    monkeypatch.setattr(bootstrap.Resampling, "block", spy_block)
    monkeypatch.setattr(bootstrap.Resampling, "rows", spy_rows)
    if small:
        monkeypatch.setattr(bootstrap, "CHUNK_CELLS", N * SMALL_CHUNK)
    return drawn


def _both(monkeypatch, run):
    """``run()`` with the default chunks, then with chunks of SMALL_CHUNK: (default, small, rows per draw)."""
    _spy(monkeypatch, small=False)
    default = run()
    drawn = _spy(monkeypatch, small=True)
    small = run()
    return default, small, drawn


def _assert_same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)) and a and isinstance(a[0], dict):
        assert len(a) == len(b)
        for x, z in zip(a, b, strict=True):
            _assert_same(x, z)
    elif isinstance(a, (list, tuple, np.ndarray)):
        np.testing.assert_allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol=1e-12)
    elif isinstance(a, float):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    else:
        assert a == b


def _bounded(drawn: list[int]) -> None:
    assert drawn, "no replicate was drawn"
    assert max(drawn) <= SMALL_CHUNK
    assert sum(drawn) >= N_REP


def test_site_roc_band_in_bounded_chunks(monkeypatch, cohort):
    from validate.analysis.sites import _roc_band

    y, p, _, clusters = cohort
    default, small, drawn = _both(
        monkeypatch, lambda: _roc_band(y, p, clusters=clusters, n_rep=N_REP, seed=3, level=0.95)
    )
    _bounded(drawn)
    _assert_same(default, small)


def test_subgroup_gaps_in_bounded_chunks(monkeypatch, cohort):
    from validate.analysis.subgroups import paired_gaps

    y, p, z, clusters = cohort
    masks = {"a": np.arange(N) % 2 == 0, "b": np.arange(N) % 2 == 1}
    settings = MetricSettings(n_bootstrap=N_REP)

    def run():
        return paired_gaps(y, p, masks, settings=settings, metrics=["auroc", "brier"], clusters=clusters, score=z)

    default, small, drawn = _both(monkeypatch, run)
    _bounded(drawn)
    _assert_same(default, small)


def test_decision_curve_replicates_in_bounded_chunks(monkeypatch, cohort):
    from validate.analysis.decision import _curve_replicates

    y, p, _, clusters = cohort
    t = np.linspace(0.05, 0.6, 12)
    settings = MetricSettings(n_bootstrap=N_REP)
    default, small, drawn = _both(monkeypatch, lambda: _curve_replicates(y, p, t, settings, clusters, None))
    _bounded(drawn)
    _assert_same(default, small)
    # and each replicate's net benefit is the definition on that replicate's weights (Vickers 2006)
    w = bootstrap_weights(N_REP, N, clusters=clusters, seed=settings.seed)
    for r in (0, N_REP - 1):
        n = w[r].sum()
        tp = np.array([(w[r] * y * (p >= c)).sum() for c in t])
        fp = np.array([(w[r] * (1 - y) * (p >= c)).sum() for c in t])
        np.testing.assert_allclose(small["net_benefit"][r], tp / n - fp / n * t / (1 - t), rtol=1e-12, atol=1e-15)


def test_comparison_deltas_in_bounded_chunks(monkeypatch, cohort):
    from validate.analysis.comparison import delta_block
    from validate.predictions import table_from_frame

    y, _, z, clusters = cohort
    ids = {"case_id": [f"c{i}" for i in range(N)], "site": "s", "patient_id": clusters.astype(str), "y": y}
    new = table_from_frame(pd.DataFrame({**ids, "logit": z}))
    base = table_from_frame(pd.DataFrame({**ids, "logit": 0.5 * z + np.sin(np.arange(N))}))
    settings = MetricSettings(n_bootstrap=N_REP)
    every = np.ones(N, dtype=bool)
    default, small, drawn = _both(
        monkeypatch, lambda: delta_block(y, new, base, every, settings=settings, clusters=clusters)
    )
    _bounded(drawn)
    _assert_same(default, small)


def test_fairness_weights_in_bounded_chunks(monkeypatch, cohort):
    from validate.analysis.fairness import _Level

    y, p, z, clusters = cohort
    settings = MetricSettings(n_bootstrap=N_REP)
    level = _Level(y, p, z, {"sex": np.where(np.arange(N) % 2, "F", "M")}, settings, clusters=clusters)
    default, small, drawn = _both(monkeypatch, lambda: np.concatenate(list(level.weights())))
    _bounded(drawn)
    np.testing.assert_array_equal(small, default)
    np.testing.assert_array_equal(small, bootstrap_weights(N_REP, N, clusters=clusters, seed=settings.seed))


def test_segmentation_summaries_in_bounded_chunks(monkeypatch, cohort):
    from validate.analysis.segmentation import _block_replicates

    _, _, z, clusters = cohort
    values = np.stack([np.abs(z), z**2], axis=1)[:, None, :]  # (n, 1 label, 2 metrics)
    settings = MetricSettings(n_bootstrap=N_REP)
    default, small, drawn = _both(monkeypatch, lambda: _block_replicates(values, settings, clusters, None))
    _bounded(drawn)
    _assert_same(default, small)
    # replicate means against the naive weighted mean on the same weights
    w = bootstrap_weights(N_REP, N, clusters=clusters, seed=settings.seed)
    np.testing.assert_allclose(small[:, 0, 0, 0], w @ np.abs(z) / w.sum(axis=1), rtol=1e-12)
