"""The results bundle: one folder per run, the contract between the engine and every presentation.

Files (DESIGN.md): ``provenance.json``, ``protocol.yaml``, ``predictions.parquet``, ``metrics.json``,
``calibration.json``, ``shift.json``, ``gates.json``, ``report.html``, ``junit.xml``, ``failures.csv``.
Extra files written here: ``subgroups.json`` (site x subgroup analysis), ``curves.json`` (ROC points,
reliability bins, histograms: computed once so the report and the dashboard never recompute),
``sites.json`` (cohort per site: n, prevalence, subgroup make-up, exclusions by reason),
``cases.json`` (the most confident errors per site, ranked at run time, for the dashboard's Cases page),
``gates.md`` (the Markdown gate summary) and, for image protocols, ``thumbnails/<site>/<case id>.png``
(the most confident errors per site, named by the identifier ``predictions.parquet`` holds; see
:mod:`validate.thumbnails`). ``report.pdf`` (:mod:`validate.report.pdf`) is there when the protocol asks
(``report: {pdf: true}``) or ``validate report --pdf`` added it; like ``report.html`` it is a rendering
of the other files, so provenance's ``files`` hashes do not list it and adding it changes no other file.

Atomicity: a bundle is assembled in a hidden staging folder beside its target and renamed into place
when complete (each file is itself written to a temporary name and renamed), so a killed run never
leaves a folder that looks like a whole bundle. A bundle being replaced is moved aside first and
removed after the new one is in place.

What a run may replace (:func:`target_problem`): nothing the user owns is deleted. The target may be a
path that does not exist, an empty folder, or a bundle this suite wrote: a folder whose
``provenance.json`` is a JSON object carrying ``"bundle_format": "validate-results-bundle/1"`` (bundles
of earlier versions: ``validate_version``, ``software`` and ``files``) and which holds nothing but
bundle files (:data:`BUNDLE_FILES`, ``thumbnails/<site>/*.png``, and the hidden temporary files of an
interrupted write). Anything else (a file, a folder holding anything else, a mount point, a folder
inside a bundle) is refused before any work starts, and checked again just before the rename.

Staging folders (``.<name>.partial-<8 hex>``) hold a marker file, ``.validate-staging``, that the
writing process keeps locked (``flock``) while it runs. The lock dies with the process, even on
``kill -9``, so the next writer into the same parent removes a staging folder whose marker it can lock
(an abandoned one) and leaves one whose writer is still running; a hidden folder without our marker is
never touched.

Case identifiers: a manifest's ``case_id`` and ``patient_id`` may be patient identifiers, so unless the
protocol sets ``keep_case_ids: true`` both are replaced in ``predictions.parquet`` and
``failures.csv`` by a keyed hash, HMAC-SHA256(key, id), first 20 hex digits. The key is a secret the
bundle never holds: the environment variable ``VALIDATE_CASE_ID_KEY`` when set (a site that wants to
pair the cases of two runs, e.g. model v1 against v2, keeps one key), otherwise 32 random bytes drawn
for the run and discarded. A hash made with a key derived from public data (such as the protocol's
sha256) could be reversed by hashing every plausible identifier (medical record numbers are short),
so no such key is used. Reproducibility does not depend on the key: ``metrics.json``,
``calibration.json``, ``subgroups.json``, ``curves.json`` and ``gates.json`` hold no case identifiers at all
and are computed from the original table before pseudonymisation; they are byte-identical across reruns.
Hashing keeps equal identifiers equal within a run, so clusters (patients) stay intact.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import hmac
import json
import os
import platform
import re
import secrets
import shutil
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from validate.errors import InputError, RunIncomplete
from validate.io import (
    PRIVATE_MODE,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    current_umask,
    sha256_file,
    shared_mode,
    to_json_text,
)

REQUIRED_FILES = (
    "provenance.json",
    "protocol.yaml",
    "predictions.parquet",
    "metrics.json",
    "calibration.json",
    "gates.json",
)
JSON_FILES = (
    "provenance.json",
    "metrics.json",
    "calibration.json",
    "shift.json",
    "gates.json",
    "subgroups.json",
    "curves.json",
    "sites.json",
    "cases.json",
)
ID_COLUMNS = ("case_id", "patient_id")
CASE_ID_KEY_ENV = "VALIDATE_CASE_ID_KEY"
THUMBNAIL_DIR = "thumbnails"
# every file name `validate run` (and `validate gate` / `validate report` into a bundle) puts in a bundle
BUNDLE_FILES = frozenset(
    REQUIRED_FILES
    + JSON_FILES
    + ("report.html", "junit.xml", "failures.csv", "gates.md", "comparison.json", "baseline_predictions.parquet")
    + ("fairness.json",)
    # segmentation runs: segmentation.json and the scoring's pixel summaries (validate.analysis.segmentation_run)
    + ("segmentation.json", "pixel_histogram.parquet", "pixel_sample.parquet", "overlays.parquet")
    # `validate report --checklist NAME` writes checklist-<name>.md beside the bundle's report
    + ("checklist-tripod-ai.md", "checklist-claim.md", "checklist-stard-ai.md")
    + ("report.pdf",)  # the report printed to PDF: protocol `report: {pdf: true}` or `validate report --pdf`
)
# File modes (DESIGN.md, "File permissions"): the bundle's documents are meant to be shared and follow
# the umask like any file the user creates; what holds a row per case stays with its owner, because
# pseudonymised rows (age, sex, site, outcome, the model's score) may still be linked to patients.
#: Bundle files holding a row per case: owner-only (``0o600``) whatever the umask.
PRIVATE_FILES = frozenset({"predictions.parquet", "baseline_predictions.parquet", "failures.csv", "cases.json"})
#: Bundle folders of per-case files (a thumbnail per case): owner-only (``0o700``), their files ``0o600``.
PRIVATE_FOLDERS = frozenset({THUMBNAIL_DIR})
PRIVATE_FOLDER_MODE = 0o700
# rows per Parquet row group of a bundle's tables: the dashboard's Cases page reads a page of errors
# by row group (validate.case_pages), so a page of 25 costs at most 25 groups of this size, not 25 of
# Parquet's default million rows
PARQUET_ROW_GROUP = 65_536
#: Suffixes of the shareable documents (report, JSON of aggregates, JUnit XML, Markdown, the protocol);
#: a file of any other kind, or any table (``.parquet``, ``.csv``: rows), is owner-only.
SHARED_SUFFIXES = frozenset({".html", ".pdf", ".json", ".xml", ".md", ".yaml", ".yml", ".txt"})

BUNDLE_FORMAT = "validate-results-bundle/1"
STAGING_MARKER = ".validate-staging"
STAGING_NAME = re.compile(r"^\.(?P<name>.+)\.partial-[0-9a-f]{8}$")
ASIDE_NAME = re.compile(r"^\.(?P<name>.+)\.old-[0-9a-f]{8}$")
# the temporary name validate.io.atomic_path gives a file while it is written
TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]+\.tmp$")
SOFTWARE = (
    "torch",
    "numpy",
    "scipy",
    "scikit-learn",
    "pandas",
    "pyarrow",
    "plotly",
    "pydantic",
    "netcal",
    "onnxruntime",
    "pydicom",
    "pillow",
    "validate",
)


# ---- identifiers ---------------------------------------------------------------------------------


def case_id_key() -> tuple[bytes, str]:
    """The key for hashing case identifiers and a description of where it came from (for provenance)."""
    env = os.environ.get(CASE_ID_KEY_ENV)
    if env:
        return env.encode("utf-8"), f"HMAC-SHA256 keyed by ${CASE_ID_KEY_ENV} (not stored)"
    return secrets.token_bytes(32), "HMAC-SHA256 with a random per-run key (not stored; hashes differ between runs)"


def case_id_key_check(key: bytes) -> str:
    """A fingerprint of the case-id key for provenance, HMAC-SHA256(key, b"validate case-id key check"),
    first 16 hex digits: two bundles' hashed ids pair only when their checks are equal. It does not
    reveal the key (nor any case's hash, which is HMAC of an id)."""
    return hmac.new(key, b"validate case-id key check", hashlib.sha256).hexdigest()[:16]


def hash_ids(values, key: bytes, digits: int = 20) -> list[str | None]:
    """HMAC-SHA256(key, id) as hex, first ``digits`` digits; missing values stay missing."""
    out = []
    for v in values:
        if v is None or (isinstance(v, float) and v != v):
            out.append(None)
        else:
            out.append(hmac.new(key, str(v).encode("utf-8"), hashlib.sha256).hexdigest()[:digits])
    return out


def pseudonymise(table, key: bytes, columns: tuple[str, ...] = ID_COLUMNS):
    """A copy of ``table`` (pandas DataFrame) with identifier columns replaced by keyed hashes."""
    out = table.copy()
    for col in columns:
        if col in out.columns:
            out[col] = hash_ids(out[col].tolist(), key)
    return out


# ---- provenance --------------------------------------------------------------------------------


def software_versions() -> dict[str, str | None]:
    """Installed versions, read from package metadata (nothing is imported: netcal alone takes seconds)."""
    from importlib import metadata

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for dist in SOFTWARE:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    if versions.get("validate") is None:
        from validate import __version__

        versions["validate"] = __version__
    return versions


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def make_provenance(
    *,
    protocol: Any,
    started_at: str,
    finished_at: str,
    checkpoint: dict | None = None,
    predictions_source: dict | None = None,
    device: str | None = None,
    case_ids: str = "kept",
    command: list[str] | None = None,
    extra: dict | None = None,
) -> dict:
    """``provenance.json``: what is needed to repeat the run and to check it is the same run.

    ``protocol`` is a loaded :class:`validate.protocol.Protocol`; ``checkpoint`` e.g. ``{"path", "sha256",
    "format"}``; ``predictions_source`` e.g. ``{"path", "sha256"}`` when the run started from a file.
    """
    metrics = getattr(protocol, "metrics", None)
    calibration = getattr(protocol, "calibration", None)
    prov = {
        "bundle_format": BUNDLE_FORMAT,
        "validate_version": software_versions()["validate"],
        "protocol": {
            "name": getattr(protocol, "name", None),
            "version": getattr(protocol, "version", None),
            "path": str(getattr(protocol, "path", "") or ""),
            "sha256": getattr(protocol, "sha256", None),
        },
        "checkpoint": checkpoint,
        "predictions_source": predictions_source,
        "seeds": {
            "metrics": getattr(metrics, "seed", None),
            "calibration": getattr(calibration, "seed", None),
        },
        "n_bootstrap": getattr(metrics, "n_bootstrap", None),
        "device": device,
        "started_at": started_at,
        "finished_at": finished_at,
        "software": software_versions(),
        "platform": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
            "python_implementation": platform.python_implementation(),
        },
        "case_ids": case_ids,
        "command": command if command is not None else [os.path.basename(sys.argv[0])] + sys.argv[1:],
    }
    if extra:
        prov.update(extra)
    return prov


