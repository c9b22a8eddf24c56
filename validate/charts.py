"""The figure builder: every plotly figure of the HTML report and the dashboard.

Pure functions from bundle data (the parsed JSON files of :mod:`validate.bundle`) to
``plotly.graph_objects.Figure``; nothing here reads files, computes statistics or knows where the
figure will be shown. One module, so that a reliability diagram looks the same everywhere.

Inputs by file:

- ``curves.json`` (:mod:`validate.analysis.sites`): :func:`reliability_figure`, :func:`roc_figure`,
  :func:`pr_figure`;
- ``metrics.json``: :func:`operating_points_figure`, :func:`calibration_forest`, :func:`metric_forest`,
  and the legends of :func:`roc_figure`;
- ``subgroups.json`` (:mod:`validate.analysis.subgroups`): :func:`subgroup_forest`,
  :func:`gap_forest`, :func:`subgroup_heatmap`;
- ``calibration.json``: :func:`calibration_methods_figure`, :func:`sample_size_figure`,
  :func:`transfer_matrix_figure`;
- ``shift.json``: :func:`shift_summary_figure`, :func:`drift_figure`;
- ``comparison.json`` (a paired model comparison): :func:`comparison_forest` over :func:`comparison_blocks`;
- ``curves.json``'s ``decision`` with the BLOCKs' ``decision`` items: :func:`decision_curve_figure`.

Every number shown carries its n and interval (in the legend, the hover text or a text column).
Cells and points with too little data are drawn hollow or grey and labelled, never hidden.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from statistics import NormalDist
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from validate import formatting
from validate.contract import pooled_block
from validate.groups import group_sort_key
from validate.metrics import registry

# Okabe-Ito: distinguishable with the common colour-vision deficiencies
PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#F0E442",
    "#000000",
    "#999999",
    "#8C510A",
    "#01665E",
    "#762A83",
)
GREY = "#9a9a9a"
FAIL = "#C0392B"
PASS = "#1E8449"
WARN = "#D68910"
FONT = dict(family="Inter, Segoe UI, Helvetica, Arial, sans-serif", size=12)
# labels, directions and target values of the metrics: validate.metrics.registry
REFERENCE = {m.name: m.target for m in registry.METRICS if m.target is not None}
_AXIS = dict(gridcolor="#E8ECF3", linecolor="#C9D0DC", zerolinecolor="#D5DAE3", automargin=True, ticks="")
# a small template: plotly_white's look without its per-trace-type definitions, which every figure
# would otherwise copy, validate and embed
TEMPLATE = dict(
    layout=dict(
        paper_bgcolor="white",
        plot_bgcolor="white",
        font=FONT,
        colorway=list(PALETTE),
        xaxis=_AXIS,
        yaxis=_AXIS,
        hoverlabel=dict(align="left"),
        legend=dict(bgcolor="rgba(255,255,255,0.85)"),
    )
)


# ---- formatting -----------------------------------------------------------------------------------


def metric_label(metric: str) -> str:
    return registry.label(metric)


def _higher_is_better(metric: str) -> bool:
    """True where the registry says higher is better; lower-is-better, target and unknown metrics get
    the reversed colour scale."""
    m = registry.get(metric)
    return m is not None and m.direction == "higher"


def fmt(x: Any, digits: int | None = None, *, metric: str | None = None) -> str:
    """A number for display (:func:`validate.formatting.format_value`: ``metric``'s precision from the
    registry, or ``digits`` decimals)."""
    return formatting.format_value(x, metric, digits=digits)


def entry_text(entry: Any, digits: int | None = None, *, metric: str | None = None) -> str:
    """``0.842 (0.801–0.879)`` for a metric entry; the bare value for a number; — when undefined
    (:func:`validate.formatting.format_interval`, without the reason: tables give it elsewhere)."""
    if isinstance(entry, Mapping):
        est = entry.get("estimate", entry.get("statistic"))
        return formatting.format_interval(est, entry.get("ci_low"), entry.get("ci_high"), metric, digits=digits)
    return fmt(entry, digits, metric=metric)


def n_text(n: Any, events: Any = None) -> str:
    if n is None:
        return "n=—"
    n_str = formatting.format_count(n)
    return f"n={n_str}" if events is None else f"n={n_str}, {formatting.format_count(events)} events"


#: The pooled block's colour ("overall", "all sites (pooled)"): never a site's.
POOLED_COLOR = "#333333"
POOLED_KEYS = ("overall", "all sites", "all sites (pooled)")


def site_colors(sites: Iterable[str]) -> dict[str, str]:
    """The one site → colour map: a fixed colour per site in the bundle's site order
    (:func:`validate.view.site_order`), and :data:`POOLED_COLOR` for the pooled block. Built once per
    report or dashboard run and passed to every chart, so a site has one colour in all of them."""
    colors = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(sites)}
    for key in POOLED_KEYS:
        colors.setdefault(key, POOLED_COLOR)
    return colors


#: Line styles of recalibrated curves drawn over a site's uncalibrated one (solid), in order.
CALIBRATED_DASHES = ("dash", "dashdot", "longdash", "dot")


def calibrated_style(color: str, i: int = 0) -> dict:
    """How the ``i``-th recalibrated curve of a site reads beside the uncalibrated one (solid, in the
    site's colour): a darker shade of the same colour, a dashed line and diamond markers, so it is told
    apart in any site's colour (not one fixed orange that is another site's colour) and in greyscale."""
    return {"color": _shade(color, 0.45 + 0.15 * (i % 3)), "dash": CALIBRATED_DASHES[i % len(CALIBRATED_DASHES)]}


def _shade(hex_color: str, darken: float) -> str:
    """``hex_color`` mixed with black (``darken`` 0 = unchanged, 1 = black); a light or black site
    colour is lightened instead, where darker would not differ."""
    h = hex_color.lstrip("#")
    rgb = [int(h[k : k + 2], 16) for k in (0, 2, 4)]
    if max(rgb) < 64:  # near black: mix with white (less: 0.45 of white would be the palette's grey)
        rgb = [round(c + (255 - c) * (darken - 0.1)) for c in rgb]
    else:
        rgb = [round(c * (1 - darken)) for c in rgb]
    return "#" + "".join(f"{c:02x}" for c in rgb)


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
    return f"rgba({r},{g},{b},{alpha})"


_TEMPLATE_OBJ: list = []


def _template() -> go.layout.Template:
    # built once: validating the template dict costs more than drawing most figures
    if not _TEMPLATE_OBJ:
        _TEMPLATE_OBJ.append(go.layout.Template(TEMPLATE))
    return _TEMPLATE_OBJ[0]


def _layout(fig: go.Figure, title: str | None, *, height: int = 420, **kw) -> go.Figure:
    fig.update_layout(
        template=_template(),
        title=dict(text=title or "", x=0.01, xanchor="left"),
        height=height,
        margin=dict(l=60, r=20, t=60 if title else 30, b=50),
        **kw,
    )
    return fig


def _entry(block: Mapping | None, metric: str) -> Mapping | None:
    if not block:
        return None
    node: Any = block
    for part in metric.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    if isinstance(node, Mapping):
        return node
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        return {"estimate": node, "ci_low": None, "ci_high": None}
    return None


def _est(entry: Mapping | None) -> float | None:
    if not entry:
        return None
    v = entry.get("estimate")
    return None if v is None else float(v)


def _empty(title: str | None, message: str, height: int = 220) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(
        text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font=dict(size=14, color="#555")
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, title, height=height)


# ---- reliability -----------------------------------------------------------------------------------


def reliability_figure(
    curve: Mapping,
    *,
    title: str | None = None,
    calibrated: Mapping[str, Mapping] | None = None,
    color: str = PALETTE[0],
    ci_level: float = 0.95,
) -> go.Figure:
    """Reliability diagram with a Wilson interval band per bin, the lowess smooth with its pointwise
    bootstrap band (and the loess smooth with its band, shown from the legend), the diagonal of perfect
    calibration, and below it a histogram of predictions by outcome.

    Per-bin intervals are Wilson score intervals (Wilson 1927): a bin's observed rate is a binomial
    proportion, often of a few cases near 0 or 1, where the Wald interval collapses or leaves [0, 1] and
    Clopper–Pearson is conservative; Wilson keeps close to its nominal level there. The smooths' band
    (``reliability.smooth_band``, :mod:`validate.metrics.smooth_band`) is pointwise, not simultaneous:
    each p's interval holds its level, the whole curve lies inside with a lower probability.

    ``curve``: one entry of ``curves.json`` (``sites[s]``, ``overall``), holding ``reliability`` (and
    optionally ``smooth``). ``calibrated``: ``{label: curve}`` drawn over it (e.g. after a method).
    """
    rel = (curve or {}).get("reliability")
    if not rel:
        return _empty(title, "No cases: nothing to draw")
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.72, 0.28], vertical_spacing=0.04)
    fig.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            line=dict(color="#888", dash="dash", width=1),
            name="perfect calibration",
            hoverinfo="skip",
        ),
        row=1,
        col=1,
    )
    _reliability_traces(
        fig, rel, "uncalibrated" if calibrated else "observed rate per bin", color, ci_level, n=curve.get("n")
    )
    sm = curve.get("smooth")
    if sm:
        fig.add_trace(
            go.Scatter(
                x=sm["p"],
                y=sm["observed"],
                mode="lines",
                line=dict(color=color, width=1.5, dash="dot"),
                name="lowess smooth",
                hoverinfo="skip",
            ),
            row=1,
            col=1,
        )
    if rel.get("smooth_band"):
        _smooth_band_traces(fig, rel["smooth_band"], color)
    for i, (label, other) in enumerate((calibrated or {}).items()):
        orel = (other or {}).get("reliability")
        if orel:
            style = calibrated_style(color, i)
            _reliability_traces(
                fig, orel, label, style["color"], ci_level, n=other.get("n"), band=False, dash=style["dash"]
            )
    edges = rel["edges"]
    centres = [(a + b) / 2 for a, b in pairwise(edges)]
    widths = [b - a for a, b in pairwise(edges)]
    events = rel.get("events") or [0] * len(centres)
    non_events = [c - e for c, e in zip(rel["count"], events, strict=True)]
    fig.add_trace(
        go.Bar(
            x=centres,
            y=non_events,
            width=widths,
            name="predictions: non-events",
            marker=dict(color=_rgba(GREY, 0.7)),
            hovertemplate="p in bin %{x:.2f}: %{y} non-events<extra></extra>",
        ),
        row=2,
        col=1,
    )
    fig.add_trace(
        go.Bar(
            x=centres,
            y=events,
            width=widths,
            name="predictions: events",
            marker=dict(color=_rgba(color, 0.7)),
            hovertemplate="p in bin %{x:.2f}: %{y} events<extra></extra>",
        ),
        row=2,
        col=1,
    )
    fig.update_layout(barmode="stack", bargap=0)
    fig.update_xaxes(range=[0, 1], row=1, col=1)
    fig.update_xaxes(range=[0, 1], title_text="Predicted probability", row=2, col=1)
    fig.update_yaxes(range=[0, 1], title_text="Observed rate", row=1, col=1)
    fig.update_yaxes(title_text="Cases", row=2, col=1)
    return _layout(fig, title, height=600, legend=dict(orientation="h", yanchor="top", y=-0.14, x=0))


def _smooth_band_traces(fig, band: Mapping, color: str) -> None:
    """The lowess band (filled) and the loess smooth with its band (hidden until chosen in the legend):
    pointwise percentile bands of the bootstrap replicates' smooths, broken where a grid point has none."""
    level = band.get("level", 0.95)
    grid = band["grid"]
    for key, style, visible in (("lowess", "dot", True), ("loess", "dash", "legendonly")):
        lo, hi = band.get(f"{key}_low") or [], band.get(f"{key}_high") or []
        ok = [i for i, (a, b) in enumerate(zip(lo, hi, strict=True)) if a is not None and b is not None]
        if not ok:
            continue
        x = [grid[i] for i in ok]
        group = f"{key}-band"
        fig.add_trace(
            go.Scatter(
                x=x + x[::-1],
                y=[hi[i] for i in ok] + [lo[i] for i in ok][::-1],
                mode="lines",
                fill="toself",
                fillcolor=_rgba(color, 0.10 if key == "lowess" else 0.08),
                line=dict(width=0),
                name=f"{key} {level:.0%} band (pointwise, not simultaneous)",
                legendgroup=group,
                visible=visible,
                hoverinfo="skip",
            ),
            row=1,
            col=1,
        )
        if key == "loess" and band.get("loess"):
            fig.add_trace(
                go.Scatter(
                    x=grid,
                    y=band["loess"],
                    mode="lines",
                    line=dict(color=color, width=1.2, dash=style),
                    name="loess smooth",
                    legendgroup=group,
                    visible=visible,
                    hoverinfo="skip",
                ),
                row=1,
                col=1,
            )


