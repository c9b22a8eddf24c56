"""Site x subgroup analysis (``subgroups.json``): blocks, gaps to the site, worst groups.

For each site (and pooled over sites, under ``overall``), for each declared subgroup and
intersection, and each of its groups:

- the metric BLOCK of the group's cases, from the metrics engine (:func:`validate.metrics.metrics_report`),
  with its intervals and its ``insufficient`` mark — groups too small to judge are kept and marked,
  never hidden;
- the gap ``d = metric(group) − metric(site)`` for the metrics of the registry's ``subgroup_gaps`` list
  (:mod:`validate.metrics.registry`, with their weighted functions), where the
  site value is computed on all of the site's cases (the group included), with a paired bootstrap
  percentile interval: both terms are evaluated on the same replicate weights (the engine's
  clustered, seeded weights: :func:`validate.metrics.iter_bootstrap_weights`; pooled gaps are also
  stratified by site), and a two-sided bootstrap p-value 2·min(P*(d ≤ 0), P*(d ≥ 0)) as in
  :func:`validate.metrics.paired_bootstrap_difference`. Replicates in which the group was not drawn or
  the metric is undefined are left out.
- the worst group per metric: the group with the worst estimate among groups that are not
  insufficient, for the metrics of the registry's ``subgroup_worst`` list, by the registry's direction
  (lowest where higher is better, highest where lower is better, furthest from the target value: 1 for
  the calibration slope, 0 for the intercept); the groups left out as too small are listed beside it.

Group order: numeric bands by their lower bound (``<45``, ``45-54``, ...), other values
alphabetically, ``missing`` last (:func:`validate.groups.group_sort_key`); ``groups`` in the output gives this order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from validate.groups import MISSING, group_sort_key  # noqa: F401 - re-exported
from validate.metrics import registry
from validate.metrics.registry import badness  # noqa: F401  (re-exported: how bad an estimate is)


def _estimate(block: Mapping, metric: str) -> float | None:
    e = block.get(metric)
    if isinstance(e, Mapping):
        e = e.get("estimate")
    if e is None or isinstance(e, bool):
        return None
    e = float(e)
    return e if math.isfinite(e) else None


def worst_metrics(task: str) -> tuple[str, ...]:
    """The metrics whose worst group is named (the registry's ``subgroup_worst`` list of the task)."""
    return registry.names("subgroup_worst", task)


def gap_metrics(task: str) -> tuple[str, ...]:
    """The metrics with a paired gap to the site (the registry's ``subgroup_gaps`` list of the task)."""
    return registry.names("subgroup_gaps", task)


def worst_groups(
    blocks: Mapping[str, Mapping], metrics: Sequence[str], gaps: Mapping[str, Mapping] | None = None
) -> dict:
    """For each metric, the worst group among those not marked insufficient (see module docstring)."""
    out = {}
    small = sorted((g for g, b in blocks.items() if b.get("insufficient")), key=group_sort_key)
    for m in metrics:
        cands = [
            (badness(m, _estimate(b, m)), g)
            for g, b in blocks.items()
            if not b.get("insufficient") and _estimate(b, m) is not None
        ]
        cands = [c for c in cands if c[0] is not None]
        if not cands and not small:
            continue
        row: dict[str, Any] = {"excluded_insufficient": small}
        if cands:
            worst_bad = max(c[0] for c in cands)
            # ties go to the first group in natural order, so the choice is deterministic
            g = sorted((c[1] for c in cands if c[0] == worst_bad), key=group_sort_key)[0]
            e = blocks[g][m]
            row.update(
                group=g,
                n=blocks[g].get("n"),
                n_events=blocks[g].get("n_events"),
                estimate=_estimate(blocks[g], m),
                ci_low=e.get("ci_low") if isinstance(e, Mapping) else None,
                ci_high=e.get("ci_high") if isinstance(e, Mapping) else None,
            )
            if gaps and g in gaps and m in (gaps[g] or {}):
                row["gap"] = gaps[g][m]
        else:
            row["group"] = None
        out[m] = row
    return out


# ---- paired bootstrap gaps ---------------------------------------------------------------------


def _binary_metric_fns(
    y: np.ndarray, p: np.ndarray, settings, metrics: Sequence[str], score: np.ndarray | None = None
) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """The registry's weighted functions of ``metrics``, weights (k, n) -> (k,), sharing one sort of p
    (operating points at the first threshold, else 0.5). The ranking metrics (AUROC, AUPRC) rank
    ``score`` (the logits when given; default p): sigmoid ties logits above ~36.7."""
    from functools import partial

    from validate.metrics.replicates import WeightedCases

    t = float(settings.thresholds[0]) if settings.thresholds else 0.5
    cases = WeightedCases(y, p, bins=settings.bins, threshold=t, score=score)
    return {m: partial(registry.get(m, "binary").weighted, cases) for m in metrics}


def _safe(fn, w) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(fn(w), dtype=np.float64).reshape(-1)


def paired_gaps(
    y, p, masks: Mapping[str, np.ndarray], *, settings, metrics: Sequence[str], clusters=None, strata=None, score=None
) -> dict[str, dict[str, dict]]:
    """``{group: {metric: gap entry}}`` for boolean ``masks`` over one set of cases (see module docstring).
    ``score``: what AUROC and AUPRC rank (the logits when given; default p)."""
    from validate.metrics import iter_bootstrap_weights, percentile_interval
    from validate.metrics.bootstrap import replicate_chunk
    from validate.metrics.ece_interval import with_note

    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    n = y.size
    score = None if score is None else np.asarray(score, dtype=np.float64)
    fns = _binary_metric_fns(y, p, settings, metrics, score)
    ones = np.ones((1, n))
    site_point = {m: _safe(f, ones)[0] for m, f in fns.items()}
    mask_w = {g: m.astype(np.float64)[None, :] for g, m in masks.items()}
    point = {g: {m: _safe(f, mw)[0] - site_point[m] for m, f in fns.items()} for g, mw in mask_w.items()}
    reps: dict[str, dict[str, list]] = {g: {m: [] for m in fns} for g in masks}
    if settings.n_bootstrap > 0:
        for _, w in iter_bootstrap_weights(
            settings.n_bootstrap, n, clusters=clusters, strata=strata, seed=settings.seed, chunk=replicate_chunk(n)
        ):
            base = {m: _safe(f, w) for m, f in fns.items()}
            for g, mw in mask_w.items():
                wg = w * mw
                for m, f in fns.items():
                    reps[g][m].append(_safe(f, wg) - base[m])
    out: dict[str, dict[str, dict]] = {}
    for g in masks:
        out[g] = {}
        for m in fns:
            est = point[g][m]
            entry: dict[str, Any] = {
                "estimate": _fin(est),
                "ci_low": None,
                "ci_high": None,
                "method": "bootstrap",
                "p_value": None,
                "reference": _fin(site_point[m]),
            }
            if entry["estimate"] is not None and reps[g][m]:
                d = np.concatenate(reps[g][m])
                d = d[np.isfinite(d)]
                if d.size:
                    lo, hi = percentile_interval(d, settings.ci_level)
                    entry.update(
                        ci_low=_fin(lo),
                        ci_high=_fin(hi),
                        replicates=int(d.size),
                        p_value=_fin(min(1.0, 2 * min(np.mean(d <= 0), np.mean(d >= 0)))),
                    )
                    with_note(entry)  # a gap of biased statistics (ECE, E90) can fall outside: say why
            out[g][m] = entry
    return out


def _fin(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


# ---- the analysis --------------------------------------------------------------------------------


def _level(
    table, groups, attrs: Sequence[str], *, task: str, settings, blocks_by_attr: Mapping, stratify: bool
) -> dict:
    metrics = gap_metrics(task)
    clusters = table.clusters(settings.cluster_by)
    strata = table.site_ids.astype(str) if stratify else None
    out: dict[str, Any] = {"subgroups": {}, "worst": {}}
    for attr in attrs:
        col = groups[attr].astype(str).to_numpy()
        blocks = blocks_by_attr.get(attr) or {}
        values = sorted(set(col) | set(blocks), key=group_sort_key)
        gaps: dict[str, dict] = {}
        if metrics:
            masks = {g: col == g for g in values if (col == g).any()}
            gaps = paired_gaps(
                table.labels(),
                table.probabilities(),
                masks,
                settings=settings,
                metrics=metrics,
                clusters=clusters,
                strata=strata,
                score=table.scores(),
            )
        cells = {}
        for g in values:
            block = blocks.get(g)
            if block is None:
                block = {"n": 0, "insufficient": True, "reason": "no cases"}
            cell: dict[str, Any] = {"block": block}
            if g in gaps:
                cell["gap"] = gaps[g]
            cells[g] = cell
        out["subgroups"][attr] = cells
        out["worst"][attr] = worst_groups({g: c["block"] for g, c in cells.items()}, worst_metrics(task), gaps=gaps)
    return out


def subgroup_analysis(
    table,
    groups,
    *,
    task: str,
    settings,
    metrics: Mapping | None = None,
    sites: Sequence[str] | None = None,
    report_fn: Callable | None = None,
    class_names: Sequence[str] | None = None,
    label_names: Sequence[str] | None = None,
) -> dict:
    """``subgroups.json`` for a predictions ``table`` (a :class:`~validate.predictions.PredictionsTable`,
    or a DataFrame read through :func:`~validate.predictions.as_table`) and its subgroup columns
    ``groups`` (the frame of :func:`validate.cohort.derive_subgroups`, aligned with ``table``).

    ``settings``: :class:`validate.metrics.MetricSettings`. ``metrics``: the run's Metrics JSON, whose
    pooled subgroup blocks are reused under ``overall`` (computed when absent). ``report_fn``: the
    metrics engine's ``metrics_report`` (injectable for tests). Site x group blocks are computed without
    bootstrap intervals for the lowess/loess errors (eavg, e50, e90, emax, ici): one smoother fit per
    replicate and cell is the dominant cost, and the pooled blocks of ``metrics.json`` carry them.
    """
    if report_fn is None:
        from validate.metrics import metrics_report as report_fn
    from validate.predictions import as_table

    names = {k: list(v) for k, v in (("class_names", class_names), ("label_names", label_names)) if v}
    attrs = list(groups.columns)
    full = as_table(table, task=task, **names).with_attributes(groups.astype(str))
    site_col = full.site_ids.astype(str)
    sites = list(sites) if sites is not None else sorted(set(site_col))
    out: dict[str, Any] = {
        "task": task,
        "n_bootstrap": settings.n_bootstrap,
        "ci_level": settings.ci_level,
        "seed": settings.seed,
        "gap_metrics": list(gap_metrics(task)),
        "gap_definition": "metric(group) - metric(site, all its cases); paired bootstrap percentile interval",
        "attributes": attrs,
        "groups": {},
        "sites": {},
    }
    for attr in attrs:
        out["groups"][attr] = sorted(set(full.frame[attr]), key=group_sort_key)
    for s, part in full.by_site(sites):
        # lowess/loess intervals cost a smoother fit per replicate and block; site x group cells skip them
        # (their point estimates stay) — the pooled blocks of metrics.json carry them
        rep = report_fn(part, task=task, settings=settings, subgroup_columns=attrs, smooth_intervals=False, **names)
        out["sites"][s] = _level(
            part,
            part.frame[attrs],
            attrs,
            task=task,
            settings=settings,
            blocks_by_attr=rep.get("subgroups") or {},
            stratify=False,
        )
    pooled = (metrics or {}).get("subgroups")
    if pooled is None:
        pooled = (
            report_fn(full, task=task, settings=settings, subgroup_columns=attrs, smooth_intervals=False, **names).get(
                "subgroups"
            )
            or {}
        )
    out["overall"] = _level(
        full, full.frame[attrs], attrs, task=task, settings=settings, blocks_by_attr=pooled, stratify=True
    )
    return out
