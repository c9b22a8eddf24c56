"""`validate metrics` end to end: table output, Metrics JSON, bad input -> exit 2 with the place."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from validate.cli import main


@pytest.fixture()
def preds(tmp_path):
    rng = np.random.default_rng(0)
    n = 240
    df = pd.DataFrame(
        {
            "case_id": [f"c{i}" for i in range(n)],
            "site": np.repeat(["dev", "ext"], n // 2),
            "patient_id": [f"p{i // 2}" for i in range(n)],
            "sex": rng.choice(["F", "M"], n),
        }
    )
    df["p"] = rng.beta(2, 3, n)
    df["y"] = (rng.random(n) < df["p"]).astype(int)
    f = tmp_path / "pred.csv"
    df.to_csv(f, index=False)
    return f


def test_metrics_writes_design_json(preds, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert main(["metrics", str(preds), "--bootstrap", "40", "--seed", "3", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "overall" in text and "site dev" in text and "auroc" in text
    m = json.loads(out.read_text())
    assert m["task"] == "binary" and m["n_bootstrap"] == 40 and m["seed"] == 3 and m["ci_level"] == 0.95
    assert set(m["sites"]) == {"dev", "ext"} and m["subgroups"] == {}
    assert m["overall"]["n"] == 240
    assert m["overall"]["auroc"]["method"] == "delong"
    assert m["sites"]["dev"]["ece"]["ci_low"] is not None
    # deterministic: same seed, same bytes
    out2 = tmp_path / "m2.json"
    assert main(["metrics", str(preds), "--bootstrap", "40", "--seed", "3", "--json", str(out2)]) == 0
    assert out.read_bytes() == out2.read_bytes()


def test_bare_csv(tmp_path, capsys):
    f = tmp_path / "yp.csv"
    f.write_text("y,p\n" + "".join(f"{i % 2},{0.1 + 0.8 * (i % 7) / 7}\n" for i in range(60)))
    assert main(["metrics", str(f), "--bootstrap", "0", "--json", str(tmp_path / "o.json")]) == 0
    m = json.loads((tmp_path / "o.json").read_text())
    assert list(m["sites"]) == ["all"] and m["overall"]["brier"]["method"] == "none"


@pytest.mark.parametrize(
    "text, words",
    [
        ("y,p\n1,0.9\n5,0.2\n", "row 2: y: label 5"),
        ("y,p\n1,0.9\n0,1.5\n", "row 2: p: 1.5 is outside [0, 1]"),
        ("y,p\n1,0.9\n0,\n", "row 2: p: missing value"),
        ("a,b\n1,2\n", "cannot tell the task"),
    ],
)
def test_bad_input_exit_2(tmp_path, capsys, text, words):
    f = tmp_path / "bad.csv"
    f.write_text(text)
    assert main(["metrics", str(f)]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and str(f) in err


def test_missing_file_and_not_a_table(tmp_path, capsys):
    assert main(["metrics", str(tmp_path / "nope.parquet")]) == 2
    assert "not found" in capsys.readouterr().err
    f = tmp_path / "x.parquet"
    f.write_text("hello")
    assert main(["metrics", str(f)]) == 2
    assert "not a readable Parquet" in capsys.readouterr().err
