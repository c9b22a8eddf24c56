"""Fairness: group fairness measures of fairness.json (equalised odds, demographic parity, calibration
within groups) with their paired bootstrap intervals, per subgroup, site and operating threshold."""

import pandas as pd
import streamlit as st

from dashboard import ui
from validate.charts import (
    FAIRNESS_RATE_LABELS,
    entry_text,
    fairness_gap_figure,
    fairness_level,
    fairness_threshold_label,
)

SUMMARY = {
    "equalized_odds_difference": "Equalised-odds difference",
    "equalized_odds_ratio": "Equalised-odds ratio",
    "demographic_parity_difference": "Demographic-parity difference",
    "demographic_parity_ratio": "Demographic-parity ratio",
}

run = ui.current_run()
ui.page_header(
    "Fairness",
    run,
    "Does the model treat patient groups alike at the operating thresholds? For each subgroup: how far "
    "the groups' sensitivity (TPR), false-positive rate and selection rate lie apart, as fairlearn "
    "defines the measures, each with a patient-clustered paired bootstrap interval.",
)

fair = run.fairness
if not fair:
    ui.missing("A fairness analysis", "it is computed for binary tasks with declared subgroups")
    st.stop()

c1, c2, c3 = st.columns(3)
attribute = c1.selectbox("Subgroup", list(fair.get("attributes") or []), key="fairness-attribute")
levels = ["overall"] + [s for s in run.sites if s in (fair.get("sites") or {})]
where = c2.selectbox(
    "Where", levels, format_func=lambda s: "all sites pooled" if s == "overall" else f"site {s}", key="fairness-where"
)
att = (fairness_level(fair, where).get("attributes") or {}).get(attribute) or {}
thresholds = att.get("thresholds") or []
if not thresholds:
    ui.missing("An operating threshold", "the protocol declares no metrics.thresholds")
    st.stop()
choice = c3.selectbox(
    "Operating threshold",
    list(range(len(thresholds))),
    format_func=lambda i: fairness_threshold_label(thresholds[i]),
    key="fairness-threshold",
)
t = thresholds[choice]
small = att.get("excluded_insufficient") or []
undefined = t.get("undefined") or {}
rows = [
    {"Measure": label, "Estimate (interval)": entry_text(t["summary"].get(m)), "Why undefined": undefined.get(m, "")}
    for m, label in SUMMARY.items()
]
cal = att.get("calibration") or {}
for m, label in (
    ("calibration_slope_range", "Calibration slope range"),
    ("calibration_in_the_large_range", "Calibration-in-the-large range"),
):
    rows.append(
        {
            "Measure": label,
            "Estimate (interval)": entry_text((cal.get("summary") or {}).get(m)),
            "Why undefined": (cal.get("undefined") or {}).get(m, ""),
        }
    )
ui.table(
    pd.DataFrame(rows),
    key=f"fairness-summary-{attribute}-{where}",
    run=run,
    caption=f"Over the groups with enough data; reference group {att.get('reference')}. "
    + (f"Left out as too small (their disparity is unknown, not absent): {', '.join(small)}." if small else ""),
)

for rate in ("tpr", "fpr"):
    ui.figure(
        fairness_gap_figure(fair, attribute, rate, site=where, threshold=choice),
        f"Each {attribute} group's {FAIRNESS_RATE_LABELS[rate]} minus the reference group's, with its paired "
        f"{run.ci_level:.0%} interval; hollow grey: too few cases or events to judge.",
        key=f"fairness-gap-{rate}",
    )

info = att.get("groups") or {}
group_rows = []
for g in (fair.get("groups") or {}).get(attribute) or list(info):
    if g not in info:
        continue
    cells = (t.get("groups") or {}).get(g) or {}
    group_rows.append(
        {
            "Group": g + (" (reference)" if g == att.get("reference") else ""),
            "n": info[g].get("n"),
            "events": info[g].get("n_events"),
            "insufficient": bool(info[g].get("insufficient")),
            **{FAIRNESS_RATE_LABELS[r]: entry_text(cells.get(r)) for r in FAIRNESS_RATE_LABELS},
        }
    )
ui.table(pd.DataFrame(group_rows), key=f"fairness-groups-{attribute}-{where}", run=run)
