"""The report's segmentation sections (``task: segmentation``), read from metrics.json, segmentation.json
and overlays.parquet only (figures: :mod:`validate.charts_segmentation`).

- **4. Segmentation**: per site (and per label) the mean and median of each per-case metric with its
  patient-clustered bootstrap interval, forest plots of Dice and HD95, the empty-mask policy, subgroups,
  and the model against its baseline when the run had one;
- **4.1 Worst cases**: the lowest-Dice cases per site with the reference and predicted outlines (ids as
  the bundle holds them: hashed unless the protocol keeps case ids), over the case's picture when the
  bundle carries one (``thumbnails/<site>/``), else over a blank frame;
- **5. Pixel calibration**: pixel ECE per site with its interval, the pixel reliability diagram, and
  temperature scaling (fitted on the development site) before and after;
- **5.1 Area agreement**: Bland–Altman mean difference and limits of agreement of the predicted area,
  the regression of predicted on reference area, and of the expected (Σp) on the reference area.

Each function takes the bundle and the report's figure collector (``figs.html(fig, caption)``) and
returns a section's HTML, or ``""`` when the bundle has nothing for it.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from validate import charts, charts_segmentation as seg, view

FOREST_METRICS = seg.FOREST_PAIR


def esc(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A table of pre-escaped cells; a cell starting with a digit, a dash or a sign is right-aligned."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' for c in r) + "</tr>" for r in rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{esc(title)}</h2>{body}</section>'


def segmentation_file(bundle) -> Mapping:
    """segmentation.json of the bundle, or ``{}`` (a bundle without it shows the metrics alone)."""
    path = Path(bundle.path) / "segmentation.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def site_order(bundle) -> list[str]:
    metrics = bundle.metrics or {}
    cohorts = bundle.sites or {}
    return view.site_order(list(cohorts.get("sites") or {}), list(metrics.get("sites") or {}))


def _labels(bundle) -> list[str]:
    return seg.labels_of(bundle.metrics or {}, segmentation_file(bundle))


def _label_title(label: str, labels: Sequence[str]) -> str:
    return f" — label {label}" if label and len(labels) > 1 else ""


# ---- 4. Segmentation -------------------------------------------------------------------------------


def _entry_cell(entry: Any, metric: str, reason: str | None = None) -> str:
    if not isinstance(entry, Mapping) or entry.get("estimate") is None:
        return f'<span class="insufficient" title="{esc(reason or "undefined")}">undefined</span>'
    return esc(charts.entry_text(entry, metric=metric))


def _n_cell(row: Mapping) -> str:
    text = esc(charts.fmt(row.get("n")))
    if row.get("n_patients") is not None:
        text += f" ({esc(charts.fmt(row['n_patients']))})"
    if row.get("n_excluded"):
        text += f", {esc(charts.fmt(row['n_excluded']))} excluded"
    if row.get("insufficient"):
        text += ' <span class="insufficient">insufficient</span>'
    return text


def _metric_table(
    rows: Sequence[Mapping], first: Sequence[tuple[str, str]], names: Sequence[str], level: float, *, medians: bool
) -> str:
    """One row per site (or subgroup): ``first`` columns (header, row key), cases (patients), and per
    metric of ``names`` its mean (and, with ``medians``, its median where any row has one), each with its
    interval."""
    headers = [h for h, _ in first] + ["Cases (patients)"]
    columns: list[tuple[str, str]] = []  # (entry key, metric for formatting)
    for m in names:
        columns.append((m, m))
        headers.append(f"{seg.metric_label(m)}: mean ({level:.0%} CI)")
        if medians and any(f"{m}_median" in r["entries"] for r in rows):
            columns.append((f"{m}_median", m))
            headers.append(f"{seg.metric_label(m)}: median")
    body = []
    for r in rows:
        cells = [esc(r[k]) for _, k in first] + [_n_cell(r)]
        for key, m in columns:
            cells.append(_entry_cell(r["entries"].get(key), m, (r.get("undefined") or {}).get(m)))
        body.append(cells)
    return _table(headers, body)


def _metric_tables(rows: Sequence[Mapping], first: Sequence[tuple[str, str]], level: float) -> str:
    """The headline metrics (Dice, HD95) with means and medians, then every other metric's mean."""
    names = seg.row_metrics(rows)
    head = [m for m in FOREST_METRICS if m in names]
    rest = [m for m in names if m not in head]
    out = _metric_table(rows, first, head, level, medians=True) if head else ""
    return out + (_metric_table(rows, first, rest, level, medians=False) if rest else "")


def _policy(segmentation: Mapping) -> str:
    policy = segmentation.get("policy") or {}
    if not policy:
        return ""
    text = policy.get("text") or (
        f"Empty masks: both empty → {policy.get('both', 'perfect')}; one empty → {policy.get('one', 'worst')}."
    )
    return f'<p class="policy"><b>Empty masks.</b> {esc(text)}</p>'


