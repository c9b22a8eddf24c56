"""Write the fetal-head segmentation sample sites from the real HC18 images (a 300-image subset).

Source: ../shared/data/hc18_fetal_head (the HC18 Grand Challenge training set, van den Heuvel et al.
2018, CC BY 4.0; see README.md here and the source folder's SOURCES.md). One image per subject, so
subjects are independent. The 300 subjects are split, within each head-circumference quartile, into
  training     140 (35 per quartile): used by train_model.py only, never shipped
  development   40: the held-out internal test set (same processing as training)
  control       40: drawn exactly like development; shift analyses must not flag it
  probe_b       40: SIMULATED other probe: another gain/contrast curve plus multiplicative speckle
  low_res       40: SIMULATED lower-resolution acquisition: 8 x 8 box average (pixels twice as large)
Every image is downsized to keep the sample small: the original (738-800 x 539-563 px) is cropped to
a multiple of the block size (trailing rows and columns dropped: at most 7) and box-averaged over
4 x 4 pixels (8 x 8 at low_res), so the shipped pixel size is exactly 4 (8) times the original
HC18 pixel size. The reference mask is the source's filled ellipse mask box-averaged the same way
and thresholded at one half (a shipped pixel is "head" when at least half its area was).

Shifts (grey levels v in 0..255, results rounded half-to-even and clipped to 0..255):
  probe_b   x = v / 255;  x' = clip(1.4 x, 0, 1) ** 0.65   (more gain, a flatter log-compression
            curve), then multiplicative speckle: v' = 255 x' g, g ~ Gamma(shape 4, scale 1/4)
            (mean 1, SD 0.5: four-look intensity speckle) drawn per pixel, then smoothed by a
            Gaussian of sigma 0.7 px (the probe's point-spread) -- the speckle only, not the image
  low_res   the 8 x 8 box average of the original (no other change)
Deterministic: the split from numpy.random.default_rng(SPLIT_SEED); probe_b's speckle from
default_rng([SPECKLE_SEED, subject_id]).
Usage: .venv/bin/python sample_sites/fetal_head/make_sites.py [--source DIR] [--out DIR]   (rewrites every site)
"""

from __future__ import annotations

import argparse
import csv
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE.parents[2] / "shared" / "data" / "hc18_fetal_head"  # <repo>/../shared/data/...

SPLIT_SEED = 20
SPECKLE_SEED = 7
BLOCK = 4  # shipped pixel = 4 x 4 original pixels
LOW_RES_BLOCK = 8
SPLIT = (("training", 35), ("development", 10), ("control", 10), ("probe_b", 10), ("low_res", 10))  # per quartile
SITES = ("development", "control", "probe_b", "low_res")
PROBE_B_GAIN = 1.4
PROBE_B_GAMMA = 0.65
SPECKLE_LOOKS = 4.0
SPECKLE_SIGMA_PX = 0.7
# pixel_size_band: cut points on the ORIGINAL HC18 pixel size (the acquisition's depth/zoom), so a
# band means the same at every site (low_res's doubled pixels do not move a case to another band)
BAND_CUTS_MM = (0.11, 0.15)
BAND_NAMES = ("fine", "medium", "coarse")
MANIFEST_COLUMNS = (
    "case_id",
    "patient_id",
    "image",
    "mask",
    "pixel_size_mm",
    "hc_quartile",
    "pixel_size_band",
    "head_circumference_mm",
    "source_image",
    "source_pixel_size_mm",
)


@dataclass(frozen=True)
class Subject:
    """One HC18 training image (one subject) as metadata.csv lists it."""

    subject_id: int
    image: str
    mask: str
    pixel_size_mm: float
    head_circumference_mm: float
    hc_quartile: int


def read_subjects(source: Path) -> list[Subject]:
    with open(source / "metadata.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    subjects = [
        Subject(
            int(r["subject_id"]),
            r["image"],
            r["mask"],
            float(r["pixel_size_mm"]),
            float(r["head_circumference_mm"]),
            int(r["hc_quartile"]),
        )
        for r in rows
    ]
    return sorted(subjects, key=lambda s: s.subject_id)


