"""Site x subgroup analysis and the per-site curves, checked against independent references
(scikit-learn, statsmodels) on the same bootstrap weights."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score, roc_curve

from validate.analysis.sites import binary_curves, cohort_summary, wilson_interval
from validate.analysis.subgroups import group_sort_key, paired_gaps, subgroup_analysis, worst_groups
from validate.metrics import MetricSettings, bootstrap_weights, percentile_interval
from validate.view import insufficient_cells


def synthetic(n_sites=(160, 140), seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for k, n in enumerate(n_sites):
        sex = rng.choice(["female", "male"], size=n, p=[0.4, 0.6])
        age = rng.integers(25, 85, size=n).astype(float)
        z = rng.normal(0, 1.5, size=n) + 0.4 * (sex == "male")
        y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
        logit = z * (1.0 if k == 0 else 0.7) + rng.normal(0, 0.6, size=n)
        for i in range(n):
            rows.append(
                {
                    "case_id": f"s{k}-{i}",
                    "site": f"site{k}",
                    "patient_id": f"s{k}-p{i // 2}",
                    "y": y[i],
                    "logit": logit[i],
                    "sex": sex[i],
                    "age": age[i],
                }
            )
    return pd.DataFrame(rows)


def test_group_sort_key_orders_bands_naturally():
    values = [">=65", "missing", "45-54", "<45", "55-64", "male & <45", "female & >=65", "female & <45"]
    assert sorted(values[:5], key=group_sort_key) == ["<45", "45-54", "55-64", ">=65", "missing"]
    assert sorted(values[5:], key=group_sort_key) == ["female & <45", "female & >=65", "male & <45"]


def test_wilson_interval_matches_statsmodels():
    from statsmodels.stats.proportion import proportion_confint

    k = np.array([0, 3, 10, 25, 40])
    n = np.array([10, 12, 40, 25, 90])
    lo, hi = wilson_interval(k, n, 0.9)
    ref_lo, ref_hi = proportion_confint(k, n, alpha=0.1, method="wilson")
    np.testing.assert_allclose(lo, ref_lo, atol=1e-12)
    np.testing.assert_allclose(hi, ref_hi, atol=1e-12)


def test_roc_points_match_sklearn_and_reliability_counts():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300).astype(float)
    p = np.clip(rng.beta(2, 2, 300) * 0.6 + 0.4 * y * rng.random(300), 0, 1).round(3)  # with ties
    c = binary_curves(y, p, bins=10, n_rep=60, seed=3)
    fpr, tpr, thr = roc_curve(y, p, drop_intermediate=False)
    np.testing.assert_allclose(c["roc"]["fpr"], fpr, atol=1e-12)
    np.testing.assert_allclose(c["roc"]["tpr"], tpr, atol=1e-12)
    np.testing.assert_allclose(c["roc"]["threshold"][1:], thr[1:], atol=1e-12)
    rel = c["reliability"]
    assert sum(rel["count"]) == 300 and sum(rel["events"]) == int(y.sum())
    band = c["roc"]["band"]
    assert len(band["fpr"]) == 101 and band["replicates"] == 60
    assert all(lo <= hi for lo, hi in zip(band["tpr_low"], band["tpr_high"], strict=True))


def test_paired_gaps_equal_sklearn_on_the_same_replicates():
    df = synthetic((220,))
    y, p = df["y"].to_numpy(float), 1 / (1 + np.exp(-df["logit"].to_numpy()))
    female = (df["sex"] == "female").to_numpy()
    settings = MetricSettings(n_bootstrap=40, seed=7, bins=10)
    clusters = df["patient_id"].to_numpy()
    gaps = paired_gaps(y, p, {"female": female}, settings=settings, metrics=("auroc", "brier"), clusters=clusters)
    g = gaps["female"]
    # point estimate: sklearn on the group minus sklearn on all cases
    assert g["auroc"]["estimate"] == pytest.approx(roc_auc_score(y[female], p[female]) - roc_auc_score(y, p), abs=1e-12)
    assert g["brier"]["estimate"] == pytest.approx(
        brier_score_loss(y[female], p[female]) - brier_score_loss(y, p), abs=1e-12
    )
    # interval: a plain loop of sklearn calls with the engine's replicate weights as sample weights
    W = bootstrap_weights(40, y.size, clusters=clusters, seed=7)
    diffs = []
    for w in W:
        wf = w * female
        if w[female & (y == 1)].sum() == 0 or w[female & (y == 0)].sum() == 0:
            continue
        diffs.append(roc_auc_score(y, p, sample_weight=wf) - roc_auc_score(y, p, sample_weight=w))
    lo, hi = percentile_interval(np.array(diffs), 0.95)
    assert (g["auroc"]["ci_low"], g["auroc"]["ci_high"]) == pytest.approx((lo, hi), abs=1e-10)
    assert g["auroc"]["reference"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_worst_groups_skip_insufficient_and_follow_direction():
    e = lambda v: {"estimate": v, "ci_low": v - 0.1, "ci_high": v + 0.1}  # noqa: E731
    blocks = {
        "a": {"n": 100, "auroc": e(0.80), "ece": e(0.05), "calibration_slope": e(1.3)},
        "b": {"n": 90, "auroc": e(0.75), "ece": e(0.09), "calibration_slope": e(0.8)},
        "c": {"n": 5, "insufficient": True, "auroc": e(0.5), "ece": e(0.3), "calibration_slope": e(3.0)},
    }
    w = worst_groups(blocks, metrics=("auroc", "ece", "calibration_slope"))
    assert w["auroc"]["group"] == "b" and w["ece"]["group"] == "b"
    assert w["calibration_slope"]["group"] == "a"  # |1.3 - 1| > |0.8 - 1|
    assert w["auroc"]["excluded_insufficient"] == ["c"]


def test_subgroup_analysis_blocks_gaps_and_small_groups():
    df = synthetic((150, 60))
    groups = pd.DataFrame({"sex": df["sex"], "age_band": np.where(df["age"] < 35, "<35", ">=35")})
    settings = MetricSettings(n_bootstrap=30, seed=0, bins=10)
    out = subgroup_analysis(df, groups, task="binary", settings=settings, sites=["site0", "site1"])
    assert out["groups"]["age_band"] == ["<35", ">=35"]
    for level in (out["sites"]["site0"], out["sites"]["site1"], out["overall"]):
        cells = level["subgroups"]["sex"]
        assert set(cells) == {"female", "male"}
        for cell in cells.values():
            blk = cell["block"]
            # the gap's point estimate is the difference of the engine's AUROC estimates
            ref = cell["gap"]["auroc"]["reference"]
            assert cell["gap"]["auroc"]["estimate"] == pytest.approx(blk["auroc"]["estimate"] - ref, abs=1e-9)
    small = out["sites"]["site1"]["subgroups"]["age_band"]["<35"]["block"]
    assert small["insufficient"] is True and small["n"] > 0  # kept and marked, not hidden
    cells = insufficient_cells(out)
    assert any(c["site"] == "site1" and c["group"] == "<35" for c in cells)
    assert "auroc" in out["sites"]["site0"]["worst"]["sex"]
    # deterministic: the same inputs give the same JSON
    from validate.io import to_json_text

    again = subgroup_analysis(df, groups, task="binary", settings=settings, sites=["site0", "site1"])
    assert to_json_text(out) == to_json_text(again)


def test_cohort_summary_counts_and_exclusions():
    from types import SimpleNamespace

    df = synthetic((50, 40))
    groups = pd.DataFrame({"sex": df["sex"]})
    site = lambda i, role: SimpleNamespace(id=f"site{i}", display_name=f"Site {i}", role=role)  # noqa: E731
    protocol = SimpleNamespace(
        task="binary",
        subgroups=[SimpleNamespace(name="sex", intersection=None)],
        sites=[site(0, "development"), site(1, "external")],
    )
    failures = pd.DataFrame(
        {
            "site": ["site1", "site1", "site1"],
            "case_id": ["MRN-778812", "MRN-778813", "MRN-778814"],
            "reason": ["corrupt or truncated image: OSError: bad", "image file not found", "image file not found"],
            "stage": ["read"] * 3,
        }
    )
    out = cohort_summary(df, protocol, groups, failures)
    s1 = out["sites"]["site1"]
    assert s1["n"] == 40 and s1["n_excluded"] == 3
    assert s1["excluded"] == {"corrupt or truncated image": 1, "image file not found": 2}
    assert sum(s1["make_up"]["sex"].values()) == 40
    assert s1["prevalence"]["estimate"] == pytest.approx(df[df.site == "site1"]["y"].mean())
    assert "MRN-7788" not in str(out)  # exclusions are counted by reason, never listed by case
