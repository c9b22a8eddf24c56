"""The bundle contract: what each JSON file of a results bundle holds, typed and versioned.

A results bundle is the interface between the engine (``validate run``, ``validate gate``) and every
presentation (``report.html``, the dashboard, a reviewer's notebook). This module states that interface
once, as pydantic models, one per file:

==================  ===========================  ==========================================
file                schema id                    model
==================  ===========================  ==========================================
metrics.json        ``validate.metrics/1``       :class:`MetricsFile`
calibration.json    ``validate.calibration/1``   :class:`CalibrationFile`
curves.json         ``validate.curves/1``        :class:`CurvesFile`
subgroups.json      ``validate.subgroups/1``     :class:`SubgroupsFile`
sites.json          ``validate.sites/1``         :class:`SitesFile`
shift.json          ``validate.shift/1``         :class:`ShiftFile`
gates.json          ``validate.gates/1``         :class:`GatesFile`
cases.json          ``validate.cases/1``         :class:`CasesFile`
provenance.json     ``validate.provenance/1``    :class:`ProvenanceFile`
comparison.json     ``validate.comparison/1``    :class:`ComparisonFile` (only with a baseline model)
fairness.json       ``validate.fairness/1``      :class:`FairnessFile` (binary tasks with subgroups)
==================  ===========================  ==========================================

Each file carries its id in a top-level ``schema`` field (``shift.json`` has done so since its first
version; the others gained it with version 1). The JSON Schemas in ``schemas/bundle/`` are generated
from these models (``python -m validate.contract schemas/bundle``, ``make schema``) and are the public
contract for tools outside this package.

Rules a reader relies on:

- **Required keys are exact.** A key a reader needs (the structure presentation walks: ``sites``,
  ``overall``, a block's ``n``, a gate row's ``verdict`` ...) is required; a bundle missing it, or
  holding it under another name, is refused with the file and the key path, never shown as "no data".
- **Open parts stay open.** Per-site, per-subgroup and per-method maps are keyed by the protocol's own
  names, and a metric BLOCK holds one entry per metric (the metric set grows with the engine); those
  are typed as maps and extra keys. Keys a reader does not know are kept (an addition within a version).
- **Versions.** Renaming or removing a key, or changing its meaning, is a new version. A file of a newer
  version than this package reads, or whose id names another file, is refused (exit 2, naming file and
  id). A file without a ``schema`` field is version 0 (bundles written before the contract was
  versioned): version 1 only added the field, so it is read as version 1 and validated the same way.
- **Writing.** :func:`for_writing` adds the id and validates the content before it reaches the disk;
  content that breaks the contract is an internal error (:class:`ContractViolation`, exit 3) — the
  engine must never write a bundle its own readers refuse. The bytes written are those of the engine's
  dict plus the ``schema`` field (the model is a check, not a re-serialisation), so numbers round-trip
  exactly as before.
- **Not computed.** ``calibration.json`` is ``{}`` when the protocol runs no calibration comparison
  and ``shift.json`` is ``{"reason": ...}`` when there is no development/external pair; these read as
  :class:`NotComputed` (``computed`` is False, ``reason`` says why) A site or combined
  bundle (provenance ``bundle_kind``) writes ``calibration.json`` as ``{"reason": ...}`` too.
- **Pooled blocks absent.** A site bundle (one site's results, made where the data stays) and a
  combined bundle (site bundles merged by ``validate combine``) hold no patient-level pooled block:
  ``overall`` of metrics.json and curves.json is ``{"not_computed": true, "reason": ...}``
  (:class:`PooledAbsent`; :func:`pooled_block` gives None for it). Central bundles never hold one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, cast

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from validate.errors import InputError

Task = Literal["binary", "multiclass", "multilabel", "segmentation"]
Verdict = Literal["pass", "warn", "fail"]
Number = float | None
SCHEMA_ID = re.compile(r"^validate\.([a-z_]+)/(\d+)$")


class ContractViolation(Exception):
    """The engine produced content that breaks the bundle contract (an internal error: exit 3)."""


class _Part(BaseModel):
    """A part of a bundle file: declared keys typed, unknown keys kept (additions within a version)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def extra(self, key: str, default: Any = None) -> Any:
        """An undeclared key (e.g. a metric entry of a BLOCK), or ``default``."""
        return (self.model_extra or {}).get(key, default)


class _File(_Part):
    """A bundle JSON file: its contract name and version, and the ``schema`` id it carries."""

    NAME: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    computed: ClassVar[bool] = True

    schema_id: str | None = Field(
        default=None, alias="schema", description='"validate.<name>/<version>"; absent in version 0 files'
    )

    @classmethod
    def schema_name(cls) -> str:
        return f"validate.{cls.NAME}/{cls.VERSION}"