def _reliability_traces(
    fig, rel: Mapping, name: str, color: str, ci_level: float, *, n=None, band: bool = True, dash: str = "solid"
):
    keep = [i for i, c in enumerate(rel["count"]) if c]
    x = [rel["mean_predicted"][i] for i in keep]
    y = [rel["observed"][i] for i in keep]
    lo = [rel["observed_low"][i] for i in keep]
    hi = [rel["observed_high"][i] for i in keep]
    counts = [rel["count"][i] for i in keep]
    events = [(rel.get("events") or [None] * len(rel["count"]))[i] for i in keep]
    if band and keep:
        fig.add_trace(
            go.Scatter(
                x=x + x[::-1],
                y=hi + lo[::-1],
                mode="lines",
                fill="toself",
                fillcolor=_rgba(color, 0.18),
                line=dict(width=0),
                name=f"{ci_level:.0%} interval (Wilson)",
                hoverinfo="skip",
            ),
            row=1,
            col=1,
        )
    text = [
        f"bin {fmt(rel['edges'][i], 2)}–{fmt(rel['edges'][i + 1], 2)}<br>mean p {fmt(a)}<br>observed {fmt(b)} "
        f"({fmt(c)}–{fmt(d)})<br>n={k}, {e} events"
        for i, a, b, c, d, k, e in zip(keep, x, y, lo, hi, counts, events, strict=True)
    ]
    label = name if n is None else f"{name} (n={n})"
    fig.add_trace(
        go.Scatter(
            x=x,
            y=y,
            mode="lines+markers",
            name=label,
            line=dict(color=color, width=2, dash=dash),
            marker=dict(
                size=[max(5, min(16, 4 + math.sqrt(k))) for k in counts],
                color=color,
                symbol="circle" if dash == "solid" else "diamond",
            ),
            error_y=None
            if band
            else dict(
                type="data",
                symmetric=False,
                array=[b - a for a, b in zip(y, hi, strict=True)],
                arrayminus=[a - b for a, b in zip(y, lo, strict=True)],
                color=color,
                thickness=1,
            ),
            text=text,
            hovertemplate="%{text}<extra></extra>",
        ),
        row=1,
        col=1,
    )


# ---- discrimination ----------------------------------------------------------------------------------


def roc_figure(
    curves: Mapping[str, Mapping],
    metrics: Mapping | None = None,
    *,
    sites: Sequence[str] | None = None,
    title: str | None = None,
    colors: Mapping[str, str] | None = None,
    ci_level: float = 0.95,
) -> go.Figure:
    """ROC curves of several sites with a pointwise bootstrap band each; the legend gives AUROC with its
    interval and n; markers show each site's operating points (protocol threshold: circle; the
    threshold carried from the development site: diamond, with sensitivity/specificity intervals).

    ``curves``: ``curves.json["sites"]`` (or any ``{name: curve}``); ``metrics``: Metrics JSON.
    """
    sites = list(sites) if sites is not None else list(curves)
    colors = dict(colors or site_colors(sites))
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            line=dict(color="#888", dash="dash", width=1),
            name="chance",
            hoverinfo="skip",
        )
    )
    blocks = _site_blocks(metrics)
    for s in sites:
        c = curves.get(s) or {}
        roc = c.get("roc")
        if not roc:
            continue
        color = colors.get(s, PALETTE[0])
        block = blocks.get(s) or {}
        band = roc.get("band")
        if band:
            fig.add_trace(
                go.Scatter(
                    x=band["fpr"] + band["fpr"][::-1],
                    y=band["tpr_high"] + band["tpr_low"][::-1],
                    mode="lines",
                    fill="toself",
                    fillcolor=_rgba(color, 0.13),
                    line=dict(width=0),
                    legendgroup=s,
                    showlegend=False,
                    hoverinfo="skip",
                    name=f"{s} band",
                )
            )
        auroc = _entry(block, "auroc")
        label = f"{s}: AUROC {entry_text(auroc)}, {n_text(c.get('n'), c.get('n_events'))}"
        if block.get("insufficient"):
            label += " (insufficient)"
        fig.add_trace(
            go.Scatter(
                x=roc["fpr"],
                y=roc["tpr"],
                mode="lines",
                line=dict(color=color, width=2, shape="hv"),
                name=label,
                legendgroup=s,
                customdata=[fmt(t) for t in roc.get("threshold") or [None] * len(roc["fpr"])],
                hovertemplate=f"{s}<br>1 − specificity %{{x:.3f}}<br>sensitivity %{{y:.3f}}"
                "<br>threshold %{customdata}<extra></extra>",
            )
        )
        _operating_markers(fig, s, block, color)
    fig.update_xaxes(range=[-0.01, 1.01], title_text="1 − specificity (false positive rate)", constrain="domain")
    fig.update_yaxes(range=[-0.01, 1.01], title_text="Sensitivity (true positive rate)", scaleanchor="x")
    return _layout(fig, title, height=520, legend_title_text=f"AUROC ({ci_level:.0%} CI)")


def _operating_markers(fig: go.Figure, site: str, block: Mapping, color: str) -> None:
    points = []
    for op in block.get("operating_points") or []:
        points.append(("circle", f"threshold {fmt(op.get('threshold'))}", op))
    tgt = block.get("target_sensitivity")
    if isinstance(tgt, Mapping) and tgt.get("threshold") is not None and tgt.get("sensitivity"):
        how = "carried from development" if tgt.get("carried") else "set here"
        points.append(
            ("diamond", f"threshold {fmt(tgt['threshold'])} for sensitivity {fmt(tgt.get('target'), 2)} ({how})", tgt)
        )
    for symbol, label, op in points:
        sens, spec = op.get("sensitivity") or {}, op.get("specificity") or {}
        if _est(sens) is None or _est(spec) is None:
            continue
        x, y = 1 - spec["estimate"], sens["estimate"]
        ex = _err(
            1 - spec["estimate"],
            1 - spec["ci_high"] if spec.get("ci_high") is not None else None,
            1 - spec["ci_low"] if spec.get("ci_low") is not None else None,
        )
        ey = _err(y, sens.get("ci_low"), sens.get("ci_high"))
        fig.add_trace(
            go.Scatter(
                x=[x],
                y=[y],
                mode="markers",
                legendgroup=site,
                showlegend=False,
                name=f"{site} {label}",
                marker=dict(symbol=symbol, size=11, color="white", line=dict(color=color, width=2)),
                error_x=ex,
                error_y=ey,
                hovertemplate=(
                    f"{site}: {label}<br>sensitivity {entry_text(sens)}<br>specificity {entry_text(spec)}"
                    "<extra></extra>"
                ),
            )
        )


def _err(value, lo, hi) -> dict | None:
    if value is None or lo is None or hi is None:
        return None
    return dict(
        type="data",
        symmetric=False,
        array=[max(0.0, hi - value)],
        arrayminus=[max(0.0, value - lo)],
        thickness=1,
        width=3,
    )


def pr_figure(
    curves: Mapping[str, Mapping],
    metrics: Mapping | None = None,
    *,
    sites: Sequence[str] | None = None,
    title: str | None = None,
    colors: Mapping[str, str] | None = None,
) -> go.Figure:
    """Precision-recall curves per site; the legend gives AUPRC with its interval and n, and each site's
    prevalence (the precision of a random ranking) is drawn as a dotted line."""
    sites = list(sites) if sites is not None else list(curves)
    colors = dict(colors or site_colors(sites))
    blocks = _site_blocks(metrics)
    fig = go.Figure()
    for s in sites:
        c = curves.get(s) or {}
        pr = c.get("pr")
        if not pr:
            continue
        color = colors.get(s, PALETTE[0])
        label = f"{s}: AUPRC {entry_text(_entry(blocks.get(s), 'auprc'))}, {n_text(c.get('n'), c.get('n_events'))}"
        fig.add_trace(
            go.Scatter(
                x=pr["recall"],
                y=pr["precision"],
                mode="lines",
                line=dict(color=color, width=2),
                name=label,
                legendgroup=s,
                hovertemplate=f"{s}<br>recall %{{x:.3f}}<br>precision %{{y:.3f}}<extra></extra>",
            )
        )
        if pr.get("prevalence") is not None:
            fig.add_trace(
                go.Scatter(
                    x=[0, 1],
                    y=[pr["prevalence"]] * 2,
                    mode="lines",
                    legendgroup=s,
                    showlegend=False,
                    line=dict(color=color, dash="dot", width=1),
                    hoverinfo="skip",
                )
            )
    fig.update_xaxes(range=[0, 1.01], title_text="Recall (sensitivity)")
    fig.update_yaxes(range=[0, 1.02], title_text="Precision (PPV)")
    return _layout(fig, title, height=460)


