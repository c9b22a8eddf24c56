"""Conformance against R: rms::val.prob, pROC (DeLong), glm Wald intervals, loess, HL and ECE by hand.

One Rscript call (tests/r/conformance.R) computes every reference for every data set; values must agree
to 1e-6 (intervals included).
"""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from validate.metrics import (
    brier,
    calibration_intercept,
    calibration_slope,
    delong_ci,
    delong_paired_test,
    ece,
    hosmer_lemeshow,
    ici,
    lowess_calibration,
    spiegelhalter_z,
)

from conftest import REPO, SHARED_DATA, requires_r

pytestmark = pytest.mark.r
TOL = dict(rel=1e-6, abs=1e-8)


def _datasets() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(20240601)
    out = {}
    # miscalibrated synthetic model
    n = 800
    p = rng.beta(2, 5, n)
    y = (rng.random(n) < np.clip(1.2 * p, 0, 1)).astype(int)
    out["synthetic"] = pd.DataFrame({"y": y, "p": p, "p2": np.clip(p + rng.normal(0, 0.1, n), 0.001, 0.999)})
    # many ties: probabilities reported to two decimals
    n = 500
    p = np.round(rng.uniform(0.02, 0.98, n), 2)
    y = (rng.random(n) < p**1.3).astype(int)
    out["ties"] = pd.DataFrame({"y": y, "p": p, "p2": np.round(np.clip(p + rng.normal(0, 0.15, n), 0.01, 0.99), 2)})
    # real classifier outputs (WideResNet on CIFAR-10, netcal examples): "cat" against the rest, a sample
    # of 1500 images; probabilities kept inside [1e-7, 1 - 1e-7] so that R's qlogis stays finite
    path = SHARED_DATA / "calibration" / "wideresnet-16-4-cifar-10.npz"
    if path.exists():
        d = np.load(path)
        P = d["predictions"].astype(np.float64)
        lab = d["ground_truth"].reshape(-1)
        idx = rng.choice(P.shape[0], 1500, replace=False)
        out["cifar_cat"] = pd.DataFrame(
            {
                "y": (lab[idx] == 3).astype(int),
                "p": np.clip(P[idx, 3], 1e-7, 1 - 1e-7),
                "p2": np.clip(P[idx, 5], 1e-7, 1 - 1e-7),
            }
        )
    return out


