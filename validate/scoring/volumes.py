"""3D volumes to model inputs: NIfTI, DICOM series folders and multi-frame DICOM, then preprocessing.

Pure functions over files and numpy arrays; the evaluator (kind ``volume``) calls
:func:`read_volume_case`. Every reader returns a :class:`Volume`: float32 voxels in physical units
(DICOM after each slice's Modality LUT / Rescale Slope and Intercept; NIfTI after ``scl_slope`` and
``scl_inter``), the spacing of its array axes and the 4x4 affine from voxel indices to RAS+ world
millimetres (nibabel's convention; DICOM's LPS patient coordinates have their first two axes negated).

:func:`prepare_volume` then reorients, resamples, windows and crops/pads as the protocol declares
(:class:`VolumeSpec`). A volume that cannot be read or is not one consistent grid (several series in a
folder, a missing or duplicated slice, slices that disagree on orientation, size or pixel spacing, a
sheared stack) raises :class:`~validate.scoring.inputs.CaseError` with the reason; the reasons never
carry file paths. Before any pixel is decoded, the headers' voxel count is held to
:data:`MAX_VOLUME_VOXELS`.

This module needs numpy and nibabel (NIfTI, orientation codes); pydicom only when DICOM is read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from validate.scoring.inputs import CaseError, exception_text, image_stats

#: At most this many voxels per volume (512^3, 512 MiB as float32), read from the headers before any
#: pixel is decoded, and again for the grid a resampling would produce.
MAX_VOLUME_VOXELS = 512**3
NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: Acquisition keys of :attr:`Volume.acquisition` (strings, then floats); absent values are omitted.
ACQUISITION_TEXT_KEYS = ("manufacturer", "manufacturer_model", "convolution_kernel")
ACQUISITION_NUMBER_KEYS = ("slice_thickness_mm", "kvp", "spacing_z_mm", "spacing_y_mm", "spacing_x_mm")


@dataclass(frozen=True)
class VolumeSpec:
    """What the protocol's ``input`` block asks of a volume.

    ``size`` is the output grid ``(D, H, W)`` in voxels; ``spacing`` the target ``(D, H, W)`` spacing in
    mm (None keeps the native spacing); ``orientation`` nibabel's three axis codes of the output array's
    axes (``"RAS"``: D runs to the patient's Right, H to Anterior, W to Superior); ``window`` a
    ``(center, width)`` in physical units (HU for CT) mapped onto ``[0, scale]``; ``channels`` how many
    times the one grey channel is repeated."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float] | None = None
    orientation: str = "RAS"
    window: tuple[float, float] | None = None
    channels: int = 1
    scale: float = 1.0

    def __post_init__(self) -> None:
        if len(self.size) != 3 or any(int(n) < 1 for n in self.size):
            raise ValueError(f"volume size {self.size!r}: expected three positive voxel counts (D, H, W)")
        if self.spacing is not None and (
            len(self.spacing) != 3 or not all(math.isfinite(float(s)) and float(s) > 0 for s in self.spacing)
        ):
            raise ValueError(f"volume spacing {self.spacing!r}: expected three positive numbers of mm (D, H, W)")
        check_orientation(self.orientation)
        if self.window is not None and not float(self.window[1]) > 0:
            raise ValueError(f"window width {self.window[1]!r} must be > 0")
        if int(self.channels) < 1 or not float(self.scale) > 0:
            raise ValueError("channels must be at least 1 and scale positive")


@dataclass
class Volume:
    """One volume as read: ``voxels`` float32 ``[D, H, W]`` in physical units, ``spacing`` in mm of
    those axes, ``affine`` voxel index ``(d, h, w, 1)`` -> RAS+ world mm, and the ``acquisition``
    attributes the headers hold (see :data:`ACQUISITION_TEXT_KEYS`, :data:`ACQUISITION_NUMBER_KEYS`)."""

    voxels: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    acquisition: dict[str, str | float] = field(default_factory=dict)


# ---- reading -------------------------------------------------------------------------------------


def is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in NIFTI_SUFFIXES)


def read_volume(path: str | Path) -> Volume:
    """The volume at ``path``: a ``.nii``/``.nii.gz`` file (nibabel), a folder (one DICOM series), or a
    DICOM file holding an enhanced or legacy multi-frame volume."""
    if not path:
        raise CaseError("no volume path for this case")
    path = Path(path)
    if not path.is_dir() and not path.exists():
        raise CaseError("volume file not found")
    if is_nifti(path):
        return read_nifti(path)
    try:
        return read_dicom_series(path) if path.is_dir() else read_multiframe(path)
    except CaseError as exc:
        if exc.reason.startswith("not a DICOM file"):
            raise CaseError(
                "not a volume: expected a NIfTI file (.nii, .nii.gz), a folder holding one DICOM series or a "
                "multi-frame DICOM file"
            ) from None
        raise
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        # a header element of the wrong form (Rows "abc", an empty sequence): this case fails, not the run
        raise CaseError(f"malformed DICOM header: {exception_text(exc)}") from None


