"""Pre-run checks of a segmentation protocol's gates (called by :func:`validate.preflight.check_protocol_gates`).

A segmentation gate judges a metrics.json BLOCK of :mod:`validate.analysis.segmentation` through
gates.py's own path: ``{metric: dice, scope: each_site, min: 0.90, on: ci_low}``. Before anything is
scored, every gate must name a metric the run's BLOCKs will hold — the probe block below is built by
the same code from the protocol's labels, NSD tolerances (``nsd_<τ>mm``) and biometry, so a gate on
``nsd_3mm`` when the protocol declares ``nsd_tolerances_mm: [2.0]`` is refused (exit 2) — with a scope
the segmentation analyses answer (``overall``, ``each_site``, ``each_subgroup``, ``worst_subgroup``),
``on`` an interval bound only when the run bootstraps, and no ``calibration``, ``compare``, shift or
fairness quantity (those analyses are classification ones; the comparison with a baseline is reported
in segmentation.json, not gated, in this version).
"""

from __future__ import annotations

import difflib
from dataclasses import replace

import numpy as np

from validate.errors import InputError

SEGMENTATION_SCOPES = ("overall", "each_site", "each_subgroup", "worst_subgroup")
PROBE_CASES = 8


def protocol_metric_columns(protocol) -> list[str]:
    """The per-case metric columns a run of ``protocol`` produces (as
    :func:`validate.analysis.segmentation.metric_columns` orders them)."""
    from validate.analysis.segmentation import metric_columns, nsd_key

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


def segmentation_gate_problems(protocol) -> list[InputError]:
    """Every gate of a segmentation protocol the run could not answer (see the module docstring)."""
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
    for i, spec in enumerate(specs):
        if spec.kind not in SEGMENTATION_SCOPES:
            err(i, "scope", f"scope {spec.scope} is not judged for segmentation", ", ".join(SEGMENTATION_SCOPES))
        elif spec.compare is not None:
            err(
                i,
                "compare",
                "the comparison of segmentation models is reported in segmentation.json, not gated",
                "no `compare` on a segmentation gate",
            )
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
        elif spec.on != "estimate" and (not bootstrap or spec.metric in ("n", "n_patients", "n_excluded")):
            err(i, "on", f"`{spec.metric}` has no confidence interval in this run", "on: estimate")
    return problems
