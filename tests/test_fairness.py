"""Group fairness measures (validate/analysis/fairness.py) against independent references.

- point estimates against fairlearn 0.15 (``fairlearn.metrics``: ``MetricFrame`` with
  ``true_positive_rate``/``false_positive_rate``/``selection_rate``/``precision_score``, and
  ``equalized_odds_difference``/``_ratio``, ``demographic_parity_difference``/``_ratio``) to 1e-12;
- bootstrap intervals against a naive loop: each replicate's cases written out (np.repeat of the
  shared replicate weights), the rates counted group by group in plain Python, and the calibration
  fits by statsmodels on the written-out sample;
- the weighted Newton fits at unit weights against validate's own R-checked Wald fits.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from validate.analysis import fairness as F
from validate.errors import InputError
from validate.metrics import MetricSettings
from validate.predictions import table_from_frame

THRESHOLDS = (0.3, 0.5, 0.65)


def _cases(seed: int = 3, n: int = 700) -> pd.DataFrame:
    """Two sites, two attributes and their intersection; patients with up to three cases (clusters)."""
    rng = np.random.default_rng(seed)
    sex = rng.choice(["female", "male"], n, p=[0.4, 0.6])
    band = rng.choice(["<50", "50-69", ">=70"], n, p=[0.3, 0.45, 0.25])
    z = rng.normal(-0.1, 1.4, n) + 0.4 * (sex == "male") - 0.3 * (band == ">=70")
    y = (rng.random(n) < 1 / (1 + np.exp(-(0.8 * z + 0.25 * (band == "<50"))))).astype(int)
    patient = [f"P{i // 3 if i % 7 else i}" for i in range(n)]
    return pd.DataFrame(
        {
            "case_id": [f"C{i}" for i in range(n)],
            "patient_id": patient,
            "site": np.where(np.arange(n) < 420, "a", "b"),
            "y": y,
            "logit": z,
            "sex": sex,
            "band": band,
        }
    )


def _groups(frame: pd.DataFrame) -> pd.DataFrame:
    g = frame[["sex", "band"]].astype(str).copy()
    g["sex_x_band"] = g["sex"] + " & " + g["band"]
    return g


def _run(frame, n_bootstrap=0, reference=None, **kw):
    table = table_from_frame(frame, task="binary")
    settings = MetricSettings(n_bootstrap=n_bootstrap, thresholds=THRESHOLDS, seed=11, **kw)
    return F.fairness_analysis(
        table, _groups(frame), settings=settings, metrics={}, sites=["a", "b"], reference=reference
    )


def _p(frame):
    return 1.0 / (1.0 + np.exp(-frame["logit"].to_numpy(dtype=float)))


@pytest.mark.parametrize("level", ["overall", "a", "b"])
def test_point_estimates_equal_fairlearn(level):
    from fairlearn.metrics import (
        MetricFrame,
        demographic_parity_difference,
        demographic_parity_ratio,
        equalized_odds_difference,
        equalized_odds_ratio,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )
    from sklearn.metrics import precision_score

    frame = _cases()
    out = _run(frame, min_cases=5, min_events=2)
    part = frame if level == "overall" else frame[frame["site"] == level]
    block = out["overall"] if level == "overall" else out["sites"][level]
    checked = 0
    for attr, col in _groups(part).items():
        att = block["attributes"][attr]
        assert att["excluded_insufficient"] == []  # every group judged, as fairlearn judges them all
        for t, thr in zip(THRESHOLDS, att["thresholds"], strict=True):
            assert thr["threshold"] == t
            y, yp = part["y"].to_numpy(), (_p(part) >= t).astype(int)
            ref = {
                "equalized_odds_difference": equalized_odds_difference(y, yp, sensitive_features=col),
                "equalized_odds_ratio": equalized_odds_ratio(y, yp, sensitive_features=col),
                "demographic_parity_difference": demographic_parity_difference(y, yp, sensitive_features=col),
                "demographic_parity_ratio": demographic_parity_ratio(y, yp, sensitive_features=col),
            }
            for name, value in ref.items():
                assert thr["summary"][name]["estimate"] == pytest.approx(value, abs=1e-12), (attr, t, name)
            mf = MetricFrame(
                metrics={
                    "tpr": true_positive_rate,
                    "fpr": false_positive_rate,
                    "selection_rate": selection_rate,
                    "ppv": lambda a, b: precision_score(a, b, zero_division=np.nan),
                },
                y_true=y,
                y_pred=yp,
                sensitive_features=col,
            )
            by = mf.by_group
            for g in by.index:
                for rate in F.RATES:
                    assert thr["groups"][g][rate]["estimate"] == pytest.approx(by.loc[g, rate], abs=1e-12)
            assert thr["summary"]["tpr_difference"]["estimate"] == pytest.approx(
                by["tpr"].max() - by["tpr"].min(), abs=1e-12
            )
            checked += 1
    assert checked == 3 * len(THRESHOLDS)


def test_gaps_and_ratios_to_the_reference_group():
    frame = _cases()
    out = _run(frame, reference={"band": ">=70"})
    att = out["overall"]["attributes"]["band"]
    assert att["reference"] == ">=70" and out["references"]["band"]["rule"].startswith("protocol")
    # default reference: the largest group pooled over sites
    counts = frame["sex"].value_counts()
    assert out["overall"]["attributes"]["sex"]["reference"] == counts.idxmax()
    thr = att["thresholds"][1]
    y, sel, band = frame["y"].to_numpy(), _p(frame) >= 0.5, frame["band"].to_numpy()

    def tpr(g):
        m = (band == g) & (y == 1)
        return sel[m].sum() / m.sum()

    for g in ("<50", "50-69", ">=70"):
        assert thr["groups"][g]["tpr_gap"]["estimate"] == pytest.approx(tpr(g) - tpr(">=70"), abs=1e-12)
        assert thr["groups"][g]["tpr_ratio"]["estimate"] == pytest.approx(tpr(g) / tpr(">=70"), abs=1e-12)


def test_unknown_reference_group_is_refused():
    with pytest.raises(InputError) as err:
        _run(_cases(), reference={"sex": "other"})
    assert err.value.field == "fairness.reference.sex"


def _naive_rates(y, sel, col, groups):
    """Per group (TPR, FPR, PPV, selection rate) by counting, NaN where a denominator is 0."""
    out = {}
    for g in groups:
        tp = fp = pos = neg = 0
        for yi, si, ci in zip(y, sel, col, strict=True):
            if ci != g:
                continue
            pos += yi
            neg += 1 - yi
            tp += yi and si
            fp += (1 - yi) and si
        div = lambda a, b: a / b if b else float("nan")  # noqa: E731
        out[g] = (div(tp, pos), div(fp, neg), div(tp, tp + fp), div(tp + fp, pos + neg))
    return out


def _naive_spread_interval(per_rep, groups, transform=lambda x: x):
    """Per pair of groups: the type-7 percentile interval of the signed difference of the (transformed)
    values over the replicates where both are finite, as an interval of |d| (0 when it covers 0, else
    the nearer bound, up to the farther); the spread's bounds are the largest over pairs."""
    lows, highs = [], []
    for i, gi in enumerate(groups):
        for gj in groups[i + 1 :]:
            d = [transform(r[gi]) - transform(r[gj]) for r in per_rep]
            d = np.array([x for x in d if np.isfinite(x)])
            lo, hi = np.quantile(d, [0.025, 0.975])
            lows.append(0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi)))
            highs.append(max(abs(lo), abs(hi)))
    return max(lows), max(highs)


