"""Every error of a site, most confident first, a page at a time, read from a bundle's
``predictions.parquet`` without loading every row.

``cases.json`` holds each site's few most confident errors (:mod:`validate.analysis.cases`); past them,
the dashboard's Cases page pages through all of them here. The rule is the one of
:func:`validate.analysis.cases.confident_errors` (a selection and a sort, no statistic): binary and each
label of a multilabel task call a case positive when ``p >= threshold``, an error's confidence is the
probability given to the wrong call; multiclass calls the most probable class, its confidence is that
probability; ties keep the file's order. Probabilities and labels come from the one predictions reader
(:func:`validate.predictions.as_table`), so they are the engine's.

What is read, for a bundle of millions of predictions: (1) the site column, and only in the row groups
whose Parquet statistics can hold the site (a bundle's rows are grouped by site, so the others are
skipped); (2) in those row groups, the label and score columns (``y*``, ``p*``, ``logit*``); (3) for a
page, every column of the few row groups that hold its rows. The sorted error index of a site is a few
bytes per error and is what a caller caches; identifiers and attributes are read per page only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

_SCORE_COLUMN = re.compile(r"^(y|p|logit)(_.+)?$")


@dataclass(frozen=True)
class SiteErrors:
    """A site's errors, most confident first: ``rows`` (positions in the file), their ``confidence``,
    and the site's number of ``cases``."""

    rows: np.ndarray
    confidence: np.ndarray
    cases: int

    @property
    def errors(self) -> int:
        return len(self.rows)

    def pages(self, page_size: int) -> int:
        return max(1, -(-self.errors // max(int(page_size), 1)))


def _site_row_groups(pf, site: str) -> list[int]:
    """Row groups whose statistics of the ``site`` column may hold ``site`` (all, without statistics)."""
    index = pf.schema_arrow.get_field_index("site")
    out = []
    for g in range(pf.metadata.num_row_groups):
        stats = pf.metadata.row_group(g).column(index).statistics
        if stats is not None and stats.has_min_max and not (str(stats.min) <= site <= str(stats.max)):
            continue
        out.append(g)
    return out


def _group_offsets(pf) -> np.ndarray:
    sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)]
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def site_errors(
    path: str | Path,
    site: str,
    *,
    task: str,
    threshold: float | None = 0.5,
    label: str | None = None,
    classes: Sequence[str] = (),
    labels: Sequence[str] = (),
) -> SiteErrors:
    """The errors of ``site`` in the predictions file ``path`` (module docstring for the rule), most
    confident first. ``label``: the multilabel label; ``threshold`` is unused for multiclass."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    columns = ["site"] + [c for c in pf.schema_arrow.names if _SCORE_COLUMN.match(c)]
    offsets = _group_offsets(pf)
    groups = _site_row_groups(pf, site)
    if not groups:
        return SiteErrors(np.zeros(0, np.int64), np.zeros(0), 0)
    part = pf.read_row_groups(groups, columns=columns)  # one multi-threaded read
    positions = np.concatenate([np.arange(offsets[g], offsets[g + 1]) for g in groups])
    same = pc.fill_null(pc.equal(part.column("site").cast(pa.string()), pa.scalar(site)), False)
    keep = np.flatnonzero(same.to_numpy(zero_copy_only=False))
    if not len(keep):
        return SiteErrors(np.zeros(0, np.int64), np.zeros(0), 0)
    frame = part.take(pa.array(keep)).to_pandas()
    rows = positions[keep]
    wrong, confidence = _errors(_table(frame, task, classes, labels), task, threshold, label)
    order = np.argsort(-confidence[wrong], kind="stable")  # ties keep the file's order
    return SiteErrors(rows[wrong][order], confidence[wrong][order], len(frame))


def _table(frame: pd.DataFrame, task: str, classes: Sequence[str], labels: Sequence[str]):
    """``frame`` (site, labels, scores) as a :class:`~validate.predictions.PredictionsTable`. A bundle's
    predictions were checked and standardised when the run wrote them (labels 0/1 or class indices,
    one form of scores): they are wrapped as they are, so millions of rows cost no second check. Any
    other file (class names as labels) goes through :func:`~validate.predictions.as_table`."""
    from validate.predictions import PredictionsTable, as_table

    if task == "multilabel":
        names = list(labels) or [c[2:] for c in frame.columns if c.startswith("y_")]
    elif task == "multiclass":
        scored = [c for c in frame.columns if c.startswith(("logit_", "p_"))]
        names = list(classes) or [c.split("_", 1)[1] for c in scored]
    else:
        names = None
    labelled = frame[[c for c in frame.columns if c == "y" or c.startswith("y_")]]
    if all(pd.api.types.is_numeric_dtype(t) for t in labelled.dtypes):
        return PredictionsTable(frame=frame, task=task, names=names)
    return as_table(
        frame,
        task=task,
        class_names=list(classes) if task == "multiclass" and classes else None,
        label_names=list(labels) if task == "multilabel" and labels else None,
    )


def _errors(table, task: str, threshold: float | None, label: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Which cases are errors and each case's confidence in its call (the rule of the module docstring)."""
    prob = table.probabilities()
    if task == "multiclass":
        return prob.argmax(axis=1) != table.labels(), prob.max(axis=1)
    y = table.labels()
    if task == "multilabel":
        j = list(table.names).index(label)
        prob, y = prob[:, j], y[:, j]
    t = 0.5 if threshold is None else float(threshold)
    call = (prob >= t).astype(int)
    return call != y.astype(int), np.where(call == 1, prob, 1.0 - prob)


