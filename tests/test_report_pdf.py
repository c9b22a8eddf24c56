"""The report as PDF (`validate report --pdf`, protocol ``report: {pdf: true}``): Chromium prints it
offline, every gate row complete on paper, the verdict on page one, A4 and Letter sizes, and files that
are not validate's never replaced.

References are independent of the code under test: pypdf and poppler (``pdfinfo``, ``pdftotext``,
``pdftoppm``) read the PDFs; gates.json is read with :mod:`json`; the paper sizes are ISO 216 A4
(210 × 297 mm) and ANSI Letter (8.5 × 11 in) in points, computed here. The sample bundles are runs of
protocols/heart.yaml (asking for report.pdf itself) and protocols/chest.yaml with fewer bootstrap
replicates.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
import unicodedata
from pathlib import Path

import pytest

from conftest import REPO, _require, requires_browser
from test_run_helpers import synthetic_bundle  # noqa: F401 (fixture)

POPPLER = shutil.which("pdftotext") is not None and shutil.which("pdftoppm") is not None
# with the browser tests: CI (VALIDATE_REQUIRE_BROWSER=1) fails rather than skips without poppler
requires_poppler = _require("VALIDATE_REQUIRE_BROWSER", POPPLER, "poppler-utils (pdftotext, pdftoppm)")
A4_PT = (210 / 25.4 * 72, 297 / 25.4 * 72)
LETTER_PT = (8.5 * 72, 11 * 72)


# ---- helpers -----------------------------------------------------------------------------------------


def cli(*args, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """``python -m validate ARGS`` as a user runs it (cwd: the repository, so this checkout is imported)."""
    full = {**os.environ, **(env or {})}
    full.pop("VALIDATE_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "validate", *map(str, args)],
        cwd=REPO,
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return proc


def squash(text: str) -> str:
    """Text without whitespace and hyphens, compatibility-normalised (a ligature glyph reads as its
    letters): a reason wrapped over lines in the PDF still matches its one-line text in gates.json
    (pdftotext joins a word broken after a hyphen at a line end and drops the hyphen)."""
    return re.sub(r"[\s\-\u00ad]+", "", unicodedata.normalize("NFKC", text))


def pdf_text(pdf: Path, first: int | None = None, last: int | None = None) -> str:
    """The PDF's text in drawing order (``-raw``: a table cell's wrapped lines stay together)."""
    pages = [*(["-f", str(first)] if first else []), *(["-l", str(last)] if last else [])]
    cmd = ["pdftotext", "-raw", *pages, str(pdf), "-"]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def sample_protocol(name: str, folder: Path, extra: str = "") -> Path:
    """protocols/<name>.yaml with absolute sample paths and 60 bootstrap replicates (+ ``extra`` YAML)."""
    text = (REPO / "protocols" / f"{name}.yaml").read_text()
    text = text.replace("../sample_sites", str(REPO / "sample_sites"))
    text = re.sub(r"n_bootstrap: \d+", "n_bootstrap: 60", text) + extra
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


def minimal_pdf() -> bytes:
    """A one-page PDF with a classic cross-reference table, written by hand here (PDF 32000-1 §7.5)."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 100] >>",
        b"<< /Title (hand made) >>",
    ]
    out, offsets = b"%PDF-1.4\n", []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (i, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 4 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return out


# ---- marking and recognising our PDFs (no browser) --------------------------------------------------


def test_marked_pdf_keeps_its_bytes_and_reads_with_the_new_information(tmp_path):
    import pypdf

    from validate.report.pdf import is_validate_pdf, mark_pdf

    original = minimal_pdf()
    marked = mark_pdf(original, {"Title": "Validation report: heart v1.0", "Subject": "résumé (bundle)"})
    assert marked.startswith(original)  # an incremental update: the printed bytes are untouched
    path = tmp_path / "r.pdf"
    path.write_bytes(marked)
    reader = pypdf.PdfReader(path, strict=True)
    assert len(reader.pages) == 1
    meta = reader.metadata
    assert meta["/Title"] == "Validation report: heart v1.0"
    assert meta["/Subject"] == "résumé (bundle)"  # non-ASCII as UTF-16, parentheses escaped
    assert meta["/ValidateReport"] == "validate-report-pdf/1"
    assert is_validate_pdf(path)
    if shutil.which("pdfinfo"):
        info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True).stdout
        assert re.search(r"^Title:\s+Validation report: heart v1.0$", info, re.M)


def test_only_our_pdfs_are_recognised(tmp_path):
    from validate.report.pdf import is_validate_pdf, mark_pdf

    plain = tmp_path / "theirs.pdf"
    plain.write_bytes(minimal_pdf())
    text = tmp_path / "notes.pdf"
    text.write_text("validate-report-pdf/1 /ValidateReport")
    ours = tmp_path / "ours.pdf"
    ours.write_bytes(mark_pdf(minimal_pdf(), {"Title": "x"}))
    link = tmp_path / "link.pdf"
    link.symlink_to(ours)
    assert [is_validate_pdf(p) for p in (plain, text, ours, link, tmp_path)] == [False, False, True, False, False]