@pytest.mark.parametrize("level", ["overall", "a"])
def test_intervals_equal_a_naive_bootstrap_loop(level):
    """Same replicate weights (patient clusters; pooled: stratified by site), cases written out one by
    one, rates counted in a loop; each pair of groups' signed difference gets its percentile interval,
    read as an interval of the absolute difference; the spread's bounds are the largest over pairs."""
    from validate.metrics import bootstrap_weights
    from validate.predictions import cluster_keys

    frame = _cases(seed=5, n=360)
    n_boot = 60
    out = _run(frame, n_bootstrap=n_boot)
    part = frame if level == "overall" else frame[frame["site"] == level].reset_index(drop=True)
    w = bootstrap_weights(
        n_boot,
        len(part),
        clusters=cluster_keys(part, "patient_id"),
        strata=part["site"].to_numpy().astype(str) if level == "overall" else None,
        seed=11,
    )
    y, sel, col = part["y"].to_numpy(), (_p(part) >= 0.5).astype(int), part["band"].to_numpy()
    groups = sorted(set(col), key=F.group_sort_key)
    per_rep = []
    for r in range(n_boot):
        idx = np.repeat(np.arange(len(part)), w[r].astype(int))
        per_rep.append(_naive_rates(y[idx], sel[idx], col[idx], groups))
    tpr = [{g: r[g][0] for g in groups} for r in per_rep]
    fpr = [{g: r[g][1] for g in groups} for r in per_rep]
    sr = [{g: r[g][3] for g in groups} for r in per_rep]
    t_lo, t_hi = _naive_spread_interval(tpr, groups)
    f_lo, f_hi = _naive_spread_interval(fpr, groups)
    s_lo, s_hi = _naive_spread_interval(sr, groups, np.log)
    block = (out["overall"] if level == "overall" else out["sites"][level])["attributes"]["band"]
    summary = block["thresholds"][1]["summary"]
    expected = {
        "equalized_odds_difference": (max(t_lo, f_lo), max(t_hi, f_hi)),
        "tpr_difference": (t_lo, t_hi),
        "demographic_parity_ratio": (np.exp(-s_hi), np.exp(-s_lo)),
    }
    for k, (lo, hi) in expected.items():
        assert summary[k]["ci_low"] == pytest.approx(lo, abs=1e-12), k
        assert summary[k]["ci_high"] == pytest.approx(hi, abs=1e-12), k
        assert summary[k]["ci_low"] <= summary[k]["estimate"] <= summary[k]["ci_high"]