def operating_points_figure(
    metrics: Mapping, *, sites: Sequence[str] | None = None, title: str | None = None
) -> go.Figure:
    """Sensitivity and specificity per site, with intervals, at the protocol's first threshold and at the
    threshold set for the target sensitivity at the development site and carried unchanged to the
    others: how the operating point moves when the threshold travels."""
    blocks = _site_blocks(metrics)
    sites = list(sites) if sites is not None else list(blocks)
    panels = []
    first = next((b.get("operating_points") for b in blocks.values() if b.get("operating_points")), None)
    if first:
        panels.append(("fixed", f"Threshold {fmt(first[0].get('threshold'))} (protocol)"))
    tgt = next(
        (
            b.get("target_sensitivity")
            for b in blocks.values()
            if isinstance(b.get("target_sensitivity"), Mapping) and b["target_sensitivity"].get("carried")
        ),
        None,
    )
    if tgt:
        panels.append(
            (
                "carried",
                f"Threshold {fmt(tgt.get('threshold'))} carried from development "
                f"(sensitivity {fmt(tgt.get('target'), 2)} there)",
            )
        )
    if not panels:
        return _empty(title, "No operating points in metrics.json")
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[1] for p in panels], shared_yaxes=True)
    for j, (kind, _) in enumerate(panels, start=1):
        for k, (metric, color) in enumerate((("sensitivity", PALETTE[0]), ("specificity", PALETTE[1]))):
            xs, ys, lo, hi, text = [], [], [], [], []
            for s in sites:
                b = blocks.get(s) or {}
                op = (b.get("operating_points") or [{}])[0] if kind == "fixed" else (b.get("target_sensitivity") or {})
                e = op.get(metric) if isinstance(op, Mapping) else None
                if not isinstance(e, Mapping) or e.get("estimate") is None:
                    continue
                xs.append(s)
                ys.append(e["estimate"])
                lo.append(e.get("ci_low"))
                hi.append(e.get("ci_high"))
                text.append(
                    f"{s} {metric} {entry_text(e)}<br>{n_text(b.get('n'), b.get('n_events'))}"
                    + (" (insufficient)" if b.get("insufficient") else "")
                )
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="markers",
                    name=metric.capitalize(),
                    legendgroup=metric,
                    showlegend=j == 1,
                    marker=dict(size=10, color=color, symbol="circle" if k == 0 else "square"),
                    error_y=dict(
                        type="data",
                        symmetric=False,
                        array=[(h - v) if h is not None else 0 for v, h in zip(ys, hi, strict=True)],
                        arrayminus=[(v - lo_) if lo_ is not None else 0 for v, lo_ in zip(ys, lo, strict=True)],
                        thickness=1.2,
                    ),
                    text=text,
                    hovertemplate="%{text}<extra></extra>",
                    offsetgroup=str(k),
                ),
                row=1,
                col=j,
            )
    fig.update_yaxes(range=[0, 1.02], title_text="Proportion", row=1, col=1)
    fig.update_layout(scattermode="group")
    return _layout(fig, title, height=400)


def _site_blocks(metrics: Mapping | None) -> dict:
    if not metrics:
        return {}
    out = dict(metrics.get("sites") or {})
    if pooled_block(metrics):  # a site or combined bundle has none
        out.setdefault("overall", metrics["overall"])
    return out


# ---- forest plots --------------------------------------------------------------------------------


def forest_figure(
    rows: Sequence[Mapping],
    *,
    title: str | None = None,
    x_title: str = "",
    reference: float | None = None,
    ci_level: float = 0.95,
    height: int | None = None,
) -> go.Figure:
    """A forest plot: one row per item, point estimate with interval, and a text column with the
    estimate, interval and n. Rows marked ``insufficient`` are drawn hollow grey and labelled.

    ``rows``: ``{"label", "estimate", "ci_low", "ci_high", "n", "n_events", "insufficient", "color"}``,
    drawn top to bottom in the given order.
    """
    if not rows:
        return _empty(title, "Nothing to show")
    labels = [r["label"] for r in rows]
    fig = go.Figure()
    for kind in ("ok", "small"):
        sel = [r for r in rows if bool(r.get("insufficient")) == (kind == "small") and r.get("estimate") is not None]
        if not sel:
            continue
        est = [r["estimate"] for r in sel]
        fig.add_trace(
            go.Scatter(
                x=est,
                y=[r["label"] for r in sel],
                mode="markers",
                name=f"estimate ({ci_level:.0%} CI)" if kind == "ok" else "too little data (insufficient)",
                marker=dict(
                    size=10,
                    symbol="square" if kind == "ok" else "square-open",
                    color=[r.get("color") or PALETTE[0] for r in sel] if kind == "ok" else GREY,
                    line=dict(width=1.5, color=GREY if kind == "small" else None),
                ),
                error_x=dict(
                    type="data",
                    symmetric=False,
                    array=[(r["ci_high"] - r["estimate"]) if r.get("ci_high") is not None else 0 for r in sel],
                    arrayminus=[(r["estimate"] - r["ci_low"]) if r.get("ci_low") is not None else 0 for r in sel],
                    thickness=1.5,
                    width=4,
                    color="#444" if kind == "ok" else GREY,
                ),
                text=[_forest_text(r) for r in sel],
                hovertemplate="%{y}<br>%{text}<extra></extra>",
            )
        )
    undefined = [r for r in rows if r.get("estimate") is None]
    if undefined:
        fig.add_trace(
            go.Scatter(
                x=[None] * len(undefined),
                y=[r["label"] for r in undefined],
                mode="markers",
                name="undefined",
                marker=dict(color=GREY),
                hoverinfo="skip",
                showlegend=False,
            )
        )
    if reference is not None:
        fig.add_vline(x=reference, line=dict(color="#666", dash="dash", width=1))
    # the text column: every number with its interval and n
    fig.add_trace(
        go.Scatter(
            x=[1.02] * len(rows),
            y=labels,
            xaxis="x2",
            mode="text",
            showlegend=False,
            text=[_forest_text(r) for r in rows],
            textposition="middle right",
            textfont=dict(size=11, color="#333"),
            hoverinfo="skip",
        )
    )
    fig.update_layout(
        xaxis=dict(domain=[0, 0.5], title_text=x_title, zeroline=False),
        xaxis2=dict(domain=[0.52, 1.0], range=[1, 2], visible=False),
        yaxis=dict(autorange="reversed", categoryorder="array", categoryarray=labels, type="category"),
        showlegend=False,
    )
    return _layout(fig, title, height=height or max(220, 100 + 30 * len(rows)))


def _forest_text(r: Mapping) -> str:
    est = r.get("estimate")
    if est is None:
        body = "undefined" + (f": {r['reason']}" if r.get("reason") else "")
    else:
        body = entry_text({"estimate": est, "ci_low": r.get("ci_low"), "ci_high": r.get("ci_high")})
    n, ev = r.get("n"), r.get("n_events")
    tail = "n=—" if n is None else (f"n={n}" if ev is None else f"n={n} ({ev})")
    if r.get("insufficient"):
        tail += " insufficient"
    return f"{body}  {tail}"


def _row(label: str, block: Mapping | None, metric: str, **extra) -> dict:
    e = _entry(block, metric) or {}
    reason = ((block or {}).get("undefined") or {}).get(metric)
    return dict(
        label=label,
        estimate=e.get("estimate"),
        ci_low=e.get("ci_low"),
        ci_high=e.get("ci_high"),
        n=(block or {}).get("n"),
        n_events=(block or {}).get("n_events"),
        insufficient=bool((block or {}).get("insufficient")),
        reason=reason,
        **extra,
    )


def metric_forest(
    metrics: Mapping,
    metric: str,
    *,
    sites: Sequence[str] | None = None,
    title: str | None = None,
    include_overall: bool = True,
    colors: Mapping[str, str] | None = None,
) -> go.Figure:
    """One metric per site (and pooled) from the Metrics JSON, as a forest plot."""
    site_blocks = metrics.get("sites") or {}
    sites = list(sites) if sites is not None else list(site_blocks)
    colors = dict(colors or site_colors(sites))
    rows = [_row(s, site_blocks.get(s), metric, color=colors.get(s)) for s in sites]
    if include_overall and pooled_block(metrics):
        rows.append(_row("all sites (pooled)", metrics["overall"], metric, color="#333"))
    return forest_figure(
        rows,
        title=title,
        x_title=metric_label(metric),
        reference=REFERENCE.get(metric),
        ci_level=metrics.get("ci_level", 0.95),
    )


def calibration_forest(
    metrics: Mapping,
    *,
    sites: Sequence[str] | None = None,
    title: str | None = None,
    colors: Mapping[str, str] | None = None,
) -> go.Figure:
    """Calibration slope (reference 1) and calibration-in-the-large intercept (reference 0) per site with
    Wald intervals, side by side: slope < 1 means predictions too extreme, intercept < 0 too high."""
    site_blocks = metrics.get("sites") or {}
    sites = list(sites) if sites is not None else list(site_blocks)
    colors = dict(colors or site_colors(sites))
    items = [(s, site_blocks.get(s), colors.get(s)) for s in sites]
    if pooled_block(metrics):
        items.append(("all sites (pooled)", metrics["overall"], "#333"))
    fig = make_subplots(
        rows=1,
        cols=2,
        shared_yaxes=True,
        horizontal_spacing=0.06,
        subplot_titles=["Calibration slope (ideal 1)", "Calibration intercept (ideal 0)"],
    )
    labels = [i[0] for i in items]
    for col, metric in enumerate(("calibration_slope", "calibration_intercept"), start=1):
        rows = [_row(lbl, blk, metric, color=c) for lbl, blk, c in items]
        for small in (False, True):
            sel = [r for r in rows if r["insufficient"] == small and r["estimate"] is not None]
            if not sel:
                continue
            fig.add_trace(
                go.Scatter(
                    x=[r["estimate"] for r in sel],
                    y=[r["label"] for r in sel],
                    mode="markers",
                    marker=dict(
                        size=10,
                        symbol="square-open" if small else "square",
                        color=GREY if small else [r["color"] for r in sel],
                    ),
                    error_x=dict(
                        type="data",
                        symmetric=False,
                        array=[(r["ci_high"] - r["estimate"]) if r["ci_high"] is not None else 0 for r in sel],
                        arrayminus=[(r["estimate"] - r["ci_low"]) if r["ci_low"] is not None else 0 for r in sel],
                        thickness=1.5,
                        width=4,
                        color=GREY if small else "#444",
                    ),
                    name="too little data" if small else "estimate (Wald CI)",
                    showlegend=col == 1,
                    legendgroup="small" if small else "ok",
                    text=[_forest_text(r) for r in sel],
                    hovertemplate="%{y}<br>%{text}<extra></extra>",
                ),
                row=1,
                col=col,
            )
        fig.add_vline(x=REFERENCE[metric], line=dict(color="#666", dash="dash", width=1), row=1, col=col)
    fig.update_yaxes(autorange="reversed", categoryorder="array", categoryarray=labels, type="category")
    fig.update_layout(legend=dict(orientation="h", y=-0.15, x=0))
    return _layout(fig, title, height=max(260, 110 + 32 * len(items)))


def _level(analysis: Mapping, site: str) -> Mapping:
    return (analysis.get("overall") if site in ("overall", None) else (analysis.get("sites") or {}).get(site)) or {}


