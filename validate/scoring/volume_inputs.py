"""The ``volume`` input kind as scoring sees it: one 3D case in, its model input, image statistics,
DICOM equipment and acquisition attributes out; and the batch size that keeps a batch of volumes
within the protocol's memory bound.

Reading and preprocessing (NIfTI, DICOM series folders, enhanced and legacy multi-frame DICOM;
reorientation, resampling, window, crop/pad) are :mod:`validate.scoring.volumes`'s; this module maps
the protocol's ``input`` block onto its :class:`~validate.scoring.volumes.VolumeSpec` and the
acquisition record onto predictions columns:

- ``manufacturer``, ``manufacturer_model``: the equipment columns of 2D DICOM
  (:data:`validate.scoring.inputs.EQUIPMENT_COLUMNS`);
- ``convolution_kernel`` (categorical): DICOM (0018,1210) Convolution Kernel;
- ``acq_slice_thickness_mm`` (0018,0050), ``acq_kvp`` (0018,0060) (numeric);
- ``acq_spacing_z_mm``, ``acq_spacing_y_mm``, ``acq_spacing_x_mm`` (numeric): the native voxel
  spacing of the stored volume before resampling, along the array axis nearest the patient's S-I,
  A-P and R-L axes (so an axial stack's slice step is ``acq_spacing_z_mm``); NIfTI files carry
  these only.

A value the file does not record is ``""`` in the string row (NaN or None in the predictions).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from validate.scoring.inputs import CaseError, Preprocessing, exception_text

#: Categorical acquisition columns (beside the equipment columns).
ACQUISITION_TEXT_COLUMNS = ("convolution_kernel",)
#: Numeric acquisition columns.
ACQUISITION_NUMERIC_COLUMNS = (
    "acq_slice_thickness_mm",
    "acq_kvp",
    "acq_spacing_z_mm",
    "acq_spacing_y_mm",
    "acq_spacing_x_mm",
)
#: Every acquisition column, in the order of an acquisition row.
ACQUISITION_COLUMNS = ACQUISITION_TEXT_COLUMNS + ACQUISITION_NUMERIC_COLUMNS
# the key of each column in volumes.read_volume_case's acquisition dict
_SOURCE_KEYS = {
    "convolution_kernel": "convolution_kernel",
    "acq_slice_thickness_mm": "slice_thickness_mm",
    "acq_kvp": "kvp",
    "acq_spacing_z_mm": "spacing_z_mm",
    "acq_spacing_y_mm": "spacing_y_mm",
    "acq_spacing_x_mm": "spacing_x_mm",
}
#: Bytes of one input value on the model's side: batches are normalised to float32 on the device.
INPUT_VALUE_BYTES = 4


def volume_spec(spec: Preprocessing) -> Any:
    """The protocol's preprocessing as :class:`validate.scoring.volumes.VolumeSpec`."""
    from validate.scoring.volumes import VolumeSpec

    if spec.size is None or len(spec.size) != 3:
        raise CaseError(f"input.size {spec.size} is not [depth, height, width]", stage="preprocess")
    d, h, w = (int(v) for v in spec.size)
    spacing = spec.spacing
    return VolumeSpec(
        size=(d, h, w),
        spacing=(float(spacing[0]), float(spacing[1]), float(spacing[2])) if spacing is not None else None,
        orientation=spec.orientation or "RAS",
        window=spec.window,
        channels=spec.channels,
        scale=spec.scale,
    )


def preprocessing_key(spec: Preprocessing) -> dict:
    """:meth:`Preprocessing.key` (what changes the model's input, part of the score and input cache
    keys), with a volume's target spacing, orientation and resampling added; 2D keys unchanged, so
    their caches stay valid."""
    key = spec.key()
    if spec.kind == "volume":
        key.update(
            spacing=list(spec.spacing) if spec.spacing is not None else None,
            orientation=spec.orientation or "RAS",
            resize="volumes.prepare_volume (trilinear)",
        )
    return key