class NotComputed(_Part):
    """A file the engine writes when its analysis did not run (``{}`` or ``{"reason": ...}``)."""

    computed: ClassVar[bool] = False
    schema_id: str | None = Field(default=None, alias="schema")
    reason: str | None = None


# ---- shared pieces ------------------------------------------------------------------------------------


class Entry(_Part):
    """A number with its interval: ``{"estimate", "ci_low", "ci_high", "method"}`` (any may be null).

    ``note``: why the estimate lies outside its interval, where it does (:func:`validate.metrics.
    ece_interval.with_note`); ``debiased``: ECE and adaptive ECE's debiased estimate (Kumar et al. 2019;
    :mod:`validate.metrics.ece_interval`, whose ``method`` ``"bootstrap_bound"`` / ``"wilson_bonferroni"``
    name their intervals)."""

    estimate: Number = None
    ci_low: Number = None
    ci_high: Number = None
    method: str | None = None
    note: str | None = None
    debiased: Number = None


class OperatingPoint(_Part):
    """Sensitivity, specificity, PPV and NPV (entries, as extra keys) at one threshold."""

    threshold: Number


class PrecisionCriterion(_Part):
    """One precision criterion of a binary BLOCK (Riley et al. 2021): the achieved interval width of
    ``metric`` (at ``threshold`` for the net benefit) against the protocol's target, and the n the target
    needs given the block's own prevalence, C, logits and sensitivity/specificity."""

    metric: str
    threshold: Number = None
    width: Number = None
    target: float
    adequate: bool
    needed_n: int | None = None
    needed_events: int | None = None
    n: int
    basis: str


class Precision(_Part):
    """A binary BLOCK's precision adequacy: ``adequate`` when every criterion reaches its target;
    ``reason`` the shortfalls; ``insufficient`` the protocol's gate strictness
    (``metrics.precision.insufficient``)."""

    adequate: bool
    criteria: list[PrecisionCriterion] = []
    reason: str | None = None
    insufficient: bool = False


class DecisionEntry(Entry):
    """A net-benefit entry: an :class:`Entry` with ``se``, the sd (ddof = 1) of its bootstrap replicates
    (null without replicates)."""

    se: Number = None


class DecisionItem(_Part):
    """The net-benefit family at one decision threshold (:mod:`validate.metrics.net_benefit`): entries
    (null where undefined, the reason under the block's ``undefined`` as ``"<metric>@<t>"``), the
    block's prevalence, and ``beats_defaults``, the share of bootstrap replicates in which NB > max(0,
    NB_all) (a descriptive share, not a p-value; null without replicates)."""

    threshold: float
    prevalence: Number = None
    net_benefit: DecisionEntry | None = None
    net_benefit_treat_all: DecisionEntry | None = None
    net_benefit_vs_treat_all: DecisionEntry | None = None
    interventions_avoided: DecisionEntry | None = None
    standardized_net_benefit: DecisionEntry | None = None
    beats_defaults: Number = None


class Block(_Part):
    """A metric BLOCK (DESIGN.md, Metrics JSON): ``n`` and one entry per metric as extra keys.

    ``insufficient`` marks a block with too few cases or events for a trustworthy estimate (its
    numbers are kept); ``undefined`` maps a metric to why it could not be computed.
    """

    n: int
    n_events: Any = None  # an int; per class or label a map
    prevalence: Any = None
    insufficient: bool = False
    reason: str | None = None
    undefined: dict[str, Any] = {}
    operating_points: list[OperatingPoint] = []
    target_sensitivity: dict[str, Any] | None = None
    precision: Precision | None = None
    decision: list[DecisionItem] | None = None  # binary blocks, only with the protocol's decision thresholds
    classes: dict[str, Block] | None = None
    labels: dict[str, Block] | None = None

    def metric(self, name: str) -> Any:
        """The entry of metric ``name`` (a dict: an :class:`Entry`'s keys, or ``statistic``/``p_value``)."""
        return self.extra(name)


class PooledAbsent(_Part):
    """Where a pooled patient-level block would be, in a site or combined bundle (``bundle_kind``
    ``site``/``combined`` in provenance.json): pooling patients needs every site's cases, which never
    leave their site; ``reason`` says so. Central bundles never hold one."""

    not_computed: Literal[True]
    reason: str


def _pooled_tag(value: Any) -> str:
    """Which model a pooled ``overall`` is: absent (``not_computed``) or the block/curves itself."""
    if isinstance(value, dict):
        return "absent" if "not_computed" in value else "pooled"
    return "absent" if isinstance(value, PooledAbsent) else "pooled"


# the tag only picks the model (the error locations drop it: see _key_path)
_POOLED_TAGS = ("pooled", "absent")


def is_pooled_absent(value: Any) -> bool:
    """Whether a pooled ``overall`` (a dict or a model) is the :class:`PooledAbsent` of a site or
    combined bundle: the readers show its reason instead of a block."""
    if isinstance(value, PooledAbsent):
        return True
    return isinstance(value, dict) and value.get("not_computed") is True


