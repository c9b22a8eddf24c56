"""The "Across hospitals" dashboard page under Streamlit's AppTest, on the fixture bundle with a
hand-made synthesis (tests/synthesis_fixture.py): the numbers shown are the bundle's, the figure has the
diamond and the prediction interval, k < 3 says why there is none, and a run without a synthesis says
so instead of drawing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import synthesis_fixture as fx

from test_dashboard_data import write_fixture_run

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "dashboard" / "app.py")
PAGE = "views/synthesis.py"


def write_synthesis_run(folder: Path, synthesis: dict | None) -> Path:
    write_fixture_run(folder)
    if synthesis is not None:
        metrics = json.loads((folder / "metrics.json").read_text())
        (folder / "metrics.json").write_text(json.dumps(fx.with_synthesis(metrics, synthesis)))
    return folder


def open_page(runs: Path, monkeypatch, run: str):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("VALIDATE_DASHBOARD_RUNS", str(runs))
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["run"] = run
    at.switch_page(PAGE)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def _frame(at, column: str):
    for df in at.dataframe:
        if column in df.value.columns:
            return df.value
    raise AssertionError(f"no table with column {column!r}")


def _figure(at) -> dict:
    (chart,) = at.get("plotly_chart")
    return json.loads(chart.proto.spec)


@pytest.mark.slow
def test_across_hospitals_page_shows_the_synthesis_of_the_bundle(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    write_synthesis_run(runs / "all", fx.all_sites())
    at = open_page(runs, monkeypatch, "all")
    summary = _frame(at, "Metric").set_index("Metric")
    assert summary.loc["AUROC", "Pooled (95% CI)"] == "0.801 (0.612–0.911)"
    assert summary.loc["AUROC", "95% prediction interval"] == "0.203–0.986"
    assert summary.loc["AUROC", "I²"] == "27%" and summary.loc["AUROC", "k"] == 3
    fig = _figure(at)
    (diamond,) = [t for t in fig["data"] if t.get("fill") == "toself"]
    assert min(diamond["x"]) == 0.612 and max(diamond["x"]) == 0.911
    (pi,) = [t for t in fig["data"] if "prediction interval" in (t.get("name") or "")]
    assert pi["x"] == [0.203, 0.986]
    assert any("where the next hospital's value is expected to lie, 95%" in c.value for c in at.caption)
    sites = _frame(at, "Pooled")
    assert list(sites["Site"]) == ["alpha · development", "beta · external", "gamma · external"]
    assert list(sites["n (events)"]) == ["n=40, 20 events", "n=40, 20 events", "n=20, 6 events"]


@pytest.mark.slow
def test_fewer_than_three_sites_say_why_there_is_no_prediction_interval(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    write_synthesis_run(runs / "ext", fx.external())
    at = open_page(runs, monkeypatch, "ext")
    # the reason is bundle text: inert Markdown, its "<" an entity (the browser test reads it rendered)
    assert any("k = 2 &lt; 3 sites: no prediction interval" in i.value for i in at.info)
    assert not [t for t in _figure(at)["data"] if "prediction interval" in (t.get("name") or "")]
    sites = _frame(at, "Pooled").set_index("Site")
    assert sites.loc["alpha · development (not pooled)", "Pooled"] == "no"


@pytest.mark.slow
def test_a_run_without_a_synthesis_has_no_across_hospitals_page(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    write_synthesis_run(runs / "plain", None)
    at = open_page(runs, monkeypatch, "plain")
    # the page is not registered: asking for it lands on the default page (Overview)
    assert [t.value for t in at.title] == ["Overview"]
    assert "Across hospitals" not in " ".join(m.value for m in at.markdown)
