"""Cases to model inputs: reading images, DICOM, arrays and feature columns, then preprocessing.

A case is read into raw pixel values ``[C, H, W]`` (``uint8`` kept as it is, anything else as
``float32``) at the protocol's size and channel count; dividing by ``scale`` and normalising
``(x - mean) / std`` happens once per batch in :func:`normalise`, on the scoring device, so that
8-bit images travel to an accelerator at a quarter of the bytes.

A case that cannot be read (missing, not an image, corrupt, a decompression bomb, a multi-frame DICOM
that ``input.frames`` refuses, an undecodable DICOM, a wrongly shaped array) raises :class:`CaseError`:
the evaluator records it in ``failures.csv`` and the site goes on. So does a case scored with values
beyond the protocol's ``scale`` (:func:`check_value_range`: a 16-bit image under ``scale: 255``). The pixel limit
(:data:`MAX_IMAGE_PIXELS`) holds for DICOM too, checked on the header's Rows x Columns x frames before
anything is decoded, and deflated DICOM is inflated only as far as its header declares. PALETTE COLOR
DICOM is read through its palette, as displayed. Compressed DICOM and the frame policy for multi-frame
files are :mod:`validate.scoring.dicom_pixels`'. Reasons never carry file paths (:func:`scrub_paths`).

This module needs numpy, Pillow and torch; pydicom is imported only when a DICOM file is read.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from validate.scoring import dicom_pixels

# Pillow's own default (about 89.5 megapixels), set explicitly so that the guard does not depend on
# another library lowering or lifting it. A larger image is refused as a possible decompression bomb.
MAX_IMAGE_PIXELS = 89_478_485
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

DICOM_SUFFIXES = (".dcm", ".dicom")
ARRAY_SUFFIXES = (".npy",)
PILLOW_FORMATS = {".png": ("PNG",), ".jpg": ("JPEG",), ".jpeg": ("JPEG",), ".tif": ("TIFF",), ".tiff": ("TIFF",)}
# files named as ordinary raster images skip the DICOM preamble probe (one open() less per case)
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp")
# ITU-R BT.601 luma, the weights Pillow's convert("L") uses: one rule for every source of colour
LUMA = (0.299, 0.587, 0.114)


class CaseError(Exception):
    """One case could not be turned into a model input; ``stage`` is "read" or "preprocess".

    ``reason`` goes into ``failures.csv`` and from there into the results bundle, which leaves the
    site: it names a category of fault and never holds a file path (see :func:`exception_text`)."""

    def __init__(self, reason: str, stage: str = "read"):
        reason = scrub_paths(reason)
        super().__init__(reason)
        self.reason = reason
        self.stage = stage


# An absolute path inside a message: POSIX (/x, ~/x), Windows (C:\x, C:/x, \\server\x) or a file URL,
# starting a message or after a space, quote, bracket, "=" or ":"; it runs to the next space or quote.
_ABSOLUTE_PATH = re.compile(r"(?:(?<=^)|(?<=[\s'\"(\[<=:,]))(?:file://|~|[A-Za-z]:)?[\\/][^\s'\"]+")


def scrub_paths(text: str, *paths: Any) -> str:
    """``text`` with each of ``paths`` (and every other absolute path in it) replaced by ``<path>``.

    Exception messages of the libraries that read images often quote the file they failed on; a
    site's folders can be named after patients, and failure reasons travel in the bundle."""
    text = str(text)
    for p in sorted({str(q) for q in paths if q}, key=len, reverse=True):
        text = text.replace(p, "<path>")
    return _ABSOLUTE_PATH.sub("<path>", text)


def exception_text(exc: BaseException) -> str:
    """``TypeName: message`` of a reading error, without the file names an OSError carries."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror}"  # "[Errno 21] Is a directory: '/…/x.png'" minus the path
    return scrub_paths(f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class Preprocessing:
    """What the protocol's ``input`` block asks for, as plain values (no pydantic needed)."""

    kind: str  # image | dicom | array | tabular | volume
    size: tuple[int, ...] | None = None  # (height, width); a volume's (depth, height, width)
    channels: int = 1
    scale: float = 1.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    spacing: tuple[float, ...] | None = None  # volume: target spacing (D, H, W axes) mm; None = native
    orientation: str | None = None  # volume: axis codes of (D, H, W), "RAS" when None
    window: tuple[float, float] | None = None  # (center, width), overrides the DICOM's own VOI
    features: tuple[str, ...] = ()
    frames: str = "refuse"  # multi-frame 2D DICOM: refuse | first | middle | max (see FRAME_POLICIES)

    @classmethod
    def from_protocol(cls, spec: Any) -> Preprocessing:
        window = (float(spec.window.center), float(spec.window.width)) if spec.window is not None else None
        return cls(
            kind=spec.kind,
            size=tuple(spec.size) if spec.size else None,
            channels=int(spec.channels),
            scale=float(spec.scale),
            mean=tuple(float(m) for m in spec.mean),
            std=tuple(float(s) for s in spec.std),
            spacing=tuple(float(v) for v in spec.spacing) if getattr(spec, "spacing", None) else None,
            orientation=getattr(spec, "orientation", None),
            window=window,
            features=tuple(spec.features or ()),
            frames=str(getattr(spec, "frames", "refuse") or "refuse"),
        )

    def key(self) -> dict:
        """Everything that changes the model's input; part of the cache key. ``frames`` joins it
        only when it is not the default ``refuse`` (which reads what earlier versions read); the
        installed DICOM decoders join it for kinds that may read DICOM (a case that failed for want of
        a decoder must be read again once one is installed)."""
        key = {
            "kind": self.kind,
            "size": list(self.size) if self.size else None,
            "channels": self.channels,
            "scale": self.scale,
            "mean": list(self.mean),
            "std": list(self.std),
            "window": list(self.window) if self.window else None,
            "features": list(self.features),
            "resize": "bilinear-antialias" if self.size else None,
        }
        if self.frames != "refuse":
            key["frames"] = self.frames
        if self.kind in ("image", "dicom", "volume"):  # each may read DICOM files (by extension or preamble)
            key["decoders"] = [list(d) for d in dicom_pixels.installed_decoders()]
        return key

    @property
    def case_shape(self) -> tuple[int, ...]:
        if self.kind == "tabular":
            return (len(self.features),)
        assert self.size is not None
        if self.kind == "volume":
            return (self.channels, *self.size)
        return (self.channels, self.size[0], self.size[1])


# ---- reading -------------------------------------------------------------------------------------


