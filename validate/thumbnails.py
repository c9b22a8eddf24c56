"""Images for display: the one decoder of a case's image into a PNG, and the bundle's thumbnails.

:func:`thumbnail_png` is the only way an image file becomes a picture anywhere in this suite: ``validate
run`` uses it to store the bundle's thumbnails, and the dashboard uses it for the images it shows (a
bundle's own thumbnails, or a site's image named by the predictions). It reads through the scoring
reader (:func:`validate.scoring.inputs.read_case`: Pillow formats, ``.npy`` arrays, DICOM with its
modality rescale, VOI window or LUT, MONOCHROME1 inversion and PALETTE COLOR lookup), so a case looks
the same in the dashboard, in the bundle and to the model. It applies the same guards as scoring: the
file must lie inside one of the given roots (symbolic links resolved), and images above
:data:`validate.scoring.inputs.MAX_IMAGE_PIXELS` are refused before they are decoded (arrays too).

Display values: the image is read at full resolution and the protocol's channel count, then reduced to
at most :data:`THUMBNAIL_SIZE` pixels a side as 8-bit grey or RGB (Pillow's LANCZOS). 8-bit data are kept
as they are; other data are divided by the protocol's ``scale`` (so contrast differences between sites
stay visible) unless that leaves values outside 0..1, in which case each image is stretched from its
minimum to its maximum (:func:`to_uint8`). The dashboard may enlarge a small image by a whole factor
(nearest neighbour), so that each pixel is a visible block and no value changes.

For image-input protocols (``input.kind`` image, dicom or array) ``validate run`` writes, per site, a
PNG of each of the cases the Cases page ranks first (:func:`validate.analysis.cases.confident_errors`,
``per_site`` of them at each operating threshold, and for each label of a multilabel task) to
``thumbnails/<site>/<file name>.png``, where the file name is :func:`thumbnail_name` of the identifier
the bundle's ``predictions.parquet`` holds (the keyed hash unless the protocol keeps case ids): that
identifier itself when it is a plain, short file name, else ``id-`` and the first 40 hex digits of its
SHA-256, so that a kept case id of any length or character never makes an unwritable (or escaping) file
name. A reviewer with only the bundle then sees the images without access to the site's files. The
same ranking, with each case's thumbnail name, is stored in ``cases.json`` (:func:`write_cases`).

The image paths come from the site manifests, read at run time; no path or file name is written to the
bundle (a PNG made from an array carries no metadata). A case whose image cannot be read simply has no
thumbnail (scoring already recorded why).
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

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
    multilabel: for each label; multiclass: the top-label call), as ``cases.json`` lists them."""
    from validate.analysis.cases import ranking_settings, rankings

    settings = {**ranking_settings(protocol), "attributes": (), "image_column": ""}
    seen: dict[tuple[str, str], None] = {}
    for _, _, top, _ in rankings(frame, **settings, per_site=per_site):
        for site, case in zip(top.get("site", []), top.get("case_id", []), strict=True):
            seen.setdefault((str(site), str(case)), None)
    return list(seen)


def image_paths(protocol: Any, sites: set[str]) -> tuple[dict[tuple[str, str], str], dict[str, Path]]:
    """``(site, case_id) -> image path`` from the site manifests (resolved inside each image root), and
    each of those sites' image root (resolved), which confines :func:`thumbnail_png`.

    A site whose manifest cannot be read (e.g. a run from a predictions file on another machine) has no
    entry: it simply gets no thumbnails.
    """
    from validate.cohort import load_site_manifest
    from validate.errors import InputError

    paths: dict[tuple[str, str], str] = {}
    roots: dict[str, Path] = {}
    for site in protocol.sites:
        if site.id not in sites or not site.image_root:
            continue
        try:
            cases = load_site_manifest(protocol, site).cases
        except (InputError, OSError):
            continue
        if "image_path" not in cases.columns:
            continue
        roots[site.id] = Path(protocol.resolve(site.image_root)).resolve()
        for case, path in zip(cases["case_id"].astype(str), cases["image_path"], strict=True):
            if path:
                paths.setdefault((site.id, case), str(path))
    return paths, roots