@pytest.fixture(scope="module")
def r_results(tmp_path_factory):
    if shutil.which("Rscript") is None:
        pytest.skip("Rscript not installed")
    tmp = tmp_path_factory.mktemp("r")
    data = _datasets()
    args = []
    for name, df in data.items():
        f = tmp / f"{name}.csv"
        df.to_csv(f, index=False, float_format="%.17g")
        args.append(f"{name}={f}")
    proc = subprocess.run(
        ["Rscript", str(REPO / "tests" / "r" / "conformance.R"), *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    ref = json.loads(proc.stdout)
    # the data as R read it back (the CSV round trip is exact with 17 digits)
    return {name: (pd.read_csv(tmp / f"{name}.csv"), ref[name]) for name in data}


NAMES = ["synthetic", "ties", "cifar_cat"]


def _get(r_results, name):
    if name not in r_results:
        pytest.skip(f"data set {name} unavailable")
    df, ref = r_results[name]
    return df.y.to_numpy(), df.p.to_numpy(), df.p2.to_numpy(), ref


@requires_r
@pytest.mark.parametrize("name", NAMES)
def test_delong_matches_proc(r_results, name):
    y, p, p2, ref = _get(r_results, name)
    for level, key in ((0.95, "delong"), (0.90, "delong90")):
        ours = delong_ci(y, p, level=level)
        for k in ("estimate", "ci_low", "ci_high"):
            assert ours[k] == pytest.approx(ref[key][k], **TOL), (key, k)


@requires_r
@pytest.mark.parametrize("name", NAMES)
def test_paired_delong_matches_proc_roc_test(r_results, name):
    y, p, p2, ref = _get(r_results, name)
    ours = delong_paired_test(y, p, p2)
    t = ref["roc_test"]
    assert ours["statistic"] == pytest.approx(t["statistic"], **TOL)
    assert ours["p_value"] == pytest.approx(t["p_value"], **TOL)
    assert ours["auc1"] == pytest.approx(t["auc1"], **TOL)
    assert ours["auc2"] == pytest.approx(t["auc2"], **TOL)
    if t["ci_low"] is not None:
        assert ours["ci_low"] == pytest.approx(t["ci_low"], **TOL)
        assert ours["ci_high"] == pytest.approx(t["ci_high"], **TOL)


@requires_r
@pytest.mark.parametrize("name", NAMES)
def test_lowess_errors_match_rms_val_prob(r_results, name):
    y, p, _, ref = _get(r_results, name)
    ours = lowess_calibration(y, p)
    vp = ref["val_prob"]
    assert ours["eavg"] == pytest.approx(vp["Eavg"], **TOL)
    assert ours["e90"] == pytest.approx(vp["E90"], **TOL)
    assert ours["emax"] == pytest.approx(vp["Emax"], **TOL)
    assert ours["e50"] == pytest.approx(ref["e50"], **TOL)


@requires_r
@pytest.mark.parametrize("name", NAMES)
def test_slope_intercept_match_r(r_results, name):
    y, p, _, ref = _get(r_results, name)
    s = calibration_slope(y, p)
    assert s["estimate"] == pytest.approx(ref["val_prob"]["Slope"], **TOL)
    assert s["estimate"] == pytest.approx(ref["slope"]["estimate"], **TOL)
    assert s["intercept"] == pytest.approx(ref["slope"]["intercept"], **TOL)
    assert s["ci_low"] == pytest.approx(ref["slope"]["ci_low"], **TOL)
    assert s["ci_high"] == pytest.approx(ref["slope"]["ci_high"], **TOL)
    i = calibration_intercept(y, p)
    for k in ("estimate", "ci_low", "ci_high", "se"):
        assert i[k] == pytest.approx(ref["intercept"][k], **TOL), k


@requires_r
@pytest.mark.parametrize("name", NAMES)
def test_spiegelhalter_brier_match_rms(r_results, name):
    y, p, _, ref = _get(r_results, name)
    z = spiegelhalter_z(y, p)
    assert z["statistic"] == pytest.approx(ref["val_prob"]["S:z"], **TOL)
    assert z["p_value"] == pytest.approx(ref["val_prob"]["S:p"], **TOL)
    assert brier(y, p) == pytest.approx(ref["val_prob"]["Brier"], **TOL)


@requires_r
@pytest.mark.parametrize("name", NAMES)
def test_hosmer_lemeshow_matches_r(r_results, name):
    y, p, _, ref = _get(r_results, name)
    hl = hosmer_lemeshow(y, p)
    assert hl["df"] == ref["hosmer_lemeshow"]["df"]
    assert hl["statistic"] == pytest.approx(ref["hosmer_lemeshow"]["statistic"], **TOL)
    assert hl["p_value"] == pytest.approx(ref["hosmer_lemeshow"]["p_value"], **TOL)


@requires_r
@pytest.mark.parametrize("name", NAMES)
def test_ici_matches_r_loess(r_results, name):
    y, p, _, ref = _get(r_results, name)
    assert ici(y, p) == pytest.approx(ref["ici"], **TOL)


@requires_r
@pytest.mark.parametrize("name", NAMES)
def test_ece_matches_r_by_hand(r_results, name):
    y, p, _, ref = _get(r_results, name)
    assert ece(y, p) == pytest.approx(ref["ece"], **TOL)


# ---- paired comparison (validate.analysis.comparison) on the heart sites ---------------------------------


@pytest.fixture(scope="module")
def heart_roc_tests(tmp_path_factory):
    """pROC::roc.test(paired = TRUE, method = "delong") of the shipped heart model against a second
    model (tests/test_comparison.py: a six-feature logistic regression fitted on Cleveland) on each
    heart site and pooled, on the logits both models give, and validate's comparison of the same pair."""
    if shutil.which("Rscript") is None:
        pytest.skip("Rscript not installed")
    from test_comparison import HEART_SITES, heart_comparison, heart_pair

    new, base = heart_pair()
    tmp = tmp_path_factory.mktemp("roc_test")
    args = []
    for name in (*HEART_SITES, "pooled"):
        mask = np.ones(len(new), dtype=bool) if name == "pooled" else new.site_ids == name
        f = tmp / f"{name}.csv"
        pd.DataFrame({"y": new.y()[mask].astype(int), "s1": new.logit()[mask], "s2": base.logit()[mask]}).to_csv(
            f, index=False, float_format="%.17g"
        )
        args.append(f"{name}={f}")
    proc = subprocess.run(
        ["Rscript", str(REPO / "tests" / "r" / "roc_test.R"), *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), heart_comparison()


@requires_r
@pytest.mark.parametrize("name", ["cleveland", "hungary", "switzerland", "va", "pooled"])
def test_paired_auroc_delta_matches_proc_roc_test_on_heart_sites(heart_roc_tests, name):
    ref, out = heart_roc_tests
    r = ref[name]
    e = (out["overall"] if name == "pooled" else out["sites"][name])["metrics"]["auroc"]
    assert e["method"] == "delong_paired"
    assert e["new"] == pytest.approx(r["auc1"], **TOL)
    assert e["baseline"] == pytest.approx(r["auc2"], **TOL)
    assert e["delta"] == pytest.approx(r["auc1"] - r["auc2"], **TOL)
    assert e["p_value"] == pytest.approx(r["p_value"], **TOL)
    assert e["ci_low"] == pytest.approx(r["ci_low"], **TOL)
    assert e["ci_high"] == pytest.approx(r["ci_high"], **TOL)
