"""Site manifests and subgroups: from a protocol to the cases of each site.

A site's manifest is a CSV with one row per case: identifiers, the label, the image path (image kinds)
or feature columns (tabular), and case attributes. :func:`load_site_manifest` reads one, checks it
against the protocol and returns a standard frame; :func:`check_protocol_cohorts` runs every check over
every site and reports all problems at once. :func:`derive_subgroups` turns attributes into the
protocol's subgroup columns (categories, numeric bands, intersections).

Row numbers in messages are data rows (row 1 is the first case); the file line is given too.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd

from validate.errors import InputError, ProblemCollector
from validate.formatting import format_declared
from validate.protocol import Protocol, Site

MISSING_TOKENS = {"", "NA", "N/A", "NaN", "nan", "?", "null", "None"}
MISSING_GROUP = "missing"


@dataclass
class SiteCohort:
    """The checked cases of one site, in the standard column names."""

    site: Site
    cases: pd.DataFrame  # case_id, patient_id, site, y | y_<label>, [image_path], [features], attributes
    manifest_path: Path
    warnings: list[str] = field(default_factory=list)


def _row_error(message: str, *, file: Path, row: int, field: str, expected: str | None = None) -> InputError:
    # row is 0-based here; the header is line 1, so data row r (1-based) sits on line r + 1
    return InputError(message, file=file, row=row + 1, line=row + 2, field=field, expected=expected)


# a manifest with thousands of bad rows reports the first ones: enough to find the pattern
ROWS_REPORTED = 20


def _report_rows(
    problems: ProblemCollector, bad, message, *, file: Path, field: str, expected: str | None = None
) -> None:
    """One problem per flagged row (``bad``: a boolean mask or the row indices), the first
    :data:`ROWS_REPORTED` of them; ``message(r)`` says what is wrong with row r (0-based)."""
    rows = np.asarray(bad)
    rows = np.flatnonzero(rows) if rows.dtype == bool else rows
    for r in rows[:ROWS_REPORTED]:
        problems.add(_row_error(message(int(r)), file=file, row=int(r), field=field, expected=expected))


def read_manifest(path: Path) -> pd.DataFrame:
    """Read a manifest CSV as strings (missing cells become ''), with a clear error if unreadable.

    Every cell is read as text: identifiers stay exactly as written (``"007"`` is not ``"7"``; a
    19-digit id beside a blank cell does not become a float), and numbers are parsed later, column by
    column, only where the protocol asks for a number. A column header given twice is an error
    (pandas would quietly rename the second ``label.1`` and read only the first)."""
    if not path.exists():
        raise InputError("manifest not found", file=path, expected="a CSV file with one row per case")
    if path.is_dir():
        raise InputError("is a folder, not a manifest", file=path, expected="a CSV file")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text", file=path, expected="a CSV file") from None
    except pd.errors.EmptyDataError:
        raise InputError("manifest is empty", file=path, expected="a header row and one row per case") from None
    except pd.errors.ParserError as exc:
        raise InputError(f"not a readable CSV: {exc}", file=path) from None
    _check_header(path)
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _check_header(path: Path) -> None:
    """Refuse a header that names a column twice (after trimming spaces, as the columns are read)."""
    header = pd.read_csv(path, dtype=str, header=None, nrows=1, keep_default_na=False, skipinitialspace=True)
    names = [str(c).strip() for c in header.iloc[0]] if len(header) else []
    first: dict[str, int] = {}
    problems = ProblemCollector()
    for i, name in enumerate(names, start=1):
        if name in first:
            problems.add(
                InputError(
                    f"column `{name}` appears twice in the header (columns {first[name]} and {i})",
                    file=path,
                    line=1,
                    field=name,
                    expected="each column name once",
                )
            )
        first.setdefault(name, i)
    problems.raise_if_any()


def _label_map(protocol: Protocol) -> dict[str, int]:
    """Accepted label spellings -> class index (names, and integer indices as text)."""
    if protocol.task == "binary":
        neg, pos = protocol.binary_classes
        mapping = {neg: 0, pos: 1, "0": 0, "1": 1}
    else:
        classes = protocol.classes or []
        mapping = {c: i for i, c in enumerate(classes)}
        mapping.update({str(i): i for i in range(len(classes))})
    return mapping


def _inside(root: Path, candidate: Path) -> bool:
    try:
        candidate.relative_to(root)
        return True
    except ValueError:
        return False


def load_site_manifest(protocol: Protocol, site: Site | str, *, check_files: bool = False) -> SiteCohort:
    """Read and check one site's manifest; raise :class:`InputErrors` with every problem found.

    ``check_files`` also reports image files that do not exist (as warnings: scoring records them as
    per-case failures, so one missing image does not stop a run).
    """
    if isinstance(site, str):
        site = protocol.site(site)
    manifest_path, df = _open_manifest(protocol, site)
    problems = ProblemCollector()
    _check_columns(protocol, site, df, manifest_path, problems)
    out = _identifiers(protocol, site, df, manifest_path, problems)
    if protocol.task == "segmentation":
        _read_segmentation(protocol, site, df, out, manifest_path, problems)
    else:
        _read_labels(protocol, df, out, manifest_path, problems)
    if protocol.input.kind != "tabular":
        _read_image_paths(protocol, site, df, out, manifest_path, problems)
    else:
        _read_features(protocol, df, out, manifest_path, problems)
    _read_attributes(protocol, df, out)
    _read_acquisition_dates(protocol, df, out, manifest_path, problems)
    problems.raise_if_any()
    warnings = _missing_image_files(out, manifest_path, folders=protocol.input.kind == "volume") if check_files else []
    return SiteCohort(site=site, cases=out.reset_index(drop=True), manifest_path=manifest_path, warnings=warnings)


def _open_manifest(protocol: Protocol, site: Site) -> tuple[Path, pd.DataFrame]:
    """The site's manifest path (relative to the protocol) and its cells as text; a missing manifest
    names the protocol line that declares it."""
    index = protocol.sites.index(site)
    manifest_path = _resolved(protocol, site.manifest)
    if not manifest_path.exists():
        raise InputError(
            "manifest not found",
            file=manifest_path,
            field=f"sites[{index}].manifest",
            expected=f"a CSV file (declared in {protocol.path}, line {protocol.line_of('sites', index, 'manifest')})",
        )
    return manifest_path, read_manifest(manifest_path)


def _resolved(protocol: Protocol, path: str) -> Path:
    """A path the protocol declares (never None), relative to the protocol file."""
    resolved = protocol.resolve(path)
    assert resolved is not None  # resolve gives None only for None
    return resolved


def _required_columns(protocol: Protocol) -> list[str]:
    """The manifest columns the protocol reads, in the order the message lists them (repeats kept)."""
    cols = protocol.columns
    required = [cols.case_id]
    if protocol.task == "multilabel":
        required += [f"y_{lab}" for lab in protocol.labels or []]
    elif protocol.task == "segmentation":
        required += segmentation_columns(protocol)
    else:
        required.append(cols.label)
    if protocol.input.kind != "tabular":
        required.append(cols.image)
    else:
        required += list(protocol.input.features or [])
    required += list(protocol.attributes)
    required += [g.column for g in protocol.subgroups if g.column]
    return required


def _check_columns(
    protocol: Protocol, site: Site, df: pd.DataFrame, manifest_path: Path, problems: ProblemCollector
) -> None:
    """Every required column present and at least one case, else raise every such problem: the row
    checks that follow need the columns."""
    required = _required_columns(protocol)
    for col in dict.fromkeys(required):
        if col not in df.columns:
            problems.add(
                InputError(
                    f"required column `{col}` is missing",
                    file=manifest_path,
                    line=1,
                    field=col,
                    expected=f"columns including {', '.join(dict.fromkeys(required))}",
                )
            )
    if len(df) == 0:
        problems.add(
            InputError(
                f"site `{site.id}` has no cases", file=manifest_path, expected="at least one row after the header"
            )
        )
    if problems.problems:
        problems.raise_if_any()


def _identifiers(
    protocol: Protocol, site: Site, df: pd.DataFrame, manifest_path: Path, problems: ProblemCollector
) -> pd.DataFrame:
    """The standard frame's first columns: case_id (non-empty, unique within the site), site, and
    patient_id (the case_id where the manifest gives none)."""
    cols = protocol.columns
    out = pd.DataFrame({"case_id": df[cols.case_id].str.strip()})
    out["site"] = site.id
    _report_rows(
        problems,
        out["case_id"].eq("").to_numpy(),
        lambda r: "empty case_id",
        file=manifest_path,
        field=cols.case_id,
        expected="a non-empty identifier unique within the site",
    )
    dup = out["case_id"].duplicated(keep="first") & out["case_id"].ne("")

    def duplicate(r: int) -> str:
        first = int(np.flatnonzero(out["case_id"].eq(out["case_id"].iloc[r]).to_numpy())[0])
        return f"duplicate case_id {out['case_id'].iloc[r]!r} (first at row {first + 1})"

    _report_rows(
        problems,
        dup.to_numpy(),
        duplicate,
        file=manifest_path,
        field=cols.case_id,
        expected="case_id unique within the site",
    )
    if cols.patient_id in df.columns:
        pid = df[cols.patient_id].str.strip()
        out["patient_id"] = pid.where(pid.ne(""), out["case_id"])
    else:
        out["patient_id"] = out["case_id"]
    return out


def _read_labels(
    protocol: Protocol, df: pd.DataFrame, out: pd.DataFrame, manifest_path: Path, problems: ProblemCollector
) -> None:
    """``y_<label>`` (0 or 1) per label of a multilabel task, else ``y``: the class index of a declared
    class name or index (-1 where it is neither, reported)."""
    if protocol.task == "multilabel":
        for lab in protocol.labels or []:
            col = f"y_{lab}"
            vals = df[col].str.strip()
            bad = ~vals.isin(["0", "1"])
            _report_rows(
                problems,
                bad.to_numpy(),
                lambda r, v=vals: f"label value {v.iloc[r]!r} is not 0 or 1",
                file=manifest_path,
                field=col,
                expected="0 or 1",
            )
            out[col] = pd.to_numeric(vals.where(~bad, "0")).astype("int64")
        return
    label = protocol.columns.label
    vals = df[label].str.strip()
    y = vals.map(_label_map(protocol))
    classes = protocol.classes or []  # declared for every task with a label column
    _report_rows(
        problems,
        y.isna().to_numpy(),
        lambda r: f"label {vals.iloc[r]!r} is not a declared class",
        file=manifest_path,
        field=label,
        expected=f"one of {classes} (or their indices 0..{len(classes) - 1})",
    )
    out["y"] = y.fillna(-1).astype("int64")


def segmentation_columns(protocol: Protocol) -> list[str]:
    """The manifest columns a segmentation task reads besides the image: the mask path and the
    pixel-size column(s) when the protocol names them."""
    seg = protocol.segmentation
    if seg is None:
        return []
    return [seg.mask_column, *([seg.spacing_column] if seg.spacing_column else []), *(seg.spacing_columns or ())]


def _read_segmentation(
    protocol: Protocol, site: Site, df: pd.DataFrame, out: pd.DataFrame, manifest_path: Path, problems: ProblemCollector
) -> None:
    """``mask_path`` (inside the site's image root, the images' rule) and ``spacing_y_mm``,
    ``spacing_x_mm`` from the protocol's pixel-size column(s): positive finite mm, else reported; NaN
    when no column is named (the DICOM header gives it while scoring, or the run stops)."""
    seg = protocol.segmentation
    assert seg is not None  # the protocol model requires the section for this task
    if site.image_root is not None:
        _read_image_paths(protocol, site, df, out, manifest_path, problems, column=seg.mask_column, into="mask_path")
    names = (seg.spacing_column, seg.spacing_column) if seg.spacing_column else seg.spacing_columns
    for axis, column in zip(("spacing_y_mm", "spacing_x_mm"), names or (None, None), strict=True):
        if column is None:
            out[axis] = np.nan
            continue
        raw = df[column].str.strip()
        num = pd.to_numeric(raw, errors="coerce")
        bad = ~(np.isfinite(num.to_numpy(dtype=np.float64)) & (num.to_numpy(dtype=np.float64) > 0))
        _report_rows(
            problems,
            bad,
            lambda r, v=raw: f"pixel size {v.iloc[r]!r} is not a positive number of mm",
            file=manifest_path,
            field=column,
            expected="mm per pixel, a positive number",
        )
        out[axis] = num.astype("float64")


def _read_image_paths(
    protocol: Protocol,
    site: Site,
    df: pd.DataFrame,
    out: pd.DataFrame,
    manifest_path: Path,
    problems: ProblemCollector,
    *,
    column: str | None = None,
    into: str = "image_path",
) -> None:
    """``image_path``: each manifest path resolved inside the site's image root (links followed); a
    path that is empty or leads outside the root is reported and left empty. The same rule holds for
    a volume's folder (a DICOM series): the folder must resolve inside the root, and for a
    segmentation's mask (``column`` the mask column, ``into`` ``mask_path``)."""
    index = protocol.sites.index(site)
    if site.image_root is None:
        problems.add(
            InputError(
                f"site `{site.id}` has image inputs but no image_root",
                file=protocol.path,
                line=protocol.line_of("sites", index),
                field=f"sites[{index}].image_root",
                expected="the folder that holds this site's images",
            )
        )
        return
    root = _resolved(protocol, site.image_root)
    if not root.is_dir():
        problems.add(
            InputError(
                "image root not found",
                file=protocol.path,
                line=protocol.line_of("sites", index, "image_root"),
                field=f"sites[{index}].image_root",
                expected=f"an existing folder ({root})",
            )
        )
    real_root = Path(os.path.realpath(root))
    field_name = column or protocol.columns.image
    what = "mask" if into == "mask_path" else "image"
    paths = []
    for r, rel in enumerate(df[field_name].str.strip()):
        if rel == "":
            problems.add(
                _row_error(
                    f"empty {what} path",
                    file=manifest_path,
                    row=r,
                    field=field_name,
                    expected="a path relative to the image root",
                )
            )
            paths.append("")
            continue
        candidate = Path(rel)
        full = candidate if candidate.is_absolute() else real_root / candidate
        resolved = Path(os.path.realpath(full))
        if candidate.is_absolute() or not _inside(real_root, resolved):
            problems.add(
                _row_error(
                    f"{what} path {rel!r} points outside the image root",
                    file=manifest_path,
                    row=r,
                    field=field_name,
                    expected=f"a path inside {real_root} (no '..', no absolute paths, no links out)",
                )
            )
            paths.append("")
            continue
        paths.append(str(resolved))
    out[into] = paths


