"""Compare runs: which comparison two runs allow (dashboard.compare.pairing), the default baseline is a
run of the same protocol, runs of different protocols are refused (their numbers only listed on
request, never a difference), and the Model comparison page shows comparison.json's own numbers."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from comparison_fixture import comparison

from dashboard import compare

from test_dashboard_data import write_fixture_run

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")


def fake_run(name="heart", version="1.0", sites=("a", "b"), key="k1", task="binary", case_ids=None):
    prov = {
        "protocol": {"name": name, "version": version},
        "case_id_key_check": key,
        "case_ids": case_ids or "HMAC-SHA256 keyed by $VALIDATE_CASE_ID_KEY (not stored)",
    }
    return SimpleNamespace(
        provenance=prov, protocol={"sites": [{"id": s} for s in sites]}, sites=list(sites), task=task
    )


def never() -> int:
    raise AssertionError("cases counted where the keys already decide")


@pytest.mark.parametrize(
    "new, base, shared, kind",
    [
        (fake_run(), fake_run(), lambda: 40, compare.PAIRED),
        (fake_run(), fake_run(name="chest"), never, compare.UNRELATED),
        (fake_run(), fake_run(version="1.1"), never, compare.UNRELATED),
        (fake_run(), fake_run(key="k2"), never, compare.UNKNOWN),
        (fake_run(), fake_run(key=None), never, compare.UNKNOWN),
        (fake_run(case_ids="kept"), fake_run(), never, compare.UNKNOWN),
        (fake_run(case_ids="kept", key=None), fake_run(case_ids="kept", key=None), lambda: 3, compare.PAIRED),
        (fake_run(sites=("a",)), fake_run(sites=("c",), key="k2"), never, compare.INDEPENDENT),
        (fake_run(), fake_run(), lambda: 0, compare.INDEPENDENT),
        (fake_run(sites=("a", "b")), fake_run(sites=("a",)), lambda: 5, compare.PARTIAL),
    ],
)
def test_pairing(new, base, shared, kind):
    got = compare.pairing(new, base, shared)
    assert got.kind == kind, got.why
    if kind == compare.UNKNOWN:
        assert "VALIDATE_CASE_ID_KEY" in got.why  # says how to share the key
    if kind == compare.UNRELATED:
        assert "heart v1.0" in got.why


def test_shared_case_count_matches_site_and_id():
    import pandas as pd

    a = pd.DataFrame({"site": ["x", "x", "y"], "case_id": ["1", "2", "1"]})
    b = pd.DataFrame({"site": ["x", "y", "y"], "case_id": ["2", "2", "1"]})
    assert compare.shared_case_count(a, b) == 2  # (x, 2) and (y, 1); (y, 2) and (x, 1) are in one only


# ---- the pages under AppTest -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp") / "runs"
    write_fixture_run(root / "fixture-v1")
    write_fixture_run(root / "fixture-v2", auroc_shift=0.015, seed=1)
    write_fixture_run(root / "chest-run", name="chest")
    now = time.time()
    for age, run in ((3600, "fixture-v1"), (1800, "fixture-v2"), (0, "chest-run")):  # the chest run is newest
        for f in (root / run).iterdir():
            os.utime(f, (now - age, now - age))
    return root


def open_page(runs, monkeypatch, page: str, run: str):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("VALIDATE_DASHBOARD_RUNS", str(runs))
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["run"] = run
    at.switch_page(page)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_the_default_baseline_is_a_run_of_the_same_protocol(runs, monkeypatch):
    at = open_page(runs, monkeypatch, "views/compare.py", "fixture-v2")
    box = at.selectbox(key="compare-base")
    assert box.value == "fixture-v1"  # not the newer chest run
    assert box.options[0].startswith("fixture-v1")


def test_runs_of_another_protocol_are_refused(runs, monkeypatch):
    at = open_page(runs, monkeypatch, "views/compare.py", "fixture-v2")
    at.selectbox(key="compare-base").set_value("chest-run").run()
    assert not at.exception
    assert any(
        "different protocols" in e.value and "fixture v2.1" in e.value and "chest v2.1" in e.value for e in at.error
    )
    assert len(at.dataframe) == 0 and len(at.get("plotly_chart")) == 0
    # the reader insists: each run's own numbers, labelled, and still no difference
    at.checkbox(key="compare-insist").check().run()
    assert not at.exception
    frame = at.dataframe[0].value
    assert set(frame["Run"]) == {"fixture-v2", "chest-run"}
    assert not [c for c in frame.columns if "ifference" in c or "Δ" in c]
    assert any("NOT COMPARABLE" in c.value for c in at.caption)


def test_with_only_other_protocols_nothing_is_chosen(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    write_fixture_run(root / "fixture-v2")
    write_fixture_run(root / "chest-run", name="chest")
    at = open_page(root, monkeypatch, "views/compare.py", "fixture-v2")
    assert at.selectbox(key="compare-base").value is None
    assert any("No other run of protocol fixture v2.1" in i.value for i in at.info)
    assert len(at.dataframe) == 0


@pytest.fixture
def run_with_comparison(tmp_path):
    root = tmp_path / "runs"
    folder = write_fixture_run(root / "fixture-v2")
    (folder / "comparison.json").write_text(json.dumps(comparison()))
    gates = json.loads((folder / "gates.json").read_text())
    gates["gates"].append(
        {
            "metric": "ece",
            "scope": "overall",
            "direction": "max",
            "threshold": 0.01,
            "on": "ci_high",
            "name": "ece-no-worse",
            "calibration": None,
            "insufficient": "warn",
            "compare": "baseline",
        }
    )
    (folder / "gates.json").write_text(json.dumps(gates))
    return root


def test_model_comparison_page_shows_the_files_numbers(run_with_comparison, monkeypatch):
    at = open_page(run_with_comparison, monkeypatch, "views/comparison.py", "fixture-v2")
    cmp = comparison()
    table = at.dataframe[-1].value
    va = table[(table["Block"] == "va") & (table["Metric"] == "AUROC")].iloc[0]
    e = cmp["sites"]["va"]["metrics"]["auroc"]
    assert va["Δ new − baseline (CI)"] == (
        f"{e['delta']:.3f} ({e['ci_low']:.3f}{' to ' if e['ci_low'] < 0 else '–'}{e['ci_high']:.3f})"
    )
    assert va["n (events)"] == "200 (149)" and va["Method"] == "paired DeLong" and va["Reading"] == "better"
    female_va = table[(table["Block"] == "sex = female") & (table["Site"] == "va") & (table["Metric"] == "AUROC")]
    assert female_va.iloc[0]["Δ new − baseline (CI)"] == "— (one class only (no events))"
    # the ECE forest carries the gate's margin (max 0.01 on ci_high), dashed
    figs = [json.loads(f.proto.spec) for f in at.get("plotly_chart")]
    ece = next(f for f in figs if "ECE" in f["layout"]["title"]["text"])
    assert {(s["x0"], s["line"].get("dash")) for s in ece["layout"]["shapes"]} >= {(0.0, None), (0.01, "dash")}


def test_the_comparison_page_is_listed_only_for_a_run_with_comparison_json(run_with_comparison, runs, monkeypatch):
    from streamlit.testing.v1 import AppTest

    for folder, expected in ((run_with_comparison, True), (runs, False)):
        monkeypatch.setenv("VALIDATE_DASHBOARD_RUNS", str(folder))
        at = AppTest.from_file(APP, default_timeout=60)
        at.session_state["run"] = "fixture-v2"
        at.run()
        assert not at.exception
        # the pages st.navigation registered (AppTest keeps them to resolve switch_page)
        urls = [info.get("url_pathname") for info in at._registered_pages.values()]
        assert "compare" in urls
        assert ("comparison" in urls) == expected, urls


def test_shared_case_count_counts_a_repeated_pair_once_and_reads_categories():
    import pandas as pd

    a = pd.DataFrame({"site": pd.Categorical(["x", "x", "x"]), "case_id": ["1", "1", "2"]})
    b = pd.DataFrame({"site": ["x", "x", "z"], "case_id": ["1", "1", "2"]})
    assert compare.shared_case_count(a, b) == 1  # (x, 1), however often either table holds it
    big = pd.DataFrame({"site": ["s"] * 5000, "case_id": [str(i) for i in range(5000)]})
    half = big.iloc[::2].assign(site=pd.Categorical(["s"] * 2500))
    assert compare.shared_case_count(big, half) == 2500
