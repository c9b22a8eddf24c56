"""Thumbnails of the most confident errors, stored in the bundle for the dashboard's Cases page.

For image-input protocols (``input.kind`` image, dicom or array) ``validate run`` writes, per site, a
PNG of each of the cases the Cases page ranks first (:func:`validate.analysis.cases.confident_errors`,
``per_site`` of them at each operating threshold, and for each label of a multilabel task) to
``thumbnails/<site>/<file name>.png``, where the file name is :func:`thumbnail_name` of the identifier
the bundle's ``predictions.parquet`` holds (the keyed hash unless the protocol keeps case ids): that
identifier itself when it is a plain, short file name, else ``id-`` and the first 40 hex digits of its
SHA-256, so that a kept case id of any length or character never makes an unwritable (or escaping) file
name. A reviewer with only the bundle then sees the images without access to the site's files.

The image paths come from the site manifests, read at run time; no path or file name is written to the
bundle (a PNG made from an array carries no metadata). Images are decoded exactly as for scoring
(:func:`validate.scoring.inputs.read_case`: Pillow formats, ``.npy`` arrays, DICOM with its rescale and
VOI window), at full resolution and the protocol's channel count, then reduced to at most
:data:`THUMBNAIL_SIZE` pixels a side as 8-bit grey or RGB. 8-bit data are kept as they are; other data are
divided by the protocol's ``scale`` (so contrast differences between sites stay visible) unless that
leaves values outside 0..1, in which case each image is stretched from its minimum to its maximum.
A case whose image cannot be read simply has no thumbnail (scoring already recorded why).
"""
from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import numpy as np

THUMBNAIL_SIZE = 128
ERRORS_PER_SITE = 20
IMAGE_KINDS = ("image", "dicom", "array")
# a kept case id becomes a file name only when it is a plain one (no separators, no leading dot)
SAFE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
# longer identifiers are hashed: file systems refuse names over 255 bytes, and archives and some
# tools paths over 260 characters
MAX_NAME_LENGTH = 64


def thumbnail_name(case_name: str) -> str:
    """The file name (without ``.png``) of a case's thumbnail: ``case_name`` when it is a plain name of
    at most :data:`MAX_NAME_LENGTH` characters, else ``id-`` + the first 40 hex digits of the SHA-256 of
    its UTF-8 bytes (the dashboard looks thumbnails up by the same rule). The ``id-`` names are 43
    characters long, so they never collide with a plain name kept as it is."""
    name = str(case_name)
    if len(name) <= MAX_NAME_LENGTH and SAFE_NAME.match(name) and not (len(name) == 43 and name.startswith("id-")):
        return name
    return "id-" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def selected_cases(frame: Any, protocol: Any, per_site: int = ERRORS_PER_SITE) -> list[tuple[str, str]]:
    """``(site, case_id)`` of the cases the Cases page can show first, in ranking order, without repeats:
    the ``per_site`` most confident errors per site at each of the protocol's thresholds (binary,
    multilabel: for each label; multiclass: the top-label call)."""
    from validate.analysis.cases import confident_errors
    from validate.predictions import as_table

    task = protocol.task
    frame = as_table(frame, task=task, class_names=protocol.classes if task == "multiclass" else None,
                     label_names=protocol.labels if task == "multilabel" else None)  # read once, for every call
    thresholds = [0.5] if task == "multiclass" else [float(t) for t in (protocol.metrics.thresholds or [0.5])]
    labels = list(protocol.labels or []) if task == "multilabel" else [None]
    seen: dict[tuple[str, str], None] = {}
    for label in labels:
        for threshold in thresholds:
            top, _ = confident_errors(frame, task=task, classes=list(protocol.classes or []), label=label,
                                      threshold=threshold, per_site=per_site)
            for site, case in zip(top.get("site", []), top.get("case_id", [])):
                seen.setdefault((str(site), str(case)), None)
    return list(seen)


