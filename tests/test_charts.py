"""The figure builder: each figure draws the numbers it is given, with n and interval, and marks
groups with too little data instead of hiding them."""

from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import pytest

from validate import charts
from validate.analysis.sites import binary_curves


def e(v, lo, hi):
    return {"estimate": v, "ci_low": lo, "ci_high": hi, "method": "bootstrap"}


@pytest.fixture(scope="module")
def curves():
    rng = np.random.default_rng(0)
    out = {}
    for k, s in enumerate(("alpha", "beta")):
        y = rng.integers(0, 2, 200).astype(float)
        p = np.clip(0.3 * y + rng.random(200) * 0.7, 0, 1)
        out[s] = binary_curves(y, p, bins=10, n_rep=30, seed=k)
    return out


METRICS = {
    "ci_level": 0.95,
    "overall": {
        "n": 400,
        "n_events": 200,
        "auroc": e(0.8, 0.75, 0.85),
        "calibration_slope": e(0.9, 0.7, 1.1),
        "calibration_intercept": e(0.1, -0.1, 0.3),
    },
    "sites": {
        "alpha": {
            "n": 200,
            "n_events": 100,
            "auroc": e(0.82, 0.76, 0.88),
            "auprc": e(0.8, 0.7, 0.86),
            "calibration_slope": e(1.1, 0.8, 1.4),
            "calibration_intercept": e(0.0, -0.2, 0.2),
            "operating_points": [
                {
                    "threshold": 0.5,
                    "sensitivity": e(0.7, 0.6, 0.8),
                    "specificity": e(0.8, 0.7, 0.9),
                    "ppv": None,
                    "npv": None,
                }
            ],
            "target_sensitivity": {
                "target": 0.9,
                "threshold": 0.3,
                "carried": False,
                "sensitivity": e(0.9, 0.85, 0.95),
                "specificity": e(0.5, 0.4, 0.6),
            },
        },
        "beta": {
            "n": 20,
            "n_events": 4,
            "insufficient": True,
            "reason": "4 events < min_events 10",
            "auroc": e(0.7, 0.4, 1.0),
            "calibration_slope": None,
            "calibration_intercept": e(0.5, -0.5, 1.5),
            "undefined": {"calibration_slope": "did not converge"},
            "operating_points": [{"threshold": 0.5, "sensitivity": e(0.5, 0.1, 0.9), "specificity": e(0.9, 0.7, 1.0)}],
            "target_sensitivity": {
                "target": 0.9,
                "threshold": 0.3,
                "carried": True,
                "sensitivity": e(0.75, 0.3, 1.0),
                "specificity": e(0.4, 0.2, 0.6),
            },
        },
    },
}


def test_formatting():
    assert charts.entry_text(e(0.8421, 0.8012, 0.879)) == "0.842 (0.801–0.879)"
    assert charts.entry_text({"estimate": None}) == "—"
    assert charts.entry_text(0.5) == "0.500"
    assert charts.fmt(1.2e-7) == "0.000"  # rounding noise (below 1e-6) reads 0, not 1.2e-07
    assert charts.fmt(0.00043) == "0.00043"  # small but real: two significant digits, not 0.000
    assert charts.n_text(30, 4) == "n=30, 4 events"


def test_reliability_band_and_histogram(curves):
    c = curves["alpha"]
    fig = charts.reliability_figure(c, title="Reliability")
    rel = c["reliability"]
    keep = [i for i, k in enumerate(rel["count"]) if k]
    band = next(t for t in fig.data if t.fill == "toself")
    hi = [rel["observed_high"][i] for i in keep]
    lo = [rel["observed_low"][i] for i in keep]
    assert list(band.y) == pytest.approx(hi + lo[::-1])
    bars = [t for t in fig.data if isinstance(t, go.Bar)]
    assert sum(sum(b.y) for b in bars) == 200
    assert sum(bars[1].y) == sum(rel["events"])
    points = next(t for t in fig.data if t.mode == "lines+markers")
    assert "n=" in points.text[0] and "events" in points.text[0]
    assert "lowess smooth" in [t.name for t in fig.data]
    empty = charts.reliability_figure({})
    assert empty.layout.annotations[0].text.startswith("No cases")


