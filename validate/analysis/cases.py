"""The most confident errors per site, from a predictions table (a selection and a sort, no statistic).

Shared by the dashboard's Cases page and ``validate run``, which stores thumbnails of the same cases
in the bundle (:mod:`validate.thumbnails`), so the page and the bundle agree on which cases they are.

Binary (and each label of a multilabel task): a case is called positive when ``p >= threshold`` (the
operating-point rule of :mod:`validate.metrics.operating`); an error is a call that differs from the
label; its *confidence* is the probability the model gave to the wrong call (``p`` for a false
positive, ``1 - p`` for a false negative). Multiclass: the call is the most probable class and the
confidence its probability (top-label confidence, as in the top-label ECE). ``p`` is the stored
probability :meth:`validate.predictions.PredictionsTable.probabilities` (``sigmoid(logit)`` /
``softmax(logits)`` when logits are stored): the table is read by the one predictions reader.

``validate run`` stores the rankings the protocol asks for in ``cases.json`` (:func:`cases_file`,
contract :class:`validate.contract.CasesFile`), so the dashboard lists the cases without re-ranking
predictions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from validate.predictions import PredictionsTable, as_table, attribute_columns as _case_attributes

# case attributes that are not worth a column on the Cases page: image statistics and embeddings the
# scorer adds, the image path, the acquisition date
NOT_SHOWN_PREFIXES = ("img_", "emb_")
NOT_SHOWN_COLUMNS = {"image", "acquired_at"}


def attribute_columns(pred: PredictionsTable | pd.DataFrame, declared: Sequence[str] = ()) -> list[str]:
    """The case attributes to show: the protocol's declared ones, else every attribute of the table
    (not an id, label or score) other than image statistics, embeddings, the image path and the date."""
    frame = pred.frame if isinstance(pred, PredictionsTable) else pred
    cols = [c for c in declared if c in frame.columns]
    if cols:
        return cols
    return [
        c for c in _case_attributes(frame) if c not in NOT_SHOWN_COLUMNS and not str(c).startswith(NOT_SHOWN_PREFIXES)
    ]


def _none() -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.DataFrame(), pd.DataFrame()


def confident_errors(
    pred: PredictionsTable | pd.DataFrame,
    *,
    task: str,
    classes: Sequence[str] = (),
    label: str | None = None,
    threshold: float = 0.5,
    per_site: int = 10,
    attributes: Sequence[str] = (),
    image_column: str = "image",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Up to ``per_site`` errors per site, most confident first, and a per-site count.

    ``pred``: a :class:`~validate.predictions.PredictionsTable`, or a predictions DataFrame (the
    bundle's ``predictions.parquet``) read through :func:`~validate.predictions.as_table`.
    First frame: ``site``, ``case_id``, ``true``, ``called``, ``confidence``, ``probability`` (binary: P(positive)),
    ``image`` (when recorded), then the attributes. Second: ``site``, ``cases``, ``errors``.
    """
    table = as_table(pred, task=task, class_names=list(classes) if task == "multiclass" and classes else None)
    frame = table.frame
    names = list(classes) if classes else ["0", "1"]
    if task == "multiclass":
        names = list(table.names)
        prob = table.probabilities()
        y = table.labels()
        call = prob.argmax(axis=1)
        conf = prob.max(axis=1)
        p_col = None
        true = [names[int(v)] if 0 <= int(v) < len(names) else str(v) for v in y]
        called = [names[int(v)] for v in call]
    else:
        if task == "multilabel":
            if not label or label not in (table.names or []):
                return _none()
            j = table.names.index(label)
            p, y = table.probabilities()[:, j], table.labels()[:, j].astype(int)
        else:
            p, y = table.probabilities(), table.labels().astype(int)
        call = (p >= threshold).astype(int)
        conf = np.where(call == 1, p, 1.0 - p)
        p_col = p
        pair = (
            names[:2]
            if task == "binary" and len(names) >= 2
            else [f"no {label}", str(label)]
            if task == "multilabel"
            else ["0", "1"]
        )
        true = [pair[v] for v in y]
        called = [pair[v] for v in call]
    pred = frame
    out = pd.DataFrame(
        {
            "site": table.site_ids.astype(str),
            "case_id": table.case_ids.astype(str),
            "true": true,
            "called": called,
            "confidence": conf,
        }
    )
    if p_col is not None:
        out["probability"] = p_col  # not "p": this frame is not a predictions table
    if image_column in pred.columns:  # the image's path under the site's image root, when the bundle records it
        out["image"] = pred[image_column].to_numpy()
    for a in attributes:
        if a in pred.columns and a not in out.columns:
            out[a] = pred[a].to_numpy()
    is_error = np.asarray(call) != np.asarray(y)
    counts = (
        pd.DataFrame({"site": out["site"], "error": is_error})
        .groupby("site", sort=False)["error"]
        .agg(cases="size", errors="sum")
        .reset_index()
    )
    wrong = out[is_error]
    # stable sort so ties keep the file's order
    wrong = wrong.sort_values(["site", "confidence"], ascending=[True, False], kind="mergesort")
    return wrong.groupby("site", sort=False).head(per_site).reset_index(drop=True), counts


