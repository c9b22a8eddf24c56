"""A hand-made segmentation bundle shaped as SPEC_S7 #20 (metrics.json with segmentation BLOCKs,
segmentation.json, overlays.parquet), for the presentation tests of the report section and the dashboard
page before and apart from the engine: the numbers are inputs to draw, not results to check.

Sites: ``development`` (development), ``control``, ``probe_b`` and ``low_res`` (external); one label,
``head``. ``probe_b`` fails the Dice gate; ``low_res`` has too few cases (insufficient). Each site keeps two
worst cases with overlays: the reference a filled disc, the prediction a disc shifted by a known number of
pixels, so a test can find the two outlines where they must be.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

SITES = {"development": "development", "control": "external", "probe_b": "external", "low_res": "external"}
# per site: n cases, n patients, Dice (estimate, low, high), HD95 mm (estimate, low, high), insufficient
RESULTS = {
    "development": (120, 110, (0.962, 0.955, 0.968), (1.41, 1.22, 1.63), False),
    "control": (80, 74, (0.958, 0.949, 0.966), (1.52, 1.30, 1.79), False),
    "probe_b": (80, 75, (0.873, 0.851, 0.894), (4.87, 4.02, 5.81), False),
    "low_res": (18, 18, (0.931, 0.902, 0.955), (2.95, 2.31, 3.72), True),
}
# per site: pixel ECE (estimate, low, high), ECE on the pixel sample before and after temperature scaling
PIXEL_ECE = {
    "development": ((0.0123, 0.0101, 0.0149), 0.0131, 0.0042),
    "control": ((0.0141, 0.0112, 0.0170), 0.0150, 0.0061),
    "probe_b": ((0.0487, 0.0421, 0.0560), 0.0502, 0.0311),
    "low_res": ((0.0305, 0.0222, 0.0401), 0.0299, 0.0188),
}
# per site: Bland–Altman mean difference, limits of agreement (mm²), slope and intercept of pred on ref
AREA = {
    "development": (12.0, -310.0, 334.0, 0.99, 21.0),
    "control": (-25.0, -402.0, 352.0, 0.98, 8.0),
    "probe_b": (-640.0, -1710.0, 430.0, 0.86, 95.0),
    "low_res": (88.0, -520.0, 696.0, 1.03, 30.0),
}
# per worst case: (case id, Dice, HD95 mm, disc shift in pixels)
WORST = {
    "development": [("dev-0007", 0.881, 3.10, 4), ("dev-0042", 0.902, 2.70, 3)],
    "control": [("ctl-0013", 0.870, 3.40, 4), ("ctl-0051", 0.911, 2.20, 3)],
    "probe_b": [("pb-0003", 0.412, 19.8, 18), ("pb-0029", 0.655, 11.2, 10)],
    "low_res": [("lr-0011", 0.803, 5.10, 6), ("lr-0002", 0.844, 4.40, 5)],
}
OVERLAY_HEIGHT, OVERLAY_WIDTH = 86, 128  # masks downsampled to at most 128 px a side (800 x 540 → 128 x 86)
POLICY_TEXT = (
    "Empty masks follow Metrics Reloaded (Maier-Hein et al., Nature Methods 2024): a case whose reference "
    "and prediction are both empty counts as perfect (Dice 1, distances 0); a case with exactly one of them "
    "empty counts as the worst (Dice 0, every distance the image diagonal in mm), so a missed structure "
    "never drops out of a mean."
)
PROTOCOL_YAML = """name: fetal_head_fixture
version: "1.0"
task: segmentation
labels: [head]
input: {kind: image, size: [128, 128], channels: 1}
segmentation:
  mask_column: mask
  label_values: {head: 255}
  activation: sigmoid
  spacing_column: pixel_size_mm
  nsd_tolerances_mm: [2.0]
  empty: {both: perfect, one: worst}
  threshold: 0.5
  worst_cases: 2
sites:
  - {id: development, name: Development (held-out), manifest: development.csv, role: development}
  - {id: control, name: Control (unshifted), manifest: control.csv, role: external}
  - {id: probe_b, name: Probe B, manifest: probe_b.csv, role: external}
  - {id: low_res, name: Low resolution, manifest: low_res.csv, role: external}
metrics: {n_bootstrap: 200}
gates:
  - {name: dice-each-site, metric: dice, scope: each_site, min: 0.90, on: ci_low}
