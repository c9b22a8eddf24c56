"""The Cases page pages through every error of a site (read from predictions.parquet by row group)
and through the cases that could not be scored. Expected rows are recomputed here from the definition
(p = expit(logit), called positive when p >= 0.5, confidence in the wrong call, stable sort)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.special import expit

from test_dashboard_app import APP
from test_dashboard_data import write_fixture_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    runs = tmp_path_factory.mktemp("browse") / "runs"
    folder = runs / "big"
    write_fixture_run(folder, image_root=None)
    rng = np.random.default_rng(5)
    n = 900
    site = np.repeat(["alpha", "beta", "gamma"], n // 3)
    y = rng.integers(0, 2, n)
    pred = pd.DataFrame(
        {
            "case_id": [f"{s}-{i:04d}" for i, s in enumerate(site)],
            "site": site,
            "patient_id": [f"p{i}" for i in range(n)],
            "y": y,
            "logit": np.round(rng.normal(0, 1.5, n) + 0.8 * (2 * y - 1), 2),
            "sex": rng.choice(["female", "male"], n),
        }
    )
    pq.write_table(pa.Table.from_pandas(pred, preserve_index=False), folder / "predictions.parquet", row_group_size=64)
    pd.DataFrame(
        {"site": "beta", "case_id": [f"beta-f{i:03d}" for i in range(60)], "reason": "image file not found"}
    ).to_csv(folder / "failures.csv", index=False)
    return runs


def _errors(runs, site):
    pred = pd.read_parquet(runs / "big" / "predictions.parquet")
    p = expit(pred["logit"])
    call = (p >= 0.5).astype(int)
    pred["conf"] = np.where(call == 1, p, 1 - p)
    wrong = pred[(call != pred["y"]) & (pred["site"] == site)]
    return wrong.sort_values("conf", ascending=False, kind="mergesort")


def _tables_with(at, column):
    out = []
    for df in at.dataframe:
        v = df.value
        v = v.data if hasattr(v, "data") and not isinstance(v, pd.DataFrame) else v
        if column in v.columns:
            out.append(v)
    return out


@pytest.fixture
def at(runs, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("VALIDATE_DASHBOARD_RUNS", str(runs))
    app = AppTest.from_file(APP, default_timeout=60)
    app.session_state["run"] = "big"
    app.switch_page("views/cases.py")
    app.run()
    assert not app.exception, [e.message for e in app.exception]
    return app


def test_every_error_of_a_site_a_page_at_a_time(at, runs):
    want = _errors(runs, "alpha")
    assert len(want) > 60
    assert len(_tables_with(at, "confidence")) == 1  # the browser reads predictions only when asked
    at.toggle(key="cases-browse").set_value(True).run()
    browsed = _tables_with(at, "confidence")[1]  # the first is the stored top ten
    assert list(browsed["case_id"]) == list(want["case_id"][:25])
    assert [float(x) for x in browsed["confidence"]] == pytest.approx(list(want["conf"][:25]), abs=5e-4)
    at.number_input(key="cases-all-alpha-page").set_value(3).run()
    assert list(_tables_with(at, "confidence")[1]["case_id"]) == list(want["case_id"][50:75])
    at.selectbox(key="cases-all-alpha-size").set_value(50).run()
    at.number_input(key="cases-all-alpha-page").set_value(2).run()
    assert list(_tables_with(at, "confidence")[1]["case_id"]) == list(want["case_id"][50:100])
    at.selectbox(key="cases-site").set_value("gamma").run()
    assert list(_tables_with(at, "confidence")[1]["case_id"]) == list(_errors(runs, "gamma")["case_id"][:25])
    assert not at.exception


def test_failures_of_a_site_a_page_at_a_time(at):
    at.selectbox(key="cases-site").set_value("beta").run()
    at.number_input(key="cases-failed-beta-page").set_value(3).run()
    failed = _tables_with(at, "reason")[0]
    assert list(failed["case_id"]) == [f"beta-f{i:03d}" for i in range(50, 60)]
