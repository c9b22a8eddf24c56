"""The decision curve (``curves.json`` key ``decision``): net benefit and treat-all over a grid of
decision thresholds, pooled and per site, with percentile intervals.

Definitions are those of :mod:`validate.metrics.net_benefit` (Vickers & Elkin 2006; treated = p >= t, as
``dcurves``). The bootstrap is the metrics blocks' own: the same seed, the same patient clusters and
(pooled) the same site strata (:func:`validate.metrics.report.metrics_report`), so where a grid point
equals a decision threshold of the protocol, the curve's estimate and interval are those of the block's
``decision`` item.

Each site's curve is at that site's own prevalence: it is the net benefit the site would get by using
the model. The pooled curve mixes the sites' prevalences (and case mixes), so it describes no single
hospital. Binary tasks only (a multiclass or multilabel task's per-class blocks carry their ``decision``
items, but no curve is drawn for them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from validate.metrics.blocks import BOOTSTRAP_CHUNK, _num
from validate.metrics.bootstrap import iter_bootstrap_weights, percentile_interval, replicate_chunk
from validate.metrics.net_benefit import decision_sums, net_benefit, treat_all


def decision_curves(table, *, settings, sites: Sequence[str]) -> dict:
    """``{"thresholds", "ci_level", "blocks": {"overall": CURVE, "sites": {site: CURVE}}}`` over
    ``settings.decision_grid`` for a binary :class:`~validate.predictions.PredictionsTable` (see
    :func:`decision_curve` for CURVE)."""
    from validate.metrics.report import _clusters

    grid = settings.decision_grid
    frame = table.frame
    y, p = table.y(), table.prob()
    site_ids = frame["site"].to_numpy(dtype=object)
    overall = decision_curve(y, p, grid, settings=settings, clusters=_clusters(frame, settings), strata=site_ids)
    per_site = {}
    for s in sites:
        mask = site_ids == s
        if mask.any():
            per_site[s] = decision_curve(
                y[mask], p[mask], grid, settings=settings, clusters=_clusters(frame.loc[mask], settings)
            )
    return {
        "thresholds": [float(t) for t in grid],
        "ci_level": settings.ci_level,
        "blocks": {"overall": overall, "sites": per_site},
    }


def decision_curve(y, p, grid, *, settings, clusters=None, strata=None) -> dict:
    """CURVE of one set of cases: ``n``, ``n_events``, ``prevalence``, and per threshold of ``grid`` the
    model's net benefit and treat-all's, each with its percentile interval from ``settings.n_bootstrap``
    replicates (``None`` where undefined or without replicates)."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    n, events = int(y.size), int(y.sum())
    curve: dict[str, Any] = {"n": n, "n_events": events, "prevalence": _num(events / n) if n else None}
    t = np.asarray(grid, dtype=np.float64)
    point = _curve_values(decision_sums(y, p, t), t)
    reps = _curve_replicates(y, p, t, settings, clusters, strata) if n else None
    for name, values in point.items():
        curve[name] = [_num(v) for v in values[0]] if n else [None] * t.size
        lo, hi = _intervals(reps[name] if reps is not None else None, settings.ci_level, t.size)
        curve[f"{name}_ci_low"], curve[f"{name}_ci_high"] = lo, hi
    return curve


def _curve_values(sums: dict, t: np.ndarray) -> dict[str, np.ndarray]:
    """Net benefit and treat all (k, T) from :func:`~validate.metrics.net_benefit.decision_sums`."""
    n, events = sums["n"][:, None], sums["events"][:, None]
    return {"net_benefit": net_benefit(sums["tp"], sums["fp"], n, t), "treat_all": treat_all(events, n, t)}


def _curve_replicates(y, p, t, settings, clusters, strata) -> dict[str, np.ndarray] | None:
    """The curve values (n_bootstrap, T) of every replicate, drawn as the metrics blocks draw them."""
    if settings.n_bootstrap <= 0:
        return None
    parts: dict[str, list] = {}
    for _, w in iter_bootstrap_weights(
        settings.n_bootstrap,
        y.size,
        clusters=clusters,
        strata=strata,
        seed=settings.seed,
        chunk=replicate_chunk(y.size, BOOTSTRAP_CHUNK),
    ):
        for name, values in _curve_values(decision_sums(y, p, t, w), t).items():
            parts.setdefault(name, []).append(values)
    return {name: np.concatenate(v, axis=0) for name, v in parts.items()}


def _intervals(reps: np.ndarray | None, level: float, size: int) -> tuple[list, list]:
    """Per threshold the percentile interval of the finite replicates; None without replicates."""
    if reps is None:
        return [None] * size, [None] * size
    lo, hi = percentile_interval(reps, level)  # (T,) arrays for a 2-d input
    return [_num(v) for v in np.atleast_1d(lo)], [_num(v) for v in np.atleast_1d(hi)]