def subgroup_forest(
    analysis: Mapping,
    attr: str,
    metric: str,
    *,
    site: str = "overall",
    title: str | None = None,
    metrics: Mapping | None = None,
) -> go.Figure:
    """Each group of subgroup ``attr`` at ``site`` (``"overall"``: pooled over sites) with its interval,
    and the site's own value as the dashed reference line. ``analysis``: ``subgroups.json``;
    ``metrics``: Metrics JSON (for the site's value when no gap was computed for ``metric``)."""
    cells = (_level(analysis, site).get("subgroups") or {}).get(attr) or {}
    order = (analysis.get("groups") or {}).get(attr) or list(cells)
    rows, ref = [], None
    for g in order:
        if g not in cells:
            continue
        rows.append(_row(str(g), cells[g].get("block"), metric))
        gap = (cells[g].get("gap") or {}).get(metric)
        if ref is None and isinstance(gap, Mapping):
            ref = gap.get("reference")
    if ref is None and metrics:
        blk = pooled_block(metrics) if site in ("overall", None) else (metrics.get("sites") or {}).get(site)
        ref = _est(_entry(blk, metric))
    where = "all sites" if site in ("overall", None) else f"site {site}"
    return forest_figure(
        rows,
        title=title or f"{metric_label(metric)} by {attr} ({where}; dashed: {where} value)",
        x_title=metric_label(metric),
        reference=ref,
        ci_level=analysis.get("ci_level", 0.95),
    )


def gap_forest(
    analysis: Mapping, attr: str, metric: str, *, site: str = "overall", title: str | None = None
) -> go.Figure:
    """Each group's gap to its site's value, ``metric(group) − metric(site)``, with its paired bootstrap
    interval; 0 (no gap) is the dashed reference."""
    cells = (_level(analysis, site).get("subgroups") or {}).get(attr) or {}
    order = (analysis.get("groups") or {}).get(attr) or list(cells)
    rows = []
    for g in order:
        if g not in cells:
            continue
        gap = (cells[g].get("gap") or {}).get(metric) or {}
        blk = cells[g].get("block") or {}
        rows.append(
            dict(
                label=str(g),
                estimate=gap.get("estimate"),
                ci_low=gap.get("ci_low"),
                ci_high=gap.get("ci_high"),
                n=blk.get("n"),
                n_events=blk.get("n_events"),
                insufficient=bool(blk.get("insufficient")),
            )
        )
    where = "all sites" if site in ("overall", None) else f"site {site}"
    return forest_figure(
        rows,
        title=title or f"Gap in {metric_label(metric)} to {where} by {attr}",
        x_title=f"{metric_label(metric)}: group − {where}",
        reference=0.0,
        ci_level=analysis.get("ci_level", 0.95),
    )


POOLED_LABEL = "all sites (pooled)"


def comparison_blocks(
    comparison: Mapping,
    *,
    sites: Sequence[str] | None = None,
    subgroups: Sequence[str] | None = None,
    within_sites: bool = False,
) -> list[tuple[str, Mapping]]:
    """The DELTA_BLOCKs of ``comparison.json`` as labelled rows, in reading order: the pooled block,
    each site, then each subgroup value pooled over sites (``"sex = female (all sites)"``) and, with
    ``within_sites``, each subgroup value within each site (``"sex = female at va"``).

    ``sites``/``subgroups`` choose and order the sites and attributes (default: all, in file order);
    the values of an attribute come in :func:`validate.groups.group_sort_key` order (bands by their bound).
    """
    rows: list[tuple[str, Mapping]] = []
    if comparison.get("overall") is not None:
        rows.append((POOLED_LABEL, comparison["overall"]))
    site_blocks = comparison.get("sites") or {}
    for s in list(sites) if sites is not None else list(site_blocks):
        if s in site_blocks:
            rows.append((str(s), site_blocks[s]))
    groups = comparison.get("subgroups") or {}
    for attr in list(subgroups) if subgroups is not None else list(groups):
        values = groups.get(attr) or {}
        for value in sorted(values, key=group_sort_key):
            cell = values[value]
            rows.append((f"{attr} = {value} (all sites)", cell["overall"]))
            if within_sites:
                rows.extend((f"{attr} = {value} at {s}", b) for s, b in (cell.get("sites") or {}).items())
    return rows


def better_direction_text(metric: str) -> str:
    """Which way of Δ = new − baseline is better, from the registry's direction (or target) of ``metric``."""
    m = registry.get(metric)
    if m is not None and m.direction == "higher":
        return "higher is better →"
    if m is not None and m.direction == "lower":
        return "← lower is better"
    if m is not None and m.direction == "target":
        return f"no better side: the ideal value is {fmt(m.target, 2)}, compare the two values"
    return "no better side"


def _delta_row(label: str, block: Mapping, metric: str) -> dict:
    entry = (block.get("metrics") or {}).get(metric) or {}
    reason = (block.get("undefined") or {}).get(metric)
    return dict(
        label=label,
        estimate=entry.get("delta"),
        ci_low=entry.get("ci_low"),
        ci_high=entry.get("ci_high"),
        n=block.get("n"),
        n_events=block.get("n_events"),
        insufficient=bool(block.get("insufficient")),
        reason=reason if entry.get("delta") is None else None,
    )


def _delta_range(rows: Sequence[Mapping], margin: float | None) -> list[float]:
    # zero and the margin always in view, whatever the intervals' spread
    values = [0.0] + ([float(margin)] if margin is not None else [])
    values += [float(r[k]) for r in rows for k in ("estimate", "ci_low", "ci_high") if r.get(k) is not None]
    lo, hi = min(values), max(values)
    pad = 0.08 * (hi - lo) if hi > lo else 0.01
    return [lo - pad, hi + pad]


def comparison_forest(
    blocks: Sequence[tuple[str, Mapping]],
    metric: str,
    margin: float | None = None,
    *,
    title: str | None = None,
    ci_level: float = 0.95,
    new_label: str = "new",
    baseline_label: str = "baseline",
) -> go.Figure:
    """A forest plot of the paired difference Δ = new − baseline of ``metric`` per block, with its
    interval (paired DeLong for AUROC, paired bootstrap otherwise, as ``comparison.json`` says), a solid
    zero line (no difference) and, when a comparison gate gives one, a dashed line at its margin (the
    gate's ``min`` on ``ci_low`` or ``max`` on ``ci_high``). The x axis says which side is better (from the
    metric registry). Each row is labelled with its Δ, interval and n (events); insufficient blocks are
    hollow grey, undefined ones say why.

    ``blocks``: ``(label, DELTA_BLOCK)`` pairs, drawn top to bottom (:func:`comparison_blocks`).
    """
    rows = [_delta_row(label, block, metric) for label, block in blocks]
    x_title = f"Δ {metric_label(metric)} ({new_label} − {baseline_label}) · {better_direction_text(metric)}"
    fig = forest_figure(
        rows,
        title=title or f"{metric_label(metric)}: {new_label} − {baseline_label}",
        x_title=x_title,
        ci_level=ci_level,
    )
    if not rows:
        return fig
    fig.add_vline(x=0.0, line=dict(color="#333", width=1))
    fig.update_layout(xaxis_range=_delta_range(rows, margin))
    if margin is not None:
        fig.add_vline(
            x=float(margin),
            line=dict(color=FAIL, dash="dash", width=1.5),
            annotation=dict(text=f"margin {fmt(margin)}", font=dict(size=11, color=FAIL)),
            annotation_position="top",
        )
    return fig


#: Decimals in a heatmap cell (three lines of text in a small cell).
HEATMAP_DIGITS = 2


def subgroup_heatmap(
    analysis: Mapping,
    attr: str,
    metric: str,
    *,
    sites: Sequence[str] | None = None,
    title: str | None = None,
    include_overall: bool = True,
) -> go.Figure:
    """Site x group heatmap of ``metric``: each cell shows the estimate, its interval and n; cells with
    too little data are grey with their numbers and marked "insufficient"; cells without cases are blank."""
    level_sites = analysis.get("sites") or {}
    sites = list(sites) if sites is not None else list(level_sites)
    rows = [(s, _level(analysis, s)) for s in sites]
    if include_overall and analysis.get("overall"):
        rows.append(("all sites", analysis["overall"]))
    groups = (analysis.get("groups") or {}).get(attr) or sorted(
        {g for _, lv in rows for g in ((lv.get("subgroups") or {}).get(attr) or {})}
    )
    if not groups or not rows:
        return _empty(title, f"No groups for {attr}")
    z_ok, z_small, text = [], [], []
    for _, lv in rows:
        cells = (lv.get("subgroups") or {}).get(attr) or {}
        zr_ok, zr_small, tr = [], [], []
        for g in groups:
            blk = (cells.get(g) or {}).get("block") or {}
            e = _entry(blk, metric)
            est = _est(e)
            if not blk.get("n"):
                zr_ok.append(None)
                zr_small.append(None)
                tr.append("no cases")
                continue
            est_text, _, ci_text = entry_text(e, HEATMAP_DIGITS, metric=metric).partition(" ")
            label = f"{est_text}<br>{ci_text + '<br>' if ci_text else ''}n={blk.get('n')}"
            if blk.get("insufficient"):
                zr_ok.append(None)
                zr_small.append(0 if est is None else 1)
                tr.append(label + "<br><i>insufficient</i>")
            else:
                zr_ok.append(est)
                zr_small.append(None)
                tr.append(label)
        z_ok.append(zr_ok)
        z_small.append(zr_small)
        text.append(tr)
    ylabels = [r[0] for r in rows]
    higher_better = _higher_is_better(metric)
    if metric in REFERENCE:
        vals = [abs(v - REFERENCE[metric]) for r in z_ok for v in r if v is not None]
        span = max(vals) if vals else 1.0
        scale, zmin, zmax = "RdBu", REFERENCE[metric] - span, REFERENCE[metric] + span
    else:
        vals = [v for r in z_ok for v in r if v is not None]
        scale = "Viridis" if higher_better else "Viridis_r"
        zmin, zmax = (min(vals), max(vals)) if vals else (0, 1)
    fig = go.Figure()
    fig.add_trace(
        go.Heatmap(
            z=z_small,
            x=groups,
            y=ylabels,
            colorscale=[[0, "#e6e6e6"], [1, "#cfcfcf"]],
            zmin=0,
            zmax=1,
            showscale=False,
            hoverinfo="skip",
            xgap=2,
            ygap=2,
        )
    )
    fig.add_trace(
        go.Heatmap(
            z=z_ok,
            x=groups,
            y=ylabels,
            colorscale=scale,
            zmin=zmin,
            zmax=zmax,
            xgap=2,
            ygap=2,
            # text on the coloured cells only: every other cell's text is the layer below, so no cell
            # carries two texts (plotly draws a heatmap's texttemplate on empty cells too)
            text=[
                [t if v is not None else "" for t, v in zip(tr, r, strict=True)]
                for tr, r in zip(text, z_ok, strict=True)
            ],
            texttemplate="%{text}",
            textfont=dict(size=10),
            colorbar=dict(title=metric_label(metric)),
            hovertemplate="%{y}, " + attr + "=%{x}<br>%{text}<extra></extra>",
        )
    )
    # the grey and the empty cells need their text too: a text-only layer over both
    rest = [
        (g, lbl, t)
        for lbl, tr, r in zip(ylabels, text, z_ok, strict=True)
        for g, t, v in zip(groups, tr, r, strict=True)
        if v is None
    ]
    fig.add_trace(
        go.Scatter(
            x=[g for g, _, _ in rest],
            y=[lbl for _, lbl, _ in rest],
            text=[t for _, _, t in rest],
            mode="text",
            textfont=dict(size=10, color="#555"),
            showlegend=False,
            hovertemplate="%{y}, %{x}<br>%{text}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category", title_text=attr)
    return _layout(fig, title or f"{metric_label(metric)} by site and {attr}", height=max(260, 120 + 60 * len(rows)))


# ---- calibration methods -------------------------------------------------------------------------------


def calibration_methods_figure(
    calibration: Mapping, metric: str = "ece", *, sites: Sequence[str] | None = None, title: str | None = None
) -> go.Figure:
    """Method x site comparison of the Calibration JSON: ``metric`` after each method (``none`` =
    uncalibrated) at each evaluated site, with intervals; the recommended method is marked."""
    methods = calibration.get("methods") or {}
    if not methods:
        return _empty(title, "No calibration methods in calibration.json")
    names = (["none"] if "none" in methods else []) + sorted(m for m in methods if m != "none")
    all_sites = []
    for m in names:
        for s in methods[m].get("sites") or {}:
            if s not in all_sites:
                all_sites.append(s)
    sites = list(sites) if sites is not None else all_sites
    rec = calibration.get("recommended")
    fig = go.Figure()
    for i, m in enumerate(names):
        blocks = methods[m].get("sites") or {}
        xs, ys, lo, hi, text, hollow = [], [], [], [], [], []
        for s in sites:
            blk = blocks.get(s)
            e = _entry(blk, metric)
            if _est(e) is None:
                continue
            xs.append(s)
            ys.append(e["estimate"])
            lo.append(e.get("ci_low"))
            hi.append(e.get("ci_high"))
            hollow.append(bool(blk.get("insufficient")))
            text.append(
                f"{m} at {s}: {metric_label(metric)} {entry_text(e)}<br>{n_text(blk.get('n'), blk.get('n_events'))}"
                + (" (insufficient)" if blk.get("insufficient") else "")
            )
        color = GREY if m == "none" else PALETTE[i % len(PALETTE)]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="markers",
                name=m + (" (recommended)" if m == rec else "") + (" = uncalibrated" if m == "none" else ""),
                marker=dict(
                    size=[13 if m == rec else 9] * len(xs),
                    color=color,
                    symbol=["diamond-open" if h else ("diamond" if m == rec else "circle") for h in hollow],
                    line=dict(width=1.5, color=color),
                ),
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=[(h - v) if h is not None else 0 for v, h in zip(ys, hi, strict=True)],
                    arrayminus=[(v - low) if low is not None else 0 for v, low in zip(ys, lo, strict=True)],
                    thickness=1.2,
                    color=color,
                ),
                text=text,
                hovertemplate="%{text}<extra></extra>",
                offsetgroup=m,
            )
        )
    ref = REFERENCE.get(metric)
    if ref is not None:
        fig.add_hline(y=ref, line=dict(color="#666", dash="dash", width=1))
    fit_on = ", ".join(calibration.get("fit_on") or [])
    default_title = (
        f"{metric_label(metric)} after each method ({calibration.get('design', 'held-out')}, fitted on {fit_on or '—'})"
    )
    fig.update_layout(scattermode="group")
    fig.update_yaxes(title_text=metric_label(metric))
    fig.update_xaxes(title_text="Site (evaluated on cases not used for fitting)", type="category")
    return _layout(fig, title or default_title, height=440)


