"""Write the 3D sample sites: a SIMULATED CT phantom cohort seen by three simulated scanners.

No small public 3D data set with a licence that allows shipping is in ../shared/data (see its
SOURCES.md), so every volume here is simulated; README.md documents the phantom and each scanner.

The phantom (one per case, in mm relative to the centre of a 40 mm field of view, RAS+ axes):
  background   -90 HU (fat)
  organ        an ellipsoid, semi-axes U(11, 15) mm each, centre offset U(-2, 2) mm per axis plus
               +2 mm towards the patient's right; 55 HU x the scanner's iodine factor
  vessel       a straight tube of radius 1.2 mm in a random direction, passing 6 mm from the
               organ's centre, 160 HU x iodine factor, drawn over the organ
  lesion       the label: a sphere of radius U(1.75, 4.5) mm inside the organ (1.5 mm from its
               surface) and clear of the vessel by 1 mm, organ HU plus U(50, 90) HU, all x iodine
               factor (a hyperenhancing lesion); cases without a lesion have none
A scanner measures each voxel as the mean of the phantom over the voxel's box (3 x 3 in plane, one
sample per 0.5 mm of slice thickness): a box slice profile, so thick slices dilute small lesions
(partial volume). Noise: white Gaussian noise smoothed in plane by the reconstruction kernel
(Gaussian sigma STANDARD 0.8, BONE 0.35 pixels: BONE's grain is finer and sharper), rescaled to
the scanner's noise SD, added, rounded to integer HU.

Sites (one storage format each, to exercise every volume reader):
  development  enhanced multi-frame DICOM (Enhanced CT Image Storage, one file per case), 2.0 mm
               slices, STANDARD, 120 kVp: the reference, with every acquisition attribute recorded
  scanner_b    DICOM series folders (one CT Image Storage file per slice), 5.0 mm slices
  scanner_c    NIfTI (.nii.gz, int16 HU, LPS axis order), 1.25 mm slices, BONE kernel, 100 kVp: an
               export that kept the voxels and the geometry but lost the equipment headers
Usage: .venv/bin/python sample_sites/volume/make_sites.py   (rewrites every site; deterministic)
"""

from __future__ import annotations

import csv
import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

HERE = Path(__file__).resolve().parent

FOV_MM = 40.0  # field of view along each axis
PIXEL_MM = 2.0  # in-plane pixel size at every scanner (and the model's grid)
MATRIX = int(FOV_MM / PIXEL_MM)  # 20 x 20 pixels in plane
CENTRE_RAS = np.array([14.0, -36.0, 120.0])  # the field of view's centre in world RAS+ mm
BACKGROUND_HU = -90.0
ORGAN_HU = 55.0
VESSEL_HU = 160.0
VESSEL_RADIUS_MM = 1.2
LESION_RADIUS_MM = (1.75, 4.5)
LESION_CONTRAST_HU = (50.0, 90.0)
KERNEL_SIGMA_PX = {"STANDARD": 0.8, "BONE": 0.35}
DICOM_OFFSET = 1024  # stored value = HU + 1024 (RescaleIntercept -1024)


@dataclass(frozen=True)
class Scanner:
    """One simulated acquisition protocol; a site is one scanner."""

    id: str
    name: str
    storage: str  # nifti | dicom_series | enhanced_dicom
    n_cases: int
    n_lesion: int
    slice_mm: float
    kernel: str
    kvp: float
    noise_hu: float
    manufacturer: str
    model: str
    seed: int

    @property
    def n_slices(self) -> int:
        return int(round(FOV_MM / self.slice_mm))

    @property
    def iodine(self) -> float:
        """Contrast-enhancement factor: iodine attenuates more at lower tube voltage (simulated 1.2 at 100 kVp)."""
        return 1.2 if self.kvp < 110 else 1.0


