"""validate.escape: exact escaped output for hostile text, checked against independent readers — the
XML parsers of the standard library (expat, strict about XML 1.0), Python-Markdown as a renderer,
and the csv module and pandas reading back what was written."""

from __future__ import annotations

import csv
import io
import re
import xml.dom.minidom
import xml.etree.ElementTree as ET
import xml.sax

import markdown
import pandas as pd
import pytest

from validate.escape import ZWJ, csv_cell, csv_safe, csv_uncell, csv_unsafe, markdown_text, terminal_text, xml_text
from validate.gates import GateReport, GateRow, GateSpec

# every character XML 1.0 forbids that a Python str can hold, one of each kind
XML_ILLEGAL = [chr(c) for c in range(0x20) if c not in (0x9, 0xA, 0xD)] + ["\ud800", "\udfff", "\ufffe", "\uffff"]
HOSTILE = [
    "<script>alert(1)</script>",
    "x]]>y",
    "a&b",
    'say "hi"',
    "@octocat",
    "[x](javascript:alert(1))",
    "![p](https://evil.example/p.png)",
    "<https://evil.example>",
    "**bold** _it_ `code` ~~s~~ a|b",
    "line\nbreak",
    "\x1b[31mred",
    "nul\x00",
    "sur\ud800rogate",
    "non\ufffechar",
]


def test_xml_text_replaces_exactly_the_characters_xml_forbids():
    assert xml_text("a\x00b") == "a\\x00b"
    assert xml_text("\x1b[0m") == "\\x1b[0m"
    assert xml_text("\ud800|\ufffe|\uffff") == "\\ud800|\\ufffe|\\uffff"
    kept = "tab\tnl\ncr\r é 😀 \u2028 \x7f\x85 <&>\"'"
    assert xml_text(kept) == kept  # legal characters and specials are the serializer's business
    for ch in XML_ILLEGAL:
        assert ch not in xml_text(f"a{ch}b")


def _report(names: list[str]) -> GateReport:
    spec = GateSpec(metric="auroc", scope="each_subgroup:sex", direction="min", threshold=0.5)
    rows = [
        GateRow(
            gate=name,
            metric="auroc",
            scope="each_subgroup:sex",
            item=f"sex={name}",
            on="estimate",
            direction="min",
            threshold=0.5,
            verdict=("fail", "warn", "pass")[i % 3],
            reason=f"because {name}",
            value=0.4,
            estimate=0.4,
            n=10,
            n_events=4,
            subgroup="sex",
            group=name,
        )
        for i, name in enumerate(names)
    ]
    return GateReport(gates=[spec], rows=rows, name="hostile")


def test_junit_is_well_formed_for_every_hostile_value():
    names = HOSTILE + [f"c{ch}c" for ch in XML_ILLEGAL]
    text = _report(names).to_junit()
    data = text.encode("utf-8")  # a lone surrogate would make this raise before the fix
    root = ET.fromstring(data)
    xml.dom.minidom.parseString(data)
    xml.sax.parseString(data, xml.sax.ContentHandler())
    cases = root.findall(".//testcase")
    assert len(cases) == len(names)
    # the text survives, readable: specials round-trip through the parser, illegal ones as escapes
    assert cases[0].get("name") == "sex=<script>alert(1)</script>: auroc estimate >= 0.5"
    assert cases[0].find("failure").get("message") == "because <script>alert(1)</script>"
    assert cases[1].find("skipped").get("message") == "warning: because x]]>y"
    nul = next(c for c in cases if c.get("name").startswith("sex=nul"))
    assert nul.get("name") == "sex=nul\\x00: auroc estimate >= 0.5"


