"""A paired model comparison on a page: the Δ table and the forest per metric.

Shown by the "Model comparison" page (a run's own ``comparison.json``, written by ``validate run
--baseline``) and by "Compare runs" for two runs that scored the same cases (the same dict, from
:func:`validate.compare_bundles`). Reads the comparison dict only; every number comes from it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import streamlit as st

from dashboard import tables, ui
from validate import charts


def gate_bounds(gates: Mapping | None) -> dict[str, float]:
    """Per metric, the bound on Δ of the protocol's first comparison gate on it (the margin line)."""
    out: dict[str, float] = {}
    for g in (gates or {}).get("gates") or []:
        if g.get("compare") == "baseline" and g.get("metric") not in out:
            out[str(g["metric"])] = float(g["threshold"])
    return out


def identity_line(comparison: Mapping) -> str:
    """Which model is new, which is the baseline, and how many cases were matched (inert Markdown)."""
    new, base, matched = comparison["new"], comparison["baseline"], comparison["matched"]
    left = matched["n_new_only"] + matched["n_baseline_only"]
    tail = f"; {left} case(s) scored by one model only are left out" if left else ""
    return (
        f"**New**: {ui.md(new['label'])} ({ui.md(new.get('source') or '—')}) · **Baseline**: "
        f"{ui.md(base['label'])} ({ui.md(base.get('source') or '—')}) · {matched['n']} cases matched by site "
        f"and case id{tail}."
    )


def show_paired(
    comparison: Mapping, *, gates: Mapping | None, key: str, run, default_metrics: Sequence[str] = ()
) -> None:
    """The paired comparison: metric picker, the Δ table (CSV download) and a forest per chosen metric."""
    level = float(comparison.get("level") or 0.95)
    st.markdown(identity_line(comparison))
    names = tables.comparison_metric_names(comparison)
    bounds = gate_bounds(gates)
    default = [m for m in (*bounds, *default_metrics, "auroc", "ece") if m in names]
    chosen = st.multiselect(
        "Metrics",
        names,
        default=list(dict.fromkeys(default))[:3] or names[:2],
        format_func=tables.label,
        key=f"{key}-metrics",
    )
    display, numeric = tables.comparison_table(comparison, chosen)
    ui.table(
        display,
        f"{key}-table",
        csv=numeric,
        run=run,
        caption=f"Paired differences: both models scored the same cases. Δ = new − baseline with its {level:.0%} "
        "interval: paired DeLong for AUROC (as pROC's roc.test(paired=TRUE)), otherwise the same "
        "patient-clustered, site-stratified bootstrap replicates applied to both models. 'Reading' says "
        "which way a difference whose interval excludes 0 goes.",
    )
    subgroups = list(comparison.get("subgroups") or {})
    for m in chosen:
        blocks = charts.comparison_blocks(comparison, subgroups=subgroups)
        fig = charts.comparison_forest(
            blocks,
            m,
            bounds.get(m),
            ci_level=level,
            new_label=comparison["new"]["label"],
            baseline_label=comparison["baseline"]["label"],
        )
        margin = f" Dashed: the gate's margin at Δ = {charts.fmt(bounds[m])}." if m in bounds else ""
        ui.figure(
            fig,
            f"{tables.label(m)}: the paired difference new − baseline per block, with its interval; "
            f"solid line: no difference.{margin}",
            key=f"{key}-fig-{m}",
        )


def show_gates(gates: Mapping | None, key: str, run) -> None:
    """The comparison gates' verdicts, with the engine's words (superior / non-inferior / inferior)."""
    display, numeric = tables.comparison_gate_table(gates)
    if display.empty:
        st.caption("The protocol declares no comparison gate (`compare: baseline`).")
        return
    worst = (
        "fail" if (display["Verdict"] == "fail").any() else "warn" if (display["Verdict"] == "warn").any() else "pass"
    )
    st.markdown(f"**Comparison gates: {worst.upper()}**")
    ui.table(display, f"{key}-gates", csv=numeric, run=run)
