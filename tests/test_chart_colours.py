"""One colour per site across every chart, calibrated curves told apart from uncalibrated ones, and
heatmap cells with one text each: asserted in the figures' JSON (the report's embedded figures and the
dashboard's), against the expected colour written independently: the site's position in the
protocol's site list indexes the Okabe-Ito palette."""

from __future__ import annotations

import json
import re

import pytest

from validate import charts

from test_run_helpers import SITES, synthetic_bundle  # noqa: F401 (fixture)

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73")  # the palette's first three, by hand
EXPECTED = {site: OKABE_ITO[i] for i, (site, *_rest) in enumerate(SITES)}  # protocol order


def _report_figures(html: str) -> list[dict]:
    """Every figure embedded in the report: ``{"data": [...], "layout": {...}}`` from its newPlot call."""
    out = []
    decoder = json.JSONDecoder()
    for m in re.finditer(r'Plotly\.newPlot\(\s*"figure-\d+",\s*', html):
        data, end = decoder.raw_decode(html, m.end())
        rest = html[end:].lstrip()[1:].lstrip()
        layout, _ = decoder.raw_decode(rest)
        out.append({"data": data, "layout": layout})
    return out


def _title(fig: dict) -> str:
    t = fig["layout"].get("title") or {}
    return t.get("text", "") if isinstance(t, dict) else str(t)


@pytest.fixture(scope="module")
def report_figures(synthetic_bundle):  # noqa: F811
    return _report_figures((synthetic_bundle["bundle"] / "report.html").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def run(synthetic_bundle):  # noqa: F811
    from dashboard import data

    bundle = synthetic_bundle["bundle"]
    return data.load_run(bundle, bundle.parent)


def _roc_colours(fig: dict) -> dict[str, str]:
    return {
        t["name"].split(":")[0]: t["line"]["color"]
        for t in fig["data"]
        if ": AUROC" in str(t.get("name", "")) and t.get("line")
    }


def _reliability_colour(fig: dict) -> str:
    """The uncalibrated curve's colour: the first lines+markers trace."""
    return next(t["line"]["color"] for t in fig["data"] if t.get("mode") == "lines+markers")


def _forest_colours(fig: dict) -> dict[str, str]:
    out = {}
    for t in fig["data"]:
        colors = (t.get("marker") or {}).get("color")
        if isinstance(colors, list) and t.get("y"):
            out.update(dict(zip(t["y"], colors, strict=True)))
    return out


def _shift_colour(fig: dict) -> str:
    return fig["data"][0]["marker"]["line"]["color"]


def test_report_gives_each_site_one_colour_in_roc_reliability_forest_and_shift(report_figures):
    by_title = {_title(f): f for f in report_figures}
    roc = next(f for t, f in by_title.items() if t.startswith("ROC curve per site"))
    assert _roc_colours(roc) == EXPECTED
    for site, colour in EXPECTED.items():
        rel = next(f for t, f in by_title.items() if t.startswith(f"Reliability at {site} "))
        assert _reliability_colour(rel) == colour, site
    forest = next(f for t, f in by_title.items() if t.startswith("Calibration slope and intercept"))
    assert {k: v for k, v in _forest_colours(forest).items() if k in EXPECTED} == EXPECTED
    shift = [(t, f) for t, f in by_title.items() if " against development" in t]
    assert shift, "the synthetic run has a shift analysis"
    for title, fig in shift:
        site = title.split(" against development")[0]
        assert _shift_colour(fig) == EXPECTED[site], title


def test_dashboard_uses_the_reports_colours(run):
    from dashboard import figures

    assert {s: run.site_colors[s] for s in EXPECTED} == EXPECTED
    assert run.site_colors["overall"] == charts.POOLED_COLOR not in EXPECTED.values()
    roc = figures.roc(run, list(EXPECTED)).to_plotly_json()
    assert _roc_colours(roc) == EXPECTED
    # a page showing a subset of the sites keeps each site's colour (not re-indexed from the subset)
    assert _roc_colours(figures.roc(run, ["ext_small"]).to_plotly_json()) == {"ext_small": EXPECTED["ext_small"]}
    for site, colour in EXPECTED.items():
        rel = figures.reliability(run, site, "none").to_plotly_json()
        assert _reliability_colour(rel) == colour, site
        shift = figures.shift_ranking(run, site)
        if shift is not None:
            assert _shift_colour(shift.to_plotly_json()) == colour
    forest = figures.calibration_forest(run).to_plotly_json()
    assert {k: v for k, v in _forest_colours(forest).items() if k in EXPECTED} == EXPECTED


@pytest.mark.parametrize("colour", charts.PALETTE)
def test_a_calibrated_curve_differs_from_its_site_by_style_and_shade(colour):
    rel = {
        "edges": [0.0, 0.5, 1.0],
        "count": [10, 10],
        "events": [3, 7],
        "mean_predicted": [0.25, 0.75],
        "observed": [0.3, 0.7],
        "observed_low": [0.1, 0.4],
        "observed_high": [0.6, 0.9],
    }
    curve = {"n": 20, "reliability": rel}
    fig = charts.reliability_figure(
        curve, calibrated={"after platt": curve, "after temperature": curve}, color=colour
    ).to_plotly_json()
    lines = [t for t in fig["data"] if t.get("mode") == "lines+markers"]
    before, after = lines[0], lines[1:]
    assert before["line"]["color"] == colour and before["line"].get("dash") in (None, "solid")
    other_sites = {c.lower() for c in charts.PALETTE} - {colour.lower()}
    styles = set()
    for t in after:
        assert t["line"]["color"].lower() != colour.lower() and t["line"]["color"].lower() not in other_sites
        assert t["line"]["dash"] not in (None, "solid") and t["marker"]["symbol"] != "circle"
        styles.add((t["line"]["color"], t["line"]["dash"]))
    assert len(styles) == len(after)  # two methods: two styles


def _cell_texts(fig: dict) -> dict[tuple[str, str], list[str]]:
    """Every text drawn in each (x, y) cell: a heatmap's texttemplate draws its text on every cell
    (empty or not), a text scatter at its points."""
    cells: dict[tuple[str, str], list[str]] = {}
    for t in fig["data"]:
        if t["type"] == "heatmap" and t.get("texttemplate") and t.get("text"):
            for y, row in zip(t["y"], t["text"], strict=True):
                for x, text in zip(t["x"], row, strict=True):
                    if text:
                        cells.setdefault((x, y), []).append(text)
        elif t["type"] == "scatter" and "text" in str(t.get("mode")):
            for x, y, text in zip(t["x"], t["y"], t["text"], strict=True):
                cells.setdefault((x, y), []).append(text)
    return cells


def test_heatmap_cells_carry_one_text_each(report_figures):
    heatmaps = [f for f in report_figures if any(t["type"] == "heatmap" for t in f["data"])]
    assert heatmaps, "the synthetic report has subgroup heatmaps"
    for fig in heatmaps:
        assert not fig["layout"].get("annotations") or all(
            "xref" in a and a.get("xref") == "paper" for a in fig["layout"]["annotations"]
        )
        heat = next(t for t in fig["data"] if t["type"] == "heatmap" and t.get("x"))
        cells = _cell_texts(fig)
        assert set(cells) == {(x, y) for x in heat["x"] for y in heat["y"]}, _title(fig)
        doubled = {k: v for k, v in cells.items() if len(v) != 1}
        assert not doubled, (_title(fig), doubled)
