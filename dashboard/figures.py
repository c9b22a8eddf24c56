"""The dashboard's figures: :mod:`validate.charts` (shared with the HTML report) fed from a loaded run.

Nothing is drawn here: each function picks the bundle data a page needs and hands it to the shared
builder, so a figure looks the same in the dashboard and in the report. Functions return ``None`` when
the bundle lacks the data for that figure (the page then says so instead of drawing).

The one computation: the Reliability page's subgroup filter. ``curves.json`` holds reliability bins per
site, not per site x group, so for a chosen group the bins are computed on demand from the
predictions by the same engine functions that wrote ``curves.json``
(:func:`validate.analysis.sites.binary_curves`, :func:`validate.analysis.sites.calibrated_reliability`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Optional

import pandas as pd
import streamlit as st

from dashboard import data as dash_data, tables
from validate import charts
from validate.metrics import registry
from validate.report import adapters

Group = Optional[tuple[str, str]]  # (subgroup name, group value); None = all patients


# ---- overview / compare ----------------------------------------------------------------------------

def site_forest(run):
    """The Overview's forest plot: the first key metric (AUROC for binary) per site and pooled."""
    keys = tables.key_metrics(run)
    if not keys or not run.metrics.get("sites"):
        return None
    return charts.metric_forest(run.metrics, keys[0], sites=run.sites,
                                title=f"{charts.metric_label(keys[0])} per site")


def calibration_forest(run):
    if not any("calibration_slope" in b for b in (run.metrics.get("sites") or {}).values()):
        return None
    return charts.calibration_forest(run.metrics, sites=run.sites)


def compare_forest(numeric: pd.DataFrame, metric: str, base_name: str, new_name: str):
    """Forest plot of the differences new - base per site (rows of :func:`dashboard.tables.compare_table`)."""
    if numeric is None or numeric.empty:
        return None
    rows = []
    for r in numeric.itertuples(index=False):
        if r.difference is None or pd.isna(r.difference):
            continue
        rows.append({"label": str(r.site), "estimate": float(r.difference),
                     "ci_low": None if pd.isna(r.difference_ci_low) else float(r.difference_ci_low),
                     "ci_high": None if pd.isna(r.difference_ci_high) else float(r.difference_ci_high),
                     "n": r.n_new})
    if not rows:
        return None
    return charts.forest_figure(rows, title=f"{charts.metric_label(metric)}: {new_name} − {base_name}",
                                x_title=f"Difference in {charts.metric_label(metric)} (MOVER interval)", reference=0.0)


# ---- subgroups --------------------------------------------------------------------------------------

def _analysis(run) -> Optional[dict]:
    """``subgroups.json``, or for a bundle without it the pooled groups of ``metrics.json`` in its shape."""
    if run.subgroups:
        return run.subgroups
    pooled = run.metrics.get("subgroups")
    if not pooled:
        return None
    return {"overall": {"subgroups": {a: {g: {"block": b} for g, b in groups.items()} for a, groups in pooled.items()}},
            "sites": {}, "ci_level": run.ci_level}


def subgroup_forest(run, attribute: str, metric: str, site: str = "overall"):
    analysis = _analysis(run)
    if not analysis:
        return None
    return charts.subgroup_forest(analysis, attribute, metric, site=site, metrics=run.metrics)


def gap_forest(run, attribute: str, metric: str, site: str = "overall"):
    if not run.subgroups:
        return None
    return charts.gap_forest(run.subgroups, attribute, metric, site=site)


def subgroup_heatmap(run, attribute: str, metric: str):
    if not run.subgroups or not run.subgroups.get("sites"):
        return None
    return charts.subgroup_heatmap(run.subgroups, attribute, metric, sites=[s for s in run.sites
                                                                             if s in run.subgroups["sites"]])


# ---- calibration methods ----------------------------------------------------------------------------

def method_comparison(run, metric: str):
    if not run.calibration or not run.calibration.get("methods"):
        return None
    return charts.calibration_methods_figure(run.calibration, metric)


# what the repeated and transfer designs record: the registry's calibration-ranking metrics
DESIGN_METRICS = registry.names("calibration_ranking", "binary")


def _designs(run) -> dict:
    return (run.calibration or {}).get("designs") or {}


def sample_size_sites(run) -> list[str]:
    sites = ((_designs(run).get("sample_size") or {}).get("sites") or {})
    return [s for s, v in sites.items() if (v or {}).get("sizes")]


def sample_size_curve(run, metric: str = "ece", sites: Optional[Sequence[str]] = None,
                      methods: Optional[Sequence[str]] = None):
    """The sample-size design's curves, from the rows the report draws too
    (:func:`validate.report.adapters.sample_size_rows`), so both presentations agree."""
    rows = adapters.sample_size_rows(run.calibration or {}, metric, methods=methods, sites=sites)
    if not rows:
        return None
    return charts.sample_size_figure(rows, metric)


