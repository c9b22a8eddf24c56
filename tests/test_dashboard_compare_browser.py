"""End to end in Chromium: "Compare runs" and "Model comparison" on bundles made by `validate run`.

Three real runs: two of a lighter copy of protocols/heart-compare.yaml (the heart sample's sites; fewer
bootstrap replicates, no recalibration), both under one $VALIDATE_CASE_ID_KEY so their cases pair:
heart-v2 (the protocol's own pair: model_v2 against the shipped model as its baseline) and heart-v1 (the
shipped model, `--checkpoint model.pt2 --baseline model.pt2`: its comparison gates need a baseline);
and a chest run (two of its sites). The dashboard server runs on 127.0.0.1, polled on /_stcore/health.

- heart-v2 against heart-v1 (the default baseline: a run of the same protocol): the page says "paired"
  and shows the paired Δ, the same as heart-v2's own comparison.json (DeLong: identical by definition).
- heart-v2 against the chest run: refused, no Δ, no figure.
- the Model comparison page of heart-v2 draws its forest; its report has the comparison section.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, requires_browser
from test_dashboard_browser import CHROMIUM_ARGS, _wait_idle, free_port, stop, wait_healthy

ARTIFACTS = REPO / "test-artifacts" / "dashboard"
HEART = REPO / "sample_sites" / "heart"


def light_protocol(source: Path, target: Path, *, keep_sites: tuple[str, ...] = ()) -> Path:
    """A copy of ``source`` with absolute paths, 200 bootstrap replicates, no calibration designs and no
    intersection subgroup (the same science at a fraction of the time), optionally fewer sites."""
    text = source.read_text(encoding="utf-8").replace("../sample_sites/", f"{REPO / 'sample_sites'}/")
    text = re.sub(r"n_bootstrap: \d+", "n_bootstrap: 200", text)
    text = re.sub(r"(?ms)^calibration:\n.*?(?=^\S)", "", text)
    text = "\n".join(line for line in text.splitlines() if "intersection:" not in line) + "\n"
    if keep_sites:
        head, _, rest = text.partition("\nsites:\n")
        body, tail = re.match(r"(?s)(.*?)(\n\S.*)", rest).groups()
        chunks = re.split(r"(?m)^(?=  - id: )", body)
        body = "".join(
            c for c in chunks if re.match(r"  - id: (\S+)", c) and re.match(r"  - id: (\S+)", c).group(1) in keep_sites
        )
        text = f"{head}\nsites:\n{body}{tail}"
    target.write_text(text, encoding="utf-8")
    return target


def validate_run(protocol: Path, out: Path, *extra: str, key: str | None = None) -> None:
    env = {k: v for k, v in os.environ.items() if k != "VALIDATE_CASE_ID_KEY"}
    if key:
        env["VALIDATE_CASE_ID_KEY"] = key
    proc = subprocess.run(
        [sys.executable, "-m", "validate", "run", str(protocol), "--out", str(out), "--quiet", *extra],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode in (0, 1), proc.stderr[-2000:]  # 1: a gate failed, the bundle is whole


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmpbrowser")
    heart = light_protocol(REPO / "protocols" / "heart-compare.yaml", root / "heart-compare.yaml")
    chest = light_protocol(
        REPO / "protocols" / "chest.yaml", root / "chest.yaml", keep_sites=("development", "control")
    )
    runs = root / "runs"
    validate_run(chest, runs / "chest")
    validate_run(
        heart,
        runs / "heart-v1",
        "--checkpoint",
        str(HEART / "model.pt2"),
        "--baseline",
        str(HEART / "model.pt2"),
        key="one key for both heart runs",
    )
    validate_run(heart, runs / "heart-v2", key="one key for both heart runs")
    now = time.time()
    for age, name in ((7200, "chest"), (3600, "heart-v1"), (0, "heart-v2")):  # heart-v2 opens first
        for f in (runs / name).iterdir():
            os.utime(f, (now - age, now - age))
    return runs


@pytest.fixture(scope="module")
def server(runs, tmp_path_factory):
    port = free_port()
    log = open(tmp_path_factory.mktemp("server") / "server.log", "wb")
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
        yield base
    finally:
        stop(proc)
        log.close()


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS, headless=True)
        try:
            pg = browser.new_page(viewport={"width": 1400, "height": 2400})
            pg.set_default_timeout(120_000)
            yield pg
        finally:
            browser.close()


def main_text(pg) -> str:
    # textContent, not innerText: tables are drawn on a canvas, their cells live in an accessible table
    return pg.locator('[data-testid="stMain"]').text_content()


def no_exception(pg) -> None:
    assert pg.locator('[data-testid="stException"]').count() == 0, pg.locator(
        '[data-testid="stException"]'
    ).first.inner_text()[:500]


@pytest.mark.browser
@pytest.mark.slow
@requires_browser
def test_same_cohort_pair_shows_the_paired_difference(runs, server, page):
    page.goto(f"{server}/compare", wait_until="domcontentloaded")
    page.wait_for_selector(".main-svg", timeout=240_000)  # the pairing runs the paired bootstrap first
    _wait_idle(page, 60)
    page.screenshot(path=str(ARTIFACTS / "compare-paired.png"), full_page=True)
    no_exception(page)
    text = main_text(page)
    assert "Paired comparison" in text and "paired DeLong" in text and "paired bootstrap" in text
    assert "MOVER" not in text
    assert "heart-v1" in text and "heart-v2" in text
    # the pooled AUROC Δ equals the one heart-v2's run wrote against the same baseline model
    own = json.loads((runs / "heart-v2" / "comparison.json").read_text())["overall"]["metrics"]["auroc"]
    shown = f"{own['delta']:.3f} ({own['ci_low']:.3f} to {own['ci_high']:.3f})"
    assert shown in text, shown


@pytest.mark.browser
@pytest.mark.slow
@requires_browser
def test_heart_against_chest_is_refused(server, page):
    page.goto(f"{server}/compare", wait_until="domcontentloaded")
    page.wait_for_selector('[data-testid="stMainBlockContainer"] h1', timeout=120_000)
    _wait_idle(page, 60)
    page.get_by_role("combobox", name="Baseline run (compared against)").click()
    page.get_by_role("option", name=re.compile(r"^chest \(chest v1\.0\)")).click()
    page.wait_for_selector("text=Not compared", timeout=120_000)
    _wait_idle(page, 60)
    page.screenshot(path=str(ARTIFACTS / "compare-unrelated.png"), full_page=True)
    no_exception(page)
    text = main_text(page)
    assert re.search(r"different protocols \(heart-compare v[\d.]+ and chest v1\.0\)", text), text[:2000]
    assert "Δ new − baseline" not in text and "Difference (new − base)" not in text
    assert page.locator(".main-svg").count() == 0


@pytest.mark.browser
@pytest.mark.slow
@requires_browser
def test_model_comparison_page_and_report(runs, server, page):
    page.goto(f"{server}/comparison", wait_until="domcontentloaded")
    page.wait_for_selector(".main-svg", timeout=120_000)
    _wait_idle(page, 60)
    page.screenshot(path=str(ARTIFACTS / "comparison.png"), full_page=True)
    no_exception(page)
    text = main_text(page)
    assert "Comparison gates:" in text and "auroc-non-inferior-each-site" in text
    assert "paired DeLong" in text and "cases matched by site and case id" in text
    # the AUROC forest carries the gate's margin, dashed
    gates = json.loads((runs / "heart-v2" / "gates.json").read_text())
    bound = next(g["threshold"] for g in gates["gates"] if g.get("compare") == "baseline" and g["metric"] == "auroc")
    assert f"Dashed: the gate's margin at Δ = {bound:.3f}" in text
    report = (runs / "heart-v2" / "report.html").read_text(encoding="utf-8")
    assert '<section id="comparison">' in report and "paired DeLong" in report and "Comparison gates" in report