def display_spec(input_block: Any) -> Any:
    """The :class:`validate.scoring.inputs.Preprocessing` of a protocol's ``input`` block: a loaded
    protocol's ``input``, or the mapping of a bundle's ``protocol.yaml`` copy (read with the protocol's
    own model, so defaults such as ``scale`` are the ones the run used). Raises ``ValueError`` for a
    block the protocol model refuses."""
    from validate.protocol import InputSpec
    from validate.scoring.inputs import Preprocessing

    spec = input_block if isinstance(input_block, InputSpec) else InputSpec.model_validate(input_block)
    return Preprocessing.from_protocol(spec)


def confined(path: str | Path, roots: Iterable[str | Path]) -> Path:
    """``path`` resolved (symbolic links followed), when it lies inside one of ``roots`` (resolved);
    else :class:`validate.scoring.inputs.CaseError`. Scoring holds manifest paths to the same rule
    (:func:`validate.cohort.load_site_manifest`)."""
    from validate.scoring.inputs import CaseError

    resolved = Path(path).resolve()
    for root in roots:
        try:
            resolved.relative_to(Path(root).resolve())
            return resolved
        except ValueError:
            continue
    raise CaseError("image path lies outside its image root")


def _check_array_size(path: Path) -> None:
    """A ``.npy`` array's declared size against the pixel limit, from its header alone (scoring reads
    arrays whole; a picture of one is not worth a large allocation)."""
    from validate.scoring.inputs import ARRAY_SUFFIXES, MAX_IMAGE_PIXELS, CaseError

    if path.suffix.lower() not in ARRAY_SUFFIXES:
        return
    fmt = np.lib.format
    try:
        with open(path, "rb") as fh:
            version = fmt.read_magic(fh)
            read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape = tuple(int(d) for d in read_header(fh)[0])
    except Exception:  # not an array (or a header we cannot read): read_case says why
        return
    height_width = sorted(shape)[-2:]  # the channel axis, when there is one, is the smallest
    if float(np.prod(height_width, dtype=np.float64)) > MAX_IMAGE_PIXELS:
        raise CaseError(
            f"array of shape {shape} is above the {MAX_IMAGE_PIXELS} pixel limit (decompression bomb guard)"
        )