def _read_features(
    protocol: Protocol, df: pd.DataFrame, out: pd.DataFrame, manifest_path: Path, problems: ProblemCollector
) -> None:
    """``feature:<name>`` per tabular feature as float64: a missing token is NaN, any other text that
    is not a number is reported."""
    for feat in protocol.input.features or []:
        raw = df[feat].str.strip()
        missing = raw.isin(MISSING_TOKENS)
        num = pd.to_numeric(raw.where(~missing), errors="coerce")
        bad = num.isna() & ~missing
        _report_rows(
            problems,
            bad.to_numpy(),
            lambda r, v=raw: f"value {v.iloc[r]!r} is not a number",
            file=manifest_path,
            field=feat,
            expected="a number, or an empty cell for missing",
        )
        out[f"feature:{feat}"] = num.astype("float64")


def _read_attributes(protocol: Protocol, df: pd.DataFrame, out: pd.DataFrame) -> None:
    """The attributes and subgroup columns: numeric (float64) where every present value is a number
    and the column is not declared categorical, else text with None for a missing token."""
    categorical = categorical_columns(protocol)
    for attr in dict.fromkeys(list(protocol.attributes) + [g.column for g in protocol.subgroups if g.column]):
        raw = df[attr].str.strip()
        missing = raw.isin(MISSING_TOKENS)
        num = pd.to_numeric(raw.where(~missing), errors="coerce")
        if attr not in categorical and (num.notna() | missing).all() and (~missing).any():
            out[attr] = num.astype("float64")
        else:
            out[attr] = raw.where(~missing, None)


