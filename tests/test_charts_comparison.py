"""The comparison forest (validate.charts.comparison_forest): it draws comparison.json's own Δ and
intervals, one row per block labelled with its n, a zero line, the gate's margin dashed, and says
on the axis which side is better."""

from __future__ import annotations

import json

import pytest
from comparison_fixture import comparison

from validate import charts


@pytest.fixture
def cmp(tmp_path):
    # through a file, as a presentation reads it
    path = tmp_path / "comparison.json"
    path.write_text(json.dumps(comparison()))
    return json.loads(path.read_text())


def _points(fig):
    """label -> (x, x - minus, x + plus) over the marker traces (not the text column)."""
    out = {}
    for tr in fig.data:
        if tr.mode != "markers" or tr.error_x is None or tr.error_x.array is None:
            continue
        for y, x, plus, minus in zip(tr.y, tr.x, tr.error_x.array, tr.error_x.arrayminus, strict=True):
            out[y] = (x, x - minus, x + plus)
    return out


def test_forest_draws_the_files_deltas_and_intervals(cmp):
    fig = charts.comparison_forest(charts.comparison_blocks(cmp), "auroc", margin=-0.02)
    points = _points(fig)
    expected = {"all sites (pooled)": cmp["overall"]}
    expected.update(cmp["sites"])
    expected["sex = female (all sites)"] = cmp["subgroups"]["sex"]["female"]["overall"]
    expected["sex = male (all sites)"] = cmp["subgroups"]["sex"]["male"]["overall"]
    assert set(points) == set(expected)
    for label, block in expected.items():
        e = block["metrics"]["auroc"]
        assert points[label] == pytest.approx((e["delta"], e["ci_low"], e["ci_high"]), abs=1e-12), label
    # rows top to bottom: pooled, sites, subgroups
    assert list(fig.layout.yaxis.categoryarray) == [
        "all sites (pooled)",
        "cleveland",
        "hungary",
        "switzerland",
        "va",
        "sex = female (all sites)",
        "sex = male (all sites)",
    ]


def test_each_row_is_labelled_with_its_n_and_events(cmp):
    fig = charts.comparison_forest(charts.comparison_blocks(cmp), "ece")
    text = dict(zip(fig.data[-1].y, fig.data[-1].text, strict=True))
    assert text["va"] == "-0.011 (-0.041 to 0.020)  n=200 (149)"
    assert text["switzerland"].endswith("n=123 (115) insufficient")


def test_zero_line_solid_margin_dashed_and_in_view(cmp):
    fig = charts.comparison_forest(charts.comparison_blocks(cmp), "auroc", margin=-0.1)
    lines = {(s.x0, s.line.dash) for s in fig.layout.shapes}
    assert (0.0, None) in lines and (-0.1, "dash") in lines
    lo, hi = fig.layout.xaxis.range
    assert lo < -0.1 and hi > 0.039  # the margin is below every interval: still drawn inside the axis
    without = charts.comparison_forest(charts.comparison_blocks(cmp), "auroc")
    assert [s.x0 for s in without.layout.shapes] == [0.0]


def test_axis_says_which_side_is_better():
    blocks = [("x", {"n": 10, "metrics": {}})]
    assert "higher is better →" in charts.comparison_forest(blocks, "auroc").layout.xaxis.title.text
    assert "← lower is better" in charts.comparison_forest(blocks, "ece").layout.xaxis.title.text
    slope = charts.comparison_forest(blocks, "calibration_slope").layout.xaxis.title.text
    assert "ideal value is 1.00" in slope and "better →" not in slope


def test_undefined_and_insufficient_blocks_are_shown_not_dropped(cmp):
    blocks = charts.comparison_blocks(cmp, within_sites=True)
    labels = [b[0] for b in blocks]
    assert "sex = female at va" in labels and "sex = male at va" in labels
    fig = charts.comparison_forest(blocks, "auroc")
    text = dict(zip(fig.data[-1].y, fig.data[-1].text, strict=True))
    assert text["sex = female at va"].startswith("undefined: one class only (no events)")
    assert text["sex = female at va"].endswith("n=6 (0) insufficient")
    hollow = [tr for tr in fig.data if tr.mode == "markers" and tr.marker.symbol == "square-open"]
    assert hollow and "switzerland" in hollow[0].y


def test_sites_and_subgroups_choose_the_rows(cmp):
    blocks = charts.comparison_blocks(cmp, sites=["va", "hungary"], subgroups=[])
    assert [b[0] for b in blocks] == ["all sites (pooled)", "va", "hungary"]
    assert blocks[1][1] is cmp["sites"]["va"]


def test_subgroup_values_in_natural_order(cmp):
    block = cmp["overall"]
    cmp["subgroups"] = {"age_band": {v: {"overall": block, "sites": {}} for v in ("45-54", ">=65", "<45", "55-64")}}
    labels = [b[0] for b in charts.comparison_blocks(cmp, sites=[])]
    assert labels == [
        "all sites (pooled)",
        "age_band = <45 (all sites)",
        "age_band = 45-54 (all sites)",
        "age_band = 55-64 (all sites)",
        "age_band = >=65 (all sites)",
    ]