def pooled_block(metrics: Any) -> Any:
    """The pooled ``overall`` of a metrics.json or curves.json dict (or model), None when absent (none,
    or a :class:`PooledAbsent`)."""
    value = metrics.get("overall") if isinstance(metrics, dict) else getattr(metrics, "overall", None)
    return None if value is None or is_pooled_absent(value) else value


def pooled_absent_reason(metrics: Any) -> str | None:
    """The reason a site or combined bundle gives for its absent pooled block, else None."""
    value = metrics.get("overall") if isinstance(metrics, dict) else getattr(metrics, "overall", None)
    if isinstance(value, PooledAbsent):
        return value.reason
    return value.get("reason") if isinstance(value, dict) and is_pooled_absent(value) else None


# ---- metrics.json -------------------------------------------------------------------------------------


class SynthesisInput(_Part):
    """One site's input to a synthesis, on the pooling scale (θ, se), with its counts and flag."""

    site: str
    role: str | None = None
    theta: float
    se: float
    n: int | None = None
    n_events: Any = None
    insufficient: bool = False


class SynthesisExcluded(_Part):
    """A chosen site that could not enter a metric's synthesis, and why (metric undefined, no se)."""

    site: str
    reason: str


class SynthesisMetric(_Part):
    """One metric pooled across sites (validate.analysis.synthesis): estimate, interval and prediction
    interval on the metric's scale; ``se``, ``tau2``, ``i2`` (a share 0..1), ``q`` on the pooling
    ``scale``; ``reason``/``pi_reason`` say why a number is missing (k too small)."""

    scale: Literal["logit", "log", "identity"]
    k: int
    estimate: Number = None
    ci_low: Number = None
    ci_high: Number = None
    pi_low: Number = None
    pi_high: Number = None
    se: Number = None
    tau2: Number = None
    i2: Number = None
    q: Number = None
    q_p_value: Number = None
    pi_reason: str | None = None
    reason: str | None = None
    inputs: list[SynthesisInput]
    excluded: list[SynthesisExcluded] = []


class Synthesis(_Part):
    """``metrics.json`` ``synthesis``: the random-effects synthesis of per-site performance."""

    method: Literal["REML", "DL"]
    interval: Literal["hksj", "z"]
    ci_level: float
    sites: list[str]
    role_rule: str
    metrics: dict[str, SynthesisMetric]


class MetricsFile(_File):
    """``metrics.json``: blocks pooled over sites, per site, and per subgroup value (pooled over sites)."""

    NAME: ClassVar[str] = "metrics"
    task: Task
    n_bootstrap: int
    ci_level: float
    seed: int | None
    overall: Annotated[
        Annotated[Block, Tag("pooled")] | Annotated[PooledAbsent, Tag("absent")], Discriminator(_pooled_tag)
    ] = Field(description="the pooled block; in a site or combined bundle a PooledAbsent saying why not")
    sites: dict[str, Block]
    subgroups: dict[str, dict[str, Block]] = {}
    synthesis: Synthesis | None = None


# ---- calibration.json ---------------------------------------------------------------------------------


class CalibrationMethod(_Part):
    """One calibration method: fitted ``params`` and a BLOCK per evaluated site (``error`` if the fit failed)."""

    params: dict[str, Any] | None
    sites: dict[str, Block]
    overall: Block | None = None
    change_vs_none: dict[str, dict[str, Any]] = {}
    error: str | None = None


class CalibrationFile(_File):
    """``calibration.json``: the held-out comparison of calibration methods, and the optional designs."""

    NAME: ClassVar[str] = "calibration"
    task: Task
    design: str
    fit_on: list[str]
    methods: dict[str, CalibrationMethod]
    recommended: str | None
    recommendation_note: str | None = None
    designs: dict[str, Any] = {}


# ---- curves.json --------------------------------------------------------------------------------------


class RocBand(_Part):
    fpr: list[Number]
    tpr_low: list[Number]
    tpr_high: list[Number]


class Roc(_Part):
    fpr: list[Number]
    tpr: list[Number]
    threshold: list[Number]
    band: RocBand | None = None


class PrecisionRecall(_Part):
    recall: list[Number]
    precision: list[Number]
    threshold: list[Number]
    prevalence: Number = None


class SmoothBand(_Part):
    """Pointwise bootstrap band of the lowess and loess calibration curves on a fixed grid of p
    (:mod:`validate.metrics.smooth_band`): pointwise, not simultaneous; null where too few replicates
    reach a grid point."""

    grid: list[Number]
    lowess: list[Number] = []
    loess: list[Number] = []
    lowess_low: list[Number]
    lowess_high: list[Number]
    loess_low: list[Number]
    loess_high: list[Number]
    level: float
    kind: Literal["pointwise"]
    replicates: int | None = None


