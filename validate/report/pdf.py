"""The report as PDF: headless Chromium prints the report's own HTML file (:func:`print_pdf`).

Why Chromium (through Playwright) and not WeasyPrint: the report's figures are plotly.js, drawn by
JavaScript in the page; WeasyPrint runs no JavaScript and would print empty figure boxes. Chromium
renders the very file a reviewer opens, with the print stylesheet of
:mod:`validate.report.print_layout`, and prints plotly's SVG as vector graphics. Heatmaps are the
exception: plotly draws their cells as one image of one pixel per CSS pixel whatever the device's pixel
ratio (about 120 dpi on paper); the cells are flat colours, printed without interpolation, and their
text is vector.

Offline: the page is loaded from a ``file://`` URL and every request that is not ``file:``, ``data:``
or ``blob:`` is aborted (the report is self-contained; nothing may reach a network from a hospital's
machine). The print waits until every figure the report declares (``<body data-figures>``) is drawn.

Paper: A4 (210 × 297 mm) or US Letter (8.5 × 11 in), 12 mm side margins and 16 mm top and bottom
margins carrying Chromium's header (the report's title and bundle) and footer (page N of M). The page
is laid out at its print width before the figures are drawn, so plotly sizes them for the paper: 1.25
times the printable width, printed at 0.8 (:data:`PRINT_SCALE`), so a figure with its legend beside it
keeps a readable plot area; the print stylesheet's text sizes are divided by the same factor.
A table still wider than the printable width after its cells wrap is scaled down (CSS ``zoom``) to fit,
so no column is cut off. Headings become the PDF's outline (bookmarks); the table of contents'
links stay links.

Which file is ours: Chromium writes an ordinary PDF; an incremental update appended to it
(:func:`mark_pdf`) adds the document information (title, ``/Creator`` naming validate and its version) and
``/ValidateReport (validate-report-pdf/1)`` in the file's last bytes, so :func:`is_validate_pdf` can tell
a PDF validate wrote (which may be replaced) from a user's file (which never is) by reading its tail.

Requirements: the Python package ``playwright`` (the optional extra ``validate[pdf]``) and a Chromium:
``$VALIDATE_CHROMIUM``, else ``chromium``/``chromium-browser``/``google-chrome`` on ``PATH``, else the
one ``playwright install chromium`` downloads. Without either, :func:`check_available` raises an
:class:`~validate.errors.InputError` (exit 2) saying what to install.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from validate.errors import InputError, RunIncomplete

# the flags the house's browser tests use: no GPU, no background traffic, no first-run UI; no sandbox,
# which Chromium needs as root and in most containers (the page is the bundle's own escaped report,
# with every network request aborted)
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)
CHROMIUM_ENV = "VALIDATE_CHROMIUM"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
MM_PER_INCH = 25.4
CSS_PX_PER_INCH = 96
SIDE_MARGIN_MM = 12.0
TOP_BOTTOM_MARGIN_MM = 16.0
FIGURE_TIMEOUT_S = 180
# the page is laid out 1/0.8 = 1.25 times wider than the paper and printed at 0.8: a figure with its
# legend beside it keeps a plot area a reader can read; the print stylesheet divides its text sizes by
# the same factor (--print-scale), so text is printed at the sizes it states
PRINT_SCALE = 0.8
PDF_MARK = "validate-report-pdf/1"
MARK_KEY = b"/ValidateReport"
ALLOWED_SCHEMES = ("file:", "data:", "blob:", "about:")
INSTALL_HINT = (
    "install the PDF extra and a Chromium: pip install 'validate[pdf]' (Playwright), then either "
    "your system's chromium (e.g. apt-get install chromium) or `playwright install chromium`"
)


@dataclass(frozen=True)
class Paper:
    """A paper size: its Chromium name and its width and height in millimetres."""

    name: str
    width_mm: float
    height_mm: float

    @property
    def layout_width_px(self) -> int:
        """The page's layout width in CSS pixels: the width between the side margins (96 px per inch)
        divided by :data:`PRINT_SCALE`, as Chromium lays a page out that it prints scaled."""
        return int((self.width_mm - 2 * SIDE_MARGIN_MM) / MM_PER_INCH * CSS_PX_PER_INCH / PRINT_SCALE)

    @property
    def points(self) -> tuple[float, float]:
        """Width and height in PDF points (72 per inch), as a PDF's MediaBox states them."""
        return (self.width_mm / MM_PER_INCH * 72, self.height_mm / MM_PER_INCH * 72)