def read_nifti(path: Path) -> Volume:
    """A NIfTI-1/2 volume with nibabel: the array in its stored axis order, the affine nibabel chooses
    (sform, else qform), values after ``scl_slope``/``scl_inter``. A 4D image is accepted only with
    one volume along its fourth axis. The acquisition holds the spacing only."""
    import nibabel as nib

    try:
        img: Any = nib.load(str(path))
    except FileNotFoundError:
        raise CaseError("volume file not found") from None
    except Exception as exc:
        raise CaseError(f"not a readable NIfTI file: {exception_text(exc)}") from None
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise CaseError(f"NIfTI image of shape {img.shape} is not one 3D volume")
    check_voxel_count(shape, "NIfTI header declares")
    header = img.header
    if "sform_code" in header and int(header["sform_code"]) == 0 and int(header["qform_code"]) == 0:
        # nibabel would fall back to an affine from the voxel sizes alone, guessing the axes' directions
        raise CaseError(
            "NIfTI header holds no orientation (sform_code and qform_code are 0): the directions of its "
            "voxel axes are unknown"
        )
    if np.dtype(img.get_data_dtype()).kind not in "uif":
        raise CaseError(f"NIfTI data of type {img.get_data_dtype()} is not one grey value per voxel")
    try:
        voxels = np.asarray(img.dataobj, dtype=np.float32).reshape(shape)
    except Exception as exc:
        raise CaseError(f"corrupt or truncated NIfTI data: {exception_text(exc)}") from None
    affine = np.asarray(img.affine, dtype=np.float64)
    return make_volume(voxels, affine, {})


def check_voxel_count(shape: tuple[int, ...], what: str) -> None:
    """Refuse a grid above :data:`MAX_VOLUME_VOXELS` (a decompression bomb or a mistaken input)."""
    n = math.prod(int(s) for s in shape)
    if n > MAX_VOLUME_VOXELS:
        dims = "x".join(str(int(s)) for s in shape)
        raise CaseError(f"{what} {dims} = {n} voxels, above the {MAX_VOLUME_VOXELS} voxel limit")
    if n == 0:
        raise CaseError(f"{what} an empty volume ({'x'.join(str(int(s)) for s in shape)})")


def make_volume(voxels: np.ndarray, affine: np.ndarray, acquisition: dict[str, str | float]) -> Volume:
    """A :class:`Volume` with its spacing (the affine's column norms) and the ``spacing_{z,y,x}_mm``
    acquisition keys: the spacing of the array axis nearest the world's S-I, A-P and R-L axes, so a
    slice step is ``spacing_z_mm`` for an axial stack whatever the file's axis order."""
    import nibabel as nib

    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise CaseError("volume's voxel-to-world matrix is singular or not finite (spacing or orientation missing)")
    if not np.isfinite(voxels).all():
        raise CaseError("volume holds NaN or Inf values", stage="preprocess")
    spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
    world_axis = nib.orientations.io_orientation(affine)[:, 0].astype(int)  # array axis -> world axis
    acquisition = dict(acquisition)
    names = ("spacing_x_mm", "spacing_y_mm", "spacing_z_mm")  # world R-L, A-P, S-I
    for array_axis, world in enumerate(world_axis):
        acquisition[names[int(world)]] = spacing[array_axis]
    return Volume(voxels=voxels, spacing=(spacing[0], spacing[1], spacing[2]), affine=affine, acquisition=acquisition)


# ---- DICOM ---------------------------------------------------------------------------------------

DEFLATED = "1.2.840.10008.1.2.1.99"
# slices closer than this (mm) along the normal are at the same position
SAME_POSITION_MM = 1e-3
# a step more than this times the median step is a missing slice; any other step must lie within
# STEP_TOLERANCE of the median (positions are often written with few decimals)
GAP_FACTOR = 1.5
STEP_TOLERANCE = 0.1
# slices whose in-plane offset per step exceeds this fraction of the step are a sheared stack
SHEAR_TOLERANCE = 0.01
# direction cosines and pixel spacings that differ by less than this are equal
GEOMETRY_TOLERANCE = 1e-4


