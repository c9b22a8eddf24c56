"""The segmentation figures of the HTML report and the dashboard: one builder for both.

Pure functions from bundle data to plotly figures, table rows and overlay pictures; nothing here reads
files or computes a statistic (every number comes from the bundle, as :mod:`validate.charts`).

Inputs by file (SPEC_S7 #20):

- ``metrics.json`` of a segmentation run: per-site BLOCKs of per-case metric means (``dice``,
  ``hd95_mm``...) and medians (``<metric>_median``) with patient-clustered bootstrap intervals; with
  several labels each BLOCK holds ``labels: {label: BLOCK}``. :func:`segmentation_forest`,
  :func:`site_metric_rows`, :func:`subgroup_metric_rows`.
- ``segmentation.json``: :func:`pixel_reliability_figure` (pixel reliability per site),
  :func:`temperature_figure` (pixel ECE before and after temperature scaling),
  :func:`area_agreement_figure` (Bland–Altman limits of agreement of the area), :func:`comparison_figure`
  (model minus baseline per site), :func:`worst_case_rows`.
- ``overlays.parquet`` rows (packed masks of the worst cases): :func:`overlay_png` draws the reference
  and predicted outlines over the case's picture when the bundle has one, else over a blank frame.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from validate import charts
from validate.metrics import registry

#: Colours of the overlay outlines (Okabe-Ito: told apart with the common colour-vision deficiencies).
REFERENCE_COLOR = "#009E73"  # bluish green: the reference mask
PREDICTION_COLOR = "#D55E00"  # vermillion: the model's mask
#: Segmentation metrics in the order tables and pages show them (the NSD family, ``nsd_<τ>mm``, after IoU).
METRIC_ORDER = ("dice", "iou", "nsd", "hd95_mm", "hd_mm", "assd_mm", "area_abs_error_mm2", "hc_abs_error_mm")
#: The headline pair drawn as forest plots on every page: overlap and boundary.
FOREST_PAIR = ("dice", "hd95_mm")
_FALLBACK_LABELS = {
    "dice": "Dice",
    "iou": "IoU",
    "hd95_mm": "HD95 (mm)",
    "hd_mm": "Hausdorff distance (mm)",
    "assd_mm": "ASSD (mm)",
    "area_abs_error_mm2": "Absolute area error (mm²)",
    "volume_abs_error_mm3": "Absolute volume error (mm³)",
    "hc_abs_error_mm": "Head circumference absolute error (mm)",
}
_LOWER_IS_BETTER = ("hd95_mm", "hd_mm", "assd_mm", "area_abs_error_mm2", "volume_abs_error_mm3", "hc_abs_error_mm")
_NSD = re.compile(r"^nsd_(\d+(?:p\d+)?)mm$")


# ---- metric names -----------------------------------------------------------------------------------


def nsd_tolerance(metric: str) -> str | None:
    """The tolerance of an NSD key as text (``nsd_1p5mm`` → ``1.5``), or None for another metric."""
    m = _NSD.match(metric)
    return m.group(1).replace("p", ".") if m else None


def metric_label(metric: str) -> str:
    """The display name of a segmentation metric: the registry's (``HD95 (mm)``, ``Dice, median``), NSD
    with its tolerance (``NSD @ 1.5 mm``), else a built-in name."""
    base, median = (metric[: -len("_median")], True) if metric.endswith("_median") else (metric, False)
    tol = nsd_tolerance(base)
    if tol is not None:
        text = f"NSD @ {tol} mm"
    elif registry.get(base) is not None:
        text = registry.label(base)
    else:
        text = _FALLBACK_LABELS.get(base, base.replace("_", " "))
    return f"{text}, median" if median else text


def lower_is_better(metric: str) -> bool:
    """Distances and errors: lower is better (the registry's direction where it declares the metric)."""
    base = metric.removesuffix("_median")
    m = registry.get(base)
    if m is not None and m.direction in ("higher", "lower"):
        return m.direction == "lower"
    return base in _LOWER_IS_BETTER


def _rank(metric: str) -> int:
    key = "nsd" if nsd_tolerance(metric) is not None else metric
    return METRIC_ORDER.index(key) if key in METRIC_ORDER else len(METRIC_ORDER)


def block_metrics(block: Mapping | None) -> list[str]:
    """The per-case metric means a BLOCK holds (entries with an estimate; not the ``_median`` twins), in
    :data:`METRIC_ORDER`, NSD tolerances ascending."""
    names = [
        k for k, v in (block or {}).items() if isinstance(v, Mapping) and "estimate" in v and not k.endswith("_median")
    ]
    return sorted(names, key=lambda k: (_rank(k), float(nsd_tolerance(k) or 0), k))


def row_metrics(rows: Sequence[Mapping]) -> list[str]:
    """The metrics any of ``rows`` (:func:`site_metric_rows`) holds, ordered as :func:`block_metrics`."""
    union: dict = {}
    for r in rows:
        union.update(r.get("entries") or {})
    return block_metrics(union)


def labels_of(metrics: Mapping, segmentation: Mapping | None = None) -> list[str]:
    """The foreground labels: segmentation.json's ``labels``, else the BLOCKs' ``labels`` keys, else one
    unnamed label (``""``: a single-label BLOCK holds its metrics at top level)."""
    if segmentation and segmentation.get("labels"):
        return [str(x) for x in segmentation["labels"]]
    for b in [metrics.get("overall"), *(metrics.get("sites") or {}).values()]:
        if isinstance(b, Mapping) and isinstance(b.get("labels"), Mapping):
            return list(b["labels"])
    return [""]


def label_block(block: Mapping | None, label: str) -> Mapping | None:
    """The BLOCK of ``label`` inside ``block`` (``labels: {label: BLOCK}``), or ``block`` itself when it
    holds a single label's metrics at top level."""
    if not isinstance(block, Mapping):
        return None
    per_label = block.get("labels")
    if isinstance(per_label, Mapping) and label in per_label:
        return per_label[label]
    return block


# ---- tables -----------------------------------------------------------------------------------------


def site_metric_rows(metrics: Mapping, sites: Sequence[str], label: str) -> list[dict]:
    """One row per site (and the pooled block): n cases, n patients, the excluded count, the insufficient
    flag and, per metric, ``{metric: entry, metric_median: entry}`` as the BLOCK has them."""
    blocks = [(s, (metrics.get("sites") or {}).get(s)) for s in sites]
    if charts.pooled_block(metrics):
        blocks.append(("all sites (pooled)", metrics.get("overall")))
    rows = []
    for name, blk in blocks:
        b = label_block(blk, label) or {}
        rows.append(
            {
                "site": name,
                "n": b.get("n", (blk or {}).get("n")),
                "n_patients": b.get("n_patients", (blk or {}).get("n_patients")),
                "n_excluded": b.get("n_excluded"),
                "insufficient": bool(b.get("insufficient") or (blk or {}).get("insufficient")),
                "entries": {m: b.get(m) for m in b if isinstance(b.get(m), Mapping) and "estimate" in b[m]},
                "undefined": dict(b.get("undefined") or {}),
            }
        )
    return rows


def subgroup_metric_rows(metrics: Mapping, label: str) -> list[dict]:
    """The subgroup BLOCKs of metrics.json (pooled over sites) as rows ``{attribute, value, ...}`` shaped
    as :func:`site_metric_rows`."""
    rows = []
    for attr, values in (metrics.get("subgroups") or {}).items():
        for value, blk in (values or {}).items():
            b = label_block(blk, label) or {}
            entries = {m: b.get(m) for m in b if isinstance(b.get(m), Mapping) and "estimate" in b[m]}
            rows.append(
                {"attribute": attr, "value": value, "n": b.get("n"), "n_patients": b.get("n_patients")}
                | {"insufficient": bool(b.get("insufficient")), "entries": entries}
            )
    return rows


def worst_case_rows(segmentation: Mapping, site: str, label: str | None = None) -> list[dict]:
    """The worst cases segmentation.json lists for ``site`` (lowest Dice first), optionally one label's."""
    rows = [dict(r) for r in (segmentation.get("worst_cases") or {}).get(site) or [] if isinstance(r, Mapping)]
    if label:
        rows = [r for r in rows if str(r.get("label") or "") in ("", label)]
    return sorted(rows, key=lambda r: (r.get("dice") is None, r.get("dice") or 0.0))


def _site_label_items(section: Mapping | None, sites: Sequence[str], label: str) -> list[tuple[str, Mapping]]:
    """``(site, item)`` of ``section["sites"][site][label]`` in site order (a lone label: its only item)."""
    out = []
    for s in sites:
        per_label = ((section or {}).get("sites") or {}).get(s) or {}
        item = (
            per_label.get(label)
            if label in per_label
            else (next(iter(per_label.values())) if len(per_label) == 1 else None)
        )
        if isinstance(item, Mapping):
            out.append((s, item))
    return out


def pixel_calibration_items(segmentation: Mapping, sites: Sequence[str], label: str) -> list[tuple[str, Mapping]]:
    """Per site, the pixel calibration item of ``label`` (``ece``, ``n_pixels``, ``n_cases``, ``reliability``)."""
    return _site_label_items(segmentation.get("pixel_calibration"), sites, label)


def temperature_items(segmentation: Mapping, sites: Sequence[str], label: str) -> list[tuple[str, Mapping]]:
    """Per site, ``{ece_before, ece_after}`` of ``label`` on the pixel sample."""
    return _site_label_items(segmentation.get("temperature"), sites, label)


def area_quantity(segmentation: Mapping) -> tuple[str, str]:
    """``(quantity, unit)`` of the area agreement: ``("area", "mm²")`` for 2D masks, ``("volume",
    "mm³")`` for 3D."""
    section = segmentation.get("area_agreement") or {}
    quantity = str(section.get("quantity") or "area")
    unit = str(section.get("unit") or ("mm3" if quantity == "volume" else "mm2"))
    return quantity, unit.replace("mm2", "mm²").replace("mm3", "mm³")  # the bundle's ASCII unit, as read


def area_items(segmentation: Mapping, sites: Sequence[str], label: str) -> list[tuple[str, Mapping]]:
    """Per site, the area agreement of ``label`` (Bland–Altman, regression, expected vs true)."""
    return _site_label_items(segmentation.get("area_agreement"), sites, label)


# ---- figures ----------------------------------------------------------------------------------------


def segmentation_forest(
    metrics: Mapping, metric: str, sites: Sequence[str], label: str, *, colors: Mapping[str, str] | None = None
) -> go.Figure:
    """One per-case metric per site (and pooled): the mean over cases with its patient-clustered bootstrap
    interval and n cases (:func:`validate.charts.forest_figure`; a site with too few cases hollow grey)."""
    colors = dict(colors or charts.site_colors(sites))
    rows = []
    for r in site_metric_rows(metrics, sites, label):
        e = r["entries"].get(metric) or {}
        rows.append(
            {
                "label": r["site"],
                "estimate": e.get("estimate"),
                "ci_low": e.get("ci_low"),
                "ci_high": e.get("ci_high"),
                "n": r["n"],
                "insufficient": r["insufficient"],
                "reason": r["undefined"].get(metric),
                "color": colors.get(r["site"], charts.POOLED_COLOR),
            }
        )
    title = f"{metric_label(metric)}{f' — {label}' if label else ''}: mean per case"
    return charts.forest_figure(
        rows, title=title, x_title=metric_label(metric), ci_level=float(metrics.get("ci_level") or 0.95)
    )


def pixel_reliability_figure(
    segmentation: Mapping, sites: Sequence[str], label: str, *, colors: Mapping[str, str] | None = None
) -> go.Figure:
    """Pixel reliability diagram: per site, the observed foreground fraction of the pixels in each
    probability bin against their mean predicted probability (all pixels of every case, 20 equal-width
    bins), with the diagonal of perfect calibration. Marker area grows with the bin's pixel count."""
    colors = dict(colors or charts.site_colors(sites))
    items = pixel_calibration_items(segmentation, sites, label)
    title = f"Pixel reliability{f' — {label}' if label else ''}"
    if not items:
        return charts._empty(title, "No pixel calibration in this bundle")
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration", line=dict(color="#888", dash="dot"))
    )
    for site, item in items:
        bins = [
            b for b in item.get("reliability") or [] if b.get("mean_p") is not None and b.get("frac_pos") is not None
        ]
        n = np.array([float(b.get("n") or 0) for b in bins])
        size = 5 + 9 * np.sqrt(n / n.max()) if n.size and n.max() > 0 else 6
        fig.add_trace(
            go.Scatter(
                x=[b["mean_p"] for b in bins],
                y=[b["frac_pos"] for b in bins],
                mode="lines+markers",
                name=f"{site} (ECE {charts.entry_text(item.get('ece'), 4)})",
                line=dict(color=colors.get(site)),
                marker=dict(size=size, color=colors.get(site)),
                text=[f"bin {b['bin']}: {charts.formatting.format_count(b.get('n'))} pixels" for b in bins],
                hovertemplate=f"{site}<br>mean p %{{x:.3f}}<br>foreground %{{y:.3f}}<br>%{{text}}<extra></extra>",
            )
        )
    fig.update_layout(
        xaxis=dict(title_text="mean predicted probability (pixels in the bin)", range=[0, 1]),
        yaxis=dict(title_text="observed foreground fraction", range=[0, 1]),
    )
    charts._layout(fig, title, height=520)
    return fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.18, x=0))