def transfer_methods(run) -> list[str]:
    return list(((_designs(run).get("transfer") or {}).get("methods") or {}).keys())


def transfer_matrix(run, metric: str = "ece", method: str = "none"):
    """The transfer design's matrix for ``method`` (:func:`validate.report.adapters.transfer_matrix`, as
    in the report)."""
    matrix = adapters.transfer_matrix(run.calibration or {}, metric).get(method)
    if not matrix:
        return None
    what = "uncalibrated" if method == "none" else f"{method} fitted at the row's site"
    return charts.transfer_matrix_figure(matrix, metric, title=f"Transfer: {charts.metric_label(metric)}, {what}, "
                                                               "evaluated at the column's site")


# ---- discrimination ---------------------------------------------------------------------------------

def curve_classes(run) -> list[str]:
    """Classes (multiclass) or labels (multilabel) with one-vs-rest curves in ``curves.json``."""
    names: list[str] = []
    for c in ((run.curves or {}).get("sites") or {}).values():
        for k in (c.get("classes") or {}):
            if k not in names:
                names.append(k)
    return names


def _binary_view(run, cls: Optional[str] = None) -> tuple[dict, dict]:
    """Per site the binary curve set and the metrics to label it with: binary tasks as stored; other
    tasks one class (or label) against the rest, or without ``cls`` the top-label view (multiclass)."""
    sites = (run.curves or {}).get("sites") or {}
    blocks = run.metrics.get("sites") or {}
    if run.task == "binary":
        return dict(sites), run.metrics
    curves, mblocks = {}, {}
    for s, c in sites.items():
        if cls is None:
            if c.get("top_label"):
                curves[s] = c["top_label"]
            continue
        if (c.get("classes") or {}).get(cls):
            curves[s] = c["classes"][cls]
            b = blocks.get(s) or {}
            mblocks[s] = ((b.get("classes") or b.get("labels") or {}).get(cls)) or {}
    return curves, {"sites": mblocks, "ci_level": run.ci_level}


def roc(run, sites: Sequence[str], cls: Optional[str] = None):
    curves, metrics = _binary_view(run, cls)
    if not curves or not any((curves.get(s) or {}).get("roc") for s in sites):
        return None
    title = None if cls is None else f"{cls} against the rest"
    return charts.roc_figure(curves, metrics, sites=list(sites), colors=charts.site_colors(run.sites),
                             ci_level=run.ci_level, title=title)


def precision_recall(run, sites: Sequence[str], cls: Optional[str] = None):
    curves, metrics = _binary_view(run, cls)
    if not curves or not any((curves.get(s) or {}).get("pr") for s in sites):
        return None
    title = None if cls is None else f"{cls} against the rest"
    return charts.pr_figure(curves, metrics, sites=list(sites), colors=charts.site_colors(run.sites), title=title)


def operating_points(run, sites: Sequence[str]):
    if not any((b or {}).get("operating_points") for b in (run.metrics.get("sites") or {}).values()):
        return None
    return charts.operating_points_figure(run.metrics, sites=list(sites))


# ---- reliability ------------------------------------------------------------------------------------

@dataclass
class ReliabilityOptions:
    """What the Reliability page can show: sites, the methods stored per site, the subgroup filters."""

    sites: list[str] = field(default_factory=list)
    methods: dict[str, list[str]] = field(default_factory=dict)
    groups: list[tuple[str, str]] = field(default_factory=list)

    def methods_for(self, site: str) -> list[str]:
        return self.methods.get(site, ["none"])

    def groups_for(self, site: str, method: str) -> list[Group]:
        return [None, *self.groups]


def _subgroup_specs(run) -> list[dict]:
    return [g for g in run.protocol.get("subgroups") or [] if isinstance(g, dict) and g.get("name")]


def reliability_options(run) -> ReliabilityOptions:
    curves = run.curves or {}
    sites = [s for s in run.sites if s in (curves.get("sites") or {})]
    if curves.get("overall") and sites:
        sites.append("overall")
    methods = {}
    calibrated = curves.get("calibrated") or {}
    for s in sites:
        methods[s] = ["none"] + [m for m, entry in calibrated.items() if s in ((entry or {}).get("sites") or {})]
    groups: list[tuple[str, str]] = []
    if run.has_predictions and run.task != "multilabel":
        analysis = run.subgroups or {}
        order = analysis.get("groups") or {}
        for spec in _subgroup_specs(run):
            name = spec["name"]
            values = order.get(name) or list(((run.metrics.get("subgroups") or {}).get(name) or {}).keys())
            groups += [(name, str(v)) for v in values]
    return ReliabilityOptions(sites=sites, methods=methods, groups=groups)


def _stored_curve(run, site: str, method: str) -> Optional[dict]:
    curves = run.curves or {}
    if method == "none":
        c = curves.get("overall") if site == "overall" else (curves.get("sites") or {}).get(site)
        if c and run.task == "multiclass":
            c = c.get("top_label")
        return c
    return (((curves.get("calibrated") or {}).get(method) or {}).get("sites") or {}).get(site)


