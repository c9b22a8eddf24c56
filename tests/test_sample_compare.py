"""The sample comparison: protocols/heart-compare.yaml (heart v2 against v1) checked and run end to end.

References are independent of the code under test: both models' logits come straight from the
torch.export programs (not through the scoring pipeline); point estimates are recomputed with
scikit-learn (AUROC, Brier) and a naive loop (ECE); the paired DeLong intervals and p-values are R's
``pROC::roc.test(roc(y, v2), roc(y, v1), paired = TRUE, method = "delong")`` on the same logits,
computed once when v2 was built and written down here (the R conformance test of the engine checks
the DeLong code against live R); the gates' verdicts are derived here from those intervals by the
rule of SPEC14 (pass when ci_low >= -margin; "superior" when ci_low > 0).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
HEART = REPO / "sample_sites" / "heart"
COMPARE = REPO / "protocols" / "heart-compare.yaml"
FEATURES = [
    "age",
    "sex",
    "cp",
    "trestbps",
    "chol",
    "fbs",
    "restecg",
    "thalach",
    "exang",
    "oldpeak",
    "slope",
    "ca",
    "thal",
]
SITES = ["cleveland", "hungary", "switzerland", "va"]
MARGIN = 0.05  # heart-compare.yaml's AUROC non-inferiority margin

# R 4 / pROC, Δ = AUROC(v2) − AUROC(v1) on the logits: (v1, v2, ci_low, ci_high, p)
PROC_PAIRED = {
    "overall": (0.8774372726, 0.8763330609, -0.0116880331, 0.0094796095, 0.8379757954),
    "cleveland": (0.9346376557, 0.9027460958, -0.0538986127, -0.0098845071, 0.004507320075),
    "hungary": (0.8820754717, 0.8851364914, -0.0084622356, 0.0145842749, 0.602616327),
    "switzerland": (0.7510869565, 0.7815217391, -0.0499397656, 0.1108093308, 0.4579881158),
    "va": (0.6969338071, 0.7320700092, 0.0100832646, 0.0601891396, 0.005981258792),
}


def _scores() -> pd.DataFrame:
    """Every heart case with its label, sex and both models' logits, straight from the programs."""
    v1 = torch.export.load(str(HEART / "model.pt2")).module()
    v2 = torch.export.load(str(HEART / "model_v2.pt2")).module()
    frames = []
    for site in SITES:
        frame = pd.read_csv(HEART / f"{site}.csv", dtype={"case_id": str, "sex_label": str})
        x = torch.tensor(frame[FEATURES].to_numpy(dtype=np.float32))
        with torch.no_grad():
            frame["v1"] = v1(x).squeeze(1).double().numpy()
            frame["v2"] = v2(x).squeeze(1).double().numpy()
        frame["site"] = site
        frames.append(frame[["site", "case_id", "label", "sex_label", "v1", "v2"]])
    return pd.concat(frames, ignore_index=True)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _naive_ece(y: np.ndarray, p: np.ndarray, bins: int = 15) -> float:
    """Σ_b n_b |mean(y_b) − mean(p_b)| / n over 15 equal-width bins (a, b], 0 in the first bin."""
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = [(p_i > lo or (b == 0 and p_i == 0.0)) and p_i <= hi for p_i in p]
        idx = np.flatnonzero(inside)
        if idx.size:
            total += idx.size * abs(y[idx].mean() - p[idx].mean())
    return total / len(y)


def _protocol_copy(folder: Path, n_bootstrap: int) -> Path:
    text = COMPARE.read_text().replace("../sample_sites", str(REPO / "sample_sites"))
    text = re.sub(r"n_bootstrap: \d+", f"n_bootstrap: {n_bootstrap}", text)
    path = folder / "heart-compare.yaml"
    path.write_text(text)
    return path


# ---- the protocol ---------------------------------------------------------------------------------


