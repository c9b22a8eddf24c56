"""The decision-curve figure (validate.charts.decision_curve_figure): it draws the net benefit, treat-all
and treat-none curves it is given, each band from the stored interval bounds, the protocol's decision
thresholds with their intervals, and states n and events. Expected values are the hand-made CURVE and
decision items below (shaped as curves.json's ``decision`` and a BLOCK's ``decision``), never the builder's
own output."""

from __future__ import annotations

import json

import pytest

from validate import charts

X = [0.1, 0.2, 0.3, 0.4]
CURVE = {
    "n": 294,
    "n_events": 106,
    "prevalence": 0.36,
    "net_benefit": [0.30, 0.25, None, 0.12],
    "net_benefit_ci_low": [0.26, 0.20, None, 0.05],
    "net_benefit_ci_high": [0.34, 0.30, None, 0.18],
    # treat all by hand: 0.36 - 0.64 * t / (1 - t)
    "treat_all": [0.36 - 0.64 / 9, 0.36 - 0.64 / 4, 0.36 - 0.64 * 3 / 7, 0.36 - 0.64 * 4 / 6],
    "treat_all_ci_low": [0.26, 0.14, 0.04, -0.15],
    "treat_all_ci_high": [0.34, 0.26, 0.16, -0.05],
}
DECISION = {
    "thresholds": X,
    "ci_level": 0.9,
    "blocks": {"overall": {**CURVE, "n": 500, "n_events": 200}, "sites": {"hungary": CURVE}},
}


def entry(v, lo, hi):
    return {"estimate": v, "ci_low": lo, "ci_high": hi, "method": "bootstrap", "se": 0.02}


ITEMS = [
    {
        "threshold": 0.2,
        "prevalence": 0.36,
        "net_benefit": entry(0.25, 0.20, 0.30),
        "net_benefit_treat_all": entry(0.2, 0.14, 0.26),
        "beats_defaults": 0.97,
    }
]


def trace(fig, name):
    found = [t for t in fig.data if t.name == name]
    assert len(found) == 1, [t.name for t in fig.data]
    return found[0]


def test_draws_the_stored_curves_with_their_bands():
    fig = charts.decision_curve_figure(DECISION, "hungary", decision=ITEMS)
    model = trace(fig, "model")
    assert list(model.x) == X
    assert list(model.y) == CURVE["net_benefit"]  # the undefined point stays a gap, not a zero
    assert list(trace(fig, "treat all").y) == pytest.approx(CURVE["treat_all"])
    none = trace(fig, "treat none")
    assert list(none.y) == [0, 0] and list(none.x) == [0.1, 0.4]
    # the model's band: one polygon per run of defined thresholds (0.1-0.2; 0.4 alone is a point, no area)
    band = trace(fig, "model: 90% interval")
    assert list(band.x) == [0.1, 0.2, 0.2, 0.1]
    assert list(band.y) == [0.34, 0.30, 0.20, 0.26]
    assert band.fill == "toself"
    ta_band = trace(fig, "treat all: 90% interval")
    assert list(ta_band.x) == X + X[::-1]
    assert list(ta_band.y) == CURVE["treat_all_ci_high"] + CURVE["treat_all_ci_low"][::-1]


def test_a_gap_in_the_interval_splits_the_band_into_polygons():
    xs, ys = charts._segments([1, 2, 3, 4, 5], [0, 0, None, 1, 1], [2, 2, None, 3, 3])
    assert xs == [1, 2, 2, 1, None, 4, 5, 5, 4]
    assert ys == [2, 2, 0, 0, None, 3, 3, 1, 1]


def test_decision_thresholds_are_marked_with_their_intervals_and_the_share_of_replicates():
    fig = charts.decision_curve_figure(DECISION, "hungary", decision=ITEMS)
    marks = trace(fig, "decision thresholds (protocol)")
    assert list(marks.x) == [0.2] and list(marks.y) == [0.25]
    assert list(marks.error_y.array) == pytest.approx([0.05])
    assert list(marks.error_y.arrayminus) == pytest.approx([0.05])
    assert "beats both defaults in 97% of bootstrap replicates" in marks.text[0]
    assert "n=294, 106 events" in marks.text[0]
    lines = [s for s in fig.layout.shapes if s.x0 == 0.2 and s.x1 == 0.2]
    assert len(lines) == 1  # a vertical line at the decision threshold


def test_states_n_events_and_prevalence_and_every_point_carries_n():
    fig = charts.decision_curve_figure(DECISION, "hungary")
    assert "n=294, 106 events" in fig.layout.title.text and "0.36" in fig.layout.title.text
    for name in ("model", "treat all"):
        assert all("n=294, 106 events" in t for t in trace(fig, name).text)
    # the hover text of a point gives its interval
    assert "0.250 (0.200–0.300)" in trace(fig, "model").text[1]
    pooled = charts.decision_curve_figure(DECISION, "overall")
    assert "pooled" in pooled.layout.title.text and "n=500, 200 events" in pooled.layout.title.text


def test_axis_keeps_the_curves_readable_below_zero():
    fig = charts.decision_curve_figure(DECISION, "hungary")
    lo, hi = fig.layout.yaxis.range
    assert lo < 0 < 0.36 <= hi
    assert list(fig.layout.xaxis.range) == [0.1, 0.4]


def test_without_a_curve_it_says_so_instead_of_drawing():
    for data, site in ((DECISION, "va"), (None, "hungary"), ({"thresholds": [], "blocks": {}}, "overall")):
        fig = charts.decision_curve_figure(data, site)
        assert not fig.data
        assert "No decision curve" in fig.layout.annotations[0].text


def test_figure_serialises():
    json.loads(charts.decision_curve_figure(DECISION, "hungary", decision=ITEMS).to_json())
