"""The "Segmentation" page's data and tables: a segmentation run's ``segmentation.json`` and
``overlays.parquet`` (read here, cached by the bundle's identity) and its metrics.json BLOCKs.

Every number comes from the bundle, through the helpers and figures of
:mod:`validate.charts_segmentation` (the report's too); nothing is recomputed. Each table builder returns
a display frame (text with intervals) and a numeric frame for the CSV download.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import data
from validate import charts, charts_segmentation as seg

SEGMENTATION_FILE = "segmentation.json"
OVERLAYS_FILE = "overlays.parquet"
OVERLAY_COLUMNS = ("site", "case_id", "label", "dice", "height", "width", "pred", "ref")


@st.cache_data(show_spinner=False, max_entries=16)
def _segmentation(path: str, identity: str) -> dict:
    try:
        content = json.loads((Path(path) / SEGMENTATION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def segmentation(run: data.Run) -> dict:
    """``segmentation.json`` of ``run`` ({} when the bundle has none or it does not parse)."""
    return _segmentation(run.path, run.identity)


@st.cache_data(show_spinner=False, max_entries=8)
def _overlays(path: str, identity: str) -> pd.DataFrame:
    file = Path(path) / OVERLAYS_FILE
    try:
        frame = pd.read_parquet(file, columns=list(OVERLAY_COLUMNS))
    except (OSError, ValueError, KeyError):  # absent, or not the overlay table: the page shows the ids alone
        return pd.DataFrame(columns=list(OVERLAY_COLUMNS))
    return frame


def overlay(run: data.Run, site: str, case_id: str, label: str = "") -> Mapping | None:
    """The overlays.parquet row of one worst case (site, case id and, with several labels, label)."""
    frame = _overlays(run.path, run.identity)
    hit = frame[(frame["site"].astype(str) == str(site)) & (frame["case_id"].astype(str) == str(case_id))]
    if label and "label" in hit:
        hit = hit[hit["label"].astype(str).isin([label, ""])]
    return None if hit.empty else hit.iloc[0].to_dict()


def overlay_png(run: data.Run, site: str, case: Mapping, label: str = "") -> bytes | None:
    """The worst case's outlines (:func:`validate.charts_segmentation.overlay_png`) over the case's picture
    (:func:`dashboard.data.thumbnail`: the bundle's own thumbnail, confined), or None without a kept (or a
    readable) overlay."""
    row = overlay(run, site, str(case.get("case_id")), label)
    if row is None:
        return None
    picture = data.thumbnail(run, site, str(case.get("case_id")), None, size=256)
    return seg.overlay_from_row(row, picture)


def _cell(entry, metric: str) -> str:
    if not isinstance(entry, Mapping) or entry.get("estimate") is None:
        return "undefined"
    return charts.entry_text(entry, metric=metric)


def metric_frames(rows: Sequence[Mapping], first: Sequence[tuple[str, str]], level: float):
    """Display and numeric frames of :func:`validate.charts_segmentation.site_metric_rows` (or subgroup
    rows): ``first`` columns, cases (patients), then per metric its mean and median with intervals."""
    names = seg.row_metrics(rows)
    display, numeric = [], []
    for r in rows:
        d = {h: r[k] for h, k in first}
        n = charts.fmt(r.get("n")) + (f" ({charts.fmt(r['n_patients'])})" if r.get("n_patients") is not None else "")
        d["Cases (patients)"] = n + (" insufficient" if r.get("insufficient") else "")
        num = {k: r[k] for _, k in first} | {k: r.get(k) for k in ("n", "n_patients", "n_excluded", "insufficient")}
        for m in names:
            d[f"{seg.metric_label(m)}: mean ({level:.0%} CI)"] = _cell(r["entries"].get(m), m)
            if any(f"{m}_median" in x["entries"] for x in rows):
                d[f"{seg.metric_label(m)}: median"] = _cell(r["entries"].get(f"{m}_median"), m)
            for stat in ("", "_median"):
                e = r["entries"].get(m + stat) or {}
                num |= {f"{m}{stat}{part}": e.get(k) for part, k in (("", "estimate"), ("_ci_low", "ci_low"))}
                num[f"{m}{stat}_ci_high"] = e.get("ci_high")
        display.append(d)
        numeric.append(num)
    return pd.DataFrame(display), pd.DataFrame(numeric)


def comparison_frames(segmentation: Mapping, sites: Sequence[str], level: float):
    """New − baseline per site (and pooled) and metric, with the matched cases (segmentation.json
    ``comparison``)."""
    names = seg.comparison_metrics(segmentation)
    display, numeric = [], []
    for site, block in seg.comparison_rows(segmentation, sites):
        display.append(
            {"Site": site, "Matched cases": charts.fmt(block.get("n_matched"))}
            | {f"Δ {seg.metric_label(m)} ({level:.0%} CI)": _cell(block.get(m), m) for m in names}
        )
        for m in names:
            e = block.get(m) or {}
            numeric.append(
                {"site": site, "metric": m, "n_matched": block.get("n_matched")}
                | {k: e.get(k) for k in ("estimate", "ci_low", "ci_high")}
            )
    return pd.DataFrame(display), pd.DataFrame(numeric)


def pixel_frames(segmentation: Mapping, sites: Sequence[str], label: str, level: float):
    """Per site: pixel ECE with its interval, pixels, cases, ECE before and after temperature scaling."""
    temps = dict(seg.temperature_items(segmentation, sites, label))
    display, numeric = [], []
    for site, item in seg.pixel_calibration_items(segmentation, sites, label):
        t, ece = temps.get(site) or {}, item.get("ece") or {}
        display.append(
            {"Site": site, f"Pixel ECE ({level:.0%} CI)": charts.entry_text(ece, 4)}
            | {"Pixels": charts.fmt(item.get("n_pixels")), "Cases": charts.fmt(item.get("n_cases"))}
            | {"ECE before T": charts.fmt(t.get("ece_before"), 4), "ECE after T": charts.fmt(t.get("ece_after"), 4)}
        )
        numeric.append(
            {
                "site": site,
                "ece": ece.get("estimate"),
                "ece_ci_low": ece.get("ci_low"),
                "ece_ci_high": ece.get("ci_high"),
            }
            | {"n_pixels": item.get("n_pixels"), "n_cases": item.get("n_cases")}
            | {"ece_before": t.get("ece_before"), "ece_after": t.get("ece_after")}
        )
    return pd.DataFrame(display), pd.DataFrame(numeric)


def area_frames(segmentation: Mapping, sites: Sequence[str], label: str):
    """Per site: Bland–Altman mean difference and limits, and the regressions on the reference area (volume
    for 3D masks, in the bundle's unit)."""
    quantity, unit = seg.area_quantity(segmentation)
    display, numeric = [], []
    for site, a in seg.area_items(segmentation, sites, label):
        ev = a.get("expected_vs_true") or {}
        limits = f"{charts.fmt(a.get('loa_low'), 1)} to {charts.fmt(a.get('loa_high'), 1)}"
        display.append(
            {"Site": site, "Cases": charts.fmt(a.get("n"))}
            | {f"Mean difference ({unit})": charts.fmt(a.get("mean_difference"), 1)}
            | {f"95% limits of agreement ({unit})": limits}
            | {"Slope": charts.fmt(a.get("slope"), 3), f"Intercept ({unit})": charts.fmt(a.get("intercept"), 1)}
            | {f"Expected-{quantity} slope": charts.fmt(ev.get("slope"), 3)}
            | {f"Expected-{quantity} intercept ({unit})": charts.fmt(ev.get("intercept"), 1)}
        )
        keys = ("n", "mean_difference", "loa_low", "loa_high", "sd_difference", "slope", "intercept")
        numeric.append(
            {"site": site}
            | {k: a.get(k) for k in keys}
            | {"expected_slope": ev.get("slope"), "expected_intercept": ev.get("intercept")}
        )
    return pd.DataFrame(display), pd.DataFrame(numeric)
