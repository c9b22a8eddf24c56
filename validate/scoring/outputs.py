"""From model outputs to the predictions table (DESIGN.md) and failures.csv.

Model outputs become logits as the protocol says (``model.output``): binary ``[N, 1]`` is the positive
class's logit (or probability); binary ``[N, 2]`` is per class, in the order of ``classes``, and
becomes ``logit = l_pos - l_neg`` (the log-odds of the two-class softmax) or ``p_pos``; multiclass
``[N, K]`` gives ``logit_<class>``; multilabel ``[N, L]`` gives ``logit_<label>``. Probabilities
become logits after clipping to [1e-15, 1 - 1e-15] (multiclass: log-probabilities log(clip(p, 1e-15,
1))), as :mod:`validate.numerics` defines them, as DESIGN.md requires, never coarser.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from validate.errors import InputError
from validate.numerics import log_probability, logit

FAILURE_COLUMNS = ["site", "case_id", "reason", "stage"]


def logit_columns(task: str, classes: list[str] | None, labels: list[str] | None) -> list[str]:
    if task == "binary":
        return ["logit"]
    if task == "multiclass":
        return [f"logit_{c}" for c in classes or []]
    return [f"logit_{label}" for label in labels or []]


def make_to_logits(
    *, task: str, n_columns: int, output: str, positive_index: int, checkpoint: Path, fmt: str
) -> Callable[[np.ndarray], np.ndarray]:
    """A function mapping raw model output ``[n, k]`` to logits ``[n, n_columns]`` (float64)."""
    from validate.scoring.checkpoints import FORMAT_NAMES

    def shape_error(k: int) -> InputError:
        if task == "binary":
            expected = "[N, 1] (positive-class logit) or [N, 2] (one column per class)"
        else:
            expected = f"[N, {n_columns}] (one column per {'class' if task == 'multiclass' else 'label'})"
        return InputError(
            f"{FORMAT_NAMES.get(fmt, fmt)} checkpoint returns {k} value(s) per case, which does not "
            f"fit the protocol's {task} task",
            file=checkpoint,
            field="model.checkpoint",
            expected=expected,
        )

    def convert(values: np.ndarray) -> np.ndarray:
        v = np.asarray(values, dtype=np.float64)
        k = v.shape[1]
        if task == "binary":
            if k == 1:
                col = v[:, 0]
            elif k == 2:
                neg = 1 - positive_index
                col = v[:, positive_index] - v[:, neg] if output == "logits" else v[:, positive_index]
            else:
                raise shape_error(k)
            if output == "probabilities":
                col = logit(col)
            return col[:, None]
        if k != n_columns:
            raise shape_error(k)
        if output == "logits":
            return v
        if task == "multiclass":
            return log_probability(v)
        return logit(v)

    return convert


def predictions_frame(
    cases: Any,
    logits: np.ndarray,
    columns: list[str],
    ok: np.ndarray,
    *,
    task: str,
    labels: list[str] | None,
    attributes: list[str],
    features: list[str] | None = None,
    image_stats: np.ndarray | None = None,
    equipment: np.ndarray | None = None,
    acquisition: np.ndarray | None = None,
) -> Any:
    """DESIGN.md's predictions table for one site: scored cases only (failures go to failures.csv).

    Besides ids, labels, logits, the protocol's ``attributes`` and ``acquired_at``, the table carries
    what validate.analysis.shift compares between sites, each column only if no column of that name
    is already there:

    - ``features`` (tabular inputs): each feature under its manifest name, as float64 with NaN where
      missing (from the cohort's ``feature:<name>`` column when it has one);
    - ``image_stats`` (image inputs, ``[n_cases, len(IMAGE_STAT_COLUMNS)]`` in manifest order): the
      columns of :func:`validate.scoring.inputs.image_stats`;
    - ``equipment`` (str ``[n_cases, 2]``, ``""`` unknown): ``manufacturer`` and ``manufacturer_model``
      from the DICOM tags, each added only when some case of the site has it (missing: None);
    - ``acquisition`` (volumes; str ``[n_cases, len(ACQUISITION_COLUMNS)]``, ``""`` unknown):
      ``convolution_kernel`` (text, None where missing) and the numeric ``acq_*`` columns (float64,
      NaN where missing) of :mod:`validate.scoring.volume_inputs`, each only when some case has it.
    """
    import pandas as pd

    keep = np.flatnonzero(ok)
    sub = cases.iloc[keep].reset_index(drop=True)
    out = pd.DataFrame(
        {
            "case_id": sub["case_id"].astype(str),
            "site": sub["site"].astype(str),
            "patient_id": sub["patient_id"].astype(str),
        }
    )
    if task == "multilabel":
        for label in labels or []:
            out[f"y_{label}"] = sub[f"y_{label}"].astype("int64")
    else:
        out["y"] = sub["y"].astype("int64")
    for j, name in enumerate(columns):
        out[name] = logits[keep, j].astype(np.float64)
    for attr in attributes:
        if attr in sub.columns and attr not in out.columns:
            out[attr] = sub[attr].to_numpy()
    if "acquired_at" in sub.columns and "acquired_at" not in out.columns:
        out["acquired_at"] = sub["acquired_at"].to_numpy()
    for feat in features or []:
        source = f"feature:{feat}" if f"feature:{feat}" in sub.columns else feat
        if feat not in out.columns and source in sub.columns:
            out[feat] = pd.to_numeric(sub[source], errors="coerce").to_numpy(dtype=np.float64)
    if image_stats is not None:
        from validate.scoring.inputs import IMAGE_STAT_COLUMNS

        values = np.asarray(image_stats, dtype=np.float64)[keep]
        for j, name in enumerate(IMAGE_STAT_COLUMNS):
            if name not in out.columns:
                out[name] = values[:, j]
    if acquisition is not None:  # volumes: kernel, slice thickness, kVp, native spacing
        from validate.scoring.volume_inputs import acquisition_columns

        for name, values in acquisition_columns(acquisition, keep).items():
            if name not in out.columns and name not in sub.columns:  # a manifest column wins, as for equipment
                out[name] = pd.Series(values, dtype=object if isinstance(values, list) else np.float64)
    if equipment is not None:
        from validate.scoring.inputs import EQUIPMENT_COLUMNS

        tags = np.asarray(equipment, dtype=object).reshape(-1, 2)[keep]
        for j, name in enumerate(EQUIPMENT_COLUMNS):
            col = [str(v) if v else None for v in tags[:, j]]
            # a manifest column of that name wins, carried or not: the study's own record of the case
            if name not in out.columns and name not in sub.columns and any(v is not None for v in col):
                out[name] = pd.Series(col, dtype=object)
    return out


def failures_frame(rows: list[tuple[str, str, str, str]]) -> Any:
    import pandas as pd

    return pd.DataFrame(rows, columns=FAILURE_COLUMNS).astype(str)


def strict_failure(n_failed: int, first: tuple[str, str, str, str], listed_in: Path) -> InputError:
    """The error of ``--strict`` when ``n_failed`` cases could not be scored; ``first`` is the first
    failure's (site, case id, reason, stage)."""
    return InputError(
        f"{n_failed} case(s) could not be scored and --strict makes that fatal; first: "
        f"site {first[0]}, case {first[1]}: {first[2]} (all listed in {listed_in})",
        field="--strict",
    )


def write_predictions(
    df: Any, path: Path, *, task: str | None = None, classes: list[str] | None = None, labels: list[str] | None = None
) -> None:
    """Check the table against the contract (validate.predictions, when there) and write it atomically."""
    try:
        from validate import predictions as shared
    except ImportError:
        shared = None
    check = getattr(shared, "table_from_frame", None) if shared is not None else None
    if check is not None and task is not None and len(df):
        # our own output must satisfy the contract every reader applies; a violation here is a bug
        check(
            df,
            task=task,
            class_names=classes if task == "multiclass" else None,
            label_names=labels if task == "multilabel" else None,
        )
    writer = getattr(shared, "write_predictions", None) if shared is not None else None
    if writer is not None:
        writer(df, path)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    from validate.io import atomic_path

    with atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp)


def write_failures(df: Any, path: Path) -> None:
    from validate.escape import csv_safe  # no spreadsheet formula from a case id or reason (OWASP)
    from validate.io import atomic_write_text

    atomic_write_text(path, csv_safe(df).to_csv(index=False))


def read_predictions_file(
    path: Path, *, task: str, classes: list[str] | None = None, labels: list[str] | None = None
) -> Any:
    """A predictions table made elsewhere (the ``predictions`` checkpoint format), checked as
    validate.predictions checks any predictions file, as a DataFrame."""
    try:
        from validate import predictions as shared
    except ImportError:
        shared = None
    reader = getattr(shared, "read_predictions", None) if shared is not None else None
    if reader is not None:
        table = reader(
            path,
            task=task,
            class_names=classes if task == "multiclass" else None,
            label_names=labels if task == "multilabel" else None,
        )
        return getattr(table, "frame", table)
    import pandas as pd

    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path, dtype={"case_id": str, "site": str, "patient_id": str})
        return pd.read_parquet(path)
    except Exception as exc:
        raise InputError(
            f"predictions file could not be read: {type(exc).__name__}: {exc}",
            file=path,
            field="model.checkpoint",
            expected="a parquet or CSV predictions table",
        ) from None
