"""Compare runs: two bundles side by side (e.g. model v1 against v2), metric differences per site with intervals."""
import streamlit as st

from dashboard import figures, tables, ui

run = ui.current_run()
ui.page_header("Compare runs", run, "What changed between two runs, for example the current model against the "
               "previous version, at each site. A difference counts only when its interval excludes zero.")

others = [(name, path) for name, path in ui.other_runs() if str(path) != run.path]
if not others:
    st.info("Only one run was found. Put a second results bundle in the runs folder (e.g. the previous model's "
            "`validate run`) to compare them.")
    st.stop()

names = [n for n, _ in others]
base_name = st.selectbox("Baseline run (compared against)", names, key="compare-base")
base = ui.open_run(dict(others)[base_name], st.session_state.get(ui.RUNS_DIR_KEY, "runs"))
if base is None:
    st.stop()

st.markdown(f"**New**: {ui.md(run.name)} ({ui.md(run.title)}) · **Baseline**: {ui.md(base.name)} ({ui.md(base.title)})")
if base.task != run.task:
    st.warning(f"The runs have different tasks ({ui.md(base.task)} vs {ui.md(run.task)}); only metrics they share "
               "are compared.")

candidates = [m for m in tables.metric_names([*(base.metrics.get("sites") or {}).values(),
                                              *(run.metrics.get("sites") or {}).values()])]
default = [m for m in tables.key_metrics(run) if m in candidates] or candidates[:3]
chosen = st.multiselect("Metrics", candidates, default=default, format_func=tables.label, key="compare-metrics")
shared = [s for s in run.sites if s in set(base.sites)]
missing_sites = sorted(set(run.sites) ^ set(base.sites))
if missing_sites:
    st.caption(f"Sites in only one of the runs (not compared): {ui.md(', '.join(missing_sites))}")

display, numeric = tables.compare_table(base, run, chosen)
ui.table(display, f"compare-{base.name}", csv=numeric, run=run,
         caption="Each row: a site and a metric, the baseline's and the new run's estimate with their intervals, and "
                 "the difference new − baseline with its interval. The difference's interval is built from the two "
                 "runs' own intervals by MOVER (Zou & Donner 2008), which adds the two estimates' variances as if the "
                 "runs were independent. When both runs scored the same cases their estimates move together and the "
                 "true interval is narrower, so this one is conservative: a difference it calls clear is clear. "
                 "'Reading' says which way a clear difference goes.")

for m in chosen:
    fig = figures.compare_forest(numeric[numeric["metric"] == m], m, base.name, run.name)
    if fig is not None:
        ui.figure(fig, f"{tables.label(m)}: the difference new − baseline at each site, with its interval. Bars "
                  "crossing the zero line show no clear change at that site.", key=f"compare-fig-{m}")
