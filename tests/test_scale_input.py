"""Issue #21 (scale), the input side: identifiers converted without a Python call per case, cluster and
site codes instead of per-case text keys, and blocks that slice the table's arrays instead of copying
them — with the same texts, the same bootstrap draws and the same report as the text keys. The
references are the per-value definitions applied in a plain loop and the blocks computed from the
text keys the bootstrap ranked before (site + "\\x1f" + patient, site ids as strata)."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

import validate.metrics.report as report
import validate.predictions as predictions
from validate.errors import InputError, InputErrors
from validate.metrics import MetricSettings, metrics_report
from validate.metrics.blocks import binary_block
from validate.predictions import cluster_keys, site_codes, table_from_frame

N = 3000
RNG = np.random.default_rng(21)

ID_COLUMNS = {
    "text": pd.Series(RNG.choice(["a", "b", "007", ""], N)),
    "integers": pd.Series(RNG.integers(-5, 10**12, N)),
    "unsigned": pd.Series(RNG.integers(0, 2**63, N, dtype=np.uint64) * np.uint64(2)),
    "whole floats": pd.Series(np.where(RNG.random(N) < 0.1, np.nan, RNG.integers(0, 50, N).astype(float))),
    "object": pd.Series(RNG.choice(np.array(["x", 7, 7.0, None, "y", 3.0], dtype=object), N), dtype=object),
    "object with booleans": pd.Series(RNG.choice(np.array([True, 1, "a"], dtype=object), N), dtype=object),
    "nullable integers": pd.Series(pd.array(np.where(RNG.random(N) < 0.2, None, RNG.integers(0, 9, N)), "Int64")),
}


def _naive_ids(col: pd.Series) -> list:
    """The identifier rule applied to each value in turn (NA where a float is not a whole number)."""
    return [predictions._id_text(v) for v in col.astype(object).tolist()]


def _as_list(col: pd.Series) -> list:
    return [None if v is None or (isinstance(v, float) and np.isnan(v)) else v for v in col.tolist()]


@pytest.mark.parametrize("kind", ID_COLUMNS)
def test_id_columns_are_the_per_value_rule(kind):
    col = ID_COLUMNS[kind]
    assert _as_list(predictions._id_column(col)) == _naive_ids(col)


@pytest.mark.parametrize("kind", ["text", "integers", "unsigned", "whole floats", "object", "nullable integers"])
def test_id_rule_runs_once_per_distinct_value_not_per_case(kind, monkeypatch):
    col = ID_COLUMNS[kind]
    calls = []
    rule = predictions._id_text
    monkeypatch.setattr(predictions, "_id_text", lambda v: calls.append(v) or rule(v))
    predictions._id_column(col)
    if kind in ("text", "integers", "unsigned", "whole floats"):  # converted in Arrow / as is
        assert calls == []
    else:
        distinct = col.nunique(dropna=True) + int(col.isna().sum())  # a missing row may be any kind of missing
        assert len(calls) <= distinct < N


def test_fractional_float_ids_are_reported_at_their_first_row():
    df = pd.DataFrame({"case_id": [1.0, 2.0, 2.5, 4.0, 5.5], "y": [0, 1, 0, 1, 0], "p": [0.1, 0.8, 0.3, 0.7, 0.2]})
    with pytest.raises((InputError, InputErrors)) as exc:
        table_from_frame(df)
    text = str(exc.value)
    assert "2.5 is a floating-point number that is not an exact whole number (2 such row(s))" in text
    assert "row 3" in text and "case_id" in text


def test_default_ids_are_row_numbers_and_patients_default_to_them():
    df = pd.DataFrame({"y": [0, 1, 1, 0], "p": [0.2, 0.9, 0.6, 0.4], "patient_id": ["p", None, "", "q"]})
    frame = table_from_frame(df).frame
    assert frame["case_id"].tolist() == ["1", "2", "3", "4"]
    assert frame["patient_id"].tolist() == ["p", "2", "3", "q"]
    assert frame["site"].tolist() == ["all"] * 4


def _text_key_ranks(site: pd.Series, values: pd.Series) -> np.ndarray:
    """How the bootstrap numbered the former text keys (site + "\\x1f" + text, as pandas built them: a
    missing value made the whole key missing, "nan" to the bootstrap): NumPy's sorted unique ranks."""
    keys = (site.astype(str) + "\x1f" + values.astype(str)).to_numpy(dtype=object)
    return np.unique(keys.astype(str), return_inverse=True)[1].reshape(-1)