def _read_acquisition_dates(
    protocol: Protocol, df: pd.DataFrame, out: pd.DataFrame, manifest_path: Path, problems: ProblemCollector
) -> None:
    """``acquired_at`` (ISO 8601 dates or timestamps; empty cells missing) when the manifest has the
    column; any other text is reported."""
    column = protocol.columns.acquired_at
    if column not in df.columns:
        return
    raw = df[column].str.strip()
    dates = pd.to_datetime(raw.where(raw.ne("")), errors="coerce", format="ISO8601")
    _report_rows(
        problems,
        (dates.isna() & raw.ne("")).to_numpy(),
        lambda r: f"date {raw.iloc[r]!r} is not an ISO date",
        file=manifest_path,
        field=column,
        expected="YYYY-MM-DD or an ISO timestamp",
    )
    out["acquired_at"] = dates


def _missing_image_files(out: pd.DataFrame, manifest_path: Path, *, folders: bool = False) -> list[str]:
    """One warning per case whose resolved image file does not exist (with ``folders``, for volumes,
    a folder, a DICOM series, counts as present)."""
    warnings: list[str] = []
    if "image_path" in out:
        for r, p in enumerate(out["image_path"]):
            if p and not (Path(p).is_file() or (folders and Path(p).is_dir())):
                warnings.append(f"{manifest_path}, row {r + 1} (line {r + 2}): image file not found: {p}")
    return warnings


