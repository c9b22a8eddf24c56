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
    b = {
        "n": n,
        "n_events": events,
        "prevalence": events / n,
        "auroc": auroc,
        "ece": ece,
        "hosmer_lemeshow": {"statistic": 8.1, "df": 8, "p_value": 0.42},
    }
    b.update(extra)
    return b


METRICS = {
    "task": "binary",
    "n_bootstrap": 200,
    "ci_level": 0.95,
    "seed": 0,
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
            "<40": dict(
                block(20, 3, entry(0.60, 0.30, 0.90, "delong"), entry(0.20, 0.10, 0.30)),
                insufficient=True,
                reason="3 events < min_events 10",
            ),
            "40-59": block(480, 200, entry(0.83, 0.79, 0.87, "delong"), entry(0.04, 0.03, 0.06)),
            ">=60": block(400, 197, entry(0.81, 0.77, 0.85, "delong"), entry(0.06, 0.04, 0.08)),
        },
        "single": {
            "only_neg": {
                "n": 50,
                "n_events": 0,
                "prevalence": 0.0,
                "auroc": None,
                "undefined": {"auroc": "one class only"},
                "ece": entry(0.02, 0.01, 0.04),
            },
        },
    },
}

CALIBRATION = {
    "task": "binary",
    "design": "held-out",
    "fit_on": ["alpha"],
    "methods": {
        "none": {"params": {}, "sites": {"beta": METRICS["sites"]["beta"], "gamma": METRICS["sites"]["gamma"]}},
        "platt": {
            "params": {"a": 1.0, "b": 0.1},
            "sites": {
                "beta": block(400, 160, entry(0.80, 0.74, 0.85, "delong"), entry(0.03, 0.02, 0.045)),
                "gamma": block(200, 100, entry(0.72, 0.65, 0.79, "delong"), entry(0.06, 0.04, 0.09)),
            },
        },
    },
    "recommended": "platt",
}

