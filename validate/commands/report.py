"""`validate report BUNDLE`: render the bundle's self-contained HTML report again (nothing is recomputed).

``--out FILE`` never replaces a file validate did not write: an existing FILE must be a report of
validate (judged by its content), FILE may not be a folder, and it may not lie inside another results
bundle (a bundle holds only its own files). A bundle missing a file its protocol implies (e.g.
``gates.json`` when gates are declared) is refused rather than reported as having passed.
"""

from __future__ import annotations

from pathlib import Path

from validate.errors import InputError

NAME = "report"
HELP = "re-render the self-contained HTML report of a results bundle"


def register(parser) -> None:
    parser.add_argument("bundle", metavar="BUNDLE", help="results bundle folder written by `validate run`")
    parser.add_argument(
        "--out",
        metavar="FILE",
        help="where to write the report (default BUNDLE/report.html); an existing file there is "
        "replaced only if it is a report validate wrote",
    )


def check_out(out: Path, bundle_path: Path) -> None:
    """Raise :class:`InputError` when ``out`` holds, or lies in, something that is not ours to replace."""
    from validate.bundle import ancestor_problem, written_by_validate

    def refuse(why: str) -> None:
        raise InputError(
            f"will not write the report here: {why}",
            file=out,
            field="--out",
            expected="a new .html file name, or a report validate wrote before",
        )

    resolved = out.resolve()
    if resolved.is_dir():
        refuse(f"it is a folder (give a file name, e.g. {out / 'report.html'})")
    if resolved != bundle_path.resolve() / "report.html":  # the bundle's own report is its to refresh
        above = ancestor_problem(resolved)
        if above:
            refuse(above)
    if (resolved.exists() or out.is_symlink()) and not written_by_validate(resolved):
        refuse("the file there is not a report written by validate")


def run(args) -> int:
    from validate.bundle import read_bundle
    from validate.report import write_report

    bundle = read_bundle(args.bundle)
    if args.out:
        check_out(Path(args.out), bundle.path)
    path = write_report(bundle, args.out)
    print(f"Report: {path}")
    return 0
