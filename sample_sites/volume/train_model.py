"""Train the volume sample CNN on simulated development-scanner phantoms and score the sample sites.

The training cases are drawn from the same phantom generator and the development scanner's
acquisition (make_sites.TRAINING: 2.0 mm slices, STANDARD kernel, 120 kVp, noise SD 20 HU) with their
own seed, half of them with a lesion; none is a site case. They are generated directly on the model's
grid in RAS+ order, which is exactly what the protocol's preprocessing makes of a development-site
file (reorientation is a pure axis flip there and the spacing already 2 mm), then windowed as the
protocol says: clip HU to [40 - 200, 40 + 200], map linearly to [0, 1]. Writes
  model_state.pt   the state dict (load into model_def.build_model())
  model.pt2        torch.export program with a dynamic batch dimension (torch.export.save)
and prints AUROC, Brier score and mean predicted probability per sample site (README.md quotes them),
reading the site files with nibabel/pydicom and resampling along z by linear interpolation here
(an independent path, not the suite's reader).

Deterministic: fixed seeds, torch.use_deterministic_algorithms(True), 1 thread.
Usage: .venv/bin/python sample_sites/volume/train_model.py [--eval-only]
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
from make_sites import DICOM_OFFSET, MATRIX, PIXEL_MM, SITES, TRAINING, acquire, draw_phantom, to_ras  # noqa: E402
from model_def import build_model  # noqa: E402

SEED = 0
N_TRAIN = 1600
EPOCHS = 12
BATCH = 32
LR = 1e-3
WEIGHT_DECAY = 1e-4
THREADS = 1
WINDOW = (40.0, 400.0)  # centre, width in HU (protocols/volume.yaml)


def window(hu: np.ndarray) -> np.ndarray:
    """HU -> [0, 1]: clip to [c - w/2, c + w/2], then linear."""
    lo = WINDOW[0] - WINDOW[1] / 2
    return ((np.clip(hu, lo, lo + WINDOW[1]) - lo) / WINDOW[1]).astype(np.float32)


def training_set() -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(10_000 + SEED)
    labels = np.arange(N_TRAIN) % 2 == 0
    vols = [window(to_ras(acquire(draw_phantom(rng, bool(y)), TRAINING, rng))) for y in labels]
    return torch.from_numpy(np.stack(vols)).unsqueeze(1), torch.from_numpy(labels.astype(np.float32))


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A batch flipped along any of its three axes and, half the time, with its two in-plane axes (R, A)
    swapped: the label does not change, and without it the net memorised the training noise."""
    flips = [d + 2 for d in range(3) if torch.rand(1, generator=gen).item() < 0.5]
    x = torch.flip(x, flips) if flips else x
    return x.transpose(2, 3) if torch.rand(1, generator=gen).item() < 0.5 else x


def train(x: torch.Tensor, y: torch.Tensor) -> torch.nn.Module:
    torch.manual_seed(SEED)
    model = build_model()
    loss_fn = torch.nn.BCEWithLogitsLoss()
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
            loss = loss_fn(model(augment(x[idx], gen)).squeeze(1), y[idx])
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch + 1:2d}/{EPOCHS} loss {total / len(y):.4f}", flush=True)
    return model.eval()


# ---- independent site reader (nibabel / pydicom, numpy) ------------------------------------------


def _scan_from_nifti(path: Path) -> np.ndarray:
    """[slice +S, row +P, column +L] HU from the NIfTI (stored i = +L, j = +P, k = +S)."""
    import nibabel as nib

    img = nib.load(path)
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S"), nib.aff2axcodes(img.affine)
    return np.asarray(img.dataobj, dtype=np.float64).transpose(2, 1, 0)


def _scan_from_series(folder: Path) -> np.ndarray:
    import pydicom

    slices = [pydicom.dcmread(p) for p in folder.iterdir()]
    slices.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    return np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in slices])