def sample_size_figure(
    rows: Sequence[Mapping],
    metric: str = "ece",
    *,
    title: str | None = None,
    colors: Mapping[str, str] | None = None,
) -> go.Figure:
    """How many local cases recalibration needs: ``metric`` after local recalibration against the number of
    fitting cases, one line per (site, method) with the spread over repetitions as a band.

    ``rows``: ``{"site", "method", "n_fit", "mean", "low", "high", "repeats"}`` (``low``/``high``: the
    spread reported by the sample-size design), plus optional ``"baseline"`` (the uncalibrated value on
    the same evaluation cases, drawn dotted). ``colors``: the site colour map (:func:`site_colors`),
    used when one method is drawn (a colour per site); several methods get a colour per method.
    """
    if not rows:
        return _empty(title, "No sample-size design in this run")
    keys = []
    for r in rows:
        k = (r["site"], r["method"])
        if k not in keys:
            keys.append(k)
    methods = sorted({k[1] for k in keys})
    site_list = list(dict.fromkeys(k[0] for k in keys))
    if len(methods) == 1:  # one method: a colour per site
        by_site = dict(colors or site_colors(site_list))
        line_colors = {k: by_site.get(k[0], PALETTE[0]) for k in keys}
        dashes = {k: "solid" for k in keys}
    else:  # several: a colour per method, a dash per site
        styles = ("solid", "dash", "dot", "dashdot", "longdash")
        line_colors = {k: PALETTE[methods.index(k[1]) % len(PALETTE)] for k in keys}
        dashes = {k: styles[site_list.index(k[0]) % len(styles)] for k in keys}
    fig = go.Figure()
    for site, method in keys:
        sel = sorted((r for r in rows if r["site"] == site and r["method"] == method), key=lambda r: r["n_fit"])
        x = [r["n_fit"] for r in sel]
        color = line_colors[(site, method)]
        if all(r.get("low") is not None and r.get("high") is not None for r in sel):
            fig.add_trace(
                go.Scatter(
                    x=x + x[::-1],
                    y=[r["high"] for r in sel] + [r["low"] for r in sel][::-1],
                    mode="lines",
                    fill="toself",
                    fillcolor=_rgba(color, 0.12),
                    line=dict(width=0),
                    legendgroup=f"{site}/{method}",
                    showlegend=False,
                    hoverinfo="skip",
                )
            )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[r["mean"] for r in sel],
                mode="lines+markers",
                name=f"{site}: {method}",
                legendgroup=f"{site}/{method}",
                line=dict(color=color, dash=dashes[(site, method)]),
                text=[
                    f"{site}, {method}, {r['n_fit']} fitting cases: mean {fmt(r['mean'])} "
                    f"(spread {fmt(r.get('low'))}–{fmt(r.get('high'))}), {r.get('repeats', '?')} repeats"
                    for r in sel
                ],
                hovertemplate="%{text}<extra></extra>",
            )
        )
        base = [r.get("baseline") for r in sel]
        if any(b is not None for b in base):
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=base,
                    mode="lines",
                    showlegend=False,
                    legendgroup=f"{site}/{method}",
                    line=dict(color=_rgba(color, 0.7), dash="dot", width=1),
                    hovertemplate=f"{site} uncalibrated: %{{y:.3f}}<extra></extra>",
                )
            )
    sizes = sorted({r["n_fit"] for r in rows})
    fig.update_xaxes(
        type="log", title_text="Local cases used for fitting", tickvals=sizes, ticktext=[str(v) for v in sizes]
    )
    fig.update_yaxes(title_text=metric_label(metric))
    return _layout(fig, title or f"{metric_label(metric)} after local recalibration by fitting-set size", height=440)


def transfer_matrix_figure(
    matrix: Mapping[str, Mapping[str, Any]], metric: str = "ece", *, title: str | None = None
) -> go.Figure:
    """Fit on site i (rows), evaluate on site j (columns): ``metric`` (with its interval when given) in
    each cell. ``matrix[fit][eval]`` is a number, a metric entry or a BLOCK holding ``metric``."""
    fits = list(matrix)
    # columns in the rows' order, so the (empty) diagonal runs corner to corner
    evals = [f for f in fits if any(f in (matrix[g] or {}) for g in fits)]
    for f in fits:
        for e in matrix[f] or {}:
            if e not in evals:
                evals.append(e)
    if not fits or not evals:
        return _empty(title, "No transfer design in this run")
    z, text = [], []
    for f in fits:
        zr, tr = [], []
        for e in evals:
            cell = (matrix[f] or {}).get(e)
            if isinstance(cell, (int, float)) and not isinstance(cell, bool):
                ent = {"estimate": cell}
            else:
                ent = cell if isinstance(cell, Mapping) and "estimate" in cell else _entry(cell, metric)
            zr.append(_est(ent))
            n = cell.get("n") if isinstance(cell, Mapping) else None
            tr.append(
                "—"
                if ent is None
                else entry_text(ent, 3)
                + (f"<br>n={n}" if n is not None else "")
                + ("<br><i>insufficient</i>" if isinstance(cell, Mapping) and cell.get("insufficient") else "")
            )
        z.append(zr)
        text.append(tr)
    lower_better = not _higher_is_better(metric)
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=evals,
            y=fits,
            text=text,
            texttemplate="%{text}",
            textfont=dict(size=10),
            colorscale="Viridis_r" if lower_better else "Viridis",
            xgap=2,
            ygap=2,
            colorbar=dict(title=metric_label(metric)),
            hovertemplate="fit on %{y}, evaluated at %{x}<br>%{text}<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="Evaluated at", type="category")
    fig.update_yaxes(title_text="Fitted on", type="category", autorange="reversed")
    return _layout(
        fig,
        title or f"Transfer: {metric_label(metric)} when fitted at one site, used at another",
        height=max(300, 140 + 55 * len(fits)),
    )


# ---- shift and drift ---------------------------------------------------------------------------------


def shift_summary_figure(
    shift: Mapping, site: str, *, top: int = 12, title: str | None = None, color: str | None = None
) -> go.Figure:
    """What differs most between ``site`` and the development site: the top findings of ``shift.json``'s
    ranking, as −log10 of the multiplicity-adjusted p-value, filled by whether the difference is
    significant and beyond its practical threshold (material), outlined in the site's ``color`` (its
    colour in every other chart)."""
    info = (shift.get("sites") or {}).get(site) or {}
    ranking = [r for r in (info.get("ranking") or []) if r.get("p_adjusted") is not None][:top]
    if not ranking:
        return _empty(title, f"No shift findings for {site}")
    alpha = shift.get("alpha", 0.05)
    xs = [min(50.0, -math.log10(max(r["p_adjusted"], 1e-300))) for r in ranking]
    labels = [r.get("id") or f"{r.get('group')}:{r.get('name')}" for r in ranking]
    colors = [FAIL if r.get("material") else (WARN if r.get("flagged") else GREY) for r in ranking]
    short = [f"{r.get('effect_name') or 'effect'} {fmt(r.get('effect'), 2)}" for r in ranking]
    hover = [
        f"{r.get('test')}: {r.get('effect_name') or 'effect'} {fmt(r.get('effect'))}"
        + (f" (practical threshold {fmt(r.get('threshold'))})" if r.get("threshold") is not None else "")
        + f"<br>{formatting.p_clause(r.get('p_value'))}, adjusted {formatting.p_clause(r.get('p_adjusted'))}"
        for r in ranking
    ]
    fig = go.Figure(
        go.Bar(
            x=xs,
            y=labels,
            orientation="h",
            marker=dict(color=colors, line=dict(color=color or PALETTE[0], width=2)),
            text=short,
            textposition="auto",
            customdata=hover,
            hovertemplate="%{y}<br>%{customdata}<extra></extra>",
            name="findings",
            cliponaxis=False,
        )
    )
    fig.add_vline(x=-math.log10(alpha), line=dict(color="#666", dash="dash", width=1))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(title_text=f"−log10 adjusted p ({shift.get('correction', 'holm')})")
    default = f"{site} against development (n={info.get('n')})"
    return _layout(fig, title or default, height=max(280, 90 + 30 * len(ranking)), showlegend=False)