# ---- writing -------------------------------------------------------------------------------------


def is_private_file(name: str) -> bool:
    """Whether bundle file ``name`` (relative to the bundle) is owner-only: a per-case file
    (:data:`PRIVATE_FILES`, anything under :data:`PRIVATE_FOLDERS`) or not a shareable document."""
    path = Path(name)
    return (
        path.name in PRIVATE_FILES
        or (len(path.parts) > 1 and path.parts[0] in PRIVATE_FOLDERS)
        or path.suffix.lower() not in SHARED_SUFFIXES
    )


def file_mode(name: str, umask: int | None = None) -> int:
    """The mode of bundle file ``name``: :data:`~validate.io.PRIVATE_MODE` for a private file
    (:func:`is_private_file`), else ``0o666`` less the umask."""
    return PRIVATE_MODE if is_private_file(name) else shared_mode(umask)


def default_bundle_dir(runs_dir: str | Path, protocol_name: str, when: _dt.datetime | None = None) -> Path:
    """``runs/<protocol>-<YYYYmmdd-HHMMSS>``; a numeric suffix keeps two runs in one second apart."""
    when = when or _dt.datetime.now()
    base = Path(runs_dir) / f"{protocol_name}-{when.strftime('%Y%m%d-%H%M%S')}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


# ---- what a run may replace ----------------------------------------------------------------------


