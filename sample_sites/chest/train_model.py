"""Train the chest sample CNN on the PneumoniaMNIST training split and score the sample sites.

Trains model_def.ChestCNN on the train split only (3882 images: 388 normal / 3494 pneumonia; no
training image appears at any site, see make_sites.py), then writes
  model_state.pt   the state dict (load into model_def.build_model())
  model.pt2        torch.export program with a dynamic batch dimension (torch.export.save)
and prints AUROC, Brier score and mean predicted probability per sample site (README.md quotes them).

Preprocessing (also in protocols/chest.yaml): x = (pixel / 255 - 0.5) / 0.5, float32 [N, 1, 28, 28].
The 9:1 class imbalance is offset by pos_weight = n_normal / n_pneumonia in the loss, so the model's
probabilities are calibrated to a balanced prior, not to a site's prevalence: calibration is left
for the suite to measure and fix.

Deterministic: fixed seeds, torch.use_deterministic_algorithms(True), 1 thread; reruns with the same
torch build on the same machine give identical weights. About 20 s of CPU time (one thread).
Usage: .venv/bin/python sample_sites/chest/train_model.py [--data DIR] [--eval-only]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_sites import DEFAULT_DATA, SITES, load_pneumoniamnist  # noqa: E402
from model_def import build_model  # noqa: E402

SEED = 0
EPOCHS = 15
BATCH = 128
LR = 2e-3
WEIGHT_DECAY = 1e-4
THREADS = 1


def preprocess(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, 28, 28] -> float32 [N, 1, 28, 28], (x / 255 - 0.5) / 0.5."""
    x = images.astype(np.float32) / 255.0
    return torch.from_numpy((x - 0.5) / 0.5).unsqueeze(1)


def train(images: np.ndarray, labels: np.ndarray) -> torch.nn.Module:
    torch.manual_seed(SEED)
    x, y = preprocess(images), torch.from_numpy(labels.astype(np.float32))
    model = build_model()
    n_pos = float(y.sum())
    # balanced loss: each class carries half the weight despite the 9:1 imbalance
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(y) - n_pos) / n_pos))
    opt = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    steps_per_epoch = (len(y) + BATCH - 1) // BATCH
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=EPOCHS * steps_per_epoch)
    gen = torch.Generator().manual_seed(SEED)
    for epoch in range(EPOCHS):
        model.train()
        perm = torch.randperm(len(y), generator=gen)
        total = 0.0
        for start in range(0, len(y), BATCH):
            idx = perm[start : start + BATCH]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]).squeeze(1), y[idx])
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch + 1:2d}/{EPOCHS} loss {total / len(y):.4f}", flush=True)
    return model.eval()


def read_site_images(site: str) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(uint8 images [N, 28, 28], labels 0/1, manifest rows) of a sample site, read from its files."""
    from PIL import Image

    images, labels = [], []
    with open(HERE / f"{site}.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
        for row in rows:
            path = HERE / site / "images" / row["image"]
            if path.suffix == ".dcm":
                import pydicom
                from pydicom.pixels import apply_modality_lut

                ds = pydicom.dcmread(path)
                img = apply_modality_lut(ds.pixel_array, ds)
            else:
                img = np.asarray(Image.open(path))
            images.append(np.asarray(img, dtype=np.uint8))
            labels.append(1 if row["label"] == "pneumonia" else 0)
    return np.stack(images), np.array(labels), rows


def score_sites(model: torch.nn.Module) -> None:
    from sklearn.metrics import brier_score_loss, roc_auc_score

    def row(name, labels, logits):
        p = 1.0 / (1.0 + np.exp(-logits))
        print(
            f"| {name} | {len(labels)} | {labels.sum()} | {labels.mean():.3f} | "
            f"{roc_auc_score(labels, logits):.3f} | {brier_score_loss(labels, p):.3f} | {p.mean():.3f} |"
        )

    header = "| {} | n | pneumonia | prevalence | AUROC | Brier | mean p |\n|---|---:|---:|---:|---:|---:|---:|"
    print(header.format("site"))
    drift = None
    for spec in SITES:
        images, labels, rows = read_site_images(spec.id)
        with torch.no_grad():
            logits = model(preprocess(images)).squeeze(1).double().numpy()
        row(spec.id, labels, logits)
        if spec.id == "drift_site":
            drift = labels, logits, np.array([int(r["acquired_at"][5:7]) for r in rows])
    labels, logits, month = drift
    print("\n" + header.format("drift_site month"))
    for m in range(1, 13):
        row(f"2024-{m:02d}", labels[month == m], logits[month == m])


def export(model: torch.nn.Module) -> None:
    torch.save(model.state_dict(), HERE / "model_state.pt")
    example = torch.zeros(4, 1, 28, 28)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, HERE / "model.pt2")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder (holds pneumoniamnist/)")
    ap.add_argument("--eval-only", action="store_true", help="score the sites with the shipped model_state.pt")
    args = ap.parse_args(argv)

    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    if args.eval_only:
        model = build_model()
        model.load_state_dict(torch.load(HERE / "model_state.pt", weights_only=True))
        model.eval()
    else:
        data = load_pneumoniamnist(args.data)
        start = time.perf_counter()
        model = train(data["train_images"], data["train_labels"].ravel())
        print(f"trained in {time.perf_counter() - start:.0f} s")
        export(model)
    score_sites(model)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
