"""The fairness section of the report and the dashboard's Fairness page, on a bundle of a real run of the
synthetic protocol (tests/test_run_helpers.py): the section and page show the measures and figures, and
neither appears for a bundle without fairness.json."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, requires_browser
from test_dashboard_browser import CHROMIUM_ARGS, _wait_idle, free_port, stop, wait_healthy
from test_run_helpers import synthetic_bundle  # noqa: F401 (fixture)


def test_report_shows_the_fairness_section(synthetic_bundle):  # noqa: F811
    html = (synthetic_bundle["bundle"] / "report.html").read_text()
    section = html[html.index('<section id="fairness">') :]
    section = section[: section.index("</section>")]
    for text in ("Equalised-odds difference", "Demographic-parity ratio", "reference group", "age_band", "sex"):
        assert text in section, text
    assert section.count('class="figure validate-figure"') == 2 * 3  # TPR and FPR gaps per subgroup
    # every summary interval holds its estimate as printed: "e (lo to hi)"
    for est, lo, hi in re.findall(r"(-?\d\.\d{3}) \((-?\d\.\d{3}) to (-?\d\.\d{3})\)", section):
        assert float(lo) <= float(est) <= float(hi), (est, lo, hi)


def test_report_without_fairness_has_no_section(synthetic_bundle, tmp_path):  # noqa: F811
    from validate.bundle import Bundle
    from validate.report import render_report

    copy = tmp_path / "bundle"
    shutil.copytree(synthetic_bundle["bundle"], copy)
    (copy / "fairness.json").unlink()
    html = render_report(Bundle(path=copy))
    assert 'id="fairness"' not in html and 'href="#fairness"' not in html


@pytest.mark.browser
@pytest.mark.slow
@requires_browser
def test_fairness_page_renders_in_chromium(synthetic_bundle, tmp_path):  # noqa: F811
    from playwright.sync_api import sync_playwright

    runs = tmp_path / "runs"
    shutil.copytree(synthetic_bundle["bundle"], runs / "synthetic")
    port = free_port()
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "validate", "dashboard", str(runs), "--port", str(port)],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    artifacts = REPO / "test-artifacts" / "dashboard"
    artifacts.mkdir(parents=True, exist_ok=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(f"{base}/_stcore/health", proc)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 2400})
                page.set_default_timeout(60_000)
                page.goto(f"{base}/fairness", wait_until="domcontentloaded")
                page.wait_for_selector('[data-testid="stMainBlockContainer"] h1', timeout=60_000)
                page.wait_for_selector(".main-svg", state="attached", timeout=120_000)
                _wait_idle(page)
                page.screenshot(path=str(artifacts / "fairness.png"), full_page=True)
                assert page.locator('[data-testid="stException"]').count() == 0
                text = page.locator('[data-testid="stMain"]').text_content() or ""
                assert "Fairness" in text and "Equalised-odds difference" in text
                assert page.locator(".main-svg").count() >= 2  # the TPR and FPR gap figures
                # another site is chosen and drawn without an error
                page.get_by_role("combobox", name="Where").click()
                page.get_by_role("option", name="site ext_flat", exact=True).click()
                _wait_idle(page)
                assert page.locator('[data-testid="stException"]').count() == 0
                assert "ext_flat" in (page.locator('[data-testid="stMain"]').text_content() or "")
            finally:
                browser.close()
    finally:
        stop(proc)
        log.close()
    assert proc.poll() is not None
