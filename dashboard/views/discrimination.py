"""Discrimination: ROC and precision-recall per site; the operating point carried from the development site."""

import pandas as pd
import streamlit as st

from dashboard import figures, tables, ui

run = ui.current_run()
ui.page_header(
    "Discrimination",
    run,
    "How well does the model rank sick above healthy patients at each site, and "
    "what happens at the decision threshold chosen at the development site?",
)

sites = run.sites
chosen = st.multiselect("Sites", sites, default=sites, key="discrimination-sites")

cls = None
if run.task != "binary":
    classes = figures.curve_classes(run)
    if classes:
        cls = st.selectbox("Class (one against the rest)", classes, key="discrimination-class")

fig = figures.roc(run, chosen, cls)
if fig is not None:
    ui.figure(
        fig,
        "ROC curve per site: the share of sick patients flagged (sensitivity, up) against the share of "
        "healthy patients wrongly flagged (1 − specificity, right) as the threshold moves. The closer a curve "
        "hugs the top-left corner the better; the diagonal is chance, the shaded band the curve's interval. Circles "
        "mark the protocol's threshold, diamonds the threshold carried from the development site.",
        key="discrimination-roc",
    )
fig = figures.precision_recall(run, chosen, cls)
if fig is not None:
    ui.figure(
        fig,
        "Precision–recall per site: of the patients flagged, the share truly sick (precision, up) "
        "against the share of sick patients found (recall, right). The baseline is the site's prevalence, "
        "so sites with more disease start higher.",
        key="discrimination-pr",
    )

fig = figures.operating_points(run, chosen)
if fig is not None:
    ui.figure(
        fig,
        "Sensitivity and specificity at each site, with intervals: on the left at the protocol's threshold, "
        "on the right at the threshold chosen at the development site to reach the target sensitivity and "
        "carried unchanged to the other sites. If sensitivity falls at a site, the decision rule does not "
        "travel there as it is.",
        key="discrimination-operating",
    )

rows, data = [], []
for site in chosen:
    block = (run.metrics.get("sites") or {}).get(site) or {}
    points = list(block.get("operating_points") or [])
    tgt = block.get("target_sensitivity")
    if isinstance(tgt, dict) and tgt.get("threshold") is not None:
        how = "carried from development" if tgt.get("carried") else "set here"
        points.append(dict(tgt, rule=f"sensitivity {tgt.get('target')} target ({how})"))
    for op in points:
        rule = op.get("rule") or "protocol threshold"
        row = {"Site": site, "Rule": rule, "Threshold": tables.fmt(tables.triplet(op.get("threshold"))[0], 4)}
        d = {"site": site, "rule": rule, "threshold": tables.triplet(op.get("threshold"))[0]}
        for m in ("sensitivity", "specificity", "ppv", "npv"):
            est, lo, hi = tables.triplet(op.get(m))
            row[m.upper() if m in ("ppv", "npv") else m.capitalize()] = tables.interval_text(op.get(m))
            d[m], d[f"{m}_ci_low"], d[f"{m}_ci_high"] = est, lo, hi
        rows.append(row)
        data.append(d)
st.subheader("Operating points")
ui.table(
    pd.DataFrame(rows),
    "operating-points",
    csv=pd.DataFrame(data),
    run=run,
    caption="At each threshold, a case is called positive when its predicted probability is at least the "
    "threshold. The target-sensitivity threshold is found at the development site and used unchanged "
    "elsewhere, so its sensitivity at other sites shows how well the decision rule travels. PPV: of "
    "those called positive, the share truly positive; NPV: the same for negatives.",
)

auc_rows = []
for site in chosen:
    block = (run.metrics.get("sites") or {}).get(site) or {}
    auc_rows.append(
        {
            "Site": site,
            "n": block.get("n"),
            "Events": block.get("n_events"),
            **{
                tables.label(m): tables.interval_text(block.get(m))
                for m in ("auroc", "auprc", "auroc_macro")
                if m in block
            },
        }
    )
ui.table(
    pd.DataFrame(auc_rows),
    "discrimination-summary",
    run=run,
    caption="Area under the ROC curve (DeLong interval) and under the precision–recall curve per site.",
)
