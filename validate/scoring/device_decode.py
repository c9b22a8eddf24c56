"""JPEG and JPEG 2000 decoded on the scoring device (NVIDIA nvImageCodec, the optional extra ``gpu-decode``).

On a GPU with many cores' worth of model throughput, decoding every file on the CPU caps the cold
path (issue 21: 16 cores decode 224x224 PNG at ~6,000/s, a ResNet-50 on an H200 scores several
times that). For JPEG and JPEG 2000 files, the DataLoader workers then only read the bytes; the main
process decodes each batch's codestreams in one nvImageCodec call on the device (nvJPEG, nvJPEG2000;
nvImageCodec falls back to its CPU codecs, libjpeg-turbo and OpenJPEG, for what the device cannot
do), and the rest of the case's preprocessing follows on the device with the same definitions as on
the CPU (:mod:`validate.scoring.inputs`):

- colour to grey by Pillow's ``convert("L")`` rule, ITU-R BT.601 luma in 16-bit fixed point,
  ``(19595 R + 38470 G + 7471 B + 32768) >> 16`` (Pillow, libImaging/Convert.c), so grey inputs are
  the CPU path's to the level; grey to colour by repetition;
- image statistics (:func:`validate.scoring.inputs.image_stats`) from the 256-level histogram of the
  decoded image, counted on the device: the same numbers as the CPU's count of the CPU's pixels;
- resizing by the same torch bilinear antialiased interpolation (:func:`validate.scoring.inputs.resize`),
  run on the device.

Only 8-bit codestreams with 1 or 3 components go to the device (``CodeStream.precision``,
``num_channels``); 12/16-bit, CMYK and anything nvImageCodec cannot parse or decode are decoded on
the CPU as before, in the main process, with the CPU path's failures. EXIF orientation is not
applied (the CPU reader does not apply it either).

Tolerance: JPEG 2000 (reversible or irreversible) and baseline JPEG decoded by the CPU backends are
the CPU path's pixels exactly (tests/test_device_decode.py); nvJPEG on a GPU uses its own IDCT and
chroma upsampling, which may differ from libjpeg-turbo by a few levels on lossy data (the GPU test
bounds it). Compressed DICOM pixel data stays on the CPU decoders (:mod:`validate.scoring.dicom_pixels`).

Used when the scoring device is CUDA and ``nvidia.nvimgcodec`` imports (``EngineOptions.device_decode``
None, the default), or when forced (True: benchmarks and tests, on any device: on a CPU nvImageCodec's
CPU backends decode).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from validate.scoring.inputs import (
    MAX_IMAGE_PIXELS,
    CaseError,
    Preprocessing,
    check_value_range,
    image_stats_from_counts,
)

#: File suffixes whose codestreams the device decoder takes (the case's reader is chosen by suffix).
DEVICE_SUFFIXES = (".jpg", ".jpeg", ".jp2", ".j2k", ".jpf", ".jph")
#: nvImageCodec's codec names for the codestreams decoded on the device.
DEVICE_CODECS = ("jpeg", "jpeg2k")
#: Pillow's BT.601 luma weights in 16-bit fixed point (libImaging/Convert.c, ``L24``).
_LUMA_FIXED = (19595, 38470, 7471)


@functools.cache
def nvimgcodec() -> Any | None:
    """The ``nvidia.nvimgcodec`` module, or None where the extra is not installed (or cannot load).

    Its import prints the codec libraries it did not find (nvJPEG, nvJPEG2000, nvTIFF) on stderr; on a
    machine without them that is noise, so it is silenced."""
    try:
        with _fd_silenced(2):
            from nvidia import nvimgcodec as module  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except Exception:
        return None
    return module


@contextlib.contextmanager
def _fd_silenced(fd: int):
    # the library writes from C, below Python's sys.stderr
    saved = os.dup(fd)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def wanted(option: bool | None, device: torch.device, spec: Preprocessing) -> bool:
    """Whether a run decodes on the device: only image inputs; ``option`` None means on CUDA where
    nvImageCodec is installed, True forces it (any device, if installed), False never."""
    if option is False or spec.kind != "image":
        return False
    if option is None and device.type != "cuda":
        return False
    return nvimgcodec() is not None


def cache_identity(device: torch.device, spec: Preprocessing) -> str | None:
    """What the score and decoded-input cache keys record of a run that decodes on the device (the
    nvImageCodec version and the device type), None where the CPU decodes. nvJPEG's IDCT may differ from
    libjpeg's by a few levels: without this, a cache filled on a GPU would hand its pixels and scores to a
    later CPU run of the same files, and the other way round."""
    if not wanted(None, device, spec):
        return None
    module = nvimgcodec()
    version = getattr(module, "__version__", "unknown")
    return f"nvimgcodec {version} on {device.type}"


def on_device(path: str | Path) -> bool:
    """Whether a case's file is read as bytes for the device decoder (by suffix, as the reader chooses)."""
    return Path(path).suffix.lower() in DEVICE_SUFFIXES