def temperature_figure(
    segmentation: Mapping, sites: Sequence[str], label: str, *, colors: Mapping[str, str] | None = None
) -> go.Figure:
    """Per site, the pixel ECE on the pixel sample before (hollow) and after (filled) temperature scaling
    with the temperature fitted on the development site(s), joined by a line."""
    colors = dict(colors or charts.site_colors(sites))
    temp = segmentation.get("temperature") or {}
    items = temperature_items(segmentation, sites, label)
    title = f"Temperature scaling (T = {charts.fmt(temp.get('temperature'), 3)}){f' — {label}' if label else ''}"
    if not items:
        return charts._empty(title, "No temperature scaling in this bundle")
    fig = go.Figure()
    for site, item in items:
        before, after = item.get("ece_before"), item.get("ece_after")
        fig.add_trace(
            go.Scatter(
                x=[before, after],
                y=[site, site],
                mode="lines+markers",
                name=site,
                showlegend=False,
                line=dict(color=colors.get(site), width=2),
                marker=dict(size=11, symbol=["circle-open", "circle"], color=colors.get(site)),
                text=["before", "after"],
                hovertemplate=f"{site}<br>ECE %{{text}} temperature scaling: %{{x:.4f}}<extra></extra>",
            )
        )
    labels = [s for s, _ in items]
    fig.update_layout(
        xaxis=dict(title_text="pixel ECE on the pixel sample (hollow: before, filled: after)", rangemode="tozero"),
        yaxis=dict(autorange="reversed", type="category", categoryorder="array", categoryarray=labels),
    )
    return charts._layout(fig, title, height=max(220, 100 + 40 * len(items)))


