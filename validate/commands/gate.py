"""`validate gate BUNDLE [--protocol P]`: judge the gates again on an existing bundle, without re-scoring.

With ``--protocol`` the gates of another protocol file are judged (e.g. a stricter gate tried on an
existing run); the bundle's own metrics, calibration and subgroup analysis are used. Outputs
(``gates.json``, ``junit.xml``, ``gates.md``) go to ``--out DIR``; without ``--out`` they refresh the
bundle's own files only when the bundle's own protocol is judged (the bundle stays the record of
what ran), and are otherwise printed only. Exit codes: 0 every gate passes, 1 a gate failed, 2 bad input.

``--out`` never replaces a file it did not write (:func:`check_out`): an existing ``gates.json``,
``junit.xml`` or ``gates.md`` there must be validate's own (judged by its content), ``--out`` must be a
folder, and it may not be another results bundle (or lie inside one) when another protocol is judged.
Other files in the folder are left alone. The judging is the library's
(:func:`validate.pipeline.regate`); this command checks where its files go, writes and prints them.
"""

from __future__ import annotations

from pathlib import Path

from validate.errors import InputError
from validate.pipeline import regate

OUTPUTS = ("gates.json", "junit.xml", "gates.md")

NAME = "gate"
HELP = "judge the protocol's gates again on an existing results bundle (no re-scoring)"


def register(parser) -> None:
    parser.add_argument("bundle", metavar="BUNDLE", help="results bundle folder written by `validate run`")
    parser.add_argument("--protocol", metavar="P", help="judge this protocol's gates instead of the bundle's own")
    parser.add_argument("--out", metavar="DIR", help="write gates.json, junit.xml and gates.md here")
    parser.add_argument("--quiet", "-q", action="store_true", help="print only the verdict line")


def check_out(out: Path, bundle_path: Path, other_protocol: bool) -> None:
    """Raise :class:`InputError` when writing the gate files into ``out`` would replace or spoil
    something that is not validate's own output (rules in the module docstring)."""
    from validate.bundle import ancestor_problem, not_our_bundle, written_by_validate

    def refuse(why: str, file: Path = out) -> None:
        raise InputError(
            f"will not write the gate files here: {why}",
            file=file,
            field="--out",
            expected="a folder for gates.json, junit.xml and gates.md (a new or empty one, or one "
            "validate wrote them to before)",
        )

    out = out.resolve()
    if out.exists() and not out.is_dir():
        refuse("it is a file, and --out names a folder")
    above = ancestor_problem(out)
    if above:
        refuse(above)
    if out.is_dir() and out != bundle_path.resolve() and not_our_bundle(out) is None:
        refuse("it is another results bundle; its gate files must stay those of its own run")
    if out.is_dir() and out == bundle_path.resolve() and other_protocol:
        refuse("it is the bundle itself; gates of another protocol would no longer match its protocol.yaml")
    for name in OUTPUTS:
        file = out / name
        if (file.exists() or file.is_symlink()) and not written_by_validate(file):
            refuse(f"{name} there was not written by validate", file)


def run(args) -> int:
    from validate.contract import for_writing
    from validate.io import atomic_write_json, atomic_write_text, shared_mode

    bundle, report = regate(args.bundle, args.protocol)
    ci = (bundle.metrics or {}).get("ci_level")
    out = Path(args.out) if args.out else (bundle.path if not args.protocol else None)
    if out is not None:
        check_out(out, bundle.path, other_protocol=bool(args.protocol))
        mode = shared_mode()  # verdicts of aggregates, for CI and reviewers
        atomic_write_json(out / "gates.json", for_writing("gates.json", report.to_json()), mode)
        atomic_write_text(out / "junit.xml", report.to_junit(), mode)
        atomic_write_text(out / "gates.md", report.to_markdown(ci_level=ci), mode)
    if not args.quiet:
        print(report.to_markdown(ci_level=ci), end="")
        if out is not None:
            print(f"\nWritten: {out / 'gates.json'}, {out / 'junit.xml'}, {out / 'gates.md'}")
    print(f"Verdict: {report.verdict.upper()} (exit {report.exit_code})")
    return report.exit_code