def test_every_summary_interval_holds_its_estimate():
    """The percentile interval of max − min over replicates leans upward and, with groups alike,
    excludes its own estimate (the synthetic run's site dev: demographic-parity difference 0.001 with
    interval 0.002 to 0.117); the pairwise intervals hold it."""
    from test_run_helpers import synthetic_predictions

    frame = synthetic_predictions()
    table = table_from_frame(frame, task="binary")
    groups = frame[["sex"]].astype(str)
    settings = MetricSettings(n_bootstrap=200, thresholds=(0.5, 0.35))
    out = F.fairness_analysis(table, groups, settings=settings, metrics={}, sites=["dev", "ext_flat", "ext_small"])
    checked = 0
    for level in [out["overall"], *out["sites"].values()]:
        for att in level["attributes"].values():
            entries = [e for t in att["thresholds"] for e in t["summary"].values()]
            entries += list(att["calibration"]["summary"].values())
            for e in entries:
                if e["ci_low"] is not None:
                    assert e["ci_low"] - 1e-12 <= e["estimate"] <= e["ci_high"] + 1e-12, e
                    checked += 1
    assert checked > 30


def test_calibration_ranges_equal_statsmodels_on_written_out_replicates():
    import statsmodels.api as sm

    from validate.metrics import bootstrap_weights

    frame = _cases(seed=8, n=300)
    part = frame[frame["site"] == "a"].reset_index(drop=True)
    n_boot = 20
    out = _run(frame, n_bootstrap=n_boot, cluster_by=None)
    cal = out["sites"]["a"]["attributes"]["sex"]["calibration"]
    w = bootstrap_weights(n_boot, len(part), seed=11)
    y, z, col = part["y"].to_numpy(), part["logit"].to_numpy(), part["sex"].to_numpy()

    def fits(idx):
        alpha, beta = [], []
        for g in ("female", "male"):
            m = idx[col[idx] == g]
            alpha.append(sm.GLM(y[m], np.ones((m.size, 1)), family=sm.families.Binomial(), offset=z[m]).fit().params[0])
            beta.append(sm.Logit(y[m], sm.add_constant(z[m])).fit(disp=0).params[1])
        return alpha[0] - alpha[1], beta[0] - beta[1]

    point = fits(np.arange(len(part)))
    assert cal["summary"]["calibration_in_the_large_range"]["estimate"] == pytest.approx(abs(point[0]), abs=1e-9)
    assert cal["summary"]["calibration_slope_range"]["estimate"] == pytest.approx(abs(point[1]), abs=1e-9)
    reps = np.array([fits(np.repeat(np.arange(len(part)), w[r].astype(int))) for r in range(n_boot)])
    for j, name in enumerate(("calibration_in_the_large_range", "calibration_slope_range")):
        lo, hi = np.quantile(reps[:, j], [0.025, 0.975])  # two groups: the signed difference female − male
        lower = 0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi))
        assert cal["summary"][name]["ci_low"] == pytest.approx(lower, abs=1e-8)
        assert cal["summary"][name]["ci_high"] == pytest.approx(max(abs(lo), abs(hi)), abs=1e-8)