SUBGROUPS = {
    "sites": {
        "alpha": {
            "subgroups": {
                "sex": {
                    "female": {
                        "block": block(120, 50, entry(0.88, 0.8, 0.94), entry(0.05, 0.03, 0.08)),
                        "gap": {"auroc": entry(-0.02, -0.08, 0.03)},
                    },
                    "male": {
                        "block": block(180, 90, entry(0.91, 0.87, 0.95), entry(0.03, 0.02, 0.05)),
                        "gap": {"auroc": entry(0.01, -0.02, 0.04)},
                    },
                }
            }
        },
        "beta": {
            "subgroups": {
                "sex": {
                    "female": {
                        "block": block(150, 50, entry(0.70, 0.6, 0.78), entry(0.1, 0.07, 0.14)),
                        "gap": {"auroc": entry(-0.10, -0.18, -0.04)},
                    },
                    "male": {
                        "block": dict(
                            block(250, 8, entry(0.85, 0.8, 0.9), entry(0.1, 0.07, 0.14)),
                            insufficient=True,
                            reason="8 events",
                        ),
                        "gap": {"auroc": entry(0.05, 0.0, 0.1)},
                    },
                }
            }
        },
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
    assert judge({"metric": "auroc", "min": 0.82, "on": "ci_low"}).verdict == "fail"  # 0.81 < 0.82
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


@pytest.mark.parametrize(
    "on,expected",
    [
        # beta/female gap -0.10 (-0.18 to -0.04): |gap| 0.10, ci_high 0.18, ci_low 0.04
        # alpha/female -0.02 (-0.08, 0.03): 0.02, 0.08, 0 (covers 0); alpha/male 0.01 (-0.02, 0.04): 0.01, 0.04, 0
        ("estimate", {"alpha/female": "pass", "alpha/male": "pass", "beta/female": "fail"}),
        ("ci_high", {"alpha/female": "pass", "alpha/male": "pass", "beta/female": "fail"}),
        ("ci_low", {"alpha/female": "pass", "alpha/male": "pass", "beta/female": "pass"}),
    ],
)
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
        judge(
            {"metric": "aurco", "min": 0.7},
            {"metric": "auroc", "scope": "each_subgroup:race", "min": 0.7},
            {"metric": "ece", "scope": "each_site", "max": 0.1, "calibration": "beta"},
            {"metric": "ece", "scope": "each_subgroup:sex", "max": 0.1, "calibration": "platt"},
        )
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
    report = judge(
        {"metric": "ece", "scope": "each_site", "max": 0.1, "on": "ci_high", "name": "ece-sites"},
        {"metric": "auroc", "scope": "each_subgroup:age_band", "min": 0.7, "insufficient": "warn"},
    )
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
    assert "0.090 (0.060–0.120)" in md and "400 (160)" in md


def test_protocol_gate_objects(tmp_path):
    from validate.protocol import load_protocol

    (tmp_path / "m.csv").write_text("case_id,label,x\n1,0,1\n")
    (tmp_path / "p.yaml").write_text(
        "name: t\ntask: binary\nclasses: [no, yes]\ninput: {kind: tabular, features: [x]}\n"
        "sites: [{id: alpha, manifest: m.csv, role: development}]\n"
        "subgroups: [{name: sex, column: x}]\n"
        "gates:\n"
        "  - {metric: auroc, scope: each_site, min: 0.75, on: ci_low}\n"
        "  - {name: bad, metric: mce, min: 0.5}\n"
    )
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
    """A metric name no BLOCK of the task can hold is refused before anything runs: by the pre-run gate
    check (validate.preflight, what `validate check` and `validate run` ask before scoring)."""
    from validate.preflight import check_protocol_gates
    from validate.protocol import load_protocol

    (tmp_path / "m.csv").write_text("case_id,label,x\n1,0,1\n")
    (tmp_path / "p.yaml").write_text(
        "name: t\ntask: binary\nclasses: [no, yes]\ninput: {kind: tabular, features: [x]}\n"
        "sites: [{id: alpha, manifest: m.csv, role: development}]\n"
        "gates:\n"
        "  - {metric: hosmer_lemeshow.p_value, min: 0.05}\n"
        "  - {metric: target_sensitivity.specificity, min: 0.5}\n"
        "  - {name: bad, metric: aurco, min: 0.5}\n"
        "  - {metric: accuracy, min: 0.5}\n"
    )
    protocol = load_protocol(tmp_path / "p.yaml")  # names are judged by the pre-run check, not the loader
    with pytest.raises(InputError) as exc:
        check_protocol_gates(protocol)
    text = str(exc.value)
    assert "p.yaml" in text and "line 9" in text and "gates[2].metric" in text and "did you mean `auroc`" in text
    # accuracy is a multiclass metric: no binary BLOCK holds it
    assert "gates[3].metric" in text and "`accuracy` is not a binary metric" in text
    assert "gates[0]" not in text and "gates[1]" not in text


def test_overall_gate_after_calibration_needs_the_pooled_block():
    with pytest.raises(InputError, match="no pooled block"):
        judge({"metric": "ece", "max": 0.1, "calibration": "platt"})
    pooled = {
        **CALIBRATION,
        "methods": {
            **CALIBRATION["methods"],
            "platt": {
                **CALIBRATION["methods"]["platt"],
                "overall": block(600, 260, entry(0.78, 0.74, 0.82), entry(0.04, 0.03, 0.06)),
            },
        },
    }
    report = judge({"metric": "ece", "max": 0.05, "on": "ci_high", "calibration": "platt"}, calibration=pooled)
    assert report.rows[0].value == 0.06 and report.rows[0].verdict == "fail" and report.rows[0].n == 600


SHIFT = {
    "development": {"sites": ["alpha"]},
    "sites": {
        "beta": {
            "ranking": [{"id": "a", "flagged": True, "material": True}, {"id": "b", "flagged": True, "material": False}]
        },
        "gamma": {"ranking": [{"id": "a", "flagged": False, "material": False}]},
    },
    "drift": {
        "sites": {
            "gamma": {
                "detector": "tests",
                "windows": [
                    {"window": "2024-01", "flagged": False},
                    {"window": "2024-02", "flagged": True, "cusum_alarm": True},
                    {"window": "2024-03", "flagged": True},
                ],
            }
        }
    },
}


def test_shift_and_drift_counts_as_gates():
    r = judge(
        {"metric": "shift_material_findings", "scope": "each_site", "max": 0, "insufficient": "pass"}, shift=SHIFT
    )
    assert verdicts(r) == {"site alpha": "pass", "site beta": "fail", "site gamma": "pass"}
    assert r.rows[0].insufficient is False and "reference" in r.rows[0].reason and r.rows[1].value == 1
    r = judge({"metric": "drift_windows_flagged", "scope": "each_site", "max": 1, "insufficient": "warn"}, shift=SHIFT)
    assert verdicts(r) == {"site alpha": "warn", "site beta": "warn", "site gamma": "fail"}
    assert r.rows[2].value == 2 and r.rows[2].n == 200
    r = judge({"metric": "shift_flagged_findings", "scope": "overall", "max": 2}, shift=SHIFT)
    assert r.rows[0].value == 2 and r.rows[0].verdict == "pass"
    with pytest.raises(InputError, match="shift.json"):
        judge({"metric": "drift_windows_flagged", "scope": "each_site", "max": 0}, shift=None)
    with pytest.raises(InputError, match="each_site or overall"):
        judge({"metric": "drift_windows_flagged", "scope": "each_subgroup:sex", "max": 0}, shift=SHIFT)


# ---- declared sites without scored cases, undefined values, empty scopes (issue #12, item 3) -----------


def test_declared_site_without_scored_cases_fails_every_per_site_gate_and_the_builtin_check():
    # "delta" is declared but has no block in metrics.json: all its cases failed to read or score
    cohort = {"sites": {"delta": {"n": 0, "excluded": {"cannot read image": 7, "model output is NaN or Inf": 2}}}}
    report = judge(
        {"name": "lenient", "metric": "auroc", "scope": "each_site", "min": 0.0, "insufficient": "pass"},
        {"name": "pooled", "metric": "auroc", "min": 0.5},
        {"name": "gap", "metric": "auroc", "scope": "subgroup_gap:sex", "max": 1.0, "insufficient": "pass"},
        sites=["alpha", "beta", "gamma", "delta"],
        cohort=cohort,
    )
    assert report.verdict == "fail" and report.exit_code == 1
    by = {(r.gate, r.item): r for r in report.rows}
    lenient = by[("lenient", "site delta")]
    assert lenient.verdict == "fail" and lenient.n == 0
    assert "no scored case at declared site delta: 9 case(s) excluded" in lenient.reason
    assert "cannot read image (7)" in lenient.reason and "model output is NaN or Inf (2)" in lenient.reason
    assert by[("gap", "site delta: sex (|gap|)")].verdict == "fail"
    # the built-in check: one row per declared site, in protocol order
    builtin = [r for r in report.rows if r.gate == "sites scored"]
    assert [(r.item, r.verdict, r.n) for r in builtin] == [
        ("site alpha", "pass", 300),
        ("site beta", "pass", 400),
        ("site gamma", "pass", 200),
        ("site delta", "fail", 0),
    ]
    assert all(r.builtin for r in builtin) and not any(r.builtin for r in report.rows if r.gate != "sites scored")
    # a pooled gate is judged on the cases there are and names the missing site
    pooled = by[("pooled", "overall")]
    assert pooled.verdict == "pass" and "without declared site(s) delta" in pooled.reason
    data = report.to_json()
    assert data["counts"]["fail"] == 3 and {r["item"] for r in data["rows"] if r["verdict"] == "fail"} == {
        "site delta",
        "site delta: sex (|gap|)",
    }


def test_builtin_check_is_judged_without_gates_and_only_where_sites_are_declared():
    assert judge().rows == []  # no declared sites known: nothing to check against
    report = judge(sites=["alpha", "beta"])
    assert report.verdict == "pass" and [r.item for r in report.rows] == ["site alpha", "site beta"]
    md = report.to_markdown()
    assert "No gates" not in md and "built-in check" in md and "| scored cases &gt;= 1 | 300 |" in md
    report = judge(sites=["alpha", "omega"])
    assert report.verdict == "fail" and report.rows[1].reason.startswith("no scored case at declared site omega")
    root = ET.fromstring(report.to_junit().encode())
    failed = [c for c in root.iter("testcase") if c.find("failure") is not None]
    assert [(c.get("classname"), c.get("name")) for c in failed] == [
        ("gates.sites_scored", "site omega: scored cases >= 1")
    ]


def test_protocol_declares_the_sites(tmp_path):
    from validate.protocol import load_protocol

    (tmp_path / "m.csv").write_text("case_id,label,x\n1,0,1\n")
    (tmp_path / "p.yaml").write_text(
        "name: t\ntask: binary\nclasses: [no, yes]\ninput: {kind: tabular, features: [x]}\n"
        "sites: [{id: alpha, manifest: m.csv, role: development}, {id: zeta, manifest: m.csv, role: external}]\n"
        "gates:\n  - {metric: ece, scope: each_site, max: 1, insufficient: pass}\n"
    )
    report = judge_gates(load_protocol(tmp_path / "p.yaml").gates, METRICS, protocol=load_protocol(tmp_path / "p.yaml"))
    failed = {(r.gate, r.item) for r in report.rows if r.verdict == "fail"}
    assert failed == {("sites scored", "site zeta"), ("ece each_site max 1", "site zeta")}


@pytest.mark.parametrize("policy", ["fail", "warn", "pass"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), None, "n/a", True, "missing"])
def test_undefined_value_follows_the_policy_never_the_comparison(policy, bad):
    site = block(100, 50, entry(0.8, 0.7, 0.9), entry(0.05, 0.03, 0.07))
    if bad == "missing":
        site.pop("auroc")
    else:
        site["auroc"] = entry(bad, 0.7, 0.9)
    metrics = {**METRICS, "sites": {**METRICS["sites"], "odd": site}}
    report = judge_gates([{"metric": "auroc", "scope": "each_site", "max": 2.0, "insufficient": policy}], metrics)
    row = next(r for r in report.rows if r.item == "site odd")
    assert row.verdict == policy and row.value is None
    assert f"insufficient policy: {policy}" in row.reason and "undefined" in row.reason


def test_scope_without_any_block_is_a_row_decided_by_the_policy():
    metrics = {**METRICS, "subgroups": {**METRICS["subgroups"], "empty": {}}}
    for kind in ("each_subgroup", "worst_subgroup"):
        report = judge_gates(
            [{"name": "g", "metric": "auroc", "scope": f"{kind}:empty", "min": 0.5, "insufficient": "fail"}], metrics
        )
        assert len(report.rows) == 1 and report.verdict == "fail", kind
        assert "insufficient policy: fail" in report.rows[0].reason


def test_declared_band_without_cases_is_shown_and_decided_by_the_policy(tmp_path):
    from validate.protocol import load_protocol

    (tmp_path / "m.csv").write_text("case_id,label,x,age\n1,0,1,50\n")
    (tmp_path / "p.yaml").write_text(
        "name: t\ntask: binary\nclasses: [no, yes]\ninput: {kind: tabular, features: [x]}\n"
        "sites: [{id: alpha, manifest: m.csv, role: development}]\nattributes: [age]\n"
        "subgroups: [{name: age_band, column: age, bands: [40, 60, 80]}]\n"
        "gates:\n  - {metric: auroc, scope: each_subgroup:age_band, min: 0.5, insufficient: fail}\n"
        "  - {metric: auroc, scope: worst_subgroup:age_band, min: 0.5, insufficient: warn}\n"
    )
    protocol = load_protocol(tmp_path / "p.yaml")
    report = judge_gates(protocol.gates, METRICS, protocol=protocol, sites=["alpha"])
    # METRICS holds <40, 40-59 and >=60; the protocol's bands are <40, 40-59, 60-79, >=80
    each = {r.item: r for r in report.rows if r.scope == "each_subgroup:age_band"}
    assert set(each) == {"age_band=<40", "age_band=40-59", "age_band=60-79", "age_band=>=60", "age_band=>=80"}
    assert each["age_band=60-79"].verdict == "fail" and "no case in this declared band" in each["age_band=60-79"].reason
    worst = next(r for r in report.rows if r.scope == "worst_subgroup:age_band")
    assert worst.verdict == "warn" and "60-79" in worst.reason and ">=80" in worst.reason


def test_calibrated_gate_does_not_drop_a_scored_site_the_calibration_left_out():
    # beta is scored but missing from platt's evaluated sites; alpha is the fitting site (rightly absent)
    partial = {
        **CALIBRATION,
        "methods": {
            **CALIBRATION["methods"],
            "platt": {
                **CALIBRATION["methods"]["platt"],
                "sites": {"gamma": CALIBRATION["methods"]["platt"]["sites"]["gamma"]},
            },
        },
    }
    report = judge(
        {"metric": "ece", "scope": "each_site", "max": 0.5, "calibration": "platt", "insufficient": "fail"},
        calibration=partial,
    )
    assert verdicts(report) == {"site gamma": "pass", "site beta": "fail"}
    beta = next(r for r in report.rows if r.item == "site beta")
    assert "not evaluated after platt" in beta.reason and beta.n == 400
    # a site the comparison never meant to evaluate (not among its external sites) is not a gap
    meant = {**partial, "external_sites": ["gamma"]}
    report = judge(
        {"metric": "ece", "scope": "each_site", "max": 0.5, "calibration": "platt", "insufficient": "fail"},
        calibration=meant,
    )
    assert verdicts(report) == {"site gamma": "pass"}
