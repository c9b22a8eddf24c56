"""Calibration methods: method x site comparison, the sample-size curve, the transfer matrix, the recommendation."""

import streamlit as st

from dashboard import figures, tables, ui

run = ui.current_run()
ui.page_header(
    "Calibration methods",
    run,
    "Which recalibration should ship? Each method was fitted on the "
    "fitting site(s) and judged on cases it did not see.",
)

cal = run.calibration
if not cal or not cal.get("methods"):
    ui.missing("calibration.json", "no calibration methods were compared in this run")
    st.stop()

fit_on = ui.md(", ".join(cal.get("fit_on") or []) or "—")
recommended = cal.get("recommended")
if recommended:
    why = cal.get("recommendation_note") or cal.get("recommended_reason") or ""
    note = f" Note: {ui.md(why)}" if why else ""
    st.success(
        f"**Recommended: {ui.md(recommended)}** (design {ui.md(cal.get('design', '—'))}, fitted on {fit_on}).{note}",
        icon=":material/recommend:",
    )
else:
    st.info(f"No method is recommended (design {ui.md(cal.get('design', '—'))}, fitted on {fit_on}).")

blocks = [b for m in cal["methods"].values() for b in (m.get("sites") or {}).values()]
metrics = tables.metric_names(blocks)
preferred = [
    m for m in ("ece", "calibration_slope", "calibration_intercept", "brier", "log_loss", "ici") if m in metrics
]
metric = st.selectbox(
    "Metric", preferred + [m for m in metrics if m not in preferred], format_func=tables.label, key="calibration-metric"
)

fig = figures.method_comparison(run, metric)
if fig is not None:
    ui.figure(
        fig,
        f"{tables.label(metric)} of each method (colours) at each evaluation site, with intervals. "
        "'none' (grey) is the model as shipped; the recommended method is drawn as a larger diamond, and hollow "
        "markers have too little data to judge. A method helps at a site when it sits closer to the ideal "
        "value (0 for errors, 1 for the slope) than 'none' does and the intervals do not overlap much.",
        key="calibration-methods",
    )

display, numeric = tables.calibration_table(cal, metric)
ui.table(
    display,
    f"calibration-{metric}",
    csv=numeric,
    run=run,
    caption="Each method at each evaluation site, on cases not used for fitting, with its interval.",
)
ui.table(
    tables.calibration_params_table(cal),
    "calibration-parameters",
    run=run,
    caption="What each method learned. Temperature T: probabilities = softmax(logits / T); T > 1 softens "
    "over-confident predictions.",
)

designs = cal.get("designs") or {}
if designs:
    st.subheader("How well does recalibration travel?")
    design_metric = st.selectbox(
        "Metric for the designs below",
        list(figures.DESIGN_METRICS),
        index=list(figures.DESIGN_METRICS).index(metric) if metric in figures.DESIGN_METRICS else 0,
        format_func=tables.label,
        key="calibration-design-metric",
    )

    if designs.get("local"):
        display, numeric = tables.local_design_table(designs["local"], design_metric)
        ui.table(
            display,
            f"calibration-local-{design_metric}",
            csv=numeric,
            run=run,
            caption=f"Local design: each site recalibrated on a random {designs['local'].get('fit_fraction', 0.5):.0%} "
            f"of its own cases and judged on the rest, {designs['local'].get('repeats')} times. The mean "
            "and the range of the middle 95 % of repeats, and how often the method beat no recalibration "
            "(on log loss).",
        )

    ss_sites = figures.sample_size_sites(run)
    if ss_sites:
        chosen_sites = st.multiselect(
            "Sites (sample-size curve)", ss_sites, default=ss_sites[:2], key="calibration-ss-sites"
        )
        fig = figures.sample_size_curve(run, design_metric, sites=chosen_sites)
        if fig is not None:
            ui.figure(
                fig,
                f"How many local cases a site needs to recalibrate: {tables.label(design_metric)} after "
                "fitting each method on n local cases (x, log scale) and judging it on the rest, repeated; the band "
                "spans the middle 95 % of repeats and the dotted line is the model without recalibration. Where a "
                "curve drops below the dotted line, that many local cases are enough; where it flattens, more "
                "buy little.",
                key="calibration-sample-size",
            )

    t_methods = figures.transfer_methods(run)
    if t_methods:
        default_method = recommended if recommended in t_methods else t_methods[0]
        t_method = st.selectbox(
            "Method (transfer matrix)",
            t_methods,
            index=t_methods.index(default_method),
            key="calibration-transfer-method",
        )
        fig = figures.transfer_matrix(run, design_metric, t_method)
        if fig is not None:
            ui.figure(
                fig,
                "Fitted at one site (rows), used at another (columns): each cell is the metric at the "
                "column's site. A column that stays good whatever the row means a calibration fitted elsewhere "
                "transfers to that site; a column that is bad everywhere needs its own local data.",
                key="calibration-transfer",
            )