PAPERS = {"a4": Paper("A4", 210.0, 297.0), "letter": Paper("Letter", 215.9, 279.4)}


# ---- what is needed ------------------------------------------------------------------------------


def find_chromium() -> str | None:
    """The Chromium to print with: ``$VALIDATE_CHROMIUM``, a chromium on ``PATH``, else Playwright's own."""
    env = os.environ.get(CHROMIUM_ENV)
    if env:
        return env if Path(env).is_file() and os.access(env, os.X_OK) else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return _playwright_chromium()


def _playwright_chromium() -> str | None:
    """The browser ``playwright install chromium`` put in Playwright's cache, if it is there."""
    try:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            path = pw.chromium.executable_path
    except Exception:  # noqa: BLE001 - no driver, no cache: simply not available
        return None
    return path if path and Path(path).is_file() else None


def check_available() -> str:
    """The Chromium executable to print with; raises :class:`InputError` (exit 2) naming what to
    install when Playwright or a Chromium is missing (called before any long work starts)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        raise InputError(
            "a PDF report needs the Python package playwright, which is not installed",
            field="--pdf",
            expected=INSTALL_HINT,
        ) from None
    env = os.environ.get(CHROMIUM_ENV)
    chromium = find_chromium()
    if chromium is None:
        where = f"${CHROMIUM_ENV}={env} is not an executable file" if env else "no Chromium was found"
        raise InputError(
            f"a PDF report needs a Chromium browser: {where}",
            field="--pdf",
            expected=INSTALL_HINT + f", or set ${CHROMIUM_ENV} to a Chromium executable",
        )
    return chromium


def paper(name: str) -> Paper:
    """The :class:`Paper` called ``name`` (``a4`` or ``letter``, any case)."""
    try:
        return PAPERS[name.lower()]
    except KeyError:
        raise InputError(f"unknown paper size {name!r}", field="--paper", expected="a4 or letter") from None


# ---- printing ------------------------------------------------------------------------------------

_WAIT_FOR_FIGURES = """() => {
  const want = Number(document.body.dataset.figures || 0);
  const plots = document.querySelectorAll('.validate-figure .js-plotly-plot');
  return plots.length >= want && Array.from(plots).every(p => p.querySelector('svg.main-svg'));
}"""

# every <details> open (the protocol copy prints whole); each table wider than its container after
# wrapping scaled down to fit (CSS zoom re-lays it out, unlike a transform). Returns the zooms applied.
_PREPARE_PAGE = """() => {
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  const zooms = [];
  document.querySelectorAll('table').forEach(t => {
    const room = t.parentElement.clientWidth, need = t.scrollWidth;
    if (need > room + 1) { const z = room / need; t.style.zoom = z.toFixed(3); zooms.push(z); }
  });
  return zooms;
}"""


# the print stylesheet's text sizes divided by the print scale, once the document is parsed (text
# sizes do not change a figure's width, which follows the layout width set by the viewport)
_SCALE_SCRIPT = f"""document.addEventListener('DOMContentLoaded', () => {{
  const s = document.createElement('style');
  s.textContent = ':root {{ --print-scale: {PRINT_SCALE} !important; }}';
  document.head.appendChild(s);
}});"""


def _header_template(title: str) -> str:
    from html import escape

    return (
        '<div style="font-size:7pt;color:#5b6475;width:100%;padding:0 12mm;'
        f'font-family:Helvetica,Arial,sans-serif;text-align:center">{escape(title)}</div>'
    )


FOOTER_TEMPLATE = (
    '<div style="font-size:7pt;color:#5b6475;width:100%;padding:0 12mm;font-family:Helvetica,Arial,'
    'sans-serif;text-align:right">Page <span class="pageNumber"></span> of <span class="totalPages"></span></div>'
)


def render_pdf(html_path: Path, *, paper_name: str = "a4", header: str = "") -> bytes:
    """The PDF bytes of the report at ``html_path`` printed by headless Chromium on ``paper_name``.

    Raises :class:`RunIncomplete` when the page fails (a script error) or its figures are not drawn
    within :data:`FIGURE_TIMEOUT_S`; :class:`InputError` when Playwright or Chromium is missing."""
    size = paper(paper_name)
    chromium = check_available()
    from playwright.sync_api import Error as PlaywrightError, sync_playwright

    errors: list[str] = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=list(CHROMIUM_ARGS), headless=True)
            try:
                page = _open_page(browser, size, errors)
                page.goto(Path(html_path).resolve().as_uri(), wait_until="load")
                page.wait_for_function(_WAIT_FOR_FIGURES, timeout=FIGURE_TIMEOUT_S * 1000)
                page.evaluate(_PREPARE_PAGE)
                if errors:
                    raise RunIncomplete(f"the report's page failed in Chromium: {errors[0]}")
                return _print(page, size, header)
            finally:
                browser.close()
    except PlaywrightError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunIncomplete(f"Chromium could not print the report ({chromium}): {first}") from exc


def _open_page(browser, size: Paper, errors: list[str]):
    """A page laid out for the paper (:attr:`Paper.layout_width_px`), in print media, that aborts
    every request that is not for the report's own file."""
    context = browser.new_context(
        viewport={"width": size.layout_width_px, "height": 1400}, device_scale_factor=2, java_script_enabled=True
    )
    context.route("**/*", _offline_only)
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.emulate_media(media="print")
    page.add_init_script(_SCALE_SCRIPT)
    return page


