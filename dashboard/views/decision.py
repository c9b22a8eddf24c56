"""Clinical utility and precision: would using the model do more good than harm at each site (net benefit
and the decision curve, a site selector), and is each site's sample large enough to trust its numbers."""

import streamlit as st

from dashboard import ui, utility

run = ui.current_run()
ui.page_header(
    "Clinical utility and precision",
    run,
    "Would acting on the model's predictions do more good than harm? Net benefit counts the true positives "
    "per patient, minus the false positives weighted by how much worse a needless treatment is judged than a "
    "missed case (the odds of the threshold). Below: is each site large enough for its intervals to be "
    "as narrow as the protocol asks?",
)

if not utility.available(run):
    ui.missing(
        "Net benefit and precision",
        "the protocol declared no `decision` thresholds and the bundle has no precision summary",
    )
    st.stop()

sites = utility.decision_sites(run)
if sites:
    st.subheader("Net benefit")
    site = st.selectbox("Site", sites, key="decision-site", format_func=utility.site_label)
    fig = utility.decision_figure(run, site)
    if fig is None:
        st.info("No decision curve is stored for this site.")
    else:
        where = (
            "All sites pooled: the curve mixes the sites' prevalences."
            if site == utility.POOLED_KEY
            else "Each site at its own prevalence (what this site would get)."
        )
        ui.figure(
            fig,
            f"{where} Solid: the model; dashed: treat all; dotted: treat none (net benefit 0); shaded: "
            "pointwise bootstrap intervals. Diamonds: the protocol's decision thresholds with their intervals. "
            "Where the model's curve lies above both defaults, using it does more good than either.",
            key="decision-curve",
        )
    display, numbers = utility.decision_table(run, site)
    ui.table(
        display,
        f"net-benefit-{site}",
        csv=numbers,
        run=run,
        caption="Estimates with bootstrap percentile intervals. “Beats both defaults”: the share of bootstrap "
        "replicates in which the model beats both defaults — not a significance test. Interventions avoided: "
        "net, per 100 patients, compared with treating all.",
    )
else:
    ui.missing(
        "Net benefit",
        "the protocol declares no decision thresholds (`decision: {thresholds: [0.1, 0.2]}` adds net benefit "
        "and the decision curve)",
    )

if utility.has_precision(run):
    st.subheader("Sample size and precision")
    display, numbers = utility.precision_table(run)
    ui.table(
        display,
        "precision",
        csv=numbers,
        run=run,
        caption="For each criterion: the width of the interval the site achieved against the protocol's target, "
        "and the sample size the target would need at the site's prevalence, C-statistic and linear-predictor "
        "distribution (Riley et al. 2021; 2024). The count floor (min_cases, min_events) still applies.",
    )
    for where, why in utility.precision_reasons(run).items():
        st.markdown(f"- **{ui.md(where)}**: {ui.md(why)}")
