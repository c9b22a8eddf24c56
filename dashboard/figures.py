"""The dashboard's figures: :mod:`validate.charts` (shared with the HTML report) fed from a loaded run.

Nothing is drawn or computed here: each function picks the bundle data a page needs and hands it to
the shared builder, so a figure looks the same in the dashboard and in the report. Functions return
``None`` when the bundle lacks the data for that figure (the page then says so instead of drawing).
The Reliability page's subgroup filter shows the per-group diagrams the run stored in ``curves.json``
(``subgroups``), read through the bundle contract (:class:`validate.contract.CurvesFile`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import tables
from validate import charts, contract, view
from validate.metrics import registry

Group = tuple[str, str] | None  # (subgroup name, group value); None = all patients


# ---- overview / compare ----------------------------------------------------------------------------


def site_forest(run):
    """The Overview's forest plot: the first key metric (AUROC for binary) per site and pooled."""
    keys = tables.key_metrics(run)
    if not keys or not run.metrics.get("sites"):
        return None
    return charts.metric_forest(
        run.metrics, keys[0], sites=run.sites, colors=run.site_colors, title=f"{charts.metric_label(keys[0])} per site"
    )


def calibration_forest(run):
    if not any("calibration_slope" in b for b in (run.metrics.get("sites") or {}).values()):
        return None
    return charts.calibration_forest(run.metrics, sites=run.sites, colors=run.site_colors)


def compare_forest(numeric: pd.DataFrame, metric: str, base_name: str, new_name: str):
    """Forest plot of the differences new - base per site (rows of :func:`dashboard.tables.compare_table`)."""
    if numeric is None or numeric.empty:
        return None
    rows = []
    for r in numeric.itertuples(index=False):
        if r.difference is None or pd.isna(r.difference):
            continue
        rows.append(
            {
                "label": str(r.site),
                "estimate": float(r.difference),
                "ci_low": None if pd.isna(r.difference_ci_low) else float(r.difference_ci_low),
                "ci_high": None if pd.isna(r.difference_ci_high) else float(r.difference_ci_high),
                "n": r.n_new,
            }
        )
    if not rows:
        return None
    return charts.forest_figure(
        rows,
        title=f"{charts.metric_label(metric)}: {new_name} − {base_name}",
        x_title=f"Difference in {charts.metric_label(metric)} (MOVER interval)",
        reference=0.0,
    )


# ---- subgroups --------------------------------------------------------------------------------------


def _analysis(run) -> dict | None:
    """``subgroups.json``, or for a bundle without it the pooled groups of ``metrics.json`` in its shape."""
    if run.subgroups:
        return run.subgroups
    pooled = run.metrics.get("subgroups")
    if not pooled:
        return None
    return {
        "overall": {"subgroups": {a: {g: {"block": b} for g, b in groups.items()} for a, groups in pooled.items()}},
        "sites": {},
        "ci_level": run.ci_level,
    }


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
    return charts.subgroup_heatmap(
        run.subgroups, attribute, metric, sites=[s for s in run.sites if s in run.subgroups["sites"]]
    )


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
    sites = (_designs(run).get("sample_size") or {}).get("sites") or {}
    return [s for s, v in sites.items() if (v or {}).get("sizes")]


def sample_size_curve(
    run, metric: str = "ece", sites: Sequence[str] | None = None, methods: Sequence[str] | None = None
):
    """The sample-size design's curves, from the rows the report draws too
    (:func:`validate.report.view.sample_size_rows`), so both presentations agree."""
    rows = view.sample_size_rows(run.calibration or {}, metric, methods=methods, sites=sites)
    if not rows:
        return None
    return charts.sample_size_figure(rows, metric, colors=run.site_colors)


def transfer_methods(run) -> list[str]:
    return list(((_designs(run).get("transfer") or {}).get("methods") or {}).keys())


def transfer_matrix(run, metric: str = "ece", method: str = "none"):
    """The transfer design's matrix for ``method`` (:func:`validate.report.view.transfer_matrix`, as
    in the report)."""
    matrix = view.transfer_matrix(run.calibration or {}, metric).get(method)
    if not matrix:
        return None
    what = "uncalibrated" if method == "none" else f"{method} fitted at the row's site"
    return charts.transfer_matrix_figure(
        matrix, metric, title=f"Transfer: {charts.metric_label(metric)}, {what}, evaluated at the column's site"
    )


# ---- discrimination ---------------------------------------------------------------------------------


def curve_classes(run) -> list[str]:
    """Classes (multiclass) or labels (multilabel) with one-vs-rest curves in ``curves.json``."""
    names: list[str] = []
    for c in ((run.curves or {}).get("sites") or {}).values():
        for k in c.get("classes") or {}:
            if k not in names:
                names.append(k)
    return names


def _binary_view(run, cls: str | None = None) -> tuple[dict, dict]:
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


def roc(run, sites: Sequence[str], cls: str | None = None):
    curves, metrics = _binary_view(run, cls)
    if not curves or not any((curves.get(s) or {}).get("roc") for s in sites):
        return None
    title = None if cls is None else f"{cls} against the rest"
    return charts.roc_figure(
        curves, metrics, sites=list(sites), colors=run.site_colors, ci_level=run.ci_level, title=title
    )


def precision_recall(run, sites: Sequence[str], cls: str | None = None):
    curves, metrics = _binary_view(run, cls)
    if not curves or not any((curves.get(s) or {}).get("pr") for s in sites):
        return None
    title = None if cls is None else f"{cls} against the rest"
    return charts.pr_figure(curves, metrics, sites=list(sites), colors=run.site_colors, title=title)