def _offline_only(route) -> None:
    """Let the report's own file (and inline data) load; abort anything that would leave the machine."""
    if route.request.url.startswith(ALLOWED_SCHEMES):
        route.continue_()
    else:
        route.abort("blockedbyclient")


def _print(page, size: Paper, header: str) -> bytes:
    side, top = f"{SIDE_MARGIN_MM}mm", f"{TOP_BOTTOM_MARGIN_MM}mm"
    return page.pdf(
        format=size.name,
        print_background=True,
        prefer_css_page_size=False,
        scale=PRINT_SCALE,
        display_header_footer=True,
        header_template=_header_template(header),
        footer_template=FOOTER_TEMPLATE,
        margin={"top": top, "bottom": top, "left": side, "right": side},
        outline=True,
        tagged=True,
    )


# ---- marking ours --------------------------------------------------------------------------------

_TRAILER = re.compile(rb"trailer\s*<<(?P<body>.*?)>>\s*startxref\s*(?P<xref>\d+)\s*%%EOF\s*$", re.S)
_REF = rb"\s+(\d+)\s+(\d+)\s+R"


def _pdf_string(text: str) -> bytes:
    """A PDF literal string: ASCII as is (with \\, ( and ) escaped), anything else as UTF-16BE hex."""
    if text.isascii() and text.isprintable():
        return b"(" + text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)").encode("ascii") + b")"
    return b"<FEFF" + text.encode("utf-16-be").hex().upper().encode("ascii") + b">"