def area_agreement_figure(
    segmentation: Mapping, sites: Sequence[str], label: str, *, colors: Mapping[str, str] | None = None
) -> go.Figure:
    """Bland–Altman summary of the predicted against the reference area per site: the mean difference
    (predicted − reference) with its 95% limits of agreement (mean ± 1.96 SD of the per-case differences;
    Bland & Altman, Lancet 1986), and the line of no difference."""
    colors = dict(colors or charts.site_colors(sites))
    items = area_items(segmentation, sites, label)
    quantity, unit = area_quantity(segmentation)
    title = f"{quantity.capitalize()} agreement (Bland–Altman){f' — {label}' if label else ''}"
    if not items:
        why = (segmentation.get("area_agreement") or {}).get("reason")
        return charts._empty(
            title, f"No {quantity} agreement: {why}" if why else f"No {quantity} agreement in this bundle"
        )
    fig = go.Figure()
    for site, item in items:
        md, lo, hi = item.get("mean_difference"), item.get("loa_low"), item.get("loa_high")
        fig.add_trace(
            go.Scatter(
                x=[md],
                y=[site],
                mode="markers",
                name=site,
                showlegend=False,
                marker=dict(size=10, symbol="diamond", color=colors.get(site)),
                error_x=dict(
                    type="data",
                    symmetric=False,
                    array=[_gap(md, hi)],
                    arrayminus=[_gap(lo, md)],
                    thickness=1.5,
                    width=6,
                    color=colors.get(site),
                ),
                text=[f"mean difference {charts.fmt(md, 1)} {unit}, limits {charts.fmt(lo, 1)} to {charts.fmt(hi, 1)}"],
                hovertemplate=f"{site}<br>%{{text}}<extra></extra>",
            )
        )
    fig.add_vline(x=0, line=dict(color="#666", dash="dash", width=1))
    labels = [s for s, _ in items]
    fig.update_layout(
        xaxis=dict(title_text=f"predicted − reference {quantity} ({unit}): mean and 95% limits of agreement"),
        yaxis=dict(autorange="reversed", type="category", categoryorder="array", categoryarray=labels),
    )
    return charts._layout(fig, title, height=max(220, 100 + 40 * len(items)))


