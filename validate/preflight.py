"""Pre-run checks: can a run answer every gate of this protocol? Asked before anything is scored.

:func:`validate.gates.check_gates` judges gates against a run's results; by then the cohort has been
scored. Most of what it refuses is known from the protocol alone, and ``validate check`` used to say
"ok" for a misspelt metric (``aurc``) that ``validate run`` refused only after scoring.
:func:`check_protocol_gates` asks the same questions up front, from the engines themselves rather than
from lists copied here:

- metric names: the paths of a metrics BLOCK that the metrics engine builds for this protocol's task,
  classes and settings on a small synthetic cohort (:func:`probe_block`), read with
  :func:`validate.gates.gateable_metrics`; ``subgroup_gap`` gates: the gap metrics of the subgroup
  analysis (:func:`validate.analysis.subgroups.gap_metrics`) for the task;
- shift and drift counts: scope ``overall`` or ``each_site``, no calibration, ``on: estimate``, and a
  development site plus another site to compare (what the shift analysis needs);
- ``on: ci_low``/``ci_high``: the metric must carry an interval in such a block (a count or a test
  statistic has none, so the gate would fall to its insufficient policy on every run);
- calibration: every ``calibration.methods`` entry is a method of the calibrator registry valid for
  the task (:func:`validate.calibrators.registry.check_method`), and a gate judged after calibration
  has scope ``overall`` or ``each_site`` (calibration results are per site).
- fairness gates (scope ``each_attribute``): a binary task with declared subgroups, a measure of
  :data:`validate.analysis.fairness.GATEABLE`, no calibration;
- comparison gates (``compare: baseline``): a baseline model to compare with (``model.baseline`` or
  ``--baseline``), a binary task (the paired comparison's only task in this version) and a metric the
  paired comparison reports (:func:`comparison_metrics`); a baseline of a non-binary task is refused too.

Subgroup names in scopes and gate calibration methods missing from ``calibration.methods`` are
checked when the protocol is loaded (:mod:`validate.protocol`). Problems are raised together as
:class:`InputErrors`, each with the protocol file, line, field and, where one is close, the nearest
valid name.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from validate.errors import InputError, InputErrors

#: Cases of the synthetic probe cohort: enough for every metric of a BLOCK to be defined.
PROBE_CASES = 240
#: Bootstrap replicates of the probe (enough to tell whether a metric carries an interval).
PROBE_BOOTSTRAP = 4


#: What the paired comparison refuses for multiclass and multilabel tasks (the engine says the same).
BINARY_ONLY = "paired comparison supports binary tasks"


def check_protocol_gates(protocol, *, baseline: bool | None = None) -> None:
    """Raise :class:`InputErrors` for every gate or calibration method a run could not answer.

    ``baseline``: whether the run compares with a baseline model (``model.baseline`` or ``--baseline``);
    None when not known yet (``validate check``: the run's flags may give one), then a comparison gate
    without ``model.baseline`` is not refused here. A segmentation protocol's gates are checked by
    :func:`validate.segmentation_gates.segmentation_gate_problems` (a baseline is welcome there)."""
    if protocol.task == "segmentation":
        from validate.segmentation_gates import segmentation_gate_problems

        seg_problems = segmentation_gate_problems(protocol, baseline)
        if seg_problems:
            raise InputErrors(seg_problems)
        return
    problems = _method_problems(protocol)
    problems += _baseline_problems(protocol, baseline)
    problems += _fairness_reference_problems(protocol)
    if protocol.gates:
        problems += _gate_problems(protocol)
    if problems:
        raise InputErrors(problems)


def _baseline_problems(protocol, baseline: bool | None) -> list[InputError]:
    """A comparison gate with no baseline to compare with, and a baseline for a task the paired
    comparison does not support."""
    problems = []
    for i, gate in enumerate(protocol.gates):
        if gate.compares and baseline is False:
            problems.append(
                InputError(
                    f"gate `{gate.label}` compares with a baseline model, but the run has none",
                    file=protocol.path,
                    line=protocol.line_of("gates", i, "compare"),
                    field=f"gates[{i}].compare",
                    expected="a baseline: `validate run ... --baseline PATH` (a checkpoint or a predictions file), "
                    "or model.baseline.checkpoint in the protocol",
                )
            )
    compares = bool(baseline) or protocol.model.baseline is not None or bool(protocol.comparison_gates)
    if protocol.task != "binary" and compares:
        where = ("model", "baseline") if protocol.model.baseline is not None else ("gates",)
        problems.append(
            InputError(
                f"{BINARY_ONLY}; this protocol's task is {protocol.task}",
                file=protocol.path,
                line=protocol.line_of(*where),
                field=".".join(map(str, where)),
                expected="task: binary, or no baseline and no `compare: baseline` gate",
            )
        )
    return problems


def comparison_metrics(task: str) -> list[str]:
    """The metrics the paired comparison reports a difference for
    (:func:`validate.analysis.comparison.compared_metrics`); binary tasks only."""
    from validate.analysis.comparison import compared_metrics

    return [m.name for m in compared_metrics()] if task == "binary" else []


def _without_paired_interval(metric: str) -> bool:
    """Whether a run's comparison gives ``metric``'s difference no interval: the smoothed calibration
    errors (one smoother fit per replicate and model is not computed in a run)."""
    from validate.metrics import registry

    m = registry.get(metric, "binary")
    return m is not None and m.smooth


def _method_problems(protocol) -> list[InputError]:
    from validate.calibrators.registry import check_method

    problems = []
    for i, method in enumerate(protocol.calibration.methods):
        if method == "none":  # the uncalibrated baseline, always compared
            continue
        try:
            check_method(method, protocol.task)
        except InputError as exc:
            problems.append(
                InputError(
                    exc.message,
                    file=protocol.path,
                    line=protocol.line_of("calibration", "methods", i),
                    field=f"calibration.methods[{i}]",
                    expected=exc.expected,
                )
            )
    return problems


def _gate_problems(protocol) -> list[InputError]:
    from validate.analysis.subgroups import gap_metrics
    from validate.gates import SHIFT_METRICS, canonical_metric, comparison_bound_problem, gateable_metrics

    problems: list[InputError] = []
    task = protocol.task
    blocks = {False: probe_block(protocol, smooth_intervals=True)}  # key: judged after calibration
    dev = protocol.sites_with_role("development")
    comparable = bool(dev) and len(protocol.sites) > len(dev)

    def err(i: int, gate, key: str, message: str, expected: str) -> None:
        problems.append(
            InputError(
                f"gate `{gate.label}`: {message}",
                file=protocol.path,
                line=protocol.line_of("gates", i, key),
                field=f"gates[{i}].{key}",
                expected=expected,
            )
        )

    for i, gate in enumerate(protocol.gates):
        kind = gate.scope.partition(":")[0]
        after = gate.calibration is not None
        if kind == "across_sites":
            problems += [_problem(protocol, i, gate, *p) for p in synthesis_gate_problems(protocol, gate)]
            continue
        if gate.compares:
            valid = comparison_metrics(task)
            if valid and gate.metric not in valid:
                err(
                    i,
                    gate,
                    "metric",
                    f"the paired comparison has no difference in `{gate.metric}`" + _nearest(gate.metric, valid),
                    f"one of {', '.join(valid)}",
                )
            elif (bound := comparison_bound_problem(gate.metric, gate.direction, gate.on)) is not None:
                key, message, expected = bound
                err(i, gate, key, message, expected)
            elif gate.on != "estimate" and _without_paired_interval(gate.metric):
                err(
                    i,
                    gate,
                    "on",
                    f"the difference in `{gate.metric}` has no paired interval in a run (a smoothed calibration error)",
                    "on: estimate",
                )
            continue
        if kind == "each_attribute":
            _fairness_gate_problems(protocol, i, gate, err)
            continue
        if (decision := _decision_gate_problem(protocol, gate)) is not None:
            err(i, gate, *decision)
            continue
        if after and kind not in ("overall", "each_site"):
            err(
                i,
                gate,
                "scope",
                f"scope {kind} cannot be judged after calibration: calibration results are per site",
                "scope overall or each_site with `calibration`",
            )
        if gate.metric in SHIFT_METRICS:
            if kind not in ("overall", "each_site") or after:
                err(
                    i,
                    gate,
                    "scope",
                    f"{gate.metric} is counted per site by the shift analysis",
                    "scope each_site or overall, without `calibration`",
                )
            elif gate.on != "estimate":
                err(i, gate, "on", f"{gate.metric} is a count without an interval", "on: estimate")
            if not comparable:
                err(
                    i,
                    gate,
                    "metric",
                    f"{gate.metric} needs the shift analysis, which compares external sites "
                    "with a development site; this protocol has no such pair",
                    "a site with role development and another site",
                )
            continue
        if kind == "subgroup_gap":
            valid = list(gap_metrics(task))
            if gate.metric not in valid:
                err(
                    i,
                    gate,
                    "metric",
                    f"the subgroup analysis has no gap in `{gate.metric}` for a {task} task"
                    + _nearest(gate.metric, valid),
                    f"one of {', '.join(valid)}" if valid else "another scope: gaps are computed for binary tasks only",
                )
            continue
        if after not in blocks:
            blocks[after] = probe_block(protocol, smooth_intervals=False)
        block = blocks[after]
        names = gateable_metrics(block) | _null_paths(block)
        if canonical_metric(gate.metric) not in names:
            plain = sorted(n for n in names if "." not in n)
            err(
                i,
                gate,
                "metric",
                f"`{gate.metric}` is not a {task} metric" + _nearest(gate.metric, sorted(names)),
                f"one of {', '.join(plain)} (or a dotted path such as hosmer_lemeshow.p_value)",
            )
        elif gate.on != "estimate" and not _has_interval(block, gate.metric):
            err(
                i,
                gate,
                "on",
                f"`{gate.metric}` has no confidence interval" + (" after calibration" if after else ""),
                "on: estimate",
            )
    return problems


def synthesis_gate_problems(protocol, gate) -> list[tuple[str, str, str]]:
    """Why an ``across_sites`` gate could never be judged, as ``(field, message, expected)`` tuples: a
    task other than binary, a metric the synthesis does not pool
    (:func:`validate.analysis.synthesis.poolable_metrics`), or fewer chosen sites than the quantity
    needs (2 for the pooled estimate and its interval, 3 for the prediction interval)."""
    from validate.analysis.synthesis import canonical_metric, chosen_sites, poolable_metrics

    if protocol.task != "binary":
        return [("scope", f"the synthesis across sites pools binary metrics, not {protocol.task}", "a binary task")]
    thresholds = tuple(getattr(getattr(protocol, "decision", None), "thresholds", None) or ())
    valid = list(poolable_metrics(thresholds))
    if canonical_metric(gate.metric) not in valid:
        return [
            (
                "metric",
                f"`{gate.metric}` is not pooled across sites" + _nearest(gate.metric, valid),
                f"one of {', '.join(valid)}",
            )
        ]
    rule = protocol.synthesis.sites if protocol.synthesis is not None else "external"
    sites, words = chosen_sites(rule, {s.id: s.role for s in protocol.sites})
    need = 3 if gate.on in ("pi_low", "pi_high") else 2
    if len(sites) < need:
        what = "a prediction interval" if need == 3 else "a pooled estimate"
        return [
            (
                "scope",
                f"{what} needs at least {need} sites; the synthesis pools {len(sites)} "
                f"({words}: {', '.join(sites) or 'none'})",
                f"at least {need} sites chosen by synthesis.sites",
            )
        ]
    return []


def _problem(protocol, i: int, gate, key: str, message: str, expected: str) -> InputError:
    return InputError(
        f"gate `{gate.label}`: {message}",
        file=protocol.path,
        line=protocol.line_of("gates", i, key),
        field=f"gates[{i}].{key}",
        expected=expected,
    )


def _decision_gate_problem(protocol, gate) -> tuple[str, str, str] | None:
    """Why a gate on a net-benefit metric at a decision threshold (``net_benefit_vs_treat_all@0.2``)
    cannot be judged, as ``(field, message, expected)``, or None (also for any other gate): the threshold
    must be one of the protocol's ``decision.thresholds`` (|Δ| < 1e-9), the metric one of the net-benefit
    family, and the gate not judged after calibration (net benefit is computed before recalibration)."""
    from validate.gates import decision_metric
    from validate.metrics import registry

    if "@" not in gate.metric:
        return None
    family = [m.name for m in registry.METRICS if m.at_decision and m.interval != "none"]
    declared = list(protocol.decision.thresholds) if getattr(protocol, "decision", None) is not None else []
    at = decision_metric(gate.metric)
    if at is None:
        return "metric", f"`{gate.metric}` names no decision threshold after `@`", "<metric>@<t>, e.g. net_benefit@0.2"
    name, t = at[0].rpartition(".")[2], at[1]
    if name not in family:
        return "metric", f"`{name}` is not a net-benefit metric" + _nearest(name, family), f"one of {', '.join(family)}"
    if not any(abs(t - d) < 1e-9 for d in declared):
        listed = ", ".join(f"{d:g}" for d in declared)
        why = f"the protocol's decision thresholds are {listed}" if declared else "the protocol declares none"
        return (
            "metric",
            f"threshold {t:g} is not one of the decision thresholds ({why})",
            f"a threshold listed under decision.thresholds (add {t:g} there to gate on it)",
        )
    if gate.calibration is not None:
        return (
            "calibration",
            "net benefit is computed on the model's own probabilities, not after recalibration",
            ("no `calibration` on a net-benefit gate"),
        )
    return None


def _fairness_reference_problems(protocol) -> list[InputError]:
    """A ``fairness.reference`` group of a banded subgroup must be one of its bands."""
    from validate.cohort import band_labels

    problems = []
    declared = {g.name: g for g in protocol.subgroups}
    for attr, group in protocol.fairness.reference.items():
        sub = declared.get(attr)
        if sub is None or sub.bands is None:
            continue
        labels = band_labels(list(sub.bands))
        if group not in labels:
            problems.append(
                InputError(
                    f"`{group}` is not a band of subgroup `{attr}`",
                    file=protocol.path,
                    line=protocol.line_of("fairness", "reference", attr),
                    field=f"fairness.reference.{attr}",
                    expected=f"one of {labels}",
                )
            )
    return problems


def _fairness_gate_problems(protocol, i: int, gate, err) -> None:
    """An ``each_attribute`` gate (:mod:`validate.fairness_gates`) needs the fairness analysis: a binary
    task, a declared subgroup, a fairness measure, and no calibration."""
    from validate.analysis.fairness import GATEABLE

    if protocol.task != "binary":
        err(
            i,
            gate,
            "scope",
            f"the fairness analysis is computed for binary tasks, not {protocol.task}",
            "another scope",
        )
    elif not protocol.subgroups:
        err(i, gate, "scope", "each_attribute needs declared subgroups; the protocol has none", "a `subgroups` section")
    if gate.metric not in GATEABLE:
        err(
            i,
            gate,
            "metric",
            f"`{gate.metric}` is not a fairness measure" + _nearest(gate.metric, list(GATEABLE)),
            f"one of {', '.join(GATEABLE)}",
        )
    if gate.calibration is not None:
        err(i, gate, "calibration", "fairness measures are judged as scored, not after calibration", "no `calibration`")


def probe_block(protocol, *, smooth_intervals: bool = True) -> dict:
    """A metrics BLOCK built by the metrics engine for this protocol's task, class or label names and
    metric settings, on a small synthetic cohort where every metric is defined. Its keys are the
    metric names a run's ``metrics.json`` (or, with ``smooth_intervals=False``, ``calibration.json``)
    can hold; its values mean nothing."""
    from validate.metrics import MetricSettings, binary_block, multiclass_block, multilabel_block

    settings = MetricSettings.from_protocol(protocol.metrics, getattr(protocol, "decision", None))
    settings = replace(settings, n_bootstrap=min(settings.n_bootstrap, PROBE_BOOTSTRAP), min_events=0, min_cases=0)
    n = PROBE_CASES
    spread = (np.arange(n) + 0.5) / n  # probabilities spread over (0, 1)
    if protocol.task == "binary":
        y = (np.random.default_rng(0).random(n) < spread).astype(np.float64)  # calibrated: every metric defined
        return binary_block(
            y, spread, settings=settings, logits=np.log(spread / (1 - spread)), smooth_intervals=smooth_intervals
        )
    names = list(protocol.classes or protocol.labels or [])
    k = len(names)
    rng = np.random.default_rng(0)
    if protocol.task == "multiclass":
        probs = rng.dirichlet(np.ones(k), n)
        y = np.array([rng.choice(k, p=row) for row in probs])
        return multiclass_block(y, probs, settings=settings, class_names=names, smooth_intervals=smooth_intervals)
    probs = rng.uniform(0.02, 0.98, (n, k))
    y = (rng.random((n, k)) < probs).astype(np.float64)
    return multilabel_block(y, probs, settings=settings, label_names=names, smooth_intervals=smooth_intervals)


def _null_paths(block: Mapping, prefix: str = "") -> set[str]:
    """Dotted paths of metrics the block names but leaves undefined (``null``), which a run on other
    data may define (e.g. PPV at a threshold no probe case reaches)."""
    out = set()
    for k, v in block.items():
        if v is None and k not in ("reason", "insufficient"):
            out.add(f"{prefix}{k}")
        elif isinstance(v, Mapping) and k != "undefined":
            out |= _null_paths(v, f"{prefix}{k}.")
    return out


def _has_interval(block: Mapping, metric: str) -> bool:
    """Whether the metric's entry in the block carries a confidence interval (an undefined entry is
    given the benefit of the doubt)."""
    if "@" in metric:  # a net-benefit entry at a decision threshold
        from validate.gates import metric_entry

        entry = metric_entry(block, metric)
        return entry is None or (isinstance(entry, Mapping) and entry.get("ci_low") is not None)
    node: Any = block
    for part in metric.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return True
        node = node[part]
    if node is None:
        return True
    return isinstance(node, Mapping) and "estimate" in node and node.get("ci_low") is not None


def _nearest(name: str, valid: list[str]) -> str:
    near = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    return f"; did you mean `{near[0]}`?" if near else ""
