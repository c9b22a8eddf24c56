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
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from validate.errors import InputError, InputErrors

Task = Literal["binary", "multiclass", "multilabel", "segmentation"]
InputKind = Literal["image", "dicom", "array", "tabular", "volume"]
Role = Literal["development", "calibration", "external"]
CALIBRATION_DESIGNS = ("held-out", "local", "transfer", "sample-size")
GATE_SCOPES = (
    "overall",
    "each_site",
    "each_subgroup",
    "worst_subgroup",
    "subgroup_gap",
    "across_sites",
    "each_attribute",
)
#: Scopes that take no attribute (the others name a subgroup: kind:<attribute>).
PLAIN_SCOPES = ("overall", "each_site", "across_sites")
#: Scopes of a gate that compares with the baseline model (``compare: baseline``): comparison.json holds
#: the pooled block, one per site and one per subgroup value (pooled over sites).
COMPARISON_SCOPES = ("overall", "each_site", "each_subgroup")


#: A name that becomes a folder or file name (protocol name, site id, subgroup name): letters, digits,
#: `_`, `.` and `-`, not starting with a dot (so never `.`, `..` or a hidden file), at most 100
#: characters. It excludes `/`, `\\`, NUL and every other control character, so it cannot leave the
#: folder it is written into.
SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")
SAFE_NAME_RULE = "letters, digits, _ . - only, not starting with a dot, at most 100 characters"
_SAFE_SCHEMA = {"pattern": "^" + SAFE_NAME.pattern + "$"}  # for editors; the validator gives the message


def _safe_name(value: str, what: str) -> str:
    if not SAFE_NAME.fullmatch(value):
        raise ValueError(f"{value!r} cannot be a {what}: it becomes a folder or file name ({SAFE_NAME_RULE})")
    return value


class _Strict(BaseModel):
    # allow_inf_nan=False: YAML reads .nan, .inf and -.inf as floats; no setting of a protocol means them
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)


class Window(_Strict):
    """A DICOM display window overriding the file's VOI LUT / window tags."""

    center: float
    width: float = Field(gt=0)