def _scan_from_enhanced(path: Path) -> np.ndarray:
    import pydicom

    ds = pydicom.dcmread(path)
    z = [float(f.PlanePositionSequence[0].ImagePositionPatient[2]) for f in ds.PerFrameFunctionalGroupsSequence]
    assert z == sorted(z), "frames are stored inferior -> superior"
    return ds.pixel_array.astype(np.float64) - DICOM_OFFSET


def resample_z(scan: np.ndarray, slice_mm: float) -> np.ndarray:
    """Linear interpolation along z from slice_mm to PIXEL_MM: floor((n - 1) * slice_mm / 2) + 1 output
    slices centred on the input's centre (none beyond the outermost input centres), then padded
    evenly to 20 slices (one more at the end when odd) with HU at the window's minimum. The spec's
    grid convention (validate.scoring.volumes.resample), written again here with np.interp."""
    n_in = scan.shape[0]
    extent = (n_in - 1) * slice_mm
    n_out = int(np.floor(extent / PIXEL_MM + 1e-9)) + 1
    z_out = extent / 2.0 + (np.arange(n_out) - (n_out - 1) / 2.0) * PIXEL_MM
    z_in = np.arange(n_in) * slice_mm
    flat = scan.reshape(n_in, -1)
    out = np.stack([np.interp(z_out, z_in, flat[:, i]) for i in range(flat.shape[1])], axis=1)
    full = np.full((MATRIX, MATRIX * MATRIX), WINDOW[0] - WINDOW[1] / 2)
    start = (MATRIX - n_out) // 2
    full[start : start + n_out] = out
    return full.reshape(MATRIX, MATRIX, MATRIX)


def read_site(scanner, limit: int | None = None) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(model inputs [N, 1, 20, 20, 20], labels 0/1, manifest rows) of a sample site (its first
    `limit` cases when given)."""
    reader = {"nifti": _scan_from_nifti, "dicom_series": _scan_from_series, "enhanced_dicom": _scan_from_enhanced}
    with open(HERE / f"{scanner.id}.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[:limit]
    vols = []
    for row in rows:
        scan = reader[scanner.storage](HERE / scanner.id / "images" / row["image"])
        vols.append(window(to_ras(resample_z(scan, scanner.slice_mm))))
    labels = np.array([r["label"] == "lesion" for r in rows], dtype=int)
    return np.stack(vols)[:, None], labels, rows


def score_sites(model: torch.nn.Module) -> dict[str, np.ndarray]:
    from sklearn.metrics import brier_score_loss, roc_auc_score

    print("| site | n | lesion | prevalence | AUROC | Brier | mean p |\n|---|---:|---:|---:|---:|---:|---:|")
    logits_by_site = {}
    for scanner in SITES:
        x, labels, _ = read_site(scanner)
        with torch.no_grad():
            logits = model(torch.from_numpy(x)).squeeze(1).double().numpy()
        p = 1.0 / (1.0 + np.exp(-logits))
        print(
            f"| {scanner.id} | {len(labels)} | {labels.sum()} | {labels.mean():.3f} | "
            f"{roc_auc_score(labels, logits):.3f} | {brier_score_loss(labels, p):.3f} | {p.mean():.3f} |"
        )
        logits_by_site[scanner.id] = logits
    return logits_by_site


def export(model: torch.nn.Module) -> None:
    torch.save(model.state_dict(), HERE / "model_state.pt")
    example = torch.zeros(4, 1, MATRIX, MATRIX, MATRIX)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, HERE / "model.pt2")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--eval-only", action="store_true", help="score the sites with the shipped model_state.pt")
    args = ap.parse_args(argv)

    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    if args.eval_only:
        model = build_model()
        model.load_state_dict(torch.load(HERE / "model_state.pt", weights_only=True))
        model.eval()
    else:
        start = time.perf_counter()
        x, y = training_set()
        print(f"{N_TRAIN} training volumes generated in {time.perf_counter() - start:.0f} s")
        model = train(x, y)
        print(f"generated and trained in {time.perf_counter() - start:.0f} s")
        export(model)
    score_sites(model)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
