"""Protocol files: the one source of the science of a validation run.

A protocol (YAML) declares the task and its classes, how inputs are read and preprocessed, the model,
the sites with their manifests and roles, case attributes and subgroups, metric settings, the
calibration design and the release gates. It is validated by the pydantic models below;
``protocols/schema.json`` is generated from them (``python -m validate.protocol > protocols/schema.json``).

Every validation problem is reported with the protocol file, the YAML line of the offending key and
what was expected; unknown keys name the nearest valid key. All problems are reported at once.
Relative paths resolve against the folder of the protocol file.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from validate.errors import InputError, InputErrors

Task = Literal["binary", "multiclass", "multilabel"]
InputKind = Literal["image", "dicom", "array", "tabular"]
Role = Literal["development", "calibration", "external"]
CALIBRATION_DESIGNS = ("held-out", "local", "transfer", "sample-size")
GATE_SCOPES = ("overall", "each_site", "each_subgroup", "worst_subgroup", "subgroup_gap")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Window(_Strict):
    """A DICOM display window overriding the file's VOI LUT / window tags."""

    center: float
    width: float = Field(gt=0)


class InputSpec(_Strict):
    """How a case becomes a model input."""

    kind: InputKind
    features: Optional[list[str]] = Field(None, description="tabular: manifest columns fed to the model, in order")
    size: Optional[tuple[int, int]] = Field(None, description="image kinds: resize to [height, width]")
    channels: Literal[1, 3] = 1
    scale: float = Field(255.0, gt=0, description="raw pixel values are divided by this first")
    mean: list[float] = Field(default_factory=lambda: [0.0])
    std: list[float] = Field(default_factory=lambda: [1.0])
    window: Optional[Window] = None

    @field_validator("std")
    @classmethod
    def _positive_std(cls, v: list[float]) -> list[float]:
        if any(s <= 0 for s in v):
            raise ValueError("every std must be > 0")
        return v

    @model_validator(mode="after")
    def _kind_fields(self) -> "InputSpec":
        if self.kind == "tabular":
            if not self.features:
                raise ValueError("input.kind tabular needs `features`: the manifest columns fed to the model")
        else:
            if self.size is None:
                raise ValueError(f"input.kind {self.kind} needs `size`: [height, width]")
            for name in ("mean", "std"):
                if len(getattr(self, name)) not in (1, self.channels):
                    raise ValueError(f"`{name}` needs 1 or {self.channels} values (one per channel)")
        return self