def test_weighted_fits_at_unit_weights_equal_the_wald_fits():
    from validate.metrics.calibration import calibration_intercept, calibration_slope

    frame = _cases(seed=9, n=250)
    y, z = frame["y"].to_numpy(dtype=float), frame["logit"].to_numpy()
    ones = np.ones((1, y.size))
    assert F.weighted_intercepts(y, z, ones)[0] == pytest.approx(
        calibration_intercept(y, logits=z)["estimate"], abs=1e-10
    )
    assert F.weighted_slopes(y, z, ones)[0] == pytest.approx(calibration_slope(y, logits=z)["estimate"], abs=1e-10)
    # one class: no finite maximum
    assert np.isnan(F.weighted_intercepts(np.zeros(5), z[:5], np.ones((1, 5)))[0])
    assert np.isnan(F.weighted_slopes(np.ones(5), z[:5], np.ones((1, 5)))[0])


def test_small_groups_are_shown_marked_and_left_out_of_the_summaries():
    frame = _cases()
    out = _run(frame, n_bootstrap=20, min_cases=50)  # site b: intersection groups of about 30 to 75 cases
    site = out["sites"]["b"]["attributes"]["sex_x_band"]
    small = [g for g, info in site["groups"].items() if info["insufficient"]]
    assert small and site["excluded_insufficient"] == sorted(small, key=F.group_sort_key)
    assert all("reason" in site["groups"][g] for g in small)
    assert not set(small) & set(site["included"])
    thr = site["thresholds"][1]
    assert set(thr["groups"]) == set(site["groups"])  # small groups keep their rates, visible
    judged = [thr["groups"][g]["selection_rate"]["estimate"] for g in site["included"]]
    assert thr["summary"]["demographic_parity_difference"]["estimate"] == pytest.approx(max(judged) - min(judged))


def test_fewer_than_two_judged_groups_give_no_summary():
    """A spread over one group is 0 by construction: it must be null with a reason, never a 0 that a
    `max` gate would pass."""
    frame = _cases(n=120)
    out = _run(frame, min_cases=60)  # 120 cases, all at site a: one sex reaches 60 cases, the other not
    att = out["sites"]["a"]["attributes"]["sex"]
    assert len(att["excluded_insufficient"]) == 1 and att["included"] == []
    for thr in att["thresholds"]:
        assert thr["summary"]["equalized_odds_difference"]["estimate"] is None
        assert "at least two" in thr["undefined"]["equalized_odds_difference"]
    assert att["calibration"]["summary"]["calibration_slope_range"]["estimate"] is None


def test_non_binary_tasks_and_no_subgroups_give_no_file():
    frame = _cases(n=60)
    table = table_from_frame(frame, task="binary")
    assert F.fairness_analysis(table, None, settings=MetricSettings(), metrics={}, sites=["a"]) is None


# ---- gates: scope each_attribute --------------------------------------------------------------------


def _entry(est, lo, hi):
    return {"estimate": est, "ci_low": lo, "ci_high": hi, "method": "bootstrap"}


