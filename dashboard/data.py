"""Finding, opening and caching results bundles: the only part of the dashboard that reads files.

Confinement: the dashboard reads files under RUNS_DIR and, for case thumbnails, under the image
roots named by a bundle's protocol copy, and nothing else. Bundles are only ever chosen from the
folders :func:`discover_runs` lists, and every other path (thumbnails, images named in the
predictions) is resolved, symlinks followed, and checked against those roots before it is opened.

Caching: loaders are keyed by the bundle's *identity*, its resolved path plus the size and
modification time of each of its JSON files, so a rerun written into the same folder is picked up
while an unchanged bundle is read from disk once. The pages need only the small JSON files (the Cases
page lists the ranking ``validate run`` stored in ``cases.json``).

Images: every picture is made by :func:`validate.thumbnails.thumbnail_png`, the decoder ``validate run``
stores the bundle's thumbnails with, reading through scoring's reader (DICOM rescale, window, palette
and MONOCHROME1 handled as the model saw them) with its confinement and size guards.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import streamlit as st
import yaml

from validate.bundle import JSON_FILES, THUMBNAIL_DIR, Bundle, read_bundle
from validate.errors import InputError
from validate.thumbnails import THUMBNAIL_SIZE

BUNDLE_MARKERS = ("provenance.json", "metrics.json")
RUNS_ENV = "VALIDATE_DASHBOARD_RUNS"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".npy", ".dcm")


# ---- where the runs are --------------------------------------------------------------------------


def runs_dir_from_argv(argv: list[str] | None = None, environ: dict | None = None) -> Path:
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
    for name in (*JSON_FILES, "sites.json", "comparison.json", "fairness.json", "failures.csv"):
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
    calibration: dict | None = None
    gates: dict | None = None
    subgroups: dict | None = None
    curves: dict | None = None
    shift: dict | None = None
    cohorts: dict | None = None  # sites.json: per-site make-up and exclusions
    comparison: dict | None = None  # comparison.json: the paired comparison with a baseline model
    cases: dict | None = None  # cases.json: the most confident errors per site, ranked at run time
    fairness: dict | None = None  # fairness.json: group fairness measures (binary tasks with subgroups)
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
    def site_colors(self) -> dict[str, str]:
        """The one site → colour map of this run (:func:`validate.charts.site_colors` in the bundle's
        site order, :func:`validate.view.site_order`): the report builds the same one."""
        from validate import charts, view

        return charts.site_colors(view.site_order(list((self.cohorts or {}).get("sites") or {}), self.sites))

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


def _optional_json(path: Path) -> dict | None:
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
        path=str(root),
        name=root.name,
        identity=identity,
        provenance=provenance or {},
        metrics=bundle.metrics or {},
        protocol=_read_protocol_copy(root / "protocol.yaml"),
        calibration=bundle.calibration,
        gates=bundle.gates,
        subgroups=bundle.subgroups,
        curves=bundle.curves,
        shift=bundle.shift,
        cohorts=bundle.sites,
        comparison=bundle.comparison,
        cases=bundle.cases,
        fairness=bundle.fairness,
        failures=bundle.failures,
        has_report=(root / "report.html").is_file(),
        has_predictions=(root / "predictions.parquet").is_file(),
    )


def load_run(path: str | Path, runs_dir: str | Path) -> Run:
    """The bundle at ``path`` (which must lie in ``runs_dir``), cached by its identity.

    Raises :class:`InputError` for a folder outside RUNS_DIR or an incomplete bundle.
    """
    path = Path(path).resolve()
    if not within(path, [runs_dir]):
        raise InputError(
            "the dashboard only opens bundles inside its runs folder",
            file=path,
            expected=f"a folder under {Path(runs_dir).resolve()}",
        )
    return _load_run(str(path), bundle_identity(path))


@st.cache_data(show_spinner=False, max_entries=4)
def _read_predictions(path: str, identity: str) -> pd.DataFrame:
    return pd.read_parquet(Path(path) / "predictions.parquet")


def load_predictions(run: Run) -> pd.DataFrame:
    """``predictions.parquet`` of ``run`` (cached by identity). Only the Cases page needs it."""
    return _read_predictions(run.path, run.identity)


@st.cache_data(show_spinner="Matching the two runs' cases…", max_entries=8)
def _shared_cases(new_path: str, new_identity: str, base_path: str, base_identity: str) -> int:
    from dashboard.compare import shared_case_count

    def keys(path: str) -> pd.DataFrame:
        return pd.read_parquet(Path(path) / "predictions.parquet", columns=["site", "case_id"])

    return shared_case_count(keys(new_path), keys(base_path))


def shared_cases(new: Run, base: Run) -> int:
    """How many (site, case id) pairs both runs' predictions hold, reading only those two columns (a
    count cached per pair of bundles: the Compare page of two 10-million-case runs reads them once)."""
    return _shared_cases(new.path, new.identity, base.path, base.identity)


def report_bytes(run: Run) -> bytes:
    """The bundle's ``report.html`` (read on demand: the download button calls this on click)."""
    return (Path(run.path) / "report.html").read_bytes()