def _gap(low: Any, high: Any) -> float:
    """``high - low`` for an error bar; 0 (no bar) where either end is missing."""
    return 0.0 if low is None or high is None else float(high) - float(low)


def comparison_metrics(segmentation: Mapping) -> list[str]:
    """The metrics compared with the baseline (segmentation.json ``comparison``: per site ``n_matched``
    and one entry per metric), in :data:`METRIC_ORDER`."""
    comp = segmentation.get("comparison") or {}
    blocks = [comp.get("overall") or {}, *(comp.get("sites") or {}).values()]
    names = {m for b in blocks for m, e in (b or {}).items() if isinstance(e, Mapping) and "estimate" in e}
    return sorted(names, key=lambda k: (_rank(k), float(nsd_tolerance(k) or 0), k))


def comparison_rows(segmentation: Mapping, sites: Sequence[str]) -> list[tuple[str, Mapping]]:
    """``(site, delta block)`` per site of the comparison, then the pooled one ("all sites (pooled)")."""
    comp = segmentation.get("comparison") or {}
    rows = [(s, comp["sites"][s]) for s in sites if isinstance((comp.get("sites") or {}).get(s), Mapping)]
    if isinstance(comp.get("overall"), Mapping):
        rows.append(("all sites (pooled)", comp["overall"]))
    return rows


