"""Decoding DICOM pixel data: compressed transfer syntaxes, and which frame of a multi-frame file.

Compressed frames are decoded by pydicom's pixel-data plugins. The declared decoders are the
pylibjpeg family (``pylibjpeg`` with ``pylibjpeg-libjpeg`` for the JPEG processes, 8- and 12-bit,
lossy and lossless; ``pylibjpeg-openjpeg`` for JPEG 2000; ``pylibjpeg-rle`` for RLE) and
``pyjpegls`` (CharLS) for JPEG-LS; ``python-gdcm`` and Pillow serve where installed. For each syntax
the fastest of the installed plugins that decodes it (:data:`PREFERRED_PLUGIN`, measured by
benchmarks/bench_dicom_codecs.py) is tried first, then every other installed plugin in pydicom's order.

A file whose syntax has no decoder installed is a :class:`PixelDataError` naming the syntax (name and UID)
and the packages that decode it (:data:`DECODER_PACKAGES`); one whose decoders all refuse it as a
feature they lack says so; only an intact header whose codestream no decoder can read is "corrupt or
truncated" (with the syntax named).

A multi-frame 2D file (cine, tomosynthesis read as 2D) is scored under the protocol's
``input.frames`` (:data:`FRAME_POLICIES`): ``refuse`` (the default), ``first``, ``middle`` or ``max``.

This module imports numpy only (pydicom when decoding); :mod:`validate.scoring.inputs` turns its
:class:`PixelDataError` into the case's ``CaseError``.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np


class PixelDataError(Exception):
    """A DICOM's pixel data cannot be read as the protocol asks; the message is the failure reason."""


def _exception_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


#: ``input.frames``: what a 2D protocol does with a multi-frame DICOM.
#: ``refuse`` a failure naming the option; ``first`` frame 0; ``middle`` frame N // 2 (0-based: the
#: later of the two middle frames when N is even); ``max`` the per-pixel maximum over all frames after
#: the modality rescale (a maximum intensity projection), then the VOI window as for one frame.
FRAME_POLICIES = ("refuse", "first", "middle", "max")

# pylibjpeg-libjpeg is GPL-3.0 (this project is Apache-2.0): it is the optional extra `jpeg`, which the
# README's commands install (dev), never a core dependency, so a reason names the extra and its licence
_LIBJPEG = "pylibjpeg-libjpeg (GPL-3.0; pip install 'validate[jpeg]')"
#: Transfer syntax UID -> the pip packages that decode it (the first named is the declared one).
DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": f"{_LIBJPEG} (or python-gdcm, or Pillow)",
    "1.2.840.10008.1.2.4.51": f"{_LIBJPEG} (12-bit samples: only pylibjpeg-libjpeg; 8-bit: also python-gdcm or Pillow)",
    "1.2.840.10008.1.2.4.57": f"{_LIBJPEG} (or python-gdcm)",
    "1.2.840.10008.1.2.4.70": f"{_LIBJPEG} (or python-gdcm)",
    "1.2.840.10008.1.2.4.80": f"pyjpegls (or {_LIBJPEG}, or python-gdcm)",
    "1.2.840.10008.1.2.4.81": f"pyjpegls (or {_LIBJPEG}, or python-gdcm)",
    "1.2.840.10008.1.2.4.90": "pylibjpeg with pylibjpeg-openjpeg (or python-gdcm, or Pillow)",
    "1.2.840.10008.1.2.4.91": "pylibjpeg with pylibjpeg-openjpeg (or python-gdcm, or Pillow)",
    "1.2.840.10008.1.2.4.201": "pylibjpeg with pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.202": "pylibjpeg with pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.203": "pylibjpeg with pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.5": "pylibjpeg with pylibjpeg-rle (pydicom's own RLE decoder also serves, slower)",
}

