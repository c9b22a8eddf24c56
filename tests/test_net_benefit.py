"""Net benefit at decision thresholds (issue #15.1): hand-computed values, a naive-loop bootstrap, the
decision curve, gates on ``<metric>@<t>``, the preflight, and a ``validate run`` end to end.

References are independent of the code under test: numbers worked out by hand below, and plain Python
loops over the cases each bootstrap replicate draws (the replicate weights are the engine's, by design:
the intervals must come from the same replicates as every other metric)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from validate.gates import judge_gates
from validate.metrics import MetricSettings, binary_block
from validate.metrics.bootstrap import bootstrap_weights

from tests.adversarial.harness import run_cli

REPO = Path(__file__).resolve().parents[1]
HEART = REPO / "protocols" / "heart.yaml"

# ten cases; treated = p >= t
Y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=float)
P = np.array([0.9, 0.6, 0.25, 0.15, 0.5, 0.3, 0.2, 0.12, 0.05, 0.02])


def _settings(thresholds=(0.2,), n_bootstrap=0, **kw) -> MetricSettings:
    return MetricSettings.from_protocol(
        {"n_bootstrap": n_bootstrap, "min_events": 0, "min_cases": 0, **kw}, {"thresholds": list(thresholds)}
    )


def test_hand_computed_net_benefit_at_two_thresholds():
    # t = 0.2 (odds 1/4): treated p >= 0.2 -> 0.9 0.6 0.25 (events), 0.5 0.3 0.2 (non-events): TP 3, FP 3.
    #   NB = 3/10 − 3/10 · 1/4 = 0.225; treat all = 0.4 − 0.6 · 1/4 = 0.25; NB − all = −0.025;
    #   avoided = −0.025 / (1/4) · 100 = −10; sNB = 0.225 / 0.4 = 0.5625.
    # t = 0.5 (odds 1): treated 0.9 0.6 (events), 0.5 (non-event): TP 2, FP 1.
    #   NB = 0.2 − 0.1 = 0.1; treat all = 0.4 − 0.6 = −0.2; NB − all = 0.3; avoided = 30; sNB = 0.25.
    block = binary_block(Y, P, settings=_settings((0.2, 0.5)))
    expected = {
        0.2: dict(
            net_benefit=0.225,
            net_benefit_treat_all=0.25,
            net_benefit_vs_treat_all=-0.025,
            interventions_avoided=-10.0,
            standardized_net_benefit=0.5625,
        ),
        0.5: dict(
            net_benefit=0.1,
            net_benefit_treat_all=-0.2,
            net_benefit_vs_treat_all=0.3,
            interventions_avoided=30.0,
            standardized_net_benefit=0.25,
        ),
    }
    assert [item["threshold"] for item in block["decision"]] == [0.2, 0.5]
    for item in block["decision"]:
        assert item["prevalence"] == 0.4
        for name, value in expected[item["threshold"]].items():
            assert item[name]["estimate"] == pytest.approx(value, abs=1e-12), (item["threshold"], name)
            assert item[name]["se"] is None and item[name]["ci_low"] is None  # no replicates
        assert item["beats_defaults"] is None


def test_treat_is_p_at_or_above_the_threshold():
    # a case exactly at t is treated (dcurves' convention): p = 0.2 non-event counts as a false positive
    y, p = np.array([1.0, 0.0]), np.array([0.8, 0.2])
    item = binary_block(y, p, settings=_settings((0.2,)))["decision"][0]
    assert item["net_benefit"]["estimate"] == pytest.approx(0.5 - 0.5 * 0.25, abs=1e-15)


def test_standardized_net_benefit_is_undefined_without_events():
    y = np.zeros(6)
    p = np.linspace(0.1, 0.6, 6)
    block = binary_block(y, p, settings=_settings((0.3,), n_bootstrap=50))
    item = block["decision"][0]
    assert item["standardized_net_benefit"] is None
    assert "no events" in block["undefined"]["standardized_net_benefit@0.3"]
    # NB = −FP/n · t/(1−t): four of six treated, no events
    assert item["net_benefit"]["estimate"] == pytest.approx(-4 / 6 * 0.3 / 0.7, abs=1e-15)


def _naive(y, p, w, t):
    """Net benefit and treat all of one replicate, by a loop over the drawn cases."""
    n = tp = fp = events = 0.0
    for yi, pi, wi in zip(y, p, w, strict=True):
        for _ in range(int(wi)):
            n += 1
            events += yi
            if pi >= t:
                tp += yi
                fp += 1 - yi
    nb = tp / n - fp / n * t / (1 - t)
    all_ = events / n - (1 - events / n) * t / (1 - t)
    return nb, all_, events, n


def _type7(values, q):
    s = sorted(values)
    h = (len(s) - 1) * q
    lo = math.floor(h)
    return s[lo] + (h - lo) * (s[min(lo + 1, len(s) - 1)] - s[lo])


def test_bootstrap_intervals_se_and_beats_defaults_equal_a_naive_loop():
    rng = np.random.default_rng(7)
    n = 80
    p = rng.uniform(0.02, 0.9, n)
    y = (rng.random(n) < p).astype(float)
    patients = rng.integers(0, 50, n)  # repeated patients: clustered resampling
    sites = np.where(np.arange(n) < 40, "a", "b")
    t, reps = 0.15, 120
    settings = _settings((t,), n_bootstrap=reps, seed=3)
    item = binary_block(y, p, settings=settings, clusters=patients, strata=sites)["decision"][0]
    weights = bootstrap_weights(reps, n, clusters=patients, strata=sites, seed=3)
    values: dict[str, list] = {k: [] for k in ("nb", "all", "diff", "avoided", "snb")}
    beats = 0
    for w in weights:
        nb, all_, events, m = _naive(y, p, w, t)
        values["nb"].append(nb)
        values["all"].append(all_)
        values["diff"].append(nb - all_)
        values["avoided"].append((nb - all_) / (t / (1 - t)) * 100)
        values["snb"].append(nb / (events / m))
        beats += nb > max(0.0, all_)
    names = {
        "nb": "net_benefit",
        "all": "net_benefit_treat_all",
        "diff": "net_benefit_vs_treat_all",
        "avoided": "interventions_avoided",
        "snb": "standardized_net_benefit",
    }
    for key, name in names.items():
        entry = item[name]
        assert entry["method"] == "bootstrap"
        assert entry["ci_low"] == pytest.approx(_type7(values[key], 0.025), abs=1e-12), name
        assert entry["ci_high"] == pytest.approx(_type7(values[key], 0.975), abs=1e-12), name
        assert entry["se"] == pytest.approx(statistics.stdev(values[key]), abs=1e-12), name
    assert item["beats_defaults"] == pytest.approx(beats / reps, abs=1e-15)


def test_decision_entries_change_no_other_number():
    rng = np.random.default_rng(11)
    n = 150
    p = rng.uniform(0.01, 0.99, n)
    y = (rng.random(n) < p).astype(float)
    plain = MetricSettings.from_protocol({"n_bootstrap": 100})
    with_decision = MetricSettings.from_protocol({"n_bootstrap": 100}, {"thresholds": [0.1, 0.3]})
    a = binary_block(y, p, settings=plain, smooth_intervals=False)
    b = binary_block(y, p, settings=with_decision, smooth_intervals=False)
    assert "decision" not in a
    assert len(b.pop("decision")) == 2
    assert json.dumps(a) == json.dumps(b)


def test_no_decision_section_means_no_settings_and_no_grid():
    s = MetricSettings.from_protocol({"n_bootstrap": 10})
    assert s.decision_thresholds == () and s.decision_range is None and s.decision_grid == ()
    s = MetricSettings.from_protocol(None, {"range": [0.05, 0.2], "step": 0.05})
    assert s.decision_grid == (0.05, 0.1, 0.15, 0.2)
    grid = MetricSettings.from_protocol(None, {}).decision_grid
    assert len(grid) == 50 and grid[0] == 0.01 and grid[9] == 0.1 and grid[-1] == 0.5


# ---- the decision curve -----------------------------------------------------------------------------


def _table(frame: pd.DataFrame):
    from validate.predictions import table_from_frame

    return table_from_frame(frame, task="binary")


def _frame(n=120, seed=5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.01, 0.8, n)
    return pd.DataFrame(
        {
            "case_id": [f"c{i}" for i in range(n)],
            "patient_id": [f"p{i // 2}" for i in range(n)],
            "site": np.where(np.arange(n) % 3 == 0, "x", "y"),
            "y": (rng.random(n) < p).astype(int),
            "p": p,
        }
    )


def test_decision_curve_equals_a_naive_loop_and_the_blocks_at_the_decision_thresholds():
    from validate.analysis.decision import decision_curves
    from validate.metrics import metrics_report

    frame = _frame()
    table = _table(frame)
    settings = MetricSettings.from_protocol(
        {"n_bootstrap": 60, "min_events": 0, "min_cases": 0}, {"thresholds": [0.1, 0.2], "range": [0.05, 0.3]}
    )
    curves = decision_curves(table, settings=settings, sites=["x", "y"])
    assert curves["thresholds"] == [round(0.05 + 0.01 * i, 10) for i in range(26)]
    y, p = frame["y"].to_numpy(float), frame["p"].to_numpy()
    for s in ("x", "y"):
        mask = frame["site"].to_numpy() == s
        curve = curves["blocks"]["sites"][s]
        assert curve["n"] == mask.sum() and curve["n_events"] == y[mask].sum()
        for j, t in enumerate(curves["thresholds"]):
            nb, all_, _, _ = _naive(y[mask], p[mask], np.ones(mask.sum()), t)
            assert curve["net_benefit"][j] == pytest.approx(nb, abs=1e-12)
            assert curve["treat_all"][j] == pytest.approx(all_, abs=1e-12)
    report = metrics_report(table, settings=settings, workers=1, smooth_intervals=False)
    for block, curve in [(report["overall"], curves["blocks"]["overall"])] + [
        (report["sites"][s], curves["blocks"]["sites"][s]) for s in ("x", "y")
    ]:
        for item in block["decision"]:
            j = curves["thresholds"].index(item["threshold"])
            for entry, key in (("net_benefit", "net_benefit"), ("net_benefit_treat_all", "treat_all")):
                e = item[entry]
                assert (curve[key][j], curve[f"{key}_ci_low"][j], curve[f"{key}_ci_high"][j]) == (
                    e["estimate"],
                    e["ci_low"],
                    e["ci_high"],
                )


def test_curves_json_has_a_decision_curve_only_with_a_decision_section():
    from validate.analysis.sites import site_curves

    frame = _frame(60)
    plain = MetricSettings.from_protocol({"n_bootstrap": 0})
    assert "decision" not in site_curves(frame, task="binary", names=[], settings=plain, smooth=False)
    with_section = MetricSettings.from_protocol({"n_bootstrap": 0}, {})
    out = site_curves(frame, task="binary", names=[], settings=with_section, smooth=False)
    assert set(out["decision"]["blocks"]["sites"]) == {"x", "y"}
    assert out["decision"]["blocks"]["overall"]["net_benefit_ci_low"] == [None] * 50


# ---- gates ------------------------------------------------------------------------------------------


def _entry(est, lo, hi):
    return {"estimate": est, "ci_low": lo, "ci_high": hi, "method": "bootstrap", "se": 0.01}


def _metrics(items_by_site: dict) -> dict:
    def block(items, **extra):
        return {"n": 100, "n_events": 30, "decision": items, **extra}

    return {
        "task": "binary",
        "n_bootstrap": 100,
        "ci_level": 0.95,
        "seed": 0,
        "overall": block(items_by_site["overall"]),
        "sites": {s: block(v) for s, v in items_by_site.items() if s != "overall"},
        "subgroups": {},
    }


def _item(t, diff, nb=(0.2, 0.1, 0.3), snb=(0.5, 0.4, 0.6)):
    return {
        "threshold": t,
        "prevalence": 0.3,
        "net_benefit": _entry(*nb),
        "net_benefit_treat_all": _entry(0.1, 0.05, 0.15),
        "net_benefit_vs_treat_all": _entry(*diff),
        "interventions_avoided": _entry(10.0, 1.0, 20.0),
        "standardized_net_benefit": None if snb is None else _entry(*snb),
        "beats_defaults": 0.9,
    }


def test_a_gate_at_t_reads_the_decision_item_at_that_threshold():
    metrics = _metrics(
        {
            "overall": [_item(0.1, (0.5, 0.4, 0.6)), _item(0.2, (0.02, 0.01, 0.03))],
            "a": [_item(0.1, (0.5, 0.4, 0.6)), _item(0.2, (0.02, -0.01, 0.05))],
        }
    )
    gates = [
        {"metric": "net_benefit_vs_treat_all@0.2", "scope": "each_site", "min": 0, "on": "ci_low"},
        {"metric": "net_benefit_vs_treat_all@0.20", "scope": "overall", "min": 0, "on": "ci_low"},
        {"metric": "net_benefit@0.1", "scope": "overall", "min": 0.25, "on": "estimate"},
    ]
    rows = judge_gates(gates, metrics).rows
    by_item = {(r.metric, r.site or r.item): r for r in rows}
    site = by_item[("net_benefit_vs_treat_all@0.2", "a")]
    assert (site.verdict, site.value) == ("fail", -0.01)  # the 0.1 item's ci_low (0.4) would pass
    pooled = by_item[("net_benefit_vs_treat_all@0.20", "overall")]
    assert (pooled.verdict, pooled.value) == ("pass", 0.01)
    assert by_item[("net_benefit@0.1", "overall")].verdict == "fail"  # 0.2 < 0.25


def test_an_undefined_entry_at_t_follows_the_insufficient_policy_with_its_reason():
    metrics = _metrics({"overall": [_item(0.2, (0.1, 0.05, 0.15), snb=None)]})
    metrics["overall"]["undefined"] = {"standardized_net_benefit@0.2": "no events: divides by the prevalence"}
    gate = {"metric": "standardized_net_benefit@0.2", "scope": "overall", "min": 0.1, "insufficient": "fail"}
    (row,) = [r for r in judge_gates([gate], metrics).rows if r.metric == gate["metric"]]
    assert row.verdict == "fail" and "no events" in row.reason


def test_a_gate_at_an_undeclared_threshold_is_refused_by_check_gates():
    from validate.errors import InputErrors
    from validate.gates import check_gates, gate_specs

    metrics = _metrics({"overall": [_item(0.2, (0.1, 0.05, 0.15))]})
    with pytest.raises((InputErrors, Exception)) as err:
        check_gates(gate_specs([{"metric": "net_benefit@0.25", "scope": "overall", "min": 0}]), metrics)
    assert "net_benefit@0.25" in str(err.value)


def _protocol_copy(tmp_path: Path, decision: dict | None, gates: list[dict], **metrics) -> Path:
    doc = yaml.safe_load(HEART.read_text())
    doc["model"]["checkpoint"] = str((HEART.parent / doc["model"]["checkpoint"]).resolve())
    for site in doc["sites"]:
        site["manifest"] = str((HEART.parent / site["manifest"]).resolve())
    doc.pop("decision", None)
    if decision is not None:
        doc["decision"] = decision
    doc["gates"] = gates
    doc["metrics"].update(metrics)
    path = tmp_path / "heart.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.mark.parametrize(
    "decision, gate, words",
    [
        ({"thresholds": [0.1, 0.2]}, {"metric": "net_benefit@0.25"}, ["0.25", "0.1, 0.2", "nb-gate"]),
        (None, {"metric": "net_benefit_vs_treat_all@0.2"}, ["0.2", "declares none"]),
        ({"thresholds": [0.2]}, {"metric": "net_benfit@0.2"}, ["net_benfit", "net_benefit"]),
        ({"thresholds": [0.2]}, {"metric": "net_benefit@abc"}, ["no decision threshold"]),
        ({"thresholds": [0.2]}, {"metric": "net_benefit@0.2", "calibration": "temperature"}, ["recalibration"]),
    ],
)
def test_preflight_refuses_net_benefit_gates_it_cannot_judge(tmp_path, decision, gate, words):
    from validate.errors import InputErrors
    from validate.preflight import check_protocol_gates
    from validate.protocol import load_protocol

    full = {"name": "nb-gate", "scope": "overall", "min": 0, **gate}
    protocol = load_protocol(_protocol_copy(tmp_path, decision, [full]))
    with pytest.raises(InputErrors) as err:
        check_protocol_gates(protocol)
    text = str(err.value)
    for w in words:
        assert w in text, (w, text)


def test_preflight_accepts_a_declared_threshold(tmp_path):
    from validate.preflight import check_protocol_gates
    from validate.protocol import load_protocol

    gates = [
        {"metric": "net_benefit_vs_treat_all@0.2", "scope": "each_site", "min": 0, "on": "ci_low"},
        {"metric": "interventions_avoided@0.2", "scope": "worst_subgroup:sex", "min": 0},
    ]
    check_protocol_gates(load_protocol(_protocol_copy(tmp_path, {"thresholds": [0.2]}, gates)))


@pytest.mark.parametrize(
    "decision",
    [{"thresholds": [0.0]}, {"thresholds": [1.0]}, {"thresholds": [0.2, 0.2]}, {"range": [0.3, 0.1]}, {"step": 0}],
)
def test_a_bad_decision_section_is_refused_with_exit_2(tmp_path, decision):
    result = run_cli("check", _protocol_copy(tmp_path, decision, []), cwd=tmp_path)
    assert result.code == 2, result.text
    assert "decision" in result.text


# ---- end to end ---------------------------------------------------------------------------------------


def _site_reference(predictions: pd.DataFrame, site: str, t: float) -> float:
    """NB − treat all at one site from the bundle's predictions (p = sigmoid of the logit), by a loop."""
    from scipy.special import expit

    part = predictions[predictions["site"] == site]
    nb, all_, _, _ = _naive(part["y"].to_numpy(float), expit(part["logit"].to_numpy()), np.ones(len(part)), t)
    return nb - all_