@dataclass
class _Plane:
    """Where one slice or frame lies: ImagePositionPatient (LPS mm), the row and column direction
    cosines of ImageOrientationPatient, PixelSpacing (between rows, between columns), its size, and its
    rescale; ``index`` is the file or frame it came from."""

    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: np.ndarray
    rows: int
    columns: int
    slope: float = 1.0
    intercept: float = 0.0
    index: int = 0


def _pydicom() -> Any:
    try:
        import pydicom
    except ImportError:  # pragma: no cover - pydicom is a dependency
        raise CaseError("reading DICOM needs pydicom, which is not installed") from None
    return pydicom


def _read_header(path: Path) -> Any:
    """A DICOM data set without its pixel data. Deflated files are refused before
    pydicom inflates them whole (their size is only known once inflated)."""
    pydicom = _pydicom()
    from pydicom.errors import InvalidDicomError
    from pydicom.filereader import read_file_meta_info

    try:
        syntax = str(read_file_meta_info(path).get("TransferSyntaxUID", "") or "")
    except FileNotFoundError:
        raise CaseError("DICOM file not found") from None
    except OSError as exc:
        raise CaseError(f"DICOM file could not be read: {exception_text(exc)}") from None
    except Exception:
        syntax = ""
    if syntax == DEFLATED:
        raise CaseError("deflated DICOM (1.2.840.10008.1.2.1.99) is not supported for volumes")
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError as exc:
        raise CaseError(f"not a DICOM file: {exc}") from None
    except Exception as exc:
        raise CaseError(f"corrupt or truncated DICOM: {exception_text(exc)}") from None


def _series_files(folder: Path) -> list[Path]:
    """The regular files directly in ``folder`` (no recursion), refusing a symbolic link that leads
    outside it (a manifest's folder must not reach the rest of the disk)."""
    root = folder.resolve()
    files = []
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink():
            target = entry.resolve()
            if not target.is_relative_to(root):
                raise CaseError("DICOM series folder holds a symbolic link that leads outside the folder")
        if entry.is_file():
            files.append(entry)
    return files


def read_dicom_series(folder: Path) -> Volume:
    """One DICOM series from the files of ``folder``.

    Files are read without their pixels first: those without an image (Rows) are ignored (a DICOMDIR,
    a report), files that are not DICOM are refused, except hidden ones (``.DS_Store``: a hidden file
    that is a DICOM image still counts, so that no end slice can drop out unseen), the images must
    form one SeriesInstanceUID, one frame each; then the header voxel count is checked
    (:data:`MAX_VOLUME_VOXELS`), the slices are ordered along the normal of their planes and checked
    to form one regular grid (:func:`_stack_affine`). Each slice is then decoded and rescaled with
    its own Modality LUT (Rescale Slope/Intercept, or a Modality LUT Sequence)."""
    headers = []
    not_dicom = 0
    for path in _series_files(folder):
        try:
            ds = _read_header(path)
        except CaseError as exc:
            if exc.reason.startswith("not a DICOM file"):
                not_dicom += not path.name.startswith(".")
                continue
            raise
        if "Rows" in ds:
            headers.append((path, ds))
    if not_dicom:
        raise CaseError(f"DICOM series folder holds {not_dicom} file(s) that are not DICOM")
    if not headers:
        raise CaseError("DICOM series folder holds no DICOM image")
    series = {str(ds.get("SeriesInstanceUID", "")) for _, ds in headers}
    if len(series) > 1:
        raise CaseError(f"DICOM folder holds {len(series)} series; one series per case is expected")
    for _, ds in headers:
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise CaseError("DICOM series holds a multi-frame file; a series folder takes one slice per file")
    first = headers[0][1]
    check_voxel_count((len(headers), int(first.Rows), int(first.Columns)), "DICOM series declares")
    planes = [_plane_of(ds, i) for i, (_, ds) in enumerate(headers)]
    order, affine = _stack_affine(planes, "DICOM series")
    voxels = np.empty((len(order), planes[0].rows, planes[0].columns), dtype=np.float32)
    for out, k in enumerate(order):
        path, ds = headers[planes[k].index]
        voxels[out] = _slice_pixels(path, ds, voxels.shape[1:])
    return make_volume(voxels, affine, _acquisition(first))


def _plane_of(ds: Any, index: int) -> _Plane:
    """The geometry of one single-frame image from its Image Plane module."""
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        if ds.get(keyword) is None:
            raise CaseError(f"DICOM image has no {keyword}: its place in a volume is unknown")
    return _Plane(
        position=_floats(ds.ImagePositionPatient, 3, "ImagePositionPatient"),
        orientation=_floats(ds.ImageOrientationPatient, 6, "ImageOrientationPatient"),
        pixel_spacing=_floats(ds.PixelSpacing, 2, "PixelSpacing"),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        index=index,
    )


