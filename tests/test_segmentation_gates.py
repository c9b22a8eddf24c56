"""Pre-run checks of segmentation gates (validate.segmentation_gates via validate.preflight): a gate
naming a metric or NSD tolerance the protocol does not produce, or a scope or option the
segmentation analyses do not answer, is refused before scoring (exit 2, naming the gate's field)."""

from __future__ import annotations

from types import SimpleNamespace as NS

import pytest

from validate.errors import InputErrors
from validate.preflight import check_protocol_gates


def protocol(gates, *, labels=("head",), tolerances=(2.0,), biometry=None, n_bootstrap=100):
    return NS(
        task="segmentation",
        labels=list(labels),
        input=NS(kind="image"),
        segmentation=NS(nsd_tolerances_mm=list(tolerances), biometry=biometry),
        metrics={"n_bootstrap": n_bootstrap},
        gates=gates,
        path="p.yaml",
        line_of=lambda *loc: 7,
    )


def refused(proto) -> list:
    with pytest.raises(InputErrors) as exc:
        check_protocol_gates(proto, baseline=True)
    return exc.value.problems


@pytest.mark.parametrize(
    "gate",
    [
        {"metric": "dice", "scope": "each_site", "min": 0.9, "on": "ci_low"},
        {"metric": "hd95_mm", "scope": "each_site", "max": 3.0},
        {"metric": "nsd_2mm", "scope": "overall", "min": 0.8},
        {"metric": "hd95_mm_median", "scope": "worst_subgroup:band", "max": 3.0},
        {"metric": "area_abs_error_mm2", "scope": "each_subgroup:band", "max": 50},
    ],
)
def test_answerable_gates_pass_the_check(gate):
    check_protocol_gates(protocol([gate]), baseline=True)


def test_an_undeclared_nsd_tolerance_is_refused_before_scoring():
    (problem,) = refused(protocol([{"metric": "nsd_3mm", "scope": "each_site", "min": 0.9}]))
    assert problem.field == "gates[0].metric" and "nsd_2mm" in problem.message and problem.line == 7


def test_a_misspelt_metric_and_a_classification_metric_are_refused():
    problems = refused(
        protocol(
            [{"metric": "dise", "scope": "each_site", "min": 0.9}, {"metric": "auroc", "scope": "overall", "min": 0.8}]
        )
    )
    assert [p.field for p in problems] == ["gates[0].metric", "gates[1].metric"]
    assert "did you mean `dice`" in problems[0].message


def test_biometry_and_labels_decide_what_a_gate_may_name():
    gate = {"metric": "hc_abs_error_mm", "scope": "each_site", "max": 3.0}
    refused(protocol([gate]))
    check_protocol_gates(protocol([gate], biometry="ellipse_circumference"), baseline=None)
    two = protocol([{"metric": "labels.brain.dice", "scope": "each_site", "min": 0.8}], labels=("head", "brain"))
    check_protocol_gates(two, baseline=None)


@pytest.mark.parametrize(
    ("gate", "field"),
    [
        ({"metric": "dice", "scope": "across_sites", "min": 0.9}, "scope"),
        ({"metric": "dice", "scope": "subgroup_gap:band", "max": 0.1}, "scope"),
        ({"metric": "dice", "scope": "each_subgroup:band", "min": -0.02, "compare": "baseline"}, "scope"),
        ({"metric": "hd95_mm", "scope": "each_site", "min": -1.0, "compare": "baseline"}, "min"),
        ({"metric": "dice", "scope": "each_site", "min": -0.02, "on": "ci_high", "compare": "baseline"}, "on"),
        ({"metric": "n_patients", "scope": "overall", "min": 0, "compare": "baseline"}, "metric"),
        ({"metric": "dice", "scope": "each_site", "min": 0.9, "calibration": "temperature"}, "calibration"),
        ({"metric": "shift_material_findings", "scope": "each_site", "max": 0}, "metric"),
        ({"metric": "dice", "scope": "each_site", "min": 0.9, "on": "pi_low"}, "on"),
        ({"metric": "n", "scope": "each_site", "min": 30, "on": "ci_low"}, "on"),
    ],
)
def test_what_segmentation_does_not_answer_is_refused(gate, field):
    (problem,) = refused(protocol([gate]))
    assert problem.field == f"gates[0].{field}"


def test_interval_bounds_need_the_bootstrap():
    (problem,) = refused(
        protocol([{"metric": "dice", "scope": "each_site", "min": 0.9, "on": "ci_low"}], n_bootstrap=0)
    )
    assert problem.field == "gates[0].on"


def test_comparison_gates_on_segmentation_metrics():
    gates = [
        {"metric": "dice", "scope": "each_site", "min": -0.02, "on": "ci_low", "compare": "baseline"},
        {"metric": "hd95_mm", "scope": "overall", "max": 0.5, "on": "ci_high", "compare": "baseline"},
        {"metric": "nsd_2mm", "scope": "overall", "min": -0.05, "compare": "baseline"},
    ]
    check_protocol_gates(protocol(gates), baseline=True)
    problems = refused_without_baseline(protocol(gates[:1]))
    assert problems[0].field == "gates[0].compare"


def refused_without_baseline(proto) -> list:
    with pytest.raises(InputErrors) as exc:
        check_protocol_gates(proto, baseline=False)
    return exc.value.problems
