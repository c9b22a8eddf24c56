"""`validate report BUNDLE`: render the bundle's self-contained HTML report again (nothing is recomputed)."""
from __future__ import annotations

NAME = "report"
HELP = "re-render the self-contained HTML report of a results bundle"


def register(parser) -> None:
    parser.add_argument("bundle", metavar="BUNDLE", help="results bundle folder written by `validate run`")
    parser.add_argument("--out", metavar="FILE", help="where to write the report (default BUNDLE/report.html)")


def run(args) -> int:
    from validate.bundle import read_bundle
    from validate.report import write_report

    bundle = read_bundle(args.bundle)
    path = write_report(bundle, args.out)
    print(f"Report: {path}")
    return 0