SITES = (
    Scanner("development", "Development scanner (enhanced DICOM)", "enhanced_dicom", 80, 32, 2.0, "STANDARD", 120.0,
            20.0, "Phantom Medical", "PM-CT 64", 101),
    Scanner("scanner_b", "Scanner B, 5 mm slices (DICOM series)", "dicom_series", 60, 24, 5.0, "STANDARD", 120.0,
            13.0, "Simulated Imaging", "SI Helix 16", 202),
    Scanner("scanner_c", "Scanner C, 1.25 mm slices, BONE kernel, 100 kVp (NIfTI)", "nifti", 50,
            20, 1.25, "BONE", 100.0, 34.0, "Virtual Systems", "VS Aquila 320", 303),
)  # fmt: skip
TRAINING = Scanner("training", "training cases (not shipped)", "none", 0, 0, 2.0, "STANDARD", 120.0, 20.0, "", "", 0)


@dataclass(frozen=True)
class Phantom:
    """One case's anatomy, in mm relative to the field-of-view centre (RAS+)."""

    organ_centre: np.ndarray
    organ_axes: np.ndarray
    vessel_point: np.ndarray
    vessel_direction: np.ndarray
    lesion_centre: np.ndarray | None
    lesion_radius: float
    lesion_contrast: float

    @property
    def has_lesion(self) -> bool:
        return self.lesion_centre is not None


def _distance_to_line(points: np.ndarray, origin: np.ndarray, direction: np.ndarray) -> np.ndarray:
    rel = points - origin
    return np.linalg.norm(rel - np.outer(rel @ direction, direction), axis=-1)


def _draw_lesion(rng: np.random.Generator, centre, axes, vessel_point, direction) -> tuple[np.ndarray, float]:
    """A lesion centre drawn uniformly inside the organ shrunk by radius + 1.5 mm, kept only when the
    sphere clears the vessel by 1 mm (rejection sampling; the vessel passes 6 mm off-centre, so the
    far side of the organ always has room)."""
    radius = float(rng.uniform(*LESION_RADIUS_MM))
    inner = axes - radius - 1.5
    while True:
        u = rng.uniform(-1.0, 1.0, 3)
        if u @ u > 1.0:
            continue
        point = centre + u * inner
        if _distance_to_line(point[None], vessel_point, direction)[0] > radius + VESSEL_RADIUS_MM + 1.0:
            return point, radius


def draw_phantom(rng: np.random.Generator, lesion: bool) -> Phantom:
    centre = rng.uniform(-2.0, 2.0, 3) + np.array([2.0, 0.0, 0.0])
    axes = rng.uniform(11.0, 15.0, 3)
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    across = np.cross(direction, rng.normal(size=3))
    vessel_point = centre + 6.0 * across / np.linalg.norm(across)
    if not lesion:
        return Phantom(centre, axes, vessel_point, direction, None, 0.0, 0.0)
    lesion_centre, radius = _draw_lesion(rng, centre, axes, vessel_point, direction)
    contrast = float(rng.uniform(*LESION_CONTRAST_HU))
    return Phantom(centre, axes, vessel_point, direction, lesion_centre, radius, contrast)


def phantom_hu(ph: Phantom, r: np.ndarray, a: np.ndarray, s: np.ndarray, iodine: float) -> np.ndarray:
    """HU of the phantom at the points (r, a, s): mm along R, A, S relative to the field-of-view centre,
    arrays that broadcast against each other (a grid passes three orthogonal 1-D axes)."""
    coords = (r, a, s)  # not broadcast up front: each per-axis term is computed on its own small axis
    organ = sum(((x - c) / h) ** 2 for x, c, h in zip(coords, ph.organ_centre, ph.organ_axes, strict=True)) <= 1.0
    rel = [x - p for x, p in zip(coords, ph.vessel_point, strict=True)]
    along = sum(x * d for x, d in zip(rel, ph.vessel_direction, strict=True))
    vessel = sum(x * x for x in rel) - along * along <= VESSEL_RADIUS_MM**2
    hu = np.full(organ.shape, BACKGROUND_HU)
    hu[organ] = ORGAN_HU * iodine
    if ph.has_lesion:
        inside = sum((x - c) ** 2 for x, c in zip(coords, ph.lesion_centre, strict=True)) <= ph.lesion_radius**2
        hu[inside] = (ORGAN_HU + ph.lesion_contrast) * iodine
    hu[vessel] = VESSEL_HU * iodine
    return hu


