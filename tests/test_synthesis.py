"""Random-effects synthesis across sites (validate.analysis.synthesis) and its gates (scope across_sites).

References: the BCG vaccine trials (Colditz et al. 1994, metafor's dat.bcg), log relative risks computed
here from the published 2x2 counts, against the numbers printed in Viechtbauer, J Stat Softw
2010;36(3) (REML: mu = -0.7145, tau2 = 0.3132, I2 = 92.22%, Q = 152.23; DL: tau2 = 0.3088,
mu = -0.7141); small examples by hand (naive loops). R metafor to 1e-6: tests/test_synthesis_r.py.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from validate.analysis.synthesis import random_effects, site_input, synthesize
from validate.errors import InputError
from validate.gates import judge_gates

# dat.bcg: (vaccinated TB+, vaccinated TB-, control TB+, control TB-)
BCG = [
    (4, 119, 11, 128),
    (6, 300, 29, 274),
    (3, 228, 11, 209),
    (62, 13536, 248, 12619),
    (33, 5036, 47, 5761),
    (180, 1361, 372, 1079),
    (8, 2537, 10, 619),
    (505, 87886, 499, 87892),
    (29, 7470, 45, 7232),
    (17, 1699, 65, 1600),
    (186, 50448, 141, 27197),
    (5, 2493, 3, 2338),
    (27, 16886, 29, 17825),
]


def bcg_log_rr():
    yi = [math.log(a / (a + b)) - math.log(c / (c + d)) for a, b, c, d in BCG]
    vi = [1 / a - 1 / (a + b) + 1 / c - 1 / (c + d) for a, b, c, d in BCG]
    return np.array(yi), np.sqrt(vi)


def test_reml_hksj_matches_the_published_bcg_meta_analysis():
    y, se = bcg_log_rr()
    r = random_effects(y, se, method="REML", test="hksj")
    assert r["k"] == 13
    assert r["tau2"] == pytest.approx(0.3132, abs=5e-5)
    assert r["estimate"] == pytest.approx(-0.7145, abs=5e-5)
    assert r["se"] == pytest.approx(0.1808, abs=5e-5)  # metafor's knha se
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((-1.1084, -0.3206), abs=5e-5)
    assert r["i2"] == pytest.approx(0.9222, abs=5e-5)
    assert r["q"] == pytest.approx(152.2330, abs=5e-4)


def test_dl_z_matches_the_published_bcg_meta_analysis():
    y, se = bcg_log_rr()
    r = random_effects(y, se, method="DL", test="z")
    assert r["tau2"] == pytest.approx(0.3088, abs=5e-5)
    assert r["estimate"] == pytest.approx(-0.7141, abs=5e-5)
    assert r["se"] == pytest.approx(0.1787, abs=5e-5)


def test_reml_solves_the_restricted_likelihood_score_equation():
    # at an interior REML estimate the score sum(w^2 r^2) - tr(P) is zero (Viechtbauer 2005, eq. 8)
    y, se = bcg_log_rr()
    tau2 = random_effects(y, se)["tau2"]
    w = 1 / (se**2 + tau2)
    mu = np.sum(w * y) / np.sum(w)
    score = np.sum(w**2 * (y - mu) ** 2) - (np.sum(w) - np.sum(w**2) / np.sum(w))
    assert abs(score) < 1e-8


def test_dersimonian_laird_and_intervals_by_hand():
    theta, se = [0.2, 0.5, 1.0, 0.1], [0.1, 0.2, 0.25, 0.15]
    w = [1 / s**2 for s in se]
    sw = sum(w)
    mu_fe = sum(wi * t for wi, t in zip(w, theta, strict=True)) / sw
    q = sum(wi * (t - mu_fe) ** 2 for wi, t in zip(w, theta, strict=True))
    tau2 = max(0.0, (q - 3) / (sw - sum(wi**2 for wi in w) / sw))
    ws = [1 / (s**2 + tau2) for s in se]
    mu = sum(wi * t for wi, t in zip(ws, theta, strict=True)) / sum(ws)
    se_mu = 1 / math.sqrt(sum(ws))
    se_hk = math.sqrt(sum(wi * (t - mu) ** 2 for wi, t in zip(ws, theta, strict=True)) / (3 * sum(ws)))
    typical = 3 * sw / (sw**2 - sum(wi**2 for wi in w))

    z = random_effects(theta, se, method="DL", test="z")
    assert z["tau2"] == pytest.approx(tau2, rel=1e-12)
    assert z["estimate"] == pytest.approx(mu, rel=1e-12)
    assert z["ci_low"] == pytest.approx(mu - 1.959963984540054 * se_mu, rel=1e-12)
    assert z["q"] == pytest.approx(q, rel=1e-12)
    assert z["q_p_value"] == pytest.approx(stats.chi2.sf(q, 3), rel=1e-12)
    assert z["i2"] == pytest.approx(tau2 / (tau2 + typical), rel=1e-12)
    # Higgins et al. 2009: mu +- t_{k-2} sqrt(tau2 + SE^2)
    t2, t3 = stats.t.ppf(0.975, 2), stats.t.ppf(0.975, 3)
    assert z["pi_low"] == pytest.approx(mu - t2 * math.sqrt(tau2 + se_mu**2), rel=1e-12)
    hk = random_effects(theta, se, method="DL", test="hksj")
    assert hk["ci_high"] == pytest.approx(mu + t3 * se_hk, rel=1e-12)
    assert hk["pi_high"] == pytest.approx(mu + t2 * math.sqrt(tau2 + se_hk**2), rel=1e-12)


def test_homogeneous_sites_give_tau2_zero_and_the_fixed_effect_mean():
    theta, se = [0.50, 0.51, 0.49], [0.2, 0.2, 0.2]
    for method in ("REML", "DL"):
        r = random_effects(theta, se, method=method)
        assert r["tau2"] == 0.0 and r["i2"] == 0.0
        assert r["estimate"] == pytest.approx(0.5, abs=1e-15)


def test_fewer_than_three_sites_give_no_prediction_interval_with_the_reason():
    r = random_effects([0.1, 0.4], [0.1, 0.1])
    assert r["pi_low"] is None and r["pi_high"] is None
    assert r["pi_reason"] == "k = 2 < 3 sites: no prediction interval"
    assert r["ci_low"] is not None
    one = random_effects([0.3], [0.1])  # HKSJ has 0 degrees of freedom: no interval at all
    assert one["estimate"] == 0.3 and one["ci_low"] is None and one["pi_low"] is None


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError):
        random_effects([0.1, 0.2], [0.1, 0.0])
    with pytest.raises(ValueError):
        random_effects([0.1, float("nan")], [0.1, 0.1])
    with pytest.raises(ValueError):
        random_effects([0.1, 0.2], [0.1, 0.1], method="ML")


# ---- per-site inputs from BLOCKs ---------------------------------------------------------------------


def _block(auroc, se, n=200, events=60, insufficient=False, slope=1.0, slope_se=0.2):
    return {
        "n": n,
        "n_events": events,
        "insufficient": insufficient,
        "auroc": {"estimate": auroc, "ci_low": None, "ci_high": None, "method": "delong", "se": se},
        "calibration_slope": {"estimate": slope, "ci_low": 0, "ci_high": 2, "method": "wald", "se": slope_se},
        "calibration_intercept": {"estimate": 0.1, "ci_low": 0, "ci_high": 2, "method": "wald", "se": 0.1},
        "undefined": {},
    }


def test_auroc_enters_on_the_logit_scale_with_the_delta_method_se():
    theta, se = site_input("auroc", "logit", _block(0.8, 0.03))
    assert theta == pytest.approx(math.log(0.8 / 0.2), rel=1e-15)
    assert se == pytest.approx(0.03 / (0.8 * 0.2), rel=1e-15)


def test_oe_ratio_enters_on_the_log_scale_with_debrays_se():
    block = {"n": 200, "n_events": 50, "oe_ratio": {"estimate": 1.25, "method": "bootstrap"}}
    theta, se = site_input("oe_ratio", "log", block)
    assert theta == pytest.approx(math.log(1.25), rel=1e-15)
    assert se == pytest.approx(math.sqrt((1 - 50 / 200) / 50), rel=1e-15)


def test_net_benefit_at_a_threshold_enters_with_its_bootstrap_se():
    block = {"n": 100, "decision": [{"threshold": 0.2, "net_benefit": {"estimate": 0.12, "se": 0.03}}]}
    assert site_input("net_benefit@0.2", "identity", block) == (0.12, 0.03)
    assert isinstance(site_input("net_benefit@0.3", "identity", block), str)


def test_an_undefined_metric_is_excluded_with_its_reason_and_thin_sites_are_flagged():
    blocks = {
        "a": _block(0.80, 0.03),
        "b": _block(0.70, 0.05, insufficient=True),
        "c": _block(0.75, 0.04),
        "d": {**_block(None, None), "undefined": {"auroc": "one class only"}},
    }
    syn = synthesize({"sites": blocks}, sites=["a", "b", "c", "d", "e"], roles=dict.fromkeys("abcde", "external"))
    auroc = syn["metrics"]["auroc"]
    assert auroc["k"] == 3 and [i["site"] for i in auroc["inputs"]] == ["a", "b", "c"]
    assert [i["insufficient"] for i in auroc["inputs"]] == [False, True, False]
    assert auroc["excluded"] == [
        {"site": "d", "reason": "auroc undefined: one class only"},
        {"site": "e", "reason": "no block in metrics.json"},
    ]
    # back on the AUROC scale: expit of the pooled logit; the interval too
    pooled = random_effects([math.log(4), math.log(0.7 / 0.3), math.log(3)], [0.03 / 0.16, 0.05 / 0.21, 0.04 / 0.1875])
    assert auroc["estimate"] == pytest.approx(1 / (1 + math.exp(-pooled["estimate"])), rel=1e-12)
    assert auroc["pi_low"] == pytest.approx(1 / (1 + math.exp(-pooled["pi_low"])), rel=1e-12)
    assert auroc["tau2"] == pytest.approx(pooled["tau2"], rel=1e-12)
    assert syn["metrics"]["calibration_slope"]["scale"] == "identity"


# ---- gates on the synthesis ------------------------------------------------------------------------------


def _metrics(aurocs, ses):
    sites = {f"s{i}": _block(a, s) for i, (a, s) in enumerate(zip(aurocs, ses, strict=True))}
    m = {"task": "binary", "overall": _block(0.8, 0.02), "sites": sites, "subgroups": {}}
    m["synthesis"] = synthesize(m, sites=list(sites), roles=dict.fromkeys(sites, "external"))
    return m


GATE = {"name": "next", "metric": "auroc", "scope": "across_sites", "min": 0.70, "on": "pi_low", "insufficient": "pass"}


def test_a_pi_low_gate_passes_and_fails_on_the_prediction_interval():
    close = _metrics([0.86, 0.85, 0.87, 0.86], [0.02, 0.02, 0.02, 0.02])
    report = judge_gates([GATE], close)
    (row,) = report.rows
    assert row.verdict == "pass" and row.value == close["synthesis"]["metrics"]["auroc"]["pi_low"] > 0.70
    apart = _metrics([0.92, 0.70, 0.85], [0.02, 0.03, 0.02])
    (row,) = judge_gates([GATE], apart).rows
    assert row.verdict == "fail" and row.value < 0.70
    assert row.estimate > 0.70  # the average clears the bar; the next hospital need not


def test_too_few_sites_for_a_prediction_interval_follow_the_policy_with_the_reason():
    two = _metrics([0.86, 0.85], [0.02, 0.02])
    (row,) = judge_gates([{**GATE, "insufficient": "fail"}], two).rows
    assert row.verdict == "fail" and row.insufficient
    assert "k = 2 < 3 sites: no prediction interval" in row.reason


def test_pi_quantities_need_scope_across_sites_and_a_synthesis():
    m = _metrics([0.86, 0.85, 0.87], [0.02, 0.02, 0.02])
    with pytest.raises(InputError, match="prediction interval"):
        judge_gates([{**GATE, "scope": "each_site"}], m)
    without = {k: v for k, v in m.items() if k != "synthesis"}
    with pytest.raises(InputError, match="no synthesis"):
        judge_gates([GATE], without)
    with pytest.raises(InputError, match="not pooled"):
        judge_gates([{**GATE, "metric": "brier"}], m)


# ---- the protocol and `validate check` refuse what a run could not judge ------------------------------


def _checked(tmp_path, capsys, gates: str, synthesis: str = ""):
    from test_check import TABULAR, run_check, write_tabular

    text = TABULAR[: TABULAR.index("gates:")] + synthesis + "gates:\n" + gates
    return text, run_check(capsys, write_tabular(tmp_path, text))


def test_check_refuses_a_prediction_interval_outside_across_sites(tmp_path, capsys):
    text, (code, out) = _checked(tmp_path, capsys, "  - {metric: auroc, scope: each_site, min: 0.7, on: pi_low}\n")
    assert code == 2
    assert "on: pi_low (the prediction interval for a new site) needs scope across_sites" in out


def test_check_refuses_too_few_sites_and_unpooled_metrics(tmp_path, capsys):
    from test_check import line_of

    gates = (
        "  - {metric: auroc, scope: across_sites, min: 0.7, on: pi_low}\n"
        "  - {metric: brier, scope: across_sites, max: 0.2}\n"
    )
    text, (code, out) = _checked(tmp_path, capsys, gates, "synthesis: {sites: all}\n")
    assert code == 2
    assert f"line {line_of(text, 'on: pi_low')}: gates[0].scope" in out
    assert "a prediction interval needs at least 3 sites; the synthesis pools 2" in out
    assert "`brier` is not pooled across sites" in out and "oe_ratio" in out


def test_check_accepts_a_pooled_estimate_gate_over_two_sites_and_refuses_an_unknown_site(tmp_path, capsys):
    gates = "  - {metric: calibration_slope, scope: across_sites, min: 0.8, on: ci_low}\n"
    _, (code, out) = _checked(tmp_path, capsys, gates, "synthesis: {sites: all, method: DL, interval: z}\n")
    assert code == 0, out
    _, (code, out) = _checked(tmp_path, capsys, gates, "synthesis: {sites: [dev, elsewhere]}\n")
    assert code == 2 and "synthesis.sites[1]" in out and "unknown site `elsewhere`" in out


# ---- end to end: `validate run` writes the synthesis and judges it --------------------------------------

HEART_PROTOCOL = """\
name: heart-synthesis
task: binary
classes: [absent, present]
positive_class: present
input: {{kind: tabular, features: [age]}}
sites:
  - {{id: cleveland, manifest: {heart}/cleveland.csv, role: development}}
  - {{id: hungary, manifest: {heart}/hungary.csv, role: external}}
  - {{id: switzerland, manifest: {heart}/switzerland.csv, role: external}}
  - {{id: va, manifest: {heart}/va.csv, role: external}}