def test_check_accepts_the_comparison_protocol():
    result = subprocess.run(
        [sys.executable, "-m", "validate", "check", str(COMPARE)], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "heart-compare" in result.stdout and "ok: no problems found" in result.stdout


def test_comparison_protocol_is_heart_with_v2_against_v1():
    # the same cohort, inputs and metric settings as heart.yaml; only the model (and the gates) differ
    heart = yaml.safe_load((REPO / "protocols" / "heart.yaml").read_text())
    compare = yaml.safe_load(COMPARE.read_text())
    keys = ("task", "classes", "positive_class", "input", "columns", "sites", "attributes", "subgroups", "metrics")
    for key in (*keys, "synthesis", "decision"):
        assert compare[key] == heart[key], key
    assert compare["model"]["checkpoint"] == "../sample_sites/heart/model_v2.pt2"
    assert compare["model"]["baseline"] == {k: heart["model"][k] for k in ("checkpoint", "format", "output")}
    absolute = [g for g in compare["gates"] if "compare" not in g]
    assert absolute == heart["gates"]
    compared = {g["name"]: g for g in compare["gates"] if g.get("compare") == "baseline"}
    assert compared["auroc-non-inferior-each-site"]["min"] == -MARGIN
    assert compared["auroc-non-inferior-each-site"]["scope"] == "each_site"


# ---- end to end -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compare_run(tmp_path_factory):
    from validate.pipeline import run_protocol

    folder = tmp_path_factory.mktemp("heart_compare")
    protocol = _protocol_copy(folder, n_bootstrap=200)
    result = run_protocol(protocol, out=folder / "bundle", device="cpu")
    return result, folder / "bundle"


def _rows(bundle: Path, gate: str) -> list[dict]:
    rows = json.loads((bundle / "gates.json").read_text())["rows"]
    return [r for r in rows if r["gate"] == gate]


@pytest.mark.slow
def test_auroc_deltas_equal_sklearn_and_proc(compare_run):
    from sklearn.metrics import roc_auc_score

    _, bundle = compare_run
    comparison = json.loads((bundle / "comparison.json").read_text())
    scores = _scores()
    assert comparison["matched"] == {
        "n": 920,
        "n_new_only": 0,
        "n_baseline_only": 0,
        "sites": {s: int((scores["site"] == s).sum()) for s in SITES},
    }
    blocks = {"overall": (comparison["overall"], scores)}
    blocks.update({s: (comparison["sites"][s], scores[scores["site"] == s]) for s in SITES})
    for name, (block, cases) in blocks.items():
        entry = block["metrics"]["auroc"]
        v1, v2 = roc_auc_score(cases["label"], cases["v1"]), roc_auc_score(cases["label"], cases["v2"])
        assert entry["method"] == "delong_paired", name
        assert entry["new"] == pytest.approx(v2, abs=1e-12), name
        assert entry["baseline"] == pytest.approx(v1, abs=1e-12), name
        assert entry["delta"] == pytest.approx(v2 - v1, abs=1e-12), name
        r_v1, r_v2, r_low, r_high, r_p = PROC_PAIRED[name]
        assert (entry["baseline"], entry["new"]) == (pytest.approx(r_v1, abs=1e-9), pytest.approx(r_v2, abs=1e-9))
        assert entry["ci_low"] == pytest.approx(r_low, abs=1e-6), name
        assert entry["ci_high"] == pytest.approx(r_high, abs=1e-6), name
        assert entry["p_value"] == pytest.approx(r_p, abs=1e-6), name


@pytest.mark.slow
def test_bootstrap_metric_estimates_equal_independent_ones(compare_run):
    from sklearn.metrics import brier_score_loss

    _, bundle = compare_run
    comparison = json.loads((bundle / "comparison.json").read_text())
    scores = _scores()
    y = scores["label"].to_numpy()
    p1, p2 = _sigmoid(scores["v1"].to_numpy()), _sigmoid(scores["v2"].to_numpy())
    ece = comparison["overall"]["metrics"]["ece"]
    assert ece["method"] == "bootstrap_paired" and ece["p_value"] is None
    assert ece["baseline"] == pytest.approx(_naive_ece(y, p1), abs=1e-9)
    assert ece["new"] == pytest.approx(_naive_ece(y, p2), abs=1e-9)
    for sex, block in comparison["subgroups"]["sex"].items():
        brier = block["overall"]["metrics"]["brier"]
        mask = (scores["sex_label"] == sex).to_numpy()
        assert brier["baseline"] == pytest.approx(brier_score_loss(y[mask], p1[mask]), abs=1e-9), sex
        assert brier["new"] == pytest.approx(brier_score_loss(y[mask], p2[mask]), abs=1e-9), sex
        assert brier["delta"] == pytest.approx(brier["new"] - brier["baseline"], abs=1e-12), sex
    assert set(comparison["subgroups"]["sex"]) == {"female", "male"}


@pytest.mark.slow
def test_non_inferiority_verdicts_follow_the_proc_intervals(compare_run):
    result, bundle = compare_run
    rows = {r["site"]: r for r in _rows(bundle, "auroc-non-inferior-each-site")}
    assert set(rows) == set(SITES)
    for site in SITES:
        row, (_, _, low, high, _) = rows[site], PROC_PAIRED[site]
        assert row["compare"] == "baseline" and row["margin"] == pytest.approx(MARGIN)
        assert row["ci_low"] == pytest.approx(low, abs=1e-6) and row["ci_high"] == pytest.approx(high, abs=1e-6)
        if site == "switzerland":  # 8 patients without disease: below min_events 10, policy warn
            assert row["verdict"] == "warn" and row["insufficient"], row
        elif low >= -MARGIN:
            assert row["verdict"] == "pass", row
            assert ("superior" if low > 0 else "non-inferior (margin 0.05)") in row["reason"], row
        else:
            assert row["verdict"] == "fail", row
            words = "inferior" if high < -MARGIN else "non-inferiority not shown (margin 0.05)"
            assert row["reason"].endswith(words), row
    # with these data: Cleveland fails (-0.0539 < -0.05), Hungary non-inferior, VA superior
    assert [rows[s]["verdict"] for s in SITES] == ["fail", "pass", "warn", "pass"]
    assert result.exit_code == 1
    junit = (bundle / "junit.xml").read_text()
    assert "<failure" in junit and "auroc-non-inferior-each-site" in junit


@pytest.mark.slow
def test_bootstrap_gates_judge_the_comparison_interval(compare_run):
    _, bundle = compare_run
    comparison = json.loads((bundle / "comparison.json").read_text())
    (ece_row,) = _rows(bundle, "ece-not-worse-overall")
    ece = comparison["overall"]["metrics"]["ece"]
    assert (ece_row["estimate"], ece_row["ci_high"]) == (ece["delta"], ece["ci_high"])
    assert ece_row["verdict"] == ("pass" if ece["ci_high"] <= 0.02 else "fail")
    brier_rows = {r["group"]: r for r in _rows(bundle, "brier-not-worse-each-sex")}
    assert set(brier_rows) == {"female", "male"}
    for sex, row in brier_rows.items():
        brier = comparison["subgroups"]["sex"][sex]["overall"]["metrics"]["brier"]
        assert row["ci_high"] == brier["ci_high"]
        assert row["verdict"] == ("pass" if brier["ci_high"] <= 0.01 else "fail"), row