def is_our_provenance(prov: Any) -> bool:
    """Whether a parsed ``provenance.json`` was written by this suite (marker, or the keys of earlier versions)."""
    if not isinstance(prov, dict):
        return False
    if prov.get("bundle_format") == BUNDLE_FORMAT:
        return True
    return (
        isinstance(prov.get("validate_version"), str)
        and isinstance(prov.get("software"), dict)
        and isinstance(prov.get("files"), dict)
    )


def _is_bundle_file_name(name: str) -> bool:
    if name in BUNDLE_FILES or name == STAGING_MARKER:
        return True
    temp = TEMP_NAME.match(name)  # left by a write that was killed half way
    return bool(temp and temp.group("name") in BUNDLE_FILES)


def foreign_entries(folder: Path) -> list[str]:
    """The entries of ``folder`` that no bundle holds (relative names; links count as foreign)."""
    foreign = []
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink():
            foreign.append(entry.name)
        elif entry.name == THUMBNAIL_DIR and entry.is_dir():
            for site in sorted(entry.iterdir()):
                if site.is_symlink() or not site.is_dir():
                    foreign.append(f"{THUMBNAIL_DIR}/{site.name}")
                    continue
                foreign += [
                    f"{THUMBNAIL_DIR}/{site.name}/{f.name}"
                    for f in sorted(site.iterdir())
                    if f.is_symlink()
                    or not f.is_file()
                    or not (f.suffix == ".png" or (f.name.startswith(".") and f.name.endswith(".tmp")))
                ]
        elif not (entry.is_file() and _is_bundle_file_name(entry.name)):
            foreign.append(entry.name)
    return foreign