def _floats(value: Any, n: int, keyword: str) -> np.ndarray:
    try:
        out = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        raise CaseError(f"DICOM {keyword} {value!r} is not {n} numbers") from None
    if out.shape != (n,) or not np.isfinite(out).all():
        raise CaseError(f"DICOM {keyword} {list(value)!r} is not {n} numbers")
    return out


def _slice_pixels(path: Path, ds: Any, shape: tuple[int, ...]) -> np.ndarray:
    """One slice (header ``ds``) decoded and passed through its Modality LUT (physical units), float64."""
    from pydicom.pixels import apply_modality_lut

    raw = _decoded(ds, path)
    if raw.shape != tuple(shape):
        raise CaseError(f"DICOM slice of pixel shape {raw.shape} is not one grey {shape[0]}x{shape[1]} frame")
    try:
        return np.asarray(apply_modality_lut(raw, ds), dtype=np.float64)
    except Exception as exc:
        raise CaseError(f"DICOM rescale could not be applied: {exception_text(exc)}", stage="preprocess") from None


def _decoded(ds: Any, path: Path) -> np.ndarray:
    """The stored pixel values of the file at ``path`` whose header ``ds`` was read: grey only; a
    compressed syntax without a decoder installed is named with what would decode it, and only a
    failing decoder is called corrupt. Decoded by ``pydicom.pixels.pixel_array`` from the file (which
    parses only what the pixels need: a second full ``dcmread`` per slice cost as much again)."""
    from pydicom.pixels import pixel_array

    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise CaseError("DICOM volume slices must be grey (one sample per pixel), not colour")
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and syntax.is_compressed:
        return _decoded_compressed(path, syntax)
    try:
        return np.asarray(pixel_array(path))
    except Exception as exc:
        name = f" ({syntax.name})" if syntax is not None else ""
        raise CaseError(f"corrupt or truncated DICOM pixel data{name}: {exception_text(exc)}") from None


def _decoded_compressed(path: Path, syntax: Any) -> np.ndarray:
    """Encapsulated pixel data decoded as the 2D path decodes it (:mod:`validate.scoring.dicom_pixels`):
    the same plugin order, the syntax and the package named when no decoder is installed, and a cut
    codestream refused (libjpeg fills a truncated JPEG-family frame in without an error)."""
    import pydicom

    from validate.scoring import dicom_pixels

    try:
        full = pydicom.dcmread(path)
    except Exception as exc:
        raise CaseError(f"corrupt or truncated DICOM: {exception_text(exc)}") from None
    try:
        return np.asarray(dicom_pixels.decode_pixels(full, syntax, None))
    except dicom_pixels.PixelDataError as exc:
        raise CaseError(str(exc)) from None


def _stack_affine(planes: list[_Plane], what: str) -> tuple[list[int], np.ndarray]:
    """The order of ``planes`` along their normal and the RAS+ affine of the stacked grid.

    All planes must share orientation, rows, columns and pixel spacing. The normal is the cross
    product of the row and column direction cosines; planes are ordered by the projection of their
    position on it. Refused: two planes at one position, a step above :data:`GAP_FACTOR` times the
    median (a missing slice), any other step more than :data:`STEP_TOLERANCE` from the median, and a
    stack whose mean step leaves the normal (a sheared grid, e.g. gantry tilt).

    The affine (DICOM PS3.3 C.7.6.2.1.1, then LPS to RAS by negating x and y): column 0 the mean step
    vector between consecutive planes, column 1 the column cosine times the row spacing (array axis 1 =
    rows), column 2 the row cosine times the column spacing, translation the first plane's position."""
    ref = planes[0]
    if len(planes) < 2:
        raise CaseError(f"{what} holds one slice: not a volume (a 2D model reads it as an image)")
    for p in planes[1:]:
        if (p.rows, p.columns) != (ref.rows, ref.columns):
            raise CaseError(
                f"{what} mixes slice sizes ({ref.rows}x{ref.columns} and {p.rows}x{p.columns}): not one volume"
            )
        if np.abs(p.orientation - ref.orientation).max() > GEOMETRY_TOLERANCE:
            raise CaseError(f"{what} mixes slice orientations (ImageOrientationPatient differs): not one volume")
        if np.abs(p.pixel_spacing - ref.pixel_spacing).max() > GEOMETRY_TOLERANCE * ref.pixel_spacing.max():
            raise CaseError(
                f"{what} mixes pixel spacings ({_mm(ref.pixel_spacing)} and {_mm(p.pixel_spacing)} mm): not one volume"
            )
    row_cos, col_cos = ref.orientation[:3], ref.orientation[3:]
    norms = (float(np.linalg.norm(row_cos)), float(np.linalg.norm(col_cos)))
    if min(norms) < 0.9 or max(norms) > 1.1 or abs(row_cos @ col_cos) > 0.01 * norms[0] * norms[1]:
        raise CaseError(
            f"{what} has an ImageOrientationPatient whose row and column cosines are not orthogonal unit vectors"
        )
    row_cos, col_cos = row_cos / norms[0], col_cos / norms[1]  # often written with few decimals
    normal = np.cross(row_cos, col_cos)
    along = np.asarray([p.position @ normal for p in planes])
    order = [int(i) for i in np.argsort(along, kind="stable")]
    step = _check_steps(along[order], what)
    positions = np.asarray([planes[i].position for i in order])
    step_vector = (positions[-1] - positions[0]) / (len(order) - 1)
    in_plane = step_vector - (step_vector @ normal) * normal
    if np.linalg.norm(in_plane) > SHEAR_TOLERANCE * step:
        raise CaseError(
            f"{what} is sheared: each slice is offset {np.linalg.norm(in_plane):.3g} mm within its plane per "
            f"{step:.3g} mm step (gantry tilt?); resample it to an orthogonal grid first"
        )
    affine = np.eye(4)
    affine[:3, 0] = step_vector
    affine[:3, 1] = col_cos * ref.pixel_spacing[0]
    affine[:3, 2] = row_cos * ref.pixel_spacing[1]
    affine[:3, 3] = positions[0]
    affine[:2, :] *= -1.0  # LPS -> RAS
    return order, affine


