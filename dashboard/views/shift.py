"""Shift and drift: what differs at each external site from the development site, and whether
performance moves over time."""

import pandas as pd
import streamlit as st

from dashboard import figures, tables, ui

run = ui.current_run()
ui.page_header(
    "Shift and drift",
    run,
    "Why might a site score differently? Each external site is compared with the "
    "development site on its labels, patients, the model's scores and (for images) the images; then, "
    "where cases carry dates, each month is compared with the first months.",
)

shift = run.shift
if not shift:
    ui.missing("shift.json", "this run has no shift analysis")
    st.stop()

if not shift.get("sites") and not (shift.get("drift") or {}).get("sites"):
    st.info(f"This run has no site comparison or drift analysis: {ui.md(shift.get('reason') or 'nothing to compare')}.")
    st.stop()

dev = shift.get("development") or {}
alpha = shift.get("alpha", 0.05)
correction = {"holm": "Holm (family-wise error)", "bh": "Benjamini–Hochberg (false discovery rate)"}.get(
    shift.get("correction"), shift.get("correction") or "—"
)
st.markdown(
    f"Reference: **{ui.md(', '.join(dev.get('sites') or []) or '—')}** (n = {dev.get('n', '—')}, prevalence "
    f"{tables.fmt(tables.triplet(dev.get('prevalence'))[0])}). A difference is *flagged* when its p-value, "
    f"corrected for the number of tests at that site by {correction}, is below {alpha}; it is *material* when "
    "it is flagged and also larger than its practical threshold."
)

rows = []
for site, s in (shift.get("sites") or {}).items():
    top = (s.get("ranking") or [{}])[0] if s.get("ranking") else {}
    rows.append(
        {
            "Site": site,
            "n": s.get("n"),
            "Events": s.get("n_events"),
            "Flagged": bool(s.get("flagged")),
            "Material": bool(s.get("material")),
            "Tests": s.get("n_tests"),
            "Largest difference": top.get("id", ""),
            "Effect": f"{top.get('effect_name', '')} {tables.fmt(tables.triplet(top.get('effect'))[0])}" if top else "",
            "Adjusted p": tables.p_text(tables.triplet(top.get("p_adjusted"))[0]) if top else "",
        }
    )
summary = pd.DataFrame(rows)
ui.table(
    summary,
    "shift-summary",
    run=run,
    caption="One row per external site: whether anything differs significantly from the development site after "
    "correcting for multiple tests, and the difference ranked first.",
)

sites = list((shift.get("sites") or {}).keys())
if sites:
    site = st.selectbox("Site", sites, key="shift-site")
    s = shift["sites"][site]
    fig = figures.shift_ranking(run, site)
    if fig is not None:
        ui.figure(
            fig,
            "Each bar is one comparison with the development site, most different first. Its length is "
            "the strength of the evidence (−log10 of the corrected p-value): bars reaching past the dashed line "
            "are significant. Red: significant and larger than its practical threshold; amber: significant "
            "but small; grey: not significant. The text gives the test and the size of the difference.",
            key="shift-ranking",
        )
    ranking = pd.DataFrame(s.get("ranking") or [])
    if not ranking.empty:
        keep = [
            c
            for c in (
                "rank",
                "id",
                "group",
                "name",
                "test",
                "effect_name",
                "effect",
                "threshold",
                "p_value",
                "p_adjusted",
                "flagged",
                "material",
            )
            if c in ranking.columns
        ]
        ui.table(
            ranking[keep],
            f"shift-ranking-{site}",
            run=run,
            caption="Every comparison for this site, most different first: the test, the effect size and its "
            "practical threshold, the raw and the corrected p-value.",
        )
    prior = s.get("prior_shift")
    if isinstance(prior, dict) and ("plain" in prior or "known" in prior):
        st.subheader("Prevalence and calibration")
        prow = [
            {"Probabilities": "as predicted", "Calibration intercept": tables.interval_text(prior.get("plain"))},
            {
                "Probabilities": "adjusted to the site's prevalence",
                "Calibration intercept": tables.interval_text(prior.get("known")),
            },
            {
                "Probabilities": "adjusted to the EM-estimated prevalence",
                "Calibration intercept": tables.interval_text((prior.get("em") or {}).get("intercept")),
            },
        ]
        ui.table(
            pd.DataFrame(prow),
            f"prior-shift-{site}",
            run=run,
            caption="How much of the site's calibration-in-the-large error is the change in prevalence: the "
            "intercept (0 is ideal) before and after re-weighting the probabilities to the site's "
            f"prevalence. Share explained: {tables.fmt(prior.get('explained'))}.",
        )

drift = shift.get("drift") or {}
st.subheader("Drift over time")
if not drift.get("sites"):
    st.info(f"No temporal drift analysis: {ui.md(drift.get('reason') or 'the cases carry no acquisition dates')}.")
else:
    dsites = list(drift["sites"].keys())
    flagged = drift.get("flagged_sites") or []
    st.markdown(f"Drift flagged at: **{ui.md(', '.join(flagged) or 'no site')}**.")
    dsite = st.selectbox("Site (drift)", dsites, key="drift-site")
    d = drift["sites"][dsite]
    metric = st.selectbox(
        "Metric (drift)",
        ["auroc", "ece", "calibration_intercept", "prevalence", "mean_score"],
        format_func=lambda m: "Mean score" if m == "mean_score" else tables.label(m),
        key="drift-metric",
    )
    fig = figures.drift(run, dsite, metric)
    if fig is not None:
        ui.figure(
            fig,
            "The metric in each calendar window with its interval. The first windows (shaded) are the "
            "reference; a marked window differs significantly from them after correcting for all windows "
            "tested. A run of marked windows means the model's behaviour has moved.",
            key="drift-figure",
        )
    wrows = []
    for w in d.get("windows") or []:
        wrows.append(
            {
                "Window": w.get("window"),
                "n": w.get("n"),
                "Events": w.get("n_events"),
                "Reference": bool(w.get("reference")),
                tables.label(metric): tables.interval_text(w.get(metric)),
                "Flagged": bool(w.get("flagged")),
                "CUSUM alarm": bool(w.get("cusum_alarm")),
                "Insufficient": w.get("insufficient_reason") or "",
            }
        )
    ui.table(
        pd.DataFrame(wrows),
        f"drift-{dsite}-{metric}",
        run=run,
        caption="One row per calendar window: cases, the metric with its interval, and whether the window is "
        "flagged by the tests or by the CUSUM.",
    )