def _centres(n: int, step: float) -> np.ndarray:
    """Voxel-centre coordinates (mm) of n voxels of size step, centred on 0."""
    return (np.arange(n) - (n - 1) / 2.0) * step


def _offsets(n: int, step: float) -> np.ndarray:
    """n sub-sample offsets spread evenly over a voxel of size step (midpoint rule)."""
    return ((np.arange(n) + 0.5) / n - 0.5) * step


def acquire_signal(ph: Phantom, scanner: Scanner) -> np.ndarray:
    """Noise-free voxel values [slice, row, column] in HU: the phantom averaged over each voxel's box.

    Slices run inferior -> superior (+S); rows run anterior -> posterior (+P, DICOM's +y);
    columns run right -> left (+L, DICOM's +x): the DICOM patient frame (LPS) of an axial scan.
    """
    nz = max(3, int(round(scanner.slice_mm / 0.5)))
    s = _centres(scanner.n_slices, scanner.slice_mm)[:, None] + _offsets(nz, scanner.slice_mm)[None, :]
    p = _centres(MATRIX, PIXEL_MM)[:, None] + _offsets(3, PIXEL_MM)[None, :]
    # RAS coordinates on the [slice, row, column] grid: S = s, A = -p (rows go posterior), R = -p (columns go left)
    hu = phantom_hu(ph, -p.reshape(1, 1, -1), -p.reshape(1, -1, 1), s.reshape(-1, 1, 1), scanner.iodine)
    hu = hu.reshape(scanner.n_slices, nz, MATRIX, 3, MATRIX, 3)
    return hu.mean(axis=(1, 3, 5))


def add_noise(signal: np.ndarray, scanner: Scanner, rng: np.random.Generator) -> np.ndarray:
    """signal + kernel-shaped noise of SD scanner.noise_hu, rounded to integer HU (int16)."""
    sigma = KERNEL_SIGMA_PX[scanner.kernel]
    noise = gaussian_filter(rng.standard_normal(signal.shape), sigma=(0.0, sigma, sigma), mode="wrap")
    noise *= scanner.noise_hu / noise.std()
    return np.rint(signal + noise).astype(np.int16)


def acquire(ph: Phantom, scanner: Scanner, rng: np.random.Generator) -> np.ndarray:
    """One scan: int16 HU [slice (+S), row (+P), column (+L)]."""
    return add_noise(acquire_signal(ph, scanner), scanner, rng)


def to_ras(scan: np.ndarray) -> np.ndarray:
    """[slice +S, row +P, column +L] -> the RAS+ array [i +R, j +A, k +S] (what the model is given)."""
    return np.ascontiguousarray(scan.transpose(2, 1, 0)[::-1, ::-1, :])


# ---- geometry ---------------------------------------------------------------------------------------


def first_voxel_lps(scanner: Scanner) -> np.ndarray:
    """World LPS position (mm) of voxel [slice 0, row 0, column 0]'s centre."""
    half = (MATRIX - 1) / 2.0 * PIXEL_MM
    half_z = (scanner.n_slices - 1) / 2.0 * scanner.slice_mm
    centre_lps = CENTRE_RAS * np.array([-1.0, -1.0, 1.0])
    return centre_lps + np.array([-half, -half, -half_z])


def slice_position_lps(scanner: Scanner, k: int) -> list[float]:
    return [round(float(v), 4) for v in first_voxel_lps(scanner) + np.array([0.0, 0.0, k * scanner.slice_mm])]


def nifti_affine(scanner: Scanner) -> np.ndarray:
    """Voxel (i = column +L, j = row +P, k = slice +S) -> RAS+ world mm: the LPS axis order ITK writes."""
    origin = first_voxel_lps(scanner) * np.array([-1.0, -1.0, 1.0])
    affine = np.diag([-PIXEL_MM, -PIXEL_MM, scanner.slice_mm, 1.0])
    affine[:3, 3] = origin
    return affine


