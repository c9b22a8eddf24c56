"""Overview: the gate verdict, every site's key numbers with intervals, and the cases that failed.

Reads only the bundle's small JSON files and failures.csv (never predictions.parquet), so it opens
as fast for a million predictions as for a thousand.
"""

import pandas as pd
import streamlit as st

from dashboard import figures, tables, ui

run = ui.current_run()
ui.page_header(
    "Overview",
    run,
    "Does the model hold up at every site? Each number comes with its sample size "
    f"and a {run.ci_level:.0%} confidence interval.",
)

# ---- verdict -------------------------------------------------------------------------------------
gates = run.gates or {}
verdict = gates.get("verdict")
counts = gates.get("counts") or {}
count_text = ", ".join(f"{counts.get(v, 0)} {v}" for v in ("pass", "warn", "fail"))
if verdict == "fail":
    st.error(
        f"**Release gates: FAIL** ({count_text}). At least one gate is not met; see the table below.",
        icon=":material/cancel:",
    )
elif verdict == "warn":
    st.warning(
        f"**Release gates: WARN** ({count_text}). No gate failed, but some could not be judged "
        "(too little data) or were judged with a warning.",
        icon=":material/warning:",
    )
elif verdict == "pass":
    st.success(f"**Release gates: PASS** ({count_text}). Every gate is met.", icon=":material/check_circle:")
else:
    st.info("This bundle has no gates.json: no release criteria were judged.")

prov = run.provenance
ckpt = prov.get("checkpoint") or {}
proto = prov.get("protocol") or {}
cols = st.columns(4)
cols[0].metric("Sites", len(run.sites))
cols[1].metric("Cases", f"{(run.metrics.get('overall') or {}).get('n', '—')}")
source = prov.get("predictions_source") or {}
if ckpt.get("sha256"):
    cols[2].metric("Model sha256", ckpt["sha256"][:12], help=ckpt["sha256"])
else:
    cols[2].metric("Predictions sha256", (source.get("sha256") or "—")[:12], help=source.get("sha256"))
cols[3].metric("Finished", str(prov.get("finished_at") or "—")[:16].replace("T", " "), help=prov.get("finished_at"))

# ---- sites ---------------------------------------------------------------------------------------
st.subheader("Sites")
display, numeric, colour = tables.site_table(run)
ui.table(
    display,
    "sites",
    csv=numeric,
    styler=tables.style_by_verdict(display, colour),
    run=run,
    caption="One row per hospital, then all sites pooled. Each metric shows the estimate and its "
    f"{run.ci_level:.0%} confidence interval in parentheses. Cells are green where the release gate "
    "on that metric passed, yellow where it warned, red where it failed; the Gates column names "
    "the worst verdict for the site. AUROC: 0.5 is chance, 1 is perfect ranking. ECE: average gap "
    "between predicted and observed risk (0 is perfect). Calibration slope: 1 is ideal, below 1 "
    "means predictions are too extreme. Calibration intercept: 0 is ideal, negative means risks "
    "are over-estimated on average.",
)

fig = figures.site_forest(run)
if fig is not None:
    ui.figure(
        fig,
        "Each row is a site, the last one all sites pooled: the square is the estimate, the bar its "
        "confidence interval, and the text on the right repeats both with the number of cases. Sites whose "
        "bars do not overlap really differ; a long bar means few cases. Hollow grey squares: too little data "
        "to judge.",
        key="overview-forest",
    )

if run.cohorts:
    st.subheader("Cohorts")
    c_display, c_data = tables.cohort_table(run)
    ui.table(
        c_display,
        "cohorts",
        csv=c_data,
        run=run,
        caption="Who was validated at each site: cases and patients, how common the outcome is (with its "
        "interval), how each patient group is represented, and how many cases could not be scored.",
    )

# ---- gates ---------------------------------------------------------------------------------------
st.subheader("Release gates")
g_display, g_data = tables.gate_table(run.gates)
if g_display.empty:
    st.info("No gate rows to show.")
else:
    ui.table(
        g_display,
        "gates",
        csv=g_data,
        run=run,
        caption="One row per gate and site or group. A gate compares the value (the estimate or a "
        "confidence bound, as the protocol says) with its threshold; the reason explains the "
        "verdict, including groups with too little data to judge.",
    )

# ---- failures ------------------------------------------------------------------------------------
st.subheader("Cases that could not be scored")
failures = run.failures if isinstance(run.failures, pd.DataFrame) else pd.DataFrame()
if failures.empty:
    st.success("Every case in the manifests was read and scored.")
else:
    per_site = (
        failures.groupby("site", dropna=False).size().rename("cases").reset_index()
        if "site" in failures.columns
        else pd.DataFrame({"cases": [len(failures)]})
    )
    st.markdown(f"**{len(failures)}** case(s) were left out of every statistic above:")
    ui.table(per_site, "failures-per-site", run=run)
    ui.table(
        failures,
        "failures",
        run=run,
        caption="Each case that could not be read or scored, with the reason. Identifiers are "
        "pseudonymised unless the protocol keeps them.",
    )

with st.expander("Provenance"):
    md = ui.md  # provenance is data from the bundle: inert Markdown
    st.markdown(
        f"Protocol **{md(proto.get('name', '—'))}** v{md(proto.get('version', '—'))} · sha256 "
        f"{md(proto.get('sha256') or '—')}  \nCheckpoint {md(ckpt.get('path') or '—')} · sha256 "
        f"{md(ckpt.get('sha256') or '—')}  \nStarted {md(prov.get('started_at', '—'))} · finished "
        f"{md(prov.get('finished_at', '—'))} · device {md(prov.get('device') or '—')} · seeds "
        f"{md(prov.get('seeds') or '—')}"
    )
    st.json(prov.get("software") or {}, expanded=False)
