"""Build the chest sample sites from PneumoniaMNIST (real images, SIMULATED sites).

PneumoniaMNIST comes from a single hospital and has no site labels, so every site made here is
a simulated acquisition shift of real images, and every patient attribute (sex, age, patient
grouping, acquisition date) is simulated: the source carries no demographics. README.md in this
folder documents each site and its exact parameters.

Leakage rule: no image of the training split ever appears at a site. Sites are drawn from the
official val and test splits only, after dropping the val images that are byte-identical to a
training image (8 of them) and the second copy of the 3 images duplicated inside test.

val and test come from different folders of the original Kermany data (val was carved from its
training folder, test is its test folder): they differ in prevalence (74% vs 62.5%) and in how well
the model does on them. So no site is "one split": all sites are drawn from the pooled val + test,
interleaved by source split within each class, and a control site drawn like the development
site is exchangeable with it (no built-in false alarm).

Usage: .venv/bin/python sample_sites/chest/make_sites.py [--data DIR] [--out DIR]
Deterministic: the same numpy, scipy and Pillow versions rewrite byte-identical PNG, DICOM and CSV files.
"""

from __future__ import annotations

import argparse
import calendar
import csv
import datetime as dt
import hashlib
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
NPZ_SHA256 = "a554d2332488d3ddc075125e66a1af77ec379fd2bafc09108ab95a37e2bd9c26"
SEED = 20240611
CLASSES = ("normal", "pneumonia")


@dataclass(frozen=True)
class SiteSpec:
    id: str
    n_normal: int
    n_pneumonia: int
    fmt: str = "png"  # png | dcm
    manufacturer: str = "vendor_a"
    age_mean: float = 55.0  # simulated age ~ N(mean, sd), rounded, clipped to [18, 95]
    age_sd: float = 17.0


# Order matters: the pooled images are dealt to the sites in this order (see allocate()).
# All sites but low_prevalence keep the pool's prevalence (768/1137 = 67.5%).
SITES = (
    SiteSpec("development", 84, 176),
    SiteSpec("control", 49, 101),
    SiteSpec("vendor_b", 32, 68, fmt="dcm", manufacturer="vendor_b"),
    SiteSpec("noisy_blur", 32, 68),
    SiteSpec("low_res", 32, 68),
    SiteSpec("drift_site", 62, 130),
    SiteSpec("low_prevalence", 78, 26, age_mean=45.0, age_sd=15.0),
)

# --- the simulated shifts (parameters are quoted in README.md; keep the two in step) ---------
VENDOR_B_WINDOW = (0.10, 1.00)  # fraction of full scale mapped to [0, 1], clipped outside
VENDOR_B_GAMMA = 0.6
NOISY_BLUR_SIGMA = 1.0  # Gaussian blur, pixels (scipy.ndimage, mode reflect, truncate 4)
NOISY_BLUR_NOISE_SD = 15.0  # additive Gaussian noise, grey levels of 0..255
LOW_RES_SIZE = 14  # Pillow BOX down to 14x14, BILINEAR back up to 28x28
DRIFT_YEAR = 2024
DRIFT_START_MONTH = 7  # months 1..6 unchanged; from month 7, k = month - 6
DRIFT_CONTRAST_STEP = 0.08  # contrast factor 1 - 0.08 k about the image's own mean
DRIFT_NOISE_STEP = 3.0  # additive Gaussian noise sd = 3 k grey levels
PAIRED_FRACTION = 2 / 11  # share of images in 2-image patients: 1 patient in 11 has two images

VENDOR_B_MODEL = "SIM-CR 2000"
DICOM_SC_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage


def load_pneumoniamnist(data_dir: Path) -> dict[str, np.ndarray]:
    path = data_dir / "pneumoniamnist" / "pneumoniamnist.npz"
    if not path.is_file():
        sys.exit(f"error: {path}: not found (expected PneumoniaMNIST from ../shared/data; see SOURCES.md)")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != NPZ_SHA256:
        sys.exit(f"error: {path}: sha256 {digest}, expected {NPZ_SHA256} (a different copy of the data)")
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


def image_hash(img: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(img, dtype=np.uint8).tobytes()).hexdigest()


def site_pool(data: dict[str, np.ndarray]) -> list[tuple[str, int, int]]:
    """(split, index, label) of every val/test image allowed at a site, first copies only."""
    train = {image_hash(x) for x in data["train_images"]}
    seen: set[str] = set()
    pool = []
    for split in ("val", "test"):
        for i, (img, lab) in enumerate(zip(data[f"{split}_images"], data[f"{split}_labels"].ravel(), strict=True)):
            h = image_hash(img)
            if h in train or h in seen:
                continue
            seen.add(h)
            pool.append((split, i, int(lab)))
    return pool