#: Syntax UID -> the plugin tried first where installed. Lossy JPEG goes to the declared decoder
#: (libjpeg) whatever else is installed: IDCT implementations differ by a level or two (GDCM and Pillow
#: against libjpeg, on the colour fixture), and the same file should give the same input on every
#: machine with the declared dependencies. Elsewhere the fastest declared decoder in
#: benchmarks/bench_dicom_codecs.py on a 512x512 12-bit frame (pyjpegls 2.3x faster than libjpeg on
#: JPEG-LS; openjpeg 1.4x faster than GDCM on JPEG 2000; pylibjpeg-rle 17x faster than pydicom's RLE).
#: JPEG Lossless keeps pydicom's order (GDCM first where installed: 1.3-2.3x faster, identical pixels).
PREFERRED_PLUGIN = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg",
    "1.2.840.10008.1.2.4.51": "pylibjpeg",
    "1.2.840.10008.1.2.4.80": "pyjpegls",
    "1.2.840.10008.1.2.4.81": "pyjpegls",
    "1.2.840.10008.1.2.4.90": "pylibjpeg",
    "1.2.840.10008.1.2.4.91": "pylibjpeg",
    "1.2.840.10008.1.2.5": "pylibjpeg",
}


#: The distributions whose presence and version decide how a compressed DICOM decodes (or fails to).
DECODER_DISTRIBUTIONS = (
    "pydicom",
    "pylibjpeg",
    "pylibjpeg-libjpeg",
    "pylibjpeg-openjpeg",
    "pylibjpeg-rle",
    "pyjpegls",
    "python-gdcm",
    "pillow",
)


@functools.cache
def installed_decoders() -> tuple[tuple[str, str], ...]:
    """``(distribution, version)`` of each installed decoder of :data:`DECODER_DISTRIBUTIONS`.

    Part of the input cache key of image protocols: a case that failed for want of a decoder is kept
    in the cache as a failure, so installing the decoder (as its failure reason tells) must make the
    cache miss, and so must another decoder version (lossy codecs' outputs differ by a level or two)."""
    from importlib import metadata

    found = []
    for name in DECODER_DISTRIBUTIONS:
        try:
            found.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            continue
    return tuple(found)


def frame_index(policy: str, frames: int) -> int | None:
    """The frame a 2D protocol scores of a file with ``frames`` frames: an index, or None for all of
    them (``max``). A single frame is always frame 0; ``refuse`` (or an unknown policy) is a failure."""
    if frames <= 1:
        return 0
    if policy == "first":
        return 0
    if policy == "middle":
        return frames // 2
    if policy == "max":
        return None
    raise PixelDataError(
        f"multi-frame DICOM ({frames} frames) is refused by the protocol's input.frames: {policy}; "
        "set input.frames to first, middle or max (the per-pixel maximum over the frames) to score one "
        "2D image per case, or use input.kind volume for a 3D model"
    )


def syntax_text(syntax: Any) -> str:
    """``Name (UID)`` of a transfer syntax, e.g. ``JPEG-LS Lossless Image Compression (1.2.840.10008.1.2.4.80)``."""
    name = getattr(syntax, "name", "") or ""
    return f"{name} ({syntax})" if name and name != str(syntax) else f"unknown transfer syntax ({syntax})"


def check_decodable(syntax: Any) -> None:
    """Refuse, before decoding, a compressed syntax that no installed plugin (or no plugin at all) decodes."""
    if syntax is None or not getattr(syntax, "is_transfer_syntax", False):
        if syntax is not None:
            raise PixelDataError(
                f"DICOM {syntax_text(syntax)} is not a transfer syntax pydicom knows; cannot decode it"
            )
        return
    if not syntax.is_compressed:
        return
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise PixelDataError(
            f"compressed DICOM transfer syntax {syntax_text(syntax)} has no pixel-data decoder for Python "
            "(e.g. video: MPEG, HEVC); convert the cases to images or a decodable syntax"
        ) from None
    if not decoder.is_available:
        needs = DECODER_PACKAGES.get(str(syntax)) or "; ".join(decoder.missing_dependencies)
        raise PixelDataError(
            f"compressed DICOM transfer syntax {syntax_text(syntax)} has no decoder installed; install {needs}"
        )


#: Syntaxes whose codestreams end with a marker: EOI (FFD9) for the JPEG processes (ISO 10918-1) and
#: JPEG-LS (ISO 14495-1), EOC (FFD9) for JPEG 2000 and HTJ2K (ISO 15444-1, -15).
_MARKER_ENDED = {
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
}


