"""Segmentation predictions (issue #20): one row per (case, label) with per-case metric columns, read by
the one predictions reader — the task inferred from the columns, every metric checked, a missing
metric column or a NaN that would silently drop a case refused with file, row and column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from validate.errors import InputError, InputErrors
from validate.predictions import infer_task, read_predictions, table_from_frame


def rows(n: int = 3) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "case_id": [f"c{i}" for i in range(n)],
            "site": ["a"] * n,
            "patient_id": [f"p{i}" for i in range(n)],
            "label": ["head"] * n,
            "dice": np.linspace(0.8, 0.9, n),
            "iou": np.linspace(0.7, 0.8, n),
            "hd_mm": [3.0] * n,
            "hd95_mm": [2.0] * n,
            "assd_mm": [1.0] * n,
            "nsd_2mm": [0.9] * n,
            "area_ref_mm2": [100.0] * n,
            "area_pred_mm2": [90.0] * n,
            "area_error_mm2": [-10.0] * n,
            "area_expected_mm2": [95.0] * n,
            "ref_empty": [0] * n,
            "pred_empty": [0] * n,
            "pixel_size_mm": [0.1] * n,
            "img_mean": [0.5] * n,
        }
    )


def problems(exc) -> str:
    return " | ".join(str(p) for p in getattr(exc.value, "problems", [exc.value]))


def test_inferred_and_read(tmp_path):
    df = rows()
    assert infer_task(df.columns) == "segmentation"
    path = tmp_path / "predictions.parquet"
    df.to_parquet(path)
    table = read_predictions(path)
    assert table.task == "segmentation" and table.names == ["head"]
    assert table.attribute_columns() == ["pixel_size_mm", "img_mean"]
    assert table.metric_columns() == [
        "dice", "iou", "hd_mm", "hd95_mm", "assd_mm", "nsd_2mm", "area_ref_mm2", "area_pred_mm2",
        "area_error_mm2", "area_expected_mm2", "ref_empty", "pred_empty",
    ]  # fmt: skip
    np.testing.assert_array_equal(table.metric("dice"), df["dice"].to_numpy())
    assert list(table.segmentation_labels()) == ["head"] * 3


def test_two_labels_share_a_case():
    df = pd.concat([rows(2), rows(2).assign(label="brain")], ignore_index=True)
    table = table_from_frame(df, task="segmentation", label_names=["head", "brain"])
    assert len(table) == 4 and table.names == ["head", "brain"]


@pytest.mark.parametrize("column", ["hd95_mm", "dice", "area_ref_mm2", "ref_empty", "label"])
def test_missing_column_named(column):
    with pytest.raises((InputError, InputErrors)) as exc:
        table_from_frame(rows().drop(columns=[column]), task="segmentation")
    assert f"field {column}" in problems(exc) or column in problems(exc)
    assert "missing column" in problems(exc)


def test_nan_metric_refused_unless_both_masks_empty():
    df = rows()
    df.loc[1, "hd95_mm"] = np.nan
    with pytest.raises((InputError, InputErrors)) as exc:
        table_from_frame(df, task="segmentation")
    text = problems(exc)
    assert "hd95_mm" in text and "row 2" in text and "not both empty" in text
    df.loc[1, ["ref_empty", "pred_empty"]] = 1  # the `exclude` policy's NaN row is accepted
    table = table_from_frame(df, task="segmentation")
    assert np.isnan(table.metric("hd95_mm")[1])


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"label": ["head", "head", "liver"]}, "label 'liver' is not declared"),
        ({"case_id": ["c0", "c0", "c2"]}, "repeats within site"),
        ({"dice": [0.5, np.inf, 0.5]}, "is not finite"),
        ({"dice": [0.5, "x", 0.5]}, "is not a number"),
        ({"ref_empty": [0, 2, 0]}, "0 or 1"),
    ],
)
def test_bad_values(change, needle):
    df = rows()
    for k, v in change.items():
        df[k] = v
    with pytest.raises((InputError, InputErrors)) as exc:
        table_from_frame(df, task="segmentation", label_names=["head"])
    assert needle in problems(exc)


def test_classification_tables_unchanged():
    assert infer_task(["y", "logit"]) == "binary"
    assert infer_task(["y_a", "logit_a", "label"]) == "multilabel"