def operating_points(run, sites: Sequence[str]):
    if not any((b or {}).get("operating_points") for b in (run.metrics.get("sites") or {}).values()):
        return None
    return charts.operating_points_figure(run.metrics, sites=list(sites))


# ---- reliability ------------------------------------------------------------------------------------


@st.cache_resource(show_spinner=False, max_entries=16)
def _typed_file(path: str, identity: str, name: str, _data: dict) -> contract.BundleFile:
    """Bundle file ``name`` of the run at ``path`` as its contract model, parsed once per bundle identity
    (the loader has already validated it; the model is shared read-only, never copied)."""
    return contract.parse(name, _data, file=str(Path(path) / name))


def _typed_curves(run) -> contract.CurvesFile | None:
    """``curves.json`` as :class:`validate.contract.CurvesFile`, or None when the run has none."""
    if not run.curves:
        return None
    model = _typed_file(run.path, run.identity, "curves.json", run.curves)
    return model if isinstance(model, contract.CurvesFile) else None


@dataclass
class ReliabilityOptions:
    """What the Reliability page can show: sites, the methods stored per site, and per (site, method)
    the groups whose diagram ``curves.json`` stores."""

    sites: list[str] = field(default_factory=list)
    methods: dict[str, list[str]] = field(default_factory=dict)
    groups: dict[tuple[str, str], list[tuple[str, str]]] = field(default_factory=dict)

    def methods_for(self, site: str) -> list[str]:
        return self.methods.get(site, ["none"])

    def groups_for(self, site: str, method: str) -> list[Group]:
        return [None, *self.groups.get((site, method), [])]


def _group_level(curves: contract.CurvesFile, site: str) -> contract.GroupReliabilityLevel:
    """The stored subgroup diagrams of ``site`` (``"overall"``: pooled), empty when none are stored."""
    sub = curves.subgroups
    if sub is None:
        return {}
    return sub.overall if site == "overall" else sub.sites.get(site, {})


def _stored_groups(curves: contract.CurvesFile, site: str, method: str) -> list[tuple[str, str]]:
    """(subgroup, group) with a stored diagram at ``site`` after ``method``, in the stored order."""
    sub, level = curves.subgroups, _group_level(curves, site)
    if sub is None:
        return []
    return [(a, g) for a in sub.attributes for g in sub.groups.get(a, []) if method in level.get(a, {}).get(g, {})]


def reliability_options(run) -> ReliabilityOptions:
    curves = _typed_curves(run)
    if curves is None:
        return ReliabilityOptions()
    sites = [s for s in run.sites if s in curves.sites]
    if sites and contract.pooled_block(curves) is not None:  # a site or combined bundle has no pooled curve
        sites.append("overall")
    methods = {s: ["none"] + [m for m, entry in curves.calibrated.items() if s in entry.sites] for s in sites}
    groups = {(s, m): _stored_groups(curves, s, m) for s in sites for m in methods[s]}
    return ReliabilityOptions(sites=sites, methods=methods, groups=groups)


def _stored_curve(curves: contract.CurvesFile, site: str, method: str, group: Group):
    """The stored diagram of ``site`` after ``method`` for all patients or ``group``, or None."""
    if group is not None:
        return _group_level(curves, site).get(group[0], {}).get(group[1], {}).get(method)
    if method != "none":
        entry = curves.calibrated.get(method)
        return entry.sites.get(site) if entry else None
    curve = contract.pooled_block(curves) if site == "overall" else curves.sites.get(site)
    return curve.top_label if curve is not None and curves.task == "multiclass" else curve


def reliability(run, site: str, method: str, group: Group = None):
    """The reliability diagram of ``site`` (``"overall"``: pooled) after ``method`` (``"none"``: as
    shipped), for all patients or one subgroup ``group``, as ``curves.json`` stores it."""
    curves = _typed_curves(run)
    stored = None if curves is None else _stored_curve(curves, site, method, group)
    if stored is None or stored.reliability is None:
        return None
    curve = stored.model_dump(by_alias=True, exclude_none=True, include={"n", "reliability", "smooth"})
    where = "all sites" if site == "overall" else site
    who = "" if group is None else f", {group[0]} = {group[1]}"
    what = "uncalibrated" if method == "none" else f"after {method}"
    return charts.reliability_figure(
        curve,
        title=f"{where}{who}: {what} (n={stored.n})",
        color=run.site_colors.get(site, charts.PALETTE[0]),
        ci_level=run.ci_level,
    )


def reliability_block(run, site: str, method: str, group: Group = None) -> dict | None:
    """The metrics BLOCK matching the diagram (from metrics.json / calibration.json / subgroups.json)."""
    if group is not None:
        if method != "none":
            return None
        analysis = run.subgroups or {}
        level = analysis.get("overall") if site == "overall" else (analysis.get("sites") or {}).get(site)
        cell = (((level or {}).get("subgroups") or {}).get(group[0]) or {}).get(group[1]) or {}
        return cell.get("block")
    if method == "none":
        return contract.pooled_block(run.metrics) if site == "overall" else (run.metrics.get("sites") or {}).get(site)
    return ((((run.calibration or {}).get("methods") or {}).get(method) or {}).get("sites") or {}).get(site)


# ---- shift and drift --------------------------------------------------------------------------------


def shift_ranking(run, site: str):
    if not run.shift or site not in (run.shift.get("sites") or {}):
        return None
    return charts.shift_summary_figure(run.shift, site, color=run.site_colors.get(site))


def drift(run, site: str, metric: str | None = None):
    d = (((run.shift or {}).get("drift") or {}).get("sites") or {}).get(site)
    if not d:
        return None
    metrics = (metric,) if metric else ("auroc", "ece", "calibration_intercept", "prevalence", "mean_score")
    return charts.drift_figure(d, metrics=metrics)