class InputSpec(_Strict):
    """How a case becomes a model input."""

    kind: InputKind
    features: list[str] | None = Field(None, description="tabular: manifest columns fed to the model, in order")
    size: tuple[int, int] | tuple[int, int, int] | None = Field(
        None, description="image kinds: resize to [height, width]; volume: crop/pad to [depth, height, width] voxels"
    )
    channels: Literal[1, 3] = 1
    scale: float = Field(255.0, gt=0, description="raw pixel values are divided by this first")
    mean: list[float] = Field(default_factory=lambda: [0.0])
    std: list[float] = Field(default_factory=lambda: [1.0])
    spacing: tuple[float, float, float] | None = Field(
        None,
        description="volume: resample to this voxel spacing in mm of the output's (depth, height, width) axes; "
        "default: keep the native spacing",
    )
    orientation: str | None = Field(
        None, description="volume: axis codes of the (depth, height, width) axes, nibabel's convention (default RAS)"
    )
    # a volume's window is in physical units (HU for CT) after rescale, mapped onto [0, scale]
    window: Window | None = None
    frames: Literal["refuse", "first", "middle", "max"] = Field(
        "refuse",
        description="kind image/dicom: a multi-frame 2D DICOM (cine, tomosynthesis read as 2D) is refused, "
        "or scored by its first frame, its middle frame (N // 2, 0-based) or the per-pixel maximum over "
        "its frames after rescale (max, grey only)",
    )

    @field_validator("std")
    @classmethod
    def _positive_std(cls, v: list[float]) -> list[float]:
        if any(s <= 0 for s in v):
            raise ValueError("every std must be > 0")
        return v

    @field_validator("spacing")
    @classmethod
    def _positive_spacing(cls, v: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
        if v is not None and any(s <= 0 for s in v):
            raise ValueError("every spacing must be > 0 (mm)")
        return v

    @field_validator("orientation")
    @classmethod
    def _axis_codes(cls, v: str | None) -> str | None:
        if v is None:
            return v
        code = v.strip().upper()
        pairs = [{"L", "R"}, {"A", "P"}, {"S", "I"}]
        if len(code) != 3 or any(sum(c in pair for c in code) != 1 for pair in pairs):
            raise ValueError(
                f"orientation {v!r} is not three axis codes: one of L/R, one of A/P and one of S/I (e.g. RAS, LPS)"
            )
        return code

    @model_validator(mode="after")
    def _kind_fields(self) -> InputSpec:
        if self.kind == "tabular":
            if not self.features:
                raise ValueError("input.kind tabular needs `features`: the manifest columns fed to the model")
        elif self.kind == "volume":
            if self.size is None or len(self.size) != 3:
                raise ValueError("input.kind volume needs `size`: [depth, height, width] voxels")
        else:
            if self.size is None or len(self.size) != 2:
                raise ValueError(f"input.kind {self.kind} needs `size`: [height, width]")
            for name in ("spacing", "orientation"):
                if getattr(self, name) is not None:
                    raise ValueError(f"`{name}` applies to input.kind volume only")
        if self.kind != "tabular":
            for name in ("mean", "std"):
                if len(getattr(self, name)) not in (1, self.channels):
                    raise ValueError(f"`{name}` needs 1 or {self.channels} values (one per channel)")
        return self


#: Default of ``scoring.max_batch_bytes``: the model inputs of one batch (float32) stay within 512 MiB.
DEFAULT_MAX_BATCH_BYTES = 512 * 1024**2


class ScoringSpec(_Strict):
    """How cases are batched for the model."""

    max_batch_bytes: int = Field(
        DEFAULT_MAX_BATCH_BYTES,
        ge=1,
        description="memory bound of one batch's model inputs (float32 bytes): batch size = max(1, "
        "floor(bound / bytes per case)), at most --batch-size; binds for volumes (default 512 MiB)",
    )


class _ModelFields(_Strict):
    """What a model is and how to read it (shared by ``model:`` and ``model.baseline:``)."""

    checkpoint: str | None = Field(None, description="path relative to the protocol file; --checkpoint wins")
    format: Literal["auto", "export", "torchscript", "state_dict", "onnx", "predictions"] = "auto"
    factory: str | None = Field(None, description="'module:function' building the nn.Module for a state dict")
    factory_path: str | None = Field(None, description="folder the factory module is imported from")
    output: Literal["logits", "probabilities"] = "logits"

    @field_validator("factory")
    @classmethod
    def _factory_form(cls, v: str | None) -> str | None:
        if v is not None and (v.count(":") != 1 or not all(v.split(":"))):
            raise ValueError("factory must look like 'module:function'")
        return v


class BaselineSpec(_ModelFields):
    """The model a new one is compared with (``model.baseline``): scored on the same cases, through the
    same scoring cache, for the paired comparison (``comparison.json``) and the ``compare: baseline``
    gates. Paths are relative to the protocol file; ``validate run --baseline PATH`` wins."""


class ModelSpec(_ModelFields):
    baseline: BaselineSpec | None = Field(
        None,
        description="the model in service that this one is compared with (paired comparison, "
        "`compare: baseline` gates); --baseline wins",
    )


class Columns(_Strict):
    """Names of the manifest columns (defaults shown)."""

    case_id: str = "case_id"
    patient_id: str = "patient_id"
    label: str = "label"
    image: str = "image"
    acquired_at: str = "acquired_at"


class Site(_Strict):
    id: str = Field(description=f"site id: {SAFE_NAME_RULE}", json_schema_extra=_SAFE_SCHEMA)
    name: str | None = None
    manifest: str
    image_root: str | None = None
    role: Role = "external"

    @field_validator("id")
    @classmethod
    def _safe_id(cls, v: str) -> str:
        return _safe_name(v, "site id")

    @property
    def display_name(self) -> str:
        return self.name or self.id


class Subgroup(_Strict):
    """A categorical column, a numeric column banded at cut points, or an intersection of subgroups."""

    name: str = Field(description=f"subgroup name: {SAFE_NAME_RULE}", json_schema_extra=_SAFE_SCHEMA)
    column: str | None = None
    bands: list[float] | None = Field(None, description="cut points; bands are [a, b) e.g. <40, 40-59, >=60")
    intersection: list[str] | None = None

    @field_validator("name")
    @classmethod
    def _safe(cls, v: str) -> str:
        return _safe_name(v, "subgroup name")

    @model_validator(mode="after")
    def _one_kind(self) -> Subgroup:
        if (self.column is None) == (self.intersection is None):
            raise ValueError("a subgroup needs exactly one of `column` or `intersection`")
        if self.intersection is not None:
            if self.bands is not None:
                raise ValueError("`bands` applies to a column, not to an intersection")
            if len(self.intersection) < 2:
                raise ValueError("an intersection names at least two subgroups")
        if self.bands is not None:
            if not self.bands or any(b >= a for b, a in pairwise(self.bands)):
                raise ValueError("bands must be one or more strictly increasing cut points")
        return self


class PrecisionSpec(_Strict):
    """Target widths of the intervals (Riley et al. 2021/2024 defaults) and the gate strictness."""

    oe_ratio: float = Field(0.2, gt=0, description="target width of the O/E interval (O/E scale)")
    calibration_slope: float = Field(0.2, gt=0, description="target width of the calibration slope's Wald interval")
    auroc: float = Field(0.1, gt=0, lt=1, description="target width of the C-statistic's (AUROC) interval")
    standardized_net_benefit: float = Field(
        0.2, gt=0, description="target width of the standardised net benefit's interval at each decision threshold"
    )
    insufficient: bool = Field(
        False,
        description="true: a gate row that would pass at a block whose criterion for the gate's metric is not "
        "adequate takes the gate's insufficient policy; false: the shortfall is noted, the verdict unchanged",
    )


class MetricsSpec(_Strict):
    bins: int = Field(15, ge=2, le=1000)
    n_bootstrap: int = Field(1000, ge=0, le=100000)
    ci_level: float = Field(0.95, gt=0, lt=1)
    seed: int = 0
    cluster_by: str | None = "patient_id"
    thresholds: list[float] = Field(default_factory=lambda: [0.5])
    target_sensitivity: float | None = Field(0.9, gt=0, lt=1)
    min_events: int = Field(10, ge=0)
    min_cases: int = Field(30, ge=0)
    precision: PrecisionSpec = Field(default_factory=PrecisionSpec)

    @field_validator("thresholds")
    @classmethod
    def _unit_interval(cls, v: list[float]) -> list[float]:
        if any(not 0 <= t <= 1 for t in v):
            raise ValueError("thresholds are probabilities in [0, 1]")
        return v


class DecisionSpec(_Strict):
    """Decision curve analysis (Vickers & Elkin 2006): the thresholds at which net benefit is reported
    and gateable, and the threshold grid of the decision curve."""

    thresholds: list[float] = Field(
        default_factory=list,
        description="decision thresholds t (0 < t < 1) reported in every binary block and gateable as "
        "`net_benefit@t`, `net_benefit_vs_treat_all@t`, ...",
    )
    range: tuple[float, float] = Field(
        (0.01, 0.5), description="the decision curve's threshold range [low, high], inclusive (0 < low <= high < 1)"
    )
    step: float = Field(0.01, gt=0, lt=1, description="the decision curve's threshold step")

    @field_validator("thresholds")
    @classmethod
    def _open_unit_interval(cls, v: list[float]) -> list[float]:
        if any(not 0 < t < 1 for t in v):
            raise ValueError("decision thresholds are probabilities strictly between 0 and 1")
        if len(set(v)) != len(v):
            raise ValueError("decision thresholds are listed once each")
        return v

    @field_validator("range")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1] < 1:
            raise ValueError("range is [low, high] with 0 < low <= high < 1")
        return v

    @model_validator(mode="after")
    def _grid_size(self) -> DecisionSpec:
        if (self.range[1] - self.range[0]) / self.step > 1000:
            raise ValueError("the decision curve's grid would hold more than 1,000 thresholds: widen `step`")
        return self