class ModelSpec(_Strict):
    checkpoint: Optional[str] = Field(None, description="path relative to the protocol file; --checkpoint wins")
    format: Literal["auto", "export", "torchscript", "state_dict", "onnx", "predictions"] = "auto"
    factory: Optional[str] = Field(None, description="'module:function' building the nn.Module for a state dict")
    factory_path: Optional[str] = Field(None, description="folder the factory module is imported from")
    output: Literal["logits", "probabilities"] = "logits"

    @field_validator("factory")
    @classmethod
    def _factory_form(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and (v.count(":") != 1 or not all(v.split(":"))):
            raise ValueError("factory must look like 'module:function'")
        return v


class Columns(_Strict):
    """Names of the manifest columns (defaults shown)."""

    case_id: str = "case_id"
    patient_id: str = "patient_id"
    label: str = "label"
    image: str = "image"
    acquired_at: str = "acquired_at"


class Site(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    name: Optional[str] = None
    manifest: str
    image_root: Optional[str] = None
    role: Role = "external"

    @property
    def display_name(self) -> str:
        return self.name or self.id


class Subgroup(_Strict):
    """A categorical column, a numeric column banded at cut points, or an intersection of subgroups."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    column: Optional[str] = None
    bands: Optional[list[float]] = Field(None, description="cut points; bands are [a, b) e.g. <40, 40-59, >=60")
    intersection: Optional[list[str]] = None

    @model_validator(mode="after")
    def _one_kind(self) -> "Subgroup":
        if (self.column is None) == (self.intersection is None):
            raise ValueError("a subgroup needs exactly one of `column` or `intersection`")
        if self.intersection is not None:
            if self.bands is not None:
                raise ValueError("`bands` applies to a column, not to an intersection")
            if len(self.intersection) < 2:
                raise ValueError("an intersection names at least two subgroups")
        if self.bands is not None:
            if not self.bands or any(b >= a for b, a in zip(self.bands, self.bands[1:])):
                raise ValueError("bands must be one or more strictly increasing cut points")
        return self


class MetricsSpec(_Strict):
    bins: int = Field(15, ge=2, le=1000)
    n_bootstrap: int = Field(1000, ge=0, le=100000)
    ci_level: float = Field(0.95, gt=0, lt=1)
    seed: int = 0
    cluster_by: Optional[str] = "patient_id"
    thresholds: list[float] = Field(default_factory=lambda: [0.5])
    target_sensitivity: Optional[float] = Field(0.9, gt=0, lt=1)
    min_events: int = Field(10, ge=0)
    min_cases: int = Field(30, ge=0)

    @field_validator("thresholds")
    @classmethod
    def _unit_interval(cls, v: list[float]) -> list[float]:
        if any(not 0 <= t <= 1 for t in v):
            raise ValueError("thresholds are probabilities in [0, 1]")
        return v


class CalibrationSpec(_Strict):
    designs: list[Literal["held-out", "local", "transfer", "sample-size"]] = Field(default_factory=lambda: ["held-out"])
    methods: list[str] = Field(default_factory=lambda: ["temperature"])
    fit_on: Optional[list[str]] = Field(None, description="default: sites with role calibration, else development")
    fit_fraction: float = Field(1.0, gt=0, le=1)
    repeats: int = Field(20, ge=1, le=10000)
    sample_sizes: list[int] = Field(default_factory=lambda: [25, 50, 100, 200, 500])
    seed: int = 0


class Gate(_Strict):
    name: Optional[str] = None
    metric: str
    scope: str = "overall"
    min: Optional[float] = None
    max: Optional[float] = None
    on: Literal["estimate", "ci_low", "ci_high"] = "estimate"
    calibration: Optional[str] = None
    insufficient: Literal["fail", "warn", "pass"] = "warn"

    @field_validator("scope")
    @classmethod
    def _scope_form(cls, v: str) -> str:
        kind, _, attr = v.partition(":")
        if kind not in GATE_SCOPES:
            raise ValueError(f"scope must be one of {', '.join(GATE_SCOPES)} (subgroup scopes as kind:<attribute>)")
        if kind in ("overall", "each_site") and attr:
            raise ValueError(f"scope {kind} takes no attribute")
        if kind not in ("overall", "each_site") and not attr:
            raise ValueError(f"scope {kind} needs an attribute: {kind}:<subgroup name>")
        return v

    @model_validator(mode="after")
    def _one_bound(self) -> "Gate":
        if (self.min is None) == (self.max is None):
            raise ValueError("a gate needs exactly one of `min` or `max`")
        return self

    @property
    def threshold(self) -> float:
        return self.min if self.min is not None else self.max  # type: ignore[return-value]

    @property
    def direction(self) -> str:
        return "min" if self.min is not None else "max"

    @property
    def label(self) -> str:
        return self.name or f"{self.metric} {self.scope} {self.direction} {self.threshold}"


class Protocol(_Strict):
    """A validation protocol. ``path`` (not a YAML key) is the file it was loaded from."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    version: str = "1"
    description: Optional[str] = None
    task: Task
    classes: Optional[list[str]] = None
    positive_class: Optional[str] = None
    labels: Optional[list[str]] = None
    input: InputSpec
    model: ModelSpec = Field(default_factory=ModelSpec)
    columns: Columns = Field(default_factory=Columns)
    sites: list[Site] = Field(min_length=1)
    attributes: list[str] = Field(default_factory=list)
    subgroups: list[Subgroup] = Field(default_factory=list)
    metrics: MetricsSpec = Field(default_factory=MetricsSpec)
    calibration: CalibrationSpec = Field(default_factory=CalibrationSpec)
    gates: list[Gate] = Field(default_factory=list)
    keep_case_ids: bool = False

    _path: Optional[Path] = PrivateAttr(None)
    _sha256: Optional[str] = PrivateAttr(None)
    _lines: dict = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> "Protocol":
        problems = []
        if self.task in ("binary", "multiclass"):
            if not self.classes:
                problems.append("`classes` is required for a binary or multiclass task")
            elif len(set(self.classes)) != len(self.classes):
                problems.append("`classes` has duplicate names")
            elif self.task == "binary" and len(self.classes) != 2:
                problems.append("a binary task has exactly two classes: [negative, positive]")
            elif self.task == "multiclass" and len(self.classes) < 3:
                problems.append("a multiclass task has at least three classes (use task: binary for two)")
            if self.labels:
                problems.append("`labels` is for multilabel tasks; use `classes`")
        else:
            if not self.labels:
                problems.append("`labels` is required for a multilabel task")
            if self.classes:
                problems.append("`classes` is for binary/multiclass tasks; use `labels`")
        if self.positive_class is not None:
            if self.task != "binary":
                problems.append("`positive_class` applies to binary tasks only")
            elif self.classes and self.positive_class not in self.classes:
                problems.append(f"positive_class {self.positive_class!r} is not one of classes {self.classes}")
        ids = [s.id for s in self.sites]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            problems.append(f"duplicate site id(s): {', '.join(dup)}")
        names = [g.name for g in self.subgroups]
        dupg = sorted({n for n in names if names.count(n) > 1})
        if dupg:
            problems.append(f"duplicate subgroup name(s): {', '.join(dupg)}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # ---- derived views -------------------------------------------------------------------------
    @property
    def path(self) -> Optional[Path]:
        return self._path

    @property
    def sha256(self) -> Optional[str]:
        return self._sha256

    @property
    def base_dir(self) -> Path:
        return self._path.parent if self._path else Path.cwd()

    def resolve(self, relative: Optional[str]) -> Optional[Path]:
        """A path from the protocol, resolved against the protocol file's folder."""
        if relative is None:
            return None
        p = Path(relative).expanduser()
        return (p if p.is_absolute() else self.base_dir / p).resolve()

    @property
    def positive(self) -> Optional[str]:
        if self.task != "binary" or not self.classes:
            return None
        return self.positive_class or self.classes[1]

    @property
    def binary_classes(self) -> list[str]:
        """[negative, positive] in that order (positive_class may name the first listed class)."""
        assert self.classes is not None
        pos = self.positive
        return [c for c in self.classes if c != pos] + [pos]  # type: ignore[list-item]

    def site(self, site_id: str) -> Site:
        for s in self.sites:
            if s.id == site_id:
                return s
        raise KeyError(site_id)

    def sites_with_role(self, role: str) -> list[Site]:
        return [s for s in self.sites if s.role == role]

    @property
    def calibration_fit_sites(self) -> list[str]:
        if self.calibration.fit_on:
            return list(self.calibration.fit_on)
        cal = self.sites_with_role("calibration")
        return [s.id for s in (cal or self.sites_with_role("development"))]

    def line_of(self, *loc: Any) -> Optional[int]:
        """1-based YAML line of a key path such as ("sites", 0, "manifest"), or of its nearest parent."""
        loc = tuple(loc)
        while loc:
            if loc in self._lines:
                return self._lines[loc]
            loc = loc[:-1]
        return None


# ---- loading -----------------------------------------------------------------------------------

class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. YAML 1.1 also reads `on`, `off`, `yes`, `no` as booleans,
    which would turn the gate key `on:` into True."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def _yaml_lines(text: str) -> dict[tuple, int]:
    """Map each key path of a YAML document to the 1-based line where its key (or item) starts."""
    lines: dict[tuple, int] = {}

    def walk(node: yaml.Node, path: tuple) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = k.value
                lines[path + (key,)] = k.start_mark.line + 1
                walk(v, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[path + (i,)] = item.start_mark.line + 1
                walk(item, path + (i,))

    root = yaml.compose(text, Loader=_Loader)
    if root is not None:
        walk(root, ())
    return lines


def _model_at(loc: tuple) -> Optional[type[BaseModel]]:
    """The pydantic model class whose fields are valid at ``loc`` (for nearest-key suggestions)."""
    model: Any = Protocol
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        args = getattr(ann, "__args__", ()) or ()
        candidates = [ann, *args]
        for a in list(candidates):
            candidates.extend(getattr(a, "__args__", ()) or ())
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return None
    return model


def _describe(err: dict) -> tuple[str, Optional[str]]:
    kind = err["type"]
    if kind == "missing":
        return "required key is missing", None
    if kind.startswith("literal_error"):
        expected = err.get("ctx", {}).get("expected")
        return f"invalid value {err.get('input')!r}", f"one of {expected}"
    if kind == "value_error":
        return str(err.get("ctx", {}).get("error", err["msg"])), None
    msg = err["msg"]
    return f"{msg} (got {err.get('input')!r})" if "input" in err and not isinstance(err["input"], (dict, list)) else msg, None


def _errors_from_validation(exc: ValidationError, file: Path, lines: dict) -> list[InputError]:
    out = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        field = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc).replace(".[", "[") or "(top level)"
        line = None
        probe = loc
        while probe and line is None:
            line = lines.get(probe)
            probe = probe[:-1]
        if err["type"] == "extra_forbidden":
            model = _model_at(loc[:-1])
            valid = sorted(model.model_fields) if model else []
            near = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
            hint = f"did you mean `{near[0]}`?" if near else f"valid keys: {', '.join(valid)}"
            out.append(InputError(f"unknown key `{loc[-1]}`; {hint}", file=file, line=line, field=field))
            continue
        message, expected = _describe(err)
        out.append(InputError(message, file=file, line=line, field=field, expected=expected))
    return out


def load_protocol(path: str | Path, *, problems: Optional[list] = None) -> Protocol:
    """Read and validate a protocol file; raise :class:`InputErrors` listing every problem.

    With ``problems`` (a list), cross-reference problems are appended to it instead of raised, so that
    ``validate check`` can go on to the manifests and report everything in one pass.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("protocol file not found", file=path, expected="a YAML protocol file")
    if path.is_dir():
        raise InputError("is a folder, not a protocol file", file=path, expected="a YAML protocol file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=path) from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
        lines = _yaml_lines(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(f"not valid YAML: {problem}", file=path,
                         line=mark.line + 1 if mark else None) from None
    if not isinstance(data, dict):
        raise InputError("the protocol must be a YAML mapping of keys (name, task, input, sites, ...)",
                         file=path, expected="a mapping at the top level")
    try:
        protocol = Protocol.model_validate(data)
    except ValidationError as exc:
        raise InputErrors(_errors_from_validation(exc, path, lines)) from None
    protocol._path = path.resolve()
    protocol._sha256 = hashlib.sha256(raw).hexdigest()
    protocol._lines = lines
    try:
        _check_references(protocol)
    except InputErrors as exc:
        if problems is None:
            raise
        problems.extend(exc.problems)
    return protocol


def _check_references(p: Protocol) -> None:
    """Cross-references between sections: subgroup names, gate scopes, fit sites."""
    problems: list[InputError] = []
    file = p.path
    site_ids = {s.id for s in p.sites}
    known: set[str] = set()
    for i, g in enumerate(p.subgroups):
        if g.intersection:
            for name in g.intersection:
                if name not in known:
                    problems.append(InputError(
                        f"intersection names `{name}`, which is not a subgroup declared above it",
                        file=file, line=p.line_of("subgroups", i, "intersection"),
                        field=f"subgroups[{i}].intersection",
                        expected=f"one of {sorted(known) or 'the subgroups listed before this one'}"))
        known.add(g.name)
    for i, site in enumerate(p.calibration.fit_on or []):
        if site not in site_ids:
            near = difflib.get_close_matches(site, sorted(site_ids), n=1)
            problems.append(InputError(
                f"unknown site `{site}`" + (f"; did you mean `{near[0]}`?" if near else ""),
                file=file, line=p.line_of("calibration", "fit_on", i), field=f"calibration.fit_on[{i}]",
                expected=f"one of {sorted(site_ids)}"))
    if ("held-out" in p.calibration.designs and p.calibration.methods and not p.calibration.fit_on
            and not (p.sites_with_role("calibration") or p.sites_with_role("development"))):
        problems.append(InputError("no site to fit calibration on", file=file, line=p.line_of("sites"),
                                   field="sites", expected="a site with role development or calibration, "
                                   "or calibration.fit_on"))
    from validate.gates import SHIFT_METRICS
    from validate.metrics.registry import check_gate_metric

    for i, gate in enumerate(p.gates):
        # a metric name the task's BLOCKs cannot hold is known now, not after every analysis ran
        wrong = None if gate.metric in SHIFT_METRICS else check_gate_metric(gate.metric, p.task)
        if wrong:
            problems.append(InputError(
                wrong, file=file, line=p.line_of("gates", i, "metric"), field=f"gates[{i}].metric",
                expected=f"a {p.task} metric of validate.metrics.registry, a BLOCK field such as n, or one of "
                         f"{', '.join(SHIFT_METRICS)}"))
        kind, _, attr = gate.scope.partition(":")
        if attr and attr not in known:
            problems.append(InputError(
                f"scope names subgroup `{attr}`, which is not declared",
                file=file, line=p.line_of("gates", i, "scope"), field=f"gates[{i}].scope",
                expected=f"one of {sorted(known) or 'the names under subgroups'}"))
        if gate.calibration is not None and gate.calibration != "none" and gate.calibration not in p.calibration.methods:
            problems.append(InputError(
                f"gate is judged after calibration `{gate.calibration}`, which calibration.methods does not fit",
                file=file, line=p.line_of("gates", i, "calibration"), field=f"gates[{i}].calibration",
                expected=f"one of {p.calibration.methods}"))
    if problems:
        raise InputErrors(problems)


def json_schema() -> dict:
    schema = Protocol.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "validate protocol"
    return schema


if __name__ == "__main__":  # python -m validate.protocol > protocols/schema.json
    print(json.dumps(json_schema(), indent=2, sort_keys=True))
