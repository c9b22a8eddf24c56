"""Across hospitals: the random-effects synthesis of the sites (metrics.json ``synthesis``), its forest
plot with the diamond and the prediction interval for the next hospital."""

import streamlit as st

from dashboard import synthesis, ui
from validate import charts

run = ui.current_run()
ui.page_header(
    "Across hospitals",
    run,
    "What will the next hospital see? Each site's result pooled by a random-effects meta-analysis: the "
    "average site with its confidence interval, how much the sites differ (τ², I²), and the prediction "
    "interval — where the next hospital's value is expected to lie.",
)

pooled = charts.synthesis_metrics(run.metrics)
if not pooled:
    ui.missing(
        "A synthesis across sites",
        "the run pooled no metric across sites (the protocol's `synthesis` section chooses the sites; "
        "at least two are needed)",
    )
    st.stop()

syn = run.metrics["synthesis"]
level = float(syn.get("ci_level") or 0.95)
sites = ", ".join(str(s) for s in syn.get("sites") or []) or "none"
st.markdown(
    f"Pooled over {ui.md(syn.get('role_rule') or 'the chosen sites')}: **{ui.md(sites)}** · method "
    f"{ui.md(syn.get('method', 'REML'))}, {level:.0%} CI "
    f"{'Hartung–Knapp–Sidik–Jonkman' if syn.get('interval', 'hksj') == 'hksj' else 'normal (z)'}."
)
display, numeric = synthesis.summary_frames(syn)
ui.table(
    display,
    "synthesis",
    csv=numeric,
    run=run,
    caption=f"One row per pooled metric. Pooled: the average site with its {level:.0%} confidence interval. "
    f"Prediction interval: where the next hospital's value is expected to lie, {level:.0%} (Higgins et al. "
    "2009); it needs at least 3 sites. τ²: the variance between sites on the scale the metric is pooled on; "
    "I²: the share of the variation between sites not due to chance; Q: Cochran's test of equal sites.",
)

metric = st.selectbox("Metric", pooled, format_func=charts.synthesis_metric_label, key="synthesis-metric")
roles = {s: run.site_role(s) for s in run.sites}
entry = syn["metrics"][metric]
if entry.get("pi_low") is None:
    st.info(f"No prediction interval for {charts.synthesis_metric_label(metric)}: {ui.md(entry.get('pi_reason'))}.")
ui.figure(
    charts.synthesis_forest_figure(run.metrics, metric, roles=roles),
    charts.synthesis_caption(syn, metric),
    key="synthesis-forest",
)
site_display, site_numeric = synthesis.site_frames(run.metrics, metric, roles)
ui.table(
    site_display,
    f"synthesis-{metric}",
    csv=site_numeric,
    run=run,
    caption="The rows of the forest plot: each pooled site's input to the synthesis (its estimate with a "
    f"{level:.0%} Wald interval on the pooling scale, transformed back), and sites outside the synthesis "
    "with their own interval.",
)
