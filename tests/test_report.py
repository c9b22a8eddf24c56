"""The HTML report: self-contained (plotly.js inline once, nothing fetched), sections in reviewer order,
and every figure rendered in headless Chromium with networking disabled."""

from __future__ import annotations

import re

import pytest

from validate.report.pdf import CHROMIUM_ARGS as CHROMIUM_FLAGS

from conftest import requires_browser
from test_run_helpers import synthetic_bundle  # noqa: F401 (fixture)

CHROMIUM_ARGS = list(CHROMIUM_FLAGS)  # the flags the PDF printer launches Chromium with
SECTION_ORDER = (
    "verdict",
    "provenance",
    "cohorts",
    "discrimination",
    "calibration",
    "subgroups",
    "methods",
    "shift",
    "limitations",
)


@pytest.fixture(scope="module")
def report_html(synthetic_bundle):
    return (synthetic_bundle["bundle"] / "report.html").read_text(encoding="utf-8")


def figure_count(html: str) -> int:
    return int(re.search(r'<meta name="validate-figures" content="(\d+)">', html).group(1))


def test_report_is_self_contained(report_html):
    from plotly.offline import get_plotlyjs

    # plotly.js embedded exactly once, inline
    js = get_plotlyjs()
    assert report_html.count(js) == 1
    # outside plotly.js itself, nothing refers to a resource elsewhere: no src/href to a URL, no @import
    rest = report_html.replace(js, "")
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', rest)
    assert "@import" not in rest and "<script src" not in rest
    n = figure_count(report_html)
    assert n >= 10
    assert report_html.count("Plotly.newPlot(") == n
    assert report_html.count('class="figure validate-figure"') == n


def test_sections_in_reviewer_order(report_html):
    positions = [report_html.index(f'<section id="{s}">') for s in SECTION_ORDER]
    assert positions == sorted(positions)


def test_numbers_carry_n_and_interval(report_html):
    # the verdict table and site tables show estimates with intervals and n (events)
    assert re.search(r"\d\.\d{3} \(\d\.\d{3}–\d\.\d{3}\)", report_html)  # one interval convention
    assert "n (events)" in report_html
    assert "insufficient" in report_html  # the small site's small groups are marked, not hidden
    assert "Wilson" in report_html


@pytest.mark.browser
@requires_browser
def test_report_renders_every_figure_offline(synthetic_bundle, report_html, tmp_path):
    from playwright.sync_api import sync_playwright

    path = synthetic_bundle["bundle"] / "report.html"
    expected = figure_count(report_html)
    errors, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(offline=True, viewport={"width": 1300, "height": 900})
            page = context.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(path.as_uri())
            page.wait_for_function(
                "document.querySelectorAll('.js-plotly-plot').length >= Number(document.body.dataset.figures)",
                timeout=120_000,
            )
            plots = page.evaluate("document.querySelectorAll('.js-plotly-plot').length")
            svgs = page.evaluate("document.querySelectorAll('.js-plotly-plot svg.main-svg').length")
            empty = page.evaluate("""Array.from(document.querySelectorAll('.js-plotly-plot'))
                .filter(d => d.getBoundingClientRect().height < 50).length""")
            page.screenshot(path=str(tmp_path / "report.png"), full_page=False)
        finally:
            browser.close()
    assert plots == expected
    assert svgs >= expected  # each plotly figure draws at least one main svg
    assert empty == 0
    assert errors == []
    assert [u for u in requests if not u.startswith("file://")] == []