def comparison_figure(
    segmentation: Mapping, metric: str, sites: Sequence[str], *, colors: Mapping[str, str] | None = None
) -> go.Figure:
    """Per site (and pooled), the mean paired difference new − baseline of ``metric`` over the matched
    cases with its patient-clustered bootstrap interval and n matched, against the line of no difference."""
    colors = dict(colors or charts.site_colors(sites))
    comp = segmentation.get("comparison") or {}
    rows = []
    for site, block in comparison_rows(segmentation, sites):
        e = block.get(metric)
        if isinstance(e, Mapping):
            rows.append(
                {"label": site, "estimate": e.get("estimate"), "ci_low": e.get("ci_low"), "ci_high": e.get("ci_high")}
                | {"color": colors.get(site, charts.POOLED_COLOR), "n": block.get("n_matched")}
            )
    better = "lower" if lower_is_better(metric) else "higher"
    fig = charts.forest_figure(
        rows,
        title=f"{metric_label(metric)}: new − {comp.get('baseline') or 'baseline'}",
        x_title=f"difference ({better} is better for the new model)",
        reference=0.0,
    )
    # the window holds every interval and the line of no difference (autorange follows the markers)
    ends = [0.0] + [float(v) for r in rows for v in (r["ci_low"], r["ci_high"], r["estimate"]) if v is not None]
    pad = 0.08 * ((max(ends) - min(ends)) or 1.0)
    fig.update_layout(xaxis_range=[min(ends) - pad, max(ends) + pad])
    return fig


