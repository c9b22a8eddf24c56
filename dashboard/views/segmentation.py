"""Segmentation: per-site overlap and boundary distances with intervals, the worst cases with their
outlines, pixel calibration with temperature scaling, and the agreement of the predicted area."""

import streamlit as st

from dashboard import segmentation, ui
from validate import charts, charts_segmentation as seg

run = ui.current_run()
ui.page_header(
    "Segmentation",
    run,
    "How well does the model outline the structure at every site? Per case: overlap (Dice, IoU, surface "
    "Dice) and boundary distances in mm; per site the mean and median over cases, each with a "
    f"{run.ci_level:.0%} interval that resamples patients.",
)
if run.task != "segmentation":
    ui.missing("A segmentation analysis", f"the run's task is {run.task}, not segmentation")
    st.stop()

info = segmentation.segmentation(run)
sites = run.sites
colors = run.site_colors
level = run.ci_level
labels = seg.labels_of(run.metrics, info)
label = labels[0]
if len(labels) > 1:
    label = st.selectbox("Label", labels, key="segmentation-label")

policy = (info.get("policy") or {}).get("text")
if policy:
    st.info(f"**Empty masks.** {ui.md(policy)}", icon=":material/rule:")

# ---- per site ----------------------------------------------------------------------------------------
st.subheader("Per site")
rows = seg.site_metric_rows(run.metrics, sites, label)
display, numeric = segmentation.metric_frames(rows, [("Site", "site")], level)
ui.table(
    display,
    f"segmentation-sites-{label}",
    csv=numeric,
    run=run,
    caption=f"One row per site, then all sites pooled: cases (patients), and per metric the mean and the "
    f"median over cases with {level:.0%} patient-clustered bootstrap intervals. Dice, IoU and NSD: higher is "
    "better (1 perfect); distances and errors in mm or mm²: lower is better.",
)
present = seg.row_metrics(rows)
cols = st.columns(2)
for col, metric in zip(cols, seg.FOREST_PAIR, strict=True):
    if metric in present:
        with col:
            ui.figure(
                seg.segmentation_forest(run.metrics, metric, sites, label, colors=colors),
                f"Mean {seg.metric_label(metric)} per case with its {level:.0%} interval and n cases; hollow grey: "
                "too few cases to judge.",
                key=f"segmentation-forest-{metric}",
            )
others = [m for m in present if m not in seg.FOREST_PAIR]
if others:
    metric = st.selectbox("Another metric", others, format_func=seg.metric_label, key="segmentation-metric")
    ui.figure(
        seg.segmentation_forest(run.metrics, metric, sites, label, colors=colors),
        f"Mean {seg.metric_label(metric)} per case with its {level:.0%} interval and n cases.",
        key="segmentation-forest-other",
    )
groups = seg.subgroup_metric_rows(run.metrics, label)
if groups:
    st.subheader("Subgroups (all sites)")
    g_display, g_numeric = segmentation.metric_frames(groups, [("Attribute", "attribute"), ("Value", "value")], level)
    ui.table(g_display, f"segmentation-subgroups-{label}", csv=g_numeric, run=run)

if info.get("comparison"):
    comp = info["comparison"]
    st.subheader(f"Against the baseline ({ui.md(comp.get('baseline') or 'baseline')})")
    c_display, c_numeric = segmentation.comparison_frames(info, sites, level)
    ui.table(
        c_display,
        "segmentation-comparison",
        csv=c_numeric,
        run=run,
        caption=f"Mean paired difference model − baseline over the same cases, {level:.0%} patient-clustered "
        "bootstrap interval. Dice, IoU, NSD: positive favours the model; distances and errors: negative does.",
    )
    names = seg.comparison_metrics(info)
    if names:
        metric = st.selectbox("Compared metric", names, format_func=seg.metric_label, key="segmentation-compared")
        ui.figure(
            seg.comparison_figure(info, metric, sites, colors=colors),
            "Per site: the difference with its interval; dashed: no difference.",
            key="segmentation-comparison-forest",
        )

# ---- worst cases -------------------------------------------------------------------------------------
st.subheader("Worst cases")
worst_sites = [s for s in sites if seg.worst_case_rows(info, s, label)]
if not worst_sites:
    ui.missing("Worst cases", "segmentation.json lists none (segmentation.worst_cases in the protocol keeps them)")
else:
    site = st.selectbox("Site", worst_sites, key="segmentation-worst-site")
    st.caption(
        f"The lowest-Dice cases at {ui.md(site)}. Outlines: green, the reference; vermillion, the prediction "
        "(masks downsampled to at most 128 pixels a side), over the case's picture when the bundle carries "
        "one. Case ids as the bundle holds them (keyed hashes unless the protocol keeps case ids)."
    )
    cases = seg.worst_case_rows(info, site, label)
    tiles = st.columns(min(4, len(cases)))
    for i, case in enumerate(cases):
        with tiles[i % len(tiles)]:
            png = segmentation.overlay_png(run, site, case, label)
            if png is None:
                st.caption(f"{seg.overlay_caption(case)} (no overlay kept)")
            else:
                st.image(png, caption=seg.overlay_caption(case), output_format="PNG")  # JPEG would smear the outlines

# ---- pixel calibration -------------------------------------------------------------------------------
st.subheader("Pixel calibration")
p_display, p_numeric = segmentation.pixel_frames(info, sites, label, level)
if p_display.empty:
    why = (info.get("pixel_calibration") or {}).get("reason") or "segmentation.json has no pixel_calibration section"
    ui.missing("Pixel calibration", why)
else:
    temp = info.get("temperature") or {}
    ui.table(
        p_display,
        f"segmentation-pixels-{label}",
        csv=p_numeric,
        run=run,
        caption="Pixel ECE over every pixel of every case (20 equal-width bins), its interval resampling cases. "
        f"Temperature T = {charts.fmt(temp.get('temperature'), 3)} fitted on "
        f"{ui.md(', '.join(map(str, temp.get('fit_on') or [])) or 'the development site')}'s pixel sample; "
        "ECE before and after on each site's pixel sample.",
    )
    cols = st.columns(2)
    with cols[0]:
        ui.figure(
            seg.pixel_reliability_figure(info, sites, label, colors=colors),
            "Observed foreground fraction against the mean predicted probability of each bin; on the diagonal "
            "the probabilities are calibrated.",
            key="segmentation-reliability",
        )
    with cols[1]:
        ui.figure(
            seg.temperature_figure(info, sites, label, colors=colors),
            "Pixel ECE before (hollow) and after (filled) the development site's temperature.",
            key="segmentation-temperature",
        )

# ---- area agreement ----------------------------------------------------------------------------------
quantity, unit = seg.area_quantity(info)
st.subheader(f"{quantity.capitalize()} agreement")
a_display, a_numeric = segmentation.area_frames(info, sites, label)
if a_display.empty:
    why = (info.get("area_agreement") or {}).get("reason") or "segmentation.json has no area_agreement section"
    ui.missing(f"{quantity.capitalize()} agreement", why)
else:
    ui.table(
        a_display,
        f"segmentation-area-{label}",
        csv=a_numeric,
        run=run,
        caption=f"Bland–Altman: mean of predicted − reference {quantity} and its 95% limits of agreement; the "
        f"line of the predicted (and of the expected, Σp) {quantity} on the reference {quantity} (slope 1, "
        "intercept 0: no bias).",
    )
    ui.figure(
        seg.area_agreement_figure(info, sites, label, colors=colors),
        "Diamond: mean difference; bar: 95% limits of agreement; dashed: no difference.",
        key="segmentation-area",
    )
