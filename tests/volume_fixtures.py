"""Writers of one known numpy volume as NIfTI, a DICOM series folder, and enhanced and legacy
multi-frame DICOM, with chosen spacing and orientation (used by the volume tests of every slice).

A volume is ``voxels[d, h, w]`` (integer-valued Hounsfield units) with a 4x4 ``affine`` from voxel
index ``(d, h, w, 1)`` to RAS+ world mm (nibabel's convention). The DICOM writers take axis 0 as the
slice axis: slice ``k`` is ``voxels[k]``, its rows run along axis 1 and its columns along axis 2, and
its ImagePositionPatient is the world position of voxel ``(k, 0, 0)`` in DICOM's LPS coordinates. The
writers build the headers by hand from that definition (DICOM PS3.3 C.7.6.2.1.1), independently of the
reader in ``validate.scoring.volumes``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2.1"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
LPS = np.diag([-1.0, -1.0, 1.0])  # RAS <-> LPS: negate x and y

DEFAULT_EQUIPMENT = {
    "Manufacturer": "ACME Medical",
    "ManufacturerModelName": "Phantom CT 64",
    "ConvolutionKernel": "STANDARD",
    "SliceThickness": 2.5,
    "KVP": 120,
}


def known_volume(shape: tuple[int, int, int] = (16, 20, 24), seed: int = 0) -> np.ndarray:
    """Integer HU values in [-1000, 1000] with structure along every axis (a gradient, a bright
    off-centre ball and noise), so that a flip or a transposition of any axis changes the array."""
    rng = np.random.default_rng(seed)
    d, h, w = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")
    ball = ((d - shape[0] * 0.3) ** 2 + (h - shape[1] * 0.6) ** 2 + (w - shape[2] * 0.25) ** 2) < 16
    values = -800 + 40 * d + 15 * h + 5 * w + 900 * ball + rng.integers(-30, 30, size=shape)
    return np.clip(values, -1000, 1000).astype(np.float32)


def axial_affine(spacing: tuple[float, float, float] = (2.5, 0.8, 0.7), origin=(-10.0, 20.0, -30.0)) -> np.ndarray:
    """An axial stack as CT stores it: axis 0 (slices) towards the head (S), axis 1 (rows) towards the
    patient's back (P), axis 2 (columns) towards the patient's left (L); ``spacing`` (d, h, w) in mm."""
    affine = np.eye(4)
    affine[:3, 0] = [0.0, 0.0, spacing[0]]
    affine[:3, 1] = [0.0, -spacing[1], 0.0]
    affine[:3, 2] = [-spacing[2], 0.0, 0.0]
    affine[:3, 3] = origin
    return affine


def write_nifti(path: Path, voxels: np.ndarray, affine: np.ndarray, axes: tuple[int, int, int] = (0, 1, 2)) -> Path:
    """The volume as NIfTI-1 (float32), its array axes stored in the order ``axes`` (the affine's
    columns permuted alike, so the file holds the same physical volume)."""
    import nibabel as nib

    data = np.transpose(voxels, axes)
    new_affine = affine.copy()
    new_affine[:3, :3] = affine[:3, list(axes)]
    img = nib.Nifti1Image(np.ascontiguousarray(data, dtype=np.float32), new_affine)
    nib.save(img, str(path))
    return path


def _geometry(affine: np.ndarray) -> tuple[list[float], list[float], np.ndarray]:
    """ImageOrientationPatient, PixelSpacing and the LPS positions' linear part of ``affine``."""
    lps = LPS @ affine[:3, :]
    row_step, col_step = lps[:, 2], lps[:, 1]  # along a row = increasing column index (axis 2)
    row_cos = row_step / np.linalg.norm(row_step)
    col_cos = col_step / np.linalg.norm(col_step)
    orientation = [float(v) for v in np.concatenate([row_cos, col_cos])]
    pixel_spacing = [float(np.linalg.norm(col_step)), float(np.linalg.norm(row_step))]  # rows, columns
    return orientation, pixel_spacing, lps


def _image_dataset(rows: int, columns: int, sop_class: str, equipment: dict[str, Any] | None, series_uid: str) -> Any:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = EXPLICIT_LE
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "CT"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    for keyword, value in (DEFAULT_EQUIPMENT if equipment is None else equipment).items():
        setattr(ds, keyword, value)
    return ds


