"""End to end: the Clinical utility page served by `validate dashboard` renders in headless Chromium: the
decision curve draws (model, treat all, treat none, bands, decision thresholds), the site selector redraws
it for another site, the net-benefit and precision tables are there, and no request leaves the machine.
Screenshots go to test-artifacts/dashboard/."""

from __future__ import annotations

import subprocess
import sys

import pytest
from decision_fixture import add_decision_and_precision

from conftest import REPO, requires_browser
from test_dashboard_browser import ARTIFACTS, CHROMIUM_ARGS, _wait_idle, free_port, stop, wait_healthy
from test_dashboard_data import write_fixture_run

TRACES = "[data-testid='stPlotlyChart'] .scatterlayer .trace"
TITLE = "[data-testid='stPlotlyChart'] .gtitle"


@pytest.mark.browser
@pytest.mark.slow
@requires_browser
def test_clinical_utility_page_renders_and_switches_site(tmp_path):
    from playwright.sync_api import sync_playwright

    runs = tmp_path / "runs"
    add_decision_and_precision(write_fixture_run(runs / "with-decision"))
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
    requests: list[str] = []
    try:
        wait_healthy(f"{base}/_stcore/health", proc)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 2400})
                page.set_default_timeout(60_000)
                page.on("request", lambda r: requests.append(r.url))
                page.goto(f"{base}/decision", wait_until="domcontentloaded")
                page.wait_for_selector('[data-testid="stMainBlockContainer"] h1')
                page.wait_for_selector(TITLE)
                _wait_idle(page)
                assert page.locator('[data-testid="stException"]').count() == 0
                assert "Decision curve at alpha" in page.locator(TITLE).first.text_content()
                # two bands, treat all, treat none, the model, the decision thresholds
                assert page.locator(TRACES).count() == 6
                legend = set(page.locator("[data-testid='stPlotlyChart'] .legendtext").all_text_contents())
                assert {"model", "treat all", "treat none", "decision thresholds (protocol)"} <= legend
                text = page.locator('[data-testid="stMain"]').text_content()
                assert "Clinical utility and precision" in text and "Sample size and precision" in text
                assert "each site at its own prevalence" in text.lower()
                assert page.locator('[data-testid="stDataFrame"]').count() == 2
                page.screenshot(path=str(ARTIFACTS / "decision.png"), full_page=True)

                page.get_by_role("combobox", name="Site").click()
                page.get_by_role("option", name="gamma", exact=True).click()
                page.wait_for_function(
                    f"document.querySelector(\"{TITLE}\")?.textContent.includes('Decision curve at gamma')"
                )
                _wait_idle(page)
                assert page.locator('[data-testid="stException"]').count() == 0
                assert "n=20, 6 events" in page.locator(TITLE).first.text_content()
                page.screenshot(path=str(ARTIFACTS / "decision-gamma.png"), full_page=True)
            finally:
                browser.close()
    finally:
        stop(proc)
        log.close()
    assert [u for u in requests if not u.startswith(base) and not u.startswith("data:")] == []
