"""Streamlit pieces shared by the pages: the run picker, tables with a CSV download, figures with a
plain-language caption."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import data
from validate import formatting
from validate.contract import pooled_absent_reason
from validate.errors import InputError
from validate.escape import csv_safe, markdown_text as md  # noqa: F401 (md: for the pages)
from validate.metrics import registry

RUN_KEY = "run"
RUNS_DIR_KEY = "_runs_dir"
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}


def sidebar(runs_dir: Path) -> data.Run | None:
    """Pick the run in the sidebar; keep it in the session for every page; offer its report."""
    st.session_state[RUNS_DIR_KEY] = str(runs_dir)
    runs = data.discover_runs(runs_dir)
    if not runs:
        return None
    names = [_run_label(p, runs_dir) for p in runs]
    by_name = dict(zip(names, runs, strict=True))
    if st.session_state.get(RUN_KEY) not in by_name:
        st.session_state[RUN_KEY] = names[0]
    with st.sidebar:
        st.selectbox("Run", names, key=RUN_KEY, help=f"Results bundles found in {Path(runs_dir).resolve()}")
    run = open_run(by_name[st.session_state[RUN_KEY]], runs_dir)
    if run is not None and run.has_report:
        with st.sidebar:
            st.download_button(
                "Download HTML report",
                data=lambda r=run: data.report_bytes(r),
                file_name=f"{run.name}-report.html",
                mime="text/html",
                key="dl-report",
                on_click="ignore",
                icon=":material/download:",
            )
    return run


def _run_label(path: Path, runs_dir: Path) -> str:
    root = Path(runs_dir).resolve()
    return "." if path == root else str(path.relative_to(root))


def open_run(path: Path, runs_dir: Path) -> data.Run | None:
    try:
        return data.load_run(path, runs_dir)
    except InputError as exc:
        st.error(f"Cannot open this run: {md(exc)}")
        return None


def current_run() -> data.Run:
    """The run picked in the sidebar (the app stores it before the page runs); stops the page if none."""
    run = st.session_state.get("_current_run")
    if run is None:
        st.info("No run is selected.")
        st.stop()
    return run


def other_runs() -> list[tuple[str, Path]]:
    runs_dir = Path(st.session_state.get(RUNS_DIR_KEY, "runs"))
    return [(_run_label(p, runs_dir), p) for p in data.discover_runs(runs_dir)]


def page_header(title: str, run: data.Run, intro: str) -> None:
    st.title(title)
    # a bundle's texts are data: inert Markdown (no image, link or HTML from a hostile bundle)
    st.caption(f"Run **{md(run.name)}** · protocol {md(run.title)} · task {md(run.task)}")
    st.markdown(intro)
    absent = pooled_absent_reason(run.metrics)
    if absent:  # a site or combined bundle (validate run --site, validate combine)
        kind = run.provenance.get("bundle_kind") or "central"
        st.info(f"**{md(kind.capitalize())} bundle: no pooled 'all sites' block.** {md(absent)}.")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-").lower() or "table"


def table(
    display: pd.DataFrame,
    key: str,
    *,
    csv: pd.DataFrame | None = None,
    styler=None,
    caption: str | None = None,
    run: data.Run | None = None,
    height: int | None = None,
) -> None:
    """A table and a button downloading it as CSV (the numeric ``csv`` frame when given)."""
    if display is None or display.empty:
        st.info("Nothing to show for this selection.")
        return
    kwargs = {"hide_index": True, "width": "stretch"}
    if height:
        kwargs["height"] = height
    st.dataframe(styler if styler is not None else readable(display), **kwargs)
    if caption:
        st.caption(caption)
    frame = csv if csv is not None else display
    prefix = f"{run.name}-" if run is not None else ""
    st.download_button(
        "Download CSV",
        data=csv_bytes(frame),
        file_name=f"{slug(prefix + key)}.csv",
        mime="text/csv",
        key=f"dl-{key}",
        on_click="ignore",
        icon=":material/download:",
    )


#: Column names read as p-values (:func:`validate.formatting.format_p`: ``< 0.001``, never 0.000000…).
P_COLUMNS = ("p", "p_value", "p_adjusted", "q_p_value", "p_raw")
#: Above this many cells a table is shown as it is (pandas' Styler renders every cell).
STYLED_CELLS = 100_000


def readable(frame: pd.DataFrame):
    """A table whose float columns read through the one number formatter (:mod:`validate.formatting`):
    p-value columns as ``< 0.001``, a column named after a metric (``ece``, ``ece_mean``) at the
    metric's precision, any other float without rounding noise (0.000, never ``-1.11e-07``). A
    :class:`pandas.io.formats.style.Styler`: the cells keep their numbers (sorting stays numeric; the
    CSV download holds them unrounded), only what is shown is formatted."""
    floats = [c for c in frame.columns if pd.api.types.is_float_dtype(frame[c])]
    if not floats or frame.size > STYLED_CELLS or not (frame.index.is_unique and frame.columns.is_unique):
        return frame  # a Styler refuses duplicate labels
    return frame.style.format({c: column_formatter(str(c)) for c in floats}, na_rep=formatting.DASH)


def column_formatter(column: str):
    """The formatter of a float column, chosen by its name (see :func:`readable`)."""
    name = column.lower()
    if name in P_COLUMNS or name.endswith("_p_value"):
        return formatting.format_p
    metric = _metric_in(name)
    return lambda x: formatting.format_value(x, metric)


def _metric_in(column: str) -> str | None:
    """The registered metric a column is named after (``ece``, ``ece_mean``, ``auroc_q025``), longest
    name first; None for any other column."""
    names = sorted({m.name for m in registry.METRICS}, key=len, reverse=True)
    return next((m for m in names if column == m or column.startswith(m + "_")), None)


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """A table as the CSV a spreadsheet can open safely: text cells starting with ``= + - @``, a tab
    or a carriage return get a leading ``'`` (OWASP; numbers stay numbers, :mod:`validate.escape`)."""
    return csv_safe(frame).to_csv(index=False).encode("utf-8")


def figure(fig, caption: str, key: str) -> None:
    """A plotly figure from :mod:`validate.charts` with a plain-language caption under it."""
    st.plotly_chart(fig, key=key, config=PLOTLY_CONFIG, width="stretch")
    st.caption(caption)


def missing(what: str, why: str) -> None:
    st.info(f"{what} is not in this bundle: {md(why)}")