def categorical_columns(protocol: Protocol) -> set[str]:
    """Columns the protocol declares categorical: those of a subgroup without ``bands``. They are kept
    as text, always: codes such as ``007`` and ``7`` are different groups, and a column of digits is
    still a category. A column also cut into bands is numeric. Other attributes are numbers when every
    present value is one, text otherwise."""
    banded = {g.column for g in protocol.subgroups if g.column and g.bands is not None}
    return {g.column for g in protocol.subgroups if g.column and g.bands is None} - banded


def load_cohorts(protocol: Protocol, *, check_files: bool = False) -> list[SiteCohort]:
    """Every site's cohort; all problems over all sites reported together."""
    problems = ProblemCollector()
    cohorts = []
    for site in protocol.sites:
        try:
            cohorts.append(load_site_manifest(protocol, site, check_files=check_files))
        except InputError as exc:
            problems.add(exc)
    problems.raise_if_any()
    _check_subgroup_columns(protocol, cohorts)
    return cohorts


def _check_subgroup_columns(protocol: Protocol, cohorts: list[SiteCohort]) -> None:
    """A subgroup column present but entirely empty at one site is as good as absent: say so."""
    problems = ProblemCollector()
    for c in cohorts:
        for i, g in enumerate(protocol.subgroups):
            if g.column and c.cases[g.column].isna().all():
                problems.add(
                    InputError(
                        f"subgroup `{g.name}` uses column `{g.column}`, which is empty at site `{c.site.id}`",
                        file=c.manifest_path,
                        line=1,
                        field=g.column,
                        expected=(
                            f"values for every site (declared at {protocol.path}, "
                            f"line {protocol.line_of('subgroups', i)})"
                        ),
                    )
                )
            if g.bands is not None and g.column and c.cases[g.column].dtype == object:
                problems.add(
                    InputError(
                        f"subgroup `{g.name}` bands column `{g.column}`, which is not numeric at site `{c.site.id}`",
                        file=c.manifest_path,
                        line=1,
                        field=g.column,
                        expected="numbers (or empty cells for missing)",
                    )
                )
    problems.raise_if_any()


