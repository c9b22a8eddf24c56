"""The report's "Sample size and precision" and "Clinical utility (net benefit)" sections, on the fixture
bundle with net benefit and precision added by hand (tests/decision_fixture.py): every number the tables
show is read back from the bundle's JSON, each estimate with its n and interval; a bundle without them
shows neither section."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
from decision_fixture import DECISION_THRESHOLDS, UNDEFINED, add_decision_and_precision

from validate.bundle import Bundle
from validate.report.render import render_report

from conftest import requires_browser
from test_dashboard_data import write_fixture_run

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return add_decision_and_precision(write_fixture_run(tmp_path_factory.mktemp("decision") / "run"))


@pytest.fixture(scope="module")
def report(bundle) -> str:
    text = render_report(Bundle(path=bundle))
    (bundle / "report.html").write_text(text, encoding="utf-8")
    return text


def section(report: str, anchor: str) -> str:
    start = report.index(f'<section id="{anchor}">')
    return report[start : report.index("</section>", start)]


def rows(part: str) -> list[list[str]]:
    """The body rows of the section's first table, each cell as plain text."""
    body = part[part.index("<tbody>") : part.index("</tbody>")]
    out = []
    for tr in re.findall(r"<tr>(.*?)</tr>", body):
        out.append([html.unescape(re.sub(r"<[^>]+>", " ", c)).split() for c in re.findall(r"<td[^>]*>(.*?)</td>", tr)])
    return [[" ".join(c) for c in r] for r in out]


def interval(e: dict, digits: int = 3) -> str:
    sep = " to " if e["ci_low"] < 0 else "–"  # an en dash; "to" beside a minus sign
    return f"{e['estimate']:.{digits}f} ({e['ci_low']:.{digits}f}{sep}{e['ci_high']:.{digits}f})"


def test_sections_sit_in_reading_order(report):
    pos = [report.index(f'<section id="{s}">') for s in ("cohorts", "precision", "discrimination")]
    assert pos == sorted(pos)
    pos = [report.index(f'<section id="{s}">') for s in ("calibration", "utility", "subgroups")]
    assert pos == sorted(pos)
    assert '<a href="#utility">' in report and '<a href="#precision">' in report


def test_net_benefit_table_shows_every_threshold_with_n_and_interval(report, bundle):
    metrics = json.loads((bundle / "metrics.json").read_text())
    table = rows(section(report, "utility"))
    blocks = [(s, metrics["sites"][s]) for s in ("alpha", "beta", "gamma")] + [
        ("all sites (pooled)", metrics["overall"])
    ]
    assert len(table) == len(blocks) * len(DECISION_THRESHOLDS)
    for (label, block), i in zip(blocks, range(0, len(table), len(DECISION_THRESHOLDS)), strict=True):
        for item, row in zip(block["decision"], table[i : i + len(DECISION_THRESHOLDS)], strict=True):
            assert row[0] == label
            assert row[1].startswith(f"{block['n']} ({block['n_events']})")
            assert row[3] == f"{item['threshold']:.2f}"
            for cell, m in zip(
                row[4:9],
                [
                    "net_benefit",
                    "net_benefit_treat_all",
                    "net_benefit_vs_treat_all",
                    "interventions_avoided",
                    "standardized_net_benefit",
                ],
                strict=True,
            ):
                if item[m] is None:
                    assert cell == "undefined"
                else:
                    assert cell == interval(item[m], 1 if m == "interventions_avoided" else 3), (label, m)
            assert row[9] == f"{100 * item['beats_defaults']:.0f}%"
    assert "insufficient" in table[2 * len(DECISION_THRESHOLDS)][1]  # gamma is below the count floor


def test_an_undefined_entry_is_marked_with_its_reason(report):
    site, metric, t, why = UNDEFINED
    part = section(report, "utility")
    assert f'title="{html.escape(why)}">undefined</span>' in part


def test_captions_say_prevalence_and_not_significance(report):
    part = section(report, "utility")
    text = html.unescape(part).lower()
    assert "each site at its own prevalence" in text
    assert "not a significance test" in text
    assert "mixes the sites' prevalences" in text
    # one decision curve per site and one pooled
    assert part.count('class="figure validate-figure"') == 4
    for title in ("Decision curve at alpha", "Decision curve at gamma", "Decision curve, pooled"):
        assert title in part


def test_precision_table_compares_width_with_target_and_needed_with_has(report, bundle):
    metrics = json.loads((bundle / "metrics.json").read_text())
    table = rows(section(report, "precision"))
    criteria = [
        (s, c)
        for s, b in [*metrics["sites"].items(), ("all sites (pooled)", metrics["overall"])]
        for c in b["precision"]["criteria"]
    ]
    assert len(table) == len(criteria)
    for (site, c), row in zip(criteria, table, strict=True):
        assert row[0] == site
        assert row[2] == f"{c['width']:.2f} vs {c['target']:.2f}"
        assert row[3] == ("adequate" if c["adequate"] else "too wide")
        needed = "—" if c["needed_n"] is None else f"{c['needed_n']:,} ({c['needed_events']:,} events)"
        assert row[4] == needed
        assert row[5].startswith(f"{c['n']:,}")
    text = html.unescape(section(report, "precision"))
    assert metrics["sites"]["gamma"]["precision"]["reason"] in text
    assert "1,350" in text


def test_nothing_is_shown_without_decision_or_precision(tmp_path):
    plain = write_fixture_run(tmp_path / "plain")
    text = render_report(Bundle(path=plain))
    for anchor in ("utility", "precision"):
        assert f'<section id="{anchor}">' not in text and f'href="#{anchor}"' not in text
    assert "Decision curve" not in text and "Net benefit" not in text


@pytest.mark.browser
@pytest.mark.slow
@requires_browser
def test_decision_curves_render_in_chromium_offline(report, bundle):
    from playwright.sync_api import sync_playwright

    errors, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(offline=True, viewport={"width": 1300, "height": 900})
            page = context.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto((bundle / "report.html").as_uri())
            page.wait_for_function(
                "document.querySelectorAll('#utility .js-plotly-plot svg.main-svg').length >= 4", timeout=120_000
            )
            # each decision curve draws its traces: the model line and bands are SVG paths in the plot area
            traces = page.evaluate(
                "Array.from(document.querySelectorAll('#utility .js-plotly-plot'))"
                ".map(d => d.querySelectorAll('.scatterlayer .trace').length)"
            )
            legend = page.locator("#utility .js-plotly-plot").first.locator(".legendtext").all_text_contents()
        finally:
            browser.close()
    assert traces == [6, 6, 6, 6]  # two bands, treat all, treat none, the model, the decision thresholds
    assert {"model", "treat all", "treat none", "decision thresholds (protocol)"} <= set(legend)
    assert errors == []
    assert [u for u in requests if not u.startswith("file://")] == []


def test_precision_alone_shows_its_section_and_no_net_benefit(tmp_path):
    folder = add_decision_and_precision(write_fixture_run(tmp_path / "precision-only"), decision=False)
    text = render_report(Bundle(path=folder))
    assert '<section id="precision">' in text
    assert '<section id="utility">' not in text and "Decision curve" not in text