def test_reliability_with_calibrated_overlay(curves):
    fig = charts.reliability_figure(curves["alpha"], calibrated={"after platt": curves["beta"]})
    names = [t.name for t in fig.data]
    assert any(n and n.startswith("after platt") for n in names)


def test_roc_legends_carry_interval_and_n(curves):
    fig = charts.roc_figure(curves, METRICS)
    lines = [t for t in fig.data if t.mode == "lines" and t.name and ":" in t.name]
    ev = {s: curves[s]["n_events"] for s in curves}
    assert [t.name for t in lines] == [
        f"alpha: AUROC 0.820 (0.760–0.880), n=200, {ev['alpha']} events",
        f"beta: AUROC 0.700 (0.400–1.000), n=200, {ev['beta']} events (insufficient)",
    ]
    markers = [t for t in fig.data if t.mode == "markers"]
    # alpha: threshold 0.5 and its own target threshold; beta: 0.5 and the carried one
    assert len(markers) == 4
    carried = [m for m in markers if "carried" in m.name]
    assert len(carried) == 1 and carried[0].x[0] == pytest.approx(0.6) and carried[0].y[0] == pytest.approx(0.75)
    assert carried[0].error_y.array[0] == pytest.approx(0.25) and carried[0].error_y.arrayminus[0] == pytest.approx(
        0.45
    )
    bands = [t for t in fig.data if t.fill == "toself"]
    assert len(bands) == 2


def test_pr_and_operating_points(curves):
    fig = charts.pr_figure(curves, METRICS)
    assert "AUPRC 0.800 (0.700–0.860)" in fig.data[0].name
    op = charts.operating_points_figure(METRICS)
    titles = [a.text for a in op.layout.annotations]
    assert titles[0].startswith("Threshold 0.500") and "carried" in titles[1]
    sens_fixed = op.data[0]
    assert list(sens_fixed.x) == ["alpha", "beta"] and list(sens_fixed.y) == [0.7, 0.5]
    assert "(insufficient)" in sens_fixed.text[1]


def test_forest_marks_insufficient_rows():
    rows = [
        dict(label="a", estimate=0.8, ci_low=0.7, ci_high=0.9, n=100, n_events=40),
        dict(label="b", estimate=0.6, ci_low=0.3, ci_high=0.9, n=12, n_events=3, insufficient=True),
        dict(label="c", estimate=None, n=5, n_events=0, reason="one class"),
    ]
    fig = charts.forest_figure(rows, x_title="AUROC", reference=0.75)
    ok, small = fig.data[0], fig.data[1]
    assert list(ok.y) == ["a"] and ok.marker.symbol == "square"
    assert list(small.y) == ["b"] and small.marker.symbol == "square-open"
    assert small.error_x.array[0] == pytest.approx(0.3) and small.error_x.arrayminus[0] == pytest.approx(0.3)
    text = fig.data[-1].text
    assert text[0] == "0.800 (0.700–0.900)  n=100 (40)"
    assert text[1].endswith("insufficient") and text[2].startswith("undefined: one class")
    assert fig.layout.shapes[0].x0 == 0.75


def test_calibration_forest_has_both_panels():
    fig = charts.calibration_forest(METRICS)
    assert [a.text for a in fig.layout.annotations][:2] == [
        "Calibration slope (ideal 1)",
        "Calibration intercept (ideal 0)",
    ]
    slope_traces = [t for t in fig.data if t.xaxis == "x"]
    ys = [y for t in slope_traces for y in t.y]
    assert "beta" not in ys  # undefined slope: not drawn as a number
    intercept_small = [t for t in fig.data if t.xaxis == "x2" and t.marker.symbol == "square-open"]
    assert list(intercept_small[0].y) == ["beta"]