def _fairness_json(eod_sex, eod_age, small_age=(), undefined_age=None):
    """A fairness.json shaped as the engine writes it (one threshold; calibration summary)."""

    def attr(eod, small, undefined):
        return {
            "reference": None,
            "groups": {},
            "included": [],
            "excluded_insufficient": list(small),
            "thresholds": [
                {
                    "threshold": 0.5,
                    "kind": "protocol",
                    "carried": False,
                    "groups": {},
                    "summary": {"equalized_odds_difference": eod},
                    "undefined": undefined or {},
                }
            ],
            "calibration": {"groups": {}, "summary": {"calibration_slope_range": _entry(0.2, 0.05, 0.4)}},
        }

    return {
        "attributes": ["sex", "age"],
        "overall": {
            "n": 500,
            "n_events": 200,
            "attributes": {"sex": attr(eod_sex, (), None), "age": attr(eod_age, small_age, undefined_age)},
        },
        "sites": {},
    }


def _judge(gates, fairness):
    from validate.gates import judge_gates

    return judge_gates(gates, {"overall": {"n": 500}, "sites": {}}, fairness=fairness, sites=[])


EOD_GATE = {
    "name": "eod",
    "metric": "equalized_odds_difference",
    "scope": "each_attribute",
    "max": 0.1,
    "on": "ci_high",
}


def test_each_attribute_gate_judges_every_attribute_on_its_bound():
    fairness = _fairness_json(_entry(0.03, 0.01, 0.08), _entry(0.05, 0.02, 0.14))
    report = _judge([EOD_GATE], fairness)
    rows = {r.subgroup: r for r in report.rows}
    assert rows["sex"].verdict == "pass" and rows["sex"].value == 0.08
    assert rows["age"].verdict == "fail" and rows["age"].value == 0.14  # the estimate alone would pass
    assert report.exit_code == 1
    one = _judge([{**EOD_GATE, "scope": "each_attribute:sex"}], fairness)
    assert [r.subgroup for r in one.rows] == ["sex"] and one.exit_code == 0
    cal = _judge([{**EOD_GATE, "metric": "calibration_slope_range"}], fairness)
    assert [(r.subgroup, r.verdict) for r in cal.rows] == [("sex", "fail"), ("age", "fail")]  # ci_high 0.4 > 0.1


def test_each_attribute_gate_with_small_groups_or_no_summary_takes_the_insufficient_policy():
    small = _fairness_json(_entry(0.03, 0.01, 0.08), _entry(0.03, 0.01, 0.08), small_age=["<30"])
    rows = {r.subgroup: r for r in _judge([{**EOD_GATE, "insufficient": "fail"}], small).rows}
    assert rows["sex"].verdict == "pass"
    assert rows["age"].verdict == "fail" and "<30" in rows["age"].reason  # not a clean PASS
    null = _fairness_json(
        _entry(0.03, 0.01, 0.08),
        _entry(None, None, None),
        undefined_age={
            "equalized_odds_difference": "1 group(s) with enough data: a spread over groups needs at least two"
        },
    )
    rows = {r.subgroup: r for r in _judge([{**EOD_GATE, "insufficient": "warn"}], null).rows}
    assert rows["age"].verdict == "warn" and "at least two" in rows["age"].reason


def test_each_attribute_gate_refused_without_fairness_or_with_an_unknown_measure():
    fairness = _fairness_json(_entry(0.03, 0.01, 0.08), _entry(0.05, 0.02, 0.14))
    with pytest.raises(InputError, match="fairness.json"):
        _judge([EOD_GATE], None)
    with pytest.raises(InputError, match="not a fairness measure"):
        _judge([{**EOD_GATE, "metric": "auroc"}], fairness)
    with pytest.raises(InputError, match="not in fairness.json"):
        _judge([{**EOD_GATE, "scope": "each_attribute:race"}], fairness)


def test_preflight_refuses_a_fairness_gate_before_scoring(tmp_path):
    from validate.errors import InputErrors
    from validate.preflight import check_protocol_gates
    from validate.protocol import load_protocol

    from test_run_helpers import make_protocol

    good = "gates:\n  - {metric: equalized_odds_difference, scope: each_attribute, max: 0.1, on: ci_high}\n"
    check_protocol_gates(load_protocol(make_protocol(tmp_path, gates=good)))
    bad = "gates:\n  - {metric: equalised_odds_difference, scope: each_attribute, max: 0.1}\n"
    with pytest.raises(InputErrors) as err:
        check_protocol_gates(load_protocol(make_protocol(tmp_path, name="bad.yaml", gates=bad)))
    assert "did you mean `equalized_odds_difference`" in str(err.value)
    ref = good + "fairness: {reference: {age_band: '40-49'}}\n"
    with pytest.raises(InputErrors, match="not a band of subgroup `age_band`"):
        check_protocol_gates(load_protocol(make_protocol(tmp_path, name="ref.yaml", gates=ref)))


