"""Speed of the per-case segmentation metrics against MONAI and a full-image scipy EDT computation.

Each case is an 800 x 540 ultrasound-sized frame (HC18's native size) with a filled reference ellipse
(a fetal head, ~60 % of the frame) and a prediction drawn from it (shifted, rescaled, with a ragged
edge), spacing 0.15 x 0.15 mm. Three ways to get Dice, IoU, HD, HD95, ASSD and NSD@2mm of one case:

- ``ours``: validate.metrics.segmentation.case_metrics (+ areas and the empty flags): surfaces by
  erosion, float64 k-d tree distances on the union's bounding box, every metric from one pass;
- ``monai``: MONAI's public functions, one call per metric as its API is meant to be used
  (compute_dice, compute_iou, compute_hausdorff_distance twice, compute_average_surface_distance,
  compute_surface_dice); MONAI returns float32 distances;
- ``edt``: the test suite's reference: scipy distance_transform_edt over the whole frame, both ways.

Timed as the best of ``--repeat`` rounds, the three alternating within a round so that a shared
machine's background load hits all alike; ms per case over ``--cases`` cases. MONAI's import time is
printed separately (paid once per process).

Measured on the shared 2-core development machine under load (so ratios, not absolute times): ours
24 ms, full-image EDT 239 ms (9.9x), MONAI 1950 ms (80x; its import 10-25 s). MONAI recomputes the
foreground crop and the edges in every metric call and spends most of its time in torch reductions
over the float-converted frame; its distances are float32. That, the import, and float64 exactness
(the 1e-9 mm target) are why case_metrics computes the distances itself, with MONAI's definitions,
and MONAI is the conformance reference of tests/test_segmentation_metrics.py.

    .venv/bin/python benchmarks/bench_segmentation_metrics.py [--cases 10] [--repeat 3] [--no-monai]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from validate.metrics.segmentation import case_metrics  # noqa: E402

SHAPE = (540, 800)
SPACING = (0.15, 0.15)


def ellipse(shape, cy, cx, a, b, angle) -> np.ndarray:
    y, x = np.mgrid[: shape[0], : shape[1]]
    c, s = np.cos(angle), np.sin(angle)
    u = ((x - cx) * c + (y - cy) * s) / a
    v = (-(x - cx) * s + (y - cy) * c) / b
    return u * u + v * v <= 1.0


def make_cases(n: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        cy, cx = 270 + rng.normal(0, 20), 400 + rng.normal(0, 30)
        a, b, ang = rng.uniform(220, 300), rng.uniform(160, 220), rng.uniform(0, np.pi)
        ref = ellipse(SHAPE, cy, cx, a, b, ang)
        pred = ellipse(SHAPE, cy + rng.normal(0, 3), cx + rng.normal(0, 3), a * rng.uniform(0.97, 1.03), b, ang)
        ragged = ndimage.gaussian_filter(rng.normal(size=SHAPE), 4) > 0.02
        pred = pred & ~(ragged & ~ndimage.binary_erosion(pred, iterations=6))
        out.append((pred, ref))
    return out


def ours(cases) -> None:
    for pred, ref in cases:
        case_metrics(pred, ref, SPACING, nsd_tolerances_mm=(2.0,))


def monai_metrics(cases) -> None:
    import torch
    from monai.metrics import (
        compute_average_surface_distance,
        compute_dice,
        compute_hausdorff_distance,
        compute_iou,
        compute_surface_dice,
    )

    for pred, ref in cases:
        p = torch.from_numpy(pred[None, None].astype(np.float32))
        r = torch.from_numpy(ref[None, None].astype(np.float32))
        compute_dice(p, r, include_background=True)
        compute_iou(p, r, include_background=True)
        compute_hausdorff_distance(p, r, spacing=SPACING, include_background=True)
        compute_hausdorff_distance(p, r, percentile=95, spacing=SPACING, include_background=True)
        compute_average_surface_distance(p, r, symmetric=True, spacing=SPACING, include_background=True)
        compute_surface_dice(p, r, [2.0], spacing=SPACING, include_background=True)


def full_edt(cases) -> None:
    for pred, ref in cases:
        sp = pred & ~ndimage.binary_erosion(pred)
        sr = ref & ~ndimage.binary_erosion(ref)
        d_pr = ndimage.distance_transform_edt(~sr, sampling=SPACING)[sp]
        d_rp = ndimage.distance_transform_edt(~sp, sampling=SPACING)[sr]
        both = np.concatenate([d_pr, d_rp])
        _ = (both.max(), np.percentile(d_pr, 95), both.mean(), np.mean(both <= 2.0))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-monai", action="store_true", help="time ours and the EDT reference only")
    args = ap.parse_args(argv)
    cases = make_cases(args.cases)
    sides = {"ours": ours, "edt": full_edt}
    if not args.no_monai:
        # MONAI 1.6 warns about a deprecated argument of its own internal calls, once per call
        warnings.filterwarnings("ignore", message="monai.metrics.utils get_mask_edges", category=FutureWarning)
        t0 = time.perf_counter()
        import monai.metrics  # noqa: F401

        print(f"MONAI import: {time.perf_counter() - t0:.2f} s (once per process)")
        sides["monai"] = monai_metrics
    best = dict.fromkeys(sides, float("inf"))
    for _ in range(args.repeat):
        for name, fn in sides.items():
            t0 = time.perf_counter()
            fn(cases)
            best[name] = min(best[name], time.perf_counter() - t0)
    ms = {k: 1000 * v / len(cases) for k, v in best.items()}
    print(f"ms per {SHAPE[1]}x{SHAPE[0]} case, best of {args.repeat} x {len(cases)} cases:")
    for name, value in ms.items():
        print(f"  {name:6s} {value:8.2f} ms   ({value / ms['ours']:.1f} x ours)")


if __name__ == "__main__":
    main()
