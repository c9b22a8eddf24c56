"""The predictions table (DESIGN.md): one row per case, read, validated and written.

Columns: ``case_id`` (unique per site; defaults to the 1-based row number), ``site`` (defaults to
one site named ``"all"``), ``patient_id`` (defaults to ``case_id``); labels ``y`` (binary 0/1,
multiclass 0..K-1) or ``y_<label>`` (multilabel 0/1); scores ``logit``/``p`` (binary),
``logit_<class>``/``p_<class>`` (multiclass), ``logit_<label>``/``p_<label>`` (multilabel).

One reader, logits preferred (DESIGN.md): when a score is given both as logits and as probabilities,
the two must agree — |clip(sigmoid(logit)) − clip(p)| <= :data:`AGREEMENT` for every row (multiclass:
softmax of the logits against the probabilities), both clipped to [1e-15, 1 − 1e-15] — else bad input;
the logits are then the table's scores and the probabilities are dropped. Probabilities given without
logits are kept as given; their logits (logit(p) with p clipped to [1e-15, 1 − 1e-15]; multiclass:
log-probabilities log(clip(p, 1e-15, 1))) are derived on demand, never stored, so a standardised
frame read again is read the same way. Multiclass probability rows must sum to 1 within :data:`ROW_SUM_TOLERANCE`.

Ranking metrics rank :meth:`PredictionsTable.score` / :meth:`PredictionsTable.scores`: the logits when
given (sigmoid saturates to 1.0 above ~36.7 in float64 and would tie distinct cases), else the
probabilities.

This module is the only parser of the predictions contract (task, labels, scores, ids, attributes):
every analysis takes a :class:`PredictionsTable` (:func:`as_table` turns a DataFrame into one) and
reads its arrays — :meth:`~PredictionsTable.labels`, :meth:`~PredictionsTable.probabilities`,
:meth:`~PredictionsTable.scores`, :meth:`~PredictionsTable.logits`, shaped (n,) for binary and
(n, K) / (n, L) otherwise — and its views (:meth:`~PredictionsTable.site`,
:meth:`~PredictionsTable.by_site`, :meth:`~PredictionsTable.subset`); nothing else reads the
``y``/``logit``/``p`` columns by name. The floor and the transforms are :mod:`validate.numerics`.

Identifiers (``case_id``, ``site``, ``patient_id``) and the ``text_columns`` a caller declares
(categorical attributes) are strings, never type-guessed: a CSV is read with those columns as text
(``"007"`` stays ``"007"``); a Parquet/DataFrame column of integers becomes their decimal text, and a
float column is accepted only where every value is a whole number below 2^53 (``7.0`` → ``"7"``, as
the integer it stands for) — a fraction, or a float too large to hold every digit, is bad input.
The bootstrap cluster of a case is (site, patient_id) (:func:`cluster_keys`); without a
``patient_id`` that is (site, case_id), so equal case ids at two sites are two clusters.

Any other column is a case attribute. Parquet is native; CSV with the same columns is accepted (a bare
``y,p`` CSV is a valid table); a CSV header naming a column twice is bad input.

Every problem is an :class:`~validate.errors.InputError` naming the file, the column, the 1-based data
row (CSV: the file line too) and what was expected; all problems are reported at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from validate.errors import InputError, ProblemCollector
from validate.numerics import PROB_FLOOR, log_probability, logit, one_vs_rest_log_odds, sigmoid, softmax

__all__ = [
    "PROB_FLOOR",
    "PredictionsTable",
    "as_table",
    "attribute_columns",
    "categorical_columns",
    "cluster_keys",
    "site_codes",
    "infer_task",
    "one_vs_rest_log_odds",
    "read_predictions",
    "table_from_frame",
    "write_predictions",
]
# logits and probabilities given together must agree this closely (in probability, both clipped)
AGREEMENT = 1e-6
# multiclass probability rows: |sum − 1| above this is bad input. Loose enough for probabilities
# stored in float32 (sums 1 ± ~1e-6) or rounded to 4 decimals for up to 20 classes; tight enough to
# catch per-class sigmoids or unnormalised scores (sums like 1.5).
ROW_SUM_TOLERANCE = 1e-3
ID_COLUMNS = ("case_id", "site", "patient_id")
TASKS = ("binary", "multiclass", "multilabel", "segmentation")
DEFAULT_SITE = "all"
RESERVED = {"case_id", "site", "patient_id", "y", "logit", "p"}
_PREFIXED = re.compile(r"^(y|logit|p)_(.+)$")

# ---- segmentation rows: one per (case, label), the per-case metrics computed while scoring (#20)
#: The overlap and distance metrics every segmentation row holds (distances in mm).
SEGMENTATION_METRICS = ("dice", "iou", "hd_mm", "hd95_mm", "assd_mm")
#: The size columns of a 2D row (mm²) or of a 3D row (mm³); a table holds one set or the other.
SEGMENTATION_SIZES = {
    "area": ("area_ref_mm2", "area_pred_mm2", "area_error_mm2"),
    "volume": ("volume_ref_mm3", "volume_pred_mm3", "volume_error_mm3"),
}
#: 0/1 flags: the reference / the predicted mask is empty.
SEGMENTATION_FLAGS = ("ref_empty", "pred_empty")
#: Optional metric columns: the normalised surface Dice at each tolerance (``nsd_2mm``, ``nsd_1p5mm``),
#: the biometry (``hc_*``) and the model's expected size (Σp × pixel area or voxel volume).
_SEGMENTATION_OPTIONAL = re.compile(
    r"^(nsd_[0-9pe+-]+mm|hc_(ref|pred|error|abs_error)_mm|(area|volume)_expected_mm[23])$"
)


@dataclass
class PredictionsTable:
    """A checked predictions table.

    ``frame`` holds the standard columns (``case_id``, ``site``, ``patient_id`` as strings; labels;
    the scores in the one form they are read from: logits when given, else probabilities) plus
    attributes. ``names`` are the class names
    (multiclass; binary: None) or label names (multilabel), in column order.
    """

    frame: pd.DataFrame
    task: str
    names: list[str] | None = None
    path: Path | None = None
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
        return list(pd.unique(self.frame["site"]))

    def attribute_columns(self) -> list[str]:
        return attribute_columns(self.frame, self.task, self.names)

    # -- segmentation rows (one per case and label)
    def segmentation_labels(self) -> np.ndarray:
        """Segmentation: the label of each row (text)."""
        return self.frame["label"].to_numpy(dtype=object)

    def metric_columns(self) -> list[str]:
        """Segmentation: the per-case metric columns the table holds, in table order."""
        return [c for c in self.frame.columns if is_segmentation_metric(c)]

    def metric(self, name: str) -> np.ndarray:
        """Segmentation: one per-case metric column as float64 (NaN where the empty-mask policy
        excluded the case: reference and prediction both empty)."""
        if not is_segmentation_metric(name) or name not in self.frame:
            raise KeyError(f"{name!r} is not a segmentation metric column of this table")
        return self._column(name)

    def subset(self, mask) -> PredictionsTable:
        return PredictionsTable(
            self.frame.loc[np.asarray(mask, dtype=bool)].reset_index(drop=True),
            self.task,
            self.names,
            self.path,
            self.given,
            list(self.notes),
        )

    # -- views
    def site(self, site_id: str) -> PredictionsTable:
        """The cases of one site, as a table of their own (rows renumbered from 0)."""
        return self.subset(self.frame["site"].astype(str).to_numpy() == str(site_id))

    def by_site(self, sites: Sequence[str] | None = None) -> Iterator[tuple[str, PredictionsTable]]:
        """(site, table of its cases) for each site of ``sites`` (default: every site in order of first
        appearance) that has cases."""
        ids = self.frame["site"].astype(str).to_numpy()
        for s in self.sites() if sites is None else sites:
            mask = ids == str(s)
            if mask.any():
                yield str(s), self.subset(mask)

    def with_attributes(self, columns: pd.DataFrame) -> PredictionsTable:
        """The table with ``columns`` (row-aligned, e.g. derived subgroup columns) added as case
        attributes; a column of the same name is replaced. Ids, labels and scores are untouched."""
        frame = self.frame.copy()
        columns = columns.reset_index(drop=True)
        for c in columns.columns:
            if c in ID_COLUMNS or c in RESERVED or _PREFIXED.match(str(c)):
                raise ValueError(f"{c!r} is a predictions column, not an attribute")
            frame[c] = columns[c].to_numpy()
        return PredictionsTable(frame, self.task, self.names, self.path, self.given, list(self.notes))

    def keep_attributes(self, columns: Sequence[str]) -> PredictionsTable:
        """The table with only the case attributes in ``columns`` (ids, labels and scores kept): a
        lighter table to split by site when an analysis reads only a few attributes."""
        drop = set(self.attribute_columns()) - set(columns)
        keep = [c for c in self.frame.columns if c not in drop]
        return PredictionsTable(self.frame[keep], self.task, self.names, self.path, self.given, list(self.notes))

    # -- labels and scores as float64/int arrays, shaped by the task: (n,) for binary, (n, K) for
    # multiclass scores, (n, L) for multilabel. These are the only readers of the label and score
    # columns; every analysis takes its arrays from here.
    def labels(self) -> np.ndarray:
        """Binary (n,) float64 0/1; multiclass (n,) int64 class index into :attr:`names`; multilabel
        (n, L) float64 0/1."""
        if self.task == "multilabel":
            return self.frame[[f"y_{nm}" for nm in self.names]].to_numpy(dtype=np.float64)
        v = self.frame["y"].to_numpy()
        return v.astype(np.int64) if self.task == "multiclass" else v.astype(np.float64)

    def probabilities(self) -> np.ndarray:
        """P(positive) (binary), class probabilities (multiclass; softmax of the logits when given,
        else as given — not renormalised, rows sum to 1 within :data:`ROW_SUM_TOLERANCE`), per-label
        P(label) (multilabel): sigmoid(logit) when the logits were given, else p as given."""
        if self.task == "binary":
            return sigmoid(self._column("logit")) if "logit" in self.frame else self._column("p")
        if self.task == "multiclass":
            if self._has_logits():
                return softmax(self.logits(), axis=1)
            return self.frame[[f"p_{nm}" for nm in self.names]].to_numpy(dtype=np.float64)
        return np.column_stack(
            [
                sigmoid(self._column(f"logit_{nm}")) if f"logit_{nm}" in self.frame else self._column(f"p_{nm}")
                for nm in self.names
            ]
        )

    def logits(self) -> np.ndarray:
        """Logits as given, else derived from the probabilities after the floor: binary and per label
        logit(clip(p)); multiclass log(clip(p)) (log-probabilities, exact stand-ins for logits)."""
        if self.task == "binary":
            return self._column("logit") if "logit" in self.frame else logit(self._column("p"))
        return np.column_stack([self._label_logit(nm) for nm in self.names])

    def scores(self) -> np.ndarray:
        """What ranking statistics (AUROC, AUPRC, ROC and PR curves) rank, shaped as
        :meth:`probabilities` and monotone in it, without the float64 saturation of sigmoid/softmax
        (which ties every logit above ~36.7 at 1.0): binary and per label the logit when given;
        multiclass the one-vs-rest log-odds z_k − logsumexp_{j≠k} z_j = log(p_k / (1 − p_k)) when
        logits were given; else the probabilities as given."""
        if self.task == "binary":
            return self._column("logit") if "logit" in self.frame else self._column("p")
        if self.task == "multiclass":
            if self._has_logits():
                return one_vs_rest_log_odds(self.logits())
            return self.probabilities()
        return np.column_stack([self.score_of(nm) for nm in self.names])

    def score_of(self, nm: str) -> np.ndarray:
        """Multilabel ranking score of one label: its logit when given, else its p."""
        return self._column(f"logit_{nm}") if f"logit_{nm}" in self.frame else self._column(f"p_{nm}")

    def _has_logits(self) -> bool:
        return all(f"logit_{nm}" in self.frame for nm in self.names)

    def _column(self, name: str) -> np.ndarray:
        return self.frame[name].to_numpy(dtype=np.float64)

    def _label_logit(self, nm: str) -> np.ndarray:
        if f"logit_{nm}" in self.frame:
            return self._column(f"logit_{nm}")
        p = self._column(f"p_{nm}")
        return log_probability(p) if self.task == "multiclass" else logit(p)

    # -- the same arrays under their per-shape names (kept for existing callers)
    def y(self) -> np.ndarray:
        """Binary or multiclass :meth:`labels`."""
        if self.task == "multilabel":
            raise ValueError("multilabel tables have Y(), one column per label")
        return self.labels()

    def Y(self) -> np.ndarray:
        """Multilabel :meth:`labels` [N, L]."""
        return self.frame[[f"y_{nm}" for nm in self.names]].to_numpy(dtype=np.float64)

    def logit(self) -> np.ndarray:
        """Binary :meth:`logits` [N]."""
        return self._column("logit") if "logit" in self.frame else logit(self._column("p"))

    def prob(self) -> np.ndarray:
        """Binary :meth:`probabilities` [N]."""
        return sigmoid(self._column("logit")) if "logit" in self.frame else self._column("p")

    def score(self) -> np.ndarray:
        """Binary :meth:`scores` [N]."""
        return self._column("logit") if "logit" in self.frame else self._column("p")

    def probs(self) -> np.ndarray:
        """Multiclass or multilabel :meth:`probabilities`."""
        return self.probabilities()

    def clusters(self, column: str | None = "patient_id") -> np.ndarray | None:
        """Bootstrap cluster keys (site, ``column``): see :func:`cluster_keys`."""
        return cluster_keys(self.frame, column)


def as_table(
    table,
    *,
    task: str | None = None,
    class_names: Sequence[str] | None = None,
    label_names: Sequence[str] | None = None,
) -> PredictionsTable:
    """``table`` as a :class:`PredictionsTable`: itself when it is one, else a predictions DataFrame
    checked and standardised by :func:`table_from_frame` (the one parser of the predictions contract).
    The entry point of every analysis that accepts either."""
    if isinstance(table, PredictionsTable):
        if task is not None and task != table.task:
            raise ValueError(f"table holds a {table.task} task, not {task}")
        return table
    return table_from_frame(table, task=task, class_names=class_names or None, label_names=label_names or None)


def cluster_keys(frame: pd.DataFrame, column: str | None = "patient_id") -> np.ndarray | None:
    """Bootstrap cluster of each case: the pair (site, ``column``) as one int64 code, or None when
    ``column`` is None or absent. A patient id is only unique within its site (a site's ``c0`` is
    not another site's ``c0``; ``patient_id`` defaults to ``case_id``), and every bootstrap stratified
    by site resamples (site, cluster) units anyway, so qualifying by site changes nothing there and
    keeps an unstratified pooled bootstrap from merging cases of different sites.

    The codes order the cases as the text keys ``site + "\\x1f" + str(value)`` sort (by code
    point), which is the order the bootstrap numbers its units in (:func:`validate.metrics.bootstrap._codes`
    ranks whatever it is given): the same draws as from the text keys, without a Python string per
    case. Equal codes are equal keys. A subset of the codes keeps their order, so a block may slice
    the table's codes instead of recomputing them."""
    if not column or column not in frame:
        return None
    site = frame["site"] if "site" in frame else pd.Series(DEFAULT_SITE, index=frame.index, dtype="str")
    values = frame[column]
    site_rank, site_text = _text_ranks(site)
    value_rank, value_text = _text_ranks(values)
    if site_text is None or value_text is None or not _pair_order_is_text_order(site_text, value_text):
        return _text_cluster_codes(site, values)
    n_values = int(value_rank.max()) + 1 if value_rank.size else 1
    return site_rank * n_values + value_rank


def site_codes(frame: pd.DataFrame) -> np.ndarray:
    """Each case's site as an int32 code ordered as the site ids sort as text (the order the
    bootstrap numbers its strata in, :func:`validate.metrics.bootstrap._codes`): the strata of a
    stratified bootstrap without a Python string per case."""
    site = frame["site"] if "site" in frame else pd.Series(DEFAULT_SITE, index=frame.index, dtype="str")
    rank, text = _text_ranks(site)
    if text is None or pc.any(pc.match_substring(text, "\x00")).as_py():
        _, rank = np.unique(site.astype(str).to_numpy(dtype=object).astype(str), return_inverse=True)
    return rank.reshape(-1).astype(np.int32)


def _text_ranks(values: pd.Series) -> tuple[np.ndarray, pa.Array | None]:
    """Each case's dense rank (int64) among the distinct texts ``str(value)`` of the column, in code
    point order, and those texts; texts None for a column with missing values (their text keys are
    not site-qualified: :func:`_text_cluster_codes` keeps that)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    if (codes < 0).any():
        return codes, None
    try:
        texts = pa.array(pd.Series(uniques).astype(str).array)
    except (pa.ArrowException, UnicodeEncodeError):  # text Arrow cannot hold (lone surrogates)
        return codes, None
    # dense: two values with one text (1 and "1" in an object column) are one key, as the text keys were
    rank_of_unique = pc.rank(texts, sort_keys="ascending", tiebreaker="dense").to_numpy().astype(np.int64) - 1
    return rank_of_unique[codes], texts


def _pair_order_is_text_order(site_text: pa.Array, value_text: pa.Array) -> bool:
    """Whether (site rank, value rank) orders the pairs as ``site + "\\x1f" + value`` does: it does
    unless a site holds a character at or below ``\\x1f`` (then a site that is a prefix of another
    may sort after it) or a value holds ``\\x00`` (NumPy's text comparison drops trailing NULs)."""
    controls = pc.any(pc.match_substring_regex(site_text, "[\\x00-\\x1f]")).as_py()
    nul = pc.any(pc.match_substring(value_text, "\x00")).as_py()
    return not controls and not nul


def _text_cluster_codes(site: pd.Series, values: pd.Series) -> np.ndarray:
    """The cluster codes from the text keys themselves (the rare tables where their order is not the
    pair order): the rank of ``site + "\\x1f" + str(value)`` as the bootstrap ranks text."""
    keys = (site.astype(str) + "\x1f" + values.astype(str)).to_numpy(dtype=object)
    _, codes = np.unique(keys.astype(str), return_inverse=True)
    return codes.reshape(-1).astype(np.int64)


def is_segmentation_metric(column: str) -> bool:
    """Whether ``column`` is a per-case metric column of a segmentation row (or its empty flags)."""
    fixed = SEGMENTATION_METRICS + SEGMENTATION_FLAGS + sum(SEGMENTATION_SIZES.values(), ())
    return column in fixed or bool(_SEGMENTATION_OPTIONAL.match(str(column)))


def attribute_columns(frame: pd.DataFrame, task: str | None = None, names: Sequence[str] | None = None) -> list[str]:
    """Columns of a predictions frame that are case attributes (not ids, labels or scores; for
    segmentation not the ``label`` or a metric column)."""
    if task == "segmentation":
        return [c for c in frame.columns if c not in ID_COLUMNS and c != "label" and not is_segmentation_metric(c)]
    scored = set(RESERVED)
    if names:
        for nm in names:
            scored |= {f"y_{nm}", f"logit_{nm}", f"p_{nm}"}
    else:
        scored |= {c for c in frame.columns if _PREFIXED.match(str(c))}
    return [c for c in frame.columns if c not in scored]


# ---------------------------------------------------------------- reading


def _csv_header(path: Path) -> list[str]:
    """The CSV's header names as pandas reads them (leading spaces skipped), before pandas renames a
    repeated name ``y`` to ``y.1``."""
    import csv

    with open(path, newline="", encoding="utf-8-sig") as fh:
        return next(csv.reader(fh, skipinitialspace=True), [])


def _read_frame(path: Path, text_columns: Sequence[str] = ()) -> tuple[pd.DataFrame, bool]:
    """The raw table and whether it came from CSV (for line numbers). CSV identifiers and
    ``text_columns`` are read as text, never type-guessed."""
    if not path.exists():
        raise InputError("predictions file not found", file=path, expected="a .parquet or .csv file")
    if path.is_dir():
        raise InputError("is a folder, not a predictions file", file=path, expected="a .parquet or .csv file")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        try:
            return pd.read_parquet(path), False
        except Exception as exc:  # pyarrow raises several types for a non-parquet file
            raise InputError(
                f"not a readable Parquet table ({type(exc).__name__}: {exc})",
                file=path,
                expected="a Parquet file with the predictions columns",
            ) from None
    try:
        header = _csv_header(path)
        seen: set[str] = set()
        for c in header:
            if c.strip() in seen:
                raise InputError(
                    f"column {c.strip()!r} appears twice in the header",
                    file=path,
                    line=1,
                    field=c.strip(),
                    expected="unique column names",
                )
            seen.add(c.strip())
        wanted = set(ID_COLUMNS) | {str(c) for c in text_columns}
        text = {c: str for c in header if c.strip() in wanted}  # keyed by the names pandas sees
        df = pd.read_csv(path, skipinitialspace=True, keep_default_na=True, dtype=text or None)
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text", file=path, expected="a CSV table with a header row") from None
    except pd.errors.EmptyDataError:
        raise InputError("file is empty", file=path, expected="a header row and one row per case") from None
    except pd.errors.ParserError as exc:
        raise InputError(
            f"not a readable CSV table: {str(exc).strip()}",
            file=path,
            expected="comma-separated columns with a header row",
        ) from None
    df.columns = [str(c).strip() for c in df.columns]
    return df, True


def infer_task(columns: Sequence[str]) -> str:
    """segmentation if ``label`` and ``dice`` columns (one row per case and label), binary if
    ``logit``/``p`` columns, multilabel if ``y_<label>`` columns, multiclass if
    ``logit_<class>``/``p_<class>`` columns without ``y_<label>``."""
    cols = set(columns)
    if "label" in cols and "dice" in cols:
        return "segmentation"
    if any(str(c).startswith("y_") for c in cols):
        return "multilabel"
    if "logit" in cols or "p" in cols:
        return "binary"
    if any(_PREFIXED.match(str(c)) and not str(c).startswith("y_") for c in cols):
        return "multiclass"
    raise InputError(
        "cannot tell the task from the columns",
        field="columns",
        expected="`y` with `logit` or `p` (binary), `y` with `logit_<class>`/`p_<class>` "
        "(multiclass), or `y_<label>` with `logit_<label>`/`p_<label>` (multilabel)",
    )


def _suffixes(columns, prefix: str) -> list[str]:
    return [str(c)[len(prefix) + 1 :] for c in columns if str(c).startswith(prefix + "_")]


class _Checker:
    def __init__(self, path: Path | None, csv: bool):
        self.path = path
        self.csv = csv
        self.problems = ProblemCollector()

    def error(
        self, message: str, *, row: int | None = None, field: str | None = None, expected: str | None = None
    ) -> InputError:
        # row: 0-based data row; reported 1-based, and as a file line (header = line 1) for CSV
        return InputError(
            message,
            file=self.path,
            row=None if row is None else row + 1,
            line=None if row is None or not self.csv else row + 2,
            field=field,
            expected=expected,
        )

    def add(self, *a, **k) -> None:
        self.problems.add(self.error(*a, **k))

    def numeric(self, df: pd.DataFrame, col: str, *, what: str) -> np.ndarray | None:
        raw = df[col]
        # a numeric column is read as it is (pd.to_numeric would copy it)
        numeric = isinstance(raw.dtype, np.dtype) and raw.dtype.kind in "fiu"
        num = raw if numeric else pd.to_numeric(raw, errors="coerce")
        bad_text = num.isna() & raw.notna()
        if bad_text.any():
            i = int(np.flatnonzero(bad_text.to_numpy())[0])
            self.add(
                f"{_show(raw.iloc[i])} is not a number ({int(bad_text.sum())} such row(s))",
                row=i,
                field=col,
                expected=what,
            )
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

    def labels01(self, df, col) -> np.ndarray | None:
        raw = df[col]
        if isinstance(raw.dtype, np.dtype) and raw.dtype.kind in "iu":
            v = raw.to_numpy()  # integers: checked as they are, no float copy
        else:
            v = self.numeric(df, col, what="0 or 1")
        if v is None:
            return None
        bad = (v != 0) & (v != 1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            self.add(
                f"label {_show(df[col].iloc[i])} ({int(bad.sum())} such row(s))", row=i, field=col, expected="0 or 1"
            )
            return None
        return v if v.dtype == np.int64 else v.astype(np.int64)

    def probability(self, df, col) -> np.ndarray | None:
        v = self.numeric(df, col, what="a probability in [0, 1]")
        if v is None:
            return None
        bad = (v < 0) | (v > 1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            self.add(
                f"{float(v[i])!r} is outside [0, 1] ({int(bad.sum())} such row(s))",
                row=i,
                field=col,
                expected="a probability in [0, 1]",
            )
            return None
        return v


def _kept(df: pd.DataFrame, col: str, values: np.ndarray):
    """The standardised column ``col``: the caller's own column when ``values`` are its data as they
    are (shared copy-on-write, not copied: a million cases of a float column are 8 MB), else ``values``."""
    raw = df[col]
    if isinstance(raw.dtype, np.dtype) and raw.dtype == values.dtype and np.shares_memory(raw.to_numpy(), values):
        return raw
    return values


def _show(v) -> str:
    return repr(v.item() if hasattr(v, "item") else v)


_EXACT_FLOAT = 2.0**53  # every integer below this is a float64; above, digits may already be lost


def _id_text(v):
    """An identifier as text: strings as given, integers in decimal; a float only when it is a whole
    number below 2^53 (``7.0`` → ``"7"``); None for a fraction or a float beyond 2^53 (bad input)."""
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if v.is_integer() and abs(v) < _EXACT_FLOAT:
            return str(int(v))
        return None
    return str(v)


def _category_text(v):
    """A declared categorical attribute as text (as an identifier; a fraction keeps its decimal
    text); missing stays missing."""
    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return v
    t = _id_text(v)
    return str(v) if t is None else t


def _ids(df: pd.DataFrame, col: str, default, chk: _Checker | None = None) -> pd.Series:
    """The column ``col`` as identifier text (see :func:`_id_text`), ``default`` when absent."""
    if col not in df:
        return default
    s = _id_column(df[col])
    bad = s.isna().to_numpy()
    if bad.any() and chk is not None:
        i = int(np.flatnonzero(bad)[0])
        chk.add(
            f"{_show(df[col].iloc[i])} is a floating-point number that is not an exact whole number "
            f"({int(bad.sum())} such row(s)); ids must not be type-guessed",
            row=i,
            field=col,
            expected="identifiers stored as text (or integers)",
        )
    return s  # None where reported: neither "" (missing) nor an id


def _id_column(raw: pd.Series) -> pd.Series:
    """:func:`_id_text` of every value of ``raw`` as a text column (NA where a float is not a whole
    number), without a Python call per case: text columns are kept as they are (missing → ``""``),
    integer and float columns are converted in Arrow, anything else by :func:`_id_text` applied to
    its distinct values."""
    dtype = raw.dtype
    if isinstance(dtype, pd.StringDtype):
        return raw.fillna("") if raw.hasnans else raw
    if isinstance(dtype, np.dtype) and dtype.kind in "iu":
        return _arrow_text(pc.cast(pa.array(raw.to_numpy()), pa.string()), raw.index)
    if isinstance(dtype, np.dtype) and dtype.kind == "f":
        v = raw.to_numpy(dtype=np.float64)
        missing = np.isnan(v)
        whole = ~missing & (v == np.floor(v)) & (np.abs(v) < _EXACT_FLOAT)
        text = pc.cast(pa.array(np.where(whole, v, 0.0).astype(np.int64)), pa.string())
        text = pc.if_else(pa.array(missing), pa.scalar("", pa.string()), text)
        text = pc.if_else(pa.array(~missing & ~whole), pa.scalar(None, pa.string()), text)
        return _arrow_text(text, raw.index)
    return _by_distinct_values(raw, _id_text)


def _by_distinct_values(raw: pd.Series, fn) -> pd.Series:
    """``raw.map(fn)`` with ``fn`` called once per distinct value (and once per missing row, whose
    kind of missing ``fn`` may tell apart). Columns holding booleans are mapped case by case:
    hashing equates ``True`` with ``1``, which ``fn`` writes differently."""
    codes, uniques = pd.factorize(raw, use_na_sentinel=True)
    values = list(uniques)
    if raw.dtype == object and _may_hide_booleans(values) and any(_is_bool(v) for v in raw.to_numpy()):
        return raw.map(fn)
    texts = pd.Series([fn(v) for v in values] + [None], dtype=object)
    out = texts.take(codes).reset_index(drop=True)  # code -1 (missing) takes the trailing None
    missing = np.flatnonzero(codes < 0)
    if missing.size:
        out.iloc[missing] = raw.iloc[missing].map(fn).to_numpy(dtype=object)
    out.index = raw.index
    return out.infer_objects()


def _is_bool(v) -> bool:
    return isinstance(v, (bool, np.bool_))


def _may_hide_booleans(values: list) -> bool:
    """Whether distinct values found by hashing may stand for booleans too: ``True`` hashes as ``1``
    and ``False`` as ``0``, so a boolean is found as whichever of them came first."""
    return any(_is_bool(v) or (isinstance(v, (int, float, np.number)) and v in (0, 1)) for v in values)


def _arrow_text(text: pa.Array, index: pd.Index) -> pd.Series:
    """An Arrow string array as a text column (no per-case Python strings)."""
    return pd.Series(pd.array(text, dtype="str"), index=index)


def _default_case_ids(n: int, index: pd.Index) -> pd.Series:
    """The default case ids ``"1"`` … ``"n"`` (the 1-based row numbers), built in Arrow."""
    return _arrow_text(pc.cast(pa.array(np.arange(1, n + 1, dtype=np.int64)), pa.string()), index)


def _rows_text(rows: np.ndarray, k: int = 5) -> str:
    shown = ", ".join(str(int(r) + 1) for r in rows[:k])
    return shown + (", ..." if rows.size > k else "")


def _agree(
    chk: _Checker,
    from_logits: np.ndarray,
    given: np.ndarray,
    logit_cols: list[str],
    p_cols: list[str],
    how: str = "sigmoid",
) -> None:
    """Logits and probabilities given together must say the same: |clip(f(logit)) − clip(p)| <=
    :data:`AGREEMENT` (both clipped to the floor, so a logit of 40 and p = 1 agree). Names the first
    disagreeing rows and columns."""
    a = np.clip(from_logits, PROB_FLOOR, 1 - PROB_FLOOR)
    b = np.clip(given, PROB_FLOOR, 1 - PROB_FLOOR)
    bad = np.abs(a - b) > AGREEMENT
    if not bad.any():
        return
    rows = np.flatnonzero(bad.any(axis=1))
    i = int(rows[0])
    j = int(np.flatnonzero(bad[i])[0])
    cols = sorted({p_cols[c] for c in np.flatnonzero(bad.any(axis=0))}, key=p_cols.index)
    chk.add(
        f"{p_cols[j]} = {float(given[i, j])!r} disagrees with {how}({'logits' if how == 'softmax' else logit_cols[j]})"
        f" = {float(from_logits[i, j])!r} in {rows.size} row(s) (data rows {_rows_text(rows)}; column(s) "
        f"{', '.join(cols)}); logits are used when both are given",
        row=i,
        field=p_cols[j],
        expected=f"probabilities equal to {how} of the logits within {AGREEMENT:g}, or only one of them",
    )


def _row_sums(chk: _Checker, P: np.ndarray, cols: list[str]) -> None:
    """Multiclass probabilities must sum to 1 per row within :data:`ROW_SUM_TOLERANCE`."""
    s = P.sum(axis=1)
    bad = np.abs(s - 1.0) > ROW_SUM_TOLERANCE
    if not bad.any():
        return
    rows = np.flatnonzero(bad)
    i = int(rows[0])
    chk.add(
        f"class probabilities sum to {float(s[i]):.6g}, not 1, in {rows.size} row(s) (data rows {_rows_text(rows)})",
        row=i,
        field=cols[0],
        expected=f"{', '.join(cols)} summing to 1 within {ROW_SUM_TOLERANCE:g} in every row",
    )


def table_from_frame(
    df: pd.DataFrame,
    *,
    task: str | None = None,
    class_names: Sequence[str] | None = None,
    label_names: Sequence[str] | None = None,
    path: Path | None = None,
    csv: bool = False,
    text_columns: Sequence[str] = (),
) -> PredictionsTable:
    """Check a raw predictions DataFrame and standardise it (see the module docstring).
    ``text_columns``: attributes declared categorical, kept as identifier text."""
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
    out["case_id"] = _ids(df, "case_id", None, chk) if "case_id" in df else _default_case_ids(len(df), df.index)
    out["site"] = _ids(df, "site", pd.Series(DEFAULT_SITE, index=df.index, dtype="str"), chk)
    # without a patient_id column a case is its own patient: the case-id column is shared, not copied
    out["patient_id"] = _ids(df, "patient_id", out["case_id"], chk)
    for col in ("case_id", "site"):
        empty = out[col] == ""
        if empty.any():
            chk.add("missing value", row=int(np.flatnonzero(empty.to_numpy())[0]), field=col, expected="an identifier")
    blank_patient = out["patient_id"] == ""
    if blank_patient.any():
        out.loc[blank_patient, "patient_id"] = out.loc[blank_patient, "case_id"]
    if task == "segmentation":
        return _segmentation_table(df, out, chk, label_names, path, text_columns)
    dupe = out.duplicated(["site", "case_id"]) if "case_id" in df else None  # default ids never repeat
    if dupe is not None and dupe.any():
        i = int(np.flatnonzero(dupe.to_numpy())[0])
        chk.add(
            f"case_id {out['case_id'].iloc[i]!r} repeats within site {out['site'].iloc[i]!r}",
            row=i,
            field="case_id",
            expected="case ids unique per site",
        )

    names: list[str] | None = None
    given = "logit"
    if task == "binary":
        if "y" not in df:
            chk.add("missing column", field="y", expected="binary labels 0/1")
        else:
            y = chk.labels01(df, "y")
            if y is not None:
                out["y"] = _kept(df, "y", y)
        if "logit" in df:
            z = chk.numeric(df, "logit", what="a finite logit")
            if z is not None:
                out["logit"] = _kept(df, "logit", z)
            if "p" in df:
                p = chk.probability(df, "p")
                if p is not None and z is not None:
                    _agree(chk, sigmoid(z)[:, None], p[:, None], ["logit"], ["p"])
        elif "p" in df:
            given = "p"
            p = chk.probability(df, "p")
            if p is not None:
                out["p"] = _kept(df, "p", p)
        else:
            chk.add("missing column", field="logit", expected="binary scores `logit` (or probabilities `p`)")
    elif task == "multiclass":
        names = (
            list(class_names)
            if class_names
            else list(dict.fromkeys(_suffixes(df.columns, "logit") or _suffixes(df.columns, "p")))
        )
        if len(names) < 2:
            chk.add(
                "missing columns", field="logit_<class>", expected="one `logit_<class>` or `p_<class>` column per class"
            )
        have_logits = names and all(f"logit_{nm}" in df for nm in names)
        have_probs = names and all(f"p_{nm}" in df for nm in names)
        if names and not (have_logits or have_probs):
            miss = [f"logit_{nm}" for nm in names if f"logit_{nm}" not in df]
            chk.add(
                "missing column(s) " + ", ".join(miss),
                field=miss[0],
                expected=f"`logit_<class>` or `p_<class>` for every class {names}",
            )
        zs, ps = {}, {}
        if have_logits:
            for nm in names:
                z = chk.numeric(df, f"logit_{nm}", what="a finite logit")
                if z is not None:
                    zs[nm] = out[f"logit_{nm}"] = z
        if have_probs:
            given = "logit" if have_logits else "p"
            for nm in names:
                p = chk.probability(df, f"p_{nm}")
                if p is not None:
                    ps[nm] = p
                    if not have_logits:
                        out[f"p_{nm}"] = p
            if len(ps) == len(names):
                P = np.column_stack([ps[nm] for nm in names])
                _row_sums(chk, P, [f"p_{nm}" for nm in names])
                if have_logits and len(zs) == len(names):
                    from scipy.special import softmax

                    _agree(
                        chk,
                        softmax(np.column_stack([zs[nm] for nm in names]), axis=1),
                        P,
                        [f"logit_{nm}" for nm in names],
                        [f"p_{nm}" for nm in names],
                        how="softmax",
                    )
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
                    if p is not None and z is not None:
                        _agree(chk, sigmoid(z)[:, None], p[:, None], [f"logit_{nm}"], [f"p_{nm}"])
            elif f"p_{nm}" in df:
                given = "p"
                p = chk.probability(df, f"p_{nm}")
                if p is not None:
                    out[f"p_{nm}"] = p
            else:
                chk.add("missing column", field=f"logit_{nm}", expected=f"scores `logit_{nm}` or `p_{nm}`")
    chk.problems.raise_if_any()
    text = set(text_columns)
    for c in attribute_columns(df, task, names):
        if c not in out:
            out[c] = df[c].map(_category_text) if c in text else df[c]
    return PredictionsTable(out, task, names, path, given)


def _segmentation_table(
    df: pd.DataFrame,
    out: pd.DataFrame,
    chk: _Checker,
    label_names: Sequence[str] | None,
    path: Path | None,
    text_columns: Sequence[str],
) -> PredictionsTable:
    """Segmentation rows (one per case and label): the ``label`` (a declared label when
    ``label_names`` are given; unique per site and case), the metric columns
    (:data:`SEGMENTATION_METRICS`, one size set of :data:`SEGMENTATION_SIZES`, the 0/1
    :data:`SEGMENTATION_FLAGS`; any ``nsd_*``/``hc_*``/expected-size column) as float64. A metric
    may be NaN only on a row whose reference and prediction are both empty (the empty-mask policy
    ``exclude``): anywhere else a missing value would silently drop a case from a mean."""
    names = _segmentation_labels(df, out, chk, label_names)
    sizes = next((k for k, cols in SEGMENTATION_SIZES.items() if cols[0] in df), "area")
    for col in SEGMENTATION_FLAGS:
        if col not in df:
            chk.add("missing column", field=col, expected="0 or 1: whether the mask is empty")
        else:
            flag = chk.labels01(df, col)
            if flag is not None:
                out[col] = flag
    both_empty = (
        (out["ref_empty"] == 1) & (out["pred_empty"] == 1) if all(c in out for c in SEGMENTATION_FLAGS) else None
    )
    required = list(SEGMENTATION_METRICS + SEGMENTATION_SIZES[sizes])
    optional = [c for c in df.columns if _SEGMENTATION_OPTIONAL.match(str(c))]
    for col in required + optional:
        if col not in df:
            chk.add("missing column", field=col, expected=f"the per-case metric `{col}` of every row")
            continue
        values = _metric_values(chk, df, col, both_empty)
        if values is not None:
            out[col] = values
    chk.problems.raise_if_any()
    text = set(text_columns)
    for c in attribute_columns(df, "segmentation"):
        if c not in out:
            out[c] = df[c].map(_category_text) if c in text else df[c]
    first = [*ID_COLUMNS, "label"]
    out = out[first + [c for c in df.columns if c in out and c not in first]]  # the table's own order
    return PredictionsTable(out, "segmentation", names, path, "metrics")


def _segmentation_labels(
    df: pd.DataFrame, out: pd.DataFrame, chk: _Checker, label_names: Sequence[str] | None
) -> list[str]:
    """The ``label`` column as text into ``out``; the label names (declared, else in order of first
    appearance). A label not declared, or a (site, case_id, label) given twice, is reported."""
    if "label" not in df:
        chk.add("missing column", field="label", expected="the mask label of each row")
        return list(label_names or [])
    labels = _ids(df, "label", None, chk)
    out["label"] = labels
    names = list(label_names) if label_names else [v for v in dict.fromkeys(labels.tolist()) if v]
    bad = ~labels.isin(names)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        chk.add(f"label {_show(df['label'].iloc[i])} is not declared", row=i, field="label", expected=f"one of {names}")
    dupe = out.duplicated(["site", "case_id", "label"])
    if dupe.any():
        i = int(np.flatnonzero(dupe.to_numpy())[0])
        chk.add(
            f"case_id {out['case_id'].iloc[i]!r} with label {out['label'].iloc[i]!r} repeats within site "
            f"{out['site'].iloc[i]!r}",
            row=i,
            field="case_id",
            expected="one row per case and label",
        )
    return names


def _metric_values(chk: _Checker, df: pd.DataFrame, col: str, both_empty: pd.Series | None) -> np.ndarray | None:
    """One metric column as float64: numbers, never infinite, NaN only where both masks are empty."""
    raw = df[col]
    num = pd.to_numeric(raw, errors="coerce")
    text = num.isna() & raw.notna()
    v = num.to_numpy(dtype=np.float64)
    nan_ok = both_empty.to_numpy() if both_empty is not None else np.zeros(len(v), dtype=bool)
    problems = [
        (text.to_numpy(), "is not a number", "a number"),
        (np.isinf(v), "is not finite", "a finite number"),
        (
            np.isnan(v) & ~text.to_numpy() & ~nan_ok,
            "is missing on a row whose masks are not both empty",
            "a value (NaN only where reference and prediction are both empty and the policy excludes them)",
        ),
    ]
    for bad, what, expected in problems:
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            chk.add(f"{_show(raw.iloc[i])} {what} ({int(bad.sum())} such row(s))", row=i, field=col, expected=expected)
            return None
    return v


def _multiclass_labels(chk: _Checker, col: pd.Series, names: list[str]) -> np.ndarray | None:
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
            chk.add(
                "missing label" if key is None else f"label {_show(v)} is not a class",
                row=i,
                field="y",
                expected=f"a class index 0..{K - 1} or a name in {names}",
            )
            return None
        vals.append(lookup[key.strip()])
    return np.asarray(vals, dtype=np.int64)


def read_predictions(
    path: str | Path,
    *,
    task: str | None = None,
    class_names: Sequence[str] | None = None,
    label_names: Sequence[str] | None = None,
    text_columns: Sequence[str] = (),
) -> PredictionsTable:
    """Read and check a predictions table (Parquet by suffix ``.parquet``/``.pq``, else CSV).

    ``task`` (binary | multiclass | multilabel) is inferred from the columns when not given;
    ``class_names``/``label_names`` (from the protocol) fix the expected score columns and their order.
    ``text_columns``: attributes declared categorical (the protocol's subgroup columns without bands),
    read as text like the identifiers.
    Raises :class:`~validate.errors.InputError` (or ``InputErrors``) naming file, column, row, expected.
    """
    path = Path(path)
    df, csv = _read_frame(path, text_columns)
    return table_from_frame(
        df, task=task, class_names=class_names, label_names=label_names, path=path, csv=csv, text_columns=text_columns
    )


def categorical_columns(protocol) -> list[str]:
    """The columns a protocol declares categorical (subgroups on a column without ``bands``): read as
    text, like the identifiers."""
    return [g.column for g in getattr(protocol, "subgroups", None) or [] if g.column and g.bands is None]


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
