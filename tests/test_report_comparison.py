"""The report's "Model comparison" section: shown when the bundle has comparison.json, every Δ with its
interval, method and n as the file gives them, the comparison gates' verdict words, a forest per gate
metric; a renamed key in comparison.json fails loudly instead of reading as "no data"."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from comparison_fixture import comparison

from validate.bundle import Bundle
from validate.errors import InputError
from validate.report.render import render_report

from test_run_helpers import synthetic_bundle  # noqa: F401 (fixture)

GATE = {
    "metric": "auroc",
    "scope": "each_site",
    "direction": "min",
    "threshold": -0.02,
    "on": "ci_low",
    "name": "auroc-no-worse",
    "calibration": None,
    "insufficient": "warn",
    "compare": "baseline",
}


def _row(site: str, verdict: str, reason: str, delta: dict, n: int, events: int) -> dict:
    return {
        "gate": "auroc-no-worse",
        "metric": "auroc",
        "scope": "each_site",
        "item": f"site {site}",
        "on": "ci_low",
        "direction": "min",
        "threshold": -0.02,
        "verdict": verdict,
        "reason": reason,
        "value": delta["ci_low"],
        "estimate": delta["delta"],
        "ci_low": delta["ci_low"],
        "ci_high": delta["ci_high"],
        "n": n,
        "n_events": events,
        "site": site,
        "subgroup": None,
        "group": None,
        "calibration": None,
        "insufficient": False,
        "compare": "baseline",
        "margin": 0.02,
        "estimate_new": delta["new"],
        "estimate_baseline": delta["baseline"],
    }


@pytest.fixture
def bundle_with_comparison(synthetic_bundle, tmp_path):  # noqa: F811
    folder = tmp_path / "bundle"
    shutil.copytree(synthetic_bundle["bundle"], folder)
    cmp = comparison()
    (folder / "comparison.json").write_text(json.dumps(cmp))
    gates = json.loads((folder / "gates.json").read_text())
    va, sw = cmp["sites"]["va"], cmp["sites"]["switzerland"]
    gates["gates"].append(GATE)
    gates["rows"] += [
        _row("va", "pass", "superior: Δ auroc ci_low 0.003 > 0", va["metrics"]["auroc"], 200, 149),
        _row(
            "switzerland", "fail", "inferior: Δ auroc ci_high 0.019 ... (margin 0.02)", sw["metrics"]["auroc"], 123, 115
        ),
    ]
    (folder / "gates.json").write_text(json.dumps(gates))
    return folder


def _section(html: str) -> str:
    m = re.search(r'<section id="comparison">(.*?)</section>', html, re.S)
    assert m, "no comparison section"
    return m.group(1)


def test_section_shows_the_files_deltas_with_interval_method_and_n(bundle_with_comparison):
    html = render_report(Bundle(path=bundle_with_comparison))
    sec = _section(html)
    assert '<a href="#comparison">' in html
    # after the verdict, before provenance
    assert (
        html.index('<section id="verdict">')
        < html.index('<section id="comparison">')
        < html.index('<section id="provenance">')
    )
    assert "Δ AUROC (95% CI, paired DeLong)" in sec and "Δ ECE (95% CI, paired bootstrap)" in sec
    # va: AUROC Δ 0.733 − 0.712 = 0.021 (0.003 to 0.039), n 200 with 149 events
    va_row = re.search(r"<tr><td>va</td>(.*?)</tr>", sec, re.S).group(1)
    assert "200 (149)" in va_row
    assert "0.021 (0.003–0.039)" in va_row and "new 0.733 · baseline 0.712" in va_row
    assert "-0.011 (-0.041 to 0.020)" in va_row  # ECE 0.083 − 0.094
    # the insufficient site is marked, the undefined metric says so
    sw_row = re.search(r"<tr><td>switzerland</td>(.*?)</tr>", sec, re.S).group(1)
    assert "insufficient" in sw_row
    assert "sex = female at va" in sec and "one class only (no events)" in sec
    assert "920 cases" in sec and "model_v2.pt2" in sec and "model.pt2" in sec


def test_section_gives_the_comparison_gates_verdict_words_and_a_forest(bundle_with_comparison):
    html = render_report(Bundle(path=bundle_with_comparison))
    sec = _section(html)
    assert "Comparison gates" in sec
    assert "superior: Δ auroc ci_low 0.003 &gt; 0" in sec and "inferior: Δ auroc" in sec
    assert "Δ auroc (new − baseline) ci_low &gt;= -0.02" in sec
    assert sec.count('class="figure validate-figure"') == 1  # one gate metric: one forest
    assert "Dashed: the gate&#x27;s margin (Δ = -0.020)" in sec


def test_no_comparison_json_no_section(synthetic_bundle):  # noqa: F811
    html = render_report(Bundle(path=synthetic_bundle["bundle"]))
    assert 'id="comparison"' not in html and 'href="#comparison"' not in html


def test_a_renamed_key_in_comparison_json_fails_loudly(bundle_with_comparison):
    cmp = comparison()
    entry = cmp["sites"]["va"]["metrics"]["auroc"]
    entry["difference"] = entry.pop("delta")
    (bundle_with_comparison / "comparison.json").write_text(json.dumps(cmp))
    with pytest.raises(InputError) as err:
        render_report(Bundle(path=bundle_with_comparison))
    text = str(err.value)
    assert "comparison.json" in text and "sites.va.metrics.auroc.delta" in text
