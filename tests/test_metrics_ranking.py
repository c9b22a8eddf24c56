"""Ranking metrics rank the logits, never sigmoid(logit): above ~36.7 every logit is p = 1.0 in float64.

References: scikit-learn's roc_auc_score / average_precision_score on the logits themselves, and R's
pROC (auc, ci.auc DeLong) when Rscript is installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from validate.metrics import MetricSettings, metrics_report
from validate.predictions import read_predictions, table_from_frame

SETTINGS = MetricSettings(n_bootstrap=40, seed=1)


def _saturated(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """Two sites; most logits above 40, where sigmoid returns exactly 1.0, labels depending on them."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(30, 70, n)
    y = (rng.random(n) < (z - 25) / 50).astype(int)
    return pd.DataFrame(
        {"case_id": [f"c{i}" for i in range(n)], "site": np.where(np.arange(n) % 2, "a", "b"), "y": y, "logit": z}
    )


def test_the_data_saturates_and_the_ranking_matters():
    df = _saturated()
    p = 1 / (1 + np.exp(-df.logit.to_numpy()))
    assert (p == 1.0).mean() > 0.5
    # the premise of every test here: ranking p is not ranking the logits
    assert abs(roc_auc_score(df.y, p) - roc_auc_score(df.y, df.logit)) > 1e-3


def test_metrics_report_ranks_logits():
    df = _saturated()
    m = metrics_report(table_from_frame(df), settings=SETTINGS, workers=1)
    o = m["overall"]
    assert o["auroc"]["estimate"] == pytest.approx(roc_auc_score(df.y, df.logit), abs=1e-12)
    assert o["auprc"]["estimate"] == pytest.approx(average_precision_score(df.y, df.logit), abs=1e-12)
    for s in ("a", "b"):
        part = df[df.site == s]
        assert m["sites"][s]["auroc"]["estimate"] == pytest.approx(roc_auc_score(part.y, part.logit), abs=1e-12)
        assert m["sites"][s]["auprc"]["estimate"] == pytest.approx(
            average_precision_score(part.y, part.logit), abs=1e-12
        )
    # the bootstrap interval of AUPRC surrounds the logit-ranked estimate, not the saturated one
    assert o["auprc"]["ci_low"] <= o["auprc"]["estimate"] <= o["auprc"]["ci_high"]


def test_auprc_bootstrap_replicates_rank_logits(monkeypatch):
    """The replicate values come from the same ranking: a replicate of all ones is the point estimate."""
    from validate.metrics import blocks

    df = _saturated(120, seed=3)
    y = df.y.to_numpy(float)
    z = df.logit.to_numpy()
    data = blocks._BinaryData(y, 1 / (1 + np.exp(-z)), 15, z)
    w = np.ones((1, y.size))
    assert data.replicate(w, [], False)["auprc"][0] == pytest.approx(average_precision_score(y, z), abs=1e-12)
    assert data.replicate(w, [], False, auroc=True)["auroc"][0] == pytest.approx(roc_auc_score(y, z), abs=1e-12)
    # one weighted replicate against sklearn's sample weights
    rng = np.random.default_rng(0)
    wr = rng.integers(0, 3, y.size).astype(float)
    got = data.replicate(wr[data.order][None, :], [], False)["auprc"][0]
    assert got == pytest.approx(average_precision_score(y, z, sample_weight=wr), abs=1e-12)


def test_cli_metrics_on_a_predictions_file_ranks_logits(tmp_path):
    from validate.cli import main

    df = _saturated()
    f = tmp_path / "pred.csv"
    df.to_csv(f, index=False, float_format="%.17g")
    out = tmp_path / "m.json"
    assert main(["metrics", str(f), "--bootstrap", "20", "--json", str(out)]) == 0
    m = json.loads(out.read_text())
    assert m["overall"]["auroc"]["estimate"] == pytest.approx(roc_auc_score(df.y, df.logit), abs=1e-12)
    assert m["overall"]["auprc"]["estimate"] == pytest.approx(average_precision_score(df.y, df.logit), abs=1e-12)