def _mm(values: np.ndarray) -> str:
    return "/".join(f"{v:g}" for v in values)


def _check_steps(along: np.ndarray, what: str) -> float:
    """The median step between sorted plane positions, refusing duplicates, gaps and irregular steps."""
    steps = np.diff(along)
    dup = np.flatnonzero(steps < SAME_POSITION_MM)
    if len(dup):
        k = int(dup[0])
        raise CaseError(
            f"{what} has two slices at the same position ({along[k]:.4g} mm along the normal, slices "
            f"{k + 1} and {k + 2}): a duplicate or a second stack"
        )
    median = float(np.median(steps))
    gaps = np.flatnonzero(steps > GAP_FACTOR * median)
    if len(gaps):
        k = int(gaps[0])
        raise CaseError(
            f"{what} has a gap of {steps[k]:.4g} mm between slices {k + 1} and {k + 2} where the step is "
            f"{median:.4g} mm: a slice is missing"
        )
    off = np.flatnonzero(np.abs(steps - median) > STEP_TOLERANCE * median)
    if len(off):
        raise CaseError(
            f"{what} has irregular slice steps (from {steps.min():.4g} to {steps.max():.4g} mm, median "
            f"{median:.4g} mm): not one regular grid"
        )
    return median


def read_multiframe(path: Path) -> Volume:
    """A multi-frame DICOM volume: enhanced (per-frame and shared functional groups: Plane Position,
    Plane Orientation, Pixel Measures, Pixel Value Transformation) or legacy (one ImagePositionPatient
    for the first frame, frames stepping along the normal by GridFrameOffsetVector, else
    SpacingBetweenSlices, else SliceThickness). The header's voxel count is checked before decoding;
    frames are ordered and checked as a series' slices (:func:`_stack_affine`)."""
    ds = _read_header(path)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if "Rows" not in ds:
        raise CaseError("DICOM holds no image (Rows missing)")
    if frames < 2:
        raise CaseError("a single-frame DICOM file is one slice: give the folder of its series as the volume")
    check_voxel_count((frames, int(ds.Rows), int(ds.Columns)), "multi-frame DICOM declares")
    if ds.get("PerFrameFunctionalGroupsSequence") is not None:
        planes = _enhanced_planes(ds, frames)
    else:
        planes = _legacy_planes(ds, frames)
    order, affine = _stack_affine(planes, "multi-frame DICOM")
    raw = _decoded(ds, path)
    if raw.shape != (frames, planes[0].rows, planes[0].columns):
        raise CaseError(f"multi-frame DICOM pixel array of shape {raw.shape} is not {frames} grey frames")
    voxels = np.empty(raw.shape, dtype=np.float32)
    for out, k in enumerate(order):
        p = planes[k]
        voxels[out] = raw[p.index].astype(np.float64) * p.slope + p.intercept
    return make_volume(voxels, affine, _acquisition(ds))