def mark_pdf(data: bytes, info: dict[str, str]) -> bytes:
    """``data`` (a PDF with a classic cross-reference table, as Chromium's Skia writes) with an
    incremental update appended whose new document-information dictionary holds ``info`` and the
    ``/ValidateReport`` marker (PDF 32000-1 §7.5.6: the original bytes are kept unchanged)."""
    trailer = _TRAILER.search(data[-4096:])
    root = re.search(rb"/Root" + _REF, trailer.group("body")) if trailer else None
    size = re.search(rb"/Size\s+(\d+)", trailer.group("body")) if trailer else None
    if trailer is None or root is None or size is None:
        raise RunIncomplete("Chromium wrote a PDF whose trailer validate cannot read (no classic xref table)")
    obj = int(size.group(1))
    entries = {**info, "ValidateReport": PDF_MARK}
    body = b"".join(b"/" + k.encode("ascii") + b" " + _pdf_string(v) + b"\n" for k, v in entries.items())
    start = len(data) + (0 if data.endswith(b"\n") else 1)
    obj_bytes = b"%d 0 obj\n<<\n%s>>\nendobj\n" % (obj, body)
    xref_at = start + len(obj_bytes)
    update = (
        obj_bytes
        # object 0's free entry first: readers that expect a table to begin at 0 read it without complaint
        + b"xref\n0 1\n0000000000 65535 f \n%d 1\n%010d 00000 n \n" % (obj, start)
        + b"trailer\n<</Size %d\n/Root %s %s R\n/Info %d 0 R\n/Prev %s>>\n"
        % (obj + 1, root.group(1), root.group(2), obj, trailer.group("xref"))
        + b"startxref\n%d\n%%%%EOF\n" % xref_at
    )
    return data + (b"" if data.endswith(b"\n") else b"\n") + update


def is_validate_pdf(path: Path) -> bool:
    """Whether ``path`` is a PDF report validate wrote: ``%PDF-`` first, our marker in its last bytes."""
    if path.is_symlink() or not path.is_file():
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(5)
            fh.seek(max(0, path.stat().st_size - 4096))
            tail = fh.read()
    except OSError:
        return False
    return head == b"%PDF-" and MARK_KEY + b" " + _pdf_string(PDF_MARK) in tail


# ---- writing -------------------------------------------------------------------------------------


def pdf_bytes(html_path: Path, *, paper_name: str = "a4", title: str = "", bundle_name: str = "") -> bytes:
    """``html_path`` printed (:func:`render_pdf`) and marked as ours (:func:`mark_pdf`), with the
    title, the bundle's name and validate's version in the document information."""
    from validate import __version__

    header = f"{title} · bundle {bundle_name}" if bundle_name else title
    data = render_pdf(html_path, paper_name=paper_name, header=header)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("D:%Y%m%d%H%M%SZ")  # PDF 32000-1 §7.9.4
    info = {"Title": title, "Creator": f"validate {__version__} (Chromium print to PDF)", "CreationDate": now}
    if bundle_name:
        info["Subject"] = f"results bundle {bundle_name}"
    return mark_pdf(data, {k: v for k, v in info.items() if v})


def write_pdf(
    html_path: Path, pdf_path: Path, *, paper_name: str = "a4", title: str = "", bundle_name: str = ""
) -> Path:
    """Print ``html_path`` to ``pdf_path`` (written atomically; the caller has checked that the file
    there, if any, is ours to replace) and return ``pdf_path``."""
    from validate.io import atomic_write_bytes, shared_mode

    data = pdf_bytes(html_path, paper_name=paper_name, title=title, bundle_name=bundle_name)
    atomic_write_bytes(Path(pdf_path), data, shared_mode())  # a report is meant to be shared
    return Path(pdf_path)


def bundle_pdf_bytes(bundle, html_path: Path, *, paper_name: str = "a4") -> bytes:
    """A bundle's report (``html_path``, rendered from ``bundle``) as PDF bytes, titled as the report
    is and naming the bundle by its final name (:attr:`validate.bundle.Bundle.name`)."""
    prov = bundle.typed.provenance
    title = f"Validation report: {prov.protocol.name} v{prov.protocol.version}"
    return pdf_bytes(html_path, paper_name=paper_name, title=title, bundle_name=bundle.name)


def write_bundle_pdf(bundle, html_path: Path, pdf_path: Path, *, paper_name: str = "a4") -> Path:
    """:func:`bundle_pdf_bytes` written atomically to ``pdf_path``; returns ``pdf_path``."""
    from validate.io import atomic_write_bytes, shared_mode

    data = bundle_pdf_bytes(bundle, html_path, paper_name=paper_name)
    atomic_write_bytes(Path(pdf_path), data, shared_mode())  # a report is meant to be shared, as report.html
    return Path(pdf_path)