def segmentation_section(bundle, figs) -> str:
    """4. Segmentation: per-site tables and forest plots of the per-case metrics, the empty-mask policy,
    subgroups and the comparison with the baseline."""
    metrics = bundle.metrics or {}
    segmentation = segmentation_file(bundle)
    sites, labels = site_order(bundle), _labels(bundle)
    level = float(metrics.get("ci_level") or 0.95)
    colors = charts.site_colors(sites)
    out = [
        '<p class="note">Per case, the overlap (Dice, IoU, normalised surface Dice) and boundary distances in mm '
        "(Hausdorff, its 95th percentile HD95, average symmetric surface distance) between the predicted "
        f"mask (probability ≥ {esc(segmentation.get('threshold', 0.5))}) and the reference, at "
        f"the reference mask's native resolution and pixel spacing. Per site: the mean and the median over "
        f"cases, each with a {level:.0%} bootstrap interval that resamples patients within the site "
        f"({esc(metrics.get('n_bootstrap'))} replicates).</p>",
        _policy(segmentation),
    ]
    for label in labels:
        rows = seg.site_metric_rows(metrics, sites, label)
        if len(labels) > 1:
            out.append(f"<h3>Label {esc(label)}</h3>")
        out.append(_metric_tables(rows, [("Site", "site")], level))
        grid = [
            figs.html(seg.segmentation_forest(metrics, m, sites, label, colors=colors), _forest_caption(m, level))
            for m in FOREST_METRICS
            if any(m in r["entries"] for r in rows)
        ]
        if grid:
            out.append('<div class="grid2">' + "".join(grid) + "</div>")
        groups = seg.subgroup_metric_rows(metrics, label)
        if groups:
            out.append(f"<h3>Subgroups{esc(_label_title(label, labels))} (all sites)</h3>")
            out.append(_metric_tables(groups, [("Attribute", "attribute"), ("Value", "value")], level))
    out.append(_comparison(segmentation, sites, colors, figs, level))
    return _section("segmentation", "4. Segmentation", "".join(out))


def _forest_caption(metric: str, level: float) -> str:
    better = "lower" if seg.lower_is_better(metric) else "higher"
    return (
        f"Mean {seg.metric_label(metric)} per case at each site with its {level:.0%} patient-clustered "
        f"bootstrap interval and n cases; {better} is better. Hollow grey: too few cases for a trustworthy "
        "estimate."
    )


def _comparison(segmentation: Mapping, sites: Sequence[str], colors, figs, level: float) -> str:
    """The paired comparison with the baseline model: per site and pooled, new − baseline of each metric."""
    comp = segmentation.get("comparison")
    if not comp:
        return ""
    names = seg.comparison_metrics(segmentation)
    body = [
        [esc(site), esc(charts.fmt(block.get("n_matched")))] + [_entry_cell(block.get(m), m) for m in names]
        for site, block in seg.comparison_rows(segmentation, sites)
    ]
    unmatched = comp.get("n_unmatched")
    out = [
        f"<h3>Against the baseline ({esc(comp.get('baseline') or 'baseline')})</h3>",
        f'<p class="note">{esc(comp.get("difference") or "new − baseline")}, with its {level:.0%} '
        "patient-clustered bootstrap interval; cases matched by site, case and label"
        + (f" ({esc(charts.fmt(unmatched))} unmatched, left out)" if unmatched else "")
        + ". For Dice, IoU and NSD a positive difference favours the new model; for distances and errors a "
        "negative one does.</p>",
        _table(["Site", "Matched cases"] + [f"Δ {seg.metric_label(m)} ({level:.0%} CI)" for m in names], body),
    ]
    grid = [
        figs.html(seg.comparison_figure(segmentation, m, sites, colors=colors)) for m in FOREST_METRICS if m in names
    ]
    if grid:
        out.append('<div class="grid2">' + "".join(grid) + "</div>")
    return "".join(out)


# ---- 4.1 Worst cases -------------------------------------------------------------------------------


def _overlays(bundle) -> dict[tuple[str, str, str], Mapping]:
    """overlays.parquet rows by (site, case id, label); empty when the bundle has none."""
    path = Path(bundle.path) / "overlays.parquet"
    if not path.is_file():
        return {}
    import pandas as pd

    frame = pd.read_parquet(path)
    return {(str(r["site"]), str(r["case_id"]), str(r.get("label") or "")): r for r in frame.to_dict("records")}