@pytest.mark.slow
def test_validate_run_judges_a_net_benefit_gate_end_to_end(tmp_path):
    gates = [
        {
            "name": "beats-treat-all",
            "metric": "net_benefit_vs_treat_all@0.2",
            "scope": "each_site",
            "min": 0,
            "on": "ci_low",
            "insufficient": "warn",
        }
    ]
    protocol = _protocol_copy(tmp_path, {"thresholds": [0.2]}, gates, n_bootstrap=200)
    doc = yaml.safe_load(protocol.read_text())
    doc["calibration"] = {"designs": ["held-out"], "methods": ["temperature"], "fit_on": ["cleveland"]}
    protocol.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = tmp_path / "bundle"
    result = run_cli("run", protocol, "--out", out, "--quiet", cwd=tmp_path)
    # VA's lower bound of NB − treat all at 0.2 is below 0 (the model barely differs from treating all
    # there): the gate fails and the run exits 1
    assert result.code == 1, result.text
    report = json.loads((out / "gates.json").read_text())
    rows = {r["site"]: r for r in report["rows"] if r["gate"] == "beats-treat-all"}
    metrics = json.loads((out / "metrics.json").read_text())
    predictions = pd.read_parquet(out / "predictions.parquet")
    for site in ("cleveland", "hungary", "va"):
        item = metrics["sites"][site]["decision"][0]
        assert item["threshold"] == 0.2
        diff = item["net_benefit_vs_treat_all"]
        assert diff["estimate"] == pytest.approx(_site_reference(predictions, site, 0.2), abs=1e-12)
        assert rows[site]["value"] == diff["ci_low"]
        assert rows[site]["verdict"] == ("pass" if diff["ci_low"] >= 0 else "fail")
    assert rows["va"]["verdict"] == "fail"
    assert rows["hungary"]["verdict"] == "pass"
    assert rows["switzerland"]["verdict"] == "warn" and "too little data" in rows["switzerland"]["reason"]
    curves = json.loads((out / "curves.json").read_text())
    assert set(curves["decision"]["blocks"]["sites"]) == {"cleveland", "hungary", "switzerland", "va"}
