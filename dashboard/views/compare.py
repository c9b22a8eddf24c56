"""Compare runs: this run (new) against another run (baseline), paired when both scored the same cases."""

import streamlit as st

from dashboard import compare, comparison, data, figures, tables, ui
from validate.errors import InputError

run = ui.current_run()
ui.page_header(
    "Compare runs",
    run,
    "What changed between two runs, for example the current model against the "
    "previous version, at each site. A difference counts only when its interval excludes zero.",
)

others = [(name, path) for name, path in ui.other_runs() if str(path) != run.path]
if not others:
    st.info(
        "Only one run was found. Put a second results bundle in the runs folder (e.g. the previous model's "
        "`validate run`) to compare them."
    )
    st.stop()


# the baseline offered first is a run of the same protocol (never another protocol's run by default)
def _open(path):
    try:
        return data.load_run(path, st.session_state.get(ui.RUNS_DIR_KEY, "runs"))
    except InputError:  # a run that does not open is listed, and says why when chosen
        return None


opened = {name: _open(path) for name, path in others}
same = [
    n for n, r in opened.items() if r is not None and compare.protocol_identity(r) == compare.protocol_identity(run)
]
names = same + [n for n in opened if n not in same]
if not same:
    st.info(
        f"No other run of protocol {ui.md(run.title)} was found: runs of other protocols are listed, but they "
        "are not compared with this one."
    )
base_name = st.selectbox(
    "Baseline run (compared against)",
    names,
    index=0 if same else None,
    format_func=lambda n: f"{n} ({opened[n].title})" if opened[n] is not None else n,
    placeholder="Choose a run of the same protocol",
    key="compare-base",
)
if not base_name:
    st.stop()
base = opened[base_name] or ui.open_run(dict(others)[base_name], st.session_state.get(ui.RUNS_DIR_KEY, "runs"))
if base is None:
    st.stop()

st.markdown(f"**New**: {ui.md(run.name)} ({ui.md(run.title)}) · **Baseline**: {ui.md(base.name)} ({ui.md(base.title)})")


def shared_cases(new: data.Run = run, baseline: data.Run = base) -> int:
    return data.shared_cases(new, baseline)


verdict = compare.pairing(run, base, shared_cases if run.has_predictions and base.has_predictions else lambda: 0)
candidates = tables.metric_names(
    [*(base.metrics.get("sites") or {}).values(), *(run.metrics.get("sites") or {}).values()]
)
default = [m for m in tables.key_metrics(run) if m in candidates] or candidates[:3]

if verdict.kind == compare.UNRELATED:
    st.error(
        f"Not compared: {ui.md(verdict.why)}. Choose a run of protocol {ui.md(run.title)} as the baseline.",
        icon=":material/block:",
    )
    if st.checkbox(
        "List both runs' own numbers one after the other anyway (no difference is computed)", key="compare-insist"
    ):
        chosen = st.multiselect("Metrics", candidates, default=default, format_func=tables.label, key="compare-metrics")
        display, numeric = tables.side_by_side_table(base, run, chosen)
        ui.table(
            display,
            f"side-by-side-{base.name}",
            csv=numeric,
            run=run,
            caption="NOT COMPARABLE: each run's own estimates on its own protocol and cohort, listed one after "
            "the other. No difference is shown because none would mean anything.",
        )
    st.stop()

if verdict.kind == compare.PAIRED:
    try:
        paired = data.paired_comparison(run, base)
    except InputError as exc:
        st.error(f"The two runs cannot be paired: {ui.md(exc)}", icon=":material/block:")
        st.stop()
    st.success(f"Paired comparison: {ui.md(verdict.why)}.", icon=":material/join_inner:")
    comparison.show_paired(paired, gates=run.gates, key="compare-paired", run=run, default_metrics=default)
    st.stop()

if verdict.kind == compare.PARTIAL:
    st.error(f"Not compared: {ui.md(verdict.why)}.", icon=":material/block:")
    st.stop()

if verdict.kind == compare.UNKNOWN:
    st.warning(f"{ui.md(verdict.why)}.", icon=":material/help:")
    if not st.checkbox(
        "These runs scored different cases (e.g. another period at the same sites): compare them "
        "as independent cohorts (MOVER)",
        key="compare-independent",
    ):
        st.stop()
else:
    st.info(f"Independent cohorts: {ui.md(verdict.why)}.", icon=":material/call_split:")

st.subheader(f"Differences between {compare.MOVER_LABEL}")
chosen = st.multiselect("Metrics", candidates, default=default, format_func=tables.label, key="compare-metrics")
missing_sites = sorted(set(run.sites) ^ set(base.sites))
if missing_sites:
    st.caption(f"Sites in only one of the runs (not compared): {ui.md(', '.join(missing_sites))}")

display, numeric = tables.compare_table(base, run, chosen)
ui.table(
    display,
    f"compare-{base.name}",
    csv=numeric,
    run=run,
    caption=f"{compare.MOVER_LABEL.capitalize()}: each row is a site and a metric, the baseline's and the new "
    "run's estimate with their intervals, and the difference new − baseline with its interval, built "
    "from the two runs' own intervals by MOVER (Zou & Donner 2008), which adds the two estimates' "
    "variances: right for runs on different cases. 'Reading' says which way a clear difference goes.",
)

for m in chosen:
    fig = figures.compare_forest(numeric[numeric["metric"] == m], m, base.name, run.name) if not numeric.empty else None
    if fig is not None:
        ui.figure(
            fig,
            f"{tables.label(m)}: the difference new − baseline at each site ({compare.MOVER_LABEL}), with "
            "its interval. Bars crossing the zero line show no clear change at that site.",
            key=f"compare-fig-{m}",
        )