class Reliability(_Part):
    """Reliability bins: mean prediction and observed rate (Wilson interval) per bin, with counts; and
    (with bootstrap replicates) the pointwise band of the smoothed calibration curves."""

    edges: list[Number]
    count: list[int]
    events: list[int]
    mean_predicted: list[Number]
    observed: list[Number]
    observed_low: list[Number]
    observed_high: list[Number]
    smooth_band: SmoothBand | None = None


class Smooth(_Part):
    p: list[Number]
    observed: list[Number]


class Curves(_Part):
    """The curves of one set of cases; multiclass adds ``top_label``, multi-outcome tasks ``classes``."""

    n: int
    n_events: int | None = None
    roc: Roc | None = None
    pr: PrecisionRecall | None = None
    reliability: Reliability | None = None
    smooth: Smooth | None = None
    top_label: Curves | None = None
    classes: dict[str, Curves] | None = None


class DecisionCurve(_Part):
    """One set of cases' decision curve: net benefit and treat-all per threshold of the grid, each with
    its percentile interval (null where undefined or without replicates), at the cases' own prevalence."""

    n: int
    n_events: int
    prevalence: Number
    net_benefit: list[Number]
    net_benefit_ci_low: list[Number]
    net_benefit_ci_high: list[Number]
    treat_all: list[Number]
    treat_all_ci_low: list[Number]
    treat_all_ci_high: list[Number]


class DecisionCurveBlocks(_Part):
    overall: Annotated[
        Annotated[DecisionCurve, Tag("pooled")] | Annotated[PooledAbsent, Tag("absent")], Discriminator(_pooled_tag)
    ] = Field(description="the pooled curve; in a site or combined bundle a PooledAbsent saying why not")
    sites: dict[str, DecisionCurve]


class DecisionCurves(_Part):
    """``curves.json`` ``decision`` (binary, with a protocol ``decision`` section): the threshold grid and
    the curves pooled (mixing the sites' prevalences) and per site (each at its own prevalence)."""

    thresholds: list[float]
    ci_level: float
    blocks: DecisionCurveBlocks


class CalibratedCurves(_Part):
    sites: dict[str, Curves]


class GroupReliability(_Part):
    """The reliability diagram of one group's cases under one method: its size, events and bins."""

    n: int
    n_events: int
    reliability: Reliability


# subgroup -> group -> method ("none" as shipped, else a calibration method) -> diagram
GroupReliabilityLevel = dict[str, dict[str, dict[str, GroupReliability]]]


class SubgroupCurves(_Part):
    """Reliability per subgroup (:func:`validate.analysis.sites.subgroup_reliability`): per site and
    pooled over sites, for every group with cases; ``attributes`` and ``groups`` give the order."""

    attributes: list[str]
    groups: dict[str, list[str]]
    sites: dict[str, GroupReliabilityLevel]
    overall: GroupReliabilityLevel


class CurvesFile(_File):
    """``curves.json``: curves per site and pooled; reliability after each calibration method (binary)
    and per subgroup (absent in bundles written before it was added, and for multilabel tasks)."""

    NAME: ClassVar[str] = "curves"
    task: Task
    bins: int
    ci_level: float
    sites: dict[str, Curves]
    overall: Annotated[
        Annotated[Curves, Tag("pooled")] | Annotated[PooledAbsent, Tag("absent")], Discriminator(_pooled_tag)
    ] = Field(description="the pooled curves; in a site or combined bundle a PooledAbsent saying why not")
    calibrated: dict[str, CalibratedCurves] = {}
    subgroups: SubgroupCurves | None = None
    decision: DecisionCurves | None = None


# ---- subgroups.json -----------------------------------------------------------------------------------


class SubgroupCell(_Part):
    """One group of one subgroup: its BLOCK and its gap entries to the site, per gap metric."""

    block: Block
    gap: dict[str, dict[str, Any] | None] = {}


class WorstGroup(_Part):
    """The worst judgeable group for one metric (``group`` null when none is judgeable)."""

    group: str | None
    estimate: Number = None
    ci_low: Number = None
    ci_high: Number = None
    gap: dict[str, Any] | None = None
    n: int | None = None
    n_events: Any = None  # an int; per class or label a map
    excluded_insufficient: list[str] = []


class SubgroupLevel(_Part):
    """One site (or all sites pooled): cells per subgroup and group, worst group per subgroup and metric."""

    subgroups: dict[str, dict[str, SubgroupCell]]
    worst: dict[str, dict[str, WorstGroup]] = {}


class SubgroupsFile(_File):
    """``subgroups.json``: the site x subgroup analysis; ``groups`` gives each subgroup's group order."""

    NAME: ClassVar[str] = "subgroups"
    task: Task | None = None
    ci_level: float
    attributes: list[str]
    groups: dict[str, list[str]]
    sites: dict[str, SubgroupLevel]
    overall: SubgroupLevel | None