def reliability(run, site: str, method: str, group: Group = None):
    """The reliability diagram of ``site`` (``"overall"``: pooled) after ``method`` (``"none"``: as
    shipped), for all patients or one subgroup ``group``."""
    curve = _stored_curve(run, site, method) if group is None else _group_curve(run, site, method, group)
    if not curve or not curve.get("reliability"):
        return None
    where = "all sites" if site == "overall" else site
    who = "" if group is None else f", {group[0]} = {group[1]}"
    what = "uncalibrated" if method == "none" else f"after {method}"
    return charts.reliability_figure(curve, title=f"{where}{who}: {what} (n={curve.get('n')})",
                                     color=charts.site_colors(run.sites + ["overall"]).get(site, charts.PALETTE[0]),
                                     ci_level=run.ci_level)


def reliability_block(run, site: str, method: str, group: Group = None) -> Optional[dict]:
    """The metrics BLOCK matching the diagram (from metrics.json / calibration.json / subgroups.json)."""
    if group is not None:
        if method != "none":
            return None
        analysis = run.subgroups or {}
        level = analysis.get("overall") if site == "overall" else (analysis.get("sites") or {}).get(site)
        cell = (((level or {}).get("subgroups") or {}).get(group[0]) or {}).get(group[1]) or {}
        return cell.get("block")
    if method == "none":
        return run.metrics.get("overall") if site == "overall" else (run.metrics.get("sites") or {}).get(site)
    return ((((run.calibration or {}).get("methods") or {}).get(method) or {}).get("sites") or {}).get(site)


def _group_curve(run, site: str, method: str, group: tuple[str, str]) -> Optional[dict]:
    bins = int((run.curves or {}).get("bins") or (run.protocol.get("metrics") or {}).get("bins") or 15)
    return _group_curve_cached(run.path, run.identity, site, method, group[0], group[1], bins, run.ci_level)


@st.cache_data(show_spinner="Computing the reliability bins of this group…", max_entries=64)
def _group_curve_cached(path: str, identity: str, site: str, method: str, subgroup: str, value: str, bins: int,
                        level: float) -> Optional[dict]:
    from validate.analysis.sites import binary_curves, calibrated_reliability
    from validate.predictions import as_table

    run = dash_data._load_run(path, identity)
    pred = dash_data._read_predictions(path, identity)
    labels = _group_labels(run, pred, subgroup)
    if labels is None:
        return None
    mask = labels == value
    if site != "overall":
        mask &= pred["site"].astype(str) == site
    part = pred[mask.to_numpy()]
    if part.empty:
        return None
    settings = SimpleNamespace(bins=bins, ci_level=level)
    if method != "none":
        if run.task != "binary" or not run.calibration:
            return None
        out = calibrated_reliability(part, run.calibration, settings=settings, sites=[site], fit_on=[])
        return ((out.get(method) or {}).get("sites") or {}).get(site)
    names = list(run.protocol.get("classes") or [])
    table = as_table(part, task=run.task, class_names=names if run.task == "multiclass" else None)
    P, y = table.probabilities(), table.labels()
    if run.task == "multiclass":
        return binary_curves((P.argmax(axis=1) == y).astype(float), P.max(axis=1), bins=bins, level=level)
    return binary_curves(y, P, bins=bins, level=level)


def _group_labels(run, pred: pd.DataFrame, subgroup: str) -> Optional[pd.Series]:
    """Each case's group of ``subgroup``, derived from the case attributes by the protocol's definition
    (:func:`validate.cohort.derive_subgroups`: categories, numeric bands, intersections); else the
    predictions' own column of that name."""
    specs = _subgroup_specs(run)
    if any(s["name"] == subgroup for s in specs):
        from validate.cohort import derive_subgroups

        ns = [SimpleNamespace(name=s["name"], column=s.get("column"), bands=s.get("bands"),
                              intersection=s.get("intersection")) for s in specs]
        try:
            derived = derive_subgroups(pred, SimpleNamespace(subgroups=ns))
            return derived[subgroup]
        except Exception:  # an attribute the predictions do not carry: fall back to a stored column
            pass
    if subgroup in pred.columns:
        return pred[subgroup].astype(str)
    return None


# ---- shift and drift --------------------------------------------------------------------------------

def shift_ranking(run, site: str):
    if not run.shift or site not in (run.shift.get("sites") or {}):
        return None
    return charts.shift_summary_figure(run.shift, site)


def drift(run, site: str, metric: Optional[str] = None):
    d = (((run.shift or {}).get("drift") or {}).get("sites") or {}).get(site)
    if not d:
        return None
    metrics = (metric,) if metric else ("auroc", "ece", "calibration_intercept", "prevalence", "mean_score")
    return charts.drift_figure(d, metrics=metrics)
