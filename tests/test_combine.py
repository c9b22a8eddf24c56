"""Gates on a combined (or site) bundle, on hand-made site blocks: what is judged, what fails, and why.

A combined bundle holds the per-site blocks and no pooled patient-level block. Gates judged per site are
judged exactly as :func:`validate.gates.judge_gates` judges them on the same blocks; a gate on a pooled
scope, after a calibration method, on shift counts, or against a baseline FAILS whatever its
insufficient policy (nothing may read as PASS that was not judged); a declared site with no site bundle
fails the built-in ``sites scored`` check, naming the missing bundle.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from validate.gates import judge_gates
from validate.site_gates import judge_federated, name_absent_sites


def entry(est, lo, hi, method="delong"):
    return {"estimate": est, "ci_low": lo, "ci_high": hi, "method": method}


def block(n, events, auroc):
    return {"n": n, "n_events": events, "prevalence": events / n, "auroc": auroc}


SITES = {
    "alpha": block(300, 140, entry(0.90, 0.86, 0.93)),
    "beta": block(400, 160, entry(0.80, 0.74, 0.85)),
}
METRICS = {
    "task": "binary",
    "n_bootstrap": 200,
    "ci_level": 0.95,
    "seed": 0,
    "overall": {"not_computed": True, "reason": "no pooled patient-level block in a combined bundle"},
    "sites": SITES,
    "subgroups": {},
}


def protocol(gates, sites=("alpha", "beta")):
    return SimpleNamespace(
        name="p",
        gates=gates,
        sites=[SimpleNamespace(id=s, role="external") for s in sites],
        subgroups=[],
        path=None,
        line_of=lambda *a: None,
    )


def rows_of(report, gate):
    return [r for r in report.rows if r.gate == gate]


@pytest.mark.parametrize("policy", ["pass", "warn", "fail"])
@pytest.mark.parametrize(
    "scope, extra",
    [
        ("overall", {}),
        ("worst_subgroup:sex", {}),
        ("each_subgroup:sex", {}),
        ("each_site", {"calibration": "platt"}),
        ("each_site", {"compare": "baseline"}),
    ],
)
def test_a_gate_with_nothing_to_judge_fails_whatever_its_policy(scope, extra, policy):
    gate = {"name": "g", "metric": "auroc", "scope": scope, "min": 0.5, "on": "estimate", "insufficient": policy}
    report = judge_federated(protocol([{**gate, **extra}]), {"metrics": METRICS}, kind="combined")
    (row,) = rows_of(report, "g")
    assert row.verdict == "fail"
    assert report.verdict == "fail" and report.exit_code == 1
    if scope in ("overall", "worst_subgroup:sex", "each_subgroup:sex") and not extra:
        assert row.reason.startswith("no pooled patient-level block in a combined bundle")


def test_a_shift_count_gate_fails_in_a_combined_bundle():
    gate = {"name": "g", "metric": "shift_material_findings", "scope": "each_site", "max": 0, "insufficient": "pass"}
    (row,) = rows_of(judge_federated(protocol([gate]), {"metrics": METRICS}, kind="combined"), "g")
    assert row.verdict == "fail" and "development site" in row.reason


def test_per_site_gates_are_judged_as_in_a_central_run():
    gates = [{"name": "g", "metric": "auroc", "scope": "each_site", "min": 0.76, "on": "ci_low"}]
    report = judge_federated(protocol(gates), {"metrics": METRICS}, kind="combined")
    central = judge_gates(
        gates, {**METRICS, "overall": block(700, 300, entry(0.85, 0.8, 0.9))}, protocol=protocol(gates)
    )
    assert [r.to_dict() for r in report.rows] == [r.to_dict() for r in central.rows]
    # alpha's lower bound 0.86 clears 0.76, beta's 0.74 does not: judged, not failed wholesale
    assert [(r.site, r.verdict) for r in rows_of(report, "g")] == [("alpha", "pass"), ("beta", "fail")]


def test_a_declared_site_without_a_site_bundle_fails_and_says_so():
    gates = [{"name": "g", "metric": "auroc", "scope": "each_site", "min": 0.5, "on": "estimate"}]
    proto = protocol(gates, sites=("alpha", "beta", "gamma"))
    report = judge_federated(proto, {"metrics": METRICS}, kind="combined")
    name_absent_sites(report, ["gamma"])
    gamma = [r for r in report.rows if r.site == "gamma"]
    assert {r.gate for r in gamma} == {"g", "sites scored"}
    assert all(r.verdict == "fail" and "no site bundle of declared site gamma" in r.reason for r in gamma)
    assert report.verdict == "fail"


def test_a_site_bundle_says_site_not_combined():
    gate = {"name": "g", "metric": "auroc", "scope": "overall", "min": 0.5, "insufficient": "pass"}
    (row,) = rows_of(judge_federated(protocol([gate]), {"metrics": METRICS}, kind="site"), "g")
    assert row.verdict == "fail" and "in a site bundle" in row.reason