def not_our_bundle(folder: Path) -> str | None:
    """None when ``folder`` is a bundle this suite wrote and holds nothing else; otherwise why not."""
    prov_file = folder / "provenance.json"
    if not prov_file.is_file() or prov_file.is_symlink():
        return "it is not a results bundle (no provenance.json)"
    try:
        prov = json.loads(prov_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "its provenance.json is not valid JSON, so it is not a bundle written by validate"
    if not is_our_provenance(prov):
        return "its provenance.json was not written by validate"
    foreign = foreign_entries(folder)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        return f"it holds {shown}, which a results bundle does not"
    return None


def ancestor_problem(path: Path) -> str | None:
    """Why nothing can be created at ``path`` because of what lies above it: its nearest existing
    ancestor is a file, or a results bundle (a bundle must hold only bundle files). None if fine."""
    for ancestor in path.parents:
        if ancestor.exists() or ancestor.is_symlink():
            if not ancestor.is_dir():
                return f"{ancestor} is a file, not a folder"
            if not_our_bundle(ancestor) is None:
                return f"{ancestor} is a results bundle, which holds only the files validate writes there"
            return None
    return None


def target_problem(target: Path) -> str | None:
    """Why a bundle may not be written at ``target`` (None: it may). See the module docstring."""
    above = ancestor_problem(target)
    if above:
        return above
    if not (target.exists() or target.is_symlink()):
        return None
    if not target.is_dir():
        return "it is a file, and a results bundle is a folder"
    if os.path.ismount(target):
        return "it is a mount point, which cannot be replaced atomically"
    if not any(target.iterdir()):
        return None
    why = not_our_bundle(target)
    return None if why is None else f"it exists and {why}"


def check_target(target: Path, when: str = "") -> None:
    """Raise :class:`InputError` when a bundle may not be written at ``target``."""
    why = target_problem(target)
    if why:
        raise InputError(
            f"will not write the results bundle here: {why}{when}",
            file=target,
            field="--out",
            expected="a new folder name, an empty folder, or an earlier bundle of validate to "
            "replace (move or delete what is there, or choose another --out)",
        )


def _lock(fh, blocking: bool) -> bool:
    try:
        import fcntl
    except ImportError:  # no flock (Windows): staging folders are then never judged abandoned
        return blocking
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return True
    except OSError:
        return False


def _abandoned_staging(folder: Path) -> bool:
    """A staging folder of ours whose writer is gone: our marker, which nobody holds locked."""
    marker = folder / STAGING_MARKER
    if folder.is_symlink() or not marker.is_file() or marker.is_symlink():
        return False
    try:
        with open(marker, "r+", encoding="utf-8") as fh:
            content = json.loads(fh.read() or "null")
            if not (isinstance(content, dict) and content.get("validate_staging")) or not _lock(fh, blocking=False):
                return False
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return not foreign_entries(folder)


def remove_abandoned(parent: Path) -> list[Path]:
    """Remove what killed runs left in ``parent``: staging folders nobody writes any more, and earlier
    bundles moved aside (``.<name>.old-*``) whose replacement is in place. Returns what was removed."""
    removed = []
    try:
        entries = sorted(parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if entry.is_symlink() or not entry.is_dir():
            continue
        staging, aside = STAGING_NAME.match(entry.name), ASIDE_NAME.match(entry.name)
        if staging and _abandoned_staging(entry):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
        elif aside and (parent / aside.group("name")).is_dir() and not_our_bundle(entry) is None:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


# the content a file validate writes starts with (or, for gates.json, the keys it holds)
_SIGNATURES = {
    "junit.xml": b'<testsuites name="validate gates: ',
    "gates.md": b"### ",
    "report.html": b'<meta name="validate-verdict"',
    "checklist": b"<!-- validate reporting checklist",
}


def written_by_validate(path: Path) -> bool:
    """Whether the file at ``path`` is a gates.json, junit.xml, gates.md, checklist-*.md or report.html that
    validate wrote, judged by its content (so that an output of validate may be refreshed, and nothing else
    replaced)."""
    if path.is_symlink() or not path.is_file():
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(8192)
    except OSError:
        return False
    if path.name == "gates.json" or path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return False
        return isinstance(data, dict) and {"verdict", "rows", "counts", "exit_code"} <= set(data)
    if path.suffix == ".md":
        first = head.split(b"\n", 1)[0]
        if first.startswith(_SIGNATURES["checklist"]):
            return True
        return first.startswith(_SIGNATURES["gates.md"]) and b"Release gates: **" in first
    if path.suffix == ".xml":
        return _SIGNATURES["junit.xml"] in head
    return _SIGNATURES["report.html"] in head


ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EDQUOT: "disk quota exceeded",
}


def environment_cause(exc: BaseException) -> str | None:
    """The machine's reason (full disk, read-only, no permission) behind an exception, if that is what it is.

    Libraries re-raise OS errors in their own types (pyarrow, pandas), so the chain and the message
    are searched as well as ``errno``.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS:
            return ENVIRONMENT_ERRNOS[exc.errno]
        text = str(exc)
        for code, words in ENVIRONMENT_ERRNOS.items():
            if os.strerror(code) in text:
                return words
        exc = exc.__cause__ or exc.__context__
    return None


class BundleWriter:
    """Assemble a bundle in a staging folder; :meth:`commit` moves it into place atomically.

    Creating one checks the target (:func:`check_target`, an :class:`InputError` when it holds
    something that is not ours), removes what killed runs left beside it (:func:`remove_abandoned`) and
    creates the staging folder, so a run can do this before its long work and fail early. Use as a
    context manager: on an exception the staging folder is removed and the target is left untouched (an
    earlier bundle there stays whole); a full disk or read-only folder is reported as
    :class:`RunIncomplete` naming the folder.
    """

    def __init__(self, target: str | Path):
        self.target = Path(target).resolve()
        self.umask = current_umask()  # read once: the shareable files' mode (file_mode)
        self.committed = False
        self._marker = None
        check_target(self.target)
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            remove_abandoned(self.target.parent)
            self.staging = self.target.parent / f".{self.target.name}.partial-{secrets.token_hex(4)}"
            self.staging.mkdir()
        except OSError as exc:
            self._raise_environment(exc)
            raise
        try:
            self._marker = open(self.staging / STAGING_MARKER, "w+", encoding="utf-8")
            _lock(self._marker, blocking=True)
            self._marker.write(
                json.dumps(
                    {
                        "validate_staging": 1,
                        "target": self.target.name,
                        "pid": os.getpid(),
                        "host": platform.node(),
                        "started_at": now_iso(),
                    }
                )
            )
            self._marker.flush()
        except OSError as exc:
            self.abort()
            self._raise_environment(exc)
            raise

    def _raise_environment(self, exc: BaseException) -> None:
        cause = environment_cause(exc)
        if cause:
            todo = (
                "free some space or choose another --out"
                if cause in (ENVIRONMENT_ERRNOS[errno.ENOSPC], ENVIRONMENT_ERRNOS[errno.EDQUOT])
                else "choose a folder you can write to with --out"
            )
            raise RunIncomplete(
                f"cannot write the results bundle in {self.target.parent}: {cause}; the unfinished "
                f"bundle was removed ({todo})"
            ) from exc

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        # a full disk or read-only folder while writing into the staging folder: said as such (exit 3)
        try:
            yield
        except (InputError, RunIncomplete):
            raise
        except Exception as exc:  # noqa: BLE001 - pyarrow and pandas wrap OS errors in their own types
            self._raise_environment(exc)
            raise

    def path(self, name: str) -> Path:
        return self.staging / name

    def _place(self, name: str) -> tuple[Path, int]:
        """The staging path of ``name`` and its mode; the folders of a private folder are made
        owner-only first (the umask cannot open them, whatever it is)."""
        parts = Path(name).parts
        if len(parts) > 1 and parts[0] in PRIVATE_FOLDERS:
            folder = self.staging
            for part in parts[:-1]:
                folder = folder / part
                if not folder.is_dir():
                    folder.mkdir(mode=PRIVATE_FOLDER_MODE)
                    os.chmod(folder, PRIVATE_FOLDER_MODE)  # mkdir's mode is masked by the umask
        return self.path(name), file_mode(name, self.umask)

    def write_json(self, name: str, obj: Any) -> Path:
        """Write a bundle JSON file; a contract file gains its ``schema`` id and is checked first
        (:func:`validate.contract.for_writing`: a wrong shape is an internal error, nothing is written)."""
        from validate.contract import for_writing

        with self._writing():
            path, mode = self._place(name)
            atomic_write_json(path, for_writing(name, obj), mode)
        return path

    def write_text(self, name: str, text: str) -> Path:
        with self._writing():
            path, mode = self._place(name)
            atomic_write_text(path, text, mode)
        return path

    def write_bytes(self, name: str, data: bytes) -> Path:
        with self._writing():
            path, mode = self._place(name)
            atomic_write_bytes(path, data, mode)
        return path

    def copy_file(self, source: str | Path, name: str) -> Path:
        return self.write_bytes(name, Path(source).read_bytes())

    def write_table(self, name: str, table) -> Path:
        """A pandas table as Parquet (``.parquet``) or CSV (text cells escaped against spreadsheet
        formulas, :func:`validate.escape.csv_safe`), written atomically."""
        from validate.escape import csv_safe

        with self._writing():
            path, mode = self._place(name)
        with self._writing(), atomic_path(path, mode) as tmp:
            if name.endswith(".parquet"):
                table.to_parquet(tmp, index=False, row_group_size=PARQUET_ROW_GROUP)
            else:  # text cells that a spreadsheet would run as a formula are quoted (validate.escape)
                csv_safe(table).to_csv(tmp, index=False)
        return self.path(name)

    def file_hashes(self) -> dict[str, str]:
        return {
            p.name: sha256_file(p)
            for p in sorted(self.staging.iterdir())
            if p.is_file() and not p.name.startswith(".") and p.name != "provenance.json"
        }

    def commit(self) -> Path:
        """Move the staging folder onto the target (replacing an earlier bundle there, or an empty folder).

        The target is checked again: a run takes long, and what is there may have changed meanwhile.
        """
        check_target(self.target, when=" (it changed while the run was working; its results were not kept)")
        old = None
        if self.target.exists() and any(self.target.iterdir()):
            old = self.target.parent / f".{self.target.name}.old-{secrets.token_hex(4)}"
            os.replace(self.target, old)
        elif self.target.is_dir():  # the user's empty folder: the bundle keeps the mode they gave it
            os.chmod(self.staging, stat.S_IMODE(self.target.stat().st_mode))
        try:
            with self._writing():
                os.replace(self.staging, self.target)  # onto a missing path or an empty folder: atomic
        except BaseException:
            if old is not None:
                os.replace(old, self.target)  # the earlier bundle goes back where it was
            raise
        self.committed = True
        self._release(self.target / STAGING_MARKER)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.target

    def _release(self, marker: Path) -> None:
        if self._marker is not None:
            self._marker.close()  # closing drops the lock
            self._marker = None
        try:
            marker.unlink()
        except OSError:
            pass

    def abort(self) -> None:
        self._release(self.staging / STAGING_MARKER)
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self.committed:
            self.abort()


# ---- reading -------------------------------------------------------------------------------------


@dataclass
class Bundle:
    """A results bundle on disk. JSON parts load on first use; ``predictions`` only when asked for."""

    path: Path
    _cache: dict = field(default_factory=dict, repr=False)
    # the final folder name while the bundle is still being assembled in its staging folder
    display_name: str | None = None

    def _json(self, name: str, required: bool) -> dict | None:
        """The file's JSON, checked against its contract (:mod:`validate.contract`) on first read."""
        self.model(name, required)
        return self._cache[name]

    def model(self, name: str, required: bool = False):
        """Bundle file ``name`` as its contract model (:data:`validate.contract.MODELS`), None when absent.

        Raises :class:`InputError` naming the file and key path when the file breaks its contract, or
        names a version newer than this package reads."""
        from validate.contract import parse

        key = ("model", name)
        if key in self._cache:
            return self._cache[key]
        file = self.path / name
        if not file.exists():
            if required:
                raise InputError(
                    f"the bundle has no {name}",
                    file=self.path,
                    expected="a results bundle folder written by `validate run`",
                )
            self._cache[name] = self._cache[key] = None
            return None
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"not valid JSON: {exc}", file=file) from None
        model = parse(name, data, file=file)
        self._cache[name], self._cache[key] = data, model
        return model

    @property
    def typed(self) -> TypedBundle:
        """The JSON files as validated models: ``bundle.typed.metrics.sites["x"].n``."""
        return TypedBundle(self)

    def validate(self) -> Bundle:
        """Check every JSON file present against its contract now (not on first use); returns self."""
        from validate.contract import MODELS

        for name in MODELS:
            self.model(name, name in ("provenance.json", "metrics.json"))
        return self

    @property
    def provenance(self) -> dict:
        return self._json("provenance.json", True)

    @property
    def metrics(self) -> dict:
        return self._json("metrics.json", True)

    @property
    def calibration(self) -> dict | None:
        return self._json("calibration.json", False)

    @property
    def shift(self) -> dict | None:
        return self._json("shift.json", False)

    @property
    def gates(self) -> dict | None:
        return self._json("gates.json", False)

    @property
    def subgroups(self) -> dict | None:
        return self._json("subgroups.json", False)

    @property
    def curves(self) -> dict | None:
        return self._json("curves.json", False)

    @property
    def sites(self) -> dict | None:
        return self._json("sites.json", False)

    @property
    def comparison(self) -> dict | None:
        """``comparison.json`` (the paired comparison with a baseline model), None when the run had none."""
        return self._json("comparison.json", False)

    @property
    def cases(self) -> dict | None:
        return self._json("cases.json", False)

    @property
    def fairness(self) -> dict | None:
        """``fairness.json`` (group fairness measures), None when the run has none (not binary, no subgroups)."""
        return self._json("fairness.json", False)

    @property
    def segmentation(self) -> dict | None:
        """``segmentation.json`` (pixel calibration, area agreement, worst cases), None unless segmentation."""
        return self._json("segmentation.json", False)

    @property
    def gates_markdown(self) -> str | None:
        f = self.path / "gates.md"
        return f.read_text(encoding="utf-8") if f.exists() else None

    @property
    def protocol_path(self) -> Path:
        return self.path / "protocol.yaml"

    @property
    def protocol_text(self) -> str:
        return self.protocol_path.read_text(encoding="utf-8")

    def load_protocol(self):
        from validate.protocol import load_protocol

        return load_protocol(self.protocol_path)

    @cached_property
    def predictions(self):
        """``predictions.parquet`` as a pandas DataFrame (identifiers hashed unless kept)."""
        import pandas as pd

        file = self.path / "predictions.parquet"
        if not file.exists():
            raise InputError("the bundle has no predictions.parquet", file=self.path)
        return pd.read_parquet(file)

    @cached_property
    def failures(self):
        """``failures.csv`` as a DataFrame (empty when every case was scored)."""
        import pandas as pd

        from validate.escape import csv_unsafe

        file = self.path / "failures.csv"
        if not file.exists() or file.stat().st_size == 0:
            return pd.DataFrame(columns=["site", "case_id", "reason"])
        try:
            return csv_unsafe(pd.read_csv(file, dtype=str, keep_default_na=False))
        except pd.errors.EmptyDataError:
            return pd.DataFrame(columns=["site", "case_id", "reason"])

    @property
    def identity(self) -> str:
        """A key that changes whenever the bundle's results change (for caches, e.g. the dashboard)."""
        h = hashlib.sha256()
        for name in ("provenance.json", "metrics.json", "gates.json"):
            f = self.path / name
            if f.exists():
                st = f.stat()
                h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()[:16]

    @property
    def name(self) -> str:
        return self.display_name or self.path.name

    def missing_implied_files(self) -> dict[str, str]:
        """Files the bundle's protocol implies that are not there (name -> why it is needed)."""
        try:
            text = self.protocol_text
        except OSError:
            return {}
        return {name: why for name, why in implied_files(text).items() if not (self.path / name).is_file()}

    def require_implied_files(self) -> None:
        """Raise :class:`InputError` naming the first file the protocol implies that is missing."""
        missing = self.missing_implied_files()
        if missing:
            name, why = next(iter(missing.items()))
            others = f" (also missing: {', '.join(list(missing)[1:])})" if len(missing) > 1 else ""
            raise InputError(
                f"incomplete results bundle: {name} is missing, but {why}{others}",
                file=self.path,
                expected="the bundle as `validate run` wrote it; run the protocol again",
            )


