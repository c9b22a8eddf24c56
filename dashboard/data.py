"""Finding, opening and caching results bundles: the only part of the dashboard that reads files.

Confinement: the dashboard reads files under RUNS_DIR and, for case thumbnails, under the image
roots named by a bundle's protocol copy, and nothing else. Bundles are only ever chosen from the
folders :func:`discover_runs` lists, and every other path (thumbnails, images named in the
predictions) is resolved, symlinks followed, and checked against those roots before it is opened.

Caching: loaders are keyed by the bundle's *identity*, its resolved path plus the size and
modification time of each of its JSON files, so a rerun written into the same folder is picked up
while an unchanged bundle is read from disk once. The Overview needs only the small JSON files;
``predictions.parquet`` is read only by the pages that show cases.
"""
from __future__ import annotations

import io
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd
import streamlit as st
import yaml

from validate.bundle import JSON_FILES, THUMBNAIL_DIR, Bundle, read_bundle
from validate.errors import InputError

BUNDLE_MARKERS = ("provenance.json", "metrics.json")
RUNS_ENV = "VALIDATE_DASHBOARD_RUNS"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".npy", ".dcm")


# ---- where the runs are --------------------------------------------------------------------------

def runs_dir_from_argv(argv: Optional[list[str]] = None, environ: Optional[dict] = None) -> Path:
    """RUNS_DIR: the argument after ``--`` of ``streamlit run dashboard/app.py -- RUNS_DIR``; else the
    environment variable ``VALIDATE_DASHBOARD_RUNS`` (how tests and ``validate dashboard`` pass it
    too); else ``runs``. Arguments only count when this process was started on ``app.py`` (under
    pytest, ``sys.argv`` belongs to pytest)."""
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    if argv and Path(argv[0]).name == "app.py" and len(argv) > 1 and argv[1].strip():
        return Path(argv[1]).expanduser()
    if environ.get(RUNS_ENV):
        return Path(environ[RUNS_ENV]).expanduser()
    return Path("runs")


def is_bundle(folder: Path) -> bool:
    """A bundle is a folder holding ``provenance.json`` or ``metrics.json``."""
    return folder.is_dir() and any((folder / m).is_file() for m in BUNDLE_MARKERS)


def discover_runs(runs_dir: str | Path) -> list[Path]:
    """Bundles in ``runs_dir``: the folder itself if it is one, and each direct sub-folder that is one.

    Hidden folders are skipped (``validate run`` stages a bundle in ``.<name>.partial-*`` and renames
    it when complete). Newest first, by the modification time of the bundle's marker file.
    """
    root = Path(runs_dir).resolve()
    if not root.is_dir():
        return []
    found = [root] if is_bundle(root) else []
    try:
        children = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    except OSError:
        children = []
    found += [p.resolve() for p in children if is_bundle(p) and within(p.resolve(), [root])]

    def stamp(p: Path) -> float:
        return max((p / m).stat().st_mtime for m in BUNDLE_MARKERS if (p / m).is_file())

    return sorted(found, key=lambda p: (-stamp(p), p.name))


def within(path: Path, roots) -> bool:
    """Whether the resolved ``path`` lies inside one of the resolved ``roots``."""
    path = Path(path).resolve()
    for root in roots:
        try:
            path.relative_to(Path(root).resolve())
            return True
        except ValueError:
            continue
    return False


def bundle_identity(path: str | Path) -> str:
    """Resolved path plus size and mtime of every JSON file of the bundle (the cache key)."""
    path = Path(path).resolve()
    parts = [str(path)]
    for name in (*JSON_FILES, "sites.json", "comparison.json", "failures.csv"):
        f = path / name
        try:
            s = f.stat()
            parts.append(f"{name}:{s.st_size}:{s.st_mtime_ns}")
        except OSError:
            parts.append(f"{name}:-")
    return "|".join(parts)


# ---- a loaded run --------------------------------------------------------------------------------

