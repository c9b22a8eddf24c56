"""Reading, checking and writing the predictions table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from validate.errors import InputError
from validate.predictions import attribute_columns, infer_task, read_predictions, write_predictions


def _csv(tmp_path, text, name="pred.csv"):
    f = tmp_path / name
    f.write_text(text)
    return f


def test_bare_y_p_csv(tmp_path):
    t = read_predictions(_csv(tmp_path, "y,p\n1,0.9\n0,0.2\n1,0\n"))
    assert t.task == "binary"
    assert list(t.frame["site"]) == ["all"] * 3
    assert list(t.frame["case_id"]) == ["1", "2", "3"] and list(t.frame["patient_id"]) == ["1", "2", "3"]
    np.testing.assert_array_equal(t.y(), [1, 0, 1])
    np.testing.assert_array_equal(t.prob(), [0.9, 0.2, 0.0])
    # p = 0 becomes the logit of 1e-15, not of anything coarser
    assert t.logit()[2] == pytest.approx(np.log(1e-15) - np.log1p(-1e-15), rel=1e-12)


def test_parquet_round_trip_and_attributes(tmp_path):
    df = pd.DataFrame(
        {
            "case_id": ["a", "b"],
            "site": ["s1", "s2"],
            "patient_id": ["p", "p"],
            "y": [0, 1],
            "logit": [-1.0, 2.0],
            "sex": ["F", "M"],
        }
    )
    f = tmp_path / "pred.parquet"
    write_predictions(df, f)
    t = read_predictions(f)
    assert t.task == "binary" and t.sites() == ["s1", "s2"]
    assert t.attribute_columns() == ["sex"]
    np.testing.assert_allclose(t.prob(), 1 / (1 + np.exp([1.0, -2.0])))
    write_predictions(t, tmp_path / "again.csv")
    assert read_predictions(tmp_path / "again.csv").frame["sex"].tolist() == ["F", "M"]


def test_multiclass_probabilities_become_log_probabilities(tmp_path):
    t = read_predictions(_csv(tmp_path, "y,p_cat,p_dog,p_fox\n0,0.7,0.2,0.1\n2,0,0.5,0.5\n"))
    assert t.task == "multiclass" and t.names == ["cat", "dog", "fox"]
    np.testing.assert_array_equal(t.y(), [0, 2])
    assert t.logits()[1, 0] == pytest.approx(np.log(1e-15))
    np.testing.assert_allclose(t.probs(), [[0.7, 0.2, 0.1], [0, 0.5, 0.5]])


def test_multiclass_labels_by_name(tmp_path):
    t = read_predictions(_csv(tmp_path, "y,logit_a,logit_b,logit_c\nb,1,2,3\nc,0,0,0\n"), class_names=["a", "b", "c"])
    np.testing.assert_array_equal(t.y(), [1, 2])


def test_multilabel(tmp_path):
    t = read_predictions(_csv(tmp_path, "y_a,y_b,logit_a,p_b\n1,0,0.5,0.2\n0,1,-1,0.9\n"))
    assert t.task == "multilabel" and t.names == ["a", "b"]
    assert t.Y().shape == (2, 2) and t.probs()[1, 1] == pytest.approx(0.9)


@pytest.mark.parametrize(
    "text, field, row, words",
    [
        ("y,p\n1,0.9\n2,0.2\n", "y", 2, "label 2"),
        ("y,p\n1,0.9\n0,1.2\n", "p", 2, "outside [0, 1]"),
        ("y,p\n1,0.9\n0,\n", "p", 2, "missing value"),
        ("y,p\n1,0.9\n0,abc\n", "p", 2, "'abc' is not a number"),
        ("y,logit\n1,0.9\n0,inf\n", "logit", 2, "not finite"),
        ("y,score\n1,0.9\n", "columns", None, "cannot tell the task"),
        ("p\n0.9\n", "y", None, "missing column"),
        ("case_id,y,p\na,1,0.9\na,0,0.1\n", "case_id", 2, "repeats"),
    ],
)
def test_bad_input_names_column_and_row(tmp_path, text, field, row, words):
    with pytest.raises(InputError) as info:
        read_predictions(_csv(tmp_path, text))
    err = info.value
    problems = getattr(err, "problems", [err])
    assert any(p.field == field and p.row == row and words in str(p) for p in problems), str(err)
    if row is not None:
        assert f"row {row}" in str(err) and f"line {row + 1}" in str(err)


def test_not_a_table(tmp_path):
    f = tmp_path / "x.parquet"
    f.write_bytes(b"\x00\x01 not parquet")
    with pytest.raises(InputError, match="not a readable Parquet"):
        read_predictions(f)
    with pytest.raises(InputError, match="not found"):
        read_predictions(tmp_path / "missing.csv")
    with pytest.raises(InputError, match="empty"):
        read_predictions(_csv(tmp_path, ""))


def test_all_problems_reported_together(tmp_path):
    with pytest.raises(InputError) as info:
        read_predictions(_csv(tmp_path, "y,p\n3,0.9\n0,7\n"))
    assert len(info.value.problems) == 2


def test_infer_task_and_attribute_columns():
    assert infer_task(["y", "logit", "age"]) == "binary"
    assert infer_task(["y", "logit_a", "logit_b", "logit_c"]) == "multiclass"
    assert infer_task(["y_a", "logit_a"]) == "multilabel"
    df = pd.DataFrame(columns=["case_id", "site", "y", "logit", "age", "sex"])
    assert attribute_columns(df) == ["age", "sex"]


# ---- one reader: logits and probabilities given together must agree ------------------------------


def _problems(err):
    return getattr(err, "problems", None) or [err]


def test_binary_logit_and_p_that_disagree_are_bad_input(tmp_path):
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 50)
    df = pd.DataFrame({"y": rng.integers(0, 2, 50), "logit": z, "p": 1 / (1 + np.exp(z))})  # p = 1 − sigmoid
    f = tmp_path / "pred.csv"
    df.to_csv(f, index=False, float_format="%.17g")
    with pytest.raises(InputError) as info:
        read_predictions(f)
    (err,) = _problems(info.value)
    assert err.field == "p" and err.row == 1 and err.line == 2
    assert "disagrees with sigmoid(logit)" in str(err) and "50 row(s)" in str(err) and "data rows 1, 2, 3" in str(err)


def test_binary_logit_and_p_that_agree_read_the_logits(tmp_path):
    # p = 1 for a logit of 40 agrees once both are clipped to [1e-15, 1 − 1e-15]; 1e-7 off is within 1e-6
    z = np.array([40.0, 45.0, -2.0, 0.5])
    p = 1 / (1 + np.exp(-z))
    p[2] += 5e-7
    df = pd.DataFrame({"y": [1, 0, 0, 1], "logit": z, "p": np.r_[1.0, 1.0, p[2:]]})
    f = tmp_path / "pred.csv"
    df.to_csv(f, index=False, float_format="%.17g")
    t = read_predictions(f)
    np.testing.assert_array_equal(t.score(), z)  # ranked by the logits: 40 < 45, not a tie
    np.testing.assert_allclose(t.prob(), 1 / (1 + np.exp(-z)), rtol=0, atol=0)
    assert "p" not in t.frame  # one reader: the logits


def test_multiclass_logits_and_probabilities_that_disagree(tmp_path):
    Z = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [3.0, 3.0, 0.0]])
    P = np.exp(Z) / np.exp(Z).sum(axis=1, keepdims=True)
    P[2] = P[2][[2, 0, 1]]  # row 3 permuted: still sums to 1, disagrees
    df = pd.DataFrame(
        {
            "y": [0, 1, 2],
            **{f"logit_{c}": Z[:, k] for k, c in enumerate("abc")},
            **{f"p_{c}": P[:, k] for k, c in enumerate("abc")},
        }
    )
    f = tmp_path / "pred.csv"
    df.to_csv(f, index=False, float_format="%.17g")
    with pytest.raises(InputError) as info:
        read_predictions(f, class_names=["a", "b", "c"])
    (err,) = _problems(info.value)
    assert err.row == 3 and err.field == "p_a" and "softmax" in str(err) and "column(s) p_a, p_c)" in str(err)


def test_multilabel_logit_and_p_that_disagree(tmp_path):
    f = _csv(tmp_path, "y_a,y_b,logit_a,p_a,logit_b\n1,0,2,0.880797077977882,0\n0,1,-1,0.7,1\n")
    with pytest.raises(InputError) as info:
        read_predictions(f)
    (err,) = _problems(info.value)
    assert err.row == 2 and err.field == "p_a" and "sigmoid(logit_a)" in str(err)


# ---- multiclass probability rows sum to 1 --------------------------------------------------------


def test_multiclass_rows_not_summing_to_one_are_bad_input(tmp_path):
    f = _csv(tmp_path, "y,p_a,p_b,p_c\n0,0.5,0.3,0.2\n1,0.5,0.5,0.5\n2,0.1,0.1,0.8\n1,0.9,0.9,0.1\n")
    with pytest.raises(InputError) as info:
        read_predictions(f)
    (err,) = _problems(info.value)
    assert err.row == 2 and err.line == 3 and "sum to 1.5" in str(err) and "2 row(s)" in str(err)
    assert "data rows 2, 4" in str(err)


def test_multiclass_float32_rows_are_accepted(tmp_path):
    rng = np.random.default_rng(1)
    P = rng.dirichlet(np.ones(10), 200).astype(np.float32)
    df = pd.DataFrame({"y": rng.integers(0, 10, 200), **{f"p_{k}": P[:, k] for k in range(10)}})
    df.to_parquet(tmp_path / "pred.parquet")
    t = read_predictions(tmp_path / "pred.parquet")
    assert t.probs().shape == (200, 10)


# ---- duplicated headers -------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["case_id,y,logit,y", "case_id,y,logit, y"])
def test_duplicate_label_column_is_bad_input(tmp_path, header):
    f = _csv(tmp_path, header + "\nc1,1,0.5,0\nc2,0,-0.5,1\n")
    with pytest.raises(InputError) as info:
        read_predictions(f)
    assert info.value.field == "y" and info.value.line == 1 and "twice" in str(info.value)


# ---- identifiers are text ----------------------------------------------------------------------


def test_csv_ids_are_not_type_guessed(tmp_path):
    # 400 patients: "7", "07", "007", "0007" ... are four patients, not one
    rows = ["case_id,patient_id,site,y,logit"]
    for i in range(100):
        for k, pad in enumerate(["", "0", "00", "000"]):
            rows.append(f"c{i}_{k},{pad}{i},s,{(i + k) % 2},{i / 10 - k}")
    t = read_predictions(_csv(tmp_path, "\n".join(rows) + "\n"))
    assert t.frame["patient_id"].nunique() == 400
    assert t.frame["patient_id"].iloc[2] == "000"
    assert len(set(t.clusters())) == 400


def test_csv_long_ids_with_a_blank_stay_exact(tmp_path):
    # 19-digit ids beside one blank were parsed as float64: 400 patients collapsed into 4
    base = 1234567890123456000
    rows = ["case_id,patient_id,y,logit"]
    for i in range(400):
        rows.append(f"c{i},{'' if i == 5 else base + i},{i % 2},{i / 100}")
    t = read_predictions(_csv(tmp_path, "\n".join(rows) + "\n"))
    pid = t.frame["patient_id"]
    assert pid.iloc[0] == str(base) and pid.iloc[5] == "c5"  # a blank patient id defaults to the case id
    assert pid.nunique() == 400 and len(set(t.clusters())) == 400


def test_parquet_float_ids(tmp_path):
    df = pd.DataFrame({"case_id": [7.0, 8.0, 9.0], "y": [0, 1, 1], "logit": [0.1, 0.2, 0.3]})
    df.to_parquet(tmp_path / "ok.parquet")
    assert list(read_predictions(tmp_path / "ok.parquet").frame["case_id"]) == ["7", "8", "9"]
    df["case_id"] = [7.0, 7.5, 9.0]
    df.to_parquet(tmp_path / "frac.parquet")
    with pytest.raises(InputError) as info:
        read_predictions(tmp_path / "frac.parquet")
    assert info.value.field == "case_id" and info.value.row == 2 and "not an exact whole number" in str(info.value)
    df["case_id"] = [1.0, 2.0, 1e19]
    df.to_parquet(tmp_path / "big.parquet")
    with pytest.raises(InputError) as info:
        read_predictions(tmp_path / "big.parquet")
    assert info.value.row == 3


def test_declared_categorical_columns_are_text(tmp_path):
    f = _csv(tmp_path, "y,logit,scanner,age\n1,0.5,007,40\n0,-0.5,7,50\n1,1,,60\n")
    t = read_predictions(f, text_columns=["scanner"])
    assert list(t.frame["scanner"].iloc[:2]) == ["007", "7"] and pd.isna(t.frame["scanner"].iloc[2])
    assert t.frame["age"].dtype.kind in "if"  # undeclared columns keep their numbers


# ---- the bootstrap cluster is (site, patient_id), so (site, case_id) by default --------------------


def _count_units(monkeypatch):
    from validate.metrics import bootstrap

    seen = []
    real = bootstrap.Resampling.__init__

    def spy(self, n, clusters=None, strata=None, order=None):
        real(self, n, clusters, strata, order)
        seen.append((self.n, self.n_units, strata is not None))

    monkeypatch.setattr(bootstrap.Resampling, "__init__", spy)
    return seen


def _two_sites_sharing_case_ids(n=60):
    rng = np.random.default_rng(3)
    return pd.DataFrame(
        {
            "case_id": [f"c{i}" for i in range(n)] * 2,
            "site": ["cleveland"] * n + ["hungary"] * n,
            "y": rng.integers(0, 2, 2 * n),
            "logit": rng.normal(0, 1, 2 * n),
        }
    )


def test_case_ids_shared_by_two_sites_are_two_clusters(monkeypatch):
    from validate.analysis.sites import site_curves
    from validate.metrics import MetricSettings, metrics_report
    from validate.predictions import table_from_frame

    table = table_from_frame(_two_sites_sharing_case_ids())
    assert len(set(table.clusters())) == 120
    seen = _count_units(monkeypatch)
    settings = MetricSettings(n_bootstrap=10)
    metrics_report(table, settings=settings, workers=1)
    site_curves(table.frame, task="binary", names=[], settings=settings, sites=["cleveland", "hungary"])
    pooled = [(n, units) for n, units, _ in seen if n == 120]
    assert pooled and all(units == 120 for _, units in pooled), pooled


def test_patients_at_one_site_are_clustered():
    from validate.predictions import table_from_frame

    df = _two_sites_sharing_case_ids()
    df["patient_id"] = [f"p{i // 2}" for i in range(60)] * 2
    assert len(set(table_from_frame(df).clusters())) == 60