ANALYSIS = {
    "ci_level": 0.95,
    "attributes": ["sex"],
    "groups": {"sex": ["female", "male", "other"]},
    "overall": {
        "subgroups": {
            "sex": {
                "female": {
                    "block": {"n": 150, "n_events": 60, "auroc": e(0.78, 0.7, 0.85)},
                    "gap": {"auroc": {**e(-0.02, -0.06, 0.02), "reference": 0.8}},
                },
                "male": {
                    "block": {"n": 240, "n_events": 138, "auroc": e(0.81, 0.76, 0.86)},
                    "gap": {"auroc": {**e(0.01, -0.02, 0.04), "reference": 0.8}},
                },
                "other": {
                    "block": {"n": 10, "n_events": 2, "insufficient": True, "reason": "few", "auroc": e(0.5, 0.1, 0.9)},
                    "gap": {"auroc": {**e(-0.3, -0.7, 0.1), "reference": 0.8}},
                },
            }
        }
    },
    "sites": {
        "alpha": {
            "subgroups": {
                "sex": {
                    "female": {"block": {"n": 80, "n_events": 30, "auroc": e(0.8, 0.7, 0.9)}},
                    "male": {"block": {"n": 120, "n_events": 70, "auroc": e(0.84, 0.78, 0.9)}},
                }
            }
        },
        "beta": {
            "subgroups": {
                "sex": {
                    "female": {"block": {"n": 8, "n_events": 1, "insufficient": True, "auroc": e(0.6, 0.2, 1.0)}},
                    "male": {"block": {"n": 12, "n_events": 3, "insufficient": True, "auroc": None}},
                }
            }
        },
    },
}


def test_subgroup_forest_and_gaps():
    fig = charts.subgroup_forest(ANALYSIS, "sex", "auroc")
    assert fig.layout.shapes[0].x0 == 0.8  # the reference: the value over all cases
    labels = [y for t in fig.data[:-1] for y in (t.y or [])]
    assert labels == ["female", "male", "other"]
    gap = charts.gap_forest(ANALYSIS, "sex", "auroc")
    assert fig.data[0].x[0] == 0.78 and gap.data[0].x[0] == -0.02 and gap.layout.shapes[0].x0 == 0.0


def test_heatmap_marks_small_and_empty_cells():
    fig = charts.subgroup_heatmap(ANALYSIS, "sex", "auroc", sites=["alpha", "beta"])
    grey, main, text_layer = fig.data
    assert list(main.y) == ["alpha", "beta", "all sites"] and list(main.x) == ["female", "male", "other"]
    assert main.z[0][0] == 0.8 and main.z[1][0] is None and grey.z[1][0] == 1  # small: grey with its number
    assert main.z[2][2] is None and grey.z[2][2] == 1
    # each cell's text once: the coloured cells' in the heatmap, the grey and the empty cells' on top
    assert main.text[0][0].startswith("0.80") and main.text[0][2] == "" and main.text[1][0] == ""
    layer = dict(zip(zip(text_layer.x, text_layer.y, strict=True), text_layer.text, strict=True))
    assert layer[("other", "alpha")] == "no cases" and "insufficient" in layer[("female", "beta")]
    assert "n=8" in layer[("female", "beta")] and "(0.20–1.00)" in layer[("female", "beta")]
    assert len(text_layer.text) == 5  # 3 grey cells, 2 empty ones


CALIBRATION = {
    "task": "binary",
    "design": "held-out",
    "fit_on": ["alpha"],
    "recommended": "platt",
    "methods": {
        "none": {
            "params": {},
            "sites": {
                "beta": {"n": 90, "n_events": 30, "ece": e(0.12, 0.08, 0.16)},
                "gamma": {"n": 15, "insufficient": True, "ece": e(0.2, 0.1, 0.3)},
            },
        },
        "platt": {
            "params": {"a": 1},
            "sites": {
                "beta": {"n": 90, "n_events": 30, "ece": e(0.05, 0.03, 0.08)},
                "gamma": {"n": 15, "insufficient": True, "ece": e(0.1, 0.05, 0.2)},
            },
        },
        "isotonic": {"params": {}, "sites": {"beta": {"n": 90, "n_events": 30, "ece": e(0.06, 0.03, 0.09)}}},
    },
}


def test_calibration_methods_figure():
    fig = charts.calibration_methods_figure(CALIBRATION, "ece")
    names = [t.name for t in fig.data]
    assert names == ["none = uncalibrated", "isotonic", "platt (recommended)"]
    platt = fig.data[2]
    assert list(platt.x) == ["beta", "gamma"] and list(platt.y) == [0.05, 0.1]
    assert list(platt.marker.symbol) == ["diamond", "diamond-open"]  # hollow: insufficient site
    assert "fitted on alpha" in fig.layout.title.text


