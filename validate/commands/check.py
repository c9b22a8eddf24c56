"""`validate check PROTOCOL...`: load protocols and every manifest they name; report all problems."""

from __future__ import annotations

import sys

from validate.errors import EXIT_BAD_INPUT, EXIT_OK, InputError, InputErrors

NAME = "check"
HELP = "check protocol files and their site manifests; report every problem at once"


def register(parser) -> None:
    parser.add_argument("protocols", nargs="+", metavar="PROTOCOL", help="protocol YAML file(s)")
    parser.add_argument("--quiet", "-q", action="store_true", help="print problems only")


def summarise(protocol, cohorts) -> list[str]:
    lines = [
        f"{protocol.path}: protocol `{protocol.name}` v{protocol.version}, task {protocol.task}, "
        f"{len(cohorts)} site(s), {len(protocol.subgroups)} subgroup(s), {len(protocol.gates)} gate(s)"
    ]
    for c in cohorts:
        cases = c.cases
        n = len(cases)
        if protocol.task == "multilabel":
            label_text = ", ".join(f"{lab} {cases[f'y_{lab}'].mean():.1%}" for lab in protocol.labels)
        elif protocol.task == "binary":
            label_text = f"prevalence {cases['y'].mean():.1%} ({protocol.positive})"
        elif protocol.task == "segmentation":  # a mask per case, no label column
            label_text = f"masks of {', '.join(protocol.labels or [])}"
        else:
            counts = cases["y"].value_counts().reindex(range(len(protocol.classes)), fill_value=0)
            label_text = ", ".join(f"{name} {k}" for name, k in zip(protocol.classes, counts, strict=True))
        patients = cases["patient_id"].nunique()
        lines.append(f"  {c.site.id:<14} {c.site.role:<12} n={n:<6} patients={patients:<6} {label_text}")
    return lines


def run(args) -> int:
    from validate.cohort import load_cohorts
    from validate.preflight import check_protocol_gates
    from validate.protocol import load_protocol

    problems: list[InputError] = []
    for path in args.protocols:
        try:
            protocol = load_protocol(path, problems=problems)
            try:
                check_protocol_gates(protocol)
            except InputErrors as exc:  # reported with the manifests' problems, all in one pass
                problems.extend(exc.problems)
            cohorts = load_cohorts(protocol, check_files=True)
        except InputErrors as exc:
            problems.extend(exc.problems)
            continue
        except InputError as exc:
            problems.append(exc)
            continue
        if not args.quiet:
            print("\n".join(summarise(protocol, cohorts)))
        for c in cohorts:
            for w in c.warnings:
                print(f"warning: {w}", file=sys.stderr)
    for p in problems:
        print(f"validate check: error: {p}", file=sys.stderr)
    if problems:
        print(f"validate check: {len(problems)} problem(s) found", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not args.quiet:
        print("ok: no problems found")
    return EXIT_OK