class CalibrationSpec(_Strict):
    designs: list[Literal["held-out", "local", "transfer", "sample-size"]] = Field(default_factory=lambda: ["held-out"])
    methods: list[str] = Field(default_factory=lambda: ["temperature"])
    fit_on: list[str] | None = Field(None, description="default: sites with role calibration, else development")
    fit_fraction: float = Field(1.0, gt=0, le=1)
    repeats: int = Field(20, ge=1, le=10000)
    sample_sizes: list[int] = Field(default_factory=lambda: [25, 50, 100, 200, 500])
    seed: int = 0


class FairnessSpec(_Strict):
    """The fairness analysis (``fairness.json``): the reference group of each subgroup, against which
    every group's gaps and ratios are taken (default: the largest group pooled over sites, not missing)."""

    reference: dict[str, str] = Field(
        default_factory=dict,
        description="subgroup name -> its reference group, e.g. {sex: male}; default the largest group",
    )


class ReportSpec(_Strict):
    """What `validate run` writes beside ``report.html``: ``report.pdf`` (printed by headless Chromium,
    :mod:`validate.report.pdf`; needs the ``pdf`` extra and a Chromium, checked before scoring)."""

    pdf: bool = Field(False, description="also write report.pdf into the bundle (needs playwright and Chromium)")
    paper: Literal["a4", "letter"] = Field("a4", description="paper size of report.pdf: a4 (default) or letter")


class EmptyMaskPolicy(_Strict):
    """What a case whose reference and/or prediction is empty scores (Metrics Reloaded, Maier-Hein et
    al., Nature Methods 2024). Both empty: ``perfect`` (Dice = IoU = NSD = 1, distances 0) or
    ``exclude`` (the case is dropped from the means and counted as excluded). Exactly one empty:
    ``worst`` (overlaps 0, every distance the image diagonal in mm), so a missed or hallucinated
    structure never drops out of a mean."""

    both: Literal["perfect", "exclude"] = "perfect"
    one: Literal["worst"] = "worst"


