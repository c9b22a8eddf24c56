"""Paging through every error of a site from predictions.parquet (validate.case_pages) lists the cases
the engine's ranking (validate.analysis.cases.confident_errors) lists, in its order, reading only the
row groups that hold the site and the page."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from validate import case_pages
from validate.analysis.cases import confident_errors


def _write(path, frame, row_group_size=97):
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=row_group_size)
    return path


def _binary(n=1000, seed=0):
    rng = np.random.default_rng(seed)
    site = np.repeat(["a", "b", "c"], [400, 350, 250])  # grouped by site, as a bundle writes them
    logit = np.round(rng.normal(0, 2, n), 1)  # rounded: many ties, which keep the file's order
    return pd.DataFrame(
        {
            "case_id": [f"c{i:04d}" for i in range(n)],
            "site": site,
            "y": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int),
            "logit": logit,
            "sex": rng.choice(["F", "M"], n),
        }
    )


@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_binary_site_errors_are_the_engine_ranking(tmp_path, threshold):
    frame = _binary()
    path = _write(tmp_path / "predictions.parquet", frame)
    want, counts = confident_errors(frame, task="binary", threshold=threshold, per_site=10**6)
    for site in ("a", "b", "c"):
        got = case_pages.site_errors(path, site, task="binary", threshold=threshold)
        ref = want[want["site"] == site]
        assert got.errors == int(counts.loc[counts["site"] == site, "errors"].iloc[0]) == len(ref)
        assert got.cases == int((frame["site"] == site).sum())
        page = case_pages.read_rows(path, got.rows)
        assert page["case_id"].tolist() == ref["case_id"].tolist()
        np.testing.assert_allclose(got.confidence, ref["confidence"].to_numpy(), rtol=0, atol=1e-15)


def test_naive_loop_reference_and_pages(tmp_path):
    frame = _binary(seed=4)
    path = _write(tmp_path / "predictions.parquet", frame)
    got = case_pages.site_errors(path, "b", task="binary", threshold=0.5)
    # a naive loop: every case of site b, called, compared, sorted by confidence (stable)
    errs = []
    for i, r in frame.iterrows():
        if r["site"] != "b":
            continue
        p = 1 / (1 + np.exp(-r["logit"]))
        call = int(p >= 0.5)
        if call != r["y"]:
            errs.append((-(p if call else 1 - p), i))
    errs.sort(key=lambda e: e[0])  # sort is stable: ties keep the file's order
    assert got.rows.tolist() == [i for _, i in errs]
    assert got.pages(25) == -(-len(errs) // 25)
    second = case_pages.read_rows(path, got.rows[25:50], ["case_id", "sex"])
    assert second["case_id"].tolist() == frame["case_id"].to_numpy()[[i for _, i in errs][25:50]].tolist()
    assert list(second.columns) == ["case_id", "sex"]


def test_only_the_site_row_groups_are_read(tmp_path, monkeypatch):
    frame = _binary()
    path = _write(tmp_path / "predictions.parquet", frame, row_group_size=50)
    read = []
    real_one, real_many = pq.ParquetFile.read_row_group, pq.ParquetFile.read_row_groups

    def spy_one(self, i, *a, **k):
        read.append(i)
        return real_one(self, i, *a, **k)

    def spy_many(self, groups, *a, **k):
        read.extend(groups)
        return real_many(self, groups, *a, **k)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy_one)
    monkeypatch.setattr(pq.ParquetFile, "read_row_groups", spy_many)
    monkeypatch.setattr(pq.ParquetFile, "read", lambda *a, **k: pytest.fail("the whole file was read"))
    got = case_pages.site_errors(path, "c", task="binary")
    # site c is rows 750..999: row groups 15..19 of 20
    assert sorted(set(read)) == [15, 16, 17, 18, 19]
    read.clear()
    case_pages.read_rows(path, got.rows[:3])
    assert set(read) <= {15, 16, 17, 18, 19} and len(set(read)) <= 3


def test_multiclass_and_multilabel(tmp_path):
    rng = np.random.default_rng(2)
    n = 300
    base = {"case_id": [f"m{i}" for i in range(n)], "site": np.repeat(["x", "y"], n // 2)}
    mc = pd.DataFrame({**base, "y": rng.choice(["cat", "dog", "owl"], n)})
    for c in ("cat", "dog", "owl"):
        mc[f"logit_{c}"] = np.round(rng.normal(0, 1, n), 1)
    path = _write(tmp_path / "mc.parquet", mc)
    want, _ = confident_errors(mc, task="multiclass", classes=["cat", "dog", "owl"], per_site=10**6)
    got = case_pages.site_errors(path, "y", task="multiclass", classes=["cat", "dog", "owl"])
    assert case_pages.read_rows(path, got.rows)["case_id"].tolist() == want[want["site"] == "y"]["case_id"].tolist()

    ml = pd.DataFrame(base)
    for lab in ("fx", "ef"):
        ml[f"y_{lab}"] = rng.integers(0, 2, n)
        ml[f"p_{lab}"] = np.round(rng.random(n), 2)
    path = _write(tmp_path / "ml.parquet", ml)
    want, _ = confident_errors(ml, task="multilabel", label="ef", threshold=0.4, per_site=10**6)
    got = case_pages.site_errors(path, "x", task="multilabel", label="ef", threshold=0.4)
    assert case_pages.read_rows(path, got.rows)["case_id"].tolist() == want[want["site"] == "x"]["case_id"].tolist()


def test_a_site_without_cases(tmp_path):
    path = _write(tmp_path / "predictions.parquet", _binary())
    got = case_pages.site_errors(path, "nowhere", task="binary")
    assert got.errors == 0 and got.cases == 0 and got.pages(10) == 1
    assert case_pages.read_rows(path, got.rows).empty


def test_a_page_lists_what_the_engine_lists(tmp_path):
    frame = _binary(seed=7)
    path = _write(tmp_path / "predictions.parquet", frame)
    want, _ = confident_errors(
        frame, task="binary", classes=["benign", "malignant"], per_site=10**6, attributes=["sex"]
    )
    want = want[want["site"] == "a"].reset_index(drop=True)
    errs = case_pages.site_errors(path, "a", task="binary")
    page = case_pages.error_rows(
        path, errs.rows[10:20], task="binary", classes=["benign", "malignant"], attributes=["sex"]
    )
    ref = want.iloc[10:20].reset_index(drop=True)
    assert page["case_id"].tolist() == ref["case_id"].tolist()
    assert page["true"].tolist() == ref["true"].tolist() and page["called"].tolist() == ref["called"].tolist()
    assert set(page["called"]) <= {"benign", "malignant"} and page["sex"].tolist() == ref["sex"].tolist()
    np.testing.assert_allclose(page["confidence"], ref["confidence"], rtol=0, atol=1e-15)
    np.testing.assert_allclose(page["p"], ref["probability"], rtol=0, atol=1e-15)


def test_a_bundle_standardised_multiclass_file(tmp_path):
    from validate.predictions import as_table

    rng = np.random.default_rng(9)
    n = 240
    mc = pd.DataFrame({"case_id": [f"k{i}" for i in range(n)], "site": np.repeat(["x", "y"], n // 2)})
    mc["y"] = rng.choice(["cat", "dog", "owl"], n)
    for c in ("cat", "dog", "owl"):
        mc[f"p_{c}"] = rng.random(n)
    total = mc[["p_cat", "p_dog", "p_owl"]].sum(axis=1)
    for c in ("cat", "dog", "owl"):
        mc[f"p_{c}"] = mc[f"p_{c}"] / total
    standard = as_table(mc, task="multiclass", class_names=["cat", "dog", "owl"]).frame  # what a bundle holds
    assert pd.api.types.is_numeric_dtype(standard["y"])
    path = _write(tmp_path / "predictions.parquet", standard)
    want, _ = confident_errors(mc, task="multiclass", classes=["cat", "dog", "owl"], per_site=10**6)
    got = case_pages.site_errors(path, "x", task="multiclass")
    assert case_pages.read_rows(path, got.rows)["case_id"].tolist() == want[want["site"] == "x"]["case_id"].tolist()
    page = case_pages.error_rows(path, got.rows[:5], task="multiclass", classes=["cat", "dog", "owl"])
    ref = want[want["site"] == "x"].head(5)
    assert page["true"].tolist() == ref["true"].tolist() and page["called"].tolist() == ref["called"].tolist()