def ranking_settings(protocol: Any) -> dict[str, Any]:
    """What a protocol asks of the Cases page's rankings, as :func:`rankings` takes it: the task, its
    classes or labels, the operating thresholds (multiclass: one ranking, by the top-label call), the
    declared attributes and the predictions column that may hold an image path."""
    task = protocol.task
    thresholds = [0.5] if task == "multiclass" else [float(t) for t in (protocol.metrics.thresholds or [0.5])]
    return {
        "task": task,
        "classes": list(protocol.classes or []),
        "labels": list(protocol.labels or []) if task == "multilabel" else [],
        "thresholds": thresholds,
        "attributes": list(protocol.attributes or []),
        "image_column": protocol.columns.image,
    }


def rankings(
    pred: PredictionsTable | pd.DataFrame,
    *,
    task: str,
    classes: Sequence[str] = (),
    labels: Sequence[str] = (),
    thresholds: Sequence[float] = (0.5,),
    attributes: Sequence[str] = (),
    image_column: str = "image",
    per_site: int = 10,
) -> list[tuple[str | None, float | None, pd.DataFrame, pd.DataFrame]]:
    """:func:`confident_errors` for each label (multilabel; else one ``None``) and each threshold
    (multiclass: one ranking, threshold ``None``): ``(label, threshold, top, counts)``. Attributes as
    :func:`attribute_columns` chooses them."""
    table = as_table(
        pred,
        task=task,
        class_names=list(classes) if task == "multiclass" and classes else None,
        label_names=list(labels) if task == "multilabel" and labels else None,
    )  # read once
    shown = attribute_columns(table, attributes)
    out = []
    for label in list(labels) if task == "multilabel" else [None]:
        for threshold in [None] if task == "multiclass" else [float(t) for t in thresholds]:
            top, counts = confident_errors(
                table,
                task=task,
                classes=classes,
                label=label,
                threshold=0.5 if threshold is None else threshold,
                per_site=per_site,
                attributes=shown,
                image_column=image_column,
            )
            out.append((label, threshold, top, counts))
    return out


def _json_value(v: Any) -> Any:
    """A case attribute as JSON: numbers and text as they are, missing (None, NaN, NaT) as null,
    anything else (dates) as text."""
    if v is None or v is pd.NaT:
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, str):
        return v
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return str(v)


def _case_row(
    row: pd.Series, attributes: Sequence[str], site: str, name: str | None, thumbnails: Mapping[tuple[str, str], str]
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "case_id": name,
        "true": str(row["true"]),
        "called": str(row["called"]),
        "confidence": float(row["confidence"]),
    }
    if "probability" in row.index:
        out["p"] = float(row["probability"])
    if name is not None and (site, name) in thumbnails:
        out["thumbnail"] = thumbnails[(site, name)]
    if "image" in row.index and isinstance(row["image"], str) and row["image"]:
        out["image"] = row["image"]
    out["attributes"] = {a: _json_value(row[a]) for a in attributes if a in row.index}
    return out


def cases_file(
    pred: PredictionsTable | pd.DataFrame,
    *,
    task: str,
    classes: Sequence[str] = (),
    labels: Sequence[str] = (),
    thresholds: Sequence[float] = (0.5,),
    attributes: Sequence[str] = (),
    image_column: str = "image",
    per_site: int = 20,
    name_of: Callable[[str], str | None] = str,
    thumbnails: Mapping[tuple[str, str], str] | None = None,
) -> dict[str, Any]:
    """``cases.json`` (contract :class:`validate.contract.CasesFile`): per ranking (label, threshold)
    and site, the number of cases and errors and the ``per_site`` most confident errors, most confident
    first (:func:`confident_errors`).

    ``pred`` holds the original case ids; each stored ``case_id`` is ``name_of(case_id)``, the identifier
    ``predictions.parquet`` holds (the keyed hash unless the protocol keeps ids). ``thumbnails``:
    ``(site, stored identifier) -> file name`` (without ``.png``) under ``thumbnails/<site>/`` of each
    thumbnail in the bundle; those rows name theirs.
    """
    table = as_table(
        pred,
        task=task,
        class_names=list(classes) if task == "multiclass" and classes else None,
        label_names=list(labels) if task == "multilabel" and labels else None,
    )
    shown = attribute_columns(table, attributes)
    out = []
    for label, threshold, top, counts in rankings(
        table,
        task=task,
        classes=classes,
        labels=labels,
        thresholds=thresholds,
        attributes=shown,
        image_column=image_column,
        per_site=per_site,
    ):
        sites: dict[str, dict[str, Any]] = {}
        for _, c in counts.iterrows():
            sites[str(c["site"])] = {"cases": int(c["cases"]), "errors": int(c["errors"]), "top": []}
        for _, row in top.iterrows():
            site = str(row["site"])
            sites[site]["top"].append(_case_row(row, shown, site, name_of(str(row["case_id"])), thumbnails or {}))
        out.append({"label": label, "threshold": threshold, "sites": sites})
    return {"task": task, "per_site": int(per_site), "attributes": list(shown), "rankings": out}