def _ranks(codes: np.ndarray) -> np.ndarray:
    return np.unique(codes, return_inverse=True)[1].reshape(-1)


CLUSTER_FRAMES = {
    "plain": (["s1", "s2", "s10", "é", "Z"], RNG.integers(0, 900, N).astype(str)),
    "a site prefixing another": (["a", "ab", "a b", "b"], RNG.choice(["x", "y", "10", "9"], N)),
    "control characters in sites": (["a", "a\x01", "a\x1f", "a\x1fb", "b"], RNG.choice(["x", "y", "b\x1fx"], N)),
    "NUL in patient ids": (["s1", "s2"], RNG.choice(["x", "x\x00", "y"], N)),
    "integer patients": (["s1", "s2"], RNG.integers(0, 300, N)),
    "mixed objects": (["s1", "s2"], RNG.choice(np.array([1, "1", 2.5, "x", 10], dtype=object), N)),
    "missing patients": (["s1", "s2"], RNG.choice(np.array(["p1", None, "p2", "10"], dtype=object), N)),
}


@pytest.mark.parametrize("kind", CLUSTER_FRAMES)
def test_cluster_codes_number_units_as_the_text_keys_did(kind):
    sites, patients = CLUSTER_FRAMES[kind]
    frame = pd.DataFrame({"site": RNG.choice(sites, N), "patient_id": pd.Series(patients)})
    codes = cluster_keys(frame, "patient_id")
    assert codes.dtype.kind == "i"  # codes, not a Python string per case
    np.testing.assert_array_equal(_ranks(codes), _text_key_ranks(frame["site"], frame["patient_id"]))


@pytest.mark.parametrize("sites", [["s1", "s2", "s10", "S", "é"], ["a", "a\x00", "b"]])
def test_site_codes_number_strata_as_the_site_texts_did(sites):
    frame = pd.DataFrame({"site": RNG.choice(sites, N)})
    codes = site_codes(frame)
    assert codes.dtype.kind == "i"
    expected = np.unique(frame["site"].to_numpy(dtype=object).astype(str), return_inverse=True)[1].reshape(-1)
    np.testing.assert_array_equal(_ranks(codes), expected)