def test_sample_size_and_transfer():
    rows = [
        {
            "site": "beta",
            "method": "platt",
            "n_fit": n,
            "mean": m,
            "low": m - 0.02,
            "high": m + 0.02,
            "repeats": 20,
            "baseline": 0.12,
        }
        for n, m in ((25, 0.09), (50, 0.07), (100, 0.05))
    ]
    fig = charts.sample_size_figure(rows, "ece")
    line = next(t for t in fig.data if t.mode == "lines+markers")
    assert list(line.x) == [25, 50, 100] and fig.layout.xaxis.type == "log"
    matrix = {
        "alpha": {"beta": e(0.05, 0.03, 0.07), "gamma": e(0.1, 0.05, 0.15)},
        "beta": {"alpha": {"n": 50, "ece": e(0.08, 0.05, 0.1), "insufficient": True}},
    }
    tm = charts.transfer_matrix_figure(matrix, "ece")
    hm = tm.data[0]
    assert list(hm.y) == ["alpha", "beta"] and list(hm.x) == ["alpha", "beta", "gamma"]  # diagonal first
    assert hm.z[0][1] == 0.05 and hm.z[1][0] == 0.08 and hm.z[0][0] is None and hm.z[1][1] is None
    assert "insufficient" in hm.text[1][0] and "n=50" in hm.text[1][0]
    assert charts.sample_size_figure([]).layout.annotations


def test_shift_and_drift_figures():
    shift = {
        "alpha": 0.05,
        "correction": "holm",
        "sites": {
            "beta": {
                "n": 90,
                "ranking": [
                    {
                        "id": "case_mix:age",
                        "test": "welch_t",
                        "effect_name": "smd",
                        "effect": 0.6,
                        "threshold": 0.1,
                        "p_value": 1e-6,
                        "p_adjusted": 4e-6,
                        "flagged": True,
                        "material": True,
                    },
                    {
                        "id": "scores:p",
                        "test": "ks",
                        "effect_name": "psi",
                        "effect": 0.05,
                        "threshold": 0.2,
                        "p_value": 0.01,
                        "p_adjusted": 0.03,
                        "flagged": True,
                        "material": False,
                    },
                    {
                        "id": "labels:prevalence",
                        "test": "z",
                        "effect_name": "difference",
                        "effect": 0.01,
                        "threshold": 0.05,
                        "p_value": 0.6,
                        "p_adjusted": 1.0,
                        "flagged": False,
                        "material": False,
                    },
                ],
            }
        },
    }
    fig = charts.shift_summary_figure(shift, "beta")
    bar = fig.data[0]
    assert list(bar.y) == ["case_mix:age", "scores:p", "labels:prevalence"]
    assert bar.x[0] == pytest.approx(-np.log10(4e-6)) and bar.x[2] == pytest.approx(0.0)
    assert list(bar.marker.color) == [charts.FAIL, charts.WARN, charts.GREY]
    windows = [
        {
            "window": f"2021-0{i}",
            "n": 40,
            "n_events": 12,
            "reference": i <= 3,
            "flagged": i == 6,
            "insufficient": False,
            "auroc": e(0.8 - 0.02 * i, 0.7, 0.9),
            "ece": e(0.05, 0.02, 0.08),
        }
        for i in range(1, 7)
    ]
    d = charts.drift_figure({"windows": windows}, metrics=("auroc", "ece", "prevalence"))
    assert [a.text for a in d.layout.annotations] == ["AUROC", "ECE"]
    est = [t for t in d.data if t.mode == "lines+markers"]
    assert est[0].marker.color[5] == charts.FAIL and "flagged" in est[0].text[5]
    assert charts.drift_figure({"windows": [], "reason": "no dates"}).layout.annotations[0].text == "no dates"


def test_every_figure_serialises(curves):
    figs = [
        charts.reliability_figure(curves["alpha"]),
        charts.roc_figure(curves, METRICS),
        charts.pr_figure(curves, METRICS),
        charts.operating_points_figure(METRICS),
        charts.calibration_forest(METRICS),
        charts.metric_forest(METRICS, "auroc"),
        charts.subgroup_forest(ANALYSIS, "sex", "auroc"),
        charts.subgroup_heatmap(ANALYSIS, "sex", "auroc"),
        charts.calibration_methods_figure(CALIBRATION),
    ]
    for fig in figs:
        spec = json.loads(fig.to_json())
        assert spec["data"] and spec["layout"]["template"]["layout"]["font"]["family"].startswith("Inter")
