"""`validate report BUNDLE`: render the bundle's self-contained HTML report again (nothing is recomputed).

``--out FILE`` never replaces a file validate did not write: an existing FILE must be a report of
validate (judged by its content), FILE may not be a folder, and it may not lie inside another results
bundle (a bundle holds only its own files). A bundle missing a file its protocol implies (e.g.
``gates.json`` when gates are declared) is refused rather than reported as having passed.

``--pdf`` also prints the report to PDF (:mod:`validate.report.pdf`, headless Chromium) on ``--paper``
(a4, the default, or letter): ``BUNDLE/report.pdf``, or beside ``--out`` with the suffix ``.pdf``
(``--out FILE.pdf --pdf`` writes FILE.html and FILE.pdf). The PDF follows the rules of ``--out``: an
existing PDF is replaced only if validate wrote it (:func:`validate.report.pdf.is_validate_pdf`).
Playwright and Chromium are checked, and every target, before anything is written.
"""

from __future__ import annotations

from pathlib import Path

from validate.errors import InputError

NAME = "report"
HELP = "re-render the self-contained HTML report of a results bundle"
# the guidelines of validate.report.checklists (kept here so that parsing flags imports nothing heavy)
CHECKLISTS = ("tripod-ai", "claim", "stard-ai")


def register(parser) -> None:
    parser.add_argument("bundle", metavar="BUNDLE", help="results bundle folder written by `validate run`")
    parser.add_argument(
        "--out",
        metavar="FILE",
        help="where to write the report (default BUNDLE/report.html); an existing file there is "
        "replaced only if it is a report validate wrote",
    )
    parser.add_argument(
        "--checklist",
        action="append",
        choices=CHECKLISTS,
        metavar="NAME",
        help="fill a reporting checklist from the bundle: tripod-ai (TRIPOD+AI), claim (CLAIM 2024) or "
        "stard-ai (STARD-AI); repeat for several. Adds a report section and writes checklist-NAME.md "
        "beside the report",
    )
    parser.add_argument(
        "--checklist-out",
        metavar="DIR",
        help="folder for the checklist-NAME.md files (default: the report's folder); an existing checklist "
        "file there is replaced only if validate wrote it",
    )
    parser.add_argument(
        "--pdf",
        action="store_true",
        help="also print the report to PDF with headless Chromium (needs pip install 'validate[pdf]' and a "
        "Chromium): BUNDLE/report.pdf, or beside --out with the suffix .pdf; an existing PDF there is "
        "replaced only if validate wrote it",
    )
    parser.add_argument("--paper", choices=("a4", "letter"), help="paper size of the PDF: a4 (default) or letter")


def check_out(out: Path, bundle_path: Path, kind: str = "html") -> None:
    """Raise :class:`InputError` when ``out`` holds, or lies in, something that is not ours to replace.

    ``kind`` "html" (the report) or "pdf" (the printed report: an existing file must be a PDF validate
    wrote, :func:`validate.report.pdf.is_validate_pdf`)."""
    from validate.bundle import ancestor_problem

    def refuse(why: str) -> None:
        raise InputError(
            f"will not write the {'PDF ' if kind == 'pdf' else ''}report here: {why}",
            file=out,
            field="--out",
            expected=f"a new .{kind} file name, or a report validate wrote before",
        )

    resolved = out.resolve()
    if resolved.is_dir():
        refuse(f"it is a folder (give a file name, e.g. {out / f'report.{kind}'})")
    if resolved != bundle_path.resolve() / f"report.{kind}":  # the bundle's own report is its to refresh
        above = ancestor_problem(resolved)
        if above:
            refuse(above)
    if (resolved.exists() or out.is_symlink()) and not _ours(resolved, kind):
        refuse(f"the file there is not a {'PDF ' if kind == 'pdf' else ''}report written by validate")


def _ours(path: Path, kind: str) -> bool:
    from validate.bundle import written_by_validate

    if kind == "pdf":
        from validate.report.pdf import is_validate_pdf

        return is_validate_pdf(path)
    return written_by_validate(path)


def _targets(args, bundle_path: Path) -> tuple[Path | None, Path | None]:
    """(HTML --out or None for the bundle's own, PDF path or None), checked; Playwright and Chromium
    are checked too when a PDF is asked for, so nothing is written when it could not be printed."""
    html_out = Path(args.out) if args.out else None
    if html_out is not None and html_out.suffix.lower() == ".pdf":
        if not args.pdf:
            raise InputError(
                "--out names a .pdf file but --pdf is not given",
                file=html_out,
                field="--out",
                expected="--pdf to print the report to PDF, or an .html file name",
            )
        html_out = html_out.with_suffix(".html")
    if args.paper and not args.pdf:
        raise InputError("--paper sets the size of the PDF, but --pdf is not given", field="--paper", expected="--pdf")
    if html_out is not None:
        check_out(html_out, bundle_path)
    if not args.pdf:
        return html_out, None
    from validate.report.pdf import check_available

    pdf_out = html_out.with_suffix(".pdf") if html_out is not None else bundle_path / "report.pdf"
    check_out(pdf_out, bundle_path, kind="pdf")
    check_available()
    return html_out, pdf_out


def checklist_targets(names: list[str], folder: Path, bundle_path: Path) -> dict[str, Path]:
    """``checklist-<name>.md`` in ``folder`` for each name; raise :class:`InputError` when one of them
    holds, or lies in, something that is not ours to replace."""
    from validate.bundle import ancestor_problem, written_by_validate

    def refuse(file: Path, why: str) -> None:
        raise InputError(
            f"will not write the checklist here: {why}",
            file=file,
            field="--checklist-out",
            expected="a folder outside any other results bundle, where no file of that name exists or the one "
            "there is a checklist validate wrote",
        )

    resolved = folder.resolve()
    if resolved.exists() and not resolved.is_dir():
        refuse(folder, "it is a file, not a folder")
    if resolved != bundle_path.resolve():  # the bundle's own checklists are its to refresh
        above = ancestor_problem(resolved / "checklist.md")
        if above:
            refuse(folder, above)
    targets = {name: folder / f"checklist-{name}.md" for name in names}
    for target in targets.values():
        if target.is_dir():
            refuse(target, "it is a folder")
        if (target.exists() or target.is_symlink()) and not written_by_validate(target):
            refuse(target, "the file there is not a checklist written by validate")
    return targets


def run(args) -> int:
    from validate.bundle import read_bundle
    from validate.io import atomic_write_text, shared_mode
    from validate.report import write_report

    bundle = read_bundle(args.bundle)
    names = list(dict.fromkeys(args.checklist or []))
    if args.checklist_out and not names:
        raise InputError(
            "--checklist-out without --checklist", field="--checklist-out", expected="--checklist NAME as well"
        )
    html_out, pdf_out = _targets(args, bundle.path)
    report_folder = html_out.parent if html_out is not None else bundle.path
    targets = checklist_targets(names, Path(args.checklist_out or report_folder), bundle.path)
    path = write_report(bundle, html_out, names)
    print(f"Report: {path}")
    if targets:
        from validate.report.checklists import checklist_markdown

        next(iter(targets.values())).parent.mkdir(parents=True, exist_ok=True)
        for name, target in targets.items():  # a checklist is a document to share, as the report
            atomic_write_text(target, checklist_markdown(bundle, name), shared_mode())
            print(f"Checklist ({name}): {target}")
    if pdf_out is not None:
        from validate.report.pdf import write_bundle_pdf

        paper = args.paper or "a4"
        print(f"Report PDF ({paper}): {write_bundle_pdf(bundle, path, pdf_out, paper_name=paper)}")
    return 0
