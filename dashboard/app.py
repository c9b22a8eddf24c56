"""The validate dashboard: ``streamlit run dashboard/app.py -- RUNS_DIR`` (or ``validate dashboard RUNS_DIR``).

Every sub-folder of RUNS_DIR holding ``provenance.json`` or ``metrics.json`` is a run (RUNS_DIR may
itself be one). The run picked in the sidebar is shown on every page.
"""

from __future__ import annotations

import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:  # `streamlit run` puts dashboard/ on the path, not the repository
    sys.path.insert(0, str(_REPO))

import streamlit as st  # noqa: E402

from dashboard import data, ui, utility  # noqa: E402

HERE = Path(__file__).resolve().parent
PAGES = [
    ("views/overview.py", "Overview", "overview", ":material/fact_check:"),
    ("views/reliability.py", "Reliability", "reliability", ":material/show_chart:"),
    ("views/subgroups.py", "Subgroups", "subgroups", ":material/groups:"),
    ("views/calibration.py", "Calibration methods", "calibration", ":material/tune:"),
    ("views/discrimination.py", "Discrimination", "discrimination", ":material/ssid_chart:"),
    ("views/cases.py", "Cases", "cases", ":material/image_search:"),
    ("views/compare.py", "Compare runs", "compare", ":material/compare_arrows:"),
]
SHIFT_PAGE = ("views/shift.py", "Shift and drift", "shift", ":material/trending_up:")
COMPARISON_PAGE = ("views/comparison.py", "Model comparison", "comparison", ":material/balance:")
DECISION_PAGE = ("views/decision.py", "Clinical utility", "decision", ":material/medical_services:")
SYNTHESIS_PAGE = ("views/synthesis.py", "Across hospitals", "synthesis", ":material/hub:")
FAIRNESS_PAGE = ("views/fairness.py", "Fairness", "fairness", ":material/diversity_3:")
SEGMENTATION_PAGE = ("views/segmentation.py", "Segmentation", "segmentation", ":material/donut_large:")

# the favicon is a file served by this server: a ":material/...:" or emoji icon makes the browser fetch
# it from a public font host on every page load (no request may leave the machine)
ICON = HERE / "icon.png"
st.set_page_config(page_title="validate · dashboard", page_icon=str(ICON), layout="wide")

runs_dir = data.runs_dir_from_argv()
run = ui.sidebar(runs_dir)
st.session_state["_current_run"] = run

pages = list(PAGES)
if run is not None and run.shift:
    pages.insert(5, SHIFT_PAGE)
if run is not None and utility.available(run):  # net benefit or precision: after Discrimination
    pages.insert(pages.index(PAGES[4]) + 1, DECISION_PAGE)
if run is not None and run.comparison:  # the run had a baseline model: shown before "Compare runs"
    pages.insert(len(pages) - 1, COMPARISON_PAGE)
if run is not None and run.metrics.get("synthesis"):  # a random-effects synthesis: right after Overview
    pages.insert(1, SYNTHESIS_PAGE)
if run is not None and run.fairness:  # binary runs with subgroups: right after Subgroups
    pages.insert(pages.index(PAGES[2]) + 1, FAIRNESS_PAGE)
if run is not None and run.task == "segmentation":  # per-case masks: no probability per case to rank or bin
    pages = [PAGES[0], SEGMENTATION_PAGE, *([SHIFT_PAGE] if run.shift else []), PAGES[-1]]
nav = st.navigation(
    [st.Page(str(HERE / f), title=t, url_path=u, icon=i, default=(u == "overview")) for f, t, u, i in pages]
)

if run is None:
    st.title("validate dashboard")
    if not data.discover_runs(runs_dir):
        st.info(
            f"No results bundles in `{Path(runs_dir).resolve()}`. A bundle is a folder holding "
            "`metrics.json` or `provenance.json`; make some with `validate demo` (writes `runs/`) or "
            "`validate run PROTOCOL --out DIR`, then start `validate dashboard DIR`."
        )
    st.stop()

nav.run()
