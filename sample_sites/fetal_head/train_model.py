"""Train the fetal-head sample U-Nets on the HC18 training split and score the sample sites.

The training split (140 subjects, make_sites.split_subjects) is read from the HC18 source folder and
downsized exactly as the development site (make_sites.training_arrays); none of its subjects is at
any site. Each image goes through the protocol's preprocessing: bilinear antialiased resize of the
raw grey levels to 64 x 96 (torch.nn.functional.interpolate, as the suite's image reader), then
(v / 255 - 0.5) / 0.5. The target is the reference mask resized the same way (a soft target in
[0, 1]). Loss: BCEWithLogitsLoss + (1 - soft Dice). Adam (weight decay 1e-4), cosine decay to 0,
batch 8, each batch flipped left-right and/or up-down at random (the head lies either way).
Writes three checkpoints (protocols/fetal_head.yaml):
  model_state.pt, model.pt2        the model: EPOCHS epochs (state dict + torch.export program)
  baseline.pt2                     the baseline: the same U-Net trained for BASELINE_EPOCHS epochs
                                   (its own cosine schedule): "the same network trained shorter"
  degraded.pt2                     deliberately worse: the model with its output bias lowered by
                                   DEGRADED_BIAS_SHIFT logits (every pixel's odds of head divided by
                                   e^5, about 148: as thresholding p at 0.993 instead of 0.5), so it
                                   under-segments every head
and prints, per site and checkpoint, the mean and median Dice and HD95 (mm) computed here
independently of the suite (PIL reader, logits upsampled bilinearly to the mask's size, threshold
0.5, scipy distance transforms); README.md quotes the table.

Deterministic: fixed seeds, torch.use_deterministic_algorithms(True), one thread.
Usage: .venv/bin/python sample_sites/fetal_head/train_model.py [--source DIR] [--eval-only]
"""

from __future__ import annotations

import argparse
import copy
import csv
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_sites import DEFAULT_SOURCE, SITES, read_grey, training_arrays  # noqa: E402
from model_def import build_model  # noqa: E402

SEED = 0
INPUT_SIZE = (64, 96)  # height, width (protocols/fetal_head.yaml input.size)
EPOCHS = 40
BASELINE_EPOCHS = 10
DEGRADED_BIAS_SHIFT = -5.0
BATCH = 8
LR = 3e-3
WEIGHT_DECAY = 1e-4
THREADS = 1
CHECKPOINTS = ("model", "baseline", "degraded")


def resize(arr: np.ndarray) -> torch.Tensor:
    """[H, W] -> [1, 64, 96] float32: bilinear with antialiasing, half-pixel centres."""
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None, None]
    out = torch.nn.functional.interpolate(t, size=INPUT_SIZE, mode="bilinear", align_corners=False, antialias=True)
    return out[0]


def model_input(image: np.ndarray) -> torch.Tensor:
    return (resize(image) / 255.0 - 0.5) / 0.5


def training_set(source: Path) -> tuple[torch.Tensor, torch.Tensor]:
    images, masks = training_arrays(source)
    x = torch.stack([model_input(im) for im in images])
    y = torch.stack([resize(m.astype(np.float32)) for m in masks]).clamp(0.0, 1.0)
    return x, y


def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + (1 - soft Dice) over the batch."""
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    dice = (2 * (p * target).sum() + 1.0) / (p.sum() + target.sum() + 1.0)
    return bce + 1.0 - dice


def augment(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    dims = [d for d in (2, 3) if torch.rand(1, generator=gen).item() < 0.5]
    return (torch.flip(x, dims), torch.flip(y, dims)) if dims else (x, y)


def train(x: torch.Tensor, y: torch.Tensor, epochs: int) -> torch.nn.Module:
    torch.manual_seed(SEED)
    model = build_model()
    opt = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    steps = epochs * ((len(x) + BATCH - 1) // BATCH)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    gen = torch.Generator().manual_seed(SEED)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        total = 0.0
        for start in range(0, len(x), BATCH):
            idx = perm[start : start + BATCH]
            xb, yb = augment(x[idx], y[idx], gen)
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch + 1:2d}/{epochs} loss {total / len(x):.4f}", flush=True)
    return model.eval()


def degrade(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of the model whose per-pixel logits are all DEGRADED_BIAS_SHIFT lower."""
    worse = copy.deepcopy(model)
    with torch.no_grad():
        worse.head.bias += DEGRADED_BIAS_SHIFT
    return worse.eval()


def export(model: torch.nn.Module, name: str) -> None:
    example = torch.zeros(2, 1, *INPUT_SIZE)
    program = torch.export.export(model.eval(), (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, HERE / f"{name}.pt2")


# ---- independent scoring (PIL, torch interpolate, scipy) -----------------------------------------


def boundary(mask: np.ndarray) -> np.ndarray:
    from scipy.ndimage import binary_erosion

    return mask & ~binary_erosion(mask, border_value=0)


def hd95_mm(pred: np.ndarray, ref: np.ndarray, spacing: float) -> float:
    """max of the two directed 95th percentiles (numpy's linear percentile) of boundary-to-boundary
    distances in mm; the image diagonal when exactly one mask is empty."""
    from scipy.ndimage import distance_transform_edt

    if not pred.any() or not ref.any():
        return 0.0 if pred.any() == ref.any() else float(np.hypot(*pred.shape) * spacing)
    bp, br = boundary(pred), boundary(ref)
    d_to_ref = distance_transform_edt(~br, sampling=spacing)
    d_to_pred = distance_transform_edt(~bp, sampling=spacing)
    return float(max(np.percentile(d_to_ref[bp], 95), np.percentile(d_to_pred[br], 95)))


def predicted_masks(model, site: str) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """(predicted mask, reference mask, pixel size) per case of a site."""
    with open(HERE / f"{site}.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for row in rows:
        image = read_grey(HERE / site / row["image"])
        ref = read_grey(HERE / site / row["mask"]) > 127
        with torch.no_grad():
            logits = model(model_input(image)[None])
            logits = torch.nn.functional.interpolate(logits, size=ref.shape, mode="bilinear", align_corners=False)
        out.append((logits[0, 0].numpy() >= 0.0, ref, float(row["pixel_size_mm"])))  # p >= 0.5
    return out


def score_sites(models: dict) -> None:
    print("| checkpoint | site | n | Dice mean | Dice median | HD95 mm mean | HD95 mm median |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, model in models.items():
        for site in SITES:
            cases = predicted_masks(model, site)
            dice = np.array([2 * (p & r).sum() / max(p.sum() + r.sum(), 1) for p, r, _ in cases])
            hd95 = np.array([hd95_mm(p, r, s) for p, r, s in cases])
            print(
                f"| {name} | {site} | {len(cases)} | {dice.mean():.3f} | {np.median(dice):.3f} | "
                f"{hd95.mean():.2f} | {np.median(hd95):.2f} |",
                flush=True,
            )


def load(name: str) -> torch.nn.Module:
    return torch.export.load(HERE / f"{name}.pt2").module()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="the hc18_fetal_head folder")
    ap.add_argument("--eval-only", action="store_true", help="score the sites with the shipped checkpoints")
    args = ap.parse_args(argv)

    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    if not args.eval_only:
        start = time.perf_counter()
        x, y = training_set(args.source)
        model = train(x, y, EPOCHS)
        torch.save(model.state_dict(), HERE / "model_state.pt")
        export(model, "model")
        export(degrade(model), "degraded")
        export(train(x, y, BASELINE_EPOCHS), "baseline")
        print(f"trained in {time.perf_counter() - start:.0f} s")
    score_sites({name: load(name) for name in CHECKPOINTS})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