def allocate(pool, rng) -> dict[str, list[tuple[str, int, int]]]:
    """Deal pooled images to SITES: per class, shuffled within source split, then interleaved.

    Interleaving by fractional position (j + 0.5) / group size makes every consecutive chunk carry
    the pool's val/test mix, so a site's source composition matches the pool without quotas.
    """
    out: dict[str, list] = {s.id: [] for s in SITES}
    for label in (0, 1):
        keyed = []
        for split in ("val", "test"):
            group = [p for p in pool if p[0] == split and p[2] == label]
            order = rng.permutation(len(group))
            keyed += [((j + 0.5) / len(group), split, group[k]) for j, k in enumerate(order)]
        keyed.sort(key=lambda t: (t[0], t[1]))
        deck = [t[2] for t in keyed]
        start = 0
        for s in SITES:
            n = s.n_pneumonia if label else s.n_normal
            if start + n > len(deck):
                raise SystemExit(f"error: not enough {CLASSES[label]} images for site {s.id}")
            out[s.id] += deck[start : start + n]
            start += n
    return out


# --- shifts -------------------------------------------------------------------------------
def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def vendor_b_curve(img: np.ndarray) -> np.ndarray:
    lo, hi = VENDOR_B_WINDOW
    x = np.clip((img.astype(np.float64) / 255.0 - lo) / (hi - lo), 0.0, 1.0)
    return to_uint8(255.0 * x**VENDOR_B_GAMMA)


def noisy_blur(img: np.ndarray, rng) -> np.ndarray:
    blurred = gaussian_filter(img.astype(np.float64), NOISY_BLUR_SIGMA, mode="reflect", truncate=4.0)
    return to_uint8(blurred + rng.normal(0.0, NOISY_BLUR_NOISE_SD, img.shape))


def low_res(img: np.ndarray) -> np.ndarray:
    small = Image.fromarray(img).resize((LOW_RES_SIZE, LOW_RES_SIZE), Image.Resampling.BOX)
    return np.asarray(small.resize(img.shape[::-1], Image.Resampling.BILINEAR))


def drift_step(month: int) -> int:
    return max(0, month - DRIFT_START_MONTH + 1)


def drift(img: np.ndarray, month: int, rng) -> np.ndarray:
    k = drift_step(month)
    if k == 0:
        return img.copy()
    f = img.astype(np.float64)
    mu = f.mean()
    contrast = 1.0 - DRIFT_CONTRAST_STEP * k
    return to_uint8(mu + contrast * (f - mu) + rng.normal(0.0, DRIFT_NOISE_STEP * k, f.shape))


# --- simulated patients and dates -------------------------------------------------------------
def assign_patients(labels: np.ndarray, spec: SiteSpec, rng) -> tuple[np.ndarray, list[dict]]:
    """Group a site's images into simulated patients; ~10% of patients get two same-label images.

    Returns the patient index of each image and one attribute dict per patient.
    """
    patient_of = np.empty(len(labels), dtype=int)
    groups: list[list[int]] = []
    for label in (0, 1):
        idx = rng.permutation(np.flatnonzero(labels == label))
        n_pairs = int(round(len(idx) * PAIRED_FRACTION / 2))
        groups += [list(idx[2 * j : 2 * j + 2]) for j in range(n_pairs)]
        groups += [[i] for i in idx[2 * n_pairs :]]
    order = rng.permutation(len(groups))
    patients = []
    for pnum, g in enumerate(order):
        for i in groups[g]:
            patient_of[i] = pnum
        age = int(np.clip(np.round(rng.normal(spec.age_mean, spec.age_sd)), 18, 95))
        patients.append({"sex": "F" if rng.random() < 0.5 else "M", "age": age})
    return patient_of, patients


def drift_dates(labels: np.ndarray, rng) -> list[dt.date]:
    """Spread the drift site over 12 months, class-stratified: 16 images a month, stable prevalence."""
    month_of = np.empty(len(labels), dtype=int)
    cursor = 0
    for label in (0, 1):
        idx = rng.permutation(np.flatnonzero(labels == label))
        for i in idx:
            month_of[i] = cursor % 12 + 1
            cursor += 1
    dates = []
    for m in month_of:
        days = calendar.monthrange(DRIFT_YEAR, int(m))[1]
        dates.append(dt.date(DRIFT_YEAR, int(m), int(rng.integers(1, days + 1))))
    return dates


# --- writers ---------------------------------------------------------------------------------
def write_png(path: Path, img: np.ndarray) -> None:
    Image.fromarray(img, mode="L").save(path, format="PNG")