def test_probabilities_given_are_ranked_as_given():
    """p without logits: p itself is ranked (its clipped logit would tie p = 1 − 1e-16 with p = 1)."""
    rng = np.random.default_rng(2)
    n = 200
    p = rng.uniform(0, 1, n)
    p[:60] = 1 - rng.uniform(0, 1e-15, 60)  # distinct below the clip to 1 − 1e-15
    y = (rng.random(n) < 0.5).astype(int)
    y[:60] = rng.integers(0, 2, 60)
    df = pd.DataFrame({"y": y, "p": p})
    m = metrics_report(table_from_frame(df), settings=SETTINGS, workers=1)
    assert m["overall"]["auroc"]["estimate"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_multiclass_one_vs_rest_ranks_logits():
    rng = np.random.default_rng(4)
    n = 300
    t = rng.uniform(30, 80, n)  # class c's logit; the others 0: p_c rounds to 1.0, log-odds t − log 2
    y = rng.integers(0, 3, n)
    Z = np.zeros((n, 3))
    Z[:, 2] = t
    y[(t > 55) & (rng.random(n) < 0.7)] = 2
    df = pd.DataFrame({"y": y, "logit_a": Z[:, 0], "logit_b": Z[:, 1], "logit_c": Z[:, 2]})
    m = metrics_report(table_from_frame(df, class_names=["a", "b", "c"]), settings=SETTINGS, workers=1)
    ref = roc_auc_score(y == 2, t)
    assert m["overall"]["classes"]["c"]["auroc"]["estimate"] == pytest.approx(ref, abs=1e-12)
    assert m["overall"]["classes"]["c"]["auprc"]["estimate"] == pytest.approx(
        average_precision_score(y == 2, t), abs=1e-12
    )
    # classes a and b: all their logits are 0, so their one-vs-rest log-odds are −log(1 + 1 + e^t)
    ref_a = roc_auc_score(y == 0, -np.logaddexp(np.log(2), t))
    ref_b = roc_auc_score(y == 1, -np.logaddexp(np.log(2), t))
    assert m["overall"]["auroc_macro"]["estimate"] == pytest.approx((ref + ref_a + ref_b) / 3, abs=1e-12)


def test_multilabel_ranks_logits():
    rng = np.random.default_rng(5)
    n = 240
    za, zb = rng.uniform(30, 70, n), rng.normal(0, 2, n)
    ya = (rng.random(n) < (za - 25) / 50).astype(int)
    yb = (rng.random(n) < 1 / (1 + np.exp(-zb))).astype(int)
    df = pd.DataFrame({"y_a": ya, "y_b": yb, "logit_a": za, "logit_b": zb})
    m = metrics_report(table_from_frame(df), settings=SETTINGS, workers=1)
    assert m["overall"]["labels"]["a"]["auroc"]["estimate"] == pytest.approx(roc_auc_score(ya, za), abs=1e-12)
    macro = (roc_auc_score(ya, za) + roc_auc_score(yb, zb)) / 2
    assert m["overall"]["auroc_macro"]["estimate"] == pytest.approx(macro, abs=1e-12)
    assert m["overall"]["auprc_macro"]["estimate"] == pytest.approx(
        (average_precision_score(ya, za) + average_precision_score(yb, zb)) / 2, abs=1e-12
    )


def test_curves_rank_logits():
    """curves.json: the ROC curve has one point per distinct logit, and its area is sklearn's AUROC."""
    from validate.analysis.sites import site_curves

    df = _saturated(200)
    frame = table_from_frame(df).frame
    curves = site_curves(frame, task="binary", names=[], settings=MetricSettings(n_bootstrap=20), sites=["a", "b"])
    roc = curves["overall"]["roc"]
    assert len(roc["fpr"]) == df.logit.nunique() + 1
    area = np.trapezoid(roc["tpr"], roc["fpr"])
    assert area == pytest.approx(roc_auc_score(df.y, df.logit), abs=1e-12)
    pr = curves["overall"]["pr"]
    assert len(pr["recall"]) == df.logit.nunique()


def test_subgroup_gaps_rank_logits():
    from validate.analysis.subgroups import subgroup_analysis

    df = _saturated(300)
    df["sex"] = np.where(np.arange(len(df)) % 3 == 0, "F", "M")
    table = table_from_frame(df)
    groups = pd.DataFrame({"sex": df["sex"]})
    out = subgroup_analysis(
        table.frame, groups, task="binary", settings=MetricSettings(n_bootstrap=0), sites=["a", "b"]
    )
    gap = out["overall"]["subgroups"]["sex"]["F"]["gap"]["auroc"]
    f = df.sex == "F"
    assert gap["reference"] == pytest.approx(roc_auc_score(df.y, df.logit), abs=1e-12)
    assert gap["estimate"] == pytest.approx(
        roc_auc_score(df.y[f], df.logit[f]) - roc_auc_score(df.y, df.logit), abs=1e-12
    )
    assert out["overall"]["subgroups"]["sex"]["F"]["gap"]["auprc"]["reference"] == pytest.approx(
        average_precision_score(df.y, df.logit), abs=1e-12
    )


def test_uncalibrated_comparison_block_ranks_logits():
    from validate.calibrators import compare_calibration

    df = _saturated(300)
    table = table_from_frame(df)
    res = compare_calibration(table, methods=["temperature"], fit_on=["a"], settings=MetricSettings(n_bootstrap=0))
    b = df[df.site == "b"]
    none = res["designs"]["held_out"]["methods"]["none"] if "designs" in res else res["methods"]["none"]
    assert none["sites"]["b"]["auroc"]["estimate"] == pytest.approx(roc_auc_score(b.y, b.logit), abs=1e-12)


@pytest.mark.skipif(shutil.which("Rscript") is None, reason="Rscript not installed")
def test_delong_interval_matches_proc_on_logits(tmp_path):
    df = _saturated()
    f = tmp_path / "d.csv"
    df.to_csv(f, index=False, float_format="%.17g")
    script = (
        "suppressMessages(library(pROC)); d <- read.csv(commandArgs(TRUE)[1]);"
        "r <- roc(d$y, d$logit, direction = '<', levels = c(0, 1), quiet = TRUE);"
        "ci <- ci.auc(r, method = 'delong'); cat(sprintf('%.15f %.15f %.15f', ci[2], ci[1], ci[3]))"
    )
    proc = subprocess.run(["Rscript", "-e", script, str(f)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 and "pROC" in proc.stderr:
        pytest.skip("pROC not installed")
    assert proc.returncode == 0, proc.stderr
    auc, lo, hi = map(float, proc.stdout.split())
    m = metrics_report(read_predictions(f), settings=SETTINGS, workers=1)
    a = m["overall"]["auroc"]
    assert a["estimate"] == pytest.approx(auc, abs=1e-12)
    assert a["ci_low"] == pytest.approx(lo, abs=1e-9) and a["ci_high"] == pytest.approx(hi, abs=1e-9)


def test_calibration_intercept_of_saturated_logits_is_finite():
    """p(1 − p) was computed as mu·(1 − mu), exactly 0 above logit ~36.7: a division by zero. The
    estimate solves the score equation Σ y = Σ sigmoid(z + α) (solved here by bracketing)."""
    from scipy.optimize import brentq
    from scipy.special import expit

    from validate.metrics import calibration_intercept

    rng = np.random.default_rng(7)
    z = rng.uniform(38, 60, 200)
    y = (rng.random(200) < 0.6).astype(float)
    got = calibration_intercept(y, logits=z)
    ref = brentq(lambda a: np.sum(y - expit(z + a)), -200, 0, xtol=1e-14)
    assert got["estimate"] == pytest.approx(ref, abs=1e-9)
    assert np.isfinite(got["se"]) and got["converged"]
