"""Model comparison: the run's paired comparison with its baseline model (comparison.json)."""

import streamlit as st

from dashboard import comparison, ui

run = ui.current_run()
ui.page_header(
    "Model comparison",
    run,
    "Is the new model at least as good as the baseline, at every site and for "
    "every patient group? Both models scored the same cases; each difference new − baseline comes with "
    "its paired interval and n.",
)

if not run.comparison:
    ui.missing(
        "A model comparison",
        "the run had no baseline model (`validate run ... --baseline OLD_CHECKPOINT`, "
        "or model.baseline in the protocol)",
    )
    st.stop()

comparison.show_gates(run.gates, "comparison", run)
comparison.show_paired(run.comparison, gates=run.gates, key="comparison", run=run)