def _group_value(ds: Any, frame_group: Any, sequence: str, keyword: str) -> Any:
    """``keyword`` of ``sequence`` in the frame's functional group, else in the shared group."""
    shared = ds.get("SharedFunctionalGroupsSequence")
    for group in (frame_group, shared[0] if shared else None):
        if group is None:
            continue
        seq = group.get(sequence)
        if seq and keyword in seq[0]:
            return seq[0].get(keyword)
    return None


def _enhanced_planes(ds: Any, frames: int) -> list[_Plane]:
    per_frame = ds.PerFrameFunctionalGroupsSequence
    if len(per_frame) != frames:
        raise CaseError(f"enhanced DICOM has {len(per_frame)} per-frame groups for {frames} frames")
    planes = []
    for i, group in enumerate(per_frame):
        values = {
            "ImagePositionPatient": _group_value(ds, group, "PlanePositionSequence", "ImagePositionPatient"),
            "ImageOrientationPatient": _group_value(ds, group, "PlaneOrientationSequence", "ImageOrientationPatient"),
            "PixelSpacing": _group_value(ds, group, "PixelMeasuresSequence", "PixelSpacing"),
        }
        for keyword, value in values.items():
            if value is None:
                raise CaseError(f"enhanced DICOM frame {i + 1} has no {keyword}: its place in the volume is unknown")
        slope = _group_value(ds, group, "PixelValueTransformationSequence", "RescaleSlope")
        intercept = _group_value(ds, group, "PixelValueTransformationSequence", "RescaleIntercept")
        planes.append(
            _Plane(
                position=_floats(values["ImagePositionPatient"], 3, "ImagePositionPatient"),
                orientation=_floats(values["ImageOrientationPatient"], 6, "ImageOrientationPatient"),
                pixel_spacing=_floats(values["PixelSpacing"], 2, "PixelSpacing"),
                rows=int(ds.Rows),
                columns=int(ds.Columns),
                slope=float(slope) if slope is not None else 1.0,
                intercept=float(intercept) if intercept is not None else 0.0,
                index=i,
            )
        )
    return planes


def _legacy_planes(ds: Any, frames: int) -> list[_Plane]:
    first = _plane_of(ds, 0)
    normal = np.cross(first.orientation[:3], first.orientation[3:])
    normal = normal / max(float(np.linalg.norm(normal)), 1e-12)  # cosines are often written with few decimals
    offsets = ds.get("GridFrameOffsetVector")
    if offsets is not None:
        along = _floats(offsets, frames, "GridFrameOffsetVector")
    else:
        step = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness")
        if step is None or not float(step) > 0:
            raise CaseError(
                "legacy multi-frame DICOM has neither GridFrameOffsetVector, SpacingBetweenSlices nor "
                "SliceThickness: the distance between its frames is unknown"
            )
        along = np.arange(frames, dtype=np.float64) * float(step)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    return [
        _Plane(
            position=first.position + along[i] * normal,
            orientation=first.orientation,
            pixel_spacing=first.pixel_spacing,
            rows=first.rows,
            columns=first.columns,
            slope=float(slope) if slope is not None else 1.0,
            intercept=float(intercept) if intercept is not None else 0.0,
            index=i,
        )
        for i in range(frames)
    ]


def _acquisition(ds: Any) -> dict[str, str | float]:
    """Equipment and acquisition attributes for the shift analysis, looked up at the top level, then
    in an enhanced file's shared and first per-frame functional groups (CT Reconstruction, CT X-Ray
    Details, Pixel Measures). Absent or unreadable values are omitted."""
    out: dict[str, str | float] = {}
    for key, keyword in (
        ("manufacturer", "Manufacturer"),
        ("manufacturer_model", "ManufacturerModelName"),
        ("convolution_kernel", "ConvolutionKernel"),
    ):
        value = _find(ds, keyword)
        if value is not None:
            text = "\\".join(str(v).strip() for v in value) if _is_multi(value) else str(value).strip()
            if text:
                out[key] = text
    for key, keyword in (("slice_thickness_mm", "SliceThickness"), ("kvp", "KVP")):
        value = _find(ds, keyword)
        try:
            number = float(value) if value not in (None, "") else math.nan
        except (TypeError, ValueError):
            number = math.nan
        if math.isfinite(number):
            out[key] = number
    return out


def _is_multi(value: Any) -> bool:
    return isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue"