def test_paper_layout_width_follows_the_paper():
    from validate.report.pdf import PAPERS, PRINT_SCALE

    # printable width (paper minus 2 x 12 mm) at 96 CSS px per inch, laid out 1/scale wider
    assert PAPERS["a4"].layout_width_px == int((210 - 24) / 25.4 * 96 / PRINT_SCALE)
    assert PAPERS["letter"].layout_width_px == int((215.9 - 24) / 25.4 * 96 / PRINT_SCALE)


# ---- refusals before anything is written (no browser needed) -----------------------------------------


def test_a_users_pdf_is_never_replaced(synthetic_bundle, tmp_path):  # noqa: F811
    theirs = tmp_path / "summary.pdf"
    theirs.write_bytes(minimal_pdf())
    before = theirs.read_bytes()
    proc = cli("report", synthetic_bundle["bundle"], "--pdf", "--out", theirs)
    assert proc.returncode == 2
    assert "not a PDF report written by validate" in proc.stderr and "summary.pdf" in proc.stderr
    assert theirs.read_bytes() == before
    assert not (tmp_path / "summary.html").exists()  # refused before the HTML was written


def test_pdf_options_need_pdf(synthetic_bundle, tmp_path):  # noqa: F811
    proc = cli("report", synthetic_bundle["bundle"], "--paper", "letter")
    assert proc.returncode == 2 and "--paper" in proc.stderr and "--pdf" in proc.stderr
    proc = cli("report", synthetic_bundle["bundle"], "--out", tmp_path / "r.pdf")
    assert proc.returncode == 2 and "--pdf is not given" in proc.stderr
    assert not list(tmp_path.iterdir())


def _without_playwright(tmp_path: Path) -> dict:
    """An environment in which ``import playwright.sync_api`` fails, as where it is not installed."""
    fake = tmp_path / "no_playwright" / "playwright"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named playwright')\n")
    return {"PYTHONPATH": os.pathsep.join([str(fake.parent), str(REPO)])}


def test_missing_playwright_or_chromium_is_exit_2_naming_what_to_install(synthetic_bundle, tmp_path):  # noqa: F811
    bundle = tmp_path / "bundle"
    shutil.copytree(synthetic_bundle["bundle"], bundle)
    proc = cli("report", bundle, "--pdf", env=_without_playwright(tmp_path))
    assert proc.returncode == 2
    assert "playwright" in proc.stderr and "pip install 'validate[pdf]'" in proc.stderr
    proc = cli("report", bundle, "--pdf", env={"VALIDATE_CHROMIUM": str(tmp_path / "no-such-chromium")})
    assert proc.returncode == 2
    assert "VALIDATE_CHROMIUM" in proc.stderr and "chromium" in proc.stderr.lower()
    assert not (bundle / "report.pdf").exists()


def test_run_asking_for_a_pdf_without_playwright_stops_before_scoring(tmp_path):
    from test_run_helpers import make_protocol

    proto = make_protocol(tmp_path)
    proto.write_text(proto.read_text() + "\nreport: {pdf: true}\n")
    out = tmp_path / "run"
    proc = cli("run", proto, "--out", out, "--quiet", env=_without_playwright(tmp_path))
    assert proc.returncode == 2 and "pip install 'validate[pdf]'" in proc.stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".run")]


# ---- a table wider than the page (Chromium + poppler, no sample run) ----------------------------------


@requires_browser
@requires_poppler
@pytest.mark.browser
def test_a_table_wider_than_the_page_is_scaled_to_fit_not_cut(tmp_path):
    from validate.report.pdf import write_pdf
    from validate.report.print_layout import PRINT_CSS

    # 14 columns of 24-character words that cannot wrap: about three A4 widths at 7.5 pt
    words = [f"W{i:02d}{'x' * 18}END{i:02d}" for i in range(14)]
    cells = "".join(f"<td>{w}</td>" for w in words)
    page = tmp_path / "wide.html"
    page.write_text(
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><style>{PRINT_CSS}</style></head>'
        f'<body data-figures="0"><main><section><div class="scroll"><table><tr>{cells}</tr></table></div>'
        "</section></main></body></html>"
    )
    pdf = write_pdf(page, tmp_path / "wide.pdf", title="wide")
    text = squash(pdf_text(pdf))
    assert [w for w in words if squash(w) not in text] == []
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(pdf.stat().st_mode) == 0o666 & ~umask  # a report is meant to be shared, as the HTML


# ---- the sample bundles printed (Chromium + poppler) ---------------------------------------------------


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    """heart (its protocol asks for report.pdf: written by `validate run`) and chest (printed afterwards
    by `validate report --pdf`), each with its gates.json read independently."""
    root = tmp_path_factory.mktemp("pdf_samples")
    out = {}
    for name, extra in (("heart", "\nreport: {pdf: true, paper: a4}\n"), ("chest", "")):
        proto = sample_protocol(name, root, extra)
        bundle = root / name
        proc = cli("run", proto, "--out", bundle, "--cache", root / "cache", "--quiet")
        assert proc.returncode in (0, 1), proc.stderr
        if name == "chest":
            proc = cli("report", bundle, "--pdf")
            assert proc.returncode == 0, proc.stderr
        out[name] = {
            "bundle": bundle,
            "pdf": bundle / "report.pdf",
            "gates": json.loads((bundle / "gates.json").read_text()),
        }
    return out