def write_dicom_series(
    folder: Path,
    voxels: np.ndarray,
    affine: np.ndarray,
    *,
    equipment: dict[str, Any] | None = None,
    intercepts: list[float] | None = None,
    series_uid: str = "1.2.826.0.1.3680043.8.498.2",
    compress: str | None = None,
    shuffle_names: bool = True,
    skip: tuple[int, ...] = (),
) -> Path:
    """One CT Image file per slice ``voxels[k]`` (int16 stored values, RescaleSlope 1, RescaleIntercept
    ``intercepts[k]``, default -1024 for every slice), named in a shuffled order so that a reader must
    order them by position. ``compress`` a transfer syntax UID for ``Dataset.compress`` (e.g. RLE
    Lossless); ``skip`` slice indices left out (a missing slice)."""
    folder.mkdir(parents=True, exist_ok=True)
    orientation, pixel_spacing, lps = _geometry(affine)
    n = voxels.shape[0]
    intercepts = intercepts if intercepts is not None else [-1024.0] * n
    names = np.random.default_rng(1).permutation(n) if shuffle_names else np.arange(n)
    for k in range(n):
        if k in skip:
            continue
        ds = _image_dataset(voxels.shape[1], voxels.shape[2], CT_IMAGE, equipment, series_uid)
        ds.ImagePositionPatient = [float(v) for v in lps @ np.array([k, 0.0, 0.0, 1.0])]
        ds.ImageOrientationPatient = orientation
        ds.PixelSpacing = pixel_spacing
        ds.InstanceNumber = k + 1
        ds.RescaleSlope, ds.RescaleIntercept = 1.0, float(intercepts[k])
        stored = np.round(voxels[k] - intercepts[k]).astype("<i2")
        ds.PixelData = stored.tobytes()
        if compress:
            ds.compress(compress, stored)
        ds.save_as(folder / f"IM{int(names[k]):04d}.dcm", enforce_file_format=True)
    return folder


def write_enhanced_multiframe(
    path: Path,
    voxels: np.ndarray,
    affine: np.ndarray,
    *,
    equipment: dict[str, Any] | None = None,
    frame_order: list[int] | None = None,
    slope: float = 1.0,
    intercept: float = -1024.0,
) -> Path:
    """An Enhanced CT Image file: Plane Orientation, Pixel Measures (with SliceThickness), Pixel Value
    Transformation and CT Reconstruction (ConvolutionKernel) in the shared functional groups, one Plane
    Position per frame. Frame ``i`` of the file holds slice ``frame_order[i]`` (default reversed, so a
    reader must order the frames by position). Manufacturer and model at the top level; KVP in CT
    X-Ray Details."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    equipment = dict(DEFAULT_EQUIPMENT if equipment is None else equipment)
    kernel, thickness, kvp = (
        equipment.pop("ConvolutionKernel", None),
        equipment.pop("SliceThickness", None),
        equipment.pop("KVP", None),
    )
    n = voxels.shape[0]
    order = frame_order if frame_order is not None else list(range(n))[::-1]
    ds = _image_dataset(voxels.shape[1], voxels.shape[2], ENHANCED_CT_IMAGE, equipment, "1.2.826.0.1.3680043.8.498.3")
    ds.NumberOfFrames = len(order)
    orientation, pixel_spacing, lps = _geometry(affine)
    shared = Dataset()
    shared.PlaneOrientationSequence = Sequence([Dataset()])
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = orientation
    shared.PixelMeasuresSequence = Sequence([Dataset()])
    shared.PixelMeasuresSequence[0].PixelSpacing = pixel_spacing
    if thickness is not None:
        shared.PixelMeasuresSequence[0].SliceThickness = thickness
    shared.PixelValueTransformationSequence = Sequence([Dataset()])
    shared.PixelValueTransformationSequence[0].RescaleSlope = slope
    shared.PixelValueTransformationSequence[0].RescaleIntercept = intercept
    shared.PixelValueTransformationSequence[0].RescaleType = "HU"
    if kernel is not None:
        shared.CTReconstructionSequence = Sequence([Dataset()])
        shared.CTReconstructionSequence[0].ConvolutionKernel = kernel
    if kvp is not None:
        shared.CTXRayDetailsSequence = Sequence([Dataset()])
        shared.CTXRayDetailsSequence[0].KVP = kvp
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for k in order:
        group = Dataset()
        group.PlanePositionSequence = Sequence([Dataset()])
        group.PlanePositionSequence[0].ImagePositionPatient = [float(v) for v in lps @ np.array([k, 0.0, 0.0, 1.0])]
        frames.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    stored = np.round((voxels[order] - intercept) / slope).astype("<i2")
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_legacy_multiframe(
    path: Path, voxels: np.ndarray, affine: np.ndarray, *, equipment: dict[str, Any] | None = None
) -> Path:
    """A legacy multi-frame CT file: frames in slice order, ImagePositionPatient of the first frame,
    ImageOrientationPatient, PixelSpacing and SpacingBetweenSlices at the top level. The slice normal
    (row cosine x column cosine) must point along the affine's axis 0, as legacy files imply."""
    n = voxels.shape[0]
    ds = _image_dataset(voxels.shape[1], voxels.shape[2], CT_IMAGE, equipment, "1.2.826.0.1.3680043.8.498.4")
    orientation, pixel_spacing, lps = _geometry(affine)
    normal = np.cross(orientation[:3], orientation[3:])
    if normal @ lps[:, 0] <= 0:
        raise ValueError("a legacy multi-frame file steps along the normal: axis 0 must point along it")
    ds.NumberOfFrames = n
    ds.ImagePositionPatient = [float(v) for v in lps[:, 3]]
    ds.ImageOrientationPatient = orientation
    ds.PixelSpacing = pixel_spacing
    ds.SpacingBetweenSlices = float(np.linalg.norm(lps[:, 0]))
    ds.RescaleSlope, ds.RescaleIntercept = 1.0, -1024.0
    ds.PixelData = np.round(voxels + 1024.0).astype("<i2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path
