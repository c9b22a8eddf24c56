"""The dashboard's Clinical utility page under Streamlit's AppTest, on the fixture bundle with net benefit
and precision added by hand (tests/decision_fixture.py): the decision curve drawn for the selected site is
the one stored in curves.json, the tables show the bundle's numbers with n and intervals, and a run
without net benefit or precision does not list the page."""

from __future__ import annotations

import html
import json
import os
import time

import pytest
from decision_fixture import DECISION_THRESHOLDS, UNDEFINED, add_decision_and_precision

from test_dashboard_app import APP, figures, frame_with
from test_dashboard_data import write_fixture_run

PAGE = "views/decision.py"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    runs = tmp_path_factory.mktemp("dash-decision") / "runs"
    add_decision_and_precision(write_fixture_run(runs / "with-decision"))
    write_fixture_run(runs / "plain")
    add_decision_and_precision(write_fixture_run(runs / "precision-only"), decision=False)
    old = time.time() - 3600  # the plain run is older: the decision run opens first
    for f in [*(runs / "plain").iterdir(), *(runs / "precision-only").iterdir()]:
        os.utime(f, (old, old))
    return runs


@pytest.fixture
def page(runs, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("VALIDATE_DASHBOARD_RUNS", str(runs))

    def open_page(run: str, site: str | None = None):
        at = AppTest.from_file(APP, default_timeout=60)
        at.session_state["run"] = run
        at.switch_page(PAGE)
        at.run()
        if site is not None:
            at.selectbox(key="decision-site").set_value(site).run()
        assert not at.exception, [e.message for e in at.exception]
        return at

    return open_page


def _sep(e) -> str:
    """The interval convention: an en dash, " to " when a bound is negative (a dash beside a minus misreads)."""
    return " to " if e["ci_low"] < 0 else "–"


def load(runs, file):
    return json.loads((runs / "with-decision" / file).read_text())


def trace(fig: dict, name: str) -> dict:
    found = [t for t in fig["data"] if t.get("name") == name]
    assert len(found) == 1, [t.get("name") for t in fig["data"]]
    return found[0]


def test_site_selector_lists_the_sites_and_the_pooled_curve(page):
    at = page("with-decision")
    assert at.title[0].value == "Clinical utility and precision"
    assert at.selectbox(key="decision-site").options == ["alpha", "beta", "gamma", "all sites (pooled)"]


@pytest.mark.parametrize("site", ["beta", "gamma", "overall"])
def test_the_drawn_curve_is_the_stored_one(page, runs, site):
    at = page("with-decision", site)
    decision = load(runs, "curves.json")["decision"]
    stored = decision["blocks"]["overall"] if site == "overall" else decision["blocks"]["sites"][site]
    (fig,) = figures(at)
    model = trace(fig, "model")
    assert model["x"] == decision["thresholds"]
    assert model["y"] == pytest.approx(stored["net_benefit"], abs=1e-12)
    assert trace(fig, "treat all")["y"] == pytest.approx(stored["treat_all"], abs=1e-12)
    band = trace(fig, "model: 95% interval")
    k = len(decision["thresholds"])
    assert band["y"][:k] == pytest.approx(stored["net_benefit_ci_high"], abs=1e-12)
    assert band["y"][k:] == pytest.approx(stored["net_benefit_ci_low"][::-1], abs=1e-12)
    assert f"n={stored['n']}, {stored['n_events']} events" in fig["layout"]["title"]["text"]
    caption = " ".join(c.value for c in at.caption).lower()
    assert ("mixes the sites' prevalences" if site == "overall" else "each site at its own prevalence") in caption
    assert "not a significance test" in caption


def test_net_benefit_table_of_the_selected_site(page, runs):
    site, metric, t, why = UNDEFINED
    at = page("with-decision", site)
    block = load(runs, "metrics.json")["sites"][site]
    table = frame_with(at, "Beats both defaults")
    assert list(table["Site"]) == [site] * len(DECISION_THRESHOLDS)
    assert list(table["n"]) == [block["n"]] * len(DECISION_THRESHOLDS)
    assert list(table["Events"]) == [block["n_events"]] * len(DECISION_THRESHOLDS)
    for item, (_, row) in zip(block["decision"], table.iterrows(), strict=True):
        e = item["net_benefit"]
        assert row["Net benefit"] == f"{e['estimate']:.3f} ({e['ci_low']:.3f}{_sep(e)}{e['ci_high']:.3f})"
        a = item["interventions_avoided"]
        assert (
            row["Interventions avoided per 100"]
            == f"{a['estimate']:.1f} ({a['ci_low']:.1f}{_sep(a)}{a['ci_high']:.1f})"
        )
        assert row["Beats both defaults"] == f"{100 * item['beats_defaults']:.0f}%"
        assert row["Insufficient"] == "insufficient"  # gamma is below the fixture's count floor
    undefined = table[table["Threshold"] == f"{t:.2f}"].iloc[0]
    assert undefined["Standardised NB"] == f"undefined ({why})"


def test_precision_table_shows_every_criterion(page, runs):
    at = page("with-decision")
    metrics = load(runs, "metrics.json")
    table = frame_with(at, "Target width")
    expected = [
        (s, c)
        for s, b in [*metrics["sites"].items(), ("all sites (pooled)", metrics["overall"])]
        for c in b["precision"]["criteria"]
    ]
    assert len(table) == len(expected)
    for (site, c), (_, row) in zip(expected, table.iterrows(), strict=True):
        assert row["Site"] == site
        assert row["CI width"] == f"{c['width']:.2f}" and row["Target width"] == f"{c['target']:.2f}"
        assert row["Precision"] == ("adequate" if c["adequate"] else "too wide")
        assert row["Has n"] == f"{c['n']:,}"
        if c["needed_n"] is not None:
            assert row["Needed n"] == f"{c['needed_n']:,} ({c['needed_events']:,} events)"
    reasons = html.unescape(" ".join(m.value for m in at.markdown))  # markdown text escapes < > &
    assert metrics["sites"]["gamma"]["precision"]["reason"] in reasons


def test_a_run_without_net_benefit_or_precision_does_not_list_the_page(page):
    at = page("plain")
    # the page is not registered for this run: navigation falls back to the default page
    assert at.title[0].value == "Overview"
    assert not any("Decision curve" in json.dumps(f) for f in figures(at))


def test_a_run_with_precision_alone_shows_its_table_and_says_how_to_add_net_benefit(page, runs):
    at = page("precision-only")
    assert at.title[0].value == "Clinical utility and precision"
    assert not figures(at)
    assert "Target width" in frame_with(at, "Target width").columns
    assert any("decision" in i.value and "thresholds" in i.value for i in at.info)


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    """A bundle written by `validate run` (the synthetic three-site protocol of tests/test_run_helpers.py)
    with two decision thresholds: the engine's net benefit, decision curves and precision."""
    from validate.cli import main

    from test_run_helpers import make_protocol

    root = tmp_path_factory.mktemp("real-decision")
    protocol = make_protocol(root / "protocol")
    protocol.write_text(protocol.read_text() + "decision: {thresholds: [0.1, 0.3], range: [0.05, 0.5], step: 0.05}\n")
    assert main(["run", str(protocol), "--out", str(root / "runs" / "synthetic"), "--quiet"]) in (0, 1)
    return root / "runs"


def counted_net_benefit(y, p, t: float) -> float:
    """NB(t) = TP/n − FP/n · t/(1−t), treat = p ≥ t, by counting (Vickers & Elkin 2006)."""
    tp = sum(1 for yi, pi in zip(y, p, strict=True) if pi >= t and yi == 1)
    fp = sum(1 for yi, pi in zip(y, p, strict=True) if pi >= t and yi == 0)
    return tp / len(y) - fp / len(y) * t / (1 - t)


@pytest.mark.slow
def test_a_real_bundle_shows_the_counted_net_benefit(real_runs, monkeypatch):
    import pandas as pd
    from scipy.special import expit
    from streamlit.testing.v1 import AppTest

    from validate.bundle import Bundle
    from validate.report.render import render_report

    monkeypatch.setenv("VALIDATE_DASHBOARD_RUNS", str(real_runs))
    bundle = real_runs / "synthetic"
    metrics = json.loads((bundle / "metrics.json").read_text())
    decision = json.loads((bundle / "curves.json").read_text())["decision"]
    pred = pd.read_parquet(bundle / "predictions.parquet")
    site = "ext_flat"
    y = pred.loc[pred.site == site, "y"].to_numpy()
    p = expit(pred.loc[pred.site == site, "logit"].to_numpy())
    # what is drawn: the curve of the bundle, which is the counted net benefit at every threshold
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page(PAGE)
    at.run()
    at.selectbox(key="decision-site").set_value(site).run()
    assert not at.exception, [e.message for e in at.exception]
    (fig,) = figures(at)
    drawn = trace(fig, "model")["y"]
    assert drawn == pytest.approx([counted_net_benefit(y, p, t) for t in decision["thresholds"]], abs=1e-12)
    assert drawn == pytest.approx(decision["blocks"]["sites"][site]["net_benefit"], abs=1e-15)
    # what is tabulated: the block's entries at the decision thresholds, with n and interval
    table = frame_with(at, "Beats both defaults")
    items = metrics["sites"][site]["decision"]
    assert [float(t) for t in table["Threshold"]] == [0.1, 0.3] == [d["threshold"] for d in items]
    for item, (_, row) in zip(items, table.iterrows(), strict=True):
        e = item["net_benefit"]
        assert e["estimate"] == pytest.approx(counted_net_benefit(y, p, item["threshold"]), abs=1e-12)
        assert row["Net benefit"] == f"{e['estimate']:.3f} ({e['ci_low']:.3f}{_sep(e)}{e['ci_high']:.3f})"
        assert row["n"] == len(y)
    assert not frame_with(at, "Target width").empty  # the engine's precision criteria
    # the report shows the same section from the same bundle
    text = render_report(Bundle(path=bundle))
    assert '<section id="utility">' in text and '<section id="precision">' in text
    assert text.count("Decision curve at ") == len(metrics["sites"])