# ---- writers ----------------------------------------------------------------------------------------


def uid(*parts: str) -> str:
    """A deterministic 2.25 UID (UUID-derived form) from the given strings."""
    return "2.25." + str(int(hashlib.sha256("/".join(parts).encode()).hexdigest()[:30], 16))


def write_nifti(scan: np.ndarray, scanner: Scanner, path: Path) -> None:
    import gzip

    import nibabel as nib

    img = nib.Nifti1Image(np.ascontiguousarray(scan.transpose(2, 1, 0)), nifti_affine(scanner))
    img.header.set_xyzt_units("mm")
    img.header.set_qform(img.affine, code=1)
    img.header.set_sform(img.affine, code=1)
    img.header["descrip"] = b"SYNTHETIC phantom (validate sample)"
    img.set_data_dtype(np.int16)
    # gzip with mtime 0 so that regeneration writes identical bytes
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as fh:
        fh.write(img.to_bytes())


def _base_dataset(row: dict, scanner: Scanner, sop_class: str, sop_uid: str):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = uid("validate", "sample_sites", "volume")
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.Modality = "CT"
    ds.PatientName = "SYNTHETIC^" + row["patient_id"].upper().replace("-", "")
    ds.PatientID = row["patient_id"]
    ds.PatientSex = row["sex"]
    ds.PatientAge = f"{int(row['age']):03d}Y"
    ds.StudyInstanceUID = uid("study", row["case_id"])
    ds.SeriesInstanceUID = uid("series", row["case_id"])
    ds.FrameOfReferenceUID = uid("frame", row["case_id"])
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240101"
    ds.StudyID, ds.SeriesNumber = "1", 1
    ds.Manufacturer, ds.ManufacturerModelName = scanner.manufacturer, scanner.model
    ds.BodyPartExamined = "ABDOMEN"
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = MATRIX
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    return ds


def _stored(hu: np.ndarray) -> bytes:
    return np.clip(hu.astype(np.int32) + DICOM_OFFSET, 0, 4095).astype("<u2").tobytes()


def write_dicom_series(scan: np.ndarray, scanner: Scanner, row: dict, folder: Path) -> None:
    """One CT Image Storage file per slice. Instance 1 is the most superior slice (head-first order)
    and the files are named by instance number, so reading them sorted by name runs opposite to +S."""
    from pydicom.uid import CTImageStorage

    folder.mkdir(parents=True)
    n = scanner.n_slices
    for k in range(n):
        instance = n - k
        ds = _base_dataset(row, scanner, CTImageStorage, uid("slice", row["case_id"], str(k)))
        ds.InstanceNumber = instance
        ds.ImagePositionPatient = slice_position_lps(scanner, k)
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [PIXEL_MM, PIXEL_MM]
        ds.SliceThickness = scanner.slice_mm
        ds.SpacingBetweenSlices = scanner.slice_mm
        ds.SliceLocation = slice_position_lps(scanner, k)[2]
        ds.KVP = scanner.kvp
        ds.ConvolutionKernel = scanner.kernel
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -DICOM_OFFSET, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.PixelData = _stored(scan[k])
        ds.save_as(folder / f"slice-{instance:03d}.dcm", enforce_file_format=True)


def _enhanced_shared_groups(scanner: Scanner):
    from pydicom.dataset import Dataset

    measures = Dataset()
    measures.PixelSpacing = [PIXEL_MM, PIXEL_MM]
    measures.SliceThickness = scanner.slice_mm
    measures.SpacingBetweenSlices = scanner.slice_mm
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    transform = Dataset()
    transform.RescaleIntercept, transform.RescaleSlope, transform.RescaleType = -DICOM_OFFSET, 1, "HU"
    reconstruction = Dataset()
    reconstruction.ConvolutionKernel = scanner.kernel
    xray = Dataset()
    xray.KVP = scanner.kvp
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    shared.PlaneOrientationSequence = [orientation]
    shared.PixelValueTransformationSequence = [transform]
    shared.CTReconstructionSequence = [reconstruction]
    shared.CTXRayDetailsSequence = [xray]
    return shared


