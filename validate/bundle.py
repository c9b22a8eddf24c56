"""The results bundle: one folder per run, the contract between the engine and every presentation.

Files (DESIGN.md): ``provenance.json``, ``protocol.yaml``, ``predictions.parquet``, ``metrics.json``,
``calibration.json``, ``shift.json``, ``gates.json``, ``report.html``, ``junit.xml``, ``failures.csv``.
Extra files written here: ``subgroups.json`` (site x subgroup analysis), ``curves.json`` (ROC points,
reliability bins, histograms: computed once so the report and the dashboard never recompute),
``sites.json`` (cohort per site: n, prevalence, subgroup make-up, exclusions by reason),
``gates.md`` (the Markdown gate summary) and, for image protocols, ``thumbnails/<site>/<case id>.png``
(the most confident errors per site, named by the identifier ``predictions.parquet`` holds; see
:mod:`validate.thumbnails`).

Atomicity: a bundle is assembled in a hidden staging folder beside its target and renamed into place
when complete (each file is itself written to a temporary name and renamed), so a killed run never
leaves a folder that looks like a whole bundle. A bundle being replaced is moved aside first and
removed after the new one is in place.

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

import datetime as _dt
import hashlib
import hmac
import json
import os
import platform
import secrets
import shutil
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Optional

from validate.errors import InputError
from validate.io import atomic_write_bytes, atomic_write_json, atomic_write_text, sha256_file, to_json_text

REQUIRED_FILES = ("provenance.json", "protocol.yaml", "predictions.parquet", "metrics.json", "calibration.json",
                  "gates.json")
JSON_FILES = ("provenance.json", "metrics.json", "calibration.json", "shift.json", "gates.json", "subgroups.json",
              "curves.json", "sites.json")
ID_COLUMNS = ("case_id", "patient_id")
CASE_ID_KEY_ENV = "VALIDATE_CASE_ID_KEY"
THUMBNAIL_DIR = "thumbnails"
SOFTWARE = ("torch", "numpy", "scipy", "scikit-learn", "pandas", "pyarrow", "plotly", "pydantic", "netcal",
            "onnxruntime", "pydicom", "pillow", "validate")


# ---- identifiers ---------------------------------------------------------------------------------

def case_id_key() -> tuple[bytes, str]:
    """The key for hashing case identifiers and a description of where it came from (for provenance)."""
    env = os.environ.get(CASE_ID_KEY_ENV)
    if env:
        return env.encode("utf-8"), f"HMAC-SHA256 keyed by ${CASE_ID_KEY_ENV} (not stored)"
    return secrets.token_bytes(32), "HMAC-SHA256 with a random per-run key (not stored; hashes differ between runs)"


def hash_ids(values, key: bytes, digits: int = 20) -> list[Optional[str]]:
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

def software_versions() -> dict[str, Optional[str]]:
    """Installed versions, read from package metadata (nothing is imported: netcal alone takes seconds)."""
    from importlib import metadata

    versions: dict[str, Optional[str]] = {"python": platform.python_version()}
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


def make_provenance(*, protocol: Any, started_at: str, finished_at: str, checkpoint: Optional[dict] = None,
                    predictions_source: Optional[dict] = None, device: Optional[str] = None,
                    case_ids: str = "kept", command: Optional[list[str]] = None, extra: Optional[dict] = None) -> dict:
    """``provenance.json``: what is needed to repeat the run and to check it is the same run.

    ``protocol`` is a loaded :class:`validate.protocol.Protocol`; ``checkpoint`` e.g. ``{"path", "sha256",
    "format"}``; ``predictions_source`` e.g. ``{"path", "sha256"}`` when the run started from a file.
    """
    metrics = getattr(protocol, "metrics", None)
    calibration = getattr(protocol, "calibration", None)
    prov = {
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
        "platform": {"system": platform.system(), "release": platform.release(), "machine": platform.machine(),
                     "python_implementation": platform.python_implementation()},
        "case_ids": case_ids,
        "command": command if command is not None else [os.path.basename(sys.argv[0])] + sys.argv[1:],
    }
    if extra:
        prov.update(extra)
    return prov


# ---- writing -------------------------------------------------------------------------------------

def default_bundle_dir(runs_dir: str | Path, protocol_name: str, when: Optional[_dt.datetime] = None) -> Path:
    """``runs/<protocol>-<YYYYmmdd-HHMMSS>``; a numeric suffix keeps two runs in one second apart."""
    when = when or _dt.datetime.now()
    base = Path(runs_dir) / f"{protocol_name}-{when.strftime('%Y%m%d-%H%M%S')}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


class BundleWriter:
    """Assemble a bundle in a staging folder; :meth:`commit` moves it into place atomically.

    Use as a context manager: on an exception the staging folder is removed and the target is left
    untouched (an earlier bundle there stays whole).
    """

    def __init__(self, target: str | Path):
        self.target = Path(target).resolve()
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.staging = self.target.parent / f".{self.target.name}.partial-{secrets.token_hex(4)}"
        self.staging.mkdir()
        self.committed = False

    def path(self, name: str) -> Path:
        return self.staging / name

    def write_json(self, name: str, obj: Any) -> Path:
        """Write a bundle JSON file; a contract file gains its ``schema`` id and is checked first
        (:func:`validate.contract.for_writing`: a wrong shape is an internal error, nothing is written)."""
        from validate.contract import for_writing

        atomic_write_json(self.path(name), for_writing(name, obj))
        return self.path(name)

    def write_text(self, name: str, text: str) -> Path:
        atomic_write_text(self.path(name), text)
        return self.path(name)

    def write_bytes(self, name: str, data: bytes) -> Path:
        atomic_write_bytes(self.path(name), data)
        return self.path(name)

    def copy_file(self, source: str | Path, name: str) -> Path:
        return self.write_bytes(name, Path(source).read_bytes())

    def write_table(self, name: str, table) -> Path:
        """A pandas table as Parquet (``.parquet``) or CSV, written atomically."""
        from validate.io import atomic_path

        with atomic_path(self.path(name)) as tmp:
            if name.endswith(".parquet"):
                table.to_parquet(tmp, index=False)
            else:
                table.to_csv(tmp, index=False)
        return self.path(name)

    def file_hashes(self) -> dict[str, str]:
        return {p.name: sha256_file(p) for p in sorted(self.staging.iterdir())
                if p.is_file() and not p.name.startswith(".") and p.name != "provenance.json"}

    def commit(self) -> Path:
        """Move the staging folder onto the target (replacing an earlier bundle there)."""
        old = None
        if self.target.exists():
            old = self.target.parent / f".{self.target.name}.old-{secrets.token_hex(4)}"
            os.replace(self.target, old)
        os.replace(self.staging, self.target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self.committed = True
        return self.target

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> "BundleWriter":
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
    display_name: Optional[str] = None

    def _json(self, name: str, required: bool) -> Optional[dict]:
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
                raise InputError(f"the bundle has no {name}", file=self.path,
                                 expected="a results bundle folder written by `validate run`")
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
    def typed(self) -> "TypedBundle":
        """The JSON files as validated models: ``bundle.typed.metrics.sites["x"].n``."""
        return TypedBundle(self)

    def validate(self) -> "Bundle":
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
    def calibration(self) -> Optional[dict]:
        return self._json("calibration.json", False)

    @property
    def shift(self) -> Optional[dict]:
        return self._json("shift.json", False)

    @property
    def gates(self) -> Optional[dict]:
        return self._json("gates.json", False)

    @property
    def subgroups(self) -> Optional[dict]:
        return self._json("subgroups.json", False)

    @property
    def curves(self) -> Optional[dict]:
        return self._json("curves.json", False)

    @property
    def sites(self) -> Optional[dict]:
        return self._json("sites.json", False)

    @property
    def gates_markdown(self) -> Optional[str]:
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

        file = self.path / "failures.csv"
        if not file.exists() or file.stat().st_size == 0:
            return pd.DataFrame(columns=["site", "case_id", "reason"])
        try:
            return pd.read_csv(file, dtype=str, keep_default_na=False)
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


def read_bundle(path: str | Path) -> Bundle:
    """Open a bundle folder and check every JSON file against its contract (:mod:`validate.contract`);
    raise :class:`InputError` naming what is missing or malformed (file, key path) if it is not one."""
    path = Path(path)
    if not path.exists():
        raise InputError("bundle folder not found", file=path, expected="a folder written by `validate run`")
    if not path.is_dir():
        raise InputError("not a folder", file=path, expected="a results bundle folder written by `validate run`")
    missing = [f for f in ("provenance.json", "metrics.json", "protocol.yaml") if not (path / f).exists()]
    if missing:
        raise InputError(f"not a complete results bundle: missing {', '.join(missing)}", file=path,
                         expected=f"a folder holding {', '.join(REQUIRED_FILES)}")
    return Bundle(path=path.resolve()).validate()


def json_bytes(obj: Any) -> bytes:
    """The exact bytes a bundle JSON file holds for ``obj`` (sorted keys, indent 2, no NaN)."""
    return to_json_text(obj).encode("utf-8")