def drift_figure(
    drift: Mapping,
    *,
    metrics: Sequence[str] = ("auroc", "ece", "calibration_intercept", "prevalence", "mean_score"),
    title: str | None = None,
) -> go.Figure:
    """Metrics per time window with intervals (one panel each), reference windows shaded, and windows
    flagged by the change detector marked in red. ``drift``: one site of ``shift.json["drift"]["sites"]``."""
    windows = drift.get("windows") or []
    if not windows:
        return _empty(title, drift.get("reason") or "No dated cases")
    metrics = [m for m in metrics if any(isinstance(w.get(m), Mapping) for w in windows)]
    fig = make_subplots(
        rows=len(metrics),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.03,
        subplot_titles=[metric_label(m) for m in metrics],
    )
    x = [w["window"] for w in windows]
    for i, m in enumerate(metrics, start=1):
        est = [(w.get(m) or {}).get("estimate") for w in windows]
        lo = [(w.get(m) or {}).get("ci_low") for w in windows]
        hi = [(w.get(m) or {}).get("ci_high") for w in windows]
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[h if h is not None else e for h, e in zip(hi, est, strict=True)],
                mode="lines",
                line=dict(width=0),
                showlegend=False,
                hoverinfo="skip",
            ),
            row=i,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[v if v is not None else e for v, e in zip(lo, est, strict=True)],
                mode="lines",
                line=dict(width=0),
                fill="tonexty",
                fillcolor=_rgba(PALETTE[0], 0.15),
                showlegend=False,
                hoverinfo="skip",
            ),
            row=i,
            col=1,
        )
        colors = [
            FAIL if w.get("flagged") or w.get("cusum_alarm") else (GREY if w.get("insufficient") else PALETTE[0])
            for w in windows
        ]
        text = [
            f"{w['window']}: {metric_label(m)} {entry_text(w.get(m))}<br>n={w.get('n')}, {w.get('n_events')} events"
            + (" (reference)" if w.get("reference") else "")
            + (" — flagged" if w.get("flagged") else "")
            + (" — insufficient" if w.get("insufficient") else "")
            for w in windows
        ]
        fig.add_trace(
            go.Scatter(
                x=x,
                y=est,
                mode="lines+markers",
                line=dict(color=PALETTE[0], width=1.5),
                marker=dict(color=colors, size=8),
                name=metric_label(m),
                showlegend=False,
                text=text,
                hovertemplate="%{text}<extra></extra>",
            ),
            row=i,
            col=1,
        )
    refs = [w["window"] for w in windows if w.get("reference")]
    if refs:
        for i in range(1, len(metrics) + 1):
            fig.add_vrect(x0=refs[0], x1=refs[-1], fillcolor="#dddddd", opacity=0.35, line_width=0, row=i, col=1)
    fig.update_xaxes(type="category")
    return _layout(
        fig,
        title or "Metrics per window (shaded: reference windows; red: flagged)",
        height=max(300, 170 * len(metrics)),
    )


# ---- decision curves (net benefit) --------------------------------------------------------------------

# the two defaults a model must beat (Vickers & Elkin 2006): treat everyone, treat no one
TREAT_ALL_COLOR = "#555555"


def decision_curve_block(curves_decision: Mapping | None, site: str) -> Mapping | None:
    """The CURVE of ``site`` in ``curves.json``'s ``decision`` (``"overall"``: pooled over sites)."""
    blocks = (curves_decision or {}).get("blocks") or {}
    if site == "overall":
        return blocks.get("overall")
    return (blocks.get("sites") or {}).get(site)


def _segments(x: Sequence, lo: Sequence, hi: Sequence) -> tuple[list, list]:
    """The closed outline of a band, one polygon per run of thresholds where both bounds exist (a band
    is not drawn across an undefined threshold); polygons separated by ``None``, as plotly's ``toself``
    fill takes them."""
    xs: list = []
    ys: list = []
    run: list[int] = []
    for i in [*range(len(x)), None]:
        if i is not None and lo[i] is not None and hi[i] is not None:
            run.append(i)
            continue
        if len(run) > 1:
            if xs:
                xs.append(None)
                ys.append(None)
            xs += [x[j] for j in run] + [x[j] for j in reversed(run)]
            ys += [hi[j] for j in run] + [lo[j] for j in reversed(run)]
        run = []
    return xs, ys


def _decision_line(
    fig: go.Figure, curve: Mapping, x: Sequence, key: str, name: str, color: str, ci_level: float, **line
) -> None:
    """One net-benefit curve (``net_benefit`` or ``treat_all``) with its interval band; the hover text
    of every point carries the estimate, its interval and n."""
    y = list(curve.get(key) or [None] * len(x))
    lo = list(curve.get(f"{key}_ci_low") or [None] * len(x))
    hi = list(curve.get(f"{key}_ci_high") or [None] * len(x))
    bx, by = _segments(x, lo, hi)
    if bx:
        fig.add_trace(
            go.Scatter(
                x=bx,
                y=by,
                mode="lines",
                fill="toself",
                fillcolor=_rgba(color, 0.16),
                line=dict(width=0),
                name=f"{name}: {ci_level:.0%} interval",
                hoverinfo="skip",
            )
        )
    counts = n_text(curve.get("n"), curve.get("n_events"))
    text = [
        f"threshold {fmt(t, 2)}<br>{name}: {entry_text({'estimate': v, 'ci_low': a, 'ci_high': b})}<br>{counts}"
        for t, v, a, b in zip(x, y, lo, hi, strict=True)
    ]
    fig.add_trace(
        go.Scatter(
            x=x,
            y=y,
            mode="lines",
            name=name,
            line=dict(color=color, width=2, **line),
            text=text,
            hovertemplate="%{text}<extra></extra>",
        )
    )


def _decision_markers(fig: go.Figure, items: Sequence[Mapping], color: str, counts: str) -> None:
    """The protocol's decision thresholds: the model's net benefit there, with its interval as error bars
    and the share of replicates in which it beats both defaults in the hover text."""
    pts = [(d, d.get("net_benefit") or {}) for d in items if isinstance(d, Mapping)]
    pts = [(d, e) for d, e in pts if e.get("estimate") is not None]
    if not pts:
        return
    x = [d.get("threshold") for d, _ in pts]
    y = [e["estimate"] for _, e in pts]
    up = [None if e.get("ci_high") is None else e["ci_high"] - e["estimate"] for _, e in pts]
    down = [None if e.get("ci_low") is None else e["estimate"] - e["ci_low"] for _, e in pts]
    text = [
        f"decision threshold {fmt(d.get('threshold'), 2)}<br>net benefit {entry_text(e)}"
        f"<br>treat all {entry_text(d.get('net_benefit_treat_all'))}"
        f"<br>beats both defaults in {_share(d.get('beats_defaults'))} of bootstrap replicates<br>{counts}"
        for d, e in pts
    ]
    fig.add_trace(
        go.Scatter(
            x=x,
            y=y,
            mode="markers",
            name="decision thresholds (protocol)",
            marker=dict(symbol="diamond", size=11, color=color, line=dict(color="white", width=1)),
            error_y=dict(type="data", symmetric=False, array=up, arrayminus=down, color=color, thickness=1.5),
            text=text,
            hovertemplate="%{text}<extra></extra>",
        )
    )


def _share(x: Any) -> str:
    """A share of bootstrap replicates as a percentage; — without replicates."""
    return "—" if x is None else f"{100 * float(x):.0f}%"


def _decision_y_range(curve: Mapping) -> list[float]:
    """Net benefit cannot exceed the prevalence; treat all falls without bound as the threshold rises,
    so the axis stops a little below 0 (as dcurves' and rmda's plots do) instead of following it down."""
    tops = [curve.get("prevalence")]
    for key in ("net_benefit", "net_benefit_ci_high", "treat_all_ci_high"):
        tops += list(curve.get(key) or [])
    top = max([float(v) for v in tops if v is not None] or [0.1])
    top = max(top, 0.02)
    return [-0.2 * top, 1.08 * top]


def decision_curve_figure(
    curves_decision: Mapping | None,
    site: str,
    *,
    decision: Sequence[Mapping] | None = None,
    color: str | None = None,
    title: str | None = None,
) -> go.Figure:
    """The decision curve of one site (or ``"overall"``: pooled) from ``curves.json``'s ``decision``.

    Net benefit NB(t) = TP/n − FP/n · t/(1−t) of treating the patients with p ≥ t, against the threshold
    probability t (Vickers & Elkin, Med Decis Making 2006;26:565–74), with its bootstrap percentile band;
    the two defaults: treat all (NB = prev − (1 − prev) · t/(1−t), with its band) and treat none (NB = 0).
    A site's curve is at that site's own prevalence (what the site would get); the pooled curve mixes the
    sites' prevalences. ``decision`` (the BLOCK's ``decision`` items) marks the protocol's decision
    thresholds with the model's net benefit and interval there; without it, the thresholds are not
    marked. The bands are pointwise, and the markers are estimates with intervals, not significance tests
    (Vickers et al., Diagn Progn Res 2023).
    """
    curve = decision_curve_block(curves_decision, site)
    where = "all sites (pooled)" if site == "overall" else site
    if not curve or not (curves_decision or {}).get("thresholds"):
        return _empty(title, f"No decision curve stored for {where}.")
    x = list(curves_decision["thresholds"])
    ci = float(curves_decision.get("ci_level") or 0.95)
    color = color or PALETTE[0]
    fig = go.Figure()
    _decision_line(fig, curve, x, "treat_all", "treat all", TREAT_ALL_COLOR, ci, dash="dash")
    fig.add_trace(
        go.Scatter(
            x=[x[0], x[-1]],
            y=[0, 0],
            mode="lines",
            name="treat none",
            line=dict(color="#000000", width=1.5, dash="dot"),
            hovertemplate="treat none: net benefit 0<extra></extra>",
        )
    )
    _decision_line(fig, curve, x, "net_benefit", "model", color, ci)
    counts = n_text(curve.get("n"), curve.get("n_events"))
    for d in decision or ():
        if isinstance(d, Mapping) and d.get("threshold") is not None:
            fig.add_vline(x=d["threshold"], line=dict(color=GREY, width=1, dash="dot"))
    _decision_markers(fig, decision or (), color, counts)
    fig.update_xaxes(title_text="Threshold probability (treat if predicted risk ≥ threshold)", range=[x[0], x[-1]])
    fig.update_yaxes(title_text="Net benefit", range=_decision_y_range(curve))
    head = f"Decision curve at {where}" if site != "overall" else "Decision curve, pooled"
    prev = curve.get("prevalence")
    text = f"{head} ({counts}, prevalence {fmt(prev, 2)})"
    return _layout(fig, title or text, height=440, legend=dict(orientation="h", y=-0.22))


# ---- across hospitals: the random-effects synthesis --------------------------------------------------
# ``metrics.json["synthesis"]`` (validate.analysis.synthesis): per pooled metric the random-effects
# estimate with its CI, tau², I², Q, the prediction interval for a new hospital, and the per-site inputs
# (theta, se on the pooling scale). Drawn as a meta-analysis forest plot (Debray et al. BMJ 2017; Riley
# et al. BMJ 2016): one row per site, the diamond, and the prediction interval as a separate bar.

