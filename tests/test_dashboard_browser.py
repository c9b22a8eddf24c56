"""End to end: `validate dashboard BUNDLE` serves every page to headless Chromium without an error.

Starts the real server (subprocess, a free port on 127.0.0.1), waits for its health endpoint, visits
every page with Playwright driving Debian's chromium, and checks each page: no exception box, the
site names, rendered plotly SVGs. A screenshot of each page goes to test-artifacts/dashboard/.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from validate.report.pdf import CHROMIUM_ARGS as CHROMIUM_FLAGS

from conftest import REPO, requires_browser
from test_dashboard_data import write_fixture_run

ARTIFACTS = REPO / "test-artifacts" / "dashboard"
CHROMIUM_ARGS = list(CHROMIUM_FLAGS)  # the flags the PDF printer launches Chromium with
# url path -> whether the page must show a plotly figure with the fixture bundle
PAGES = {
    "overview": True,
    "reliability": True,
    "subgroups": True,
    "calibration": True,
    "discrimination": True,
    "shift": True,
    "cases": False,
    "compare": False,
}
# what a page without a figure shows when ready: Compare runs, for the two fixture runs (which do not record
# their case-id key), says it cannot tell whether they scored the same cases (tests/test_dashboard_compare*.py)
READY = {"compare": '[data-testid="stAlert"]'}
SITES = ("alpha", "beta", "gamma")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the dashboard exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200 and r.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not healthy after {timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


@pytest.mark.browser
@pytest.mark.slow
@requires_browser
def test_every_page_renders_in_chromium(tmp_path):
    from playwright.sync_api import sync_playwright

    runs = tmp_path / "runs"
    write_fixture_run(runs / "fixture-v2", image_root=tmp_path / "images" / "gamma", auroc_shift=0.015, seed=1)
    # a second run so that Compare runs has something to compare with; v2 is newer, so it opens first
    write_fixture_run(runs / "fixture-v1", image_root=tmp_path / "images" / "gamma")
    old = time.time() - 3600
    for f in (runs / "fixture-v1").iterdir():
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
                for url_path, needs_figure in PAGES.items():
                    # the default page (Overview) lives at the root URL
                    page.goto(f"{base}/{'' if url_path == 'overview' else url_path}", wait_until="domcontentloaded")
                    page.wait_for_selector('[data-testid="stMainBlockContainer"] h1', timeout=60_000)
                    page.wait_for_selector(
                        ".main-svg" if needs_figure else READY.get(url_path, '[data-testid="stDataFrame"]'),
                        timeout=60_000,
                    )
                    _wait_idle(page)
                    page.screenshot(path=str(ARTIFACTS / f"{url_path}.png"), full_page=True)
                    assert page.locator('[data-testid="stException"]').count() == 0, (
                        f"{url_path}: {page.locator('[data-testid=stException]').first.inner_text()[:500]}"
                    )
                    # textContent, not innerText: tables are drawn on a canvas, their cells live in an
                    # accessible (invisible) table
                    text = page.locator('[data-testid="stMain"]').text_content()
                    if needs_figure:
                        assert page.locator(".main-svg").count() > 0, url_path
                    if url_path in ("overview", "subgroups"):
                        for site in SITES:
                            assert site in text, (url_path, site)
                    elif url_path == "cases":
                        assert "alpha" in text and "most confident" in text
                    elif url_path == "shift":
                        assert "beta" in text and "gamma" in text
                    elif url_path == "compare":
                        assert "fixture-v1" in text and "cannot be told" in text
                # the Cases page shows thumbnails for the image site
                page.goto(f"{base}/cases", wait_until="domcontentloaded")
                page.wait_for_selector('[data-testid="stDataFrame"]', timeout=60_000)
                page.get_by_role("combobox", name="Site").click()
                page.get_by_role("option", name="gamma", exact=True).click()
                page.wait_for_selector('[data-testid="stImage"] img', timeout=60_000)
                _wait_idle(page)
                assert page.locator('[data-testid="stImage"] img').count() >= 1
                page.screenshot(path=str(ARTIFACTS / "cases-gamma.png"), full_page=True)
                assert page.locator('[data-testid="stException"]').count() == 0
            finally:
                browser.close()
    finally:
        stop(proc)
        log.close()
    assert proc.poll() is not None


def _wait_idle(page, timeout: float = 30.0) -> None:
    """Wait (bounded) until Streamlit has finished the script run: no spinner, no running status."""
    deadline = time.monotonic() + timeout
    time.sleep(0.3)
    busy = '[data-testid="stSpinner"], [data-testid="stStatusWidgetRunningIcon"]'
    while time.monotonic() < deadline:
        if page.locator(busy).count() == 0:
            time.sleep(0.7)  # plotly draws after the script run ends
            return
        time.sleep(0.25)


@pytest.mark.browser
@pytest.mark.slow
@requires_browser
def test_no_request_leaves_the_machine(tmp_path):
    """Every request the dashboard makes on every page goes to its own server on 127.0.0.1; the
    favicon included (a ``:material/...:`` or emoji page icon is fetched from a public font host)."""
    from urllib.parse import urljoin, urlparse

    from playwright.sync_api import sync_playwright

    runs = tmp_path / "runs"
    write_fixture_run(runs / "fixture-v2", image_root=tmp_path / "images" / "gamma", auroc_shift=0.015, seed=1)
    write_fixture_run(runs / "fixture-v1", image_root=tmp_path / "images" / "gamma")
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
    requests, icons = [], []
    try:
        wait_healthy(f"{base}/_stcore/health", proc)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS, headless=True)
            try:
                context = browser.new_context(viewport={"width": 1400, "height": 2400})
                context.on("request", lambda r: requests.append(r.url))  # pages, workers, fetches, images
                page = context.new_page()
                page.set_default_timeout(60_000)
                for url_path, needs_figure in PAGES.items():
                    page.goto(f"{base}/{'' if url_path == 'overview' else url_path}", wait_until="domcontentloaded")
                    page.wait_for_selector('[data-testid="stMainBlockContainer"] h1', timeout=60_000)
                    page.wait_for_selector(
                        ".main-svg" if needs_figure else READY.get(url_path, '[data-testid="stDataFrame"]'),
                        timeout=60_000,
                    )
                    _wait_idle(page)
                    # headless Chromium may not fetch the favicon itself: judge the address the page gives it
                    hrefs = page.evaluate("Array.from(document.querySelectorAll('link[rel~=icon]')).map(l => l.href)")
                    icons.extend(urljoin(page.url, h) for h in hrefs)
            finally:
                browser.close()
    finally:
        stop(proc)
        log.close()
    assert requests and icons
    outside = sorted(
        {u for u in requests + icons if not (u.startswith(("data:", "blob:")) or urlparse(u).hostname == "127.0.0.1")}
    )
    assert outside == [], outside
