"""The analyses of a segmentation run (``task: segmentation``): what :func:`validate.pipeline.analyse`
returns for it — metrics.json (BLOCKs of :mod:`validate.analysis.segmentation`, so gates.py judges
them unchanged), ``segmentation.json`` (:mod:`validate.analysis.segmentation_pixels`), sites.json,
and the gates. A segmentation table has no per-case probability or label: the classification
calibration, curves, subgroup gaps and fairness analyses do not apply (their files say so).

The pixel summaries are side files of the predictions (:data:`SIDE_FILES`), read from the folder
the predictions came from (the scoring output, or beside a predictions file given with
``--predictions``); write_bundle copies them into the bundle with the case ids hashed as in
predictions.parquet.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from validate.errors import InputError

NO_SHIFT = (
    "the shift analysis compares classification scores and labels across sites; it is not computed for "
    "segmentation (segmentation.json compares pixel calibration and area agreement per site)"
)
#: Side files of segmentation predictions (DESIGN.md, Segmentation), copied into the bundle.
SIDE_FILES = ("pixel_histogram.parquet", "pixel_sample.parquet", "overlays.parquet")


@dataclass
class SegmentationTable:
    """The predictions of a segmentation run: ``frame`` one row per (case, label)."""

    frame: pd.DataFrame
    task: str = "segmentation"


def read_side_files(folder: Path | str | None) -> dict[str, pd.DataFrame]:
    """The side files present in ``folder`` (none when it is None), by file name."""
    out: dict[str, pd.DataFrame] = {}
    if folder is None:
        return out
    for name in SIDE_FILES:
        path = Path(folder) / name
        if path.is_file():
            try:
                out[name] = pd.read_parquet(path)
            except Exception as exc:  # a damaged side file is bad input, located
                raise InputError(
                    f"cannot read {name}: {type(exc).__name__}",
                    file=path,
                    expected="the Parquet side file the scoring wrote",
                ) from exc
    return out


def segmentation_cohort(protocol, cases: pd.DataFrame, groups: pd.DataFrame | None, failures, ci_level: float) -> dict:
    """sites.json for a segmentation run: per declared site its cases, patients, subgroup make-up
    (cases) and the scoring failures counted by reason."""
    from validate.analysis.sites import excluded_by_reason, make_up

    out: dict[str, Any] = {"task": "segmentation", "ci_level": ci_level, "sites": {}}
    site_col = cases["site"].astype(str)
    plain = [g.name for g in protocol.subgroups if not g.intersection]
    for site in protocol.sites:
        mask = (site_col == site.id).to_numpy()
        sub = cases.loc[mask]
        pid = "patient_id" if "patient_id" in sub else "case_id"
        entry: dict[str, Any] = {"name": site.display_name, "role": site.role, "n": int(mask.sum())}
        entry["patients"] = int(sub[pid].astype(str).nunique())
        entry["make_up"] = make_up(groups, mask, plain)
        excluded = excluded_by_reason(failures, site.id)
        entry["excluded"] = excluded
        entry["n_excluded"] = int(sum(excluded.values()))
        out["sites"][site.id] = entry
    return out


def segmentation_json(protocol, frame, data, side: dict, settings, comparison: dict | None) -> dict:
    """The content of segmentation.json (contract ``validate.segmentation/1``)."""
    from validate.analysis.segmentation_pixels import (
        SegmentationSettings,
        area_agreement,
        pixel_calibration,
        temperature,
        worst_cases,
    )
    from validate.metrics.segmentation import policy_text

    seg = SegmentationSettings.of(protocol)
    labels = list(data.labels)
    fit_on = [s for s in protocol.calibration_fit_sites if s in set(data.cases["site"].astype(str))]
    return {
        "labels": labels,
        "policy": {"both": seg.both, "one": seg.one, "text": policy_text(seg.empty)},
        "threshold": seg.threshold,
        "pixel_calibration": pixel_calibration(side.get("pixel_histogram.parquet"), data.cases, labels, settings),
        "temperature": temperature(side.get("pixel_sample.parquet"), fit_on, labels),
        "area_agreement": area_agreement(frame, labels),
        "worst_cases": worst_cases(frame, seg.worst_cases),
        "comparison": comparison,
    }


def analyse_segmentation(protocol, frame, failures, *, side: dict | None = None, baseline_frame=None) -> dict:
    """The parts of the bundle for a segmentation run (the keys :func:`validate.pipeline.analyse`
    returns, plus ``segmentation``), gates judged on metrics.json."""
    from validate.analysis.segmentation import (
        gate_comparison,
        paired_comparison,
        segmentation_cases,
        segmentation_metrics,
    )
    from validate.analysis.segmentation_pixels import SegmentationSettings
    from validate.cohort import derive_subgroups
    from validate.gates import judge_gates
    from validate.groups import group_sort_key
    from validate.metrics import MetricSettings

    seg = SegmentationSettings.of(protocol)
    settings = MetricSettings.from_protocol(protocol.metrics, None)
    frame = frame.reset_index(drop=True)
    data = segmentation_cases(frame, list(seg.labels) or None)
    known = {s.id for s in protocol.sites}
    stray = sorted(set(data.cases["site"].astype(str)) - known)
    if stray:
        raise InputError(
            f"predictions hold site(s) {stray} that the protocol does not declare",
            field="site",
            expected=f"sites among {sorted(known)}",
        )
    order = [s.id for s in protocol.sites if (data.cases["site"].astype(str) == s.id).any()]
    groups = derive_subgroups(frame, protocol)
    sub_cols = [g.name for g in protocol.subgroups]
    metrics = segmentation_metrics(
        data, settings=settings, subgroups=groups, subgroup_columns=sub_cols, exclude_policy=seg.both == "exclude"
    )
    metrics["sites"] = {s: metrics["sites"][s] for s in order}
    comparison = None
    if baseline_frame is not None and data.n:  # no case scored: the gates fail on that, there is nothing to pair
        base = segmentation_cases(baseline_frame.reset_index(drop=True), data.labels)
        comparison = paired_comparison(data, base, settings=settings)
    first = frame.groupby(data.case_of_row, sort=True).head(1).index
    case_groups = groups.loc[first].reset_index(drop=True) if len(groups.columns) else None
    sites = segmentation_cohort(protocol, data.cases, case_groups, failures, settings.ci_level)
    gates = judge_gates(
        protocol.gates, metrics, protocol=protocol, cohort=sites, comparison=gate_comparison(comparison)
    )
    return {
        "table": SegmentationTable(frame),
        "metrics": metrics,
        "calibration": None,
        # shift.json as an analysis that did not run, saying why (not "no development/external pair")
        "shift": {"reason": NO_SHIFT},
        "subgroups": {
            "task": "segmentation",
            "ci_level": settings.ci_level,
            "attributes": sub_cols,
            # the groups in order; the per-group BLOCKs are metrics.json's (no gap analysis for segmentation)
            "groups": {col: sorted(metrics["subgroups"][col], key=group_sort_key) for col in sub_cols},
            "sites": {},
            "overall": None,
        },
        "curves": None,
        "sites": sites,
        "gates": gates,
        "settings": settings,
        "order": order,
        "comparison": None,
        "baseline_frame": baseline_frame,
        "fairness": None,
        "segmentation": segmentation_json(protocol, frame, data, side or {}, settings, comparison),
    }


def write_segmentation(w, parts: dict, name_of, key: bytes | None) -> None:
    """segmentation.json and the side files into the bundle being written by ``w``, case ids named as
    predictions.parquet names them (``name_of``; ``key`` None: ids kept as in the manifests)."""
    from validate.bundle import pseudonymise

    seg = dict(parts["segmentation"])
    seg["worst_cases"] = {
        site: [{**case, "case_id": name_of(case["case_id"])} for case in cases]
        for site, cases in (seg.get("worst_cases") or {}).items()
    }
    w.write_json("segmentation.json", seg)
    for name, table in (parts.get("side") or {}).items():
        w.write_table(name, table if key is None else pseudonymise(table, key))
