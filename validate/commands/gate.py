"""`validate gate BUNDLE [--protocol P]`: judge the gates again on an existing bundle, without re-scoring.

With ``--protocol`` the gates of another protocol file are judged (e.g. a stricter gate tried on an
existing run); the bundle's own metrics, calibration and subgroup analysis are used. Outputs
(``gates.json``, ``junit.xml``, ``gates.md``) go to ``--out DIR``; without ``--out`` they refresh the
bundle's own files only when the bundle's own protocol is judged (the bundle stays the record of
what ran), and are otherwise printed only. Exit codes: 0 every gate passes, 1 a gate failed, 2 bad input.
"""
from __future__ import annotations

from pathlib import Path

NAME = "gate"
HELP = "judge the protocol's gates again on an existing results bundle (no re-scoring)"


def register(parser) -> None:
    parser.add_argument("bundle", metavar="BUNDLE", help="results bundle folder written by `validate run`")
    parser.add_argument("--protocol", metavar="P", help="judge this protocol's gates instead of the bundle's own")
    parser.add_argument("--out", metavar="DIR", help="write gates.json, junit.xml and gates.md here")
    parser.add_argument("--quiet", "-q", action="store_true", help="print only the verdict line")


def regate(bundle_path, protocol_path=None):
    """The :class:`validate.gates.GateReport` of a bundle judged with its own or another protocol."""
    from validate.bundle import read_bundle
    from validate.gates import judge_gates
    from validate.protocol import load_protocol

    bundle = read_bundle(bundle_path)
    protocol = load_protocol(protocol_path) if protocol_path else bundle.load_protocol()
    return bundle, judge_gates(protocol.gates, bundle.metrics, calibration=bundle.calibration,
                               subgroups=bundle.subgroups, shift=bundle.shift, protocol=protocol)


def run(args) -> int:
    from validate.contract import for_writing
    from validate.io import atomic_write_json, atomic_write_text

    bundle, report = regate(args.bundle, args.protocol)
    ci = (bundle.metrics or {}).get("ci_level")
    out = Path(args.out) if args.out else (bundle.path if not args.protocol else None)
    if out is not None:
        atomic_write_json(out / "gates.json", for_writing("gates.json", report.to_json()))
        atomic_write_text(out / "junit.xml", report.to_junit())
        atomic_write_text(out / "gates.md", report.to_markdown(ci_level=ci))
    if not args.quiet:
        print(report.to_markdown(ci_level=ci), end="")
        if out is not None:
            print(f"\nWritten: {out / 'gates.json'}, {out / 'junit.xml'}, {out / 'gates.md'}")
    print(f"Verdict: {report.verdict.upper()} (exit {report.exit_code})")
    return report.exit_code