def is_dicom(path: Path) -> bool:
    """DICOM by extension, or by the ``DICM`` marker after the 128-byte preamble (PS3.10 7.1)."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def read_pillow(path: Path, channels: int) -> np.ndarray:
    """PNG, JPEG, TIFF (and other single-frame formats Pillow reads) as ``[H, W, C]`` raw values."""
    try:
        with warnings.catch_warnings():
            # the warning Pillow gives between 1x and 2x the limit becomes a refusal, like the error above 2x
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _open_image(path) as im:
                w, h = im.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise CaseError(
                        f"image is {w}x{h} = {w * h} pixels, above the {MAX_IMAGE_PIXELS} pixel limit "
                        "(decompression bomb guard)"
                    )
                if getattr(im, "n_frames", 1) > 1:
                    raise CaseError(f"{im.format} file holds {im.n_frames} frames; one image per case expected")
                return _pillow_pixels(im, channels)
    except CaseError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise CaseError(f"decompression bomb guard: {exc}") from None
    except FileNotFoundError:
        raise CaseError("image file not found") from None
    except Image.UnidentifiedImageError:
        raise CaseError("not an image Pillow can read (expected PNG, JPEG or TIFF)") from None
    except Exception as exc:  # truncated or corrupt data surfaces as OSError, SyntaxError, ValueError, zlib.error
        raise CaseError(f"corrupt or truncated image: {exception_text(exc)}") from None


def _open_image(path: Path) -> Image.Image:
    # naming the format the extension promises skips Pillow's probing of every plugin (~30% of the
    # time for a small PNG); a file whose extension lies is probed in full
    hint = PILLOW_FORMATS.get(path.suffix.lower())
    if hint is not None:
        try:
            return Image.open(path, formats=hint)
        except Image.UnidentifiedImageError:
            pass
    return Image.open(path)


def _pillow_pixels(im: Image.Image, channels: int) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im).astype(np.float32)  # 16-bit and 32-bit grey: raw values, `scale` divides them
        return _to_channels(arr[:, :, None], channels)
    if mode == "1":
        im = im.convert("L")
    elif mode not in ("L", "RGB"):
        # palettes, alpha, CMYK, YCbCr: to RGB (alpha dropped) first, then as any colour image
        im = im.convert("RGB")
    if channels == 1 and im.mode == "RGB":
        im = im.convert("L")
    arr = np.asarray(im)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return _to_channels(arr, channels)


def read_array(path: Path, channels: int, scale: float | None = None) -> np.ndarray:
    """A ``.npy`` array (never a pickle): ``[H, W]``, ``[H, W, C]`` or ``[C, H, W]`` with C in 1, 3.
    With ``scale``, an array of integers is checked against it (:func:`check_value_range`)."""
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise CaseError("array file not found") from None
    except Exception as exc:
        raise CaseError(f"not a readable .npy array (pickled objects are refused): {exception_text(exc)}") from None
    if not isinstance(arr, np.ndarray):
        raise CaseError("expected one array in a .npy file, found an archive of several")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.dtype.kind not in "uif":
        raise CaseError(f"array of dtype {arr.dtype} is not numeric", stage="preprocess")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    elif arr.ndim == 3:
        if arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3, 4):
            arr = np.moveaxis(arr, 0, -1)  # [C, H, W] -> [H, W, C]
        elif arr.shape[-1] not in (1, 3, 4):
            raise CaseError(f"array of shape {arr.shape} has no channel axis of size 1 or 3", stage="preprocess")
    else:
        raise CaseError(f"array of shape {arr.shape}: expected [H, W], [H, W, C] or [C, H, W]", stage="preprocess")
    if scale is not None and arr.dtype.kind in "ui":
        check_value_range(arr, scale)
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float32)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise CaseError("array holds NaN or Inf values", stage="preprocess")
    return _to_channels(arr, channels)


def read_dicom(
    path: Path, channels: int, window: tuple[float, float] | None = None, frames: str = "refuse"
) -> np.ndarray:
    """One DICOM frame as ``[H, W, C]`` float32 display values (see :func:`read_dicom_case`)."""
    return read_dicom_case(path, channels, window, frames)[0]


def read_dicom_case(
    path: Path, channels: int, window: tuple[float, float] | None = None, frames: str = "refuse"
) -> tuple[np.ndarray, tuple[str, str]]:
    """One DICOM frame as ``[H, W, C]`` float32 display values, and its equipment
    ``(Manufacturer (0008,0070), Manufacturer's Model Name (0008,1090))``, ``""`` where absent.

    Pixel values go through the Modality LUT (Rescale Slope/Intercept, or a Modality LUT Sequence),
    then the VOI transform: the protocol's window if given, else the file's VOI LUT Sequence, else its
    Window Center/Width (first view) with its VOI LUT Function (LINEAR, LINEAR_EXACT, SIGMOID), as
    DICOM PS3.3 C.11.2 defines them. A window's output spans the stored value range after rescale (for
    unsigned 8-bit data 0..255; pydicom's ``apply_windowing`` uses the same), so ``scale`` divides it
    as for an ordinary image. MONOCHROME1 is inverted within that range, so that bright means dense.

    PALETTE COLOR frames are looked up in their palette (:func:`_palette_colours`), with no rescale or
    window (their stored values are indices). Before decoding, the header's pixel count is held to
    :data:`MAX_IMAGE_PIXELS` (:func:`_check_declared_size`).

    A multi-frame file is read under ``frames``, the protocol's ``input.frames``
    (:data:`validate.scoring.dicom_pixels.FRAME_POLICIES`): refused by default; ``first`` and
    ``middle`` decode that frame only; ``max`` (grey only) takes the per-pixel maximum of all frames
    after the Modality LUT, then applies the VOI transform. The header guard counts every frame.

    Uncompressed little-endian grey frames whose stored bits fill their allocation are read straight
    from the bytes (pydicom's general decoder costs milliseconds per small file); all else is decoded
    by pydicom's pixel-data plugins (:func:`validate.scoring.dicom_pixels.decode_pixels`), whose
    failures name the transfer syntax and the package that would decode it.
    """
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError:  # pragma: no cover - pydicom is a dependency; kept for the GPU benchmark machine
        raise CaseError("reading DICOM needs pydicom, which is not installed") from None
    try:
        ds = _read_deflated(path) if _transfer_syntax(path) == DEFLATED else pydicom.dcmread(path)
    except CaseError:
        raise
    except FileNotFoundError:
        raise CaseError("DICOM file not found") from None
    except InvalidDicomError as exc:
        raise CaseError(f"not a DICOM file: {exc}") from None
    except Exception as exc:
        raise CaseError(f"corrupt or truncated DICOM: {exception_text(exc)}") from None
    if "PixelData" not in ds:
        raise CaseError("DICOM holds no pixel data (PixelData element missing)")
    hdr = _Header(ds)
    _check_declared_size(hdr)  # before any decoder allocates the frame
    raw, index = _frame_pixels(ds, hdr, frames)
    equipment = (_tag_text(hdr, "Manufacturer"), _tag_text(hdr, "ManufacturerModelName"))
    if str(hdr.get("PhotometricInterpretation", "")).strip().upper() == "PALETTE COLOR":
        return _to_channels(_palette_colours(hdr, raw), channels), equipment
    if raw.ndim == 3 and raw.shape[-1] in (3, 4) and index is not None:  # colour (pydicom converts YBR to RGB)
        return _to_channels(raw.astype(np.float32), channels), equipment
    if raw.ndim != (2 if index is not None else 3):
        raise CaseError(
            f"DICOM pixel array of shape {raw.shape} is not a single grey or colour frame", stage="preprocess"
        )
    return _to_channels(_grey_display(hdr, raw, window, index)[:, :, None], channels), equipment


def _frame_pixels(ds: Any, hdr: _Header, frames: str) -> tuple[np.ndarray, int | None]:
    """The stored values of the frame ``input.frames`` picks (all frames for ``max``), and its index
    (None for all): straight from uncompressed bytes where possible, else by pydicom's plugins."""
    try:
        index = dicom_pixels.frame_index(frames, dicom_pixels.frame_count(hdr))
        if index is None and _photometric(hdr) not in ("MONOCHROME1", "MONOCHROME2"):
            raise CaseError(
                "input.frames: max takes the per-pixel maximum of grey frames; this multi-frame DICOM is "
                f"{_photometric(hdr) or 'of no photometric interpretation'}: use input.frames first or middle",
                stage="preprocess",
            )
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        raw = _native_pixels(hdr, syntax, index)
        if raw is None:
            raw = dicom_pixels.decode_pixels(ds, syntax, index)
    except dicom_pixels.PixelDataError as exc:
        raise CaseError(str(exc)) from None
    return raw, index


def _photometric(hdr: _Header) -> str:
    return str(hdr.get("PhotometricInterpretation", "") or "").strip().upper()


def _grey_display(
    hdr: _Header, raw: np.ndarray, window: tuple[float, float] | None, index: int | None = 0
) -> np.ndarray:
    """A grey frame ``[H, W]`` (frame ``index`` of the file), or all frames ``[F, H, W]`` (``index``
    None, for ``input.frames: max``), as float32 display values: the Modality LUT, for a stack the
    per-pixel maximum over its frames (after each frame's rescale, so that frames are compared in
    physical units), then the VOI transform (the first frame's, for a stack), then MONOCHROME1 inverted
    within the output range so that bright means dense. Rescale and window come from the file's top
    level, else from its functional groups (:class:`_FrameHeader`: enhanced multi-frame objects)."""
    try:
        if raw.ndim == 3:
            values = _modality_values(_FrameHeader(hdr, 0), raw[0])
            for i in range(1, raw.shape[0]):  # frame by frame: one float64 frame at a time, not the stack
                np.maximum(values, _modality_values(_FrameHeader(hdr, i), raw[i]), out=values)
        else:
            values = _modality_values(_FrameHeader(hdr, index or 0), raw)
        arr, lo, hi = _voi_values(_FrameHeader(hdr, index or 0), values, window)
    except CaseError:
        raise
    except Exception as exc:
        raise CaseError(f"DICOM rescale/VOI could not be applied: {exception_text(exc)}", stage="preprocess") from None
    if str(hdr.get("PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1":
        arr = lo + hi - arr
    return arr.astype(np.float32)


# keyword -> the functional group macro that holds it in an enhanced multi-frame object (PS3.3 C.7.6.16)
_FUNCTIONAL_GROUPS = {
    "RescaleSlope": "PixelValueTransformationSequence",
    "RescaleIntercept": "PixelValueTransformationSequence",
    "WindowCenter": "FrameVOILUTSequence",
    "WindowWidth": "FrameVOILUTSequence",
    "VOILUTFunction": "FrameVOILUTSequence",
}


class _KeywordAttributes:
    """``header.Rows`` as ``header.get("Rows")``, an absent element an AttributeError (as pydicom's
    datasets behave, so that pydicom's LUT helpers can read a header)."""

    def get(self, keyword: str, default: Any = None) -> Any:
        raise NotImplementedError

    def __getattr__(self, keyword: str) -> Any:
        if keyword.startswith("_"):
            raise AttributeError(keyword)
        value = self.get(keyword)
        if value is None:
            raise AttributeError(keyword)
        return value


class _FrameHeader(_KeywordAttributes):
    """The header as seen by one frame: a keyword of :data:`_FUNCTIONAL_GROUPS` absent from the top
    level is read from the frame's Per-Frame Functional Groups item, else from the Shared Functional
    Groups (enhanced CT/MR/X-ray and tomosynthesis objects keep rescale and window there)."""

    def __init__(self, hdr: _Header, frame: int):
        self.hdr, self.frame, self.ds = hdr, frame, hdr.ds

    def get(self, keyword: str, default: Any = None) -> Any:
        value = self.hdr.get(keyword)
        if value is None and keyword in _FUNCTIONAL_GROUPS:
            value = _functional_group_value(self.hdr, self.frame, _FUNCTIONAL_GROUPS[keyword], keyword)
        return default if value is None else value


def _functional_group_value(hdr: _Header, frame: int, macro: str, keyword: str) -> Any:
    """``keyword`` from ``macro`` in frame ``frame``'s per-frame item, else in the shared item; None if neither."""
    per_frame, shared = hdr.get("PerFrameFunctionalGroupsSequence"), hdr.get("SharedFunctionalGroupsSequence")
    items = ([per_frame[frame]] if per_frame is not None and frame < len(per_frame) else []) + (
        [shared[0]] if shared else []
    )
    for item in items:
        group = item.get(macro)
        if group and keyword in group[0]:
            return group[0][keyword].value
    return None


DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian (PS3.5 A.5)
# Data elements a deflated file may hold besides its frames (overlays, icons, private data) are
# inflated up to this many bytes; anything beyond is refused as a decompression bomb
DICOM_HEADER_BYTES = 16 * 2**20


def _transfer_syntax(path: Path) -> str | None:
    """The file meta's Transfer Syntax UID (a few hundred bytes read), or None when there is none."""
    from pydicom.filereader import read_file_meta_info

    try:
        meta = read_file_meta_info(path)
    except FileNotFoundError:
        raise
    except Exception:
        return None  # let dcmread say what is wrong with the file
    return str(meta.get("TransferSyntaxUID", "") or "") or None


def _declared_pixels(ds: Any) -> tuple[int, int]:
    """``(pixels, bytes)`` the header declares: Rows x Columns x NumberOfFrames, and that times
    SamplesPerPixel x BitsAllocated / 8."""

    def number(keyword: str, default: int) -> int:
        value = ds.get(keyword, default)
        try:
            return int(value) if value not in (None, "") else default
        except (TypeError, ValueError):
            raise CaseError(f"DICOM {keyword} {value!r} is not a number") from None

    rows, cols, frames = number("Rows", 0), number("Columns", 0), max(number("NumberOfFrames", 1), 1)
    samples, bits = max(number("SamplesPerPixel", 1), 1), max(number("BitsAllocated", 8), 1)
    pixels = rows * cols * frames
    return pixels, pixels * samples * ((bits + 7) // 8)


def _check_declared_size(ds: Any) -> None:
    """The PNG rule for DICOM, from the header alone: Rows x Columns x NumberOfFrames above
    :data:`MAX_IMAGE_PIXELS`, or SamplesPerPixel above 4, is refused before anything is decoded."""
    pixels, _ = _declared_pixels(ds)
    if pixels > MAX_IMAGE_PIXELS:
        rows, cols, frames = ds.get("Rows"), ds.get("Columns"), ds.get("NumberOfFrames", 1) or 1
        raise CaseError(
            f"DICOM declares {rows}x{cols} pixels x {frames} frame(s) = {pixels} pixels, above the "
            f"{MAX_IMAGE_PIXELS} pixel limit (decompression bomb guard)"
        )
    samples = ds.get("SamplesPerPixel", 1)
    if samples not in (None, "") and int(samples) > 4:
        raise CaseError(f"DICOM declares {samples} samples per pixel; at most 4 (RGBA) are images")


def _read_deflated(path: Path) -> Any:
    """A Deflated Explicit VR Little Endian file, inflated with a bound (pydicom inflates the whole
    data set at once, so a small file could claim gigabytes before its header is looked at).

    The data set is inflated until its Pixel Data element is reached (at most
    :data:`DICOM_HEADER_BYTES`); the header's size is checked (:func:`_check_declared_size`); the rest
    is inflated only up to what the header declares for the frames plus :data:`DICOM_HEADER_BYTES`.
    The result is the dataset pydicom's ``dcmread`` would give."""
    import zlib

    from pydicom.dataset import FileDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble

    with open(path, "rb") as fh:
        preamble = read_preamble(fh, False)
        file_meta = _read_file_meta_info(fh)
        pending = fh.read()
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    data = bytearray()

    def inflate(limit: int) -> None:
        nonlocal pending
        while len(data) < limit and not inflater.eof:
            try:
                out = inflater.decompress(pending, limit - len(data))
            except zlib.error as exc:
                raise CaseError(
                    f"corrupt or truncated DICOM: the deflated data set cannot be inflated ({exc})"
                ) from None
            pending = inflater.unconsumed_tail
            if not out and not pending:
                break  # input exhausted before the end of the stream
            data.extend(out)

    step = 64 * 1024
    while True:
        inflate(step)
        header, at_pixels = _parse_until_pixels(bytes(data), read_dataset, DicomBytesIO)
        if at_pixels or inflater.eof or len(data) < step:
            break
        if step >= DICOM_HEADER_BYTES:
            raise CaseError(
                f"deflated DICOM header inflates beyond {DICOM_HEADER_BYTES} bytes before its pixel "
                "data (decompression bomb guard)"
            )
        step = min(step * 4, DICOM_HEADER_BYTES)
    if header is not None:
        _check_declared_size(header)
        limit = _declared_pixels(header)[1] + DICOM_HEADER_BYTES
        inflate(limit + 1)
        if len(data) > limit:
            raise CaseError(
                f"deflated DICOM inflates beyond the {limit} bytes its header declares (decompression bomb guard)"
            )
    if not inflater.eof:
        raise CaseError("corrupt or truncated DICOM: the deflated data set ends early")
    buffer = DicomBytesIO(bytes(data))
    dataset = read_dataset(buffer, False, True)
    ds = FileDataset(str(path), dataset, preamble, file_meta, False, True)
    ds.set_original_encoding(False, True, dataset._character_set)
    return ds


def _parse_until_pixels(data: bytes, read_dataset: Any, bytes_io: Any) -> tuple[Any, bool]:
    """The elements before Pixel Data (7FE0,0010) in ``data``, and whether Pixel Data was reached."""
    reached = []

    def stop(tag: Any, vr: Any, length: Any) -> bool:
        if tag == 0x7FE00010:
            reached.append(True)
            return True
        return False

    try:
        header = read_dataset(bytes_io(data), False, True, stop_when=stop)
    except Exception:
        return None, False  # cut inside an element: inflate more
    return header, bool(reached)


def _palette_colours(hdr: _Header, raw: np.ndarray) -> np.ndarray:
    """A PALETTE COLOR frame as the display shows it: each stored value looked up in the Red, Green
    and Blue Palette Color LUTs (PS3.3 C.7.6.3.1.5-6, by pydicom's ``apply_color_lut``; values below
    the first mapped one take the first entry, above the last the last), as ``[H, W, 3]`` float32.

    The stored values are indices, not intensities: read as grey they differ from the displayed image
    by up to the whole range. The RGB values are the LUT entries themselves, 0..255 for 8-bit entries
    and 0..65535 for 16-bit ones (as an RGB DICOM's samples at that depth), so ``scale`` must be the
    entries' maximum: a 16-bit palette under ``scale: 255`` is refused by :func:`check_value_range`.
    Colour goes to the model's channels as for any colour image (luma for one channel)."""
    if raw.ndim != 2:
        raise CaseError(
            f"PALETTE COLOR DICOM pixel array of shape {raw.shape} is not a single frame of indices", stage="preprocess"
        )
    from pydicom.pixels import apply_color_lut

    try:
        rgb = apply_color_lut(raw, hdr.ds)
    except Exception as exc:
        raise CaseError(
            f"PALETTE COLOR DICOM whose palette could not be applied: {exception_text(exc)}", stage="preprocess"
        ) from None
    return rgb[..., :3].astype(np.float32)


class _Header(_KeywordAttributes):
    """The DICOM elements a case needs, each converted once on first use and looked up by tag (a
    keyword lookup of a dataset costs tens of microseconds on first access; a small file is read in
    well under a millisecond, so the lookups were half its cost). ``ds`` is the dataset itself, for
    pydicom's LUT helpers."""

    def __init__(self, ds: Any):
        self.ds = ds
        self._values: dict[str, Any] = {}

    def get(self, keyword: str, default: Any = None) -> Any:
        if keyword not in self._values:
            tag = _tag_of(keyword)
            self._values[keyword] = self.ds[tag].value if tag in self.ds else None
        value = self._values[keyword]
        return default if value is None else value


@functools.cache
def _tag_of(keyword: str) -> int:
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag is None:  # pragma: no cover - the keywords used here are all in the dictionary
        raise KeyError(keyword)
    return tag


def _tag_text(ds: Any, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception:  # a malformed element must not cost the case its pixels
        return ""
    return "" if value is None else str(value).strip()


_NATIVE_DTYPES = {(8, 0): np.uint8, (8, 1): np.int8, (16, 0): np.dtype("<u2"), (16, 1): np.dtype("<i2")}


def _native_pixels(ds: Any, syntax: Any, index: int | None = 0) -> np.ndarray | None:
    """Frame ``index`` (all frames ``[F, H, W]`` for None) straight from uncompressed little-endian
    bytes, or None to let pydicom decode it."""
    if syntax not in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1"):  # implicit / explicit VR little endian
        return None
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        return None
    alloc, stored = int(ds.get("BitsAllocated", 0)), int(ds.get("BitsStored", 0))
    dtype = _NATIVE_DTYPES.get((alloc, int(ds.get("PixelRepresentation", 0))))
    if dtype is None or stored != alloc:  # packed high bits need masking / sign extension: pydicom's job
        return None
    rows, cols = int(ds.Rows), int(ds.Columns)
    frames = max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    first, count = (0, frames) if index is None else (index, 1)
    data = ds.PixelData
    need = rows * cols * (first + count) * alloc // 8
    if len(data) < need:
        raise CaseError(
            f"truncated DICOM pixel data: {len(data)} bytes, {rows}x{cols}x{alloc} bits x {first + count} "
            f"frame(s) need {need}"
        )
    pixels = np.frombuffer(data, dtype=dtype, count=rows * cols * count, offset=rows * cols * first * alloc // 8)
    return pixels.reshape(rows, cols) if index is not None else pixels.reshape(count, rows, cols)


def _display_values(ds: Any, raw: np.ndarray, window: tuple[float, float] | None) -> tuple[np.ndarray, float, float]:
    """Modality LUT then VOI (PS3.3 C.11.1, C.11.2); returns the values and their output range."""
    return _voi_values(ds, _modality_values(ds, raw), window)


def _modality_values(ds: Any, raw: np.ndarray) -> np.ndarray:
    """The Modality LUT (PS3.3 C.11.1): a Modality LUT Sequence, else Rescale Slope/Intercept, as float64."""
    if ds.get("ModalityLUTSequence"):
        from pydicom.pixels import apply_modality_lut

        return np.asarray(apply_modality_lut(raw, ds.ds), dtype=np.float64)
    arr = raw.astype(np.float64)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None and (float(slope) != 1.0 or float(intercept) != 0.0):
        arr = arr * float(slope) + float(intercept)
    return arr


def _voi_values(ds: Any, arr: np.ndarray, window: tuple[float, float] | None) -> tuple[np.ndarray, float, float]:
    """The VOI transform (PS3.3 C.11.2) of modality values; returns the values and their output range."""
    lo, hi = _stored_range(ds)
    if window is not None:
        return _window(arr, window[0], window[1], "LINEAR", lo, hi), lo, hi
    if ds.get("VOILUTSequence"):
        from pydicom.pixels import apply_voi_lut

        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        return (
            np.asarray(apply_voi_lut(arr, ds.ds, index=0, prefer_lut=True), dtype=np.float64),
            0.0,
            float(2**bits - 1),
        )
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is not None and width is not None:
        center = float(center[0] if _multi(center) else center)
        width = float(width[0] if _multi(width) else width)
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
        return _window(arr, center, width, function, lo, hi), lo, hi
    return arr, lo, hi


def _multi(value: Any) -> bool:
    return isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue"


def _window(x: np.ndarray, center: float, width: float, function: str, lo: float, hi: float) -> np.ndarray:
    """The VOI window functions of DICOM PS3.3 C.11.2.1.2 onto the output range [lo, hi]."""
    span = hi - lo
    if function == "SIGMOID":
        if width <= 0:
            raise CaseError(f"window width {width} must be > 0 for SIGMOID", stage="preprocess")
        return span / (1.0 + np.exp(-4.0 * (x - center) / width)) + lo
    if function == "LINEAR_EXACT":
        if width <= 0:
            raise CaseError(f"window width {width} must be > 0 for LINEAR_EXACT", stage="preprocess")
        y = ((x - center) / width + 0.5) * span + lo
        return np.clip(y, lo, hi)
    if width < 1:
        raise CaseError(f"window width {width} must be >= 1 for LINEAR", stage="preprocess")
    if width == 1:  # the formula divides by width - 1: a one-value window is a threshold
        return np.where(x < center - 0.5, lo, hi).astype(np.float64)
    y = ((x - (center - 0.5)) / (width - 1) + 0.5) * span + lo
    return np.clip(y, lo, hi)


def _stored_range(ds: Any) -> tuple[float, float]:
    """The range of stored values after the Modality LUT: the span a window maps onto (as pydicom)."""
    if ds.get("ModalityLUTSequence"):
        return 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    bits = int(ds.get("BitsStored", 8))
    if int(ds.get("PixelRepresentation", 0)) == 0:
        lo, hi = 0.0, float(2**bits - 1)
    else:
        lo, hi = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        lo, hi = sorted((lo * float(slope) + float(intercept), hi * float(slope) + float(intercept)))
    return lo, hi


def _to_channels(arr: np.ndarray, channels: int) -> np.ndarray:
    """``[H, W, C]`` to the protocol's channel count: grey repeated to 3, colour to luma, alpha dropped."""
    c = arr.shape[-1]
    if c == 4:
        arr, c = arr[:, :, :3], 3
    if c == channels:
        return arr
    if c == 1 and channels == 3:
        return np.repeat(arr, 3, axis=2)
    if c == 3 and channels == 1:
        luma = arr.astype(np.float32) @ np.asarray(LUMA, dtype=np.float32)
        return luma[:, :, None]
    raise CaseError(f"{c} channel(s) cannot become the {channels} the protocol expects", stage="preprocess")


# ---- one case ------------------------------------------------------------------------------------


def read_case(path: str | Path, spec: Preprocessing, *, check_range: bool = False) -> np.ndarray:
    """Read one image-like case into ``[C, H, W]`` raw values at the protocol's size.

    The reader is chosen per file: DICOM by extension or preamble, ``.npy`` as an array, anything
    else through Pillow; so a DICOM site and a PNG site differ only in their files. With
    ``check_range`` a case outside the protocol's value range is refused (:func:`check_value_range`),
    as scoring does.
    """
    return read_case_with_stats(path, spec, stats=False, check_range=check_range)[0]


def read_case_with_stats(
    path: str | Path, spec: Preprocessing, *, stats: bool = True, check_range: bool = True
) -> tuple[np.ndarray, np.ndarray | None, tuple[str, str]]:
    """:func:`read_case`, plus the case's :func:`image_stats` (taken from the same decoded array,
    before resizing; None when ``stats`` is false) and its DICOM equipment ``(manufacturer, model)``
    (``("", "")`` for other files). This is what scoring reads: unless ``check_range`` is false, a case
    whose values do not fit the protocol's ``scale`` is a :class:`CaseError` (:func:`check_value_range`)."""
    if not path:
        raise CaseError("no image path for this case")
    if spec.kind == "volume":  # the volume reader imports this module: the evaluator dispatches to it
        raise ValueError("volume cases are read by validate.scoring.volume_inputs.read_volume_with_stats")
    path = Path(path)
    suffix = path.suffix.lower()
    equipment = ("", "")
    is_array = suffix in ARRAY_SUFFIXES or spec.kind == "array"
    if is_array:
        arr = read_array(path, spec.channels, scale=spec.scale if check_range else None)
    elif spec.kind == "dicom" or (suffix not in RASTER_SUFFIXES and is_dicom(path)):
        arr, equipment = read_dicom_case(path, spec.channels, spec.window, spec.frames)
    else:
        arr = read_pillow(path, spec.channels)
    if check_range and not is_array:
        check_value_range(arr, spec.scale)
    values = image_stats(arr, spec.scale) if stats else None
    if spec.size is not None and tuple(arr.shape[:2]) != tuple(spec.size):
        arr = resize(arr, spec.size)
    return arr.transpose(2, 0, 1), values, equipment  # a view: the batch's np.stack makes the one copy


# Raw values may reach this much beyond ``scale`` (in magnitude) before a case is refused: room for a
# rounding or a filter overshoot, far less than one extra bit of depth (a factor of 2).
RANGE_TOLERANCE = 0.01


def check_value_range(arr: np.ndarray, scale: float) -> None:
    """Refuse a case whose raw values lie outside what the protocol's ``scale`` declares.

    The protocol divides raw values by ``scale`` and expects the result in [0, 1] (signed DICOM data
    after rescale and windowing in [-1, 1]); so a case with ``max |value| > scale * (1 + 0.01)`` was
    read at another bit depth than the model was given (a 16-bit PNG, values up to 65535, under
    ``scale: 255``) and would be scored on inputs hundreds of times outside the model's range. It is a
    failure (stage "preprocess") rather than a silently wrong score. Floating-point ``.npy`` arrays are
    not checked: their producer chose their range (e.g. already standardised values)."""
    if arr.size == 0:
        return
    limit = float(scale) * (1.0 + RANGE_TOLERANCE)
    if arr.dtype == np.uint8 and limit >= 255.0:
        return  # cannot exceed: no pass over the pixels
    lo, hi = float(np.min(arr)), float(np.max(arr))
    peak = max(abs(lo), abs(hi))
    if peak > limit:
        value = f"{hi:g}" if abs(hi) >= abs(lo) else f"{lo:g}"
        raise CaseError(
            f"pixel values up to {value} exceed input.scale {float(scale):g} (more than "
            f"{1 + RANGE_TOLERANCE:g} x scale): the image has another bit depth or range than the "
            "protocol declares",
            stage="preprocess",
        )


# ---- per-case image statistics (dataset-shift inputs) ----------------------------------------------

IMAGE_HIST_BINS = 16
IMAGE_PERCENTILES = (1, 5, 50, 95, 99)
#: Columns of :func:`image_stats`, in order; validate.analysis.shift reads them from the predictions.
IMAGE_STAT_COLUMNS = (
    ("img_height", "img_width", "img_mean", "img_std")
    + tuple(f"img_p{q:02d}" for q in IMAGE_PERCENTILES)
    + tuple(f"img_hist_{b:02d}" for b in range(IMAGE_HIST_BINS))
)
#: DICOM equipment columns: (0008,0070) Manufacturer, (0008,1090) Manufacturer's Model Name.
EQUIPMENT_COLUMNS = ("manufacturer", "manufacturer_model")


# images of at most this many values (pixels x channels) are summarised from one sort
SORTED_STATS_MAX_PIXELS = 16384
_PERCENTILE_FRACTIONS = np.asarray(IMAGE_PERCENTILES, dtype=np.float64) / 100.0
# integer-valued images spanning at most this many levels are summarised from a bincount (exact, one
# pass); wider or fractional ones from numpy's percentile (a partition: ~10x slower on large images)
MAX_COUNTED_LEVELS = 1 << 17


def image_stats(arr: np.ndarray, scale: float) -> np.ndarray:
    """Intensity summary of one decoded image ``[H, W, C]`` (before resizing), as float64 values in
    the order of :data:`IMAGE_STAT_COLUMNS`.

    Definitions, on ``v = pixel / scale`` over all finite pixels of all channels (after the channel
    conversion the model sees): ``img_height``, ``img_width`` the stored size; ``img_mean`` the mean;
    ``img_std`` the population standard deviation (ddof 0); ``img_pNN`` the NN-th percentile with
    linear interpolation between order statistics (numpy's default, Hyndman & Fan 1996 type 7);
    ``img_hist_BB`` the fraction of pixels in bin BB of 16 equal-width bins on [0, 1] (half-open
    except the last, as ``numpy.histogram``; values below 0 count in the first bin, above 1 in the
    last, so the fractions sum to 1).

    8-bit images are summarised from one ``bincount`` of their 256 levels; other small images (at
    most :data:`SORTED_STATS_MAX_PIXELS` values) from one sort of their values; larger images of integer
    values (8-bit, and in practice most 16-bit PNGs and
    DICOMs) from one ``bincount`` pass; others by numpy's mean, var and percentile on the float32
    values. All three follow the definitions above exactly (tests compare them with numpy's).
    """
    h, w = arr.shape[:2]
    out = np.full(len(IMAGE_STAT_COLUMNS), np.nan, dtype=np.float64)
    out[0], out[1] = h, w
    x = arr.reshape(-1)
    if x.size <= SORTED_STATS_MAX_PIXELS and x.dtype != np.uint8:
        # small images: one sort of the pixels gives every statistic (cheaper than a bincount over
        # the value range plus a dozen small array operations, and exact for any dtype)
        v = np.sort(x)
        if v.dtype.kind == "f" and not np.isfinite(v[0] + v[-1] if v.size else 0.0):
            v = v[np.isfinite(v)]
        n = v.size
        if n == 0:
            return out
        v = v.astype(np.float64) / float(scale)
        mean = v.mean()
        d = v - mean
        var = float(d @ d) / n
        pos = (n - 1) * _PERCENTILE_FRACTIONS
        lo = pos.astype(np.intp)
        v_lo = v[lo]
        pct = v_lo + (pos - lo) * (v[np.minimum(lo + 1, n - 1)] - v_lo)
        hist = np.bincount(_bins(v), minlength=IMAGE_HIST_BINS).astype(np.float64)
    else:
        if x.dtype == np.uint8:
            counts, offset = np.bincount(x, minlength=256), 0
        else:
            counts, offset = _integer_counts(x)
        if counts is not None:
            return image_stats_from_counts(counts, offset, h, w, scale)
        if not np.isfinite(x.min() + x.max()):  # a float image with NaN/Inf pixels: its finite ones
            x = x[np.isfinite(x)]
        n = x.size
        if n == 0:
            return out
        mean = float(np.mean(x, dtype=np.float64)) / scale
        var = float(np.var(x, dtype=np.float64)) / (scale * scale)
        pct = np.percentile(x, IMAGE_PERCENTILES).astype(np.float64) / scale
        v = x / np.asarray(scale, dtype=x.dtype)
        hist = np.bincount(_bins(v), minlength=IMAGE_HIST_BINS).astype(np.float64)
    out[2], out[3] = mean, np.sqrt(max(var, 0.0))
    out[4 : 4 + len(IMAGE_PERCENTILES)] = pct
    out[4 + len(IMAGE_PERCENTILES) :] = hist / n
    return out


def image_stats_from_counts(counts: np.ndarray, offset: int, height: int, width: int, scale: float) -> np.ndarray:
    """:func:`image_stats` of an image of integer values given as the count of each level
    ``offset + i`` (``counts[i]``) and its stored size: the same definitions, read off the counts.
    The device decoder (:mod:`validate.scoring.device_decode`) counts on the device and calls this."""
    out = np.full(len(IMAGE_STAT_COLUMNS), np.nan, dtype=np.float64)
    out[0], out[1] = height, width
    n = int(counts.sum())
    if n == 0:
        return out
    counts = counts.astype(np.float64)
    levels, level_bins = _levels(len(counts), offset, float(scale))
    mean = counts @ levels / n
    var = max(counts @ (levels - mean) ** 2 / n, 0.0)
    pct = _percentiles_from_counts(counts, levels, n)
    hist = np.bincount(level_bins, weights=counts, minlength=IMAGE_HIST_BINS)
    out[2], out[3] = mean, np.sqrt(max(var, 0.0))
    out[4 : 4 + len(IMAGE_PERCENTILES)] = pct
    out[4 + len(IMAGE_PERCENTILES) :] = hist / n
    return out


def _integer_counts(x: np.ndarray) -> tuple[np.ndarray | None, int]:
    """Counts of each level from the minimum, when ``x`` holds integers within a modest span."""
    if x.size == 0:
        return None, 0
    lo, hi = x.min(), x.max()
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi - lo >= MAX_COUNTED_LEVELS or abs(lo) >= 2**31:
        return None, 0
    xi = x.astype(np.int32)
    if not (xi == x).all():
        return None, 0
    offset = int(lo)
    if offset:
        xi -= offset
    return np.bincount(xi, minlength=int(hi) - offset + 1), offset


@functools.lru_cache(maxsize=8)
def _levels(n_levels: int, offset: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The value of each counted level and its histogram bin (kept: most sites repeat one range)."""
    levels = (np.arange(n_levels, dtype=np.float64) + offset) / scale
    levels.setflags(write=False)
    level_bins = _bins(levels)
    level_bins.setflags(write=False)
    return levels, level_bins


def _percentiles_from_counts(counts: np.ndarray, levels: np.ndarray, n: int) -> np.ndarray:
    """Type-7 percentiles: the order statistics around ``(n - 1) q``, read off the cumulative counts."""
    cum = np.cumsum(counts)
    pos = (n - 1) * _PERCENTILE_FRACTIONS
    lo = np.floor(pos)
    k = len(pos)
    at = levels[np.searchsorted(cum, np.concatenate([lo, np.minimum(lo + 1, n - 1)]), side="right")]
    return at[:k] + (pos - lo) * (at[k:] - at[:k])


def _bins(v: np.ndarray) -> np.ndarray:
    """Bin floor(v * 16) clipped into 0..15: numpy.histogram's bins on [0, 1], out-of-range values kept."""
    return np.clip(np.floor(v * IMAGE_HIST_BINS), 0, IMAGE_HIST_BINS - 1).astype(np.intp)


def resize(arr: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """``[H, W, C]`` to ``size`` by bilinear interpolation with antialiasing (torch, half-pixel centres)."""
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise CaseError(f"image of size {arr.shape[1]}x{arr.shape[0]} is empty", stage="preprocess")
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).permute(2, 0, 1)[None]
    out = torch.nn.functional.interpolate(
        t, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False, antialias=True
    )
    return out[0].permute(1, 2, 0).numpy()


def normalise(batch: torch.Tensor, spec: Preprocessing) -> torch.Tensor:
    """Raw values to model input, ``(x / scale - mean) / std`` per channel, in float32.

    Computed as one fused multiply-add, ``x * a + b`` with ``a = 1 / (scale * std)`` and
    ``b = -mean / std`` (float64 constants), which agrees with the three-step form to float32 rounding
    and passes over a large batch once instead of three times.

    An 8-bit batch on the CPU of at most :data:`_TABLE_MOST_ELEMENTS` values is mapped through a
    256-entry table per channel holding exactly what the arithmetic gives for each value
    (:func:`_normalise_8bit`): one single-threaded gather instead of parallel element-wise passes,
    which on a busy CPU cost more than a small model's forward pass. Larger batches keep the arithmetic.
    """
    if (
        spec.kind != "tabular"
        and batch.dtype == torch.uint8
        and batch.device.type == "cpu"
        and batch.dim() >= 3
        and 0 < batch.numel() <= _TABLE_MOST_ELEMENTS
    ):
        return _normalise_8bit(batch, spec)
    return _normalise_arithmetic(batch, spec)


def _normalise_arithmetic(batch: torch.Tensor, spec: Preprocessing) -> torch.Tensor:
    """``x * a + b`` per channel in float32 (see :func:`normalise`)."""
    x = batch.to(torch.float32)
    if spec.kind == "tabular":
        return x
    c = x.shape[1]
    mean = np.broadcast_to(np.asarray(spec.mean, dtype=np.float64), (c,))
    std = np.broadcast_to(np.asarray(spec.std, dtype=np.float64), (c,))
    a = 1.0 / (spec.scale * std)
    b = -mean / std
    if np.all(a == a[0]) and np.all(b == b[0]):
        # in place when .to() made a copy (8-bit input); never write into the caller's tensor
        y = x.mul_(float(a[0])) if x is not batch else x.mul(float(a[0]))
        return y.add_(float(b[0]))
    a_t, b_t = _channel_constants(tuple(a), tuple(b), x.dim(), str(x.device))
    return torch.addcmul(b_t, x, a_t)


#: elements gathered per call of :func:`_normalise_8bit`: bounds the gather's index temporaries (8 B each)
_GATHER_ELEMENTS = 1 << 20
#: the largest 8-bit batch normalised by table. Measured on 2 shared cores (load ~6), median of 15
#: interleaved calls, 3-channel 224x224: 0.3M values 0.7 ms by table vs 15 ms by arithmetic, 1.1M 2.6 vs
#: 9.1, 2.1M 10 vs 13, 4.8M 22 vs 14 (the parallel passes win once a batch is large enough to share)
_TABLE_MOST_ELEMENTS = 1 << 21


def _normalise_8bit(batch: torch.Tensor, spec: Preprocessing) -> torch.Tensor:
    """:func:`_normalise_arithmetic` of an 8-bit CPU batch ``[N, C, ...]`` by table look-up: bit for bit
    the same values, since each table entry is that arithmetic applied to the value itself (element-wise
    float32 operations do not depend on the neighbours). NumPy's gather runs on one thread: on a CPU
    shared with the model's intra-op threads (and other processes) a parallel element-wise pass waits
    on every thread, several times the gather's cost for a batch of small images."""
    x = np.ascontiguousarray(batch.numpy())
    table = _8bit_table(spec, x.shape[1], x.ndim)  # [C, 256]
    out = np.empty(x.shape, dtype=np.float32)
    rows = max(1, _GATHER_ELEMENTS // max(x[0, 0].size, 1))
    for c in range(x.shape[1]):
        for r in range(0, x.shape[0], rows):
            out[r : r + rows, c] = np.take(table[c], x[r : r + rows, c])
    return torch.from_numpy(out)


@functools.lru_cache(maxsize=16)
def _8bit_table(spec: Preprocessing, channels: int, dim: int) -> np.ndarray:
    """Per channel, the normalised value of each 8-bit level ``[C, 256]``, computed by the arithmetic
    path on a batch holding every level once in every channel."""
    levels = (
        torch.arange(256, dtype=torch.uint8)
        .reshape((1, 1, 256) + (1,) * (dim - 3))
        .expand((1, channels, 256) + (1,) * (dim - 3))
    )
    table = _normalise_arithmetic(levels.contiguous(), spec).numpy().reshape(channels, 256)
    table.setflags(write=False)
    return table


@functools.lru_cache(maxsize=16)
def _channel_constants(a: tuple, b: tuple, dim: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    # made once per device: a copy from pageable host memory would wait for all queued GPU work
    shape = (1, len(a)) + (1,) * (dim - 2)
    return (
        torch.tensor(a, dtype=torch.float32, device=device).reshape(shape),
        torch.tensor(b, dtype=torch.float32, device=device).reshape(shape),
    )


def feature_matrix(cases: Any, features: Sequence[str]) -> tuple[np.ndarray, dict[int, str]]:
    """Tabular inputs ``[N, F]`` float32 with NaN for missing, and rows whose values are not numbers.

    ``cases`` is a DataFrame holding each feature either as ``feature:<name>`` (what
    :func:`validate.cohort.load_site_manifest` returns, already numeric) or under its own name.
    """
    import pandas as pd

    cols = []
    bad: dict[int, str] = {}
    for feat in features:
        col = f"feature:{feat}" if f"feature:{feat}" in cases.columns else feat
        raw = cases[col]
        num = pd.to_numeric(raw, errors="coerce")
        text = raw.astype(str).str.strip()
        wrong = num.isna() & raw.notna() & ~text.isin(["", "nan", "NaN", "NA", "?", "None"])
        for r in np.flatnonzero(wrong.to_numpy()):
            bad.setdefault(int(r), f"feature `{feat}` value {raw.iloc[r]!r} is not a number")
        cols.append(num.to_numpy(dtype=np.float64))
    x = np.stack(cols, axis=1).astype(np.float32) if cols else np.zeros((len(cases), 0), np.float32)
    return x, bad


def finite_rows(values: np.ndarray) -> np.ndarray:
    """Rows of model output that are all finite (NaN/Inf rows become failures)."""
    return np.isfinite(values).reshape(len(values), -1).all(axis=1)


__all__ = [
    "CaseError",
    "scrub_paths",
    "exception_text",
    "Preprocessing",
    "read_case",
    "read_case_with_stats",
    "read_pillow",
    "read_dicom",
    "read_dicom_case",
    "read_array",
    "is_dicom",
    "resize",
    "normalise",
    "feature_matrix",
    "finite_rows",
    "image_stats",
    "IMAGE_STAT_COLUMNS",
    "EQUIPMENT_COLUMNS",
    "MAX_IMAGE_PIXELS",
    "check_value_range",
]