@dataclass
class Run:
    """The small parts of one bundle, as the pages need them (all plain data, cache-friendly)."""

    path: str
    name: str
    identity: str
    provenance: dict
    metrics: dict
    protocol: dict
    calibration: Optional[dict] = None
    gates: Optional[dict] = None
    subgroups: Optional[dict] = None
    curves: Optional[dict] = None
    shift: Optional[dict] = None
    cohorts: Optional[dict] = None  # sites.json: per-site make-up and exclusions
    comparison: Optional[dict] = None  # comparison.json: the paired comparison with a baseline model
    failures: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["site", "case_id", "reason"]))
    has_report: bool = False
    has_predictions: bool = False

    @property
    def task(self) -> str:
        return self.metrics.get("task") or self.protocol.get("task") or "binary"

    @property
    def sites(self) -> list[str]:
        return list((self.metrics.get("sites") or {}).keys())

    @property
    def title(self) -> str:
        p = self.provenance.get("protocol") or {}
        name = p.get("name") or self.protocol.get("name") or self.name
        version = p.get("version") or self.protocol.get("version")
        return f"{name} v{version}" if version else str(name)

    def site_info(self, site: str) -> dict:
        for s in self.protocol.get("sites") or []:
            if isinstance(s, dict) and str(s.get("id")) == site:
                return s
        return {}

    def site_role(self, site: str) -> str:
        return str(self.site_info(site).get("role") or "")

    def site_name(self, site: str) -> str:
        return str(self.site_info(site).get("name") or "")

    @property
    def development_sites(self) -> list[str]:
        return [s for s in self.sites if self.site_role(s) == "development"]

    @property
    def ci_level(self) -> float:
        return float(self.metrics.get("ci_level") or 0.95)