def _find(ds: Any, keyword: str) -> Any:
    try:
        if keyword in ds and ds.get(keyword) not in (None, ""):
            return ds.get(keyword)
        groups = []
        for name in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
            seq = ds.get(name)
            if seq:
                groups.append(seq[0])
        for group in groups:
            for element in group:
                if element.VR == "SQ" and element.value and keyword in element.value[0]:
                    value = element.value[0].get(keyword)
                    if value not in (None, ""):
                        return value
    except Exception:  # a malformed element must not cost the case its pixels
        return None
    return None


# ---- preprocessing -------------------------------------------------------------------------------


def prepare_volume(vol: Volume, spec: VolumeSpec) -> np.ndarray:
    """The model input ``[C, D, H, W]`` float32 of one volume: :func:`windowed_volume` (reorient,
    resample, window), then :func:`crop_or_pad` to ``spec.size``, then the grey channel repeated
    ``spec.channels`` times. Dividing by ``scale`` and normalising happen per batch, as for images."""
    arr, pad = windowed_volume(vol, spec)
    out = crop_or_pad(arr, spec.size, pad)
    return np.repeat(out[None], int(spec.channels), axis=0) if spec.channels != 1 else out[None]


def windowed_volume(vol: Volume, spec: VolumeSpec) -> tuple[np.ndarray, float]:
    """The volume reoriented to ``spec.orientation`` (:func:`reorient`), resampled to ``spec.spacing``
    (:func:`resample`) and windowed (:func:`apply_window`), before cropping or padding; and the value
    to pad with: the window's minimum (0 after windowing), else the volume's minimum."""
    arr, spacing = reorient(vol.voxels, vol.affine, spec.orientation)
    if spec.spacing is not None:
        arr = resample(arr, spacing, spec.spacing)
    if spec.window is not None:
        return apply_window(arr, spec.window, spec.scale), 0.0
    return arr, float(arr.min())


AXIS_CODES = ("RL", "AP", "SI")


def check_orientation(orientation: str) -> tuple[str, str, str]:
    """``orientation`` as three axis codes, one of R/L, A/P and S/I each (e.g. ``"RAS"``, ``"LPS"``,
    ``"SPL"``), or a ValueError saying so."""
    codes = tuple(str(orientation).upper())
    axes = sorted(next((i for i, pair in enumerate(AXIS_CODES) if c in pair), -1) for c in codes)
    if len(codes) != 3 or axes != [0, 1, 2]:
        raise ValueError(
            f"orientation {orientation!r}: expected three axis codes, one of R/L, A/P and S/I each (e.g. RAS)"
        )
    return codes[0], codes[1], codes[2]


def reorient(voxels: np.ndarray, affine: np.ndarray, orientation: str) -> tuple[np.ndarray, tuple[float, ...]]:
    """The array with its axes permuted and flipped so that they run along ``orientation`` (nibabel's
    axis codes, e.g. ``"RAS"``: axis 0 towards the patient's Right, 1 Anterior, 2 Superior), each array
    axis taking the world axis its affine column is nearest (``nibabel.orientations.io_orientation``);
    and the spacing of the new axes. Only permutes and flips (exact): an oblique grid keeps its
    obliqueness, which :func:`resample` does not undo."""
    import nibabel.orientations as nio

    codes = check_orientation(orientation)
    target = nio.axcodes2ornt(codes)
    transform = nio.ornt_transform(nio.io_orientation(affine), target)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    out = nio.apply_orientation(voxels, transform)
    new_spacing = [0.0, 0.0, 0.0]
    for src, (dst, _flip) in enumerate(transform):
        new_spacing[int(dst)] = float(spacing[src])
    return np.ascontiguousarray(out, dtype=np.float32), tuple(new_spacing)  # np.take runs 4x faster on it


def resample(arr: np.ndarray, spacing: tuple[float, ...], target: tuple[float, ...]) -> np.ndarray:
    """Trilinear resampling of ``arr`` (voxel spacing ``spacing``, mm) to ``target`` spacing, done as
    three separable linear interpolations (identical to trilinear interpolation on a grid).

    Grid convention (voxel centres): along each axis of ``n`` voxels the output holds
    ``floor((n - 1) * s / t) + 1`` voxels at spacing ``t``, centred on the input's centre, so that the
    outermost output centres lie within the outermost input centres: every output value is
    interpolated, never extrapolated, and the volume's centre stays where it was (a flip of the input
    flips the output exactly). Equal to ``scipy.ndimage.map_coordinates(order=1)`` at the same
    coordinates (tested). No antialiasing when downsampling (as MONAI's ``Spacing``)."""
    shape = [int(n) for n in arr.shape]
    plan = []
    for n, s, t in zip(shape, spacing, target, strict=True):
        t = float(t)
        if t <= 0 or not math.isfinite(t):
            raise ValueError(f"target spacing {t} must be a positive number of mm")
        plan.append(_sample_positions(n, float(s), t))
    check_voxel_count(tuple(len(p) for p in plan), "resampling would produce")
    out = arr
    # the axes that shrink most first: later passes then run over fewer voxels (the passes commute)
    for axis in sorted(range(3), key=lambda a: len(plan[a]) / max(shape[a], 1)):
        out = _interpolate_axis(out, plan[axis], axis)
    return out.astype(np.float32, copy=False)


