"""End to end in Chromium: the "Across hospitals" page of `validate dashboard` draws the forest plot.

A fixture bundle with a hand-made synthesis of three sites (tests/synthesis_fixture.py) is served on
127.0.0.1; the page must render without an exception box, with the diamond (a filled path) and the
prediction interval drawn in the SVG, the caption explaining the prediction interval, and the sites.
A second run with k = 2 shows why there is no prediction interval; a third is a real `validate run`
of the UCI heart hospitals (the development site shown, not pooled; the three external sites pooled).
Screenshots go to test-artifacts/dashboard/.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import synthesis_fixture as fx

from conftest import REPO, requires_browser
from test_dashboard_browser import CHROMIUM_ARGS, _wait_idle, free_port, stop, wait_healthy
from test_dashboard_synthesis import write_synthesis_run
from test_report_synthesis import heart_synthesis_run

ARTIFACTS = REPO / "test-artifacts" / "dashboard"


def _shown(page) -> str:
    """Wait for the page's figure and the end of the script run; no exception box; the main area's text."""
    page.wait_for_selector(".main-svg", timeout=180_000)  # a loaded 2-core machine draws slowly
    _wait_idle(page)
    assert page.locator('[data-testid="stException"]').count() == 0, page.locator(
        '[data-testid="stException"]'
    ).first.inner_text()[:500]
    return page.locator('[data-testid="stMain"]').text_content() or ""


@pytest.mark.browser
@pytest.mark.slow
@requires_browser
def test_across_hospitals_page_draws_diamond_and_prediction_interval(tmp_path):
    from playwright.sync_api import sync_playwright

    runs = tmp_path / "runs"
    write_synthesis_run(runs / "external", fx.external())
    write_synthesis_run(runs / "all-sites", fx.all_sites())
    heart_synthesis_run(tmp_path / "heart-work", runs / "heart")  # a real run: the UCI heart hospitals
    old = time.time() - 3600  # all-sites is the newest run: it opens first
    for run in ("external", "heart"):
        for f in (runs / run).iterdir():
            os.utime(f, (old, old))
    port = free_port()
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "validate", "dashboard", str(runs), "--port", str(port)],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(f"{base}/_stcore/health", proc)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 2400})
                page.set_default_timeout(60_000)
                page.goto(f"{base}/synthesis", wait_until="domcontentloaded")
                text = _shown(page)
                page.screenshot(path=str(ARTIFACTS / "synthesis.png"), full_page=True)
                assert "Across hospitals" in text
                for site in ("alpha · development", "beta · external", "gamma · external"):
                    assert site in text, site
                assert "where the next hospital's value is expected to lie, 95%" in text
                assert "PI 0.203–0.986" in text and "random-effects estimate (k = 3)" in text
                # the diamond: a filled closed path; the prediction interval: a line in its own colour
                svg = page.locator(".main-svg").first.inner_html()
                assert (
                    'style="fill: rgb(29, 35, 48)' in svg.replace("fill:rgb", "fill: rgb")
                    or "fill: rgb(29, 35, 48)" in svg
                )
                assert "rgb(213, 94, 0)" in svg  # charts.PI_COLOR, #D55E00

                # the other run, picked in the sidebar (a reload would start a new session)
                page.get_by_role("combobox", name="Run").click()
                page.get_by_role("option", name="external", exact=True).click()
                page.wait_for_selector("text=k = 2 < 3 sites", timeout=180_000)
                text = _shown(page)
                page.screenshot(path=str(ARTIFACTS / "synthesis-k2.png"), full_page=True)
                assert "k = 2 < 3 sites: no prediction interval" in text
                assert "alpha · development (not pooled)" in text
                svg = page.locator(".main-svg").first.inner_html()
                assert "rgb(213, 94, 0)" not in svg

                page.get_by_role("combobox", name="Run").click()
                page.get_by_role("option", name="heart", exact=True).click()
                page.wait_for_selector("text=cleveland · development (not pooled)", timeout=180_000)
                text = _shown(page)
                page.screenshot(path=str(ARTIFACTS / "synthesis-heart.png"), full_page=True)
                for site in ("hungary · external", "switzerland · external", "va · external"):
                    assert site in text, site
                assert "random-effects estimate (k = 3)" in text
                assert "rgb(213, 94, 0)" in page.locator(".main-svg").first.inner_html()
            finally:
                browser.close()
    finally:
        stop(proc)
        log.close()
    assert proc.poll() is not None
