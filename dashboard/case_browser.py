"""The Cases page's browser of every error of a site and of the cases that could not be scored, a
page at a time, for bundles of millions of predictions.

The stored ranking (``cases.json``) holds a site's few most confident errors; past them the errors are
read from ``predictions.parquet`` by :mod:`validate.case_pages` (the engine's rule; only the site's row
groups, then per page only the row groups holding its rows). What is cached per site and choice is
the sorted error positions (8 bytes per error); the page's rows are read when shown.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import data, tables, ui
from validate import case_pages

PAGE_SIZES = (25, 50, 100)


def _names(run: data.Run) -> dict:
    p = run.protocol
    labels = list(p.get("labels") or []) if run.task == "multilabel" else []
    return {"classes": list(p.get("classes") or []), "labels": labels}


@st.cache_data(show_spinner="Finding every error at this site…", max_entries=16)
def _site_errors(
    path: str, identity: str, site: str, task: str, threshold: float | None, label: str | None, names: tuple
) -> case_pages.SiteErrors:
    classes, labels = names
    file = Path(path) / "predictions.parquet"
    return case_pages.site_errors(
        file, site, task=task, threshold=threshold, label=label, classes=classes, labels=labels
    )


def site_errors(run: data.Run, site: str, *, threshold: float | None, label: str | None) -> case_pages.SiteErrors:
    """Every error of ``site`` in ``run`` (cached by the bundle's identity and the choice)."""
    n = _names(run)
    return _site_errors(
        run.path, run.identity, site, run.task, threshold, label, (tuple(n["classes"]), tuple(n["labels"]))
    )


def error_page(
    run: data.Run, errors: case_pages.SiteErrors, page: int, size: int, *, threshold: float | None, label: str | None
) -> pd.DataFrame:
    """Page ``page`` (0-based) of ``size`` errors, as the stored ranking lists them."""
    rows = errors.rows[page * size : (page + 1) * size]
    attributes = list((run.cases or {}).get("attributes") or [])
    image_column = ((run.protocol.get("columns") or {}).get("image")) or "image"
    return case_pages.error_rows(
        Path(run.path) / "predictions.parquet",
        rows,
        task=run.task,
        threshold=threshold,
        label=label,
        attributes=attributes,
        image_column=image_column,
        **_names(run),
    )


def _pager(key: str, total: int, label: str) -> tuple[int, int]:
    """A page size and a page number (0-based) for ``total`` rows."""
    c1, c2 = st.columns(2)
    size = int(c1.selectbox("Rows per page", PAGE_SIZES, key=f"{key}-size"))
    pages = max(1, -(-total // size))
    page = int(c2.number_input(f"Page (of {pages:,})", 1, pages, 1, key=f"{key}-page")) - 1
    st.caption(f"{label} {page * size + 1:,}–{min((page + 1) * size, total):,} of {total:,}.")
    return page, size


def render_errors(run: data.Run, site: str, *, threshold: float | None, label: str | None) -> None:
    """Every error of ``site``, most confident first, a page at a time."""
    st.subheader("Every error at this site")
    if not run.has_predictions:
        ui.missing("predictions.parquet", "the bundle holds no case rows (a site bundle keeps them at the site)")
        return
    # on request: the first look at a site reads its rows of predictions.parquet (seconds for millions
    # of cases, then cached), which the page must not pay on every open
    if not st.toggle("Page through every error at this site, past the stored few", key="cases-browse"):
        return
    errors = site_errors(run, site, threshold=threshold, label=label)
    if errors.errors == 0:
        st.info(f"No error among the {errors.cases:,} cases of this site at this choice.")
        return
    page, size = _pager(f"cases-all-{site}", errors.errors, "Errors")
    frame = error_page(run, errors, page, size, threshold=threshold, label=label)
    display = frame.copy()
    for column in ("confidence", "p"):
        if column in display.columns:
            display[column] = display[column].map(tables.fmt)
    ui.table(
        display,
        f"errors-{site}-page-{page + 1}",
        csv=frame.assign(site=site),
        run=run,
        caption="Read from predictions.parquet a page at a time (the same order as the table above, which "
        "holds the first of them). Confidence is the probability the model gave to its wrong call.",
    )


def render_failures(run: data.Run, site: str) -> None:
    """The cases of ``site`` that could not be scored (failures.csv), a page at a time."""
    failures = run.failures if isinstance(run.failures, pd.DataFrame) else pd.DataFrame()
    if "site" in failures.columns:
        failures = failures[failures["site"].astype(str) == site]
    if failures.empty:
        return
    with st.expander(f"Cases of this site that could not be scored ({len(failures):,})"):
        page, size = _pager(f"cases-failed-{site}", len(failures), "Cases")
        ui.table(
            failures.iloc[page * size : (page + 1) * size].reset_index(drop=True),
            f"failures-{site}-page-{page + 1}",
            run=run,
            caption="Left out of every statistic: the reason says what could not be read.",
        )