def test_gates_judged_on_the_engine_output():
    """End to end from the engine's own fairness.json: every threshold of every attribute is a row."""
    out = _run(_cases(), n_bootstrap=20)
    report = _judge([{**EOD_GATE, "max": 1.0}], out)
    assert len(report.rows) == 3 * len(THRESHOLDS)
    assert {r.verdict for r in report.rows} == {"pass"}


def test_weighted_slope_converges_where_plain_newton_oscillates():
    """A flat calibration (true slope 0.25) on widely spread logits: Newton–Raphson from (0, 1) without
    step halving jumps between slopes of about ±2 and never converges; statsmodels is the reference."""
    import statsmodels.api as sm

    rng = np.random.default_rng(4)
    z = rng.normal(0.0, 4.0, 200)
    y = (rng.random(200) < 1 / (1 + np.exp(-0.25 * z))).astype(float)
    ref = sm.Logit(y, sm.add_constant(z)).fit(disp=0).params[1]
    assert F.weighted_slopes(y, z, np.ones((1, 200)))[0] == pytest.approx(ref, abs=1e-9)


def test_net_benefit_per_group_by_hand_and_naive_loop():
    """NB = TP/n − FP/n · t/(1−t), treat all = π − (1 − π) · t/(1−t) at each group's own prevalence
    (Vickers & Elkin 2006), counted case by case; interval: percentile of the written-out replicates."""
    from validate.metrics import bootstrap_weights

    frame = _cases(seed=6, n=300)
    part = frame[frame["site"] == "a"].reset_index(drop=True)
    table = table_from_frame(frame, task="binary")
    settings = MetricSettings(n_bootstrap=40, seed=11, cluster_by=None, decision_thresholds=(0.2, 0.4))
    out = F.fairness_analysis(table, _groups(frame), settings=settings, metrics={}, sites=["a", "b"])
    decision = out["sites"]["a"]["attributes"]["sex"]["decision"]
    assert [d["threshold"] for d in decision] == [0.2, 0.4]
    y, p, sex = part["y"].to_numpy(), _p(part), part["sex"].to_numpy()
    w = bootstrap_weights(40, len(part), seed=11)

    def nb(idx, g, t):
        tp = fp = n = ev = 0
        for i in idx:
            if sex[i] != g:
                continue
            n += 1
            ev += y[i]
            tp += y[i] and p[i] >= t
            fp += (not y[i]) and p[i] >= t
        odds = t / (1 - t)
        return tp / n - fp / n * odds, ev / n - (1 - ev / n) * odds

    for d in decision:
        t = d["threshold"]
        for g in ("female", "male"):
            model, everyone = nb(range(len(part)), g, t)
            cell = d["groups"][g]
            assert cell["net_benefit"]["estimate"] == pytest.approx(model, abs=1e-12)
            assert cell["net_benefit_treat_all"]["estimate"] == pytest.approx(everyone, abs=1e-12)
            assert cell["net_benefit_vs_treat_all"]["estimate"] == pytest.approx(model - everyone, abs=1e-12)
            reps = [nb(np.repeat(np.arange(len(part)), w[r].astype(int)), g, t)[0] for r in range(40)]
            lo, hi = np.quantile(reps, [0.025, 0.975])
            assert cell["net_benefit"]["ci_low"] == pytest.approx(lo, abs=1e-12)
            assert cell["net_benefit"]["ci_high"] == pytest.approx(hi, abs=1e-12)
        f, m = d["groups"]["female"]["net_benefit"]["estimate"], d["groups"]["male"]["net_benefit"]["estimate"]
        assert d["summary"]["net_benefit_difference"]["estimate"] == pytest.approx(abs(f - m), abs=1e-12)
    # without decision thresholds: no decision key (fairness.json unchanged)
    assert "decision" not in _run(frame)["overall"]["attributes"]["sex"]