# ---- sites.json ---------------------------------------------------------------------------------------


class SiteCohort(_Part):
    """One site's cohort: size, events, prevalence (Wilson), make-up per subgroup, exclusions by reason."""

    name: str | None
    role: str
    n: int
    patients: int | None = None
    n_events: int | None = None
    prevalence: Entry | None = None
    make_up: dict[str, dict[str, int]]
    excluded: dict[str, int]
    n_excluded: int


class SitesFile(_File):
    """``sites.json``: the cohort of each site, in the protocol's site order."""

    NAME: ClassVar[str] = "sites"
    task: Task
    ci_level: float
    sites: dict[str, SiteCohort]


# ---- shift.json ---------------------------------------------------------------------------------------


class ShiftFinding(_Part):
    """One row of a site's ranking: a difference, its corrected p-value and whether it is flagged."""

    id: str
    group: str
    name: str
    p_value: Number
    p_adjusted: Number
    effect_name: str | None
    effect: Number
    flagged: bool
    material: bool = False
    rank: int | None = None


class ShiftSite(_Part):
    """One external site against the development site(s); the finding groups are extra keys."""

    n: int
    flagged: bool
    material: bool
    n_tests: int
    ranking: list[ShiftFinding]


class Development(_Part):
    sites: list[str]
    n: int


class DriftSite(_Part):
    """:func:`validate.analysis.drift.temporal_drift` of one site (windows with their metrics)."""

    windows: list[dict[str, Any]] = []
    flagged_windows: list[str] = []
    drift: bool = False


class Drift(_Part):
    freq: str | None
    drift: bool
    flagged_sites: list[str]
    sites: dict[str, DriftSite]
    reason: str | None = None


class ShiftFile(_File):
    """``shift.json``: dataset shift per external site, and temporal drift (see :mod:`validate.analysis.shift`)."""

    NAME: ClassVar[str] = "shift"
    task: Task
    alpha: float
    correction: str
    development: Development
    sites: dict[str, ShiftSite]
    flagged_sites: list[str]
    material_sites: list[str]
    drift: Drift


# ---- gates.json ---------------------------------------------------------------------------------------


class GateDeclared(_Part):
    """A gate as the protocol declared it, normalised (:class:`validate.gates.GateSpec`)."""

    metric: str
    scope: str
    direction: Literal["min", "max"]
    threshold: float
    on: str
    name: str
    calibration: str | None = None
    insufficient: str = "warn"
    compare: Literal["baseline"] | None = Field(
        None,
        description="baseline: the gate judges the difference new − baseline (comparison.json); "
        "absent for a gate on one model",
    )


class GateRowFile(_Part):
    """The verdict of one gate on one scope item (:class:`validate.gates.GateRow`)."""

    gate: str
    metric: str
    scope: str
    item: str
    on: str
    direction: Literal["min", "max"]
    threshold: float
    verdict: Verdict
    reason: str
    value: Number = None
    estimate: Number = None
    ci_low: Number = None
    ci_high: Number = None
    n: int | None = None
    n_events: int | None = None
    site: str | None = None
    subgroup: str | None = None
    group: str | None = None
    calibration: str | None = None
    insufficient: bool = False
    # comparison gates only (absent otherwise): estimate/ci_low/ci_high are the difference new − baseline
    compare: Literal["baseline"] | None = None
    margin: Number = Field(None, description="non-inferiority margin: -min, or max, of a comparison gate")
    estimate_new: Number = None
    estimate_baseline: Number = None


class VerdictCounts(_Part):
    pass_: int = Field(alias="pass")
    warn: int
    fail: int


class GatesFile(_File):
    """``gates.json``: every gate row, the counts and the overall verdict (deterministic)."""

    NAME: ClassVar[str] = "gates"
    name: str
    verdict: Verdict
    exit_code: int
    counts: VerdictCounts
    gates: list[GateDeclared]
    rows: list[GateRowFile]


# ---- cases.json ---------------------------------------------------------------------------------------


class CaseRow(_Part):
    """One wrong call (:func:`validate.analysis.cases.confident_errors`)."""

    case_id: str | None = Field(description="the identifier predictions.parquet holds (keyed hash unless kept)")
    true: str
    called: str
    confidence: float = Field(description="the probability the model gave to its wrong call")
    p: Number = Field(default=None, description="binary or one label: P(positive); absent for multiclass")
    thumbnail: str | None = Field(default=None, description="file name (without .png) under thumbnails/<site>/")
    image: str | None = Field(
        default=None, description="the image path the predictions record, under the site's image root"
    )
    attributes: dict[str, Any] = {}


class SiteErrors(_Part):
    """One site at one ranking: its cases, its errors and the most confident errors, most confident first."""

    cases: int
    errors: int
    top: list[CaseRow]


