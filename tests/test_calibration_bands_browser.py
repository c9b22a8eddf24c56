"""The calibration band in the browser: the dashboard's Reliability page, served by `validate dashboard`
to headless Chromium, draws the lowess band from curves.json's ``reliability.smooth_band`` with its
legend "pointwise, not simultaneous" (and the loess band, hidden until chosen in the legend)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO, requires_browser
from test_dashboard_browser import CHROMIUM_ARGS, _wait_idle, free_port, stop, wait_healthy
from test_dashboard_data import write_fixture_run

BAND = "lowess 95% band (pointwise, not simultaneous)"

# the names and fill of every trace of every plotly figure on the page, as plotly holds them in the DOM
TRACES_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).flatMap(
    g => (g.data || []).map(t => ({name: t.name || '', fill: t.fill || '', visible: String(t.visible),
                                   n: (t.x || []).length})))"""


@pytest.mark.browser
@pytest.mark.slow
@requires_browser
def test_reliability_page_draws_the_pointwise_band(tmp_path):
    from playwright.sync_api import sync_playwright

    runs = tmp_path / "runs"
    write_fixture_run(runs / "fixture-v1")
    port = free_port()
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "validate", "dashboard", str(runs), "--port", str(port)],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(f"{base}/_stcore/health", proc)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 2400})
                page.set_default_timeout(120_000)
                page.goto(f"{base}/reliability", wait_until="domcontentloaded")
                page.wait_for_selector('[data-testid="stMainBlockContainer"] h1', timeout=120_000)
                try:
                    page.wait_for_selector(".main-svg", timeout=120_000)
                finally:
                    page.screenshot(path=str(tmp_path / "reliability.png"), full_page=True)
                _wait_idle(page)
                assert page.locator('[data-testid="stException"]').count() == 0
                traces = page.evaluate(TRACES_JS)
                band = [t for t in traces if t["name"] == BAND]
                assert band, [t["name"] for t in traces]
                assert band[0]["fill"] == "toself" and band[0]["visible"] != "false" and band[0]["n"] > 10
                loess = [t for t in traces if t["name"].startswith("loess 95% band")]
                assert loess and loess[0]["visible"] == "legendonly"
                # the legend the reader sees says it
                legend = page.locator(".legend").first.text_content()
                assert "pointwise, not simultaneous" in legend
                assert "(Wilson)" in legend
            finally:
                browser.close()
    finally:
        stop(proc)
        log.close()