def read_bytes(path: str | Path) -> bytes:
    """The file's bytes, or the CPU reader's failure reason for a missing file."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise CaseError("image file not found") from None
    except OSError as exc:
        raise CaseError(f"cannot read the image file: {type(exc).__name__}: {exc.strerror}") from None


class DeviceDecoder:
    """One nvImageCodec decoder for the scoring device; :meth:`decode` turns a batch's codestreams
    into model inputs ``[C, H, W]`` on the device, with their image statistics."""

    def __init__(self, device: torch.device, spec: Preprocessing):
        nv = nvimgcodec()
        if nv is None:
            raise RuntimeError("nvidia.nvimgcodec is not installed (pip install 'validate[gpu-decode]')")
        self.nv, self.spec = nv, spec
        self.device = device
        if device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            self.decoder = nv.Decoder(device_id=index)
        else:
            self.decoder = nv.Decoder(
                device_id=nv.NVIMGCODEC_DEVICE_CPU_ONLY, backends=[nv.Backend(nv.BackendKind.CPU_ONLY)]
            )
        self.params = nv.DecodeParams(apply_exif_orientation=False, color_spec=nv.ColorSpec.SRGB, allow_any_depth=True)

    def streams(self, blobs: Sequence[bytes]) -> list[Any | None]:
        """Each blob's parsed codestream where the device takes it (8-bit JPEG / JPEG 2000, 1 or 3
        components, within the pixel limit), else None (decoded on the CPU)."""
        out: list[Any | None] = []
        for blob in blobs:
            try:
                cs = self.nv.CodeStream(blob)
                fits = (
                    cs.codec_name in DEVICE_CODECS
                    and int(cs.num_channels) in (1, 3)
                    and int(cs.precision) <= 8
                    and 0 < int(cs.height) * int(cs.width) <= MAX_IMAGE_PIXELS
                    and int(getattr(cs, "num_images", 1) or 1) == 1
                )
            except Exception:
                fits = False
            out.append(cs if fits else None)
        return out

    def decode(self, blobs: Sequence[bytes]) -> list[tuple[torch.Tensor, np.ndarray] | None]:
        """Per blob, ``(input [C, H, W] on the device, image statistics)`` or None where the device
        path does not take it or failed (the caller reads that case on the CPU)."""
        streams = self.streams(blobs)
        todo = [i for i, cs in enumerate(streams) if cs is not None]
        results: list[tuple[torch.Tensor, np.ndarray] | None] = [None] * len(blobs)
        if not todo:
            return results
        try:
            images = self.decoder.decode([streams[i] for i in todo], params=self.params)
        except Exception:
            return results  # the CPU decoders take the batch and say what is wrong with each case
        for i, image in zip(todo, images, strict=True):
            if image is None:
                continue
            try:
                results[i] = self.preprocess(self._as_tensor(image))
            except CaseError:
                results[i] = None  # the CPU path raises it again, with its own reason
        return results

    def _as_tensor(self, image: Any) -> torch.Tensor:
        """``[H, W, C]`` uint8 on the scoring device."""
        if self.device.type == "cuda":
            t = torch.from_dlpack(image.cuda())
            return t.to(self.device) if t.device != self.device else t
        return torch.from_numpy(np.asarray(image.cpu()).copy())

    def preprocess(self, hwc: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
        """A decoded 8-bit ``[H, W, 3]`` image to the model input ``[C, H, W]`` (uint8, or float32
        when resized) and its :func:`~validate.scoring.inputs.image_stats`, as the CPU path gives them."""
        if hwc.dtype != torch.uint8 or hwc.dim() != 3 or hwc.shape[2] not in (1, 3):
            raise CaseError("not an 8-bit grey or RGB image")
        h, w = int(hwc.shape[0]), int(hwc.shape[1])
        chw = hwc.permute(2, 0, 1)
        if self.spec.channels == 1 and chw.shape[0] == 3:
            r, g, b = (chw[i].to(torch.int32) for i in range(3))
            wr, wg, wb = _LUMA_FIXED
            chw = ((r * wr + g * wg + b * wb + 0x8000) >> 16).to(torch.uint8)[None]
        elif self.spec.channels == 3 and chw.shape[0] == 1:
            chw = chw.expand(3, h, w)
        elif chw.shape[0] != self.spec.channels:
            raise CaseError(f"{chw.shape[0]} channel(s) cannot become the {self.spec.channels} the protocol expects")
        counts = torch.bincount(chw.reshape(-1).to(torch.int64), minlength=256).cpu().numpy()
        levels = np.flatnonzero(counts)
        if len(levels):
            check_value_range(np.asarray([levels[0], levels[-1]], dtype=np.uint8), self.spec.scale)
        stats = image_stats_from_counts(counts, 0, h, w, self.spec.scale)
        if self.spec.size is not None and (h, w) != tuple(self.spec.size):
            x = torch.nn.functional.interpolate(
                chw[None].to(torch.float32),
                size=tuple(int(s) for s in self.spec.size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )[0]
            return x, stats
        return chw.contiguous(), stats


def complete_batch(batch: dict, decoder: DeviceDecoder, read_on_cpu: Any, device: torch.device) -> dict:
    """Fill in a batch whose dataset left ``encoded`` cases (position, path, bytes or a CaseError):
    decode them on the device, read on the CPU (``read_on_cpu(path)``, the dataset's reader) those the
    device does not take, and return the batch with every read case in ``ok``, ``x`` (now on
    ``device``), ``stats`` and ``equipment``; failures are added to ``failed``."""
    encoded = batch.pop("encoded", None) or []
    if not encoded:
        return batch
    blobs = [b for _, _, b in encoded if isinstance(b, bytes)]
    decoded = iter(decoder.decode(blobs))
    ok: list[int] = list(batch["ok"].tolist())
    failed: list[tuple[int, str, str]] = list(batch["failed"])
    xs: list[torch.Tensor] = []
    stats: list[np.ndarray] = []
    if batch["x"] is not None:
        xs.extend(batch["x"].to(device, non_blocking=True).unbind(0))
        stats.extend(np.asarray(batch["stats"], dtype=np.float64))
    equipment = list(batch["equipment"])
    for pos, path, blob in encoded:
        got = next(decoded) if isinstance(blob, bytes) else None
        if got is None:
            try:
                if isinstance(blob, CaseError):
                    raise blob
                arr, values, equip, _ = read_on_cpu(path)
            except CaseError as exc:
                failed.append((int(pos), exc.reason, exc.stage))
                continue
            except Exception as exc:  # a reader bug must not stop the site
                failed.append((int(pos), f"{type(exc).__name__}: {exc}", "read"))
                continue
            got = (torch.from_numpy(np.ascontiguousarray(arr)).to(device), values)
        else:
            equip = ("", "")
        ok.append(int(pos))
        xs.append(got[0])
        stats.append(got[1])
        equipment.append(equip)
    batch.update(
        ok=torch.as_tensor(ok, dtype=torch.int64),
        x=_stack(xs) if xs else None,
        stats=torch.from_numpy(np.stack(stats)) if stats else None,
        equipment=equipment,
        failed=failed,
    )
    return batch


def _stack(xs: list[torch.Tensor]) -> torch.Tensor:
    # as the CPU batch: uint8 when every case is, float32 otherwise
    if all(x.dtype == torch.uint8 for x in xs):
        return torch.stack(xs)
    return torch.stack([x.to(torch.float32) for x in xs])