def write_enhanced_dicom(scan: np.ndarray, scanner: Scanner, row: dict, path: Path) -> None:
    """One Enhanced CT Image Storage file, frames ordered inferior -> superior; geometry, rescale,
    kernel and kVp in the functional groups (PS3.3 C.7.6.16), kernel and kVp also at the top level."""
    from pydicom.dataset import Dataset
    from pydicom.uid import EnhancedCTImageStorage

    ds = _base_dataset(row, scanner, EnhancedCTImageStorage, uid("enhanced", row["case_id"]))
    ds.InstanceNumber = 1
    ds.NumberOfFrames = scanner.n_slices
    ds.ImageType = ["DERIVED", "PRIMARY", "AXIAL", "NONE"]
    ds.SliceThickness = scanner.slice_mm
    ds.KVP = scanner.kvp
    ds.ConvolutionKernel = scanner.kernel
    ds.SharedFunctionalGroupsSequence = [_enhanced_shared_groups(scanner)]
    frames = []
    for k in range(scanner.n_slices):
        position = Dataset()
        position.ImagePositionPatient = slice_position_lps(scanner, k)
        content = Dataset()
        content.InStackPositionNumber = k + 1
        group = Dataset()
        group.PlanePositionSequence = [position]
        group.FrameContentSequence = [content]
        frames.append(group)
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.PixelData = _stored(scan)
    ds.save_as(path, enforce_file_format=True)


# ---- cohort -----------------------------------------------------------------------------------------


def case_rows(scanner: Scanner, rng: np.random.Generator) -> list[dict]:
    """The manifest rows: lesion cases shuffled among the rest; one scan per SIMULATED patient."""
    lesion = np.zeros(scanner.n_cases, dtype=bool)
    lesion[rng.permutation(scanner.n_cases)[: scanner.n_lesion]] = True
    rows = []
    for i in range(scanner.n_cases):
        case_id = f"{scanner.id}-{i + 1:03d}"
        rows.append(
            {
                "case_id": case_id,
                "patient_id": f"sim-{scanner.id}-p{i + 1:03d}",
                "label": "lesion" if lesion[i] else "no_lesion",
                "image": case_id + {"nifti": ".nii.gz", "dicom_series": "", "enhanced_dicom": ".dcm"}[scanner.storage],
                "sex": "F" if rng.random() < 0.5 else "M",
                "age": int(np.clip(np.rint(rng.normal(60.0, 12.0)), 25, 90)),
            }
        )
    return rows


def write_case(scan: np.ndarray, scanner: Scanner, row: dict, images: Path) -> None:
    if scanner.storage == "nifti":
        write_nifti(scan, scanner, images / row["image"])
    elif scanner.storage == "dicom_series":
        write_dicom_series(scan, scanner, row, images / row["image"])
    else:
        write_enhanced_dicom(scan, scanner, row, images / row["image"])


def make_site(scanner: Scanner, root: Path = HERE) -> list[dict]:
    """Write one site's images and manifest; returns the manifest rows."""
    rng = np.random.default_rng(scanner.seed)
    rows = case_rows(scanner, rng)
    images = root / scanner.id / "images"
    if images.exists():
        shutil.rmtree(images)
    images.mkdir(parents=True)
    for row in rows:
        ph = draw_phantom(rng, row["label"] == "lesion")
        row["lesion_diameter_mm"] = f"{2 * ph.lesion_radius:.1f}" if ph.has_lesion else ""
        write_case(acquire(ph, scanner, rng), scanner, row, images)
    with open(root / f"{scanner.id}.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return rows


def main() -> int:
    for scanner in SITES:
        rows = make_site(scanner)
        n_lesion = sum(r["label"] == "lesion" for r in rows)
        print(f"{scanner.id}: {len(rows)} cases, {n_lesion} with a lesion, {scanner.storage}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