def test_markdown_text_exact_output():
    assert markdown_text("<script>alert(1)</script>") == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert markdown_text("[x](javascript:alert(1))") == f"\\[x\\](javascript{ZWJ}:alert(1))"
    assert markdown_text("@octocat and me@example.org") == f"@{ZWJ}octocat and me@{ZWJ}example.org"
    assert markdown_text("fixes #12") == f"fixes #{ZWJ}12"
    assert markdown_text("see https://e.example or www.e.example") == (
        f"see https{ZWJ}://e.example or www{ZWJ}.e.example"
    )
    assert markdown_text("a|b\nc") == "a\\|b c"
    assert markdown_text("**b** _i_ `c` ~s~ \\") == "\\*\\*b\\*\\* \\_i\\_ \\`c\\` \\~s\\~ \\\\"
    assert markdown_text("\x1b[31m\x9b") == "\\\\x1b\\[31m\\\\x9b"
    assert markdown_text("site x: 9 case(s), a & b") == "site x: 9 case(s), a &amp; b"


def test_gates_markdown_renders_no_tag_link_image_or_mention():
    md = _report(HOSTILE).to_markdown()
    html = markdown.markdown(md, extensions=["tables"])
    tags = {t.split()[0].strip("</>") for t in re.findall(r"</?[a-zA-Z][^>]*>", html)}
    assert tags <= {"h3", "p", "strong", "table", "thead", "tbody", "tr", "th", "td", "em"}, tags
    assert "<script" not in html and "<img" not in html and "<a " not in html and "href" not in html
    assert "](javascript:" not in md and "javascript:" not in md
    assert "@octocat" not in md and "@octocat" not in html  # the joiner sits between @ and the name
    assert "https://" not in md
    rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| |")]
    assert len(rows) == len(HOSTILE)  # one line per row: a line break in a value cannot end the table
    assert len(html.split("<tr>")) - 1 == len(HOSTILE) + 1  # the header and every row, as rows
    # what a reader sees: the text, escaped, not lost
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "sex=[x](javascript" in html.replace(ZWJ, "")


def test_terminal_text_shows_control_characters():
    assert terminal_text("a\x1b[2Jb\x07\x9b\x7f\ud800é") == "a\\x1b[2Jb\\x07\\x9b\\x7f\\ud800é"
    assert terminal_text("plain text, é 😀") == "plain text, é 😀"


@pytest.mark.parametrize(
    "cell,escaped",
    [
        ("=1+1", "'=1+1"),
        ("+SUM(A1)", "'+SUM(A1)"),
        ("-x", "'-x"),
        ("@cmd", "'@cmd"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("'quoted", "''quoted"),
        ("'", "''"),
        ("-", "'-"),
        ("-0.5", "-0.5"),
        ("+3", "+3"),
        ("-2e-3", "-2e-3"),
        ("plain", "plain"),
        ("", ""),
        ("a=b", "a=b"),
    ],
)
def test_csv_cell_owasp_rule(cell, escaped):
    assert csv_cell(cell) == escaped
    assert csv_uncell(escaped) == cell


def test_csv_safe_keeps_numbers_numbers_and_round_trips_text():
    frame = pd.DataFrame(
        {
            "case_id": ['=HYPERLINK("http://x","y")', "-7", "ok", "@a", None],
            "value": [-0.5, 1.0, -3.25, 0.0, 2.0],
            "count": [-1, 2, 3, 4, 5],
            "flag": [True, False, True, True, False],
        }
    )
    text = csv_safe(frame).to_csv(index=False)
    cells = list(csv.reader(io.StringIO(text)))
    assert cells[0] == ["case_id", "value", "count", "flag"]
    assert [r[0] for r in cells[1:]] == ['\'=HYPERLINK("http://x","y")', "-7", "ok", "'@a", ""]
    assert [r[1] for r in cells[1:]] == ["-0.5", "1.0", "-3.25", "0.0", "2.0"]
    assert [r[2] for r in cells[1:]] == ["-1", "2", "3", "4", "5"]
    back = pd.read_csv(io.StringIO(text))
    assert back["value"].tolist() == [-0.5, 1.0, -3.25, 0.0, 2.0] and back["count"].dtype.kind == "i"
    text_back = csv_unsafe(pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False))
    assert text_back["case_id"].tolist() == ['=HYPERLINK("http://x","y")', "-7", "ok", "@a", ""]
    assert csv_safe(pd.DataFrame({"=bad": [1]})).columns.tolist() == ["'=bad"]