class ErrorRanking(_Part):
    """The errors at one operating threshold (multiclass: ``None``, the top-label call) of one label
    (multilabel; else ``None``)."""

    label: str | None
    threshold: Number
    sites: dict[str, SiteErrors]


class CasesFile(_File):
    """``cases.json``: the Cases page's most confident errors per site, ranked at run time."""

    NAME: ClassVar[str] = "cases"
    task: Task
    per_site: int
    attributes: list[str]
    rankings: list[ErrorRanking]


# ---- provenance.json ----------------------------------------------------------------------------------


class ProtocolIdentity(_Part):
    name: str | None
    version: str | None
    path: str | None = None
    sha256: str | None


class FileIdentity(_Part):
    path: str
    sha256: str | None
    format: str | None = None


class ProvenanceFile(_File):
    """``provenance.json``: what is needed to repeat the run and to check it is the same run."""

    NAME: ClassVar[str] = "provenance"
    protocol: ProtocolIdentity
    checkpoint: FileIdentity | None
    predictions_source: FileIdentity | None = None
    started_at: str
    finished_at: str
    device: str | None
    seeds: dict[str, int | None]
    software: dict[str, str | None]
    validate_version: str | None = None
    n_bootstrap: int | None = None
    platform: dict[str, Any] = {}
    case_ids: str | None = None
    command: list[str] = []
    files: dict[str, str] = {}
    scoring_counts: dict[str, Any] | None = None
    case_id_key_check: str | None = Field(
        None,
        description="HMAC-SHA256(key, 'validate case-id key check'), first 16 hex digits, of the key the "
        "case ids were hashed with (never the key): two bundles pair by hashed id only when "
        "equal; null when the ids are kept",
    )
    baseline: dict[str, Any] | None = Field(
        None,
        description="the baseline model of the paired comparison: checkpoint or predictions_source, "
        "device, scoring_counts",
    )
    bundle_kind: Literal["central", "site", "combined"] | None = Field(
        None,
        description="central: every site's cases in one run (absent = central); site: one site's results, "
        "no case rows (validate run --site); combined: site bundles merged (validate combine)",
    )
    site: str | None = Field(None, description="the site of a site bundle")
    development_threshold: dict[str, Any] | None = Field(
        None,
        description="a site bundle's target-sensitivity threshold carried from the development site's "
        "bundle: {site, threshold, bundle_sha256}",
    )
    combined_from: list[dict[str, Any]] | None = Field(
        None,
        description="a combined bundle's site bundles: {site, bundle (folder name), provenance_sha256, finished_at}",
    )


# ---- comparison.json ----------------------------------------------------------------------------------

DeltaMethod = Literal["delong_paired", "bootstrap_paired"]


class ModelIdentity(_Part):
    """One side of a comparison: its label, the checkpoint or predictions file name (never an absolute
    path) and the file's SHA-256 (null where unknown)."""

    label: str
    source: str | None = None
    sha256: str | None = None


class Matched(_Part):
    """Cases matched on (site, case id): how many, how many one model only scored, and per site."""

    n: int
    n_new_only: int
    n_baseline_only: int
    sites: dict[str, int]


class DeltaEntry(_Part):
    """One metric of a DELTA_BLOCK: each model's estimate, Δ = new − baseline and its paired interval
    (``delong_paired``: paired DeLong, with its two-sided p-value; ``bootstrap_paired``: percentile
    interval of the paired bootstrap Δ replicates, ``p_value`` null)."""

    new: Number
    baseline: Number
    delta: Number
    ci_low: Number
    ci_high: Number
    method: DeltaMethod
    p_value: Number = None


class DeltaOperatingPoint(_Part):
    """The operating-point metrics' Δ entries at one threshold."""

    threshold: float
    metrics: dict[str, DeltaEntry] = {}


class DeltaBlock(_Part):
    """Δ of every compared metric on one set of matched cases (:mod:`validate.analysis.comparison`).

    ``insufficient`` marks a block below the insufficiency rule (its numbers are kept); ``undefined``
    maps a metric to why it has no Δ."""

    n: int
    n_events: int
    insufficient: bool = False
    reason: str | None = None
    metrics: dict[str, DeltaEntry]
    undefined: dict[str, str] = {}
    operating_points: list[DeltaOperatingPoint] = []

    def metric(self, name: str) -> DeltaEntry | None:
        """The Δ entry of metric ``name``, None when it has none (see :attr:`undefined`)."""
        return self.metrics.get(name)


class SubgroupDelta(_Part):
    """One group of one subgroup: pooled over sites, and within each site where it has cases."""

    overall: DeltaBlock
    sites: dict[str, DeltaBlock] = {}