def _sample_positions(n: int, s: float, t: float) -> np.ndarray:
    """Fractional input indices of the output voxel centres along one axis (see :func:`resample`)."""
    if n == 1 or abs(s - t) <= 1e-9 * max(s, t):
        return np.arange(n, dtype=np.float64)
    extent = (n - 1) * s
    m = int(math.floor(extent / t + 1e-9)) + 1
    centre = extent / 2.0
    mm = centre + (np.arange(m, dtype=np.float64) - (m - 1) / 2.0) * t
    return np.clip(mm / s, 0.0, n - 1.0)


def _interpolate_axis(arr: np.ndarray, positions: np.ndarray, axis: int) -> np.ndarray:
    n = arr.shape[axis]
    if len(positions) == n and np.array_equal(positions, np.arange(n)):
        return arr
    lo = np.minimum(np.floor(positions).astype(np.intp), max(n - 2, 0))
    hi = np.minimum(lo + 1, n - 1)
    frac = positions - lo
    shape = [1, 1, 1]
    shape[axis] = len(positions)
    w = frac.reshape(shape).astype(np.float32)
    a = np.take(arr, lo, axis=axis).astype(np.float32, copy=False)
    b = np.take(arr, hi, axis=axis)
    b -= a
    b *= w
    b += a
    return b


def apply_window(arr: np.ndarray, window: tuple[float, float], scale: float) -> np.ndarray:
    """Values clipped to ``[c - w/2, c + w/2]`` and mapped linearly onto ``[0, scale]``."""
    center, width = float(window[0]), float(window[1])
    if not width > 0:
        raise CaseError(f"window width {width} must be > 0", stage="preprocess")
    lo = center - width / 2.0
    out = (np.clip(arr, lo, lo + width) - lo) * (float(scale) / width)
    return out.astype(np.float32, copy=False)


def crop_or_pad(arr: np.ndarray, size: tuple[int, int, int], pad_value: float) -> np.ndarray:
    """``arr`` cropped or padded to ``size`` on each axis, centred: a crop keeps the middle voxels
    (one more dropped at the end when the excess is odd), a pad adds ``pad_value`` evenly (one more
    at the end when odd)."""
    out = np.full(tuple(int(s) for s in size), pad_value, dtype=np.float32)
    src, dst = [], []
    for n, m in zip(arr.shape, size, strict=True):
        if n >= m:
            start = (n - m) // 2
            src.append(slice(start, start + m))
            dst.append(slice(0, m))
        else:
            start = (m - n) // 2
            src.append(slice(0, n))
            dst.append(slice(start, start + n))
    out[tuple(dst)] = arr[tuple(src)]
    return out


def read_volume_case(path: str | Path, spec: VolumeSpec) -> tuple[np.ndarray, np.ndarray, dict[str, str | float]]:
    """One volume case for scoring: its model input ``[C, D, H, W]`` (:func:`prepare_volume`), its
    :func:`~validate.scoring.inputs.image_stats` and its acquisition attributes.

    The statistics summarise the windowed, resampled volume before crop/pad (what the model's
    field of view is cut from), as ``image_stats`` of an image ``[H, W, D]``: ``img_height`` and
    ``img_width`` are that volume's H and W; percentiles and histogram run over all its voxels,
    divided by ``scale``."""
    vol = read_volume(path)
    try:
        arr, pad = windowed_volume(vol, spec)
    except ValueError as exc:
        raise CaseError(str(exc), stage="preprocess") from None
    stats = image_stats(arr.transpose(1, 2, 0), spec.scale)
    out = crop_or_pad(arr, spec.size, pad)
    out = np.repeat(out[None], int(spec.channels), axis=0) if spec.channels != 1 else out[None]
    return out, stats, dict(vol.acquisition)


__all__ = [
    "MAX_VOLUME_VOXELS",
    "Volume",
    "VolumeSpec",
    "apply_window",
    "check_orientation",
    "crop_or_pad",
    "prepare_volume",
    "read_dicom_series",
    "read_multiframe",
    "read_nifti",
    "read_volume",
    "read_volume_case",
    "reorient",
    "resample",
    "windowed_volume",
]
