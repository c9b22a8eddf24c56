"""No silently wrong number from a predictions table, at the command line.

Saturated logits are ranked as logits (scikit-learn on the logits is the reference); logits and
probabilities that disagree, multiclass rows that do not sum to 1 and a repeated header are bad input
(exit 2, the place named, nothing written).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from tests.adversarial.harness import Unchanged, run_cli


def test_saturated_logits_are_ranked_as_logits(tmp_path):
    rng = np.random.default_rng(11)
    n = 400
    z = rng.uniform(20, 80, n)  # two thirds above 36.7, where sigmoid(z) == 1.0
    y = (rng.random(n) < (z - 15) / 70).astype(int)
    pd.DataFrame({"case_id": [f"c{i}" for i in range(n)], "y": y, "logit": z}).to_csv(
        tmp_path / "pred.csv", index=False, float_format="%.17g"
    )
    with Unchanged(tmp_path, allow=["m.json"]):
        r = run_cli("metrics", tmp_path / "pred.csv", "--bootstrap", "20", "--json", tmp_path / "m.json", cwd=tmp_path)
    assert r.code == 0, r.text
    m = json.loads((tmp_path / "m.json").read_text())["overall"]
    assert abs(m["auroc"]["estimate"] - roc_auc_score(y, z)) < 1e-12
    assert abs(m["auprc"]["estimate"] - average_precision_score(y, z)) < 1e-12


def test_logit_and_p_that_disagree_exit_2(tmp_path):
    rng = np.random.default_rng(12)
    z = rng.normal(0, 2, 100)
    y = (rng.random(100) < 1 / (1 + np.exp(-z))).astype(int)
    pd.DataFrame({"y": y, "logit": z, "p": 1 / (1 + np.exp(z))}).to_csv(tmp_path / "pred.csv", index=False)
    with Unchanged(tmp_path):
        r = run_cli("metrics", tmp_path / "pred.csv", "--bootstrap", "0", "--json", tmp_path / "m.json", cwd=tmp_path)
    assert r.code == 2, r.text
    assert "pred.csv" in r.err and "line 2" in r.err and "p" in r.err and "disagrees with sigmoid(logit)" in r.err
    assert "auroc" not in r.out


def test_multiclass_rows_summing_to_one_and_a_half_exit_2(tmp_path):
    rows = "".join(f"{i % 3},0.5,0.5,0.5\n" if i == 7 else f"{i % 3},0.2,0.3,0.5\n" for i in range(30))
    (tmp_path / "pred.csv").write_text("y,p_a,p_b,p_c\n" + rows)
    with Unchanged(tmp_path):
        r = run_cli("metrics", tmp_path / "pred.csv", "--bootstrap", "0", cwd=tmp_path)
    assert r.code == 2, r.text
    assert "line 9" in r.err and "row 8" in r.err and "sum to 1.5" in r.err


def test_duplicated_label_column_exit_2(tmp_path):
    (tmp_path / "pred.csv").write_text(
        "case_id,y,logit,y\n" + "".join(f"c{i},{i % 2},{i / 10},{1 - i % 2}\n" for i in range(30))
    )
    with Unchanged(tmp_path):
        r = run_cli("metrics", tmp_path / "pred.csv", "--bootstrap", "0", cwd=tmp_path)
    assert r.code == 2, r.text
    assert "line 1" in r.err and "'y' appears twice" in r.err