def read_rows(path: str | Path, rows: np.ndarray, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The rows at file positions ``rows`` (in that order), reading only the row groups that hold them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return pf.schema_arrow.empty_table().to_pandas()
    offsets = _group_offsets(pf)
    group = np.searchsorted(offsets, rows, side="right") - 1
    pieces, order = [], []
    for g in np.unique(group):
        take = np.flatnonzero(group == g)
        part = pf.read_row_group(int(g), columns=list(columns) if columns is not None else None)
        pieces.append(part.take(pa.array(rows[take] - offsets[g])))
        order.append(take)
    frame = pa.concat_tables(pieces).to_pandas()
    return frame.iloc[np.argsort(np.concatenate(order), kind="stable")].reset_index(drop=True)


def error_rows(
    path: str | Path,
    rows: np.ndarray,
    *,
    task: str,
    threshold: float | None = 0.5,
    label: str | None = None,
    classes: Sequence[str] = (),
    labels: Sequence[str] = (),
    attributes: Sequence[str] = (),
    image_column: str = "image",
) -> pd.DataFrame:
    """The errors at file positions ``rows`` (one page of :func:`site_errors`), as the Cases page lists
    them: ``case_id``, ``true``, ``called``, ``confidence``, ``p`` (binary, multilabel), ``image`` (when
    recorded), then the ``attributes`` the file holds. Names of the calls as in ``cases.json``."""
    from validate.predictions import as_table

    frame = read_rows(path, rows)
    out = pd.DataFrame({"case_id": frame["case_id"].astype(str) if "case_id" in frame else pd.Series(dtype=str)})
    if frame.empty:
        return out
    table = as_table(
        frame,
        task=task,
        class_names=list(classes) if task == "multiclass" and classes else None,
        label_names=list(labels) if task == "multilabel" and labels else None,
    )
    prob = table.probabilities()
    if task == "multiclass":
        names = list(table.names or [])
        out["true"] = [names[int(v)] for v in table.labels()]
        out["called"] = [names[int(v)] for v in prob.argmax(axis=1)]
        out["confidence"] = prob.max(axis=1)
    else:
        y = table.labels()
        if task == "multilabel":
            j = list(table.names or []).index(str(label))
            prob, y = prob[:, j], y[:, j]
        pair = (
            [f"no {label}", str(label)]
            if task == "multilabel"
            else (list(classes)[:2] if len(classes) >= 2 else ["0", "1"])
        )
        call = (prob >= (0.5 if threshold is None else float(threshold))).astype(int)
        out["true"] = [pair[int(v)] for v in y]
        out["called"] = [pair[v] for v in call]
        out["confidence"] = np.where(call == 1, prob, 1.0 - prob)
        out["p"] = prob
    for column in ([image_column] if image_column in frame else []) + [a for a in attributes if a in frame]:
        out[column if column != image_column else "image"] = frame[column].to_numpy()
    return out