def split_subjects(subjects: list[Subject]) -> dict[str, list[Subject]]:
    """Within each HC quartile (subject-id order), a seeded shuffle dealt into consecutive runs."""
    rng = np.random.default_rng(SPLIT_SEED)
    parts: dict[str, list[Subject]] = {name: [] for name, _ in SPLIT}
    for q in sorted({s.hc_quartile for s in subjects}):
        members = [s for s in subjects if s.hc_quartile == q]
        order = rng.permutation(len(members))
        start = 0
        for name, count in SPLIT:
            parts[name].extend(members[i] for i in order[start : start + count])
            start += count
    return {name: sorted(members, key=lambda s: s.subject_id) for name, members in parts.items()}


def box_average(arr: np.ndarray, block: int) -> np.ndarray:
    """Mean over non-overlapping block x block tiles, after dropping trailing rows/columns that do not
    fill a tile (float64)."""
    h, w = (arr.shape[0] // block) * block, (arr.shape[1] // block) * block
    a = arr[:h, :w].astype(np.float64)
    return a.reshape(h // block, block, w // block, block).mean(axis=(1, 3))


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)  # np.round: half to even


def read_grey(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


def downsized(subject: Subject, source: Path, block: int) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8, mask bool) of a subject at block x block pixels per shipped pixel."""
    image = to_uint8(box_average(read_grey(source / subject.image), block))
    mask = box_average(read_grey(source / subject.mask) > 0, block) >= 0.5
    return image, mask


def probe_b(image: np.ndarray, subject_id: int) -> np.ndarray:
    """The simulated other probe: gain and a flatter compression curve, then smoothed 4-look speckle."""
    x = np.clip(PROBE_B_GAIN * image.astype(np.float64) / 255.0, 0.0, 1.0) ** PROBE_B_GAMMA
    rng = np.random.default_rng([SPECKLE_SEED, subject_id])
    speckle = rng.gamma(SPECKLE_LOOKS, 1.0 / SPECKLE_LOOKS, size=image.shape)
    speckle = gaussian_filter(speckle, SPECKLE_SIGMA_PX, mode="reflect")
    return to_uint8(255.0 * x * speckle)


def pixel_size_band(source_pixel_mm: float) -> str:
    return BAND_NAMES[int(np.searchsorted(BAND_CUTS_MM, source_pixel_mm, side="right"))]


def site_case(site: str, index: int, subject: Subject, source: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    """(manifest row, image, mask) of one site case."""
    block = LOW_RES_BLOCK if site == "low_res" else BLOCK
    image, mask = downsized(subject, source, block)
    if site == "probe_b":
        image = probe_b(image, subject.subject_id)
    case_id = f"{site}-{index:03d}"
    row = {
        "case_id": case_id,
        "patient_id": f"hc18-{subject.subject_id:03d}",
        "image": f"images/{case_id}.png",
        "mask": f"masks/{case_id}.png",
        "pixel_size_mm": f"{subject.pixel_size_mm * block:.9g}",
        "hc_quartile": f"Q{subject.hc_quartile}",
        "pixel_size_band": pixel_size_band(subject.pixel_size_mm),
        "head_circumference_mm": f"{subject.head_circumference_mm:g}",
        "source_image": Path(subject.image).name,
        "source_pixel_size_mm": f"{subject.pixel_size_mm:.9g}",
    }
    return row, image, mask


def write_site(site: str, subjects: list[Subject], source: Path, out: Path = HERE) -> None:
    folder = out / site
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    rows = []
    for i, subject in enumerate(subjects, start=1):
        row, image, mask = site_case(site, i, subject, source)
        Image.fromarray(image).save(folder / row["image"], compress_level=9)
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / row["mask"], compress_level=9)
        rows.append(row)
    with open(out / f"{site}.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def training_arrays(source: Path = DEFAULT_SOURCE) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The training split's images (uint8) and masks (bool), processed as development's."""
    subjects = split_subjects(read_subjects(source))["training"]
    pairs = [downsized(s, source, BLOCK) for s in subjects]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="the hc18_fetal_head folder")
    ap.add_argument("--out", type=Path, default=HERE, help="where the sites and manifests go (this folder)")
    args = ap.parse_args(argv)
    parts = split_subjects(read_subjects(args.source))
    for site in SITES:
        write_site(site, parts[site], args.source, args.out)
        print(f"{site}: {len(parts[site])} cases")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
