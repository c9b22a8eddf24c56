"""End to end in Chromium: the segmentation report sections and the dashboard's Segmentation page, on the
hand-made segmentation bundle (tests/segmentation_fixture.py).

The report (a file, offline) must draw every figure of its segmentation sections as SVG and decode every
overlay picture, with no script error; the dashboard (the real server on 127.0.0.1) must show the page
without an exception box, with its figures, the sites and the worst cases' pictures. Screenshots go to
test-artifacts/segmentation/.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import segmentation_fixture as fx

from validate.bundle import Bundle
from validate.report.render import write_report

from conftest import REPO, requires_browser
from test_dashboard_browser import CHROMIUM_ARGS, _wait_idle, free_port, stop, wait_healthy

ARTIFACTS = REPO / "test-artifacts" / "segmentation"
SECTIONS = ("segmentation", "segmentation-worst", "segmentation-calibration", "segmentation-area")


@pytest.mark.browser
@pytest.mark.slow
@requires_browser
def test_report_sections_draw_every_figure_and_overlay(tmp_path):
    from playwright.sync_api import sync_playwright

    folder = fx.write_segmentation_run(tmp_path / "run", thumbnails=True)
    report = write_report(Bundle(path=folder))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1800})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(report.as_uri(), wait_until="load")
            page.wait_for_function(
                "document.querySelectorAll('.validate-figure .main-svg').length >= "
                "document.querySelectorAll('.validate-figure').length",
                timeout=120_000,
            )
            for anchor in SECTIONS:
                page.locator(f"section#{anchor}").screenshot(path=str(ARTIFACTS / f"report-{anchor}.png"))
            drawn = page.evaluate(
                "Array.from(document.querySelectorAll('section[id^=segmentation] .validate-figure'))"
                ".map(f => f.querySelectorAll('.main-svg').length > 0)"
            )
            sizes = page.evaluate(
                "Array.from(document.querySelectorAll('#segmentation-worst img'))"
                ".map(i => [i.complete, i.naturalWidth, i.naturalHeight])"
            )
            text = page.locator("section#segmentation-calibration").text_content() or ""
        finally:
            browser.close()
    assert errors == []
    assert drawn == [True] * 7  # Dice, HD95, two differences, reliability, temperature, area agreement
    assert sizes == [[True, fx.OVERLAY_WIDTH * 2, fx.OVERLAY_HEIGHT * 2]] * 8
    for site in fx.SITES:
        assert site in text


@pytest.mark.browser
@pytest.mark.slow
@requires_browser
def test_dashboard_segmentation_page_renders_in_chromium(tmp_path):
    from playwright.sync_api import sync_playwright

    runs = tmp_path / "runs"
    fx.write_segmentation_run(runs / "fetal-head", thumbnails=True)
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
                page = browser.new_page(viewport={"width": 1400, "height": 3200})
                page.set_default_timeout(60_000)
                page.goto(f"{base}/segmentation", wait_until="domcontentloaded")
                page.wait_for_selector('[data-testid="stImage"] img', timeout=180_000)
                page.wait_for_selector(".main-svg", timeout=180_000)
                _wait_idle(page)
                page.screenshot(path=str(ARTIFACTS / "dashboard-segmentation.png"), full_page=True)
                assert page.locator('[data-testid="stException"]').count() == 0, page.locator(
                    '[data-testid="stException"]'
                ).first.inner_text()[:500]
                text = page.locator('[data-testid="stMain"]').text_content() or ""
                for heading in ("Per site", "Worst cases", "Pixel calibration", "Area agreement"):
                    assert heading in text, heading
                for site in fx.SITES:
                    assert site in text, site
                assert "case dev-0007 · head · Dice 0.881" in text
                loaded = page.evaluate(
                    "Array.from(document.querySelectorAll('[data-testid=stImage] img')).map(i => i.naturalWidth > 0)"
                )
                assert loaded == [True, True]
                assert page.locator(".main-svg").count() >= 7
                # the navigation offers the segmentation page, not the classification ones
                nav = page.locator('[data-testid="stSidebarNav"]').text_content() or ""
                assert "Segmentation" in nav and "Discrimination" not in nav and "Reliability" not in nav
            finally:
                browser.close()
    finally:
        stop(proc)
        log.close()
    assert proc.poll() is not None
