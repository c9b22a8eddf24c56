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
    df = pd.DataFrame({"case_id": ["a", "b"], "site": ["s1", "s2"], "patient_id": ["p", "p"],
                       "y": [0, 1], "logit": [-1.0, 2.0], "sex": ["F", "M"]})
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


@pytest.mark.parametrize("text, field, row, words", [
    ("y,p\n1,0.9\n2,0.2\n", "y", 2, "label 2"),
    ("y,p\n1,0.9\n0,1.2\n", "p", 2, "outside [0, 1]"),
    ("y,p\n1,0.9\n0,\n", "p", 2, "missing value"),
    ("y,p\n1,0.9\n0,abc\n", "p", 2, "'abc' is not a number"),
    ("y,logit\n1,0.9\n0,inf\n", "logit", 2, "not finite"),
    ("y,score\n1,0.9\n", "columns", None, "cannot tell the task"),
    ("p\n0.9\n", "y", None, "missing column"),
    ("case_id,y,p\na,1,0.9\na,0,0.1\n", "case_id", 2, "repeats"),
])
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
