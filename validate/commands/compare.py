"""`validate compare BUNDLE_NEW BUNDLE_BASELINE`: two existing bundles of the same protocol and cohort,
compared case by case (matched by site and hashed case id), and the protocol's comparison gates.

Prints the table of differences new − baseline with their paired intervals, then the verdict of the
``compare: baseline`` gates of the new bundle's protocol (or of ``--protocol``). ``--json`` prints
``{"comparison": <comparison.json>, "gates": <gates.json>}`` instead; ``--junit F`` and ``--markdown F``
write the gates' JUnit XML and Markdown there (never over a file validate did not write, nor inside a
results bundle, which stays the record of its own run). The pairing is the library's
(:func:`validate.compare_bundles`); both runs must have hashed their case ids with one key: the same
secret in ``$VALIDATE_CASE_ID_KEY``.

Exit codes: 0 every comparison gate passes (or none is declared), 1 one fails, 2 bad input (bundles of
different protocols or cohorts, different hashing keys, no case in common), 3 could not complete.
"""

from __future__ import annotations

import json
from pathlib import Path

from validate.errors import InputError

NAME = "compare"
HELP = "compare two results bundles of the same cohort case by case and judge the comparison gates"
DESCRIPTION = (
    HELP + ". Both runs must hash case ids with the same $VALIDATE_CASE_ID_KEY. Exit code 0 when every "
    "`compare: baseline` gate passes, 1 when one fails, 2 for bad input."
)


def register(parser) -> None:
    parser.add_argument("new", metavar="BUNDLE_NEW", help="results bundle of the new model")
    parser.add_argument("baseline", metavar="BUNDLE_BASELINE", help="results bundle of the baseline model")
    parser.add_argument(
        "--protocol", metavar="P", help="judge this protocol's comparison gates (default: the new bundle's)"
    )
    parser.add_argument("--json", action="store_true", help="print the comparison and the gates as JSON")
    parser.add_argument("--junit", metavar="F", help="write the comparison gates as JUnit XML to F")
    parser.add_argument("--markdown", metavar="F", help="write the comparison gates as Markdown to F")


def check_output(path: Path, flag: str) -> None:
    """Refuse to write ``path`` over a file validate did not write, or inside a results bundle."""
    from validate.bundle import ancestor_problem, written_by_validate

    def refuse(why: str) -> None:
        raise InputError(
            f"will not write here: {why}",
            file=path,
            field=flag,
            expected="a new file, or one validate wrote before, outside any results bundle",
        )

    if path.is_dir():
        refuse("it is a folder")
    above = ancestor_problem(path.resolve())
    if above:
        refuse(above)
    if (path.exists() or path.is_symlink()) and not written_by_validate(path):
        refuse("the file there was not written by validate")


def run(args) -> int:
    from validate.bundle import read_bundle
    from validate.contract import for_writing
    from validate.gates import judge_gates
    from validate.io import atomic_write_text, shared_mode
    from validate.pairing import compare_bundles
    from validate.protocol import load_protocol
    from validate.summary import comparison_lines

    outputs = {flag: Path(value) for flag, value in (("--junit", args.junit), ("--markdown", args.markdown)) if value}
    for flag, path in outputs.items():
        check_output(path, flag)
    comparison = compare_bundles(args.new, args.baseline, protocol_path=args.protocol)
    new = read_bundle(args.new)
    protocol = load_protocol(args.protocol) if args.protocol else new.load_protocol()
    if not protocol.comparison_gates:
        # a release job that judges nothing must not read as PASS
        raise InputError(
            f"protocol `{protocol.name}` declares no comparison gate: nothing to judge",
            file=args.protocol or Path(args.new) / "protocol.yaml",
            field="gates",
            expected="a gate with `compare: baseline` (e.g. {metric: auroc, compare: baseline, scope: each_site, "
            "min: -0.02, on: ci_low}); the differences alone are in the dashboard or validate.compare_bundles",
        )
    # only the comparison gates: the others judge one model, which `validate gate` does on each bundle
    report = judge_gates(protocol.comparison_gates, new.metrics, protocol=protocol, sites=[], comparison=comparison)
    level = comparison.get("level")
    if "--junit" in outputs:
        atomic_write_text(outputs["--junit"], report.to_junit(), shared_mode())
    if "--markdown" in outputs:
        atomic_write_text(outputs["--markdown"], report.to_markdown(ci_level=level), shared_mode())
    if args.json:
        print(
            json.dumps(
                {
                    "comparison": for_writing("comparison.json", comparison),
                    "gates": for_writing("gates.json", report.to_json()),
                },
                indent=2,
                sort_keys=True,
                allow_nan=False,
            )
        )
        return report.exit_code
    print(f"{new.path.name} (new) vs {Path(args.baseline).name} (baseline)")
    print("\n".join(comparison_lines(comparison, protocol.task)))
    print()
    print(report.to_markdown(ci_level=level), end="")
    print(f"Verdict: {report.verdict.upper()} (exit {report.exit_code})")
    return report.exit_code
