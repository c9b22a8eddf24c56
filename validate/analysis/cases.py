"""The most confident errors per site, from a predictions table (a selection and a sort, no statistic).

Shared by the dashboard's Cases page and ``validate run``, which stores thumbnails of the same cases
in the bundle (:mod:`validate.thumbnails`), so the page and the bundle agree on which cases they are.

Binary (and each label of a multilabel task): a case is called positive when ``p >= threshold`` (the
operating-point rule of :mod:`validate.metrics.operating`); an error is a call that differs from the
label; its *confidence* is the probability the model gave to the wrong call (``p`` for a false
positive, ``1 - p`` for a false negative). Multiclass: the call is the most probable class and the
confidence its probability (top-label confidence, as in the top-label ECE). ``p`` is the stored
probability or, when only logits are stored, ``sigmoid(logit)`` / ``softmax(logits)``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np
import pandas as pd

from validate.metrics import sigmoid

SKIP_PREFIXES = ("logit", "p_", "y_", "img_", "emb_")
SKIP_COLUMNS = {"site", "case_id", "patient_id", "y", "p", "logit", "image", "acquired_at"}


def attribute_columns(pred: pd.DataFrame, declared: Sequence[str] = ()) -> list[str]:
    """The case attributes to show: the protocol's declared ones, else every non-score column."""
    cols = [c for c in declared if c in pred.columns]
    if cols:
        return cols
    return [c for c in pred.columns if c not in SKIP_COLUMNS and not c.startswith(SKIP_PREFIXES)]


def _binary_scores(pred: pd.DataFrame, suffix: str = "") -> Optional[np.ndarray]:
    if f"p{suffix}" in pred.columns:
        return pred[f"p{suffix}"].to_numpy(np.float64)
    if f"logit{suffix}" in pred.columns:
        return sigmoid(pred[f"logit{suffix}"].to_numpy(np.float64))
    return None


def _class_probabilities(pred: pd.DataFrame, classes: Sequence[str]) -> Optional[np.ndarray]:
    if all(f"p_{c}" in pred.columns for c in classes):
        return pred[[f"p_{c}" for c in classes]].to_numpy(np.float64)
    if all(f"logit_{c}" in pred.columns for c in classes):
        z = pred[[f"logit_{c}" for c in classes]].to_numpy(np.float64)
        z = z - z.max(axis=1, keepdims=True)  # the usual shift: softmax is unchanged, exp cannot overflow
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)
    return None


def confident_errors(pred: pd.DataFrame, *, task: str, classes: Sequence[str] = (), label: Optional[str] = None,
                     threshold: float = 0.5, per_site: int = 10, attributes: Sequence[str] = (),
                     image_column: str = "image") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Up to ``per_site`` errors per site, most confident first, and a per-site count.

    First frame: ``site``, ``case_id``, ``true``, ``called``, ``confidence``, ``p`` (binary: P(positive)),
    ``image`` (when recorded), then the attributes. Second: ``site``, ``cases``, ``errors``.
    """
    names = list(classes) if classes else ["0", "1"]
    if task == "multiclass":
        prob = _class_probabilities(pred, names)
        if prob is None:
            return pd.DataFrame(), pd.DataFrame()
        y = pred["y"].to_numpy()
        call = prob.argmax(axis=1)
        conf = prob.max(axis=1)
        p_col = None
        true = [names[int(v)] if 0 <= int(v) < len(names) else str(v) for v in y]
        called = [names[int(v)] for v in call]
    else:
        suffix = f"_{label}" if task == "multilabel" and label else ""
        p = _binary_scores(pred, suffix)
        ycol = f"y{suffix}"
        if p is None or ycol not in pred.columns:
            return pd.DataFrame(), pd.DataFrame()
        y = pred[ycol].to_numpy().astype(int)
        call = (p >= threshold).astype(int)
        conf = np.where(call == 1, p, 1.0 - p)
        p_col = p
        pair = names[:2] if task == "binary" and len(names) >= 2 else [f"no {label}", str(label)] \
            if task == "multilabel" else ["0", "1"]
        true = [pair[v] for v in y]
        called = [pair[v] for v in call]
    out = pd.DataFrame({"site": pred["site"].astype(str).to_numpy(), "case_id": pred["case_id"].astype(str).to_numpy(),
                        "true": true, "called": called, "confidence": conf})
    if p_col is not None:
        out["p"] = p_col
    if image_column in pred.columns:  # the image's path under the site's image root, when the bundle records it
        out["image"] = pred[image_column].to_numpy()
    for a in attributes:
        if a in pred.columns and a not in out.columns:
            out[a] = pred[a].to_numpy()
    is_error = np.asarray(call) != np.asarray(y)
    counts = pd.DataFrame({"site": out["site"], "error": is_error}).groupby("site", sort=False)["error"] \
        .agg(cases="size", errors="sum").reset_index()
    wrong = out[is_error]
    # stable sort so ties keep the file's order
    wrong = wrong.sort_values(["site", "confidence"], ascending=[True, False], kind="mergesort")
    return wrong.groupby("site", sort=False).head(per_site).reset_index(drop=True), counts