@st.cache_data(show_spinner="Pairing the two runs' cases…", max_entries=8)
def _paired_comparison(
    new_path: str, new_identity: str, base_path: str, base_identity: str, new_label: str, base_label: str
) -> dict:
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


def image_spec(run: Run):
    """How the run read its images (:func:`validate.thumbnails.display_spec` of the protocol copy's
    ``input``), or ``None`` when the copy has no readable ``input`` block (then no site image is shown)."""
    from pydantic import ValidationError

    from validate.thumbnails import display_spec

    block = run.protocol.get("input")
    if not isinstance(block, dict):
        return None
    try:
        return display_spec(block)
    except (ValidationError, ValueError, TypeError):
        return None


def thumbnail(
    run: Run, site: str, case_id: str, image: str | None, name: str | None = None, size: int = THUMBNAIL_SIZE
) -> bytes | None:
    """A PNG of one case, or ``None``, made by :func:`validate.thumbnails.thumbnail_png` (the scoring
    reader, its confinement and size guards), enlarged to about ``size`` pixels when small.

    Looked up, in order: the bundle's ``thumbnails/<site>/<name>.png`` (``name`` as ``cases.json``
    gives it, else :func:`validate.thumbnails.thumbnail_name` of ``case_id``: a bundle may carry its own
    thumbnails so it can be reviewed without the images), then ``image`` (the path recorded in the
    predictions) under the site's image root, decoded as the run decoded it. Paths escaping the
    bundle's thumbnail folder or the image root are refused.
    """
    from validate.thumbnails import picture_spec, thumbnail_name, thumbnail_png_or_none

    spec = image_spec(run)
    own_dir = Path(run.path) / THUMBNAIL_DIR / str(site)
    own = name or thumbnail_name(case_id)  # the file name validate run gave it
    candidates = [(own_dir / f"{own}.png", own_dir, picture_spec(spec))]
    root = image_roots(run).get(str(site))
    if root is not None and spec is not None and image and isinstance(image, str):
        candidates.append((root / image, root, spec))
    for path, folder, how in candidates:
        try:
            usable = path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
        except OSError:  # e.g. a kept case id longer than a file name may be
            usable = False
        png = thumbnail_png_or_none(path, how, roots=[folder], size=size, enlarge_to=size) if usable else None
        if png is not None:
            return png
    return None


# ---- the Cases page: the ranking validate run stored ----------------------------------------------


def case_rankings(run: Run) -> list[dict]:
    """The rankings of ``cases.json`` (label, threshold, per site: cases, errors, top errors)."""
    return list((run.cases or {}).get("rankings") or [])


def confident_errors(
    run: Run, *, label: str | None = None, threshold: float | None = 0.5, per_site: int | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The stored ranking (``cases.json``) of ``label`` at ``threshold`` (multiclass: the one ranking),
    as two frames: the errors (``site``, ``case_id``, ``true``, ``called``, ``confidence``, ``p``, ``image``,
    ``thumbnail``, then the attributes), at most ``per_site`` per site in stored order, and per site
    ``site``, ``cases``, ``errors``. Empty frames when the bundle has no such ranking. Nothing is
    re-ranked: a smaller ``per_site`` keeps the first rows of each site."""
    ranking = next(
        (
            r
            for r in case_rankings(run)
            if r.get("label") == label
            and (
                r.get("threshold") is None or threshold is None or math.isclose(float(r["threshold"]), float(threshold))
            )
        ),
        None,
    )
    if ranking is None:
        return pd.DataFrame(), pd.DataFrame()
    attributes = list((run.cases or {}).get("attributes") or [])
    rows, counts = [], []
    for site, entry in (ranking.get("sites") or {}).items():
        counts.append({"site": site, "cases": entry.get("cases"), "errors": entry.get("errors")})
        for case in (entry.get("top") or [])[:per_site]:
            row = {"site": site, **{k: case.get(k) for k in ("case_id", "true", "called", "confidence")}}
            for k in ("p", "image", "thumbnail"):
                if case.get(k) is not None:
                    row[k] = case[k]
            row.update({a: (case.get("attributes") or {}).get(a) for a in attributes})
            rows.append(row)
    return pd.DataFrame(rows), pd.DataFrame(counts, columns=["site", "cases", "errors"])
