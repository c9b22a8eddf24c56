"""Release gates: judge the protocol's gates against a run's results.

A gate names a metric, a scope, a bound (``min`` or ``max``), the quantity judged (the ``estimate``
or a confidence bound: regulators judge the interval bound against a goal set in advance),
optionally a calibration method after which it is judged, and a policy for data too thin to judge
(``fail``, ``warn`` or ``pass``). Judging is pure: it reads the Metrics JSON, the Calibration JSON
and the subgroup analysis (``subgroups.json``) and returns one row per gate x scope item.

Scopes (definitions used here):

- ``overall``: the pooled block of ``metrics.json`` (with ``calibration``: the calibration JSON's
  ``overall`` block when it has one).
- ``each_site``: every site of ``metrics.json`` (with ``calibration``: every site evaluated in the
  calibration JSON for that method, i.e. on cases not used for fitting; a scored site the comparison
  meant to evaluate (its ``external_sites``) but did not gets a row decided by the insufficient policy).
- ``each_subgroup:<attr>``: every group of the subgroup ``<attr>``, pooled over sites
  (``metrics.json`` ``subgroups``).
- ``worst_subgroup:<attr>``: one row, the group with the worst judged quantity (lowest for ``min``,
  highest for ``max``) among groups with enough data. Groups too small to judge are not candidates;
  when any exist, the row's verdict is at least the insufficient policy's verdict (``pass`` ignores
  them), and when none can be judged the policy decides alone.
- ``each_attribute`` / ``each_attribute:<attr>``: the group fairness measures of ``fairness.json``
  (equalised odds, demographic parity, calibration ranges), pooled over sites, one row per subgroup
  and operating threshold (:mod:`validate.fairness_gates`).
- ``subgroup_gap:<attr>``: every (site, group) of the subgroup analysis: the gap between the group's
  value and its site's value, ``d = group - site``, with a paired bootstrap interval ``[lo, hi]``. A
  gap gate bounds the *size* of the gap, ``|d|``, whose interval follows from that of ``d``:
  ``estimate`` = ``|d|``; ``ci_high`` = ``max(|lo|, |hi|)`` (the largest gap the data allow);
  ``ci_low`` = ``0`` if the interval covers 0, else ``min(|lo|, |hi|)``.

- ``across_sites``: one row, the random-effects synthesis of the metric over the chosen sites
  (``metrics.json`` ``synthesis``, :mod:`validate.analysis.synthesis`); ``on`` may also be ``pi_low`` or
  ``pi_high``, the 95% prediction interval for the metric at a new site (Higgins et al. 2009), and only
  with this scope. ``{metric: auroc, scope: across_sites, min: 0.70, on: pi_low}`` reads "at the next
  hospital, the AUROC is above 0.70 with 95% prediction". With k < 3 sites there is no prediction
  interval (k < 2: no HKSJ interval): the insufficient policy decides, with the reason.

Shift and drift (``shift.json``): three counts can be gated at scope ``each_site`` or ``overall``
(the sum over sites), e.g. ``{metric: drift_windows_flagged, scope: each_site, max: 0}``:
``drift_windows_flagged`` (time windows flagged by the drift detector chosen in ``shift.json``),
``shift_material_findings`` (differences from the development site that are significant after
correction *and* beyond their practical threshold) and ``shift_flagged_findings`` (significant
ones). A site without dated cases, or the development site itself for the shift counts, has no
value: the insufficient policy decides.

Comparison gates (``compare: baseline``) judge the paired difference d = new − baseline of
``comparison.json`` (:mod:`validate.analysis.comparison`) instead of one model's value, at scope
``overall``, ``each_site`` or ``each_subgroup:<attr>`` (a subgroup value pooled over sites), with the same
quantities and insufficient policy: ``{metric: auroc, compare: baseline, scope: each_site, min: -0.02,
on: ci_low}`` is non-inferiority with margin 0.02. The row's ``estimate``/``ci_low``/``ci_high`` are
those of d; ``estimate_new``, ``estimate_baseline`` and ``margin`` come with them, and the reason says
"superior", "non-inferior (margin m)", "inferior" or "non-inferiority not shown (margin m)"
(:func:`comparison_verdict`). A site of ``metrics.json`` with no block in the comparison (no case scored
by both models) fails.

Net benefit at a decision threshold (the protocol's ``decision.thresholds``; :mod:`validate.metrics.net_benefit`)
is named ``<metric>@<t>``: ``net_benefit@0.2``, ``net_benefit_vs_treat_all@0.2``,
``standardized_net_benefit@0.2``, ``interventions_avoided@0.2`` (also ``net_benefit_treat_all@0.2``). It
resolves to the item of the BLOCK's ``decision`` list whose threshold equals t (|Δ| < 1e-9); the ``@`` is
split off before any dotted path, so the dot of ``0.2`` is part of the threshold. t must be one of the
declared decision thresholds (the preflight refuses any other). ``{metric: net_benefit_vs_treat_all@0.2,
min: 0, on: ci_low}`` reads: at threshold 0.2, using the model beats treating everyone, at the lower 95%
bound — a bound on a difference in net benefit (in true positives per patient), not a significance test,
and it says nothing about treating no one (``net_benefit@0.2`` with ``min: 0`` says that). Each site is
judged at its own prevalence; the pooled block mixes the sites' prevalences.

A value that is undefined (``null`` estimate, e.g. AUROC at a site with one class) or a block marked
``insufficient`` follows the gate's insufficient policy; the reason is carried into the row.

Precision (a binary block's ``precision``, :mod:`validate.metrics.precision`): a row that would pass at
a block whose criterion for the gate's metric is not adequate (auroc; calibration_slope; oe_ratio and
calibration_intercept: the O/E criterion; the net-benefit family at t: the sNB criterion at t) takes the
gate's insufficient policy with the reason when the protocol sets ``metrics.precision.insufficient:
true``; by default the shortfall is noted in the row's reason and the verdict stands. A failing row is
never made more lenient.

Declared sites with no scored case. A site the protocol declares but whose every case failed to read
or score (or that the predictions do not hold) has no block in ``metrics.json``; it must not vanish
from the verdict. When the declared sites are known (``sites=``, or the protocol's ``sites``):

- the built-in check ``sites scored`` (:data:`SITES_SCORED`) adds one row per declared site, failing
  where the site has no scored case; it is judged whether or not the protocol declares gates;
- every gate judged per site (``each_site``, ``subgroup_gap``) gets a ``fail`` row for such a site,
  whatever its insufficient policy (a site without cases is not "too little data", it is missing);
- pooled scopes (``overall``, ``each_subgroup``, ``worst_subgroup``) are judged on the cases there are,
  and their reason names the missing sites (the built-in check already fails the run).

A gate that yields no row at all (e.g. a subgroup with no group) gets one row decided by its
insufficient policy, so that no declared gate is ever absent from the verdict.
The overall verdict is ``fail`` if any row fails, else ``warn`` if any warns, else ``pass``;
the exit code is 1 for ``fail`` and 0 otherwise (DESIGN.md).

Outputs: :meth:`GateReport.to_json` (``gates.json``), :meth:`GateReport.to_junit` (``junit.xml``:
one testcase per row; failures as ``<failure>``, warnings as ``<skipped>`` so GitLab and Jenkins show
them without failing the pipeline) and :meth:`GateReport.to_markdown` (a pull-request comment).
Text from the protocol and the manifests (gate names, site ids, subgroup values, reasons) is made safe
for each format by :mod:`validate.escape`: JUnit stays well-formed XML whatever the characters, and the
Markdown comment carries no HTML, link, image or @mention.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from validate.errors import EXIT_GATE_FAILED, EXIT_OK, InputError, ProblemCollector
from validate.escape import markdown_text, xml_text
from validate.formatting import format_beside, format_count, format_declared, format_interval, format_value

VERDICTS = ("pass", "warn", "fail")
_RANK = {v: i for i, v in enumerate(VERDICTS)}
SCOPE_KINDS = (
    "overall",
    "each_site",
    "each_subgroup",
    "worst_subgroup",
    "subgroup_gap",
    "across_sites",
    "each_attribute",
)
PLAIN_SCOPE_KINDS = ("overall", "each_site", "across_sites")  # scopes without a :<attribute>
ON = ("estimate", "ci_low", "ci_high", "pi_low", "pi_high")
PI_ON = ("pi_low", "pi_high")  # the prediction interval for a new site: scope across_sites only
POLICIES = ("fail", "warn", "pass")
_SYMBOL = {"pass": "✅", "warn": "⚠️", "fail": "❌"}
SHIFT_METRICS = ("drift_windows_flagged", "shift_material_findings", "shift_flagged_findings")
SITES_SCORED = "sites scored"  # the built-in check: every declared site has at least one scored case
COMPARISON_SCOPE_KINDS = ("overall", "each_site", "each_subgroup")  # scopes of a gate with compare: baseline


@dataclass(frozen=True)
class GateSpec:
    """One gate as declared in a protocol (``gates:`` list), normalised."""

    metric: str
    scope: str
    direction: str  # "min" | "max"
    threshold: float
    on: str = "estimate"
    calibration: str | None = None
    insufficient: str = "warn"
    name: str | None = None
    index: int = 0  # position in the protocol's gate list (for error messages)
    compare: str | None = None  # "baseline": the gate judges new − baseline (comparison.json)

    @property
    def kind(self) -> str:
        return self.scope.partition(":")[0]

    @property
    def attribute(self) -> str | None:
        return self.scope.partition(":")[2] or None

    @property
    def label(self) -> str:
        vs = " vs baseline" if self.compare else ""
        return self.name or f"{self.metric}{vs} {self.scope} {self.direction} {_thr(self.threshold)}"

    def describe(self) -> str:
        op = ">=" if self.direction == "min" else "<="
        after = f" after {self.calibration}" if self.calibration else ""
        what = f"Δ {self.metric} (new − baseline)" if self.compare else self.metric
        return f"{what} {self.on}{after} {op} {_thr(self.threshold)}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("index")
        if d["compare"] is None:  # absolute gates keep the gates.json they always had
            d.pop("compare")
        d["name"] = self.label
        return d


def gate_specs(gates: Iterable[Any]) -> list[GateSpec]:
    """Normalise protocol gates (pydantic ``Gate`` objects or plain dicts) to :class:`GateSpec`."""
    specs = []
    for i, g in enumerate(gates):
        get = (
            (lambda k, d=None, g=g: g.get(k, d))
            if isinstance(g, Mapping)
            else (lambda k, d=None, g=g: getattr(g, k, d))
        )
        lo, hi = get("min"), get("max")
        if (lo is None) == (hi is None):
            raise InputError("a gate needs exactly one of `min` or `max`", field=f"gates[{i}]")
        specs.append(
            GateSpec(
                metric=str(get("metric")),
                scope=str(get("scope", "overall") or "overall"),
                direction="min" if lo is not None else "max",
                threshold=float(lo if lo is not None else hi),
                on=get("on", "estimate") or "estimate",
                calibration=get("calibration"),
                insufficient=get("insufficient", "warn") or "warn",
                name=get("name"),
                index=i,
                compare=get("compare"),
            )
        )
    return specs


@dataclass
class GateRow:
    """The verdict of one gate on one scope item."""

    gate: str
    metric: str
    scope: str
    item: str
    on: str
    direction: str
    threshold: float
    verdict: str
    reason: str
    value: float | None = None
    estimate: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None
    n_events: int | None = None
    site: str | None = None
    subgroup: str | None = None
    group: str | None = None
    calibration: str | None = None
    insufficient: bool = False
    builtin: bool = False  # a check of the suite itself (SITES_SCORED), not a gate of the protocol
    # a comparison gate (compare: baseline): estimate, ci_low and ci_high are those of the difference
    # new − baseline; the two models' own estimates and the non-inferiority margin come with them
    compare: str | None = None
    margin: float | None = None
    estimate_new: float | None = None
    estimate_baseline: float | None = None

    def to_dict(self) -> dict:
        d = {k: _clean(v) for k, v in asdict(self).items()}
        if self.compare is None:  # absolute gates keep the rows they always had
            for k in COMPARISON_ROW_KEYS:
                d.pop(k)
        return d


#: The keys only a comparison gate's row carries.
COMPARISON_ROW_KEYS = ("compare", "margin", "estimate_new", "estimate_baseline")


@dataclass
class GateReport:
    """All rows of a judgement, with the overall verdict and the three output formats."""

    gates: list[GateSpec]
    rows: list[GateRow]
    name: str = "validate"
    counts: dict = field(init=False)

    def __post_init__(self) -> None:
        self.counts = {v: sum(r.verdict == v for r in self.rows) for v in VERDICTS}

    @property
    def verdict(self) -> str:
        return worst_verdict(r.verdict for r in self.rows)

    @property
    def exit_code(self) -> int:
        return EXIT_GATE_FAILED if self.verdict == "fail" else EXIT_OK

    # ---- gates.json --------------------------------------------------------------------------
    def to_json(self) -> dict:
        """The ``gates.json`` content: deterministic (no times, no case ids)."""
        return {
            "name": self.name,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "counts": dict(self.counts),
            "gates": [g.to_dict() for g in self.gates],
            "rows": [r.to_dict() for r in self.rows],
        }

    # ---- junit.xml ---------------------------------------------------------------------------
    def to_junit(self) -> str:
        """JUnit XML, one ``<testcase>`` per row, as GitLab and Jenkins read it.

        ``fail`` rows carry ``<failure>``; ``warn`` rows carry ``<skipped message=...>`` (shown but
        not failing, as a warning is meant to be) and the details in ``<system-out>``.
        """
        n, fails, warns = len(self.rows), self.counts["fail"], self.counts["warn"]
        # every text from a protocol or a manifest goes through xml_text: one control character would
        # make the whole file not well-formed, and CI would drop every result in it
        x = xml_text
        root = ET.Element(
            "testsuites",
            name=x(f"validate gates: {self.name}"),
            tests=str(n),
            failures=str(fails),
            errors="0",
            skipped=str(warns),
            time="0",
        )
        suite = ET.SubElement(
            root,
            "testsuite",
            name=x(f"validate gates: {self.name}"),
            tests=str(n),
            failures=str(fails),
            errors="0",
            skipped=str(warns),
            time="0",
        )
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="verdict", value=self.verdict)
        for row in self.rows:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=x(f"gates.{_junit_name(row.gate)}"),
                name=x(f"{row.item}: {_row_rule(row)}"),
                time="0",
            )
            details = x(_row_details(row))
            if row.verdict == "fail":
                fail = ET.SubElement(case, "failure", message=x(row.reason), type="GateFailed")
                fail.text = details
            elif row.verdict == "warn":
                ET.SubElement(case, "skipped", message=x(f"warning: {row.reason}"))
                ET.SubElement(case, "system-out").text = details
            else:
                ET.SubElement(case, "system-out").text = details
        ET.indent(root)
        return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"

    # ---- Markdown ----------------------------------------------------------------------------
    def to_markdown(self, *, ci_level: float | None = None, max_rows: int = 60) -> str:
        """A summary fit for a pull-request comment: verdict, counts, then failing rows first."""
        v = self.verdict
        lines = [f"### {_SYMBOL[v]} Release gates: **{v.upper()}** ({_md(self.name)})", ""]
        if not self.rows:
            lines.append("No gates are declared in the protocol.")
            return "\n".join(lines) + "\n"
        c = self.counts
        builtin = (
            " and the built-in check that every declared site has scored cases"
            if any(r.builtin for r in self.rows)
            else ""
        )
        lines.append(
            f"{len(self.rows)} check(s) from {len(self.gates)} gate(s){builtin}: "
            f"{c['pass']} pass, {c['warn']} warn, {c['fail']} fail."
        )
        lines.append("")
        level = f"{ci_level:.0%} CI" if ci_level else "CI"
        lines.append(f"| | Gate | Item | Rule | Value | Estimate ({level}) | n (events) | Reason |")
        lines.append("|---|---|---|---|---|---|---|---|")
        ordered = sorted(self.rows, key=lambda r: -_RANK[r.verdict])  # stable: protocol order within a verdict
        for row in ordered[:max_rows]:
            lines.append(
                "| "
                + " | ".join(
                    [
                        _SYMBOL[row.verdict],
                        _md(row.gate),
                        _md(row.item),
                        _md(_row_rule(row)),
                        _value_text(row),
                        _value_text(row) if row.builtin else _interval_text(row),
                        _n_text(row.n, row.n_events),
                        _md(row.reason),
                    ]
                )
                + " |"
            )
        if len(ordered) > max_rows:
            lines.append(f"\n… and {len(ordered) - max_rows} more row(s) in gates.json.")
        return "\n".join(lines) + "\n"


def worst_verdict(verdicts: Iterable[str]) -> str:
    worst = "pass"
    for v in verdicts:
        if _RANK[v] > _RANK[worst]:
            worst = v
    return worst


# ---- judging -------------------------------------------------------------------------------------


def check_gates(
    specs: list[GateSpec],
    metrics: Mapping,
    *,
    calibration: Mapping | None = None,
    subgroups: Mapping | None = None,
    shift: Mapping | None = None,
    protocol: Any = None,
    comparison: Mapping | None = None,
    fairness: Mapping | None = None,
) -> None:
    """Raise :class:`InputError` (all problems at once) for gates the results cannot answer:
    an unknown metric, scope, quantity or policy; a subgroup or calibration method not in the results;
    a comparison gate without a comparison (``comparison.json``) or naming what it does not hold."""
    problems = ProblemCollector()
    file = getattr(protocol, "path", None)

    def err(spec: GateSpec, key: str, message: str, expected: str) -> None:
        line = protocol.line_of("gates", spec.index, key) if hasattr(protocol, "line_of") else None
        problems.add(
            InputError(
                f"gate `{spec.label}`: {message}",
                file=file,
                line=line,
                field=f"gates[{spec.index}].{key}",
                expected=expected,
            )
        )

    known_metrics = _metric_paths(metrics.get("overall") or {})
    for blk in (metrics.get("sites") or {}).values():
        known_metrics |= _metric_paths(blk)
    for spec in specs:
        if spec.kind == "each_attribute":  # fairness.json (validate.fairness_gates)
            from validate.fairness_gates import check_fairness_gate

            if spec.on not in ("estimate", "ci_low", "ci_high"):
                err(spec, "on", f"unknown quantity `{spec.on}`", "estimate, ci_low or ci_high")
            check_fairness_gate(spec, fairness, err)
            continue
        if spec.kind not in SCOPE_KINDS or (spec.kind in PLAIN_SCOPE_KINDS) == bool(spec.attribute):
            err(
                spec,
                "scope",
                f"unknown scope `{spec.scope}`",
                "overall, each_site, across_sites, each_subgroup:<attr>, worst_subgroup:<attr> or subgroup_gap:<attr>",
            )
            continue
        if spec.on not in ON:
            err(spec, "on", f"unknown quantity `{spec.on}`", "estimate, ci_low, ci_high, pi_low or pi_high")
        if spec.kind == "across_sites" or spec.on in PI_ON:
            _check_synthesis_gate(spec, metrics, err)
            continue
        if spec.insufficient not in POLICIES:
            err(spec, "insufficient", f"unknown policy `{spec.insufficient}`", "fail, warn or pass")
        if spec.compare is not None:
            _check_comparison_gate(spec, comparison, err)
            continue
        if spec.metric in SHIFT_METRICS:
            if spec.kind not in ("overall", "each_site") or spec.calibration is not None:
                err(
                    spec,
                    "scope",
                    f"{spec.metric} is counted per site from shift.json",
                    "scope each_site or overall, without `calibration`",
                )
            elif not shift or "sites" not in shift:
                err(
                    spec,
                    "metric",
                    f"{spec.metric} needs the shift analysis (shift.json), which is absent or empty",
                    "a bundle whose protocol has a development site and external sites",
                )
            elif spec.on != "estimate":
                err(spec, "on", f"{spec.metric} is a count without an interval", "on: estimate")
            continue
        if canonical_metric(spec.metric) not in known_metrics:
            import difflib

            near = difflib.get_close_matches(spec.metric, sorted(known_metrics), n=1)
            hint = f"; did you mean `{near[0]}`?" if near else ""
            err(
                spec,
                "metric",
                f"metric `{spec.metric}` is not in metrics.json{hint}",
                f"one of {', '.join(sorted(k for k in known_metrics if '.' not in k))} "
                f"(or a dotted path such as hosmer_lemeshow.p_value, or {', '.join(SHIFT_METRICS)})",
            )
        attr = spec.attribute
        if spec.kind in ("each_subgroup", "worst_subgroup") and attr not in (metrics.get("subgroups") or {}):
            err(
                spec,
                "scope",
                f"subgroup `{attr}` is not in metrics.json",
                f"one of {sorted(metrics.get('subgroups') or {})}",
            )
        if spec.kind == "subgroup_gap":
            if subgroups is None:
                err(
                    spec,
                    "scope",
                    "subgroup_gap needs the subgroup analysis (subgroups.json), which is absent",
                    "a bundle with subgroups.json",
                )
            elif not any(attr in (s.get("subgroups") or {}) for s in (subgroups.get("sites") or {}).values()):
                err(
                    spec,
                    "scope",
                    f"subgroup `{attr}` is not in the subgroup analysis",
                    "a subgroup declared in the protocol",
                )
        if spec.calibration is not None:
            methods = (calibration or {}).get("methods") or {}
            if spec.calibration not in methods:
                err(
                    spec,
                    "calibration",
                    f"calibration method `{spec.calibration}` is not in calibration.json",
                    f"one of {sorted(methods) or 'the fitted methods'}",
                )
            elif spec.kind not in ("overall", "each_site"):
                err(
                    spec,
                    "scope",
                    f"scope {spec.kind} cannot be judged after calibration: calibration.json holds per-site blocks",
                    "scope overall or each_site with `calibration`",
                )
            elif spec.kind == "overall" and not methods[spec.calibration].get("overall"):
                err(
                    spec,
                    "scope",
                    "calibration.json has no pooled block to judge `overall` after calibration",
                    "scope each_site with `calibration`",
                )
    problems.raise_if_any()


def _check_synthesis_gate(spec: GateSpec, metrics: Mapping, err: Callable[..., None]) -> None:
    """A gate on the synthesis (scope ``across_sites``) names a pooled metric of ``metrics.json``
    ``synthesis``; ``pi_low``/``pi_high`` go with that scope only."""
    if spec.kind != "across_sites":
        err(spec, "on", f"on: {spec.on} is the prediction interval for a new site", "scope across_sites")
        return
    if spec.compare is not None or spec.calibration is not None:
        err(spec, "scope", "scope across_sites judges the synthesis as scored", "no `compare` or `calibration`")
        return
    from validate.analysis.synthesis import canonical_metric

    pooled = ((metrics.get("synthesis") or {}).get("metrics")) or {}
    if canonical_metric(spec.metric) not in pooled:
        err(
            spec,
            "metric",
            f"`{spec.metric}` is not pooled in metrics.json synthesis"
            + ("" if pooled else " (no synthesis in metrics.json)"),
            f"one of {', '.join(sorted(pooled))}" if pooled else "a binary run with a synthesis",
        )


def comparison_bound_problem(metric: str, direction: str, on: str) -> tuple[str, str, str] | None:
    """Why a comparison gate's bound cannot mean what its verdict says, as ``(field, message,
    expected)``, or None.

    The verdict of a comparison gate reads "non-inferior" or "superior", which is a claim about the
    whole interval of Δ = new − baseline on the metric's *better* side. A bound on the wrong side
    (``min`` for a metric where lower is better: ``{metric: ece, min: -0.02}`` passes whenever the new
    model's ECE is not much *better*, however much worse it is) or judged on the lenient end of the
    interval (``min`` on ``ci_high``) would read as non-inferiority it does not show — a false PASS
    from a slip of the pen. So: higher-is-better metrics take ``min`` on ``ci_low`` (or the estimate),
    lower-is-better ones ``max`` on ``ci_high`` (or the estimate); a metric best at a target value
    (calibration slope, intercept) has no better side for its difference and is gated on its own value.
    """
    from validate.metrics import registry

    # a segmentation metric's difference has a better side too (validate.analysis.segmentation)
    m = registry.get(metric, "binary") or registry.get(metric, "segmentation")
    if m is None or m.direction is None:
        return None  # an unknown metric is reported by the metric check
    if m.direction == "target":
        return (
            "metric",
            f"the difference in `{metric}` has no better side (the metric is best at {m.target:g}, "
            "not at its highest or lowest)",
            "a metric where higher or lower is better; gate this one on its own value (no `compare`)",
        )
    want = "min" if m.direction == "higher" else "max"
    conservative = "ci_low" if want == "min" else "ci_high"
    if direction != want:
        margin = "min: -0.02" if want == "min" else "max: 0.02"
        return (
            direction,
            f"{m.direction} {metric} is better, so a `{direction}` bound on Δ = new − baseline would pass a "
            "worse new model",
            f"`{want}` (e.g. {margin} on {conservative}: non-inferior with margin 0.02)",
        )
    if on not in ("estimate", conservative):
        return (
            "on",
            f"`{want}` on `{on}` judges the lenient end of Δ's interval: it would call a model non-inferior "
            "that the interval does not show to be",
            f"on: {conservative} (or on: estimate)",
        )
    return None


def _check_comparison_gate(spec: GateSpec, comparison: Mapping | None, err: Callable[..., None]) -> None:
    """The problems of one comparison gate (``compare: baseline``) against ``comparison.json``."""
    if spec.compare != "baseline":
        err(spec, "compare", f"unknown comparison `{spec.compare}`", "compare: baseline")
        return
    if spec.kind not in COMPARISON_SCOPE_KINDS or (spec.kind == "each_subgroup") != bool(spec.attribute):
        err(
            spec,
            "scope",
            f"scope `{spec.scope}` cannot compare with the baseline",
            "overall, each_site or each_subgroup:<attr>",
        )
        return
    if spec.calibration is not None:
        err(spec, "calibration", "a comparison gate compares the models as scored", "no `calibration`")
    bound = comparison_bound_problem(spec.metric, spec.direction, spec.on)
    if bound is not None:
        err(spec, *bound)
        return
    if not comparison or "overall" not in comparison:
        err(
            spec,
            "compare",
            "the results hold no comparison with a baseline model (comparison.json)",
            "a run with a baseline: `validate run ... --baseline PATH` or model.baseline in the protocol",
        )
        return
    known = set()
    for blk in [comparison.get("overall") or {}, *(comparison.get("sites") or {}).values()]:
        known |= set(blk.get("metrics") or {}) | set(blk.get("undefined") or {})
    if spec.metric not in known:
        import difflib

        near = difflib.get_close_matches(spec.metric, sorted(known), n=1)
        err(
            spec,
            "metric",
            f"metric `{spec.metric}` is not in comparison.json" + (f"; did you mean `{near[0]}`?" if near else ""),
            f"one of {', '.join(sorted(known))}",
        )
    if spec.kind == "each_subgroup" and spec.attribute not in (comparison.get("subgroups") or {}):
        err(
            spec,
            "scope",
            f"subgroup `{spec.attribute}` is not in comparison.json",
            f"one of {sorted(comparison.get('subgroups') or {})}",
        )


def judge_gates(
    gates: Iterable[Any],
    metrics: Mapping,
    *,
    calibration: Mapping | None = None,
    subgroups: Mapping | None = None,
    shift: Mapping | None = None,
    protocol: Any = None,
    name: str | None = None,
    sites: Sequence[str] | None = None,
    cohort: Mapping | None = None,
    comparison: Mapping | None = None,
    fairness: Mapping | None = None,
) -> GateReport:
    """Judge every gate; return a :class:`GateReport`.

    ``gates``: the protocol's gate list (pydantic objects or dicts); ``metrics``: Metrics JSON;
    ``calibration``: Calibration JSON (needed by gates with ``calibration``); ``subgroups``: the
    subgroup analysis of :mod:`validate.analysis.subgroups` (needed by ``subgroup_gap``); ``shift``:
    ``shift.json`` (needed by the shift and drift counts); ``protocol``: locates problems (file and
    line) and declares the sites; ``sites``: the declared site ids (default: the protocol's), judged by
    the built-in :data:`SITES_SCORED` check; ``cohort``: ``sites.json``, whose exclusion counts explain a
    site without scored cases; ``comparison``: ``comparison.json`` (needed by ``compare: baseline``
    gates). Raises :class:`InputError` when a gate asks for something the results do not hold (see
    :func:`check_gates`).
    """
    specs = gates if all(isinstance(g, GateSpec) for g in gates) else gate_specs(gates)
    specs = list(specs)
    check_gates(
        specs,
        metrics,
        calibration=calibration,
        subgroups=subgroups,
        shift=shift,
        protocol=protocol,
        comparison=comparison,
        fairness=fairness,
    )
    declared = _declared_sites(sites, protocol)
    metrics = _with_empty_bands(metrics, protocol)
    scored = metrics.get("sites") or {}
    missing = {s: _missing_reason(s, cohort) for s in (declared or []) if s not in scored}
    rows: list[GateRow] = []
    for spec in specs:
        if spec.compare is not None:
            judged = _judge_comparison(spec, metrics, comparison or {})
        elif spec.kind == "across_sites":
            judged = [judge_synthesis(spec, metrics["synthesis"])]
        elif spec.kind == "each_attribute":
            judged = judge_fairness(spec, fairness or {})
        elif spec.metric in SHIFT_METRICS:
            judged = _judge_shift(spec, metrics, shift or {})
        else:
            judged = _judge_one(spec, metrics, calibration, subgroups)
        rows.extend(_with_missing_sites(spec, judged, missing))
    if declared is not None:
        rows.extend(_sites_scored(declared, scored, missing))
    return GateReport(gates=specs, rows=rows, name=name or getattr(protocol, "name", None) or "validate")


def _declared_sites(sites: Sequence[str] | None, protocol: Any) -> list[str] | None:
    if sites is not None:
        return [str(s) for s in sites]
    declared = getattr(protocol, "sites", None)
    if not declared:
        return None
    return [str(getattr(s, "id", s)) for s in declared]


def _with_empty_bands(metrics: Mapping, protocol: Any) -> Mapping:
    """``metrics`` with a block for every declared band of a banded subgroup that holds no case
    (``{"n": 0, "insufficient": true}``), so that an ``each_subgroup`` or ``worst_subgroup`` gate shows
    the empty band, decided by its insufficient policy, instead of judging the other bands alone."""
    from validate.cohort import band_labels

    declared = {
        g.name: band_labels(list(g.bands))
        for g in getattr(protocol, "subgroups", None) or []
        if getattr(g, "bands", None)
    }
    observed = metrics.get("subgroups") or {}
    if not any(set(labels) - set(observed.get(name) or {}) for name, labels in declared.items() if name in observed):
        return metrics
    subgroups = {name: dict(groups) for name, groups in observed.items()}
    for name, labels in declared.items():
        if name in subgroups:
            for label in labels:
                subgroups[name].setdefault(
                    label, {"n": 0, "n_events": 0, "insufficient": True, "reason": "no case in this declared band"}
                )
    return {**metrics, "subgroups": subgroups}


def _missing_reason(site: str, cohort: Mapping | None) -> str:
    """Why a declared site has no block: no case scored, with the exclusions of ``sites.json``."""
    info = ((cohort or {}).get("sites") or {}).get(site) or {}
    excluded = info.get("excluded") or {}
    if excluded:
        kinds = "; ".join(f"{k} ({v})" for k, v in sorted(excluded.items()))
        return f"no scored case at declared site {site}: {sum(excluded.values())} case(s) excluded: {kinds}"
    return f"no scored case at declared site {site}: every case failed to read or score, or the predictions hold none"


def _with_missing_sites(spec: GateSpec, rows: list[GateRow], missing: Mapping[str, str]) -> list[GateRow]:
    """A gate's rows with the declared sites that have no scored case accounted for (module docstring)."""
    base = dict(
        gate=spec.label,
        metric=spec.metric,
        scope=spec.scope,
        on=spec.on,
        direction=spec.direction,
        threshold=spec.threshold,
        calibration=spec.calibration,
    )
    if missing and spec.kind in ("each_site", "subgroup_gap"):
        for s, why in sorted(missing.items()):
            item = f"site {s}" if spec.kind == "each_site" else f"site {s}: {spec.attribute} (|gap|)"
            rows.append(
                GateRow(
                    **base,
                    item=item,
                    verdict="fail",
                    reason=f"{why}; a missing site fails every gate judged per site",
                    n=0,
                    site=s,
                    insufficient=True,
                )
            )
    elif missing:
        note = f"pooled without declared site(s) {', '.join(sorted(missing))}, which have no scored case"
        for row in rows:
            row.reason = f"{row.reason}; {note}" if row.reason else note
    if not rows:
        row = GateRow(**base, item=spec.scope, verdict="pass", reason="", insufficient=True, subgroup=spec.attribute)
        rows.append(_apply_policy(spec, row, f"nothing to judge: scope {spec.scope} has no block in the results"))
    return rows


def _sites_scored(declared: Sequence[str], scored: Mapping, missing: Mapping[str, str]) -> list[GateRow]:
    """The built-in :data:`SITES_SCORED` rows: one per declared site, ``fail`` when it has no scored case."""
    rows = []
    for s in declared:
        blk = scored.get(s) or {}
        n = _int(blk.get("n"))
        row = GateRow(
            gate=SITES_SCORED,
            metric="n",
            scope="each_site",
            item=f"site {s}",
            on="estimate",
            direction="min",
            threshold=1.0,
            verdict="pass",
            reason="",
            value=None if n is None else float(n),
            estimate=None if n is None else float(n),
            n=n or 0,
            n_events=_int(blk.get("n_events")),
            site=s,
            builtin=True,
        )
        if s in missing or not n:
            row.verdict, row.reason = "fail", missing.get(s) or f"no scored case at declared site {s}"
        else:
            row.reason = f"{n} scored case(s) >= 1"
        rows.append(row)
    return rows


def _judge_one(
    spec: GateSpec, metrics: Mapping, calibration: Mapping | None, subgroups: Mapping | None
) -> list[GateRow]:
    base = dict(
        gate=spec.label,
        metric=spec.metric,
        scope=spec.scope,
        on=spec.on,
        direction=spec.direction,
        threshold=spec.threshold,
        calibration=spec.calibration,
    )
    kind, attr = spec.kind, spec.attribute
    if kind == "overall":
        block = (
            calibration["methods"][spec.calibration]["overall"] if spec.calibration else metrics.get("overall") or {}
        )
        return [_judge_block(spec, block, base, item="overall")]
    if kind == "each_site":
        sites = (
            calibration["methods"][spec.calibration].get("sites") or {}
            if spec.calibration
            else metrics.get("sites") or {}
        )
        rows = [_judge_block(spec, sites[s], base, item=f"site {s}", site=s) for s in sorted(sites)]
        if spec.calibration:
            rows += _not_evaluated_after_calibration(spec, base, metrics, calibration, sites)
        return rows
    groups = (metrics.get("subgroups") or {}).get(attr) or {}
    if kind == "each_subgroup":
        return [_judge_block(spec, groups[g], base, item=f"{attr}={g}", subgroup=attr, group=g) for g in sorted(groups)]
    if kind == "worst_subgroup":
        return [_judge_worst(spec, groups, base, attr)]
    return _judge_gaps(spec, subgroups or {}, base, attr)


def judge_fairness(spec: GateSpec, fairness: Mapping) -> list[GateRow]:
    """The rows of an ``each_attribute`` gate (:mod:`validate.fairness_gates`): each summary judged as a
    block; where groups were left out as too small, the verdict is at least the insufficient policy
    (``pass`` ignores them), as for ``worst_subgroup``."""
    from validate.fairness_gates import fairness_items

    base = dict(
        gate=spec.label,
        metric=spec.metric,
        scope=spec.scope,
        on=spec.on,
        direction=spec.direction,
        threshold=spec.threshold,
        calibration=None,
    )
    rows = []
    for item, attr, block, small in fairness_items(spec, fairness):
        row = _judge_block(spec, block, base, item=item, subgroup=attr)
        if small:
            row.insufficient = True
            note = f"{len(small)} group(s) too small to judge, left out: {', '.join(small)}"
            row.reason = f"{row.reason}; {note}" if row.reason else note
            if _RANK[spec.insufficient] > _RANK[row.verdict]:
                row.verdict = spec.insufficient
                row.reason += f" (insufficient policy: {spec.insufficient})"
        rows.append(row)
    return rows


def _not_evaluated_after_calibration(
    spec: GateSpec, base: dict, metrics: Mapping, calibration: Mapping, evaluated: Mapping
) -> list[GateRow]:
    """Rows for the scored sites a calibrated ``each_site`` gate cannot judge: sites the comparison
    meant to evaluate (``external_sites``; without that key, every scored site not fitted on) that
    are absent from that method's evaluated sites in calibration.json."""
    fitted = set(map(str, calibration.get("fit_on") or []))
    meant = calibration.get("external_sites")
    expected = (
        [str(s) for s in meant] if meant is not None else [s for s in metrics.get("sites") or {} if s not in fitted]
    )
    rows = []
    for s in sorted(expected):
        if s in evaluated or s not in (metrics.get("sites") or {}):
            continue
        blk = metrics["sites"][s]
        row = GateRow(
            **base,
            item=f"site {s}",
            verdict="pass",
            reason="",
            n=_int(blk.get("n")),
            n_events=_int(blk.get("n_events")),
            site=s,
            insufficient=True,
        )
        rows.append(
            _apply_policy(
                spec, row, f"site {s} was not evaluated after {spec.calibration} (absent from calibration.json)"
            )
        )
    return rows


def shift_counts(shift: Mapping, site: str) -> dict:
    """The gateable shift and drift counts of one site (a BLOCK-like dict; ``undefined`` says why a
    count is missing)."""
    out: dict[str, Any] = {"undefined": {}}
    info = (shift.get("sites") or {}).get(site)
    if info is None:
        why = (
            "the development site is the reference of the shift analysis"
            if site in ((shift.get("development") or {}).get("sites") or [])
            else "not compared in shift.json"
        )
        out["undefined"].update(shift_material_findings=why, shift_flagged_findings=why)
    else:
        ranking = info.get("ranking") or []
        out["shift_material_findings"] = sum(bool(r.get("material")) for r in ranking)
        out["shift_flagged_findings"] = sum(bool(r.get("flagged")) for r in ranking)
    drift = ((shift.get("drift") or {}).get("sites") or {}).get(site)
    if not drift or not drift.get("windows"):
        out["undefined"]["drift_windows_flagged"] = (
            (drift or {}).get("reason") or (shift.get("drift") or {}).get("reason") or "no dated cases at this site"
        )
    else:
        detector = drift.get("detector", "tests")
        flag = {"tests": lambda w: w.get("flagged"), "cusum": lambda w: w.get("cusum_alarm")}.get(
            detector, lambda w: w.get("flagged") or w.get("cusum_alarm")
        )
        out["drift_windows_flagged"] = sum(bool(flag(w)) for w in drift["windows"])
    return out


def _judge_shift(spec: GateSpec, metrics: Mapping, shift: Mapping) -> list[GateRow]:
    base = dict(
        gate=spec.label,
        metric=spec.metric,
        scope=spec.scope,
        on=spec.on,
        direction=spec.direction,
        threshold=spec.threshold,
        calibration=None,
    )
    sites = metrics.get("sites") or {}
    blocks = {}
    for s in sorted(sites):
        blocks[s] = {**shift_counts(shift, s), "n": sites[s].get("n"), "n_events": sites[s].get("n_events")}
    if spec.kind == "each_site":
        return [_judge_block(spec, blocks[s], base, item=f"site {s}", site=s) for s in sorted(blocks)]
    counts = [b[spec.metric] for b in blocks.values() if spec.metric in b]
    total: dict[str, Any] = {"n": (metrics.get("overall") or {}).get("n"), "undefined": {}}
    if counts:
        total[spec.metric] = sum(counts)
    else:
        total["undefined"][spec.metric] = "no site has a value"
    return [_judge_block(spec, total, base, item="overall")]


def _judge_block(
    spec: GateSpec,
    block: Mapping,
    base: dict,
    *,
    item: str,
    judge: Callable[[GateSpec, GateRow], GateRow] | None = None,
    **where,
) -> GateRow:
    entry = _lookup(block, spec.metric)
    est, lo, hi = _entry_triplet(entry)
    value = {"estimate": est, "ci_low": lo, "ci_high": hi}[spec.on]
    row = GateRow(
        **base,
        item=item,
        verdict="pass",
        reason="",
        value=value,
        estimate=est,
        ci_low=lo,
        ci_high=hi,
        n=_int(block.get("n")),
        n_events=_int(block.get("n_events")),
        **where,
    )
    short = _insufficient_reason(block)
    if short is not None:
        row.insufficient = True
        return _apply_policy(spec, row, f"too little data ({short})")
    if value is None:
        why = _undefined_reason(entry, spec, block)
        return _apply_policy(spec, row, why)
    return _precision_check(spec, (judge or _compare)(spec, row), block)


def _precision_check(spec: GateSpec, row: GateRow, block: Mapping) -> GateRow:
    """A row that passes at a block whose precision criterion for the gate's metric is not adequate
    (:func:`validate.metrics.precision.gate_criterion`): with the protocol's
    ``metrics.precision.insufficient: true`` (carried in the block's ``precision``) it takes the gate's
    insufficient policy, with the reason; otherwise the shortfall is noted and the verdict stands. A row
    that does not pass is left as it is: precision never makes a verdict more lenient."""
    from validate.metrics.precision import criterion_reason, gate_criterion

    precision = block.get("precision")
    crit = gate_criterion(precision, spec.metric) if row.verdict == "pass" else None
    if crit is None or not isinstance(precision, Mapping):
        return row
    note = f"imprecise: {criterion_reason(crit)}"
    if precision.get("insufficient"):
        row.insufficient = True
        return _apply_policy(spec, row, f"{row.reason}, but {note}")
    row.reason = f"{row.reason} (note: {note})"
    return row


# ---- gates on the synthesis across sites (scope across_sites) -------------------------------------


def judge_synthesis(spec: GateSpec, synthesis: Mapping) -> GateRow:
    """The one row of an ``across_sites`` gate: the pooled metric's ``estimate``, ``ci_low``/``ci_high``
    (interval of the random-effects mean) or ``pi_low``/``pi_high`` (the prediction interval for a new
    site) from ``metrics.json`` ``synthesis``. A missing number (k < 3 for the prediction interval,
    k < 2 for the HKSJ interval, no site) follows the insufficient policy with the synthesis's reason;
    sites below the insufficient rule are pooled and named in the reason."""
    from validate.analysis.synthesis import canonical_metric

    pooled = synthesis["metrics"][canonical_metric(spec.metric)]
    k = int(pooled.get("k") or 0)
    row = GateRow(
        gate=spec.label,
        metric=spec.metric,
        scope=spec.scope,
        item=f"across {k} site(s): {', '.join(i['site'] for i in pooled.get('inputs') or []) or 'none'}",
        on=spec.on,
        direction=spec.direction,
        threshold=spec.threshold,
        verdict="pass",
        reason="",
        value=_num(pooled.get(spec.on)),
        estimate=_num(pooled.get("estimate")),
        ci_low=_num(pooled.get("ci_low")),
        ci_high=_num(pooled.get("ci_high")),
        n=sum(_int(i.get("n")) or 0 for i in pooled.get("inputs") or []),
    )
    if row.value is None:
        why = pooled.get("pi_reason") if spec.on in PI_ON else None
        row.insufficient = True
        return _apply_policy(spec, row, why or pooled.get("reason") or f"{spec.on} of the synthesis is undefined")
    row = _compare(spec, row, f"{spec.metric} (random-effects, {synthesis.get('method')}/{synthesis.get('interval')})")
    thin = [i["site"] for i in pooled.get("inputs") or [] if i.get("insufficient")]
    if thin:
        row.reason += f"; pooled with site(s) below the insufficient rule: {', '.join(thin)}"
    return row


# ---- comparison gates (compare: baseline) ---------------------------------------------------------


def _judge_comparison(spec: GateSpec, metrics: Mapping, comparison: Mapping) -> list[GateRow]:
    """The rows of a comparison gate: one per block of ``comparison.json`` in its scope. A site or a
    subgroup group of ``metrics.json`` that the comparison has no block for (no case scored by both
    models) fails, as a missing site does: it was not compared, which is not "too little data"."""
    base = dict(
        gate=spec.label,
        metric=spec.metric,
        scope=spec.scope,
        on=spec.on,
        direction=spec.direction,
        threshold=spec.threshold,
        calibration=None,
        compare=spec.compare,
        margin=_margin(spec),
    )
    if spec.kind == "overall":
        return [_judge_delta(spec, comparison.get("overall") or {}, base, item="overall")]
    if spec.kind == "each_site":
        sites = comparison.get("sites") or {}
        rows = [_judge_delta(spec, sites[s], base, item=f"site {s}", site=s) for s in sorted(sites)]
        for s in sorted(set(metrics.get("sites") or {}) - set(sites)):
            rows.append(
                GateRow(
                    **base,
                    item=f"site {s}",
                    verdict="fail",
                    site=s,
                    n=0,
                    insufficient=True,
                    reason=f"no case of site {s} was scored by both models: the baseline was not compared there",
                )
            )
        return rows
    attr = spec.attribute
    groups = (comparison.get("subgroups") or {}).get(attr) or {}
    rows = [
        _judge_delta(spec, (groups[g] or {}).get("overall") or {}, base, item=f"{attr}={g}", subgroup=attr, group=g)
        for g in sorted(groups)
    ]
    # a group the new model's metrics hold but the comparison does not (none of its cases scored by
    # both models) was not compared: it fails, as a site does, rather than vanish from the verdict
    for g in sorted(set((metrics.get("subgroups") or {}).get(attr) or {}) - set(groups)):
        rows.append(
            GateRow(
                **base,
                item=f"{attr}={g}",
                verdict="fail",
                subgroup=attr,
                group=g,
                n=0,
                insufficient=True,
                reason=f"no case of {attr}={g} was scored by both models: the baseline was not compared there",
            )
        )
    return rows


def _judge_delta(spec: GateSpec, block: Mapping, base: dict, *, item: str, **where) -> GateRow:
    """One comparison block (DELTA_BLOCK of ``comparison.json``) judged: the gate's quantity of the
    difference new − baseline against its bound, with the non-inferiority wording."""
    entry = (block.get("metrics") or {}).get(spec.metric) or {}
    as_block = {
        "n": block.get("n"),
        "n_events": block.get("n_events"),
        "insufficient": block.get("insufficient"),
        "reason": block.get("reason"),
        "undefined": block.get("undefined") or {},
    }
    if entry:
        as_block[spec.metric] = {
            "estimate": entry.get("delta"),
            "ci_low": entry.get("ci_low"),
            "ci_high": entry.get("ci_high"),
        }
    row = _judge_block(spec, as_block, base, item=item, judge=_compare_delta, **where)
    row.estimate_new, row.estimate_baseline = _num(entry.get("new")), _num(entry.get("baseline"))
    return row


def _margin(spec: GateSpec) -> float:
    """The non-inferiority margin of a comparison gate: how much worse than the baseline the new model
    may be (``min: -0.02`` for a metric where higher is better, ``max: 0.01`` where lower is)."""
    return -spec.threshold if spec.direction == "min" else spec.threshold


def comparison_verdict(
    direction: str, threshold: float, passed: bool, value: float, ci_low: float | None, ci_high: float | None
) -> str:
    """The words of a comparison gate's verdict on the difference d = new − baseline.

    For a lower bound (higher is better, ``min: -m``): "superior" when the interval lies above 0
    (``ci_low > 0``), "non-inferior (margin m)" when the gate passes otherwise; when it fails,
    "inferior" when the whole interval lies below the bound (``ci_high < -m``), else "non-inferiority
    not shown (margin m)". Mirrored for an upper bound (lower is better, ``max: m``): superior when
    ``ci_high < 0``, inferior when ``ci_low > m``. Without an interval the value stands for both bounds.
    """
    lo = value if ci_low is None else ci_low
    hi = value if ci_high is None else ci_high
    margin = _thr(-threshold if direction == "min" else threshold)
    better = lo > 0 if direction == "min" else hi < 0
    worse = hi < threshold if direction == "min" else lo > threshold
    if passed:
        return "superior" if better else f"non-inferior (margin {margin})"
    return "inferior" if worse else f"non-inferiority not shown (margin {margin})"


def _compare_delta(spec: GateSpec, row: GateRow) -> GateRow:
    row = _compare(spec, row, what=f"Δ {spec.metric}")
    if spec.on == "estimate":
        # a point estimate shows neither non-inferiority nor superiority: say only where it lies
        side = "within" if row.verdict == "pass" else "beyond"
        margin = _thr(-spec.threshold if spec.direction == "min" else spec.threshold)
        row.reason = (
            f"{row.reason}: estimate {side} the margin ({margin}; judged on the estimate, not a non-inferiority test)"
        )
        return row
    words = comparison_verdict(
        spec.direction, spec.threshold, row.verdict == "pass", row.value, row.ci_low, row.ci_high
    )
    row.reason = f"{row.reason}: {words}"
    return row


def _judge_worst(spec: GateSpec, groups: Mapping, base: dict, attr: str) -> GateRow:
    candidates, small = [], []
    for g in sorted(groups):
        row = _judge_block(spec, groups[g], base, item=f"worst {attr}: {attr}={g}", subgroup=attr, group=g)
        if row.insufficient or row.value is None:
            small.append(g)
        else:
            candidates.append(row)
    if not candidates:
        row = GateRow(**base, item=f"worst {attr}", verdict="pass", reason="", subgroup=attr, insufficient=True)
        return _apply_policy(spec, row, f"no group of {attr} has enough data to judge ({', '.join(small) or 'none'})")
    sign = 1.0 if spec.direction == "min" else -1.0
    worst = min(candidates, key=lambda r: sign * r.value)
    if small:
        note = f"{len(small)} group(s) too small to judge: {', '.join(small)}"
        worst.reason = f"{worst.reason}; {note}"
        if _RANK[spec.insufficient] > _RANK[worst.verdict]:
            worst.verdict = spec.insufficient
            worst.reason += f" (insufficient policy: {spec.insufficient})"
    return worst


def _judge_gaps(spec: GateSpec, analysis: Mapping, base: dict, attr: str) -> list[GateRow]:
    rows = []
    sites = analysis.get("sites") or {}
    for s in sorted(sites):
        groups = ((sites[s].get("subgroups") or {}).get(attr)) or {}
        for g in sorted(groups):
            cell = groups[g]
            block = cell.get("block") or {}
            gap = (cell.get("gap") or {}).get(spec.metric)
            d, dlo, dhi = _entry_triplet(gap)
            abs_est = None if d is None else abs(d)
            if dlo is None or dhi is None:
                abs_lo = abs_hi = None
            else:
                abs_hi = max(abs(dlo), abs(dhi))
                abs_lo = 0.0 if dlo <= 0 <= dhi else min(abs(dlo), abs(dhi))
            value = {"estimate": abs_est, "ci_low": abs_lo, "ci_high": abs_hi}[spec.on]
            row = GateRow(
                **base,
                item=f"site {s}: {attr}={g} (|gap|)",
                verdict="pass",
                reason="",
                value=value,
                estimate=d,
                ci_low=dlo,
                ci_high=dhi,
                n=_int(block.get("n")),
                n_events=_int(block.get("n_events")),
                site=s,
                subgroup=attr,
                group=g,
            )
            short = _insufficient_reason(block)
            if short is not None:
                row.insufficient = True
                rows.append(_apply_policy(spec, row, f"too little data ({short})"))
            elif value is None:
                rows.append(
                    _apply_policy(
                        spec, row, (gap or {}).get("reason") or f"gap in {spec.metric} is undefined for this group"
                    )
                )
            else:
                rows.append(_compare(spec, row, what="|gap|"))
    return rows


def _compare(spec: GateSpec, row: GateRow, what: str | None = None) -> GateRow:
    ok = row.value >= spec.threshold if spec.direction == "min" else row.value <= spec.threshold
    op = (">=" if ok else "<") if spec.direction == "min" else ("<=" if ok else ">")
    label = what or spec.metric
    row.verdict = "pass" if ok else "fail"
    value = format_beside(row.value, spec.threshold, spec.metric)
    row.reason = f"{label} {spec.on} {value} {op} {_thr(spec.threshold)}"
    return row


def _apply_policy(spec: GateSpec, row: GateRow, why: str) -> GateRow:
    row.verdict = spec.insufficient
    row.reason = f"{why}; insufficient policy: {spec.insufficient}"
    return row


def gateable_metrics(block: Mapping) -> set[str]:
    """The metric names a gate may name, given one metrics BLOCK: the block's dotted metric paths
    (``auroc``, ``hosmer_lemeshow.p_value``) and the shift and drift counts (:data:`SHIFT_METRICS`)."""
    return _metric_paths(block) | set(SHIFT_METRICS)


# ---- small helpers -----------------------------------------------------------------------------


def _metric_paths(block: Mapping, prefix: str = "") -> set[str]:
    """Dotted paths of the metric entries of a BLOCK (``auroc``, ``hosmer_lemeshow.p_value``, ...), and
    ``<metric>@<t>`` for its net-benefit entries at decision thresholds."""
    out = _decision_paths(block or {}, prefix)
    for k, v in (block or {}).items():
        path = f"{prefix}{k}"
        if isinstance(v, Mapping):
            if "estimate" in v:
                out.add(path)
            else:
                if "statistic" in v or "p_value" in v:
                    out.add(path)
                out |= _metric_paths(v, path + ".")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out.add(path)
    return out


def decision_metric(path: str) -> tuple[str, float] | None:
    """``(metric, t)`` of a gate metric named ``<metric>@<t>`` (a net-benefit metric at decision threshold
    t: the ``@`` is split before any dot, the dot of ``0.2`` belonging to t), else None."""
    name, at, rest = path.partition("@")
    if not at:
        return None
    try:
        t = float(rest)
    except ValueError:
        return None
    return (name, t) if math.isfinite(t) else None


def canonical_metric(path: str) -> str:
    """A gate's metric as :func:`_metric_paths` names it (``net_benefit@0.20`` as ``net_benefit@0.2``)."""
    at = decision_metric(path)
    return f"{at[0]}@{at[1]!r}" if at is not None else path


def decision_item(block: Mapping, t: float) -> Mapping | None:
    """The item of a BLOCK's ``decision`` list at threshold ``t`` (|Δ| < 1e-9), or None."""
    for item in block.get("decision") or []:
        if isinstance(item, Mapping) and abs(float(item.get("threshold", math.nan)) - t) < 1e-9:
            return item
    return None


def _decision_paths(block: Mapping, prefix: str) -> set[str]:
    """``<metric>@<t>`` for every entry (or undefined entry) of the BLOCK's ``decision`` items."""
    out = set()
    for item in block.get("decision") or []:
        if not isinstance(item, Mapping):
            continue
        for k, v in item.items():
            # beats_defaults is a share of replicates, not an entry: not a gate's metric
            if k != "beats_defaults" and (v is None or (isinstance(v, Mapping) and "estimate" in v)):
                out.add(f"{prefix}{k}@{float(item['threshold'])!r}")
    return out


def metric_entry(block: Mapping, path: str) -> Any:
    """The value a gate's metric names in a BLOCK: a dotted path, or ``<metric>@<t>`` (a net-benefit entry
    of the ``decision`` item at t); None where absent."""
    return _lookup(block, path)


def _lookup(block: Mapping, path: str) -> Any:
    at = decision_metric(path)
    if at is not None:
        # classes.<c>.net_benefit@0.2: the per-class block's decision item
        where, _, name = at[0].rpartition(".")
        holder = _lookup(block, where) if where else block
        item = decision_item(holder, at[1]) if isinstance(holder, Mapping) else None
        return None if item is None else item.get(name)
    node: Any = block
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _entry_triplet(entry: Any) -> tuple[float | None, float | None, float | None]:
    if entry is None:
        return None, None, None
    if isinstance(entry, Mapping):
        if "estimate" in entry:
            return _num(entry.get("estimate")), _num(entry.get("ci_low")), _num(entry.get("ci_high"))
        if "statistic" in entry:
            return _num(entry.get("statistic")), None, None
        return None, None, None
    return _num(entry), None, None


def _insufficient_reason(block: Mapping) -> str | None:
    if not block.get("insufficient"):
        return None
    reason = block.get("insufficient_reason") or block.get("reason")
    if isinstance(reason, (list, tuple)):
        reason = "; ".join(map(str, reason))
    return str(reason) if reason else "marked insufficient"


def _undefined_reason(entry: Any, spec: GateSpec, block: Mapping) -> str:
    # metrics BLOCKs give the reason of a null metric under "undefined": {metric: reason}
    at = decision_metric(spec.metric)
    if at is not None and "." in at[0]:
        where, _, name = at[0].rpartition(".")
        holder = _lookup(block, where)
        block = holder if isinstance(holder, Mapping) else {}
        at = (name, at[1])
    key = f"{at[0]}@{at[1]!r}" if at is not None else spec.metric.split(".")[0]
    reason = (block.get("undefined") or {}).get(key)
    if isinstance(entry, Mapping):
        if entry.get("estimate") is not None and spec.on != "estimate":
            return f"{spec.metric} has no interval here, so {spec.on} cannot be judged"
        reason = reason or entry.get("reason")
    if reason:
        return f"{spec.metric} undefined: {reason}"
    return f"{spec.metric} is undefined here"


def _num(x: Any) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _int(x: Any) -> int | None:
    return None if x is None else int(x)


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _fmt(x: float | None, metric: str | None = None) -> str:
    """A judged value at its metric's precision (:func:`validate.formatting.format_value`)."""
    return format_value(x, metric)


def _thr(x: float | None) -> str:
    """A threshold as the protocol declares it (0.65, not 0.650)."""
    return format_declared(x)


def _interval_text(row: GateRow) -> str:
    """The row's estimate with its interval, at its metric's precision."""
    return format_interval(row.estimate, row.ci_low, row.ci_high, row.metric)


def _n_text(n: int | None, events: int | None) -> str:
    if n is None:
        return "—"
    return format_count(n) if events is None else f"{format_count(n)} ({format_count(events)})"


def _row_rule(row: GateRow) -> str:
    op = ">=" if row.direction == "min" else "<="
    if row.builtin:
        return f"scored cases {op} {_thr(row.threshold)}"
    what = f"|gap| {row.metric}" if row.scope.startswith("subgroup_gap") else row.metric
    if row.compare:
        what = f"Δ {row.metric} (new − {row.compare})"
    after = f" after {row.calibration}" if row.calibration else ""
    return f"{what} {row.on}{after} {op} {_thr(row.threshold)}"


def _value_text(row: GateRow) -> str:
    """The judged value; the built-in check's is a count of cases."""
    return _n_text(row.n, None) if row.builtin else format_beside(row.value, row.threshold, row.metric)


def _row_details(row: GateRow) -> str:
    return (
        f"gate: {row.gate}\nscope: {row.scope}\nitem: {row.item}\nrule: {_row_rule(row)}\n"
        f"value: {_value_text(row)}\nestimate (interval): {_interval_text(row)}\n"
        f"n (events): {_n_text(row.n, row.n_events)}\nverdict: {row.verdict}\nreason: {row.reason}"
        + (
            f"\nnew: {_fmt(row.estimate_new, row.metric)}\nbaseline: {_fmt(row.estimate_baseline, row.metric)}"
            f"\nmargin: {_thr(row.margin)}"
            if row.compare
            else ""
        )
    )


def _junit_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def _md(text: str) -> str:
    """Text from a protocol or a manifest as inert Markdown (:func:`validate.escape.markdown_text`)."""
    return markdown_text(text)