def check_codestreams_end(ds: Any, syntax: Any, frames: int) -> None:
    """Refuse encapsulated pixel data whose frames do not all end with their end-of-image marker.

    libjpeg (pylibjpeg-libjpeg) decodes a cut JPEG, JPEG Lossless or JPEG-LS codestream without an
    error, filling the missing part: a truncated file would be scored as a different image. Each
    frame's codestream must end with FFD9 (after the zero bytes that pad fragments to even length)."""
    if str(syntax) not in _MARKER_ENDED:
        return
    from pydicom.encaps import generate_frames

    what = syntax_text(syntax)
    count = 0
    try:
        for count, frame in enumerate(generate_frames(ds.PixelData, number_of_frames=frames), start=1):
            if not bytes(frame[-4096:]).rstrip(b"\x00").endswith(b"\xff\xd9"):
                raise PixelDataError(
                    f"corrupt or truncated DICOM pixel data ({what}): frame {count} of {frames} ends "
                    "without its end-of-image marker (FFD9)"
                )
    except PixelDataError:
        raise
    except Exception as exc:
        raise PixelDataError(
            f"corrupt or truncated DICOM pixel data ({what}): the encapsulated frames cannot be read "
            f"({_exception_text(exc)})"
        ) from None
    if count < frames:
        raise PixelDataError(f"corrupt or truncated DICOM pixel data ({what}): {count} of {frames} frames present")


def decode_pixels(ds: Any, syntax: Any, index: int | None) -> np.ndarray:
    """Frame ``index`` of ``ds`` (or all its frames for None) as pydicom decodes it: ``[H, W]`` or
    ``[H, W, S]`` for one frame, with a leading frame axis for all (YBR colour converted to RGB).

    The preferred plugin for the syntax is tried first; any failure there retries with all installed
    plugins, whose reasons make the failure's text."""
    check_decodable(syntax)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    check_codestreams_end(ds, syntax, frames)
    from pydicom.pixels import get_decoder

    decoder = get_decoder(syntax) if syntax is not None else None
    preferred = PREFERRED_PLUGIN.get(str(syntax))
    if decoder is None or preferred not in getattr(decoder, "available_plugins", ()):
        preferred = None
    opts: dict = {"index": index} if frames > 1 and index is not None else {}
    try:
        if preferred is not None and decoder is not None:
            try:
                return decoder.as_array(ds, decoding_plugin=preferred, **opts)[0]
            except Exception:
                pass  # let every plugin try, so that the failure names them all
        if decoder is not None:
            return decoder.as_array(ds, **opts)[0]
        return np.asarray(ds.pixel_array)
    except Exception as exc:
        raise PixelDataError(_decode_failure(exc, syntax)) from None


def _decode_failure(exc: BaseException, syntax: Any) -> str:
    """The reason for pixel data no plugin decoded: a missing feature where every plugin says it does
    not support the data, else corrupt or truncated data; both name the syntax."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    reasons = [ln for ln in lines if ":" in ln and not ln.startswith("Unable to decode")] or lines
    text = "; ".join(reasons)[:400]
    what = syntax_text(syntax) if syntax is not None else "no transfer syntax"
    if reasons and all("support" in r.lower() for r in reasons):
        needs = DECODER_PACKAGES.get(str(syntax), "another pydicom pixel-data plugin")
        return f"DICOM pixel data in {what} uses a feature the installed decoders lack ({text}); install {needs}"
    detail = text if reasons else _exception_text(exc)
    return f"corrupt or truncated DICOM pixel data ({what}): {detail}"


def frame_count(hdr: Any) -> int:
    """Number of Frames (0028,0008), 1 when absent or empty."""
    try:
        return max(int(hdr.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        raise PixelDataError(f"DICOM NumberOfFrames {hdr.get('NumberOfFrames')!r} is not a number") from None


__all__ = [
    "PixelDataError",
    "FRAME_POLICIES",
    "DECODER_PACKAGES",
    "PREFERRED_PLUGIN",
    "installed_decoders",
    "frame_index",
    "frame_count",
    "syntax_text",
    "check_decodable",
    "check_codestreams_end",
    "decode_pixels",
]