def _picture(bundle, site: str, case_id: str) -> bytes | None:
    """The bundle's own picture of the case (``thumbnails/<site>/<name>.png``), through the one display
    decoder with its confinement; None when the bundle carries none."""
    from validate.thumbnails import picture_spec, thumbnail_name, thumbnail_png_or_none

    folder = Path(bundle.path) / "thumbnails" / site
    path = folder / f"{thumbnail_name(case_id)}.png"
    if not path.is_file():
        return None
    return thumbnail_png_or_none(path, picture_spec(), roots=[folder], size=256)


def overlay_tile(bundle, site: str, case: Mapping, overlay: Mapping | None) -> str:
    """One worst case: its overlay picture (or a note that the bundle keeps none, or an unreadable one)
    and its caption."""
    caption = f"<figcaption>{esc(seg.overlay_caption(case))}</figcaption>"
    png = None if overlay is None else seg.overlay_from_row(overlay, _picture(bundle, site, str(case.get("case_id"))))
    if png is None:
        why = "no overlay kept" if overlay is None else "overlay unreadable"
        return f'<figure class="overlay"><p class="note">{why}</p>{caption}</figure>'
    src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    alt = f"reference and predicted outlines of case {case.get('case_id')}"
    return (
        f'<figure class="overlay" data-case="{esc(case.get("case_id"))}"><img src="{src}" alt="{esc(alt)}">'
        f"{caption}</figure>"
    )


OVERLAY_CSS = (
    "<style>.overlays{display:flex;flex-wrap:wrap;gap:10px}figure.overlay{margin:0;font-size:12px;"
    "max-width:260px}figure.overlay img{width:256px;image-rendering:pixelated;border:1px solid #d9dde5}"
    "</style>"
)


def worst_cases_section(bundle, figs) -> str:
    """4.1 Worst cases: per site, the lowest-Dice cases with the reference and predicted outlines."""
    segmentation = segmentation_file(bundle)
    worst = segmentation.get("worst_cases") or {}
    if not worst:
        return ""
    overlays = _overlays(bundle)
    out = [
        OVERLAY_CSS,
        '<p class="note">The lowest-Dice cases of each site. Outlines: <b style="color:'
        f'{seg.REFERENCE_COLOR}">reference</b> and <b style="color:{seg.PREDICTION_COLOR}">prediction</b>, on '
        "the masks downsampled to at most 128 pixels a side, over the case's picture where the bundle carries "
        "one. Case identifiers are as the bundle holds them (keyed hashes unless the protocol keeps case "
        "ids).</p>",
    ]
    for site in site_order(bundle) + [s for s in worst if s not in site_order(bundle)]:
        cases = seg.worst_case_rows(segmentation, site)
        if not cases:
            continue
        tiles = [
            overlay_tile(bundle, site, c, overlays.get((site, str(c.get("case_id")), str(c.get("label") or ""))))
            for c in cases
        ]
        out.append(f'<h3>{esc(site)}</h3><div class="overlays">{"".join(tiles)}</div>')
    return _section("segmentation-worst", "4.1 Worst cases", "".join(out))


# ---- 5. Pixel calibration ----------------------------------------------------------------------------


def pixel_calibration_section(bundle, figs) -> str:
    """5. Pixel calibration: pixel ECE per site, the reliability diagram, temperature scaling."""
    segmentation = segmentation_file(bundle)
    pixels = segmentation.get("pixel_calibration") or {}
    if not pixels and not segmentation.get("temperature"):
        return ""
    sites, labels = site_order(bundle), _labels(bundle)
    colors = charts.site_colors(sites)
    temp = segmentation.get("temperature") or {}
    level = float((bundle.metrics or {}).get("ci_level") or 0.95)
    bins = (segmentation.get("pixel_calibration") or {}).get("bins", 20)
    out = [
        '<p class="note">Are the pixel probabilities trustworthy? Pixel ECE: over every pixel of every case at '
        f"native resolution, {esc(bins)} equal-width probability bins, the pixel-weighted mean of |observed "
        "foreground fraction − mean predicted probability| (Naeini et al. 2015); its "
        f"{level:.0%} interval resamples cases (clustered bootstrap). Temperature scaling (Guo et al. 2017): one "
        f"temperature T = {esc(charts.fmt(temp.get('temperature'), 3))} fitted by the negative log-likelihood "
        f"of the pixel sample of {esc(', '.join(map(str, temp.get('fit_on') or [])) or 'the development site')}"
        "; ECE before and after on each site's pixel sample. A site whose ECE stays high after the "
        "development site's temperature is miscalibrated in a way one temperature does not fix.</p>",
    ]
    if pixels.get("reason") and not pixels.get("sites"):
        out.append(f"<p>Pixel ECE not computed: {esc(pixels['reason'])}.</p>")
    if not temp:
        out.append("<p>No temperature scaling in this bundle (it needs the pixel sample of a development site).</p>")
    for label in labels:
        if len(labels) > 1:
            out.append(f"<h3>Label {esc(label)}</h3>")
        rows = []
        temps = dict(seg.temperature_items(segmentation, sites, label))
        for site, item in seg.pixel_calibration_items(segmentation, sites, label):
            t = temps.get(site) or {}
            rows.append(
                [esc(site), esc(charts.entry_text(item.get("ece"), 4))]
                + [esc(charts.fmt(item.get("n_pixels"))), esc(charts.fmt(item.get("n_cases")))]
                + [esc(charts.fmt(t.get("ece_before"), 4)), esc(charts.fmt(t.get("ece_after"), 4))]
            )
        heads = ["Site", f"Pixel ECE ({level:.0%} CI)", "Pixels", "Cases", "ECE before T", "ECE after T"]
        out.append(_table(heads, rows))
        grid = [
            figs.html(
                seg.pixel_reliability_figure(segmentation, sites, label, colors=colors),
                "Per site: the observed foreground fraction of the pixels in each probability bin against "
                "their mean predicted probability; on the dotted diagonal the probabilities are calibrated. "
                "Larger markers: more pixels.",
            ),
            figs.html(
                seg.temperature_figure(segmentation, sites, label, colors=colors),
                "Pixel ECE on each site's pixel sample before (hollow) and after (filled) the development "
                "site's temperature.",
            ),
        ]
        out.append('<div class="grid2">' + "".join(grid) + "</div>")
    return _section("segmentation-calibration", "5. Pixel calibration", "".join(out))