def _clustered_table(n: int = 900) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    site = rng.choice(["b", "a", "a b", "ab"], n)
    z = rng.normal(-0.5, 1.3, n)
    return pd.DataFrame(
        {
            "site": site,
            "patient_id": rng.integers(0, n // 3, n).astype(str),
            "case_id": np.arange(n).astype(str),
            "y": (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int),
            "logit": z,
            "sex": rng.choice(np.array(["F", "M", None], dtype=object), n),
        }
    )


def test_report_equals_blocks_bootstrapped_from_the_text_keys():
    """Pooled, per-site and per-subgroup blocks of a clustered table equal :func:`binary_block` fed the
    former inputs: each block's own copies, its text cluster keys and its site ids as strata."""
    df = _clustered_table()
    settings = MetricSettings(n_bootstrap=30, seed=4)
    got = metrics_report(df, settings=settings, subgroup_columns=["sex"], workers=1)
    table = table_from_frame(df)
    frame = table.frame

    def expected(mask, stratified):
        sub = frame.loc[mask]
        keys = (sub["site"].astype(str) + "\x1f" + sub["patient_id"].astype(str)).to_numpy(dtype=object)
        return binary_block(
            table.y()[mask],
            table.prob()[mask],
            settings=settings,
            clusters=keys if pd.Series(keys).duplicated().any() else None,
            strata=sub["site"].to_numpy(dtype=object) if stratified else None,
            logits=table.logit()[mask],
            scores=table.score()[mask],
        )

    assert got["overall"] == expected(np.ones(len(frame), dtype=bool), True)
    for site in ("a", "ab"):
        assert got["sites"][site] == expected((frame["site"] == site).to_numpy(), False)
    sex = df["sex"].map(lambda v: "missing" if pd.isna(v) else v).to_numpy()
    for group in ("F", "missing"):
        assert got["subgroups"]["sex"][group] == expected(sex == group, True)


def test_pooled_block_reads_the_table_arrays_without_copies():
    table = table_from_frame(_clustered_table().sort_values("site", kind="stable"))
    jobs = report._BlockJobs(table, MetricSettings(n_bootstrap=5), True, None, [])
    jobs.add(("overall",), np.ones(len(table), dtype=bool), stratified=True)
    site_mask = (table.frame["site"] == "ab").to_numpy()
    jobs.add(("sites", "ab"), site_mask, stratified=False)
    logits = table.frame["logit"].to_numpy()
    for job, mask in zip(jobs.jobs, (np.ones(len(table), dtype=bool), site_mask), strict=True):
        block_logits = report._gathered(job["logits"])
        assert np.shares_memory(block_logits, logits)  # a contiguous block is a view
        np.testing.assert_array_equal(block_logits, logits[mask])
        # sent to a worker process as the block's own array
        np.testing.assert_array_equal(pickle.loads(pickle.dumps(job["y"])), table.y()[mask])
        assert len(job["p"]) == mask.sum()


def test_subgroup_labels_name_each_distinct_value_once(monkeypatch):
    values = pd.Series(RNG.choice(np.array(["F", "M", None], dtype=object), N), dtype=object)
    floats = pd.Series(np.where(RNG.random(N) < 0.1, np.nan, RNG.integers(0, 4, N) / 2))
    mixed = pd.Series(RNG.choice(np.array([1, 1.0, True, "1", None], dtype=object), N), dtype=object)
    calls = []
    label = report._group_label
    monkeypatch.setattr(report, "_group_label", lambda v: calls.append(v) or label(v))
    for col in (values, floats, mixed):
        naive = ["missing" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in col.tolist()]
        calls.clear()
        got = report._subgroup_labels("g", pd.DataFrame({"g": col}), None)
        assert got.tolist() == naive
        if col is not mixed:  # 1, 1.0 and True hash alike: labelled case by case
            assert len(calls) <= col.nunique() + int(col.isna().sum()) < N


def test_valid_label_and_logit_columns_are_shared_not_copied():
    df = pd.DataFrame({"y": RNG.integers(0, 2, N), "logit": RNG.normal(size=N)})
    before = df.copy()
    table = table_from_frame(df)
    for col in ("y", "logit"):
        assert np.shares_memory(table.frame[col].to_numpy(), df[col].to_numpy())
    # copy-on-write: the caller changing its frame afterwards leaves the table as read
    df.loc[0, "logit"] = 99.0
    df.loc[1, "y"] = 1 - df.loc[1, "y"]
    pd.testing.assert_series_equal(table.frame["logit"], before["logit"])
    pd.testing.assert_series_equal(table.frame["y"], before["y"])
    np.testing.assert_array_equal(table.y(), before["y"].to_numpy(dtype=float))


def test_labels_outside_zero_one_in_an_integer_column_are_reported():
    df = pd.DataFrame({"y": [0, 1, 2, 1, 3], "logit": [0.1, 0.2, 0.3, 0.4, 0.5]})
    with pytest.raises((InputError, InputErrors)) as exc:
        table_from_frame(df)
    assert "label 2 (2 such row(s))" in str(exc.value) and "row 3" in str(exc.value)
