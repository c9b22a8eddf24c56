"""Every dashboard page under Streamlit's AppTest, on the hand-written fixture bundle.

Expected values are read from the fixture's own JSON / parquet files and, where the page derives
something (the most confident errors, a difference between runs), recomputed here from their
definitions with numpy/scipy, never taken from the dashboard's code.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from test_dashboard_data import write_fixture_run

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "dashboard" / "app.py")
NUM = re.compile(r"-?\d+\.\d+")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dash")
    runs = root / "runs"
    write_fixture_run(runs / "fixture-v1", image_root=root / "images" / "gamma")
    write_fixture_run(runs / "fixture-v2", image_root=root / "images" / "gamma", auroc_shift=0.015, seed=1)
    old = time.time() - 3600  # v1 is the older run: v2 opens first
    for f in (runs / "fixture-v1").iterdir():
        os.utime(f, (old, old))
    return runs


@pytest.fixture
def app(runs, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("VALIDATE_DASHBOARD_RUNS", str(runs))

    def open_page(page: str | None = None, run: str | None = None):
        at = AppTest.from_file(APP, default_timeout=60)
        if run is not None:
            at.session_state["run"] = run  # the sidebar's run picker
        if page is not None:
            at.switch_page(page)  # url paths equal the file names, so this works before the first run
        at.run()
        assert not at.exception, [e.message for e in at.exception]
        if run is not None:
            assert at.sidebar.selectbox(key="run").value == run
        return at

    return open_page


def load(runs, name, file):
    return json.loads((runs / name / file).read_text())


def numbers(text: str) -> list[float]:
    return [float(x) for x in NUM.findall(str(text))]


def figures(at) -> list[dict]:
    return [json.loads(e.proto.spec) for e in at.get("plotly_chart")]


def frame_with(at, column: str) -> pd.DataFrame:
    for df in at.dataframe:
        v = df.value
        v = v.data if hasattr(v, "data") and not isinstance(v, pd.DataFrame) else v
        if column in v.columns:
            return v
    raise AssertionError(f"no table with column {column!r}")


def test_overview_site_table_and_verdict(app, runs):
    at = app(run="fixture-v1")
    metrics = load(runs, "fixture-v1", "metrics.json")
    gates = load(runs, "fixture-v1", "gates.json")
    assert at.title[0].value == "Overview"
    assert any("FAIL" in e.value for e in at.error)  # the fixture's verdict
    table = frame_with(at, "AUROC")
    assert list(table["Site"]) == ["alpha", "beta", "gamma", "All sites"]
    rank = {"pass": 0, "warn": 1, "fail": 2}
    for site, block in metrics["sites"].items():
        row = table[table["Site"] == site].iloc[0]
        assert int(row["n"]) == block["n"] and int(row["Events"]) == block["n_events"]
        assert float(row["Prevalence"]) == pytest.approx(block["prevalence"], abs=5e-4)
        for col, key in (
            ("AUROC", "auroc"),
            ("ECE", "ece"),
            ("Calibration slope", "calibration_slope"),
            ("Calibration intercept", "calibration_intercept"),
        ):
            e = block[key]
            assert numbers(row[col]) == pytest.approx([e["estimate"], e["ci_low"], e["ci_high"]], abs=5e-4)
        verdicts = [r["verdict"] for r in gates["rows"] if r["site"] == site]
        assert row["Gates"] == max(verdicts, key=rank.get)
    assert "6 events" in table[table["Site"] == "gamma"].iloc[0]["Note"]
    pooled = table[table["Site"] == "All sites"].iloc[0]
    assert int(pooled["n"]) == metrics["overall"]["n"]
    # gate rows and the failure list
    g = frame_with(at, "Verdict")
    assert sorted(g["Verdict"]) == sorted(r["verdict"] for r in gates["rows"])
    f = frame_with(at, "reason")
    assert list(f["case_id"]) == ["beta-404"]
    # the forest plot: one point per site with error bars from metrics.json
    figs = figures(at)
    assert figs, "the Overview shows a figure"
    xs = _scatter_values(figs[0])
    for site, block in metrics["sites"].items():
        assert any(v == pytest.approx(block["auroc"]["estimate"]) for v in xs), site
    # every table has its CSV button and the report is downloadable from the sidebar
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels.count("Download CSV") >= 4
    assert "Download HTML report" in labels


def _scatter_values(fig: dict) -> list[float]:
    out = []
    for tr in fig["data"]:
        for axis in ("x", "y"):
            for v in tr.get(axis) or []:
                if isinstance(v, (int, float)):
                    out.append(float(v))
    return out


def test_cases_page_lists_the_most_confident_errors(app, runs):
    at = app("views/cases.py", run="fixture-v1")
    pred = pd.read_parquet(runs / "fixture-v1" / "predictions.parquet")
    pred["p"] = expit(pred["logit"])
    pred["call"] = (pred["p"] >= 0.5).astype(int)
    pred["conf"] = np.where(pred["call"] == 1, pred["p"], 1 - pred["p"])
    errors = pred[pred["call"] != pred["y"]].sort_values("conf", ascending=False, kind="mergesort")

    def expected(site):
        return errors[errors["site"] == site].head(10)

    table = frame_with(at, "confidence")
    want = expected("alpha")  # the first site is shown first
    assert list(table["case_id"]) == list(want["case_id"])
    assert [float(x) for x in table["confidence"]] == pytest.approx(list(want["conf"]), abs=5e-4)
    at.selectbox(key="cases-site").set_value("beta").run()
    table = frame_with(at, "confidence")
    want = expected("beta")
    assert list(table["case_id"])[:2] == ["beta-030", "beta-001"]  # the two planted errors
    assert list(table["case_id"]) == list(want["case_id"])
    assert list(table["true"])[:2] == ["absent", "present"]
    assert not at.get("image"), "beta is not an image site"
    # gamma: thumbnails from its image root; the case whose image path leaves the root has none
    at.selectbox(key="cases-site").set_value("gamma").run()
    table = frame_with(at, "confidence")
    want = expected("gamma")
    assert list(table["case_id"]) == list(want["case_id"]) and table["case_id"].iloc[0] == "gamma-019"
    images = at.get("image")
    assert len(images) == len(want) - 1
    counts = frame_with(at, "errors")
    for site in ("alpha", "beta", "gamma"):
        assert int(counts[counts["site"] == site]["errors"].iloc[0]) == int((errors["site"] == site).sum())


def test_compare_runs_differences_use_mover_intervals(app, runs):
    at = app("views/compare.py", run="fixture-v2")
    at.selectbox(key="compare-base").set_value("fixture-v1").run()
    # the fixture bundles do not record which key hashed their ids: same sites, cases unknown, no Δ
    assert "cannot be told" in " ".join(w.value for w in at.warning)
    assert not any("Difference (new − base)" in getattr(df.value, "columns", []) for df in at.dataframe)
    at.checkbox(key="compare-independent").check().run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("independent cohorts (MOVER)" in h.value for h in at.subheader)
    a = load(runs, "fixture-v2", "metrics.json")["sites"]
    b = load(runs, "fixture-v1", "metrics.json")["sites"]
    table = frame_with(at, "Difference (new − base)")
    for site in ("alpha", "beta", "gamma"):
        row = table[(table["Site"] == site) & (table["Metric"] == "AUROC")].iloc[0]
        ea, eb = a[site]["auroc"], b[site]["auroc"]
        # the fixture's intervals are symmetric: MOVER is then d -/+ sqrt(h_a^2 + h_b^2)
        half = math.hypot(ea["ci_high"] - ea["estimate"], eb["ci_high"] - eb["estimate"])
        d = ea["estimate"] - eb["estimate"]
        assert numbers(row["Difference (new − base)"]) == pytest.approx([d, d - half, d + half], abs=5e-4)
        assert row["Reading"] == "no clear change"
        assert numbers(row["Baseline (fixture-v1)"])[0] == pytest.approx(eb["estimate"], abs=5e-4)
    figs = figures(at)
    assert figs and any(tr.get("type") == "scatter" for tr in figs[0]["data"])


def test_subgroups_page_table_marks_insufficient_groups(app, runs):
    at = app("views/subgroups.py", run="fixture-v1")
    metrics = load(runs, "fixture-v1", "metrics.json")
    sub = load(runs, "fixture-v1", "subgroups.json")
    table = frame_with(at, "Gap to site")
    pooled = table[table["Site"] == "All sites"]
    for group, block in metrics["subgroups"]["sex"].items():
        row = pooled[pooled["Group"] == group].iloc[0]
        assert int(row["n"]) == block["n"]
        e = block["auroc"]
        assert numbers(row["AUROC"]) == pytest.approx([e["estimate"], e["ci_low"], e["ci_high"]], abs=5e-4)
    for site, entry in sub["sites"].items():
        for group, cell in entry["subgroups"]["sex"].items():
            row = table[(table["Site"] == site) & (table["Group"] == group)].iloc[0]
            assert int(row["n"]) == cell["block"]["n"]
            g = cell["gap"]["auroc"]
            assert numbers(row["Gap to site"]) == pytest.approx([g["estimate"], g["ci_low"], g["ci_high"]], abs=5e-4)
            assert bool(row["Insufficient"]) == bool(cell["block"].get("insufficient"))
    assert len(figures(at)) >= 2  # forest plot and heatmap


def test_calibration_methods_page(app, runs):
    at = app("views/calibration.py", run="fixture-v1")
    cal = load(runs, "fixture-v1", "calibration.json")
    assert any(f"Recommended: {cal['recommended']}" in s.value for s in at.success)
    table = frame_with(at, "Method")
    for method, entry in cal["methods"].items():
        for site, block in entry["sites"].items():
            row = table[(table["Method"] == method) & (table["Site"] == site)].iloc[0]
            e = block["ece"]
            assert int(row["n"]) == block["n"]
            assert numbers(row["ECE"]) == pytest.approx([e["estimate"], e["ci_low"], e["ci_high"]], abs=5e-4)
    # fitted parameters as (method, parameter, value) rows, not a Python dump
    params = frame_with(at, "Parameter")
    row = params[(params["Method"] == "temperature") & (params["Parameter"] == "temperature")].iloc[0]
    assert float(row["Value"]) == pytest.approx(cal["methods"]["temperature"]["params"]["temperature"], abs=5e-5)
    assert not params["Value"].str.contains(r"[\[\]{}]").any()
    assert figures(at)


def test_shift_page_summarises_flagged_sites(app, runs):
    at = app("views/shift.py", run="fixture-v1")
    shift = load(runs, "fixture-v1", "shift.json")
    table = frame_with(at, "Flagged")
    assert list(table["Site"]) == list(shift["sites"])
    for site, s in shift["sites"].items():
        row = table[table["Site"] == site].iloc[0]
        assert bool(row["Flagged"]) == s["flagged"] and int(row["n"]) == s["n"]
        assert row["Largest difference"] == s["ranking"][0]["id"]


def test_a_folder_with_only_metrics_json_opens_on_every_page(tmp_path, monkeypatch):
    """`validate metrics --json` output is a bundle too: pages without their part say so, none breaks."""
    from streamlit.testing.v1 import AppTest

    from test_dashboard_data import metrics_json

    run = tmp_path / "runs" / "metrics-only"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps(metrics_json()))
    monkeypatch.setenv("VALIDATE_DASHBOARD_RUNS", str(tmp_path / "runs"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert list(frame_with(at, "AUROC")["Site"]) == ["alpha", "beta", "gamma", "All sites"]
    for page in ("reliability", "subgroups", "calibration", "discrimination", "cases", "compare"):
        at.switch_page(f"views/{page}.py").run()
        assert not at.exception, (page, [e.message for e in at.exception])
        assert at.title[0].value


def test_overview_cohort_table_from_sites_json(app, runs):
    at = app(run="fixture-v1")
    cohorts = load(runs, "fixture-v1", "sites.json")["sites"]
    table = frame_with(at, "Patients")
    for site, e in cohorts.items():
        row = table[table["Site"] == site].iloc[0]
        assert int(row["n"]) == e["n"] and int(row["Excluded"]) == e["n_excluded"]
        assert row["sex"] == ", ".join(f"{g} {k}" for g, k in e["make_up"]["sex"].items())
        p = e["prevalence"]
        assert numbers(row["Prevalence"]) == pytest.approx([p["estimate"], p["ci_low"], p["ci_high"]], abs=5e-4)


def _traces(fig, kind):
    return [t for t in fig["data"] if t.get("type") == kind]


def test_reliability_page_draws_the_stored_bins_and_a_subgroup_on_demand(app, runs):
    at = app("views/reliability.py", run="fixture-v1")
    curves = load(runs, "fixture-v1", "curves.json")
    at.selectbox(key="reliability-site").set_value("beta").run()
    rel = curves["sites"]["beta"]["reliability"]
    fig = figures(at)[0]
    nonempty = [i for i, c in enumerate(rel["count"]) if c]
    lines = [t for t in _traces(fig, "scatter") if t.get("mode") == "lines+markers"]
    assert lines[0]["x"] == pytest.approx([rel["mean_predicted"][i] for i in nonempty])
    assert lines[0]["y"] == pytest.approx([rel["observed"][i] for i in nonempty])
    bars = _traces(fig, "bar")
    assert sum(sum(b["y"]) for b in bars) == curves["sites"]["beta"]["n"]
    # after a calibration method: the stored calibrated bins
    at.selectbox(key="reliability-method").set_value("platt").run()
    assert not at.exception
    fig = figures(at)[0]
    prel = curves["calibrated"]["platt"]["sites"]["beta"]["reliability"]
    lines = [t for t in _traces(fig, "scatter") if t.get("mode") == "lines+markers"]
    assert lines[0]["x"] == pytest.approx([prel["mean_predicted"][i] for i, c in enumerate(prel["count"]) if c])
    # one subgroup: bins computed here from the predictions, equal-width and right-closed as ECE
    at.selectbox(key="reliability-method").set_value("none").run()
    at.selectbox(key="reliability-group").set_value(("sex", "female")).run()
    assert not at.exception, [e.message for e in at.exception]
    pred = pd.read_parquet(runs / "fixture-v1" / "predictions.parquet")
    part = pred[(pred.site == "beta") & (pred.sex == "female")]
    p = expit(part["logit"].to_numpy())
    idx = np.clip(np.ceil(p * 15).astype(int) - 1, 0, 14)
    want_x = [p[idx == b].mean() for b in range(15) if (idx == b).any()]
    want_y = [part["y"].to_numpy()[idx == b].mean() for b in range(15) if (idx == b).any()]
    fig = figures(at)[0]
    lines = [t for t in _traces(fig, "scatter") if t.get("mode") == "lines+markers"]
    assert lines[0]["x"] == pytest.approx(want_x) and lines[0]["y"] == pytest.approx(want_y)
    assert "female" in fig["layout"]["title"]["text"]


def test_discrimination_page_roc_matches_sklearn_and_the_bundle(app, runs):
    from sklearn.metrics import roc_curve

    at = app("views/discrimination.py", run="fixture-v1")
    curves = load(runs, "fixture-v1", "curves.json")
    metrics = load(runs, "fixture-v1", "metrics.json")
    roc = figures(at)[0]
    pred = pd.read_parquet(runs / "fixture-v1" / "predictions.parquet")
    for site in ("alpha", "beta", "gamma"):
        line = next(t for t in roc["data"] if t.get("name", "").startswith(f"{site}: AUROC"))
        assert line["x"] == pytest.approx(curves["sites"][site]["roc"]["fpr"])
        part = pred[pred.site == site]
        fpr, tpr, _ = roc_curve(part["y"], expit(part["logit"]), drop_intermediate=False)
        assert line["x"] == pytest.approx(list(fpr)) and line["y"] == pytest.approx(list(tpr))
        assert f"{metrics['sites'][site]['auroc']['estimate']:.3f}" in line["name"]
    pr = figures(at)[1]
    assert any(t.get("name", "").startswith("beta: AUPRC") for t in pr["data"])
    table = frame_with(at, "Rule")
    beta = table[table["Site"] == "beta"]
    tgt = metrics["sites"]["beta"]["target_sensitivity"]
    carried = beta[beta["Rule"].str.contains("carried")].iloc[0]
    assert float(carried["Threshold"]) == pytest.approx(tgt["threshold"], abs=5e-5)
    s = tgt["sensitivity"]
    assert numbers(carried["Sensitivity"]) == pytest.approx([s["estimate"], s["ci_low"], s["ci_high"]], abs=5e-4)


def test_subgroup_figures_show_the_bundle_numbers(app, runs):
    at = app("views/subgroups.py", run="fixture-v1")
    sub = load(runs, "fixture-v1", "subgroups.json")
    figs = figures(at)
    forest = figs[0]
    heat = next(f for f in figs if _traces(f, "heatmap"))
    gap = next(f for f in figs if "Gap in" in f["layout"]["title"]["text"])
    gap_x = [x for t in _traces(gap, "scatter") for x in (t.get("x") or []) if isinstance(x, (int, float))]
    for g, cell in sub["overall"]["subgroups"]["sex"].items():
        assert any(x == pytest.approx(cell["gap"]["auroc"]["estimate"]) for x in gap_x), g
    xs = [x for t in _traces(forest, "scatter") for x in (t.get("x") or []) if isinstance(x, (int, float))]
    for g, cell in sub["overall"]["subgroups"]["sex"].items():
        assert any(x == pytest.approx(cell["block"]["auroc"]["estimate"]) for x in xs), g
    hm = _traces(heat, "heatmap")
    z = hm[1]["z"]  # the layer of cells with enough data; insufficient cells are None there
    for i, site in enumerate(("alpha", "beta", "gamma")):
        for j, g in enumerate(("female", "male")):
            block = sub["sites"][site]["subgroups"]["sex"][g]["block"]
            if block.get("insufficient"):
                assert z[i][j] is None
            else:
                assert z[i][j] == pytest.approx(block["auroc"]["estimate"])


def test_calibration_and_shift_figures(app, runs):
    at = app("views/calibration.py", run="fixture-v1")
    cal = load(runs, "fixture-v1", "calibration.json")
    fig = figures(at)[0]
    for method, entry in cal["methods"].items():
        trace = next(t for t in fig["data"] if t.get("name", "").startswith(method))
        assert trace["y"] == pytest.approx([entry["sites"][s]["ece"]["estimate"] for s in trace["x"]])
    at = app("views/shift.py", run="fixture-v1")
    shift = load(runs, "fixture-v1", "shift.json")
    bars = _traces(figures(at)[0], "bar")[0]
    assert bars["y"] == [r["id"] for r in shift["sites"]["beta"]["ranking"]]
    drift = figures(at)[1]
    windows = shift["drift"]["sites"]["beta"]["windows"]
    line = [t for t in _traces(drift, "scatter") if t.get("mode") == "lines+markers"][0]
    assert line["x"] == [w["window"] for w in windows]
    assert line["y"] == pytest.approx([w["auroc"]["estimate"] for w in windows])
    table = frame_with(at, "Window")
    assert list(table["Flagged"]) == [w["flagged"] for w in windows]


def test_calibration_designs_sample_size_transfer_and_local(app, runs):
    at = app("views/calibration.py", run="fixture-v1")
    designs = load(runs, "fixture-v1", "calibration.json")["designs"]
    figs = figures(at)
    sample = next(f for f in figs if "fitting-set size" in f["layout"]["title"]["text"])
    for method in ("temperature", "platt"):
        line = next(t for t in sample["data"] if t.get("name") == f"beta: {method}")
        sizes = designs["sample_size"]["sites"]["beta"]["sizes"]
        assert line["x"] == [10, 20]
        assert line["y"] == pytest.approx([sizes[k]["methods"][method]["ece"]["mean"] for k in ("10", "20")])
    transfer = next(f for f in figs if f["layout"]["title"]["text"].startswith("Transfer"))
    hm = _traces(transfer, "heatmap")[0]
    cells = designs["transfer"]["methods"]["platt"]["ece"]  # the recommended method is shown first
    for i, fit in enumerate(hm["y"]):
        for j, ev in enumerate(hm["x"]):
            want = cells.get(fit, {}).get(ev)
            assert hm["z"][i][j] == (pytest.approx(want) if want is not None else None)
    local = frame_with(at, "Beats none (log loss)")
    row = local[(local["Site"] == "beta") & (local["Method"] == "platt")].iloc[0]
    e = designs["local"]["sites"]["beta"]["methods"]["platt"]["ece"]
    assert numbers(row["ECE"]) == pytest.approx([e["mean"], e["q025"], e["q975"]], abs=5e-4)
    assert row["Beats none (log loss)"] == "80%"
    assert "too few" in local[local["Site"] == "gamma"].iloc[0]["Note"]


def test_csv_download_cells_are_no_spreadsheet_formulas():
    from dashboard.ui import csv_bytes

    frame = pd.DataFrame(
        {
            "case_id": ["=cmd|' /C calc'!A0", "@SUM(1)", "+1+1x", "-2+3", "-0.5", "ok"],
            "estimate": [-0.5, 0.25, -1e-4, 0.0, 1.5, -3.0],
        }
    )
    data = csv_bytes(frame)
    back = pd.read_csv(__import__("io").BytesIO(data), dtype={"case_id": str})
    assert back["case_id"].tolist() == ["'=cmd|' /C calc'!A0", "'@SUM(1)", "'+1+1x", "'-2+3", "-0.5", "ok"]
    assert back["estimate"].dtype.kind == "f" and back["estimate"].tolist() == [-0.5, 0.25, -1e-4, 0.0, 1.5, -3.0]


def test_hostile_bundle_texts_render_as_text(tmp_path, monkeypatch):
    """A bundle is data: a protocol version or run name holding Markdown (an image that would load
    from the network, a link) is shown as text, not rendered."""
    from streamlit.testing.v1 import AppTest

    runs = tmp_path / "runs"
    folder = write_fixture_run(runs / "evil")
    prov = json.loads((folder / "provenance.json").read_text())
    prov["protocol"]["version"] = "![p](https://evil.example/p.png) <img src=x onerror=alert(1)>"
    prov["checkpoint"]["path"] = "`x` [y](javascript:alert(1))"
    (folder / "provenance.json").write_text(json.dumps(prov))
    monkeypatch.setenv("VALIDATE_DASHBOARD_RUNS", str(runs))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    texts = [e.value for e in at.markdown] + [e.value for e in at.caption]
    hostile = [t for t in texts if "evil.example" in t or "javascript" in t]
    assert hostile, texts
    for t in hostile:
        assert "![p](" not in t and "<img" not in t and "](javascript:" not in t and "https://" not in t, t
    assert any("\\!\\[p\\]" in t or "!\\[p\\]" in t for t in hostile), hostile


def test_overview_lists_a_declared_site_without_scored_cases(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    runs = tmp_path / "runs"
    folder = write_fixture_run(runs / "vanished")
    proto = (folder / "protocol.yaml").read_text()
    (folder / "protocol.yaml").write_text(
        proto.replace(
            "  - {id: beta,", "  - {id: delta, name: Delta Clinic, manifest: delta.csv, role: external}\n  - {id: beta,"
        )
    )
    monkeypatch.setenv("VALIDATE_DASHBOARD_RUNS", str(runs))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    table = frame_with(at, "AUROC")
    assert list(table["Site"]) == ["alpha", "beta", "gamma", "delta", "All sites"]
    delta = table[table["Site"] == "delta"].iloc[0]
    assert int(delta["n"]) == 0 and "no scored case" in delta["Note"]