def _read_protocol_copy(path: Path) -> dict:
    # the copy is shown, not re-validated: its relative paths point next to the original file
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _optional_json(path: Path) -> Optional[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@st.cache_data(show_spinner=False, max_entries=32)
def _load_run(path: str, identity: str) -> Run:
    root = Path(path)
    if not (root / "metrics.json").is_file():
        read_bundle(root)  # raises the InputError naming what is missing
    # a folder holding only some parts (e.g. `validate metrics --json` output) still opens: what is
    # absent is absent from the pages, each of which says so
    bundle = Bundle(path=root)
    provenance = bundle.provenance if (root / "provenance.json").is_file() else {}
    return Run(
        path=str(root), name=root.name, identity=identity,
        provenance=provenance or {}, metrics=bundle.metrics or {},
        protocol=_read_protocol_copy(root / "protocol.yaml"),
        calibration=bundle.calibration, gates=bundle.gates, subgroups=bundle.subgroups,
        curves=bundle.curves, shift=bundle.shift, cohorts=bundle.sites, comparison=bundle.comparison,
        failures=bundle.failures,
        has_report=(root / "report.html").is_file(), has_predictions=(root / "predictions.parquet").is_file())


def load_run(path: str | Path, runs_dir: str | Path) -> Run:
    """The bundle at ``path`` (which must lie in ``runs_dir``), cached by its identity.

    Raises :class:`InputError` for a folder outside RUNS_DIR or an incomplete bundle.
    """
    path = Path(path).resolve()
    if not within(path, [runs_dir]):
        raise InputError("the dashboard only opens bundles inside its runs folder", file=path,
                         expected=f"a folder under {Path(runs_dir).resolve()}")
    return _load_run(str(path), bundle_identity(path))


@st.cache_data(show_spinner=False, max_entries=4)
def _read_predictions(path: str, identity: str) -> pd.DataFrame:
    return pd.read_parquet(Path(path) / "predictions.parquet")


def load_predictions(run: Run) -> pd.DataFrame:
    """``predictions.parquet`` of ``run`` (cached by identity). Only the Cases page needs it."""
    return _read_predictions(run.path, run.identity)


def report_bytes(run: Run) -> bytes:
    """The bundle's ``report.html`` (read on demand: the download button calls this on click)."""
    return (Path(run.path) / "report.html").read_bytes()


@st.cache_data(show_spinner="Pairing the two runs' cases…", max_entries=8)
def _paired_comparison(new_path: str, new_identity: str, base_path: str, base_identity: str,
                       new_label: str, base_label: str) -> dict:
    from validate import compare_bundles

    return compare_bundles(new_path, base_path, new_label=new_label, baseline_label=base_label)


def paired_comparison(new: Run, base: Run) -> dict:
    """:func:`validate.compare_bundles` of two runs (a ``comparison.json`` dict), cached by both identities.

    Raises :class:`InputError` when the library refuses to pair them."""
    return _paired_comparison(new.path, new.identity, base.path, base.identity, new.name, base.name)


# ---- images for the Cases page -------------------------------------------------------------------

def image_roots(run: Run) -> dict[str, Path]:
    """Per site, the existing image folder named by the protocol copy's ``image_root``.

    A relative ``image_root`` is relative to the protocol file that ran: the original's folder (from
    ``provenance.json``), else the bundle folder (where the copy lies).
    """
    prov_path = ((run.provenance.get("protocol") or {}).get("path")) or ""
    bases = []
    if prov_path and Path(prov_path).is_absolute():
        bases.append(Path(prov_path).parent)
    bases.append(Path(run.path))
    roots = {}
    for site in run.protocol.get("sites") or []:
        if not isinstance(site, dict) or not site.get("image_root"):
            continue
        raw = Path(str(site["image_root"])).expanduser()
        candidates = [raw] if raw.is_absolute() else [b / raw for b in bases]
        for c in candidates:
            if c.is_dir():
                roots[str(site.get("id"))] = c.resolve()
                break
    return roots


def has_thumbnails(run: Run, site: str) -> bool:
    """Whether the bundle carries its own thumbnails for ``site`` (``thumbnails/<site>/``)."""
    folder = Path(run.path) / THUMBNAIL_DIR / str(site)
    return folder.is_dir() and within(folder, [run.path])


def thumbnail(run: Run, site: str, case_id: str, image: Optional[str], size: int = 96) -> Optional[bytes]:
    """A PNG thumbnail of one case, or ``None``.

    Looked up, in order: the bundle's ``thumbnails/<site>/<thumbnail_name(case_id)>.png`` (a bundle may carry its own
    thumbnails so it can be reviewed without the images), then ``image`` (the path recorded in the
    predictions) under the site's image root. Paths escaping the bundle or the image root are refused.
    """
    candidates: list[tuple[Path, list[Path]]] = []
    bundle = Path(run.path)
    own_dir = bundle / THUMBNAIL_DIR / str(site)
    from validate.thumbnails import thumbnail_name  # the file name validate run gave it

    candidates.append((own_dir / f"{thumbnail_name(case_id)}.png", [own_dir]))
    root = image_roots(run).get(str(site))
    if root is not None and image and isinstance(image, str):
        candidates.append((root / image, [root]))
    for path, roots in candidates:
        try:
            usable = within(path, roots) and path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
        except OSError:  # e.g. a kept case id longer than a file name may be
            usable = False
        if not usable:
            continue
        try:
            return _thumbnail_png(path, size)
        except Exception:  # an unreadable image must not break the page: no thumbnail instead
            continue
    return None


def _thumbnail_png(path: Path, size: int) -> bytes:
    import numpy as np
    from PIL import Image

    suffix = path.suffix.lower()
    if suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
        img = Image.fromarray(_to_uint8(arr))
    elif suffix == ".dcm":
        import pydicom

        arr = pydicom.dcmread(str(path)).pixel_array
        img = Image.fromarray(_to_uint8(arr))
    else:
        img = Image.open(path)
        img.load()
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    img.thumbnail((size, size))
    if max(img.size) < size:  # small images (28x28) are enlarged without smoothing, so pixels stay visible
        scale = size / max(img.size)
        img = img.resize((max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale))),
                         Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _to_uint8(arr):
    import numpy as np

    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    lo, hi = np.nanmin(arr), np.nanmax(arr)
    scaled = np.zeros_like(arr) if not math.isfinite(hi - lo) or hi <= lo else (arr - lo) / (hi - lo) * 255.0
    return scaled.astype(np.uint8)


@st.cache_data(show_spinner="Reading predictions…", max_entries=8)
def _confident_errors(path: str, identity: str, task: str, classes: tuple, label: Optional[str],
                      threshold: float, per_site: int, attributes: tuple, image_column: str):
    from dashboard import cases

    pred = _read_predictions(path, identity)
    return cases.confident_errors(pred, task=task, classes=classes, label=label, threshold=threshold,
                                  per_site=per_site, attributes=cases.attribute_columns(pred, attributes),
                                  image_column=image_column)


def confident_errors(run: Run, *, label: Optional[str] = None, threshold: float = 0.5, per_site: int = 10):
    """:func:`validate.analysis.cases.confident_errors` on the run's predictions (cached by identity)."""
    image_column = str((run.protocol.get("columns") or {}).get("image") or "image")
    return _confident_errors(run.path, run.identity, run.task, tuple(run.protocol.get("classes") or ()), label,
                             float(threshold), int(per_site), tuple(run.protocol.get("attributes") or ()),
                             image_column)
