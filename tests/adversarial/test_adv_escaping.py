"""Output that cannot be turned against its reader, at the command line.

Hostile text in a manifest (subgroup values, case ids) and in a protocol (a gate name) goes through
`validate run`, `validate gate` and `validate score`; the outputs must stay inert for whoever reads
them: junit.xml well-formed for strict XML parsers, gates.md without HTML, links, images or
@mentions, no escape sequence on the terminal, and CSV cells a spreadsheet will not run as formulas.
"""

from __future__ import annotations

import csv
import re
import sys
import xml.dom.minidom
import xml.etree.ElementTree as ET
import xml.sax
from pathlib import Path

import markdown
import numpy as np
import torch
import yaml

from tests.adversarial.harness import Unchanged, run_cli

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
from test_run_helpers import make_protocol, synthetic_predictions  # noqa: E402
from test_scoring_support import tiny_model, write_factory  # noqa: E402

HOSTILE_GROUPS = [
    "<script>alert(1)</script>",
    "a\x01b\x1b[31mred",
    "x]]>y",
    "@octocat",
    "[x](javascript:alert(1))",
    "bad\ufffeend",
    "![p](https://evil.example/p.png)",
]
# YAML double-quoted escapes: a bell, an escape sequence, a C1 control, CDATA end, HTML, a link, a mention
HOSTILE_GATE = '"<img src=x onerror=alert(1)> @octocat \\x07\\e[2J\\x9b ]]> [y](javascript:alert(2))"'


def _hostile_run(tmp_path: Path) -> Path:
    gates = f"""
gates:
  - name: {HOSTILE_GATE}
    metric: auroc
    scope: each_subgroup:sex
    min: 0.99
    insufficient: warn
"""
    protocol = make_protocol(tmp_path, gates=gates, n_bootstrap=0, keep_case_ids=True)
    frame = synthetic_predictions()
    frame["sex"] = [HOSTILE_GROUPS[i % len(HOSTILE_GROUPS)] for i in range(len(frame))]
    frame.to_csv(tmp_path / "hostile.csv", index=False)
    return protocol


def _assert_junit_well_formed(path: Path) -> ET.Element:
    data = path.read_bytes()
    xml.dom.minidom.parseString(data)
    xml.sax.parseString(data, xml.sax.ContentHandler())
    return ET.fromstring(data)


def _assert_markdown_inert(md: str) -> None:
    html = markdown.markdown(md, extensions=["tables"])
    tags = {t.split()[0].strip("</>") for t in re.findall(r"</?[a-zA-Z][^>]*>", html)}
    assert tags <= {"h3", "p", "strong", "table", "thead", "tbody", "tr", "th", "td"}, tags
    assert "<script" not in html and "<img" not in html and "href" not in html
    assert "](javascript:" not in md and "@octocat" not in md and "https://" not in md
    assert not re.search(r"(?<!&lt;)(?<!&amp;)<[a-zA-Z/]", md)  # no unescaped tag opener
    assert "\x1b" not in md and "\x07" not in md and "\x9b" not in md


def test_hostile_subgroup_values_and_gate_name_give_inert_outputs(tmp_path):
    protocol = _hostile_run(tmp_path)
    with Unchanged(tmp_path, allow=["out"]):
        r = run_cli("run", protocol, "--predictions", tmp_path / "hostile.csv", "--out", tmp_path / "out", cwd=tmp_path)
    assert r.code == 1, r.text  # min 0.99: every group fails
    # the terminal gets no control character from the data, but sees that one was there
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", r.out), repr(r.out)
    assert "\\x1b[31mred" in r.out and "\\x07\\x1b[2J\\x9b" in r.out

    root = _assert_junit_well_formed(tmp_path / "out" / "junit.xml")
    failed = [c for c in root.iter("testcase") if c.find("failure") is not None]
    assert len(failed) == len(HOSTILE_GROUPS)
    names = {c.get("name") for c in failed}
    assert "sex=<script>alert(1)</script>: auroc estimate >= 0.99" in names  # readable, escaped by XML
    assert "sex=a\\x01b\\x1b[31mred: auroc estimate >= 0.99" in names
    assert "sex=bad\\ufffeend: auroc estimate >= 0.99" in names

    md = (tmp_path / "out" / "gates.md").read_text(encoding="utf-8")
    _assert_markdown_inert(md)
    assert "sex=&lt;script&gt;alert(1)&lt;/script&gt;" in md

    with Unchanged(tmp_path):
        g = run_cli("gate", tmp_path / "out", "--protocol", protocol, cwd=tmp_path)
    assert g.code == 1, g.text
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", g.out), repr(g.out)
    _assert_markdown_inert(g.out.split("\nVerdict:")[0])


def test_failures_csv_cells_are_no_spreadsheet_formulas(tmp_path):
    # the tiny tabular model's output is NaN when the first feature is below -1: those cases fail
    write_factory(tmp_path / "code")
    torch.save(tiny_model("build_tabular").state_dict(), tmp_path / "tab.pt")
    hostile_ids = ['=HYPERLINK("http://evil.example","x")', "+cmd|' /C calc'!A0", "@SUM(1+1)", "-2+3", "-0.5"]
    rng = np.random.default_rng(0)
    rows = ["case_id,label,f0,f1,f2,sex"]
    for i in range(40):
        bad = i < len(hostile_ids)
        case = hostile_ids[i] if bad else f"c{i}"
        f0 = -3.0 if bad else 1.0 + rng.random()
        cell = '"' + case.replace('"', '""') + '"'
        rows.append(f"{cell},{i % 2},{f0:.3f},{rng.normal():.3f},{rng.normal():.3f},{'FM'[i % 2]}")
    (tmp_path / "a.csv").write_text("\n".join(rows) + "\n")
    doc = {
        "name": "formulas",
        "task": "binary",
        "classes": ["neg", "pos"],
        "input": {"kind": "tabular", "features": ["f0", "f1", "f2"]},
        "model": {
            "checkpoint": "tab.pt",
            "format": "state_dict",
            "factory": "tiny_def:build_tabular",
            "factory_path": "code",
        },
        "sites": [{"id": "a", "manifest": "a.csv", "role": "development"}],
        "attributes": ["sex"],
        "metrics": {"n_bootstrap": 0, "min_cases": 1, "min_events": 1},
        "calibration": {"methods": [], "fit_fraction": 0.5},
        "keep_case_ids": True,
    }
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    with Unchanged(tmp_path, allow=["out", "scored", ".cache"]):
        r = run_cli("run", tmp_path / "p.yaml", "--out", tmp_path / "out", cwd=tmp_path)
        s = run_cli("score", tmp_path / "p.yaml", "--out", tmp_path / "scored", cwd=tmp_path)
    assert r.code == 0, r.text
    assert s.code == 0, s.text
    # OWASP: text cells starting with = + - @ get a leading quote; a plain number (-0.5) is no formula
    want = ['\'=HYPERLINK("http://evil.example","x")', "'+cmd|' /C calc'!A0", "'@SUM(1+1)", "'-2+3", "-0.5"]
    for path in (tmp_path / "out" / "failures.csv", tmp_path / "scored" / "failures.csv"):
        with open(path, newline="", encoding="utf-8") as fh:
            table = list(csv.DictReader(fh))
        assert sorted(row["case_id"] for row in table) == sorted(want), path
        assert all(row["reason"] == "model output is NaN or Inf" for row in table)
    # the bundle's own reader gives the original identifiers back
    sys.path.insert(0, str(TESTS.parent))
    from validate.bundle import read_bundle

    assert sorted(read_bundle(tmp_path / "out").failures["case_id"]) == sorted(hostile_ids)