def _pdf_tests(fn):
    """Marks of a test that prints the sample bundles: slow, needs Chromium and poppler."""
    for mark in (requires_poppler, requires_browser, pytest.mark.browser, pytest.mark.slow):
        fn = mark(fn)
    return fn


@_pdf_tests
@pytest.mark.parametrize("name", ["heart", "chest"])
def test_sample_pdf_opens_with_every_gate_row_complete(samples, name):
    import pypdf

    s = samples[name]
    reader = pypdf.PdfReader(s["pdf"])
    assert len(reader.pages) > 5
    assert reader.metadata["/ValidateReport"] == "validate-report-pdf/1"
    text = squash(pdf_text(s["pdf"]))
    rows = s["gates"]["rows"]
    assert rows
    missing = []
    for row in rows:
        n = "" if row.get("n") is None else str(row["n"])
        events = f"({row['n_events']})" if row.get("n_events") is not None else ""
        for value in (row["gate"], row["item"], row["reason"], n + events):
            if squash(str(value)) not in text:
                missing.append((row["gate"], row["item"], value))
    assert missing == []


@_pdf_tests
@pytest.mark.parametrize("name", ["heart", "chest"])
def test_page_one_holds_the_verdict_and_the_first_failing_gate(samples, name):
    s = samples[name]
    first = pdf_text(s["pdf"], 1, 1)
    verdict = s["gates"]["verdict"]
    assert f"Release gates: {verdict.upper()}" in first
    assert "Contents" in first
    failing = [r for r in s["gates"]["rows"] if r["verdict"] == "fail"]
    assert failing, "the sample protocols each have a failing gate"
    assert squash(failing[0]["reason"]) in squash(first)
    assert squash(s["bundle"].name) in squash(first) and "partial" not in first


@_pdf_tests
def test_the_report_names_the_bundle_not_its_staging_folder(samples):
    for s in samples.values():
        html = (s["bundle"] / "report.html").read_text(encoding="utf-8")
        assert f"bundle {s['bundle'].name} ·" in html
        assert ".partial-" not in html


@_pdf_tests
def test_run_writes_report_pdf_outside_the_hashed_files(samples):
    bundle = samples["heart"]["bundle"]
    prov = json.loads((bundle / "provenance.json").read_text())
    assert (bundle / "report.pdf").is_file()
    assert "report.pdf" not in prov["files"] and "report.html" not in prov["files"]
    # the bundle with its PDF is still a bundle validate may replace
    from validate.bundle import not_our_bundle

    assert not_our_bundle(bundle) is None


@_pdf_tests
def test_page_images_are_drawn(samples, tmp_path):
    pdf = samples["chest"]["pdf"]
    subprocess.run(["pdftoppm", "-r", "40", "-png", "-f", "1", "-l", "12", str(pdf), str(tmp_path / "p")], check=True)
    pages = sorted(tmp_path.glob("p-*.png"))
    assert len(pages) == 12
    from PIL import Image

    for page in pages:
        grey = Image.open(page).convert("L")
        dark = sum(grey.histogram()[:128])
        assert dark > 200, f"{page.name} is (almost) blank"


@_pdf_tests
def test_a4_and_letter_page_sizes(samples, tmp_path):
    import pypdf

    a4 = pypdf.PdfReader(samples["heart"]["pdf"]).pages[0].mediabox
    assert float(a4.width) == pytest.approx(A4_PT[0], abs=1.5) and float(a4.height) == pytest.approx(A4_PT[1], abs=1.5)
    out = tmp_path / "heart-letter.pdf"
    proc = cli("report", samples["heart"]["bundle"], "--pdf", "--paper", "letter", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "heart-letter.html").is_file()
    letter = pypdf.PdfReader(out).pages[0].mediabox
    assert float(letter.width) == pytest.approx(LETTER_PT[0], abs=1.5)
    assert float(letter.height) == pytest.approx(LETTER_PT[1], abs=1.5)


@_pdf_tests
def test_printing_makes_no_network_request(samples, tmp_path):
    """A report that (as a hostile edit would) points at a server: Chromium never reaches it."""
    from validate.report.pdf import write_pdf

    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the standard library's name
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/beacon.png"
        html = (samples["heart"]["bundle"] / "report.html").read_text(encoding="utf-8")
        page = tmp_path / "report.html"
        page.write_text(
            html.replace("<main>", f'<main><img src="{url}" alt=""><link rel="stylesheet" href="{url}">', 1)
        )
        write_pdf(page, tmp_path / "report.pdf", title="t")
    finally:
        server.shutdown()
    assert (tmp_path / "report.pdf").stat().st_size > 10_000
    assert hits == []
