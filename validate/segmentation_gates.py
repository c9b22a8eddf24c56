"""Pre-run checks of a segmentation protocol's gates (called by :func:`validate.preflight.check_protocol_gates`).

A segmentation gate judges a metrics.json BLOCK of :mod:`validate.analysis.segmentation` through
gates.py's own path: ``{metric: dice, scope: each_site, min: 0.90, on: ci_low}``. Before anything is
scored, every gate must name a metric the run's BLOCKs will hold — the probe block below is built by
the same code from the protocol's labels, NSD tolerances (``nsd_<τ>mm``) and biometry, so a gate on
``nsd_3mm`` when the protocol declares ``nsd_tolerances_mm: [2.0]`` is refused (exit 2) — with a scope
the segmentation analyses answer (``overall``, ``each_site``, ``each_subgroup``, ``worst_subgroup``),
``on`` an interval bound only when the run bootstraps, and no ``calibration``, ``compare``, shift or
fairness quantity (those analyses are classification ones). A ``compare: baseline`` gate judges the
paired comparison of segmentation.json (scope ``overall`` or ``each_site``, a bound on the metric's
better side: ``{metric: dice, compare: baseline, scope: each_site, min: -0.02, on: ci_low}``).
"""

from __future__ import annotations

import difflib
from dataclasses import replace

import numpy as np

from validate.errors import InputError

SEGMENTATION_SCOPES = ("overall", "each_site", "each_subgroup", "worst_subgroup")
PROBE_CASES = 8
COUNTS = ("n", "n_patients", "n_excluded")  # block fields, not metrics with a difference


def protocol_metric_columns(protocol) -> list[str]:
    """The per-case metric columns a run of ``protocol`` produces (as
    :func:`validate.analysis.segmentation.metric_columns` orders them)."""
    from validate.analysis.segmentation import metric_columns
    from validate.metrics.segmentation import nsd_key

    seg = getattr(protocol, "segmentation", None)
    tolerances = list(getattr(seg, "nsd_tolerances_mm", None) or [])
    kind = str(getattr(getattr(protocol, "input", None), "kind", "image") or "image")
    columns = ["dice", "iou", "hd_mm", "hd95_mm", "assd_mm", *(nsd_key(t) for t in tolerances)]
    columns.append("volume_error_mm3" if "volume" in kind else "area_error_mm2")
    if getattr(seg, "biometry", None):
        columns.append("hc_error_mm")
    import pandas as pd

    return metric_columns(pd.DataFrame(columns=columns))


def probe_block(protocol) -> dict:
    """A segmentation BLOCK for this protocol's labels and metrics on a synthetic cohort (its values
    mean nothing; its keys are the gateable names)."""
    from validate.analysis.segmentation import segmentation_block
    from validate.metrics import MetricSettings

    settings = MetricSettings.from_protocol(protocol.metrics, None)
    settings = replace(settings, n_bootstrap=min(settings.n_bootstrap, 4), min_cases=0)
    metrics = protocol_metric_columns(protocol)
    labels = list(getattr(protocol, "labels", None) or ["label"])
    values = np.random.default_rng(0).uniform(0.1, 0.9, (PROBE_CASES, len(labels), len(metrics)))
    return segmentation_block(values, metrics, labels, settings=settings)


def _comparison_problem(spec, i: int, names: list[str], baseline: bool | None, err) -> None:
    """A ``compare: baseline`` gate: a baseline to compare with, scope overall or each_site, a metric of
    the paired comparison (per-case metric means, macro over labels), and a bound on the metric's
    better side judged on the conservative end (:func:`validate.gates.comparison_bound_problem`)."""
    from validate.gates import comparison_bound_problem

    if spec.compare != "baseline":
        err(i, "compare", f"unknown comparison `{spec.compare}`", "compare: baseline")
    elif baseline is False:
        err(
            i,
            "compare",
            "the gate compares with a baseline model, but the run has none",
            "`validate run ... --baseline PATH` or model.baseline in the protocol",
        )
    elif spec.kind not in ("overall", "each_site"):
        err(i, "scope", f"scope `{spec.scope}` cannot compare segmentation models", "overall or each_site")
    elif spec.calibration is not None:
        err(i, "calibration", "a comparison gate compares the models as scored", "no `calibration`")
    elif spec.metric not in (compared := [n for n in names if "." not in n and n not in COUNTS]):
        err(i, "metric", f"the paired comparison has no difference in `{spec.metric}`", f"one of {', '.join(compared)}")
    elif (bound := comparison_bound_problem(spec.metric, spec.direction, spec.on)) is not None:
        err(i, *bound)


def segmentation_gate_problems(protocol, baseline: bool | None = None) -> list[InputError]:
    """Every gate of a segmentation protocol the run could not answer (see the module docstring);
    ``baseline``: whether the run has a baseline model (None: not known yet)."""
    from validate.gates import SHIFT_METRICS, canonical_metric, gate_specs, gateable_metrics

    problems: list[InputError] = []
    block = probe_block(protocol)
    # no shift analysis runs for segmentation: its counts are not gateable here
    names = sorted(gateable_metrics(block) - set(SHIFT_METRICS))
    bootstrap = block.get("dice", {}).get("ci_low") is not None

    def err(i: int, key: str, message: str, expected: str) -> None:
        problems.append(
            InputError(
                f"gate `{specs[i].label}`: {message}",
                file=protocol.path,
                line=protocol.line_of("gates", i, key),
                field=f"gates[{i}].{key}",
                expected=expected,
            )
        )

    specs = gate_specs(protocol.gates)
    if baseline is None and getattr(getattr(protocol, "model", None), "baseline", None) is not None:
        baseline = True
    for i, spec in enumerate(specs):
        if spec.kind not in SEGMENTATION_SCOPES:
            err(i, "scope", f"scope {spec.scope} is not judged for segmentation", ", ".join(SEGMENTATION_SCOPES))
        elif spec.compare is not None:
            _comparison_problem(spec, i, names, baseline, err)
        elif spec.calibration is not None:
            err(i, "calibration", "segmentation metrics are judged as scored", "no `calibration`")
        elif canonical_metric(spec.metric) not in names:
            near = difflib.get_close_matches(spec.metric, names, n=1)
            hint = f"; did you mean `{near[0]}`?" if near else ""
            err(
                i,
                "metric",
                f"`{spec.metric}` is not a metric of this segmentation protocol{hint}",
                f"one of {', '.join(n for n in names if '.' not in n)} (NSD at the protocol's "
                "segmentation.nsd_tolerances_mm; labels.<label>.<metric> with several labels)",
            )
        elif spec.on not in ("estimate", "ci_low", "ci_high"):
            err(i, "on", f"`on: {spec.on}` is not available for segmentation", "estimate, ci_low or ci_high")
        elif spec.on != "estimate" and (not bootstrap or spec.metric in COUNTS):
            err(i, "on", f"`{spec.metric}` has no confidence interval in this run", "on: estimate")
    return problems