def write_dicom(
    path: Path,
    img: np.ndarray,
    *,
    case_id: str,
    patient_id: str,
    patient_no: int,
    sex: str,
    age: int,
    manufacturer: str,
) -> None:
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    def uid(*parts: str) -> str:
        # a 2.25.<128-bit integer> UID (PS3.5 B.2) from a hash, not uuid4: reruns write identical files
        digest = hashlib.sha256("/".join(("validate-sample-chest", *parts)).encode()).digest()
        return f"2.25.{int.from_bytes(digest[:16], 'big')}"

    sop_uid = uid("sop", case_id)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DICOM_SC_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian

    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = DICOM_SC_SOP_CLASS
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = uid("study", patient_id)
    ds.SeriesInstanceUID = uid("series", patient_id)
    ds.Modality = "CR"
    ds.ConversionType = "WSD"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.BodyPartExamined = "CHEST"
    ds.Manufacturer = manufacturer
    ds.ManufacturerModelName = VENDOR_B_MODEL
    ds.StudyDescription = "SIMULATED vendor B acquisition (PneumoniaMNIST, CC BY 4.0)"
    ds.PatientName = f"SYNTHETIC^PATIENT{patient_no:04d}"
    ds.PatientID = patient_id
    ds.PatientSex = sex
    ds.PatientAge = f"{age:03d}Y"
    ds.PatientBirthDate = ""
    ds.StudyID = "1"
    # type 2 attributes of the Secondary Capture IOD: present, empty where there is nothing true to say
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.PatientOrientation = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = img.shape
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    # identity Modality LUT; the linear window c=128, w=256 maps [0, 255] onto itself exactly
    # (DICOM PS3.3 C.11.2.1.2.1), so every reading path yields the stored 8-bit values
    ds.RescaleSlope = "1"
    ds.RescaleIntercept = "0"
    ds.RescaleType = "US"
    ds.WindowCenter = "128"
    ds.WindowWidth = "256"
    ds.PixelData = np.ascontiguousarray(img, dtype=np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)


# --- one site --------------------------------------------------------------------------------
def build_site(spec: SiteSpec, members, data, out_dir: Path, site_no: int) -> list[dict]:
    rng = np.random.default_rng([SEED, site_no])
    members = [members[i] for i in rng.permutation(len(members))]
    labels = np.array([m[2] for m in members])
    patient_of, patients = assign_patients(labels, spec, rng)
    dates = drift_dates(labels, rng) if spec.id == "drift_site" else None
    order = list(range(len(members)))
    if dates is not None:
        order.sort(key=lambda i: (dates[i], i))  # case ids follow acquisition order

    site_dir = out_dir / spec.id
    if site_dir.exists():
        shutil.rmtree(site_dir)
    (site_dir / "images").mkdir(parents=True)
    noise_rng = np.random.default_rng([SEED, site_no, 1])
    rows = []
    for n, i in enumerate(order, start=1):
        split, src_index, label = members[i]
        src = data[f"{split}_images"][src_index]
        if spec.id == "vendor_b":
            img = vendor_b_curve(src)
        elif spec.id == "noisy_blur":
            img = noisy_blur(src, noise_rng)
        elif spec.id == "low_res":
            img = low_res(src)
        elif spec.id == "drift_site":
            img = drift(src, dates[i].month, noise_rng)
        else:
            img = src.copy()
        case_id = f"{spec.id}-{n:04d}"
        pnum = int(patient_of[i]) + 1
        patient_id = f"sim-{spec.id}-p{pnum:04d}"
        attrs = patients[pnum - 1]
        image = f"{case_id}.{spec.fmt}"
        if spec.fmt == "dcm":
            write_dicom(
                site_dir / "images" / image,
                img,
                case_id=case_id,
                patient_id=patient_id,
                patient_no=pnum,
                sex=attrs["sex"],
                age=attrs["age"],
                manufacturer=spec.manufacturer,
            )
        else:
            write_png(site_dir / "images" / image, img)
        row = {
            "case_id": case_id,
            "patient_id": patient_id,
            "label": CLASSES[label],
            "image": image,
            "sex": attrs["sex"],
            "age": attrs["age"],
            "manufacturer": spec.manufacturer,
        }
        if dates is not None:
            row["acquired_at"] = dates[i].isoformat()
        row["source_split"] = split
        row["source_index"] = int(src_index)
        rows.append(row)
    with open(out_dir / f"{spec.id}.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder (holds pneumoniamnist/)")
    ap.add_argument("--out", type=Path, default=HERE, help="where to write the sites (default: this folder)")
    args = ap.parse_args(argv)

    data = load_pneumoniamnist(args.data)
    pool = site_pool(data)
    allocation = allocate(pool, np.random.default_rng([SEED, 0]))
    args.out.mkdir(parents=True, exist_ok=True)
    n_pool_pos = sum(p[2] for p in pool)
    print(f"pool: {len(pool)} images ({n_pool_pos} pneumonia) from val + test")
    for site_no, spec in enumerate(SITES, start=1):
        rows = build_site(spec, allocation[spec.id], data, args.out, site_no)
        n_pos = sum(r["label"] == "pneumonia" for r in rows)
        n_pat = len({r["patient_id"] for r in rows})
        print(
            f"{spec.id:15s} n={len(rows):4d} pneumonia={n_pos:4d} prevalence={n_pos / len(rows):.3f} "
            f"patients={n_pat} format={spec.fmt}"
        )
    used = sum(len(v) for v in allocation.values())
    print(f"unused pool images: {len(pool) - used} (all pneumonia: low_prevalence takes few)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
