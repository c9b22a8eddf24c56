"""The predictions table (DESIGN.md): one row per case, read, validated and written.

Columns: ``case_id`` (unique per site; defaults to the 1-based row number), ``site`` (defaults to
one site named ``"all"``), ``patient_id`` (defaults to ``case_id``); labels ``y`` (binary 0/1,
multiclass 0..K-1) or ``y_<label>`` (multilabel 0/1); scores ``logit``/``p`` (binary),
``logit_<class>``/``p_<class>`` (multiclass), ``logit_<label>``/``p_<label>`` (multilabel). Logits are
preferred; probabilities given without logits become logits after clipping to [1e-15, 1 − 1e-15]
(multiclass: log-probabilities with the same floor) and are kept as given for the metrics. Any other
column is a case attribute. Parquet is native; CSV with the same columns is accepted (a bare ``y,p``
CSV is a valid table).

Every problem is an :class:`~validate.errors.InputError` naming the file, the column, the 1-based data
row (CSV: the file line too) and what was expected; all problems are reported at once.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from validate.errors import InputError, ProblemCollector

PROB_FLOOR = 1e-15
TASKS = ("binary", "multiclass", "multilabel")
DEFAULT_SITE = "all"
RESERVED = {"case_id", "site", "patient_id", "y", "logit", "p"}
_PREFIXED = re.compile(r"^(y|logit|p)_(.+)$")


@dataclass
class PredictionsTable:
    """A checked predictions table.

    ``frame`` holds the standard columns (``case_id``, ``site``, ``patient_id`` as strings; labels;
    logits always; probabilities when they were given) plus attributes. ``names`` are the class names
    (multiclass; binary: None) or label names (multilabel), in column order.
    """

    frame: pd.DataFrame
    task: str
    names: Optional[list[str]] = None
    path: Optional[Path] = None
    given: str = "logit"  # which scores the file gave: "logit" or "p"
    notes: list[str] = field(default_factory=list)

    # -- identity columns
    def __len__(self) -> int:
        return len(self.frame)

    @property
    def case_ids(self) -> np.ndarray:
        return self.frame["case_id"].to_numpy(dtype=object)

    @property
    def patient_ids(self) -> np.ndarray:
        return self.frame["patient_id"].to_numpy(dtype=object)

    @property
    def site_ids(self) -> np.ndarray:
        return self.frame["site"].to_numpy(dtype=object)

    def sites(self) -> list[str]:
        """Site ids in order of first appearance."""
        return list(dict.fromkeys(self.frame["site"].tolist()))

    def attribute_columns(self) -> list[str]:
        return attribute_columns(self.frame, self.task, self.names)

    def subset(self, mask) -> "PredictionsTable":
        return PredictionsTable(self.frame.loc[np.asarray(mask, dtype=bool)].reset_index(drop=True), self.task,
                                self.names, self.path, self.given, list(self.notes))

    # -- labels and scores as float64/int arrays
    def y(self) -> np.ndarray:
        """Binary: 0/1 float64; multiclass: int64 class index."""
        if self.task == "multilabel":
            raise ValueError("multilabel tables have Y(), one column per label")
        v = self.frame["y"].to_numpy()
        return v.astype(np.int64) if self.task == "multiclass" else v.astype(np.float64)

    def Y(self) -> np.ndarray:
        """Multilabel labels [N, L] float64 0/1."""
        return self.frame[[f"y_{nm}" for nm in self.names]].to_numpy(dtype=np.float64)

    def logit(self) -> np.ndarray:
        """Binary logits [N]."""
        return self.frame["logit"].to_numpy(dtype=np.float64)

    def prob(self) -> np.ndarray:
        """Binary probabilities [N]: as given, else sigmoid(logit)."""
        if "p" in self.frame:
            return self.frame["p"].to_numpy(dtype=np.float64)
        from scipy.special import expit

        return expit(self.logit())

    def logits(self) -> np.ndarray:
        """Multiclass logits (or log-probabilities) [N, K]; multilabel logits [N, L]."""
        return self.frame[[f"logit_{nm}" for nm in self.names]].to_numpy(dtype=np.float64)

    def probs(self) -> np.ndarray:
        """Multiclass softmax probabilities [N, K] (as given when given); multilabel sigmoid [N, L]."""
        cols = [f"p_{nm}" for nm in self.names]
        if all(c in self.frame for c in cols):
            return self.frame[cols].to_numpy(dtype=np.float64)
        z = self.logits()
        if self.task == "multiclass":
            from scipy.special import softmax

            return softmax(z, axis=1)
        from scipy.special import expit

        return expit(z)


def attribute_columns(frame: pd.DataFrame, task: Optional[str] = None, names: Optional[Sequence[str]] = None) -> list[str]:
    """Columns of a predictions frame that are case attributes (not ids, labels or scores)."""
    scored = set(RESERVED)
    if names:
        for nm in names:
            scored |= {f"y_{nm}", f"logit_{nm}", f"p_{nm}"}
    else:
        scored |= {c for c in frame.columns if _PREFIXED.match(str(c))}
    return [c for c in frame.columns if c not in scored]


# ---------------------------------------------------------------- reading

def _read_frame(path: Path) -> tuple[pd.DataFrame, bool]:
    """The raw table and whether it came from CSV (for line numbers)."""
    if not path.exists():
        raise InputError("predictions file not found", file=path, expected="a .parquet or .csv file")
    if path.is_dir():
        raise InputError("is a folder, not a predictions file", file=path, expected="a .parquet or .csv file")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        try:
            return pd.read_parquet(path), False
        except Exception as exc:  # pyarrow raises several types for a non-parquet file
            raise InputError(f"not a readable Parquet table ({type(exc).__name__}: {exc})", file=path,
                             expected="a Parquet file with the predictions columns") from None
    try:
        df = pd.read_csv(path, skipinitialspace=True, keep_default_na=True)
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text", file=path, expected="a CSV table with a header row") from None
    except pd.errors.EmptyDataError:
        raise InputError("file is empty", file=path, expected="a header row and one row per case") from None
    except pd.errors.ParserError as exc:
        raise InputError(f"not a readable CSV table: {str(exc).strip()}", file=path,
                         expected="comma-separated columns with a header row") from None
    df.columns = [str(c).strip() for c in df.columns]
    return df, True


def infer_task(columns: Sequence[str]) -> str:
    """binary if ``logit``/``p`` columns, multilabel if ``y_<label>`` columns, multiclass if
    ``logit_<class>``/``p_<class>`` columns without ``y_<label>``."""
    cols = set(columns)
    if any(str(c).startswith("y_") for c in cols):
        return "multilabel"
    if "logit" in cols or "p" in cols:
        return "binary"
    if any(_PREFIXED.match(str(c)) and not str(c).startswith("y_") for c in cols):
        return "multiclass"
    raise InputError("cannot tell the task from the columns", field="columns",
                     expected="`y` with `logit` or `p` (binary), `y` with `logit_<class>`/`p_<class>` "
                              "(multiclass), or `y_<label>` with `logit_<label>`/`p_<label>` (multilabel)")


def _suffixes(columns, prefix: str) -> list[str]:
    return [str(c)[len(prefix) + 1:] for c in columns if str(c).startswith(prefix + "_")]


class _Checker:
    def __init__(self, path: Optional[Path], csv: bool):
        self.path = path
        self.csv = csv
        self.problems = ProblemCollector()

    def error(self, message: str, *, row: Optional[int] = None, field: Optional[str] = None,
              expected: Optional[str] = None) -> InputError:
        # row: 0-based data row; reported 1-based, and as a file line (header = line 1) for CSV
        return InputError(message, file=self.path, row=None if row is None else row + 1,
                          line=None if row is None or not self.csv else row + 2, field=field, expected=expected)

    def add(self, *a, **k) -> None:
        self.problems.add(self.error(*a, **k))

    def numeric(self, df: pd.DataFrame, col: str, *, what: str) -> Optional[np.ndarray]:
        raw = df[col]
        num = pd.to_numeric(raw, errors="coerce")
        bad_text = num.isna() & raw.notna()
        if bad_text.any():
            i = int(np.flatnonzero(bad_text.to_numpy())[0])
            self.add(f"{_show(raw.iloc[i])} is not a number ({int(bad_text.sum())} such row(s))", row=i, field=col,
                     expected=what)
            return None
        missing = num.isna()
        if missing.any():
            i = int(np.flatnonzero(missing.to_numpy())[0])
            self.add(f"missing value ({int(missing.sum())} such row(s))", row=i, field=col, expected=what)
            return None
        v = num.to_numpy(dtype=np.float64)
        inf = ~np.isfinite(v)
        if inf.any():
            i = int(np.flatnonzero(inf)[0])
            self.add(f"{float(v[i])} is not finite", row=i, field=col, expected=what)
            return None
        return v

    def labels01(self, df, col) -> Optional[np.ndarray]:
        v = self.numeric(df, col, what="0 or 1")
        if v is None:
            return None
        bad = (v != 0) & (v != 1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            self.add(f"label {_show(df[col].iloc[i])} ({int(bad.sum())} such row(s))", row=i, field=col, expected="0 or 1")
            return None
        return v.astype(np.int64)

    def probability(self, df, col) -> Optional[np.ndarray]:
        v = self.numeric(df, col, what="a probability in [0, 1]")
        if v is None:
            return None
        bad = (v < 0) | (v > 1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            self.add(f"{float(v[i])!r} is outside [0, 1] ({int(bad.sum())} such row(s))", row=i, field=col,
                     expected="a probability in [0, 1]")
            return None
        return v


def _show(v) -> str:
    return repr(v.item() if hasattr(v, "item") else v)


def _clip_log(p: np.ndarray) -> np.ndarray:
    return np.log(np.clip(p, PROB_FLOOR, 1 - PROB_FLOOR))


def _ids(df: pd.DataFrame, col: str, default) -> pd.Series:
    if col not in df:
        return default
    s = df[col]
    return s.map(lambda v: "" if pd.isna(v) else (str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)))


def table_from_frame(df: pd.DataFrame, *, task: Optional[str] = None, class_names: Optional[Sequence[str]] = None,
                     label_names: Optional[Sequence[str]] = None, path: Optional[Path] = None,
                     csv: bool = False) -> PredictionsTable:
    """Check a raw predictions DataFrame and standardise it (see the module docstring)."""
    chk = _Checker(path, csv)
    df = df.reset_index(drop=True)
    if df.shape[1] == 0:
        raise chk.error("no columns", expected="a header row with at least `y` and `logit` or `p`")
    dup = [c for c in df.columns[df.columns.duplicated()]]
    if dup:
        raise chk.error(f"duplicate column(s) {dup}", field=str(dup[0]), expected="unique column names")
    if task is None:
        try:
            task = infer_task(df.columns)
        except InputError as exc:
            exc.file = str(path) if path else None
            raise
    if task not in TASKS:
        raise chk.error(f"unknown task {task!r}", field="task", expected=" | ".join(TASKS))
    if len(df) == 0:
        raise chk.error("no rows", expected="one row per case")

    out = pd.DataFrame(index=df.index)
    rows = pd.Series([str(i + 1) for i in range(len(df))], index=df.index)
    out["case_id"] = _ids(df, "case_id", rows)
    out["site"] = _ids(df, "site", pd.Series([DEFAULT_SITE] * len(df), index=df.index))
    out["patient_id"] = _ids(df, "patient_id", out["case_id"])
    for col in ("case_id", "site"):
        empty = out[col] == ""
        if empty.any():
            chk.add("missing value", row=int(np.flatnonzero(empty.to_numpy())[0]), field=col, expected="an identifier")
    blank_patient = out["patient_id"] == ""
    out.loc[blank_patient, "patient_id"] = out.loc[blank_patient, "case_id"]
    dupe = out.duplicated(["site", "case_id"])
    if dupe.any() and "case_id" in df:
        i = int(np.flatnonzero(dupe.to_numpy())[0])
        chk.add(f"case_id {out['case_id'].iloc[i]!r} repeats within site {out['site'].iloc[i]!r}", row=i,
                field="case_id", expected="case ids unique per site")

    names: Optional[list[str]] = None
    given = "logit"
    if task == "binary":
        if "y" not in df:
            chk.add("missing column", field="y", expected="binary labels 0/1")
        else:
            y = chk.labels01(df, "y")
            if y is not None:
                out["y"] = y
        if "logit" in df:
            z = chk.numeric(df, "logit", what="a finite logit")
            if z is not None:
                out["logit"] = z
            if "p" in df:
                p = chk.probability(df, "p")
                if p is not None:
                    out["p"] = p
        elif "p" in df:
            given = "p"
            p = chk.probability(df, "p")
            if p is not None:
                out["p"] = p
                q = np.clip(p, PROB_FLOOR, 1 - PROB_FLOOR)
                out["logit"] = np.log(q) - np.log1p(-q)
        else:
            chk.add("missing column", field="logit", expected="binary scores `logit` (or probabilities `p`)")
    elif task == "multiclass":
        names = list(class_names) if class_names else list(dict.fromkeys(_suffixes(df.columns, "logit")
                                                                       or _suffixes(df.columns, "p")))
        if len(names) < 2:
            chk.add("missing columns", field="logit_<class>",
                    expected="one `logit_<class>` or `p_<class>` column per class")
        have_logits = names and all(f"logit_{nm}" in df for nm in names)
        have_probs = names and all(f"p_{nm}" in df for nm in names)
        if names and not (have_logits or have_probs):
            miss = [f"logit_{nm}" for nm in names if f"logit_{nm}" not in df]
            chk.add("missing column(s) " + ", ".join(miss), field=miss[0],
                    expected=f"`logit_<class>` or `p_<class>` for every class {names}")
        if have_logits:
            for nm in names:
                z = chk.numeric(df, f"logit_{nm}", what="a finite logit")
                if z is not None:
                    out[f"logit_{nm}"] = z
        if have_probs:
            given = "logit" if have_logits else "p"
            for nm in names:
                p = chk.probability(df, f"p_{nm}")
                if p is not None:
                    out[f"p_{nm}"] = p
                    if not have_logits:
                        out[f"logit_{nm}"] = _clip_log(p)
        if "y" not in df:
            chk.add("missing column", field="y", expected=f"class index 0..{max(len(names), 2) - 1}")
        elif names:
            y = _multiclass_labels(chk, df["y"], names)
            if y is not None:
                out["y"] = y
    else:  # multilabel
        names = list(label_names) if label_names else _suffixes(df.columns, "y")
        if not names:
            chk.add("missing columns", field="y_<label>", expected="one `y_<label>` column per label")
        for nm in names:
            if f"y_{nm}" not in df:
                chk.add("missing column", field=f"y_{nm}", expected="labels 0/1")
                continue
            y = chk.labels01(df, f"y_{nm}")
            if y is not None:
                out[f"y_{nm}"] = y
            if f"logit_{nm}" in df:
                z = chk.numeric(df, f"logit_{nm}", what="a finite logit")
                if z is not None:
                    out[f"logit_{nm}"] = z
                if f"p_{nm}" in df:
                    p = chk.probability(df, f"p_{nm}")
                    if p is not None:
                        out[f"p_{nm}"] = p
            elif f"p_{nm}" in df:
                given = "p"
                p = chk.probability(df, f"p_{nm}")
                if p is not None:
                    out[f"p_{nm}"] = p
                    q = np.clip(p, PROB_FLOOR, 1 - PROB_FLOOR)
                    out[f"logit_{nm}"] = np.log(q) - np.log1p(-q)
            else:
                chk.add("missing column", field=f"logit_{nm}", expected=f"scores `logit_{nm}` or `p_{nm}`")
    chk.problems.raise_if_any()
    for c in attribute_columns(df, task, names):
        if c not in out:
            out[c] = df[c]
    return PredictionsTable(out, task, names, path, given)


def _multiclass_labels(chk: _Checker, col: pd.Series, names: list[str]) -> Optional[np.ndarray]:
    K = len(names)
    lookup = {nm: i for i, nm in enumerate(names)}
    lookup.update({str(i): i for i in range(K)})
    vals = []
    for i, v in enumerate(col.tolist()):
        key = v
        if isinstance(v, float) and not np.isnan(v) and v.is_integer():
            key = str(int(v))
        elif not isinstance(v, str):
            key = None if (isinstance(v, float) and np.isnan(v)) or v is None else str(v)
        if key is None or key.strip() not in lookup:
            chk.add("missing label" if key is None else f"label {_show(v)} is not a class", row=i, field="y",
                    expected=f"a class index 0..{K - 1} or a name in {names}")
            return None
        vals.append(lookup[key.strip()])
    return np.asarray(vals, dtype=np.int64)


def read_predictions(path: str | Path, *, task: Optional[str] = None, class_names: Optional[Sequence[str]] = None,
                     label_names: Optional[Sequence[str]] = None) -> PredictionsTable:
    """Read and check a predictions table (Parquet by suffix ``.parquet``/``.pq``, else CSV).

    ``task`` (binary | multiclass | multilabel) is inferred from the columns when not given;
    ``class_names``/``label_names`` (from the protocol) fix the expected score columns and their order.
    Raises :class:`~validate.errors.InputError` (or ``InputErrors``) naming file, column, row, expected.
    """
    path = Path(path)
    df, csv = _read_frame(path)
    return table_from_frame(df, task=task, class_names=class_names, label_names=label_names, path=path, csv=csv)


def write_predictions(table: PredictionsTable | pd.DataFrame, path: str | Path) -> None:
    """Write atomically: Parquet when the suffix is ``.parquet``/``.pq``, else CSV (no index)."""
    from validate.io import atomic_path

    df = table.frame if isinstance(table, PredictionsTable) else table
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix.lower() in (".parquet", ".pq"):
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)