def implied_files(protocol_text: str) -> dict[str, str]:
    """The bundle files a protocol implies beyond the always-present ones, each with the reason.

    ``gates.json`` when gates are declared (without it a report would read "no gates declared", a
    false PASS); ``calibration.json`` when a calibration section is declared; ``subgroups.json`` when
    subgroups are; ``shift.json`` when the sites include a development site and another site;
    ``segmentation.json`` when the task is segmentation (its pixel calibration and worst cases). The
    bundle's protocol copy is read as plain YAML (its relative paths point beside the original file).
    """
    import yaml

    try:
        data = yaml.safe_load(protocol_text)
    except yaml.YAMLError:
        return {}
    if not isinstance(data, dict):
        return {}
    out = {}
    if data.get("gates"):
        out["gates.json"] = "its protocol.yaml declares gates"
    if data.get("calibration"):
        out["calibration.json"] = "its protocol.yaml declares a calibration section"
    if data.get("subgroups"):
        out["subgroups.json"] = "its protocol.yaml declares subgroups"
    sites = [s for s in data.get("sites") or [] if isinstance(s, dict)]
    if any(s.get("role") == "development" for s in sites) and len(sites) > 1:
        out["shift.json"] = "its protocol.yaml declares a development site and other sites"
    if data.get("task") == "segmentation":
        out["segmentation.json"] = "its protocol.yaml declares task: segmentation"
    return out