def thumbnail_png(
    path: str | Path, spec: Any, *, roots: Iterable[str | Path], size: int = THUMBNAIL_SIZE, enlarge_to: int = 0
) -> bytes:
    """One image file as PNG bytes, 8-bit grey (1 channel) or RGB (3), at most ``size`` pixels a side:
    the one display decoder (module docstring).

    ``spec`` is a :class:`validate.scoring.inputs.Preprocessing` (:func:`display_spec`); its ``size``
    is ignored (full resolution is read, then reduced with Pillow's antialiasing). ``roots``: the
    folders the file must lie in. ``enlarge_to``: an image smaller than this is enlarged by the largest
    whole factor that keeps it within ``enlarge_to`` (nearest neighbour: every value kept). Raises
    :class:`validate.scoring.inputs.CaseError` when the image cannot be read or is refused.
    """
    from dataclasses import replace

    from PIL import Image

    from validate.scoring.inputs import read_case

    file = confined(path, roots)
    _check_array_size(file)
    arr = read_case(file, replace(spec, size=None))  # [C, H, W]
    pixels = to_uint8(np.moveaxis(arr, 0, -1), spec.scale)
    img = Image.fromarray(pixels[:, :, 0] if pixels.shape[-1] == 1 else pixels)  # uint8: mode L or RGB
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    factor = enlarge_to // max(img.size) if enlarge_to else 0
    if factor >= 2:
        img = img.resize((img.size[0] * factor, img.size[1] * factor), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def picture_spec(spec: Any = None) -> Any:
    """How to read a PNG :func:`thumbnail_png` wrote (8-bit grey or RGB), whatever the protocol's input
    kind: ``spec`` with kind ``image`` (its channel count kept), or RGB when there is no ``spec``."""
    from dataclasses import replace

    from validate.scoring.inputs import Preprocessing

    return replace(spec if spec is not None else Preprocessing(kind="image", channels=3, scale=255.0), kind="image")


def thumbnail_png_or_none(
    path: str | Path, spec: Any, *, roots: Iterable[str | Path], size: int = THUMBNAIL_SIZE, enlarge_to: int = 0
) -> bytes | None:
    """:func:`thumbnail_png`, or ``None`` when the image cannot be read or is refused (a presentation
    shows no picture rather than failing)."""
    from validate.scoring.inputs import CaseError

    try:
        return thumbnail_png(path, spec, roots=roots, size=size, enlarge_to=enlarge_to)
    except (CaseError, OSError, ValueError):
        return None


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


def write_thumbnails(
    writer: Any, frame: Any, protocol: Any, name_of: Callable[[str], str | None], per_site: int = ERRORS_PER_SITE
) -> dict[tuple[str, str], str]:
    """Write the thumbnails of :func:`selected_cases` into ``writer`` (a :class:`validate.bundle.BundleWriter`).

    ``frame`` holds the original case ids (before pseudonymisation); ``name_of(case_id)`` gives the
    identifier the bundle stores (None: no thumbnail). Returns ``(site, stored identifier) -> file
    name`` (:func:`thumbnail_name`, without ``.png``) of each thumbnail written. Does nothing for
    tabular protocols.
    """
    if protocol.input.kind not in IMAGE_KINDS or frame is None or len(frame) == 0:
        return {}
    return write_case_thumbnails(writer, selected_cases(frame, protocol, per_site=per_site), protocol, name_of)


def write_case_thumbnails(
    writer: Any, cases: Iterable[tuple[str, str]], protocol: Any, name_of: Callable[[str], str | None]
) -> dict[tuple[str, str], str]:
    """Write the thumbnails of the given ``(site, original case id)`` pairs into ``writer`` (e.g. a
    segmentation run's worst cases, drawn under their outlines by the report and the dashboard). The
    images come from the site manifests' paths, confined to each site's image root; a case whose image
    cannot be read gets none. Returns ``(site, stored identifier) -> file name`` as
    :func:`write_thumbnails`. Does nothing for tabular protocols."""
    cases = list(cases)
    written: dict[tuple[str, str], str] = {}
    if protocol.input.kind not in IMAGE_KINDS or not cases:
        return written
    from validate.bundle import THUMBNAIL_DIR
    from validate.scoring.inputs import CaseError

    spec = display_spec(protocol.input)
    paths, roots = image_paths(protocol, {site for site, _ in cases})
    for site, case in cases:
        path = paths.get((site, case))
        name = name_of(case)
        if path is None or not name:
            continue
        try:
            png = thumbnail_png(path, spec, roots=[roots[site]])
        except (CaseError, OSError, ValueError):
            continue
        written[(site, name)] = thumbnail_name(name)
        writer.write_bytes(f"{THUMBNAIL_DIR}/{site}/{written[(site, name)]}.png", png)
    return written


def write_cases(
    writer: Any, frame: Any, protocol: Any, name_of: Callable[[str], str | None], per_site: int = ERRORS_PER_SITE
) -> None:
    """Write the Cases page's data: the thumbnails (image protocols) and ``cases.json``
    (:func:`validate.analysis.cases.cases_file`: the ranked confident errors per site, each with the
    name of its thumbnail when one was written)."""
    from validate.analysis.cases import cases_file, ranking_settings

    written = write_thumbnails(writer, frame, protocol, name_of, per_site=per_site)
    writer.write_json(
        "cases.json",
        cases_file(frame, **ranking_settings(protocol), per_site=per_site, name_of=name_of, thumbnails=written),
    )