# ---- overlays ---------------------------------------------------------------------------------------


def unpack_mask(packed: bytes, height: int, width: int) -> np.ndarray:
    """A boolean ``[height, width]`` mask from ``np.packbits`` of its row-major pixels (overlays.parquet)."""
    n = int(height) * int(width)
    raw = bytes(packed)
    if n <= 0 or len(raw) != (n + 7) // 8:  # unpackbits would pad a short buffer with zeros: a false mask
        raise ValueError(f"a packed mask of {len(raw)} bytes cannot hold {height} x {width} pixels")
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=n)
    return bits.reshape(int(height), int(width)).astype(bool)


def outline(mask: np.ndarray) -> np.ndarray:
    """The boundary pixels of ``mask``: foreground pixels with a 4-connected neighbour outside the mask
    (or on the frame's edge)."""
    m = np.asarray(mask, dtype=bool)
    padded = np.pad(m, 1, constant_values=False)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return m & ~inner


def _hex_rgb(color: str) -> np.ndarray:
    h = color.lstrip("#")
    return np.array([int(h[k : k + 2], 16) for k in (0, 2, 4)], dtype=np.uint8)


def _background(picture: bytes | None, height: int, width: int) -> np.ndarray:
    """The case's picture (any PNG) as grey RGB at the overlay's size, or a dark blank frame."""
    if picture:
        from PIL import Image

        try:
            img = Image.open(io.BytesIO(picture)).convert("L").resize((width, height), Image.Resampling.BILINEAR)
            grey = np.asarray(img, dtype=np.uint8)
            return np.repeat(grey[:, :, None], 3, axis=2)
        except (OSError, ValueError):  # an unreadable picture: the outlines alone still tell the story
            pass
    return np.full((height, width, 3), 40, dtype=np.uint8)


def overlay_png(ref: np.ndarray, pred: np.ndarray, picture: bytes | None = None, *, scale: int = 2) -> bytes:
    """A PNG of the reference (green) and predicted (vermillion) outlines drawn over the case's picture
    (grey, resized to the masks) or a dark frame, enlarged ``scale`` times by nearest neighbour. Where the
    outlines coincide the prediction is drawn on top."""
    from PIL import Image

    ref, pred = np.asarray(ref, dtype=bool), np.asarray(pred, dtype=bool)
    if ref.shape != pred.shape or ref.ndim != 2:
        raise ValueError(f"reference {ref.shape} and prediction {pred.shape} masks must be 2D of one shape")
    rgb = _background(picture, *ref.shape)
    rgb[outline(ref)] = _hex_rgb(REFERENCE_COLOR)
    rgb[outline(pred)] = _hex_rgb(PREDICTION_COLOR)
    img = Image.fromarray(rgb, mode="RGB")
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def overlay_from_row(row: Mapping[str, Any], picture: bytes | None = None) -> bytes | None:
    """:func:`overlay_png` of an overlays.parquet row (``height``, ``width``, packed ``ref`` and ``pred``),
    or None when the row's masks do not fit its size (shown as "overlay unreadable", never as a blank)."""
    try:
        h, w = int(row["height"]), int(row["width"])
        return overlay_png(unpack_mask(row["ref"], h, w), unpack_mask(row["pred"], h, w), picture)
    except (KeyError, TypeError, ValueError):
        return None


def overlay_caption(row: Mapping[str, Any]) -> str:
    """``case <id> · Dice 0.412 · HD95 19.8 mm`` for a worst case (the id as the bundle holds it: hashed
    unless the protocol keeps case ids)."""
    parts = [f"case {row.get('case_id')}"]
    if row.get("label"):
        parts.append(str(row["label"]))
    parts.append(f"Dice {charts.fmt(row.get('dice'), 3)}")
    if row.get("hd95_mm") is not None:
        parts.append(f"HD95 {charts.fmt(row.get('hd95_mm'), 1)} mm")
    return " · ".join(parts)