class SegmentationSpec(_Strict):
    """How a segmentation model's output is compared with the reference mask of each case."""

    mask_column: str = Field(
        "mask", description="manifest column: the reference mask's path, relative to the site's image root"
    )
    label_values: dict[str, int] | None = Field(
        None,
        description="pixel value of each label in the mask; default label i (0-based) -> i + 1. A 0/255 "
        "binary mask: {<label>: 255}. 0 is the background",
    )
    activation: Literal["sigmoid", "softmax"] = Field(
        "sigmoid",
        description="sigmoid: the model outputs [N, L, H, W], one logit map per label; softmax: [N, L + 1, H, W], "
        "channel 0 the background",
    )
    spacing_column: str | None = Field(
        None, description="manifest column: isotropic pixel size in mm (else spacing_columns, else DICOM PixelSpacing)"
    )
    spacing_columns: tuple[str, str] | None = Field(
        None, description="manifest columns: pixel size in mm along [y, x] (rows, columns)"
    )
    nsd_tolerances_mm: list[float] = Field(
        default_factory=lambda: [2.0],
        description="tolerances (mm) of the normalised surface Dice: metric keys nsd_2mm, nsd_1p5mm, ...",
    )
    empty: EmptyMaskPolicy = Field(default_factory=EmptyMaskPolicy)
    biometry: Literal["ellipse_circumference"] | None = Field(
        None,
        description="ellipse_circumference: an ellipse fitted to each mask (moments), its perimeter "
        "(Ramanujan) compared: hc_ref_mm, hc_pred_mm, hc_error_mm, hc_abs_error_mm",
    )
    threshold: float = Field(0.5, gt=0, lt=1, description="probability at or above which a pixel is predicted")
    pixel_sample: int = Field(
        512, ge=1, le=1_000_000, description="pixels sampled per case and label for temperature scaling"
    )
    worst_cases: int = Field(6, ge=0, le=100, description="per site and label: overlays kept for the lowest-Dice cases")

    @field_validator("nsd_tolerances_mm")
    @classmethod
    def _tolerances(cls, v: list[float]) -> list[float]:
        if any(t <= 0 for t in v):
            raise ValueError("every NSD tolerance is a positive distance in mm")
        from validate.metrics.segmentation import nsd_key  # the metrics' own rule: the keys gates name

        keys = [nsd_key(t) for t in v]
        if len(set(keys)) != len(keys):
            raise ValueError("NSD tolerances are listed once each")
        return v

    @field_validator("label_values")
    @classmethod
    def _values(cls, v: dict[str, int] | None) -> dict[str, int] | None:
        if v is None:
            return v
        if any(not 1 <= x <= 65535 for x in v.values()):
            raise ValueError("a label's pixel value is an integer in 1..65535 (0 is the background)")
        if len(set(v.values())) != len(v):
            raise ValueError("two labels share a pixel value")
        return v

    @model_validator(mode="after")
    def _one_spacing_source(self) -> SegmentationSpec:
        if self.spacing_column is not None and self.spacing_columns is not None:
            raise ValueError("give `spacing_column` (isotropic) or `spacing_columns` ([y, x]), not both")
        return self

    @property
    def nsd_keys(self) -> list[str]:
        """The metric keys of the NSD tolerances, in protocol order."""
        from validate.metrics.segmentation import nsd_key

        return [nsd_key(t) for t in self.nsd_tolerances_mm]

    def values_of(self, labels: list[str]) -> dict[str, int]:
        """Each label's pixel value in the mask (the declared ones, else label i -> i + 1)."""
        if self.label_values is not None:
            return {lab: self.label_values[lab] for lab in labels}
        return {lab: i + 1 for i, lab in enumerate(labels)}

    def channels(self, n_labels: int) -> int:
        """Channels of the model's output: one per label (sigmoid), plus the background (softmax)."""
        return n_labels + (1 if self.activation == "softmax" else 0)


class SynthesisSpec(_Strict):
    """The random-effects synthesis across sites (validate.analysis.synthesis)."""

    sites: Literal["external", "all"] | list[str] = Field(
        "external", description="the sites pooled: external (role external; default), all, or a list of site ids"
    )
    method: Literal["REML", "DL"] = Field("REML", description="τ² estimator: REML (default) or DerSimonian-Laird")
    interval: Literal["hksj", "z"] = Field(
        "hksj", description="interval of the pooled estimate: Hartung-Knapp-Sidik-Jonkman (default) or normal"
    )


class Gate(_Strict):
    name: str | None = None
    metric: str
    scope: str = "overall"
    min: float | None = None
    max: float | None = None
    on: Literal["estimate", "ci_low", "ci_high", "pi_low", "pi_high"] = Field(
        "estimate", description="pi_low/pi_high: the prediction interval for a new site (scope across_sites only)"
    )
    calibration: str | None = None
    insufficient: Literal["fail", "warn", "pass"] = "warn"
    compare: Literal["baseline"] | None = Field(
        None,
        description="baseline: judge the difference new − baseline (comparison.json) with its paired "
        "interval, e.g. min -0.02 on ci_low = non-inferior with margin 0.02",
    )

    @field_validator("min", "max", mode="before")
    @classmethod
    def _a_number(cls, v: Any) -> Any:
        # YAML `min: true` would otherwise be read as the bound 1.0
        if isinstance(v, bool):
            raise ValueError(f"a bound is a number, not {str(v).lower()}")
        return v

    @field_validator("scope")
    @classmethod
    def _scope_form(cls, v: str) -> str:
        kind, _, attr = v.partition(":")
        if kind not in GATE_SCOPES:
            raise ValueError(f"scope must be one of {', '.join(GATE_SCOPES)} (subgroup scopes as kind:<attribute>)")
        if kind in PLAIN_SCOPES and attr:
            raise ValueError(f"scope {kind} takes no attribute")
        if kind not in PLAIN_SCOPES and kind != "each_attribute" and not attr:
            raise ValueError(f"scope {kind} needs an attribute: {kind}:<subgroup name>")
        return v

    @model_validator(mode="after")
    def _one_bound(self) -> Gate:
        if (self.min is None) == (self.max is None):
            raise ValueError("a gate needs exactly one of `min` or `max`")
        return self

    @model_validator(mode="after")
    def _prediction_interval_scope(self) -> Gate:
        across = self.scope == "across_sites"
        if self.on in ("pi_low", "pi_high") and not across:
            raise ValueError(f"on: {self.on} (the prediction interval for a new site) needs scope across_sites")
        if across and (self.calibration is not None or self.compare is not None):
            raise ValueError(
                "a gate with scope across_sites judges the synthesis as scored: no `calibration` or `compare`"
            )
        return self

    @model_validator(mode="after")
    def _comparison_scope(self) -> Gate:
        if self.compare is None:
            return self
        kind = self.scope.partition(":")[0]
        if kind not in COMPARISON_SCOPES:
            raise ValueError(
                f"a gate with `compare: baseline` has scope overall, each_site or each_subgroup:<attribute>, not {kind}"
            )
        if self.calibration is not None:
            raise ValueError("a gate with `compare: baseline` compares the models as scored; it takes no `calibration`")
        return self

    @property
    def threshold(self) -> float:
        return self.min if self.min is not None else self.max  # type: ignore[return-value]

    @property
    def direction(self) -> str:
        return "min" if self.min is not None else "max"

    @property
    def label(self) -> str:
        vs = " vs baseline" if self.compare else ""
        return self.name or f"{self.metric}{vs} {self.scope} {self.direction} {self.threshold}"

    @property
    def compares(self) -> bool:
        """Whether the gate judges the difference from the baseline model (``compare: baseline``)."""
        return self.compare is not None


