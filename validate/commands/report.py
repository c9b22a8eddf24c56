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
    from validate.io import atomic_write_text
    from validate.report import write_report

    bundle = read_bundle(args.bundle)
    names = list(dict.fromkeys(args.checklist or []))
    if args.checklist_out and not names:
        raise InputError(
            "--checklist-out without --checklist", field="--checklist-out", expected="--checklist NAME as well"
        )
    if args.out:
        check_out(Path(args.out), bundle.path)
    report_folder = Path(args.out).parent if args.out else bundle.path
    targets = checklist_targets(names, Path(args.checklist_out or report_folder), bundle.path)
    path = write_report(bundle, args.out, names)
    print(f"Report: {path}")
    if targets:
        from validate.report.checklists import checklist_markdown

        next(iter(targets.values())).parent.mkdir(parents=True, exist_ok=True)
        for name, target in targets.items():
            atomic_write_text(target, checklist_markdown(bundle, name))
            print(f"Checklist ({name}): {target}")
    return 0
