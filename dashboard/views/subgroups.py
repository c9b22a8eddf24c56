"""Subgroups: forest plots with intervals, a site x subgroup heatmap of a chosen metric, insufficient cells marked."""

import streamlit as st

from dashboard import figures, tables, ui

run = ui.current_run()
ui.page_header(
    "Subgroups",
    run,
    "Does the model work as well for every patient group? Each group's metric with its "
    "interval, pooled over sites and at each site, and how far it is from its site's own value.",
)

names = tables.subgroup_names(run)
if not names:
    ui.missing("Subgroup results", "the protocol declares no subgroups")
    st.stop()
blocks = [b for groups in (run.metrics.get("subgroups") or {}).values() for b in groups.values()]
metrics = tables.metric_names(blocks) or tables.key_metrics(run)
c1, c2 = st.columns(2)
attribute = c1.selectbox("Subgroup", names, key="subgroups-attribute")
default = tables.key_metrics(run)[0] if tables.key_metrics(run) else metrics[0]
metric = c2.selectbox(
    "Metric",
    metrics,
    index=metrics.index(default) if default in metrics else 0,
    format_func=tables.label,
    key="subgroups-metric",
)

levels = ["overall"] if (run.subgroups or {}).get("overall") else []  # none in a site or combined bundle
levels += [s for s in run.sites if s in ((run.subgroups or {}).get("sites") or {})]
where = st.selectbox(
    "Where", levels, format_func=lambda s: "all sites pooled" if s == "overall" else f"site {s}", key="subgroups-where"
)
where_text = "all sites pooled" if where == "overall" else f"at site {where}"
fig = figures.subgroup_forest(run, attribute, metric, site=where)
if fig is not None:
    ui.figure(
        fig,
        f"{tables.label(metric)} for each {attribute} group ({where_text}), with its "
        f"{run.ci_level:.0%} interval; the dashed line marks the value over all of these patients. Hollow grey "
        "markers have too few cases or events for a trustworthy estimate: read their bars as 'unknown', "
        "not as 'bad'.",
        key="subgroups-forest",
    )
fig = figures.gap_forest(run, attribute, metric, site=where)
if fig is not None and any(t.get("x") for t in fig.to_plotly_json().get("data", []) if t.get("type") == "scatter"):
    ui.figure(
        fig,
        f"The gap between each group and all patients {where_text}: group minus everyone, with a paired "
        "bootstrap interval. A bar that stays clear of the zero line means the group really fares differently.",
        key="subgroups-gap",
    )

fig = figures.subgroup_heatmap(run, attribute, metric)
if fig is not None:
    ui.figure(
        fig,
        f"{tables.label(metric)} at each site (rows) for each {attribute} group (columns), with its "
        "interval and n in the cell. Grey cells labelled insufficient have too little data to judge; compare "
        "colours down a column to see whether a group fares worse at one hospital only or everywhere.",
        key="subgroups-heatmap",
    )

display, numeric = tables.subgroup_table(run, attribute, metric)
ui.table(
    display,
    f"subgroups-{attribute}-{metric}",
    csv=numeric,
    run=run,
    caption="Rows 'All sites' pool every site; the other rows are per site. 'Gap to site' is the group's value "
    "minus its site's overall value, with a bootstrap interval: an interval excluding 0 means the "
    "group really differs from the rest of that site.",
)