# ---- subgroups -----------------------------------------------------------------------------------


def _fmt(x: float) -> str:
    return format_declared(x)


def band_labels(cuts: list[float]) -> list[str]:
    """Labels of the bands [-inf, c0), [c0, c1), ..., [ck, inf).

    Integer cut points read as clinicians write age bands: ``<40``, ``40-59``, ``>=60``.
    """
    integer = all(float(c).is_integer() for c in cuts)
    labels = [f"<{_fmt(cuts[0])}"]
    for a, b in pairwise(cuts):
        labels.append(f"{_fmt(a)}-{_fmt(b - 1)}" if integer else f"[{_fmt(a)}, {_fmt(b)})")
    labels.append(f">={_fmt(cuts[-1])}")
    return labels


def derive_subgroups(cases: pd.DataFrame, protocol: Protocol) -> pd.DataFrame:
    """One text column per declared subgroup, named by the subgroup; missing values form the group
    ``"missing"`` so they stay visible rather than silently dropped."""
    out = pd.DataFrame(index=cases.index)
    for g in protocol.subgroups:
        if g.intersection:
            parts = [out[name] for name in g.intersection]
            col = parts[0].astype(str)
            for part in parts[1:]:
                col = col + " & " + part.astype(str)
            out[g.name] = col
            continue
        values = cases[g.column] if g.column in cases.columns else pd.Series([None] * len(cases), index=cases.index)
        if g.bands is not None:
            num = pd.to_numeric(values, errors="coerce")
            labels = band_labels(g.bands)
            idx = np.searchsorted(np.asarray(g.bands, dtype=float), num.to_numpy(dtype=float), side="right")
            col = pd.Series([labels[i] for i in idx], index=cases.index, dtype=object)
            col[num.isna()] = MISSING_GROUP
        else:
            col = values.map(_category_text)
        out[g.name] = col.astype(str)
    return out


def _category_text(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return MISSING_GROUP
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)