ROLE_ORDER = ("development", "calibration", "external")
PI_COLOR = PALETTE[5]  # vermillion: the prediction interval never looks like a site's or the pooled CI
DIAMOND_COLOR = "#1d2330"
# reference lines of the net-benefit family (no registry target: 0 is "no better than the default")
_SYNTHESIS_REFERENCE = {"net_benefit_vs_treat_all": 0.0, "interventions_avoided": 0.0}
# back to the metric's scale from the scale it was pooled on (validate.metrics.registry: Metric.synthesis)
_BACK_TRANSFORM = {
    "logit": lambda x: 1.0 / (1.0 + math.exp(-x)),
    "log": math.exp,
    "identity": lambda x: x,
}


def split_decision_metric(metric: str) -> tuple[str, float | None]:
    """``"net_benefit@0.2"`` -> ``("net_benefit", 0.2)``; a plain metric -> ``(metric, None)``."""
    base, sep, tail = metric.partition("@")
    if not sep:
        return metric, None
    try:
        return base, float(tail)
    except ValueError:
        return metric, None


def synthesis_metric_label(metric: str) -> str:
    """The display name of a pooled metric: ``"Net benefit at threshold 0.2"`` for ``net_benefit@0.2``."""
    base, t = split_decision_metric(metric)
    return metric_label(base) if t is None else f"{metric_label(base)} at threshold {t:g}"


def synthesis_metrics(metrics: Mapping | None) -> list[str]:
    """The pooled metrics of ``metrics.json["synthesis"]`` in the file's order (empty without one)."""
    synthesis = (metrics or {}).get("synthesis")
    if not isinstance(synthesis, Mapping):
        return []
    return [m for m, e in (synthesis.get("metrics") or {}).items() if isinstance(e, Mapping)]


def prediction_interval_text(entry: Mapping, digits: int | None = None) -> str:
    """``0.612–0.904``, or why there is none (k < 3: the t distribution has k − 2 degrees of freedom)."""
    lo, hi = entry.get("pi_low"), entry.get("pi_high")
    if lo is None or hi is None:
        return f"none: {entry.get('pi_reason') or 'not computed'}"
    return formatting.format_range(lo, hi, entry.get("metric"), digits=digits)


def tau2_text(tau2: Any) -> str:
    """τ² (it is often tiny: 0.0004 must not read 0.000; :func:`validate.formatting.format_value` gives a
    small real value two significant digits)."""
    return formatting.format_value(tau2)


def synthesis_stats_text(entry: Mapping) -> str:
    """k, tau² (on the pooling scale), I² and Cochran's Q with its p-value, for titles and captions."""
    scale = entry.get("scale") or "identity"
    parts = [f"k = {entry.get('k', '—')}", f"τ² = {tau2_text(entry.get('tau2'))} ({scale} scale)"]
    i2 = entry.get("i2")
    parts.append(f"I² = {'—' if i2 is None else f'{float(i2):.0%}'}")
    if entry.get("q") is not None:
        parts.append(f"Q = {fmt(entry.get('q'), 2)} ({formatting.p_clause(entry.get('q_p_value'))})")
    return " · ".join(parts)


def synthesis_caption(synthesis: Mapping, metric: str) -> str:
    """The plain-language caption of :func:`synthesis_forest_figure` (report and dashboard alike)."""
    entry = (synthesis.get("metrics") or {}).get(metric) or {}
    level = float(synthesis.get("ci_level") or 0.95)
    method, interval = synthesis.get("method", "REML"), synthesis.get("interval", "hksj")
    ci_how = "Hartung–Knapp–Sidik–Jonkman" if interval == "hksj" else "normal (z)"
    scale = entry.get("scale") or "identity"
    pi = (
        f"Bar below it: the {level:.0%} prediction interval — where the next hospital's value is expected to "
        f"lie, {level:.0%} (Higgins et al. 2009: t with k − 2 degrees of freedom, so wider than the CI "
        "whenever sites differ; an arrow: it runs on beyond the axis, its ends are in the text column). "
        if entry.get("pi_low") is not None
        else f"No prediction interval: {entry.get('pi_reason') or 'not computed'}. "
    )
    return (
        f"Random-effects synthesis ({method}, {ci_how} {level:.0%} CI) of "
        f"{synthesis.get('role_rule') or 'the chosen sites'}: {synthesis_stats_text(entry)}. "
        f"Diamond: the pooled estimate and its {level:.0%} confidence interval (the average site). {pi}"
        f"Site rows: each site's input to the synthesis, its estimate with a {level:.0%} Wald interval on "
        f"the {scale} scale transformed back (it can differ slightly from the site tables' intervals). "
        "Hollow grey squares: sites below the protocol's minimum cases or events, pooled but flagged; "
        "open circles: sites not in the synthesis (their own interval), shown for comparison."
    )


def _synthesis_site_order(synthesis: Mapping, metrics: Mapping, roles: Mapping[str, str]) -> list[str]:
    """Every site, ordered by role (development, calibration, external, other), then in file order."""
    listed = list(dict.fromkeys(str(s) for s in [*(synthesis.get("sites") or []), *(metrics.get("sites") or {})]))
    rank = {r: i for i, r in enumerate(ROLE_ORDER)}
    return sorted(listed, key=lambda s: rank.get(roles.get(s, ""), len(ROLE_ORDER)))


def _site_label(site: str, role: str | None, pooled: bool) -> str:
    label = f"{site} · {role}" if role else site
    return label if pooled else f"{label} (not pooled)"


def _pooled_site_row(inp: Mapping, scale: str, z: float, role: str | None) -> dict:
    """A site's input to the synthesis on the metric's scale: back(theta), back(theta ± z·se)."""
    back = _BACK_TRANSFORM[scale]
    theta, se = inp.get("theta"), inp.get("se")
    lo = hi = None
    if theta is not None and se is not None:
        lo, hi = back(theta - z * se), back(theta + z * se)
    return dict(
        label=_site_label(str(inp.get("site")), role, True),
        estimate=None if theta is None else back(theta),
        ci_low=lo,
        ci_high=hi,
        n=inp.get("n"),
        n_events=inp.get("n_events"),
        insufficient=bool(inp.get("insufficient")),
        kind="small" if inp.get("insufficient") else "site",
    )


def _decision_entry(block: Mapping | None, metric: str) -> Mapping | None:
    """A block's entry of a metric, the net-benefit family at a decision threshold included."""
    base, t = split_decision_metric(metric)
    if t is None:
        return _entry(block, metric)
    for item in (block or {}).get("decision") or []:
        if isinstance(item, Mapping) and abs(float(item.get("threshold", math.nan)) - t) < 1e-9:
            e = item.get(base)
            return e if isinstance(e, Mapping) else None
    return None


def _unpooled_site_row(site: str, block: Mapping | None, metric: str, role: str | None) -> dict:
    row = _row(_site_label(site, role, False), block, metric)
    e = _decision_entry(block, metric) or {}
    row.update(estimate=e.get("estimate"), ci_low=e.get("ci_low"), ci_high=e.get("ci_high"), kind="unpooled")
    return row


def synthesis_site_rows(metrics: Mapping, metric: str, roles: Mapping[str, str] | None = None) -> list[dict]:
    """The site rows of the forest plot of ``metric``: pooled sites (their inputs, back-transformed) and
    the other sites of ``metrics.json`` (their own block entry), ordered by role."""
    synthesis = metrics.get("synthesis") or {}
    entry = (synthesis.get("metrics") or {}).get(metric) or {}
    roles = dict(roles or {})
    level = float(synthesis.get("ci_level") or 0.95)
    z = NormalDist().inv_cdf(0.5 + level / 2)
    scale = entry.get("scale") or "identity"
    inputs = {str(i.get("site")): i for i in entry.get("inputs") or [] if isinstance(i, Mapping)}
    # a chosen site left out of this metric's synthesis (metric undefined there, no se), and why
    excluded = {str(x.get("site")): x.get("reason") for x in entry.get("excluded") or [] if isinstance(x, Mapping)}
    for site, inp in inputs.items():  # the role recorded with the input where the caller gave none
        if inp.get("role") and not roles.get(site):
            roles[site] = str(inp["role"])
    site_blocks = metrics.get("sites") or {}
    rows = []
    for site in _synthesis_site_order(synthesis, metrics, roles):
        if site in inputs and scale in _BACK_TRANSFORM:
            rows.append(_pooled_site_row(inputs[site], scale, z, roles.get(site)))
        elif site in site_blocks or site in excluded:
            row = _unpooled_site_row(site, site_blocks.get(site), metric, roles.get(site))
            if site in excluded:
                row["not_pooled"] = excluded[site] or "left out of the synthesis"
            rows.append(row)
    return rows


def synthesis_row_text(row: Mapping) -> str:
    """A site row's text column: estimate (interval), n (events), flags, and why it is not pooled."""
    text = _forest_text(row)
    if row.get("kind") == "unpooled":
        text += f" not pooled: {row['not_pooled']}" if row.get("not_pooled") else " not pooled"
    return text


def synthesis_forest_figure(
    metrics: Mapping,
    metric: str,
    *,
    roles: Mapping[str, str] | None = None,
    title: str | None = None,
) -> go.Figure:
    """The forest plot of one pooled metric of ``metrics.json["synthesis"]``.

    One row per site ordered by role (label with n and events; insufficient sites hollow grey; sites
    outside the synthesis as open circles with their own interval), then the random-effects diamond
    (estimate and CI) and, on its own row in its own colour, the prediction interval for a new hospital
    (Higgins, Thompson & Spiegelhalter 2009); k, τ² and I² in the title. ``roles``: site -> protocol role.
    """
    synthesis = metrics.get("synthesis") if isinstance(metrics, Mapping) else None
    label = synthesis_metric_label(metric)
    if not isinstance(synthesis, Mapping):
        return _empty(title, "No synthesis across sites in this bundle")
    entry = (synthesis.get("metrics") or {}).get(metric)
    if not isinstance(entry, Mapping):
        return _empty(title, f"{label} was not pooled across sites")
    if (entry.get("scale") or "identity") not in _BACK_TRANSFORM:
        return _empty(title, f"{label}: unknown pooling scale {entry.get('scale')!r}")
    level = float(synthesis.get("ci_level") or 0.95)
    rows = synthesis_site_rows(metrics, metric, roles)
    pooled_y, pi_y = len(rows) + 0.5, len(rows) + 1.5
    base, _ = split_decision_metric(metric)
    reference = REFERENCE.get(base, _SYNTHESIS_REFERENCE.get(base))
    log = entry.get("scale") == "log"  # a ratio: 0.5 and 2 equally far from 1
    window = _axis_window(rows, entry, reference, log)
    fig = go.Figure()
    _synthesis_site_traces(fig, rows, level)
    _diamond_trace(fig, entry, pooled_y, level)
    _prediction_trace(fig, entry, pi_y, level, None if window is None else _data_units(window, log))
    if reference is not None:
        fig.add_vline(x=reference, line=dict(color="#666", dash="dash", width=1))
    fig.add_hline(y=len(rows) - 0.25, line=dict(color="#C9D0DC", width=1))
    ys = [*range(len(rows)), pooled_y, pi_y]
    texts = [synthesis_row_text(r) for r in rows]
    texts += [_pooled_text(entry), f"PI {prediction_interval_text(entry)}"]
    fig.add_trace(
        go.Scatter(
            x=[1.02] * len(ys),
            y=ys,
            xaxis="x2",
            mode="text",
            showlegend=False,
            text=texts,
            textposition="middle right",
            textfont=dict(size=11, color="#333"),
            hoverinfo="skip",
        )
    )
    ticks = [r["label"] for r in rows] + [
        f"<b>random-effects estimate (k = {entry.get('k', '—')})</b>",
        f"{level:.0%} prediction interval (next hospital)",
    ]
    heading = title or f"{label} across hospitals"
    fig.update_layout(
        xaxis=dict(domain=[0, 0.55], title_text=label, zeroline=False, range=window, **_log_ticks(window, log)),
        xaxis2=dict(domain=[0.57, 1.0], range=[1, 2], visible=False),
        yaxis=dict(autorange="reversed", tickmode="array", tickvals=ys, ticktext=ticks, zeroline=False, showgrid=False),
        # the legend below the axis title, at a fixed distance whatever the number of rows
        legend=dict(orientation="h", yref="container", yanchor="bottom", y=0.01, x=0),
    )
    fig = _layout(fig, f"{heading}<br><sup>{synthesis_stats_text(entry)}</sup>", height=max(320, 190 + 32 * len(ys)))
    fig.update_layout(margin=dict(b=110))
    return fig


