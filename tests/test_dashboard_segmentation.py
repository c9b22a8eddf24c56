"""The dashboard's Segmentation page under Streamlit's AppTest, on the hand-made segmentation bundle
(tests/segmentation_fixture.py): the pages a segmentation run gets, the per-site table as the bundle holds
it, the forests, the worst cases' overlays and the pixel calibration and area agreement sections; a
classification run has no Segmentation page."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import segmentation_fixture as fx

from test_dashboard_data import write_fixture_run

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "dashboard" / "app.py")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("segdash") / "runs"
    fx.write_segmentation_run(root / "seg", thumbnails=True)
    write_fixture_run(root / "binary")
    return root


def _open(runs, monkeypatch, page=None, run="seg"):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("VALIDATE_DASHBOARD_RUNS", str(runs))
    at = AppTest.from_file(APP, default_timeout=90)
    at.session_state["run"] = run
    if page is not None:
        at.switch_page(page)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def _frame(at, column: str) -> pd.DataFrame:
    for df in at.dataframe:
        v = df.value
        v = v.data if hasattr(v, "data") and not isinstance(v, pd.DataFrame) else v
        if column in v.columns:
            return v
    raise AssertionError(f"no table with column {column!r}")


def test_segmentation_page_shows_the_bundles_numbers(runs, monkeypatch):
    at = _open(runs, monkeypatch, "views/segmentation.py")
    assert [h.value for h in at.subheader] == [
        "Per site",
        "Against the baseline (baseline)",
        "Worst cases",
        "Pixel calibration",
        "Area agreement",
    ]
    sites = _frame(at, "Dice: mean (95% CI)").set_index("Site")
    for site, (n, patients, dice, _, small) in fx.RESULTS.items():
        assert sites.loc[site, "Dice: mean (95% CI)"] == f"{dice[0]:.3f} ({dice[1]:.3f}–{dice[2]:.3f})"
        assert sites.loc[site, "Cases (patients)"] == f"{n} ({patients})" + (" insufficient" if small else "")
    assert "all sites (pooled)" in sites.index
    pixels = _frame(at, "Pixel ECE (95% CI)").set_index("Site")
    assert pixels.loc["probe_b", "ECE after T"] == f"{fx.PIXEL_ECE['probe_b'][2]:.4f}"
    area = _frame(at, "Mean difference (mm²)").set_index("Site")
    assert area.loc["probe_b", "95% limits of agreement (mm²)"] == "-1710.0 to 430.0"
    # Dice and HD95 forests, another metric, the comparison, reliability, temperature, area agreement
    specs = [json.loads(e.proto.spec) for e in at.get("plotly_chart")]
    assert len(specs) == 7
    dice = next(s for s in specs if s["layout"]["title"]["text"].startswith("Dice"))
    drawn = {y: x for t in dice["data"] if t.get("mode") == "markers" for y, x in zip(t["y"], t["x"], strict=True)}
    assert {s: drawn[s] for s in fx.SITES} == {s: r[2][0] for s, r in fx.RESULTS.items()}
    assert "Metrics Reloaded" in at.info[0].value  # the empty-mask policy


def _images(at) -> list[tuple[str, str]]:
    """(caption, url) of every picture on the page."""
    return [(i.caption, i.url) for e in at.get("image") for i in e.proto.imgs]


def test_worst_cases_of_the_chosen_site_are_drawn(runs, monkeypatch):
    at = _open(runs, monkeypatch, "views/segmentation.py")
    shown = _images(at)
    assert [c for c, _ in shown] == [
        f"case {c} · head · Dice {d:.3f} · HD95 {h:.1f} mm" for c, d, h, _ in fx.WORST["development"]
    ]
    assert all(url.endswith(".png") for _, url in shown)  # lossless: JPEG would smear the outlines
    at.selectbox(key="segmentation-worst-site").set_value("probe_b").run()
    assert [c for c, _ in _images(at)] == [
        "case pb-0003 · head · Dice 0.412 · HD95 19.8 mm",
        "case pb-0029 · head · Dice 0.655 · HD95 11.2 mm",
    ]


def test_a_segmentation_run_gets_its_page_and_not_the_classification_ones(runs, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("VALIDATE_DASHBOARD_RUNS", str(runs))

    def switch(run: str, page: str) -> None:
        at = AppTest.from_file(APP, default_timeout=90)
        at.session_state["run"] = run
        at.run()  # the navigation is registered for the run picked
        at.switch_page(page)  # AppTest refuses a page the navigation does not list

    switch("seg", "views/segmentation.py")
    switch("seg", "views/compare.py")
    for page in ("views/reliability.py", "views/discrimination.py", "views/cases.py", "views/subgroups.py"):
        with pytest.raises(ValueError, match="Could not find a navigation page"):
            switch("seg", page)
    switch("binary", "views/reliability.py")
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        switch("binary", "views/segmentation.py")


def test_the_page_says_what_is_missing_without_segmentation_json(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    folder = fx.write_segmentation_run(runs / "bare")
    (folder / "segmentation.json").unlink()
    (folder / "overlays.parquet").unlink()
    at = _open(runs, monkeypatch, "views/segmentation.py", run="bare")
    infos = " ".join(i.value for i in at.info)
    assert "Worst cases is not in this bundle" in infos and "Pixel calibration is not in this bundle" in infos
    assert _frame(at, "Dice: mean (95% CI)").shape[0] == len(fx.SITES) + 1