def image_paths(protocol: Any, sites: set[str]) -> dict[tuple[str, str], str]:
    """``(site, case_id) -> image path`` from the site manifests (resolved inside each image root).

    A site whose manifest cannot be read (e.g. a run from a predictions file on another machine) has no
    entry: it simply gets no thumbnails.
    """
    from validate.cohort import load_site_manifest
    from validate.errors import InputError

    paths: dict[tuple[str, str], str] = {}
    for site in protocol.sites:
        if site.id not in sites:
            continue
        try:
            cases = load_site_manifest(protocol, site).cases
        except (InputError, OSError):
            continue
        if "image_path" not in cases.columns:
            continue
        for case, path in zip(cases["case_id"].astype(str), cases["image_path"]):
            if path:
                paths.setdefault((site.id, case), str(path))
    return paths


def thumbnail_png(path: str | Path, spec: Any, scale: float, size: int = THUMBNAIL_SIZE) -> bytes:
    """One image as PNG bytes, 8-bit grey (1 channel) or RGB (3), at most ``size`` pixels a side.

    ``spec`` is a :class:`validate.scoring.inputs.Preprocessing`; its ``size`` is ignored (full
    resolution is read, then reduced with Pillow's antialiasing). Raises
    :class:`validate.scoring.inputs.CaseError` when the image cannot be read.
    """
    from dataclasses import replace

    from PIL import Image

    from validate.scoring.inputs import read_case

    arr = read_case(path, replace(spec, size=None))  # [C, H, W]
    pixels = to_uint8(np.moveaxis(arr, 0, -1), scale)
    img = Image.fromarray(pixels[:, :, 0] if pixels.shape[-1] == 1 else pixels)  # uint8: mode L or RGB
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def to_uint8(arr: np.ndarray, scale: float) -> np.ndarray:
    """``[H, W, C]`` raw values as 8-bit display values (rule in the module docstring)."""
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    x = np.asarray(arr, dtype=np.float64)
    finite = np.isfinite(x)
    if not finite.any():
        return np.zeros(x.shape, np.uint8)
    x = np.where(finite, x, 0.0)
    unit = x / scale if scale > 0 else x
    if unit.min() < -1e-6 or unit.max() > 1 + 1e-6:
        lo, hi = x.min(), x.max()
        unit = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    return np.clip(np.rint(unit * 255.0), 0, 255).astype(np.uint8)


def write_thumbnails(writer: Any, frame: Any, protocol: Any, name_of: Callable[[str], Optional[str]],
                     per_site: int = ERRORS_PER_SITE) -> dict[str, int]:
    """Write the thumbnails of :func:`selected_cases` into ``writer`` (a :class:`validate.bundle.BundleWriter`).

    ``frame`` holds the original case ids (before pseudonymisation); ``name_of(case_id)`` gives the
    identifier the bundle stores (None: no thumbnail). Returns counts ``written`` and ``unreadable``.
    Does nothing for tabular protocols.
    """
    counts = {"written": 0, "unreadable": 0}
    if protocol.input.kind not in IMAGE_KINDS or frame is None or len(frame) == 0:
        return counts
    cases = selected_cases(frame, protocol, per_site=per_site)
    if not cases:
        return counts
    from validate.bundle import THUMBNAIL_DIR
    from validate.scoring.inputs import CaseError, Preprocessing

    spec = Preprocessing.from_protocol(protocol.input)
    paths = image_paths(protocol, {site for site, _ in cases})
    for site, case in cases:
        path = paths.get((site, case))
        name = name_of(case)
        if path is None or not name:
            continue
        try:
            png = thumbnail_png(path, spec, scale=spec.scale)
        except (CaseError, OSError, ValueError):
            counts["unreadable"] += 1
            continue
        writer.write_bytes(f"{THUMBNAIL_DIR}/{site}/{thumbnail_name(name)}.png", png)
        counts["written"] += 1
    return counts
