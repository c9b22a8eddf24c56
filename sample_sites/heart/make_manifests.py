"""Build the four heart sample-site manifests from the UCI Heart Disease files.

Reads ``uci_heart/processed.{cleveland,hungarian,switzerland,va}.data`` (UCI dataset 45,
CC BY 4.0; see README.md for the attribution) and writes one manifest CSV per hospital
next to this script: ``cleveland.csv``, ``hungary.csv``, ``switzerland.csv``, ``va.csv``.

Each source row is one patient, so ``patient_id`` equals ``case_id``. Feature values are
kept exactly as the files have them: ``?`` becomes an empty cell (missing) and nothing is
imputed or recoded here. In particular ``chol == 0`` (every Swiss row, 49 VA rows) and the
one VA row with ``trestbps == 0`` stay 0: they are missing values coded as 0 in the source,
and it is the model's job (model_def.py) to treat them as missing.

The output is deterministic: rerunning the script rewrites identical files.

    .venv/bin/python sample_sites/heart/make_manifests.py [--data ../shared/data] [--out DIR]
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"

FEATURES = [
    "age",
    "sex",
    "cp",
    "trestbps",
    "chol",
    "fbs",
    "restecg",
    "thalach",
    "exang",
    "oldpeak",
    "slope",
    "ca",
    "thal",
]
SOURCE_COLUMNS = FEATURES + ["num"]
MANIFEST_COLUMNS = ["case_id", "patient_id", "label"] + FEATURES + ["sex_label"]

# site id -> (source file stem, expected rows, expected prevalence in % to one decimal);
# the counts and prevalences are the ones SOURCES.md and heart-disease.names state.
SITES = {
    "cleveland": ("cleveland", 303, 45.9),
    "hungary": ("hungarian", 294, 36.1),
    "switzerland": ("switzerland", 123, 93.5),
    "va": ("va", 200, 74.5),
}

SEX_LABELS = {0.0: "female", 1.0: "male"}  # heart-disease.names: sex (1 = male; 0 = female)


def _number(token: str, path: Path, line: int, field: str) -> float:
    """Parse one source cell; '?' is missing (NaN)."""
    token = token.strip()
    if token == "?":
        return math.nan
    try:
        return float(token)
    except ValueError:
        raise ValueError(f"{path}:{line}: field {field!r} is {token!r}, expected a number or '?'") from None


def _cell(value: float) -> str:
    """Write a number the way a reader expects it: integers without '.0', NaN as empty."""
    if math.isnan(value):
        return ""
    if value.is_integer():
        return str(int(value))
    return repr(value)  # shortest round-trip form, e.g. 0.7, -1.1


def read_source(path: Path) -> list[dict[str, float]]:
    """Rows of one processed.*.data file as dicts of floats (NaN for '?')."""
    rows = []
    with path.open(newline="") as fh:
        for line, fields in enumerate(csv.reader(fh), start=1):
            if not fields:
                continue
            if len(fields) != len(SOURCE_COLUMNS):
                raise ValueError(f"{path}:{line}: {len(fields)} fields, expected {len(SOURCE_COLUMNS)}")
            rows.append(
                {name: _number(tok, path, line, name) for name, tok in zip(SOURCE_COLUMNS, fields, strict=True)}
            )
    return rows


def manifest_rows(site: str, source: list[dict[str, float]]) -> list[dict[str, str]]:
    out = []
    for i, row in enumerate(source, start=1):
        if math.isnan(row["num"]):
            raise ValueError(f"{site} row {i}: outcome 'num' is missing")
        case_id = f"{site}-{i:04d}"
        rec = {"case_id": case_id, "patient_id": case_id, "label": str(int(row["num"] > 0))}
        rec.update({name: _cell(row[name]) for name in FEATURES})
        rec["sex_label"] = SEX_LABELS[row["sex"]]
        out.append(rec)
    return out


def check_counts(site: str, rows: list[dict[str, str]]) -> None:
    _, n_expected, prevalence_expected = SITES[site]
    n = len(rows)
    prevalence = 100.0 * sum(r["label"] == "1" for r in rows) / n
    assert n == n_expected, f"{site}: {n} rows, SOURCES.md says {n_expected}"
    assert round(prevalence, 1) == prevalence_expected, (
        f"{site}: prevalence {prevalence:.1f}%, SOURCES.md says {prevalence_expected}%"
    )


def write_manifest(path: Path, rows: list[dict[str, str]]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="folder holding uci_heart/ (default: the shared/ folder beside the repository)",
    )
    parser.add_argument("--out", type=Path, default=HERE, help="where to write the manifests (default: this folder)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for site, (stem, _, _) in SITES.items():
        rows = manifest_rows(site, read_source(args.data / "uci_heart" / f"processed.{stem}.data"))
        check_counts(site, rows)
        write_manifest(args.out / f"{site}.csv", rows)
        events = sum(r["label"] == "1" for r in rows)
        print(f"{site}: {len(rows)} cases, {events} with disease ({100 * events / len(rows):.1f}%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