class ComparisonFile(_File):
    """``comparison.json``: the paired comparison of a new model with a baseline on the same cases."""

    NAME: ClassVar[str] = "comparison"
    new: ModelIdentity
    baseline: ModelIdentity
    level: float
    n_boot: int
    seed: int | None
    matched: Matched
    overall: DeltaBlock
    sites: dict[str, DeltaBlock]
    subgroups: dict[str, dict[str, SubgroupDelta]] = {}


# ---- fairness.json ------------------------------------------------------------------------------------


class FairnessGroup(_Part):
    """A group's counts and whether it is too small to judge (the metrics' insufficiency rule)."""

    n: int
    n_events: int
    insufficient: bool
    reason: str | None = None


class FairnessThreshold(_Part):
    """One operating threshold: per group its rates and gaps to the reference (entries), the summaries
    over the groups judged, and why a null summary is null."""

    threshold: float
    kind: Literal["protocol", "target_sensitivity"]
    carried: bool = False
    groups: dict[str, dict[str, Entry]]
    summary: dict[str, Entry]
    undefined: dict[str, str] = {}


class FairnessCalibration(_Part):
    """Calibration within groups: per group intercept and slope (Wald), and their ranges (bootstrap)."""

    groups: dict[str, dict[str, Entry]]
    summary: dict[str, Entry]
    undefined: dict[str, str] = {}


class FairnessDecision(_Part):
    """Net benefit per group at one decision threshold (only with the protocol's ``decision`` section)."""

    threshold: float
    groups: dict[str, dict[str, Entry]]
    summary: dict[str, Entry]
    undefined: dict[str, str] = {}


class FairnessAttribute(_Part):
    """One subgroup (attribute) at one level: its groups, reference, thresholds and calibration."""

    reference: str | None
    groups: dict[str, FairnessGroup]
    included: list[str]
    excluded_insufficient: list[str]
    thresholds: list[FairnessThreshold]
    calibration: FairnessCalibration
    decision: list[FairnessDecision] = []


class FairnessLevel(_Part):
    """The cases pooled over sites (``overall``) or of one site."""

    n: int
    n_events: int
    attributes: dict[str, FairnessAttribute]


class FairnessReference(_Part):
    group: str | None
    rule: str


class FairnessFile(_File):
    """``fairness.json``: group fairness measures with paired bootstrap intervals
    (:mod:`validate.analysis.fairness`); absent for multiclass and multilabel tasks and without subgroups."""

    NAME: ClassVar[str] = "fairness"
    task: Literal["binary"]
    n_bootstrap: int
    ci_level: float
    seed: int | None = None
    attributes: list[str]
    groups: dict[str, list[str]]
    references: dict[str, FairnessReference]
    definitions: dict[str, str] = {}
    overall: FairnessLevel
    sites: dict[str, FairnessLevel]


# ---- the contract -------------------------------------------------------------------------------------

MODELS: dict[str, type[_File]] = {
    "metrics.json": MetricsFile,
    "calibration.json": CalibrationFile,
    "curves.json": CurvesFile,
    "subgroups.json": SubgroupsFile,
    "sites.json": SitesFile,
    "shift.json": ShiftFile,
    "gates.json": GatesFile,
    "cases.json": CasesFile,
    "provenance.json": ProvenanceFile,
    "comparison.json": ComparisonFile,
    "fairness.json": FairnessFile,
}
# files a bundle holds only when the run was given a baseline model (absent otherwise, never implied)
BASELINE_FILES = ("comparison.json",)
# what an analysis that did not run writes in place of its file
NOT_COMPUTED_KEYS = {"calibration.json": {"schema", "reason"}, "shift.json": {"schema", "reason"}}

BundleFile = _File | NotComputed


def _key_path(loc: tuple) -> str:
    path = ""
    for i, part in enumerate(loc):
        if part in _POOLED_TAGS and i and loc[i - 1] == "overall":
            continue  # the tag of a pooled block's model (Block or PooledAbsent), not a key
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    """(key path, message) per problem, first occurrence of each key path (the models hold no unions, so
    pydantic's locations are key paths only)."""
    seen: dict[str, str] = {}
    for err in exc.errors(include_url=False):
        seen.setdefault(_key_path(err["loc"]), "missing" if err["type"] == "missing" else err["msg"])
    return list(seen.items())


def _validate(model: type[BaseModel], data: Any) -> BaseModel:
    return model.model_validate(data)


def _model_for(name: str, data: dict) -> type[BaseModel]:
    allowed = NOT_COMPUTED_KEYS.get(name)
    if allowed is not None and set(data) <= allowed:
        return NotComputed
    return MODELS[name]