def _pooled_text(entry: Mapping) -> str:
    """The pooled estimate (CI) and k; the reason where the estimate or its interval is missing."""
    if entry.get("estimate") is None:
        return f"not estimable: {entry.get('reason') or 'no site to pool'}"
    text = entry_text(
        {"estimate": entry.get("estimate"), "ci_low": entry.get("ci_low"), "ci_high": entry.get("ci_high")}
    )
    if entry.get("ci_low") is None or entry.get("ci_high") is None:
        text += f" (no CI: {entry.get('reason') or 'not computed'})"
    return f"{text}  k={entry.get('k', '—')}"


_SITE_STYLE = {
    # kind: (legend name, marker symbol, colour); the CI level is filled in
    "site": ("site ({level} CI)", "square", PALETTE[0]),
    "small": ("site below the minimum cases/events (pooled, flagged)", "square-open", GREY),
    "unpooled": ("site not in the synthesis ({level} CI)", "circle-open", GREY),
}


def _synthesis_site_traces(fig: go.Figure, rows: Sequence[Mapping], level: float) -> None:
    for kind, (name, symbol, color) in _SITE_STYLE.items():
        sel = [(y, r) for y, r in enumerate(rows) if r["kind"] == kind and r.get("estimate") is not None]
        if not sel:
            continue
        fig.add_trace(
            go.Scatter(
                x=[r["estimate"] for _, r in sel],
                y=[y for y, _ in sel],
                mode="markers",
                name=name.format(level=f"{level:.0%}"),
                marker=dict(size=10, symbol=symbol, color=color, line=dict(width=1.5, color=color)),
                error_x=dict(
                    type="data",
                    symmetric=False,
                    array=[(r["ci_high"] - r["estimate"]) if r.get("ci_high") is not None else 0 for _, r in sel],
                    arrayminus=[(r["estimate"] - r["ci_low"]) if r.get("ci_low") is not None else 0 for _, r in sel],
                    thickness=1.5,
                    width=4,
                    color="#444" if kind == "site" else GREY,
                ),
                text=[f"{r['label']}<br>{_forest_text(r)}" for _, r in sel],
                hovertemplate="%{text}<extra></extra>",
            )
        )


def _diamond_trace(fig: go.Figure, entry: Mapping, y: float, level: float) -> None:
    """The pooled estimate as a diamond spanning its CI (the meta-analysis convention)."""
    est, lo, hi = entry.get("estimate"), entry.get("ci_low"), entry.get("ci_high")
    if est is None:
        return
    text = f"random-effects estimate {_pooled_text(entry)}<br>{synthesis_stats_text(entry)}"
    if lo is None or hi is None:  # k = 1 under HKSJ: an estimate without an interval is a point, not a diamond
        fig.add_trace(
            go.Scatter(
                x=[est],
                y=[y],
                mode="markers",
                marker=dict(symbol="diamond-open", size=14, color=DIAMOND_COLOR),
                name="random-effects estimate (no CI)",
                text=[text],
                hovertemplate="%{text}<extra></extra>",
            )
        )
        return
    fig.add_trace(
        go.Scatter(
            x=[lo, est, hi, est, lo],
            y=[y, y - 0.3, y, y + 0.3, y],
            mode="lines",
            fill="toself",
            fillcolor=DIAMOND_COLOR,
            line=dict(color=DIAMOND_COLOR, width=1),
            name=f"random-effects estimate ({level:.0%} CI)",
            text=[text] * 5,
            hoveron="fills+points",
            hovertemplate="%{text}<extra></extra>",
        )
    )


def _axis_window(rows: Sequence[Mapping], entry: Mapping, reference: float | None, log: bool) -> list[float] | None:
    """The x range drawn, in axis units (log10 on a log axis): every site interval, the pooled CI and the
    reference, padded; the prediction interval only up to half that span beyond it. With k = 3 the
    interval uses t with 1 degree of freedom and can be a hundred times wider than everything else; it
    then runs to the edge with an arrow (:func:`_prediction_trace`), its values in the text column."""

    def axis(v: Any) -> float | None:
        if v is None or not math.isfinite(float(v)) or (log and float(v) <= 0):
            return None
        return math.log10(float(v)) if log else float(v)

    keys = ("estimate", "ci_low", "ci_high")
    values = [axis(r.get(k)) for r in rows for k in keys] + [axis(entry.get(k)) for k in keys] + [axis(reference)]
    finite = [v for v in values if v is not None]
    if not finite:
        return None
    lo, hi = min(finite), max(finite)
    span = (hi - lo) or abs(hi) or 1.0
    for v in (axis(entry.get("pi_low")), axis(entry.get("pi_high"))):
        if v is not None:
            lo, hi = min(lo, max(v, lo - span / 2)), max(hi, min(v, hi + span / 2))
    pad = 0.04 * (hi - lo)
    return [lo - pad, hi + pad]


_LOG_TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)


def _log_ticks(window: Sequence[float] | None, log: bool) -> dict:
    """A log axis labelled with plain ratios (0.5, 1, 2), not plotly's bare mantissas (3, 4, 5)."""
    if not log:
        return {"type": "linear"}
    lo, hi = _data_units(window, log) if window is not None else (0.01, 100)
    ticks = [t for t in _LOG_TICKS if lo <= t <= hi] or [1]
    return {"type": "log", "tickmode": "array", "tickvals": ticks, "ticktext": [f"{t:g}" for t in ticks]}


def _data_units(window: Sequence[float], log: bool) -> tuple[float, float]:
    return (10 ** window[0], 10 ** window[1]) if log else (window[0], window[1])


def _prediction_trace(
    fig: go.Figure, entry: Mapping, y: float, level: float, window: tuple[float, float] | None
) -> None:
    """The prediction interval on its own row: a thick bar with end caps, never a diamond or a CI bar.
    An end beyond the axis ``window`` is drawn at its edge as an arrow (the interval goes on)."""
    est, lo, hi = entry.get("estimate"), entry.get("pi_low"), entry.get("pi_high")
    if est is None or lo is None or hi is None:
        return
    text = (
        f"{level:.0%} prediction interval {formatting.format_range(lo, hi)}: where the next hospital's value "
        "is expected to lie"
    )
    left, right = window if window is not None else (lo, hi)
    ends = [
        (left, "triangle-left") if lo < left else (lo, "line-ns"),
        (right, "triangle-right") if hi > right else (hi, "line-ns"),
    ]
    fig.add_trace(
        go.Scatter(
            x=[x for x, _ in ends],
            y=[y, y],
            mode="lines+markers",
            line=dict(color=PI_COLOR, width=6),
            marker=dict(symbol=[m for _, m in ends], size=16, line=dict(width=3, color=PI_COLOR), color=PI_COLOR),
            name=f"{level:.0%} prediction interval (next hospital)",
            text=[text, text],
            hovertemplate="%{text}<extra></extra>",
        )
    )


# ---- fairness (fairness.json) --------------------------------------------------------------------

FAIRNESS_RATE_LABELS = {
    "tpr": "TPR (sensitivity)",
    "fpr": "FPR (1 − specificity)",
    "ppv": "PPV",
    "selection_rate": "Selection rate",
}


def fairness_level(fairness: Mapping, site: str = "overall") -> Mapping:
    """The pooled level of ``fairness.json`` (``site="overall"``) or one site's."""
    return fairness.get("overall") or {} if site in ("overall", None) else (fairness.get("sites") or {}).get(site) or {}


def fairness_threshold_label(t: Mapping) -> str:
    """``threshold 0.5`` or ``target sensitivity 0.9: t = 0.35 (carried)``."""
    if t.get("kind") == "target_sensitivity":
        carried = ", carried from development" if t.get("carried") else ""
        return f"target sensitivity {fmt(t.get('target'), 2)}: t = {fmt(t.get('threshold'), 4)}{carried}"
    return f"threshold {fmt(t.get('threshold'), 4)}"


def fairness_gap_figure(
    fairness: Mapping,
    attr: str,
    rate: str = "tpr",
    *,
    site: str = "overall",
    threshold: int = 0,
    title: str | None = None,
) -> go.Figure:
    """Each group's gap to the reference group, ``rate(group) − rate(reference)``, with its paired
    bootstrap interval (``fairness.json``), at one operating threshold (index ``threshold``); groups too
    small to judge hollow grey; 0 (no gap) dashed."""
    att = (fairness_level(fairness, site).get("attributes") or {}).get(attr) or {}
    thresholds = att.get("thresholds") or []
    if threshold >= len(thresholds):
        return _empty(title, "No operating threshold")
    t = thresholds[threshold]
    info = att.get("groups") or {}
    order = (fairness.get("groups") or {}).get(attr) or list(info)
    rows = []
    for g in order:
        if g not in info:
            continue
        e = ((t.get("groups") or {}).get(g) or {}).get(f"{rate}_gap") or {}
        rows.append(
            dict(
                label=str(g) + (" (reference)" if g == att.get("reference") else ""),
                estimate=e.get("estimate"),
                ci_low=e.get("ci_low"),
                ci_high=e.get("ci_high"),
                n=info[g].get("n"),
                n_events=info[g].get("n_events"),
                insufficient=bool(info[g].get("insufficient")),
            )
        )
    where = "all sites" if site in ("overall", None) else f"site {site}"
    label = FAIRNESS_RATE_LABELS.get(rate, rate)
    return forest_figure(
        rows,
        title=title or f"{label} gap to {att.get('reference')} by {attr} ({where}; {fairness_threshold_label(t)})",
        x_title=f"{label}: group − reference group",
        reference=0.0,
        ci_level=fairness.get("ci_level", 0.95),
    )
