"""Gates judged on small hand-written Metrics / Calibration / subgroup-analysis JSON fixtures.

Expected verdicts follow from the fixture numbers and the rule as stated in the protocol (value
against threshold), not from running our own code first.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from validate.errors import InputError, InputErrors
from validate.gates import GateReport, gate_specs, judge_gates


def entry(est, lo, hi, method="bootstrap"):
    return {"estimate": est, "ci_low": lo, "ci_high": hi, "method": method}


def block(n, events, auroc, ece, **extra):
    b = {"n": n, "n_events": events, "prevalence": events / n, "auroc": auroc, "ece": ece,
         "hosmer_lemeshow": {"statistic": 8.1, "df": 8, "p_value": 0.42}}
    b.update(extra)
    return b


METRICS = {
    "task": "binary", "n_bootstrap": 200, "ci_level": 0.95, "seed": 0,
    "overall": block(900, 400, entry(0.84, 0.81, 0.87, "delong"), entry(0.05, 0.03, 0.07)),
    "sites": {
        "alpha": block(300, 140, entry(0.90, 0.86, 0.93, "delong"), entry(0.03, 0.02, 0.05)),
        "beta": block(400, 160, entry(0.80, 0.74, 0.85, "delong"), entry(0.09, 0.06, 0.12)),
        "gamma": block(200, 100, entry(0.72, 0.65, 0.79, "delong"), entry(0.04, 0.02, 0.08)),
    },
    "subgroups": {
        "sex": {
            "female": block(350, 120, entry(0.78, 0.72, 0.83, "delong"), entry(0.06, 0.04, 0.09)),
            "male": block(550, 280, entry(0.86, 0.83, 0.89, "delong"), entry(0.05, 0.03, 0.06)),
        },
        "age_band": {
            "<40": dict(block(20, 3, entry(0.60, 0.30, 0.90, "delong"), entry(0.20, 0.10, 0.30)),
                        insufficient=True, reason="3 events < min_events 10"),
            "40-59": block(480, 200, entry(0.83, 0.79, 0.87, "delong"), entry(0.04, 0.03, 0.06)),
            ">=60": block(400, 197, entry(0.81, 0.77, 0.85, "delong"), entry(0.06, 0.04, 0.08)),
        },
        "single": {
            "only_neg": {"n": 50, "n_events": 0, "prevalence": 0.0,
                         "auroc": None, "undefined": {"auroc": "one class only"},
                         "ece": entry(0.02, 0.01, 0.04)},
        },
    },
}

CALIBRATION = {
    "task": "binary", "design": "held-out", "fit_on": ["alpha"],
    "methods": {
        "none": {"params": {}, "sites": {"beta": METRICS["sites"]["beta"], "gamma": METRICS["sites"]["gamma"]}},
        "platt": {"params": {"a": 1.0, "b": 0.1}, "sites": {
            "beta": block(400, 160, entry(0.80, 0.74, 0.85, "delong"), entry(0.03, 0.02, 0.045)),
            "gamma": block(200, 100, entry(0.72, 0.65, 0.79, "delong"), entry(0.06, 0.04, 0.09))}},
    },
    "recommended": "platt",
}

SUBGROUPS = {
    "sites": {
        "alpha": {"subgroups": {"sex": {
            "female": {"block": block(120, 50, entry(0.88, 0.8, 0.94), entry(0.05, 0.03, 0.08)),
                       "gap": {"auroc": entry(-0.02, -0.08, 0.03)}},
            "male": {"block": block(180, 90, entry(0.91, 0.87, 0.95), entry(0.03, 0.02, 0.05)),
                     "gap": {"auroc": entry(0.01, -0.02, 0.04)}},
        }}},
        "beta": {"subgroups": {"sex": {
            "female": {"block": block(150, 50, entry(0.70, 0.6, 0.78), entry(0.1, 0.07, 0.14)),
                       "gap": {"auroc": entry(-0.10, -0.18, -0.04)}},
            "male": {"block": dict(block(250, 8, entry(0.85, 0.8, 0.9), entry(0.1, 0.07, 0.14)),
                                   insufficient=True, reason="8 events"),
                     "gap": {"auroc": entry(0.05, 0.0, 0.1)}},
        }}},
    },
}


def judge(*gates, **kw):
    kw.setdefault("calibration", CALIBRATION)
    kw.setdefault("subgroups", SUBGROUPS)
    return judge_gates(list(gates), METRICS, **kw)


def verdicts(report: GateReport) -> dict:
    return {r.item: r.verdict for r in report.rows}


def test_overall_min_on_estimate_and_interval_bounds():
    # overall AUROC 0.84 (0.81 to 0.87)
    assert judge({"metric": "auroc", "min": 0.8}).verdict == "pass"
    assert judge({"metric": "auroc", "min": 0.82, "on": "ci_low"}).verdict == "fail"   # 0.81 < 0.82
    assert judge({"metric": "auroc", "min": 0.86, "on": "ci_high"}).verdict == "pass"  # 0.87 >= 0.86
    row = judge({"metric": "auroc", "min": 0.82, "on": "ci_low"}).rows[0]
    assert (row.value, row.estimate, row.ci_low, row.ci_high, row.n, row.n_events) == (0.81, 0.84, 0.81, 0.87, 900, 400)
    assert "0.81" in row.reason and "0.82" in row.reason


def test_max_bound_each_site():
    # ECE upper bounds: alpha 0.05, beta 0.12, gamma 0.08
    report = judge({"metric": "ece", "scope": "each_site", "max": 0.1, "on": "ci_high"})
    assert verdicts(report) == {"site alpha": "pass", "site beta": "fail", "site gamma": "pass"}
    assert report.verdict == "fail" and report.exit_code == 1
    assert [r.site for r in report.rows] == ["alpha", "beta", "gamma"]


def test_threshold_equal_to_value_passes():
    assert judge({"metric": "auroc", "scope": "each_site", "min": 0.72}).rows[2].verdict == "pass"


def test_dotted_metric_path():
    assert judge({"metric": "hosmer_lemeshow.p_value", "min": 0.05}).verdict == "pass"
    assert judge({"metric": "prevalence", "scope": "each_site", "max": 0.49}).verdict == "fail"  # gamma 0.5


@pytest.mark.parametrize("policy", ["fail", "warn", "pass"])
def test_each_subgroup_insufficient_policy(policy):
    report = judge({"metric": "auroc", "scope": "each_subgroup:age_band", "min": 0.7, "insufficient": policy})
    v = verdicts(report)
    assert v["age_band=40-59"] == "pass" and v["age_band=>=60"] == "pass"
    assert v["age_band=<40"] == policy
    small = next(r for r in report.rows if r.group == "<40")
    assert small.insufficient and "3 events" in small.reason and small.n == 20
    assert report.verdict == {"fail": "fail", "warn": "warn", "pass": "pass"}[policy]
    assert report.exit_code == (1 if policy == "fail" else 0)


def test_undefined_value_follows_policy():
    report = judge({"metric": "auroc", "scope": "each_subgroup:single", "min": 0.7, "insufficient": "fail"})
    assert report.rows[0].verdict == "fail" and "one class only" in report.rows[0].reason
    report = judge({"metric": "auroc", "scope": "each_subgroup:single", "min": 0.7, "insufficient": "warn"})
    assert report.rows[0].verdict == "warn"


def test_worst_subgroup_min_and_max():
    # sufficient sex groups: female AUROC 0.78 is the lowest; male ECE estimate 0.05 < female 0.06
    r = judge({"metric": "auroc", "scope": "worst_subgroup:sex", "min": 0.8}).rows
    assert len(r) == 1 and r[0].group == "female" and r[0].verdict == "fail"
    r = judge({"metric": "ece", "scope": "worst_subgroup:sex", "max": 0.1}).rows
    assert r[0].group == "female" and r[0].verdict == "pass"


@pytest.mark.parametrize("policy,expected", [("pass", "pass"), ("warn", "warn"), ("fail", "fail")])
def test_worst_subgroup_skips_small_groups_then_applies_policy(policy, expected):
    # <40 has the lowest AUROC (0.60) but is insufficient; the worst judgeable group is >=60 (0.81)
    r = judge({"metric": "auroc", "scope": "worst_subgroup:age_band", "min": 0.75, "insufficient": policy}).rows[0]
    assert r.group == ">=60" and r.value == 0.81
    assert r.verdict == expected and "<40" in r.reason


def test_worst_subgroup_with_no_judgeable_group():
    r = judge({"metric": "auroc", "scope": "worst_subgroup:single", "min": 0.5, "insufficient": "warn"}).rows[0]
    assert r.verdict == "warn" and r.group is None


@pytest.mark.parametrize("on,expected", [
    # beta/female gap -0.10 (-0.18 to -0.04): |gap| 0.10, ci_high 0.18, ci_low 0.04
    # alpha/female -0.02 (-0.08, 0.03): 0.02, 0.08, 0 (covers 0); alpha/male 0.01 (-0.02, 0.04): 0.01, 0.04, 0
    ("estimate", {"alpha/female": "pass", "alpha/male": "pass", "beta/female": "fail"}),
    ("ci_high", {"alpha/female": "pass", "alpha/male": "pass", "beta/female": "fail"}),
    ("ci_low", {"alpha/female": "pass", "alpha/male": "pass", "beta/female": "pass"}),
])
def test_subgroup_gap_bounds_the_size_of_the_gap(on, expected):
    report = judge({"metric": "auroc", "scope": "subgroup_gap:sex", "max": 0.09, "on": on, "insufficient": "warn"})
    got = {f"{r.site}/{r.group}": r.verdict for r in report.rows}
    assert got.pop("beta/male") == "warn"  # insufficient block
    assert got == expected
    values = {f"{r.site}/{r.group}": r.value for r in report.rows}
    assert values["beta/female"] == pytest.approx({"estimate": 0.10, "ci_high": 0.18, "ci_low": 0.04}[on])
    assert values["alpha/female"] == pytest.approx({"estimate": 0.02, "ci_high": 0.08, "ci_low": 0.0}[on])


def test_gate_after_calibration_uses_calibration_blocks():
    report = judge({"metric": "ece", "scope": "each_site", "max": 0.05, "on": "ci_high", "calibration": "platt"})
    # platt: beta 0.045 pass, gamma 0.09 fail; the fit site alpha is not evaluated
    assert verdicts(report) == {"site beta": "pass", "site gamma": "fail"}
    assert all(r.calibration == "platt" for r in report.rows)
    report = judge({"metric": "ece", "scope": "each_site", "max": 0.1, "calibration": "none"})
    assert verdicts(report) == {"site beta": "pass", "site gamma": "pass"}


def test_bad_gates_report_every_problem_at_once():
    with pytest.raises(InputErrors) as exc:
        judge({"metric": "aurco", "min": 0.7},
              {"metric": "auroc", "scope": "each_subgroup:race", "min": 0.7},
              {"metric": "ece", "scope": "each_site", "max": 0.1, "calibration": "beta"},
              {"metric": "ece", "scope": "each_subgroup:sex", "max": 0.1, "calibration": "platt"})
    text = str(exc.value)
    assert "did you mean `auroc`" in text and "gates[0].metric" in text
    assert "`race`" in text and "gates[1].scope" in text
    assert "`beta`" in text and "gates[2].calibration" in text
    assert "gates[3].scope" in text
    with pytest.raises(InputError, match="subgroups.json"):
        judge({"metric": "auroc", "scope": "subgroup_gap:sex", "max": 0.1}, subgroups=None)


def test_no_gates_passes():
    report = judge()
    assert report.verdict == "pass" and report.exit_code == 0 and report.rows == []
    assert "No gates" in report.to_markdown()
    root = ET.fromstring(report.to_junit().encode())
    assert root.get("tests") == "0"


def test_junit_counts_failures_and_warnings():
    report = judge({"metric": "ece", "scope": "each_site", "max": 0.1, "on": "ci_high", "name": "ece-sites"},
                   {"metric": "auroc", "scope": "each_subgroup:age_band", "min": 0.7, "insufficient": "warn"})
    root = ET.fromstring(report.to_junit().encode("utf-8"))
    cases = root.findall(".//testcase")
    assert len(cases) == len(report.rows) == 6
    assert root.get("tests") == "6" and root.get("failures") == "1" and root.get("skipped") == "1"
    suite = root.find("testsuite")
    assert suite.get("failures") == "1" and suite.get("errors") == "0"
    failed = [c for c in cases if c.find("failure") is not None]
    assert len(failed) == 1 and failed[0].get("classname") == "gates.ece-sites"
    assert "beta" in failed[0].get("name") and "0.12" in failed[0].find("failure").get("message")
    skipped = [c for c in cases if c.find("skipped") is not None]
    assert len(skipped) == 1 and "<40" in skipped[0].get("name")


def test_json_and_markdown():
    report = judge({"metric": "ece", "scope": "each_site", "max": 0.1, "on": "ci_high"})
    data = report.to_json()
    assert data["verdict"] == "fail" and data["exit_code"] == 1
    assert data["counts"] == {"pass": 2, "warn": 0, "fail": 1}
    assert {"value", "threshold", "verdict", "reason", "n", "ci_low", "ci_high"} <= set(data["rows"][0])
    md = report.to_markdown(ci_level=0.95)
    assert "FAIL" in md and "95% CI" in md and "site beta" in md
    assert md.index("site beta") < md.index("site alpha")  # failures first
    assert "0.090 (0.060 to 0.120)" in md and "400 (160)" in md


def test_protocol_gate_objects(tmp_path):
    from validate.protocol import load_protocol

    (tmp_path / "m.csv").write_text("case_id,label,x\n1,0,1\n")
    (tmp_path / "p.yaml").write_text(
        "name: t\ntask: binary\nclasses: [no, yes]\ninput: {kind: tabular, features: [x]}\n"
        "sites: [{id: alpha, manifest: m.csv, role: development}]\n"
        "subgroups: [{name: sex, column: x}]\n"
        "gates:\n"
        "  - {metric: auroc, scope: each_site, min: 0.75, on: ci_low}\n"
        "  - {name: bad, metric: mce, min: 0.5}\n")
    protocol = load_protocol(tmp_path / "p.yaml")
    specs = gate_specs(protocol.gates)
    assert specs[0].on == "ci_low" and specs[0].insufficient == "warn"
    report = judge_gates(protocol.gates[:1], METRICS, protocol=protocol)
    # ci_low: alpha 0.86 pass, beta 0.74 fail, gamma 0.65 fail
    assert verdicts(report) == {"site alpha": "pass", "site beta": "fail", "site gamma": "fail"}
    assert report.name == "t"
    # a registered metric absent from these results: known only when judging, located in the protocol
    with pytest.raises(InputError) as exc:
        judge_gates(protocol.gates, METRICS, protocol=protocol)
    assert "p.yaml" in str(exc.value) and "line 9" in str(exc.value) and "not in metrics.json" in str(exc.value)


def test_unknown_gate_metric_is_refused_when_the_protocol_loads(tmp_path):
    """A metric name no BLOCK of the task can hold is refused before anything runs (the registry)."""
    from validate.protocol import load_protocol

    (tmp_path / "m.csv").write_text("case_id,label,x\n1,0,1\n")
    (tmp_path / "p.yaml").write_text(
        "name: t\ntask: binary\nclasses: [no, yes]\ninput: {kind: tabular, features: [x]}\n"
        "sites: [{id: alpha, manifest: m.csv, role: development}]\n"
        "gates:\n"
        "  - {metric: hosmer_lemeshow.p_value, min: 0.05}\n"
        "  - {metric: target_sensitivity.specificity, min: 0.5}\n"
        "  - {name: bad, metric: aurco, min: 0.5}\n"
        "  - {metric: accuracy, min: 0.5}\n")
    with pytest.raises(InputError) as exc:
        load_protocol(tmp_path / "p.yaml")
    text = str(exc.value)
    assert "p.yaml" in text and "line 9" in text and "gates[2].metric" in text and "did you mean `auroc`" in text
    # accuracy is a multiclass metric: no binary BLOCK holds it
    assert "gates[3].metric" in text and "`accuracy` is not a binary metric" in text
    assert "gates[0]" not in text and "gates[1]" not in text


def test_overall_gate_after_calibration_needs_the_pooled_block():
    with pytest.raises(InputError, match="no pooled block"):
        judge({"metric": "ece", "max": 0.1, "calibration": "platt"})
    pooled = {**CALIBRATION, "methods": {**CALIBRATION["methods"], "platt": {
        **CALIBRATION["methods"]["platt"], "overall": block(600, 260, entry(0.78, 0.74, 0.82), entry(0.04, 0.03, 0.06))}}}
    report = judge({"metric": "ece", "max": 0.05, "on": "ci_high", "calibration": "platt"}, calibration=pooled)
    assert report.rows[0].value == 0.06 and report.rows[0].verdict == "fail" and report.rows[0].n == 600


SHIFT = {
    "development": {"sites": ["alpha"]},
    "sites": {
        "beta": {"ranking": [{"id": "a", "flagged": True, "material": True}, {"id": "b", "flagged": True,
                                                                              "material": False}]},
        "gamma": {"ranking": [{"id": "a", "flagged": False, "material": False}]},
    },
    "drift": {"sites": {"gamma": {"detector": "tests", "windows": [
        {"window": "2024-01", "flagged": False}, {"window": "2024-02", "flagged": True, "cusum_alarm": True},
        {"window": "2024-03", "flagged": True}]}}},
}


def test_shift_and_drift_counts_as_gates():
    r = judge({"metric": "shift_material_findings", "scope": "each_site", "max": 0, "insufficient": "pass"},
              shift=SHIFT)
    assert verdicts(r) == {"site alpha": "pass", "site beta": "fail", "site gamma": "pass"}
    assert r.rows[0].insufficient is False and "reference" in r.rows[0].reason and r.rows[1].value == 1
    r = judge({"metric": "drift_windows_flagged", "scope": "each_site", "max": 1, "insufficient": "warn"},
              shift=SHIFT)
    assert verdicts(r) == {"site alpha": "warn", "site beta": "warn", "site gamma": "fail"}
    assert r.rows[2].value == 2 and r.rows[2].n == 200
    r = judge({"metric": "shift_flagged_findings", "scope": "overall", "max": 2}, shift=SHIFT)
    assert r.rows[0].value == 2 and r.rows[0].verdict == "pass"
    with pytest.raises(InputError, match="shift.json"):
        judge({"metric": "drift_windows_flagged", "scope": "each_site", "max": 0}, shift=None)
    with pytest.raises(InputError, match="each_site or overall"):
        judge({"metric": "drift_windows_flagged", "scope": "each_subgroup:sex", "max": 0}, shift=SHIFT)