# ---- 5.1 Area agreement --------------------------------------------------------------------------------


def area_section(bundle, figs) -> str:
    """5.1 Area agreement: Bland–Altman and regression of the predicted (and expected) on the true area
    (volume for 3D masks)."""
    segmentation = segmentation_file(bundle)
    section = segmentation.get("area_agreement")
    if not section:
        return ""
    sites, labels = site_order(bundle), _labels(bundle)
    colors = charts.site_colors(sites)
    quantity, unit = seg.area_quantity(segmentation)
    out = [
        f'<p class="note">Does the model measure the structure\'s {quantity} without bias? Bland–Altman (Lancet '
        f"1986): the mean per-case difference of the predicted minus the reference {quantity} and its 95% limits "
        "of agreement (mean ± 1.96 SD); the least-squares line of the predicted on the reference "
        f"{quantity} (slope 1, intercept 0: no proportional or fixed bias); and the same for the expected "
        f"{quantity} (the sum of pixel probabilities × pixel size), which tells calibration of the {quantity} "
        "itself.</p>",
    ]
    if section.get("reason") and not section.get("sites"):
        out.append(f"<p>Not computed: {esc(section['reason'])}.</p>")
    for label in labels:
        items = seg.area_items(segmentation, sites, label)
        if not items:
            continue
        if len(labels) > 1:
            out.append(f"<h3>Label {esc(label)}</h3>")
        out.append(_area_table(items, quantity, unit))
        out.append(
            figs.html(
                seg.area_agreement_figure(segmentation, sites, label, colors=colors),
                f"Per site: mean difference of the predicted minus the reference {quantity} (diamond) and the "
                "95% limits of agreement (bar); dashed: no difference.",
            )
        )
    return _section("segmentation-area", f"5.1 {quantity.capitalize()} agreement", "".join(out))


def _area_table(items: Sequence[tuple[str, Mapping]], quantity: str, unit: str) -> str:
    rows = []
    for site, a in items:
        ev = a.get("expected_vs_true") or {}
        rows.append(
            [esc(site), esc(charts.fmt(a.get("n"))), esc(charts.fmt(a.get("mean_difference"), 1))]
            + [esc(f"{charts.fmt(a.get('loa_low'), 1)} to {charts.fmt(a.get('loa_high'), 1)}")]
            + [esc(charts.fmt(a.get("slope"), 3)), esc(charts.fmt(a.get("intercept"), 1))]
            + [esc(charts.fmt(ev.get("slope"), 3)), esc(charts.fmt(ev.get("intercept"), 1))]
        )
    heads = ["Site", "Cases", f"Mean difference ({unit})", f"95% limits of agreement ({unit})", "Slope"]
    heads += [f"Intercept ({unit})", f"Expected-{quantity} slope", f"Expected-{quantity} intercept ({unit})"]
    return _table(heads, rows)


#: The report's segmentation sections in reading order, ``(anchor, navigation title, builder)``.
SECTIONS = (
    ("segmentation", "Segmentation", segmentation_section),
    ("segmentation-worst", "Worst cases", worst_cases_section),
    ("segmentation-calibration", "Pixel calibration", pixel_calibration_section),
    ("segmentation-area", "Area agreement", area_section),
)