class Protocol(_Strict):
    """A validation protocol. ``path`` (not a YAML key) is the file it was loaded from."""

    name: str = Field(
        description=f"protocol name (default bundle folder runs/<name>-<time>): {SAFE_NAME_RULE}",
        json_schema_extra=_SAFE_SCHEMA,
    )
    version: str = "1"
    description: str | None = None
    task: Task
    classes: list[str] | None = None
    positive_class: str | None = None
    labels: list[str] | None = None
    input: InputSpec
    segmentation: SegmentationSpec | None = Field(
        None, description="task segmentation: how masks are read and compared (required for that task)"
    )
    model: ModelSpec = Field(default_factory=ModelSpec)
    scoring: ScoringSpec = Field(default_factory=ScoringSpec)
    columns: Columns = Field(default_factory=Columns)
    sites: list[Site] = Field(min_length=1)
    attributes: list[str] = Field(default_factory=list)
    subgroups: list[Subgroup] = Field(default_factory=list)
    metrics: MetricsSpec = Field(default_factory=MetricsSpec)
    calibration: CalibrationSpec = Field(default_factory=CalibrationSpec)
    decision: DecisionSpec | None = Field(
        None, description="decision curve analysis: net benefit at decision thresholds (binary blocks)"
    )
    gates: list[Gate] = Field(default_factory=list)
    synthesis: SynthesisSpec | None = Field(
        None, description="random-effects synthesis across sites (binary); also made for an across_sites gate"
    )
    fairness: FairnessSpec = Field(default_factory=FairnessSpec)
    report: ReportSpec = Field(default_factory=ReportSpec)
    keep_case_ids: bool = False

    _path: Path | None = PrivateAttr(None)
    _sha256: str | None = PrivateAttr(None)
    _lines: dict = PrivateAttr(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _safe(cls, v: str) -> str:
        return _safe_name(v, "protocol name")

    @model_validator(mode="after")
    def _consistent(self) -> Protocol:
        problems = _segmentation_problems(self) if self.task == "segmentation" else []
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
        elif self.task == "multilabel":
            if not self.labels:
                problems.append("`labels` is required for a multilabel task")
            if self.classes:
                problems.append("`classes` is for binary/multiclass tasks; use `labels`")
        if self.segmentation is not None and self.task != "segmentation":
            problems.append("the `segmentation` section applies to task: segmentation only")
        if self.positive_class is not None and self.task != "segmentation":
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
    def path(self) -> Path | None:
        return self._path

    @property
    def sha256(self) -> str | None:
        return self._sha256

    @property
    def base_dir(self) -> Path:
        return self._path.parent if self._path else Path.cwd()

    def resolve(self, relative: str | None) -> Path | None:
        """A path from the protocol, resolved against the protocol file's folder."""
        if relative is None:
            return None
        p = Path(relative).expanduser()
        return (p if p.is_absolute() else self.base_dir / p).resolve()

    @property
    def positive(self) -> str | None:
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
    def comparison_gates(self) -> list[Gate]:
        """The gates that judge the difference from the baseline model (``compare: baseline``)."""
        return [g for g in self.gates if g.compares]

    @property
    def calibration_fit_sites(self) -> list[str]:
        if self.calibration.fit_on:
            return list(self.calibration.fit_on)
        cal = self.sites_with_role("calibration")
        return [s.id for s in (cal or self.sites_with_role("development"))]

    def line_of(self, *loc: Any) -> int | None:
        """1-based YAML line of a key path such as ("sites", 0, "manifest"), or of its nearest parent."""
        loc = tuple(loc)
        while loc:
            if loc in self._lines:
                return self._lines[loc]
            loc = loc[:-1]
        return None


def _segmentation_problems(p: Protocol) -> list[str]:
    """What a segmentation protocol must hold: foreground labels, the segmentation section, a 2D image
    input, and no classification keys (a mask has no classes or positive class)."""
    problems = []
    if not p.labels:
        problems.append("`labels` is required for a segmentation task: the foreground labels of the masks")
    elif len(set(p.labels)) != len(p.labels):
        problems.append("`labels` has duplicate names")
    for key in ("classes", "positive_class"):
        if getattr(p, key) is not None:
            problems.append(f"`{key}` does not apply to a segmentation task; name the mask's labels under `labels`")
    if p.segmentation is None:
        problems.append("a segmentation task needs the `segmentation` section (at least its `mask_column`)")
    elif p.labels and p.segmentation.label_values is not None:
        missing = [lab for lab in p.labels if lab not in p.segmentation.label_values]
        extra = sorted(set(p.segmentation.label_values) - set(p.labels))
        if missing:
            problems.append(f"segmentation.label_values gives no pixel value for label(s) {', '.join(missing)}")
        if extra:
            problems.append(f"segmentation.label_values names {', '.join(extra)}, which `labels` does not list")
    if p.input.kind not in ("image", "dicom"):
        problems.append(f"a segmentation task reads 2D images (input.kind image or dicom), not {p.input.kind}")
    return problems


# ---- loading -----------------------------------------------------------------------------------

#: Deepest nesting a protocol may have (a real one is about 5 deep). PyYAML composes nodes recursively,
#: so a hostile ``[[[[...]]]]`` would otherwise end in a RecursionError.
MAX_DEPTH = 50
#: Most YAML nodes a protocol may expand to, aliases counted each time they are used. Aliases are
#: legitimate, but ten lines of nested aliases ("billion laughs") expand to 10^9 nodes.
MAX_EXPANDED_NODES = 100_000
#: Largest protocol file read (a real one is a few KiB).
MAX_BYTES = 4 * 1024 * 1024


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. YAML 1.1 also reads `on`, `off`, `yes`, `no` as booleans,
    which would turn the gate key `on:` into True.

    Composition is bounded: nesting deeper than :data:`MAX_DEPTH` is refused while it is read, before
    the recursive composer can overflow the stack."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise _TooDeep(mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _TooDeep(Exception):
    def __init__(self, line: int):
        super().__init__(line)
        self.line = line


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _compose(text: str, file: Path) -> yaml.Node | None:
    """The YAML node graph of ``text`` (aliases are shared nodes), nesting bounded."""
    loader = _Loader(text)
    try:
        return loader.get_single_node()
    except _TooDeep as exc:
        raise InputError(
            f"nested too deeply (more than {MAX_DEPTH} levels)",
            file=file,
            line=exc.line,
            expected="a protocol a few levels deep",
        ) from None
    finally:
        loader.dispose()


def _construct(root: yaml.Node) -> Any:
    """Python data from a checked node graph (see :func:`_inspect_nodes`)."""
    loader = _Loader("")
    try:
        return loader.construct_document(root)
    finally:
        loader.dispose()


def _inspect_nodes(root: yaml.Node, file: Path) -> None:
    """Refuse what YAML allows but a protocol must not hold: a key repeated in one mapping (the later
    one would silently win), aliases that expand past :data:`MAX_EXPANDED_NODES` nodes or past
    :data:`MAX_DEPTH` levels, and an alias inside its own anchor (a cycle).

    Each node is visited once (aliases share nodes), so the check is linear in the file however far
    its aliases expand."""
    size: dict[int, int] = {}  # node id -> nodes it expands to
    height: dict[int, int] = {}  # node id -> levels it expands to
    open_: set[int] = set()
    problems: list[InputError] = []

    def visit(node: yaml.Node, depth: int) -> None:
        key = id(node)
        if key in open_:
            raise InputError(
                "an alias refers to a node that contains it (a cycle)",
                file=file,
                line=node.start_mark.line + 1,
                expected="aliases to complete, earlier nodes",
            )
        if key not in size:
            open_.add(key)
            children: list = []
            if isinstance(node, yaml.MappingNode):
                seen: dict[tuple, int] = {}
                for k, v in node.value:
                    children += [k, v]
                    if isinstance(k, yaml.ScalarNode):
                        ident = _key_identity(k)
                        line = k.start_mark.line + 1
                        if ident in seen and k.value != "<<":
                            problems.append(
                                InputError(
                                    f"duplicate key `{k.value}`: first at line {seen[ident]}, again at line {line}",
                                    file=file,
                                    line=line,
                                    field=k.value,
                                    expected="each key once per mapping (the later one would silently win)",
                                )
                            )
                        seen.setdefault(ident, line)
            elif isinstance(node, yaml.SequenceNode):
                children = list(node.value)
            total, tallest = 1, 0
            for child in children:
                visit(child, depth + 1)
                total += size[id(child)]
                tallest = max(tallest, height[id(child)])
                if total > MAX_EXPANDED_NODES:
                    break
            open_.discard(key)
            size[key], height[key] = total, tallest + 1
        if size[key] > MAX_EXPANDED_NODES:
            raise InputError(
                f"aliases expand to more than {MAX_EXPANDED_NODES} values",
                file=file,
                line=node.start_mark.line + 1,
                expected="a protocol without an alias bomb",
            )
        if depth + height[key] > MAX_DEPTH + 1:
            raise InputError(
                f"nested too deeply once aliases are expanded (more than {MAX_DEPTH} levels)",
                file=file,
                line=node.start_mark.line + 1,
                expected="a protocol a few levels deep",
            )

    visit(root, 0)
    if problems:
        raise InputErrors(problems)


def _key_identity(key: yaml.ScalarNode) -> Any:
    """What a scalar key reads as, compared as the mapping built from it will compare it (``~`` and
    ``null`` are one key, as are ``16``, ``0x10`` and ``16.0``)."""
    if key.tag == "tag:yaml.org,2002:str":
        return key.value
    loader = _Loader("")
    try:
        value = loader.construct_object(key)
        hash(value)
        return value
    except (yaml.YAMLError, TypeError, ValueError):
        return (key.tag, key.value)
    finally:
        loader.dispose()


def _yaml_lines(root: yaml.Node | None) -> dict[tuple, int]:
    """Map each key path of a YAML document to the 1-based line where its key (or item) starts."""
    lines: dict[tuple, int] = {}

    def walk(node: yaml.Node, path: tuple) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else str(k.start_mark.line + 1)
                lines[path + (key,)] = k.start_mark.line + 1
                walk(v, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[path + (i,)] = item.start_mark.line + 1
                walk(item, path + (i,))

    if root is not None:
        walk(root, ())
    return lines


def _model_at(loc: tuple) -> type[BaseModel] | None:
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


def _describe(err: dict) -> tuple[str, str | None]:
    kind = err["type"]
    if kind == "missing":
        return "required key is missing", None
    if kind.startswith("literal_error"):
        expected = err.get("ctx", {}).get("expected")
        return f"invalid value {err.get('input')!r}", f"one of {expected}"
    if kind == "value_error":
        return str(err.get("ctx", {}).get("error", err["msg"])), None
    msg = err["msg"]
    return f"{msg} (got {err.get('input')!r})" if "input" in err and not isinstance(
        err["input"], (dict, list)
    ) else msg, None


def _errors_from_validation(exc: ValidationError, file: Path, lines: dict) -> list[InputError]:
    out = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        field = (
            ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc).replace(".[", "[") or "(top level)"
        )
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


def load_protocol(path: str | Path, *, problems: list | None = None) -> Protocol:
    """Read and validate a protocol file; raise :class:`InputErrors` listing every problem.

    With ``problems`` (a list), cross-reference problems are appended to it instead of raised, so that
    ``validate check`` can go on to the manifests and report everything in one pass.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("protocol file not found", file=path, expected="a YAML protocol file")
    if path.is_dir():
        raise InputError("is a folder, not a protocol file", file=path, expected="a YAML protocol file")
    if path.stat().st_size > MAX_BYTES:
        raise InputError(
            f"protocol file is larger than {MAX_BYTES // (1024 * 1024)} MiB",
            file=path,
            expected="a YAML protocol file of a few KiB",
        )
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=path) from None
    try:
        root = _compose(text, path)
        if root is not None:
            _inspect_nodes(root, path)
        lines = _yaml_lines(root)  # before construction, which rewrites merge keys (<<) in place
        data = _construct(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(f"not valid YAML: {problem}", file=path, line=mark.line + 1 if mark else None) from None
    if not isinstance(data, dict):
        raise InputError(
            "the protocol must be a YAML mapping of keys (name, task, input, sites, ...)",
            file=path,
            expected="a mapping at the top level",
        )
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
                    problems.append(
                        InputError(
                            f"intersection names `{name}`, which is not a subgroup declared above it",
                            file=file,
                            line=p.line_of("subgroups", i, "intersection"),
                            field=f"subgroups[{i}].intersection",
                            expected=f"one of {sorted(known) or 'the subgroups listed before this one'}",
                        )
                    )
        known.add(g.name)
    for i, site in enumerate(p.calibration.fit_on or []):
        if site not in site_ids:
            near = difflib.get_close_matches(site, sorted(site_ids), n=1)
            problems.append(
                InputError(
                    f"unknown site `{site}`" + (f"; did you mean `{near[0]}`?" if near else ""),
                    file=file,
                    line=p.line_of("calibration", "fit_on", i),
                    field=f"calibration.fit_on[{i}]",
                    expected=f"one of {sorted(site_ids)}",
                )
            )
    if (
        "held-out" in p.calibration.designs
        and p.calibration.methods
        and not p.calibration.fit_on
        and not (p.sites_with_role("calibration") or p.sites_with_role("development"))
    ):
        problems.append(
            InputError(
                "no site to fit calibration on",
                file=file,
                line=p.line_of("sites"),
                field="sites",
                expected="a site with role development or calibration, or calibration.fit_on",
            )
        )
    problems += _attribute_problems(p)
    problems += _synthesis_site_problems(p, site_ids)
    problems += _fairness_problems(p, known)
    for i, gate in enumerate(p.gates):
        kind, _, attr = gate.scope.partition(":")
        if attr and attr not in known:
            near = difflib.get_close_matches(attr, sorted(known), n=1)
            problems.append(
                InputError(
                    f"scope names subgroup `{attr}`, which is not declared"
                    + (f"; did you mean `{kind}:{near[0]}`?" if near else ""),
                    file=file,
                    line=p.line_of("gates", i, "scope"),
                    field=f"gates[{i}].scope",
                    expected=f"one of {sorted(known) or 'the names under subgroups'}",
                )
            )
        if (
            gate.calibration is not None
            and gate.calibration != "none"
            and gate.calibration not in p.calibration.methods
        ):
            problems.append(
                InputError(
                    f"gate is judged after calibration `{gate.calibration}`, which calibration.methods does not fit",
                    file=file,
                    line=p.line_of("gates", i, "calibration"),
                    field=f"gates[{i}].calibration",
                    expected=f"one of {p.calibration.methods}",
                )
            )
    if problems:
        raise InputErrors(problems)


def _synthesis_site_problems(p: Protocol, site_ids: set[str]) -> list[InputError]:
    """A ``synthesis`` section of a task that is not binary, and a site listed under ``synthesis.sites``
    that the protocol does not declare."""
    listed = p.synthesis.sites if p.synthesis is not None and isinstance(p.synthesis.sites, list) else []
    problems = []
    if p.synthesis is not None and p.task != "binary":
        problems.append(
            InputError(
                f"the synthesis across sites pools binary metrics; this task is {p.task}",
                file=p.path,
                line=p.line_of("synthesis"),
                field="synthesis",
                expected="no synthesis section, or task: binary",
            )
        )
    for i, site in enumerate(listed):
        if site not in site_ids:
            near = difflib.get_close_matches(site, sorted(site_ids), n=1)
            problems.append(
                InputError(
                    f"unknown site `{site}`" + (f"; did you mean `{near[0]}`?" if near else ""),
                    file=p.path,
                    line=p.line_of("synthesis", "sites", i),
                    field=f"synthesis.sites[{i}]",
                    expected=f"one of {sorted(site_ids)}",
                )
            )
    return problems


#: Columns of a site's standard case table (validate.cohort) that an attribute of the same name would
#: overwrite: declaring `attributes: [site]` would replace the site of every case by a manifest column.
RESERVED_COLUMNS = ("case_id", "patient_id", "site", "y", "image_path", "acquired_at")
#: Columns of a segmentation predictions row besides the ids (validate.scoring.segmentation).
SEGMENTATION_ROW_COLUMNS = (
    "label", "mask_path", "spacing_y_mm", "spacing_x_mm", "dice", "iou", "hd_mm", "hd95_mm", "assd_mm",
    "area_ref_mm2", "area_pred_mm2", "area_error_mm2", "area_expected_mm2", "ref_empty", "pred_empty",
    "hc_ref_mm", "hc_pred_mm", "hc_error_mm", "hc_abs_error_mm",
)  # fmt: skip


def _fairness_problems(p: Protocol, known: set[str]) -> list[InputError]:
    """``fairness.reference`` names declared subgroups (a banded subgroup's group is checked against its
    bands by :mod:`validate.preflight`, a categorical one against the data when the analysis runs)."""
    problems = []
    for attr in p.fairness.reference:
        if attr not in known:
            problems.append(
                InputError(
                    f"fairness reference names subgroup `{attr}`, which is not declared",
                    file=p.path,
                    line=p.line_of("fairness", "reference", attr),
                    field=f"fairness.reference.{attr}",
                    expected=f"one of {sorted(known) or 'the names under subgroups'}",
                )
            )
    return problems


def _attribute_problems(p: Protocol) -> list[InputError]:
    """Attributes and subgroup columns are copied into predictions, metrics and the bundle: none may be
    an identifier column (its raw values, e.g. MRNs, would be written out as attributes or group
    names) or take the name of a standard case column."""
    problems = []
    ids = {p.columns.case_id: "columns.case_id", p.columns.patient_id: "columns.patient_id"}
    label_cols = {f"y_{lab}" for lab in p.labels or []}
    if p.task == "segmentation":  # columns of a segmentation row that an attribute would overwrite
        label_cols |= set(SEGMENTATION_ROW_COLUMNS)
    used = [(f"attributes[{i}]", ("attributes", i), a) for i, a in enumerate(p.attributes)]
    used += [
        (f"subgroups[{i}].column", ("subgroups", i, "column"), g.column) for i, g in enumerate(p.subgroups) if g.column
    ]
    for field, loc, column in used:
        if column in ids:
            problems.append(
                InputError(
                    f"`{column}` is the identifier column ({ids[column]}): its raw values would be written into "
                    "predictions and bundles",
                    file=p.path,
                    line=p.line_of(*loc),
                    field=field,
                    expected="a case attribute that does not identify a patient",
                )
            )
        elif column in RESERVED_COLUMNS or column in label_cols:
            problems.append(
                InputError(
                    f"`{column}` is the name of a standard case column, which this attribute would overwrite",
                    file=p.path,
                    line=p.line_of(*loc),
                    field=field,
                    expected=f"another column name (not {', '.join(RESERVED_COLUMNS)}, y_<label> or a "
                    "segmentation row's column)",
                )
            )
    return problems


def json_schema() -> dict:
    schema = Protocol.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "validate protocol"
    return schema


if __name__ == "__main__":  # python -m validate.protocol > protocols/schema.json
    print(json.dumps(json_schema(), indent=2, sort_keys=True))