metrics: {{n_bootstrap: 20}}
calibration: {{designs: [held-out], methods: [temperature], fit_on: [cleveland]}}
synthesis: {{sites: external}}
decision: {{thresholds: [0.2]}}
gates:
  - {{name: mean, metric: auroc, scope: across_sites, min: 0.7, on: estimate}}
  - {{name: next, metric: auroc, scope: across_sites, min: 0.7, on: pi_low}}
  - {{name: useful, metric: net_benefit_vs_treat_all@0.2, scope: across_sites, min: 0, on: ci_low}}
"""


def test_a_run_writes_the_synthesis_of_its_site_blocks_and_judges_it(tmp_path):
    import validate

    from conftest import REPO
    from test_comparison import heart_frames

    heart = REPO / "sample_sites" / "heart"
    path = tmp_path / "p.yaml"
    path.write_text(HEART_PROTOCOL.format(heart=heart))
    new, _ = heart_frames()
    new.drop(columns=["sex"]).to_csv(tmp_path / "pred.csv", index=False, float_format="%.17g")
    result = validate.run_protocol(path, out=tmp_path / "run", predictions=tmp_path / "pred.csv")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    syn = metrics["synthesis"]
    assert syn["sites"] == ["hungary", "switzerland", "va"] and syn["method"] == "REML" and syn["interval"] == "hksj"
    # the numbers are those of the site BLOCKs as written (what a coordinator with site bundles has)
    again = synthesize(
        metrics, sites=syn["sites"], roles=dict.fromkeys(syn["sites"], "external"), decision_thresholds=(0.2,)
    )
    assert syn["metrics"] == json.loads(json.dumps(again["metrics"]))
    ses = [metrics["sites"][s]["calibration_slope"]["se"] for s in syn["sites"]]
    assert all(se > 0 for se in ses)
    # net benefit at a decision threshold: each site's own entry and its bootstrap se
    for name in ("net_benefit", "net_benefit_vs_treat_all", "standardized_net_benefit", "interventions_avoided"):
        pooled = syn["metrics"][f"{name}@0.2"]
        assert pooled["scale"] == "identity" and pooled["k"] == 3
        for item in pooled["inputs"]:
            (entry,) = [d[name] for d in metrics["sites"][item["site"]]["decision"] if d["threshold"] == 0.2]
            assert (item["theta"], item["se"]) == (entry["estimate"], entry["se"])
    assert not any(k.startswith(("net_benefit_treat_all", "beats_defaults")) for k in syn["metrics"])
    rows = {r.gate: r for r in result.gates.rows}
    assert rows["useful"].value == syn["metrics"]["net_benefit_vs_treat_all@0.2"]["ci_low"]
    auroc = syn["metrics"]["auroc"]
    assert rows["mean"].verdict == "pass" and rows["mean"].value == auroc["estimate"]
    assert rows["next"].verdict == "fail" and rows["next"].value == auroc["pi_low"] < 0.7
    assert result.exit_code == 1
    _, again = validate.regate(tmp_path / "run")  # `validate gate`: judged again from the bundle alone
    assert [r.to_dict() for r in again.rows] == [r.to_dict() for r in result.gates.rows]


def test_a_threshold_written_another_way_names_the_same_pooled_metric():
    m = _metrics([0.86, 0.85, 0.87], [0.02, 0.02, 0.02])
    m["synthesis"]["metrics"]["net_benefit@0.2"] = {**m["synthesis"]["metrics"]["auroc"], "estimate": 0.05}
    gate = {"metric": "net_benefit@0.20", "scope": "across_sites", "min": 0.0, "on": "estimate"}
    (row,) = judge_gates([gate], m).rows
    assert row.verdict == "pass" and row.value == 0.05


def test_a_synthesis_section_of_a_task_that_is_not_binary_is_refused(tmp_path):
    from validate.errors import InputErrors
    from validate.protocol import load_protocol

    from test_check import TABULAR, write_tabular

    text = TABULAR.replace("task: binary\nclasses: [absent, present]\npositive_class: present\n", "")
    text = "task: multiclass\nclasses: [a, b, c]\n" + text[: text.index("gates:")] + "synthesis: {sites: all}\n"
    with pytest.raises(InputErrors, match="pools binary metrics; this task is multiclass"):
        load_protocol(write_tabular(tmp_path, text))