class TypedBundle:
    """A bundle's JSON files as their contract models (:mod:`validate.contract`); None where absent.

    ``calibration`` and ``shift`` may be a :class:`validate.contract.NotComputed` (``computed`` False).
    """

    def __init__(self, bundle: Bundle):
        self._bundle = bundle

    provenance = property(lambda self: self._bundle.model("provenance.json", True))
    metrics = property(lambda self: self._bundle.model("metrics.json", True))
    calibration = property(lambda self: self._bundle.model("calibration.json"))
    shift = property(lambda self: self._bundle.model("shift.json"))
    gates = property(lambda self: self._bundle.model("gates.json"))
    subgroups = property(lambda self: self._bundle.model("subgroups.json"))
    curves = property(lambda self: self._bundle.model("curves.json"))
    sites = property(lambda self: self._bundle.model("sites.json"))
    comparison = property(lambda self: self._bundle.model("comparison.json"))
    cases = property(lambda self: self._bundle.model("cases.json"))
    fairness = property(lambda self: self._bundle.model("fairness.json"))
    segmentation = property(lambda self: self._bundle.model("segmentation.json"))


def read_bundle(path: str | Path) -> Bundle:
    """Open a bundle folder and check every JSON file against its contract (:mod:`validate.contract`);
    raise :class:`InputError` naming what is missing or malformed (file, key path) if it is not one.

    Missing is: ``provenance.json``, ``metrics.json`` or ``protocol.yaml``, or a file the bundle's own
    protocol implies (:func:`implied_files`): a bundle that lost its ``gates.json`` must not be
    re-reported as having no gates.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("bundle folder not found", file=path, expected="a folder written by `validate run`")
    if not path.is_dir():
        raise InputError("not a folder", file=path, expected="a results bundle folder written by `validate run`")
    missing = [f for f in ("provenance.json", "metrics.json", "protocol.yaml") if not (path / f).exists()]
    if missing:
        raise InputError(
            f"not a complete results bundle: missing {', '.join(missing)}",
            file=path,
            expected=f"a folder holding {', '.join(REQUIRED_FILES)}",
        )
    bundle = Bundle(path=path.resolve())
    bundle.require_implied_files()
    return bundle.validate()


def json_bytes(obj: Any) -> bytes:
    """The exact bytes a bundle JSON file holds for ``obj`` (sorted keys, indent 2, no NaN)."""
    return to_json_text(obj).encode("utf-8")