def check_version(name: str, data: Any, *, file: Path | str | None = None) -> int:
    """The contract version of bundle file ``name`` holding ``data`` (0 when it has no ``schema``).

    Raises :class:`InputError` for a file that is not a JSON object, an id naming another file, or a
    version newer than this package reads.
    """
    model = MODELS[name]
    where = file if file is not None else name
    if not isinstance(data, dict):
        raise InputError(
            f"{name} holds a JSON {type(data).__name__}, not an object",
            file=where,
            expected=f"a {model.schema_name()} object",
        )
    sid = data.get("schema")
    if sid is None:
        return 0
    m = SCHEMA_ID.match(sid) if isinstance(sid, str) else None
    if not m or m.group(1) != model.NAME:
        raise InputError(
            f"unknown bundle schema {sid!r}",
            file=where,
            field="schema",
            expected=f'"validate.{model.NAME}/<version>" (this validate reads up to {model.schema_name()})',
        )
    version = int(m.group(2))
    if version > model.VERSION:
        raise InputError(
            f"{name} is {sid}, newer than this validate reads ({model.schema_name()})",
            file=where,
            field="schema",
            expected=f"a bundle of version {model.VERSION} or older, or a newer validate to read this one",
        )
    return version


def parse(name: str, data: Any, *, file: Path | str | None = None) -> BundleFile:
    """Bundle file ``name`` (e.g. ``"metrics.json"``) as its model; :class:`InputError` naming the file,
    the key path and what is wrong when it breaks the contract."""
    check_version(name, data, file=file)
    try:
        return cast(BundleFile, _validate(_model_for(name, data), data))
    except ValidationError as exc:
        problems = _problems(exc)
        key, msg = problems[0]
        more = (
            f" (and {len(problems) - 1} more problem(s): {', '.join(k for k, _ in problems[1:4])}"
            f"{' ...' if len(problems) > 4 else ''})"
            if len(problems) > 1
            else ""
        )
        raise InputError(
            f"{'required key missing' if msg == 'missing' else msg}{more}",
            file=file if file is not None else name,
            field=key,
            expected=f"a {name} of contract {MODELS[name].schema_name()} "
            f"(schemas/bundle/{MODELS[name].NAME}.schema.json)",
        ) from None


def for_writing(name: str, obj: Any) -> Any:
    """``obj`` with its ``schema`` id added, checked against the contract; other names pass unchanged.

    Raises :class:`ContractViolation` (an internal error) when the engine's content breaks the contract.
    """
    model = MODELS.get(name)
    if model is None:
        return obj
    if not isinstance(obj, dict):
        raise ContractViolation(f"internal error: {name} content is a {type(obj).__name__}, not an object")
    out = {**obj, "schema": model.schema_name()}
    try:
        _validate(_model_for(name, out), out)
    except ValidationError as exc:
        detail = "; ".join(f"{k}: {m}" for k, m in _problems(exc)[:5])
        raise ContractViolation(
            f"internal error: the engine's {name} breaks contract {model.schema_name()}: {detail}"
        ) from exc
    return out


# ---- JSON Schemas -------------------------------------------------------------------------------------


def json_schema(name: str) -> dict:
    """The JSON Schema of bundle file ``name`` (draft 2020-12), as committed in ``schemas/bundle/``."""
    model = MODELS[name]
    schema = model.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = model.schema_name()
    schema["title"] = f"validate bundle: {name} ({model.schema_name()})"
    props = schema.get("properties", {})
    if "schema" in props:
        props["schema"] = {
            "description": props["schema"].get("description", ""),
            "type": "string",
            "pattern": f"^validate\\.{model.NAME}/[0-9]+$",
        }
    if name in NOT_COMPUTED_KEYS:
        # the file of an analysis that did not run: only its id (and for shift.json the reason)
        full = {k: v for k, v in schema.items() if k not in ("$defs", "$schema", "$id", "title")}
        defs = {**schema.get("$defs", {}), model.__name__: full}
        idle = {
            "type": "object",
            "additionalProperties": False,
            "description": "The analysis did not run (calibration.json: no comparison in the protocol; "
            "shift.json: no development and external site pair; both in a site or combined bundle, with "
            "the reason).",
            "properties": {
                k: ({"type": "string"} if k == "reason" else props["schema"]) for k in sorted(NOT_COMPUTED_KEYS[name])
            },
        }
        schema = {
            "$defs": defs,
            "anyOf": [{"$ref": f"#/$defs/{model.__name__}"}, idle],
            **{k: schema[k] for k in ("$schema", "$id", "title")},
        }
    return schema


def json_schemas() -> dict[str, dict]:
    """``{"<name>.schema.json": schema}`` for every bundle file."""
    return {f"{MODELS[n].NAME}.schema.json": json_schema(n) for n in MODELS}


def write_schemas(folder: str | Path) -> list[Path]:
    """Write every JSON Schema into ``folder`` (sorted keys, indent 2); returns the paths."""
    import json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for fname, schema in json_schemas().items():
        path = folder / fname
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


if __name__ == "__main__":  # python -m validate.contract schemas/bundle
    import sys

    for p in write_schemas(sys.argv[1] if len(sys.argv) > 1 else "schemas/bundle"):
        print(p)
