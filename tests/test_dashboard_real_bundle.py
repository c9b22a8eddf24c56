"""The dashboard on a real bundle written by `validate run` (the synthetic three-site protocol of
tests/test_run_helpers.py, started from its predictions file), not on the hand-written fixture: every
page renders without an exception and shows the numbers of the bundle's own JSON files."""

from __future__ import annotations

import json

import pytest

from test_dashboard_app import APP, figures, frame_with, numbers
from test_run_helpers import make_protocol


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    from validate.cli import main

    root = tmp_path_factory.mktemp("real")
    protocol = make_protocol(root / "protocol")
    # without the sex x age intersection: its smallest cells (a handful of cases) are not what this test is
    # about, and they cost run time
    text = protocol.read_text().replace("  - {name: sex_x_age_band, intersection: [sex, age_band]}\n", "")
    protocol.write_text(text)
    rc = main(["run", str(protocol), "--out", str(root / "runs" / "synthetic"), "--quiet"])
    assert rc in (0, 1), f"validate run exited {rc}"
    return root / "runs"


def test_every_page_renders_a_real_bundle(real_runs, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("VALIDATE_DASHBOARD_RUNS", str(real_runs))
    bundle = real_runs / "synthetic"
    metrics = json.loads((bundle / "metrics.json").read_text())
    curves = json.loads((bundle / "curves.json").read_text())
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception, [e.message for e in at.exception]
    table = frame_with(at, "AUROC")
    assert list(table["Site"])[:-1] == list(metrics["sites"])
    for site, block in metrics["sites"].items():
        row = table[table["Site"] == site].iloc[0]
        assert int(row["n"]) == block["n"]
        e = block["auroc"]
        assert numbers(row["AUROC"]) == pytest.approx([e["estimate"], e["ci_low"], e["ci_high"]], abs=5e-4)
    pages = ["reliability", "subgroups", "calibration", "discrimination", "cases", "compare"]
    if (bundle / "shift.json").exists() and json.loads((bundle / "shift.json").read_text()):
        pages.append("shift")
    for page in pages:
        at.switch_page(f"views/{page}.py").run()
        assert not at.exception, (page, [e.message for e in at.exception])
        if page == "reliability":
            site = next(iter(metrics["sites"]))
            rel = curves["sites"][site]["reliability"]
            line = [t for t in figures(at)[0]["data"] if t.get("mode") == "lines+markers"][0]
            assert line["x"] == pytest.approx(
                [m for m, c in zip(rel["mean_predicted"], rel["count"], strict=True) if c]
            )
        if page in ("subgroups", "calibration", "discrimination"):
            assert figures(at), page