"""


def entry(estimate: float, low: float, high: float) -> dict:
    return {"estimate": estimate, "ci_low": low, "ci_high": high, "method": "bootstrap"}


def block(site: str) -> dict:
    n, patients, dice, hd95, small = RESULTS[site]
    out: dict = {"n": n, "n_patients": patients, "n_events": None, "insufficient": small, "undefined": {}}
    out["reason"] = f"{n} cases < min_cases 30" if small else None
    out["dice"] = entry(*dice)
    out["dice_median"] = entry(dice[0] + 0.01, dice[1] + 0.01, min(dice[2] + 0.01, 1.0))
    out["iou"] = entry(*(d / (2 - d) for d in dice))
    out["hd95_mm"] = entry(*hd95)
    out["hd95_mm_median"] = entry(*(h * 0.8 for h in hd95))
    out["hd_mm"] = entry(*(h * 1.4 for h in hd95))
    out["assd_mm"] = entry(*(h * 0.3 for h in hd95))
    out["nsd_2mm"] = entry(*(min(d + 0.02, 1.0) for d in dice))
    out["area_abs_error_mm2"] = entry(abs(AREA[site][0]) + 150, abs(AREA[site][0]) + 110, abs(AREA[site][0]) + 190)
    return out


def metrics_json() -> dict:
    """metrics.json of the run (contract validate.metrics/1, task segmentation)."""
    sites = {s: block(s) for s in SITES}
    overall = block("control") | {"n": sum(r[0] for r in RESULTS.values()), "insufficient": False}
    return {
        "task": "segmentation",
        "n_bootstrap": 200,
        "ci_level": 0.95,
        "seed": 0,
        "overall": overall,
        "sites": sites,
        "subgroups": {},
    }


def segmentation_json(comparison: bool = True) -> dict:
    """segmentation.json (contract validate.segmentation/1 as segstats writes it); ``comparison``: the run
    had a baseline model."""
    rel = {}
    for s, (ece, _, _) in PIXEL_ECE.items():
        bins = []
        for b in range(20):
            mean_p = (b + 0.5) / 20
            # an over-confident site: observed frequencies pulled toward 0.5 by the site's ECE
            frac = mean_p + (0.5 - mean_p) * ece[0] * 6
            bins.append({"bin": b, "n": 1000 + 50 * b, "mean_p": mean_p, "frac_pos": frac})
        rel[s] = {
            "head": {"ece": entry(*ece), "n_pixels": 20 * 1000 * RESULTS[s][0], "n_cases": RESULTS[s][0]}
            | {"reliability": bins}
        }
    out = {
        "schema": "validate.segmentation/1",
        "labels": ["head"],
        "policy": {"both": "perfect", "one": "worst", "text": POLICY_TEXT},
        "threshold": 0.5,
        "pixel_calibration": {"bins": 20, "sites": rel},
        "temperature": {
            "fit_on": ["development"],
            "temperature": 1.37,
            "sites": {s: {"head": {"ece_before": b, "ece_after": a}} for s, (_, b, a) in PIXEL_ECE.items()},
        },
        "area_agreement": {
            "quantity": "area",
            "unit": "mm²",
            "sites": {
                s: {
                    "head": {
                        "n": RESULTS[s][0],
                        "mean_difference": md,
                        "loa_low": lo,
                        "loa_high": hi,
                        "sd_difference": (hi - lo) / (2 * 1.96),
                        "slope": slope,
                        "intercept": icpt,
                        "expected_vs_true": {"slope": slope + 0.01, "intercept": icpt - 5},
                    }
                }
                for s, (md, lo, hi, slope, icpt) in AREA.items()
            },
        },
        "worst_cases": {
            s: [{"case_id": c, "label": "head", "dice": d, "hd95_mm": h} for c, d, h, _ in rows]
            for s, rows in WORST.items()
        },
        "comparison": None,
    }
    if comparison:
        delta = {"dice": entry(0.021, 0.012, 0.030), "hd95_mm": entry(-0.41, -0.72, -0.12)}
        out["comparison"] = {
            "difference": "new − baseline: mean over matched cases of the per-case difference",
            "n_unmatched": 0,
            "overall": {"n_matched": sum(r[0] for r in RESULTS.values())} | delta,
            "sites": {s: {"n_matched": RESULTS[s][0]} | delta for s in SITES},
            "baseline": "baseline",
        }
    return out


def disc(shift: int = 0, radius: int = 30) -> np.ndarray:
    """A filled disc centred in the overlay frame, moved ``shift`` pixels to the right."""
    yy, xx = np.mgrid[0:OVERLAY_HEIGHT, 0:OVERLAY_WIDTH]
    cy, cx = OVERLAY_HEIGHT // 2, OVERLAY_WIDTH // 2 + shift
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2


def overlays_frame() -> pd.DataFrame:
    rows = []
    for site, cases in WORST.items():
        for case_id, dice, _, shift in cases:
            rows.append(
                {
                    "site": site,
                    "case_id": case_id,
                    "label": "head",
                    "dice": dice,
                    "height": OVERLAY_HEIGHT,
                    "width": OVERLAY_WIDTH,
                    "pred": np.packbits(disc(shift)).tobytes(),
                    "ref": np.packbits(disc(0)).tobytes(),
                }
            )
    return pd.DataFrame(rows)


def gates_json() -> dict:
    rows = []
    for site in SITES:
        low = RESULTS[site][2][1]
        small = RESULTS[site][4]
        verdict = "warn" if small else ("pass" if low >= 0.90 else "fail")
        rows.append(
            {
                "gate": "dice-each-site",
                "metric": "dice",
                "scope": "each_site",
                "item": f"site {site}",
                "on": "ci_low",
                "direction": "min",
                "threshold": 0.90,
                "verdict": verdict,
                "reason": f"{low} {'>=' if low >= 0.9 else '<'} 0.9",
                "value": low,
                "estimate": RESULTS[site][2][0],
                "ci_low": low,
                "ci_high": RESULTS[site][2][2],
                "n": RESULTS[site][0],
                "n_events": None,
                "site": site,
                "subgroup": None,
                "group": None,
                "calibration": None,
                "insufficient": small,
            }
        )
    counts = {v: sum(r["verdict"] == v for r in rows) for v in ("pass", "warn", "fail")}
    return {
        "name": "fetal_head_fixture",
        "verdict": "fail",
        "exit_code": 1,
        "counts": counts,
        "gates": [],
        "rows": rows,
    }


def predictions_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frames = []
    for site, (n, _, dice, hd95, _) in RESULTS.items():
        frames.append(
            pd.DataFrame(
                {
                    "case_id": [f"{site}-{i:04d}" for i in range(n)],
                    "site": site,
                    "patient_id": [f"{site}-p{i:04d}" for i in range(n)],
                    "label": "head",
                    "dice": np.clip(rng.normal(dice[0], 0.03, n), 0, 1),
                    "hd95_mm": np.abs(rng.normal(hd95[0], 0.5, n)),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def write_segmentation_run(folder: Path, *, comparison: bool = True, thumbnails: bool = False) -> Path:
    """Write the fixture bundle into ``folder`` (created). ``thumbnails``: the bundle carries a grey
    picture of each worst case (``thumbnails/<site>/<case id>.png``), as a run that could read the images."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    provenance = {
        "protocol": {"name": "fetal_head_fixture", "version": "1.0", "path": str(folder / "protocol.yaml")}
        | {"sha256": "ab" * 32},
        "checkpoint": {"path": "unet.pt", "sha256": "cd" * 32, "format": "state_dict"},
        "started_at": "2026-12-06T10:00:00+00:00",
        "finished_at": "2026-12-06T10:03:00+00:00",
        "seeds": {"metrics": 0, "calibration": 0},
        "device": "cpu",
        "software": {"validate": "0.1.0"},
    }
    (folder / "provenance.json").write_text(json.dumps(provenance))
    (folder / "protocol.yaml").write_text(PROTOCOL_YAML)
    (folder / "metrics.json").write_text(json.dumps(metrics_json()))
    (folder / "segmentation.json").write_text(json.dumps(segmentation_json(comparison)))
    (folder / "gates.json").write_text(json.dumps(gates_json()))
    (folder / "shift.json").write_text(json.dumps({"reason": "the fixture has no image statistics"}))
    overlays_frame().to_parquet(folder / "overlays.parquet", index=False)
    predictions_frame().to_parquet(folder / "predictions.parquet", index=False)
    if thumbnails:
        from PIL import Image

        for site, cases in WORST.items():
            (folder / "thumbnails" / site).mkdir(parents=True, exist_ok=True)
            for case_id, *_ in cases:
                grey = np.full((OVERLAY_HEIGHT * 2, OVERLAY_WIDTH * 2), 90, np.uint8)
                Image.fromarray(grey).save(folder / "thumbnails" / site / f"{case_id}.png")
    return folder
