"""Reliability: the reliability diagram with an interval band and a histogram of predictions, per site, for the
uncalibrated model and each calibrated variant; a subgroup filter."""

import streamlit as st

from dashboard import figures, tables, ui

run = ui.current_run()
ui.page_header(
    "Reliability",
    run,
    "Is the model's confidence honest? When it says 30 %, do about 30 % of those patients have the disease?",
)

options = figures.reliability_options(run)
if not options.sites:
    ui.missing("Reliability curves (curves.json)", "this run did not store reliability bins")
    st.stop()

c1, c2, c3 = st.columns(3)
site = c1.selectbox("Site", options.sites, key="reliability-site")
methods = options.methods_for(site)
method = c2.selectbox(
    "Calibration", methods, key="reliability-method", format_func=lambda m: "none (as shipped)" if m == "none" else m
)
groups = options.groups_for(site, method)
group = c3.selectbox(
    "Patients", groups, key="reliability-group", format_func=lambda g: "all" if g is None else f"{g[0]} = {g[1]}"
)

fig = figures.reliability(run, site, method, group)
if fig is None:
    st.info("No reliability curve is stored for this combination.")
else:
    ui.figure(
        fig,
        "Dots: patients grouped by predicted risk (x) against the share who actually had the disease (y); "
        "the band around the dots is each group's confidence interval (Wilson). On the diagonal the model is honest; "
        "below it the model over-estimates risk, above it under-estimates; the dotted curve is a smooth through all "
        "patients, with its bootstrap band: pointwise, not simultaneous (each risk's interval holds on its own; "
        "the whole curve can stray outside it in places). The bars "
        "underneath count the patients at each predicted risk (coloured: with the disease, grey: without): a "
        "curve is only trustworthy where there are many.",
        key="reliability-diagram",
    )

block = figures.reliability_block(run, site, method, group)
if block:
    keys = [
        m
        for m in ("ece", "ici", "eavg", "e90", "emax", "calibration_slope", "calibration_intercept", "brier")
        if m in block
    ]
    import pandas as pd

    rows = [{"Metric": tables.label(m), "Estimate (CI)": tables.interval_text(block.get(m))} for m in keys]
    ui.table(
        pd.DataFrame(rows),
        f"reliability-{site}-{method}",
        run=run,
        caption=f"Calibration summary for {site} ({method}): n = {block.get('n')}, events = {block.get('n_events')}.",
    )

fig = figures.calibration_forest(run)
if fig is not None:
    st.subheader("Calibration slope and intercept, all sites")
    ui.figure(
        fig,
        "Left: calibration slope per site (1 is ideal; below 1 the predictions are too extreme, above 1 "
        "too timid). Right: calibration intercept (0 is ideal; below 0 the model predicts too much risk on "
        "average, above 0 too little). Hollow grey markers: too little data to judge.",
        key="reliability-forest",
    )