def acquisition_row(acquisition: Mapping[str, Any]) -> tuple[str, ...]:
    """One case's acquisition record as strings in the order of :data:`ACQUISITION_COLUMNS`: text as
    it is (stripped), numbers as ``repr(float)`` (read back exactly), ``""`` where absent or not a
    finite number."""
    row = []
    for column in ACQUISITION_COLUMNS:
        value = acquisition.get(_SOURCE_KEYS[column])
        if value is None:
            row.append("")
        elif column in ACQUISITION_TEXT_COLUMNS:
            row.append(str(value).strip())
        else:
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = math.nan
            row.append(repr(number) if math.isfinite(number) else "")
    return tuple(row)


def equipment_of(acquisition: Mapping[str, Any]) -> tuple[str, str]:
    """``(manufacturer, model)`` of a volume's acquisition record, ``""`` where absent."""
    return (
        str(acquisition.get("manufacturer") or "").strip(),
        str(acquisition.get("manufacturer_model") or "").strip(),
    )


def read_volume_with_stats(
    path: str | Path, spec: Preprocessing
) -> tuple[np.ndarray, np.ndarray, tuple[str, str], tuple[str, ...]]:
    """One volume case: its model input ``[C, D, H, W]`` (float32 raw values, normalised per batch as
    any image), its :func:`~validate.scoring.inputs.image_stats` (taken by the reader on the prepared
    volume before crop/pad), its equipment ``(manufacturer, model)`` and its
    :func:`acquisition_row`. A case that cannot be read or prepared raises :class:`CaseError`."""
    from validate.scoring.volumes import read_volume_case

    try:
        x, stats, acquisition = read_volume_case(Path(path), volume_spec(spec))
    except CaseError:
        raise
    except MemoryError:
        raise CaseError("volume too large to hold in memory", stage="preprocess") from None
    except Exception as exc:  # a reader bug must not stop the site: the case fails with its reason
        raise CaseError(f"volume could not be read: {exception_text(exc)}") from None
    x = np.asarray(x, dtype=np.float32)
    expected = (spec.channels, *(int(v) for v in spec.size or ()))
    if x.shape != expected:
        raise CaseError(f"prepared volume has shape {list(x.shape)}, expected {list(expected)}", stage="preprocess")
    if not np.isfinite(x).all():
        raise CaseError("prepared volume holds NaN or Inf values", stage="preprocess")
    return x, np.asarray(stats, dtype=np.float64), equipment_of(acquisition), acquisition_row(acquisition)


def bytes_per_case(case_shape: Sequence[int]) -> int:
    """Bytes of one case's model input (float32)."""
    return INPUT_VALUE_BYTES * math.prod(int(d) for d in case_shape)


def bounded_batch_size(requested: int, case_shape: Sequence[int], max_batch_bytes: int) -> int:
    """The batch size within the memory bound: ``min(requested, max(1, floor(max_batch_bytes / bytes
    per case)))``. One case always goes, even a case above the bound (it is scored alone)."""
    per_case = max(1, bytes_per_case(case_shape))
    return max(1, min(int(requested), int(max_batch_bytes) // per_case))


def acquisition_columns(acquisition: np.ndarray | None, keep: np.ndarray) -> dict[str, Any]:
    """Predictions columns of the rows ``keep`` of an acquisition array (str ``[n_cases,
    len(ACQUISITION_COLUMNS)]``): text as str or None, numbers as float64 with NaN; a column only when
    some kept case records it."""
    if acquisition is None:
        return {}
    rows = np.asarray(acquisition, dtype=object).reshape(-1, len(ACQUISITION_COLUMNS))[keep]
    out: dict[str, Any] = {}
    for j, name in enumerate(ACQUISITION_COLUMNS):
        cells = [str(v) if v is not None else "" for v in rows[:, j]]
        if not any(cells):
            continue
        if name in ACQUISITION_TEXT_COLUMNS:
            out[name] = [c or None for c in cells]
        else:
            out[name] = np.asarray([float(c) if c else math.nan for c in cells], dtype=np.float64)
    return out


__all__ = [
    "ACQUISITION_COLUMNS",
    "ACQUISITION_NUMERIC_COLUMNS",
    "ACQUISITION_TEXT_COLUMNS",
    "acquisition_columns",
    "acquisition_row",
    "bounded_batch_size",
    "bytes_per_case",
    "equipment_of",
    "preprocessing_key",
    "read_volume_with_stats",
    "volume_spec",
]
