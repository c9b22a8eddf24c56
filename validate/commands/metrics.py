"""``validate metrics PREDICTIONS``: discrimination and calibration metrics with intervals.

Prints a table (pooled and per site, key metrics with their intervals) and writes the Metrics JSON of
DESIGN.md with ``--json``. With ``--protocol`` the protocol's metric settings, class or label names,
subgroups and development site are used; without it the task is inferred from the columns.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from validate import progress
from validate.commands import _scheduler
from validate.errors import EXIT_OK, InputError

NAME = "metrics"
HELP = "metrics with confidence intervals (overall, per site, per subgroup) from a predictions table"

TASKS = ("binary", "multiclass", "multilabel")


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("predictions", metavar="PREDICTIONS", help="predictions table (.parquet or .csv)")
    parser.add_argument("--protocol", metavar="P", help="protocol YAML: metric settings, classes, subgroups")
    parser.add_argument("--task", choices=TASKS, help="task (default: from the protocol, else the columns)")
    parser.add_argument("--bootstrap", type=int, metavar="N", help="bootstrap replicates (overrides the protocol)")
    parser.add_argument("--seed", type=int, metavar="S", help="bootstrap seed (overrides the protocol)")
    parser.add_argument("--json", metavar="OUT", help="write the Metrics JSON here (atomically)")
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="processes computing blocks side by side (default: one per CPU when the "
        "bootstrap is large; 1 = this process only)",
    )
    _scheduler.add_argument(parser)
    parser.add_argument("--quiet", "-q", action="store_true", help=progress.QUIET_HELP)


def _fmt(e, metric: str | None = None) -> str:
    """A metric entry as the report and the dashboard show it (:func:`validate.formatting.format_entry`)."""
    from validate.formatting import format_entry

    if isinstance(e, dict) and "estimate" in e and e["estimate"] is None:
        return "—"  # the reason is printed under the table
    return format_entry(e, metric)


def format_table(report: dict) -> str:
    """A readable table: one row per block (overall, sites), key metrics with their intervals."""
    from validate.formatting import format_count
    from validate.metrics import registry

    keys = list(registry.names("cli", report["task"]))  # the key metrics: the registry's "cli" list
    rows = [("overall", report["overall"])] + [(f"site {s}", b) for s, b in report["sites"].items()]
    # a segmentation block counts cases and patients (no events)
    seg = report["task"] == "segmentation"
    count, count_name = ("n_patients", "patients") if seg else ("n_events", "events")
    header = ["", "n", count_name] + keys
    body = []
    for name, b in rows:
        flag = " *" if b.get("insufficient") else ""
        body.append([name + flag, format_count(b["n"]), format_count(b.get(count))] + [_fmt(b.get(k), k) for k in keys])
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in body]
    level = int(round(report["ci_level"] * 100))
    methods = (
        "patient-clustered bootstrap of the mean" if seg else "AUROC DeLong, intercept/slope Wald, others bootstrap"
    )
    lines.append(f"[{level}% intervals: {methods} ({report['n_bootstrap']} replicates, seed {report['seed']})]")
    if any(b.get("insufficient") for _, b in rows):
        lines.append("* insufficient: " + "; ".join(f"{n}: {b['reason']}" for n, b in rows if b.get("insufficient")))
    for attr, groups in report.get("subgroups", {}).items():
        lines.append("")
        lines.append(f"subgroup {attr}:")
        for value, b in groups.items():
            flag = " *" if b.get("insufficient") else ""
            lines.append(
                f"  {value}{flag}: n={b['n']} {count_name}={b.get(count)} "
                + " ".join(f"{k}={_fmt(b.get(k), k)}" for k in keys[:2])
            )
    return "\n".join(lines)


def _segmentation_report(frame, protocol, settings, subgroups, subgroup_columns) -> dict:
    """metrics.json of a segmentation predictions table (:mod:`validate.analysis.segmentation`): the
    protocol's labels and empty policy when one is given, else the table's labels."""
    from validate.analysis.segmentation import segmentation_cases, segmentation_metrics
    from validate.analysis.segmentation_pixels import SegmentationSettings

    seg = SegmentationSettings.of(protocol) if protocol is not None else SegmentationSettings()
    data = segmentation_cases(frame, list(seg.labels) or None)
    return segmentation_metrics(
        data,
        settings=settings,
        subgroups=subgroups,
        subgroup_columns=subgroup_columns,
        exclude_policy=seg.both == "exclude",
    )


@progress.command
def run(args: argparse.Namespace) -> int:
    from validate.io import atomic_write_json, shared_mode
    from validate.metrics import MetricSettings, metrics_report
    from validate.predictions import categorical_columns, read_predictions

    if args.bootstrap is not None and args.bootstrap < 0:
        raise InputError(
            f"--bootstrap {args.bootstrap} is negative", field="--bootstrap", expected="a number of replicates >= 0"
        )
    protocol = None
    task = args.task
    class_names = label_names = None
    subgroup_columns: list[str] = []
    development = None
    metrics_section = decision_section = None
    if args.protocol:
        from validate.protocol import load_protocol

        protocol = load_protocol(args.protocol)
        if task and task != protocol.task:
            raise InputError(
                f"--task {task} contradicts the protocol's task {protocol.task}", field="--task", expected=protocol.task
            )
        task = protocol.task
        if task == "multiclass":
            class_names = protocol.classes
        if task == "multilabel":
            label_names = protocol.labels
        subgroup_columns = [g.name for g in protocol.subgroups]
        devs = protocol.sites_with_role("development")
        development = devs[0].id if devs else None
        metrics_section = protocol.metrics
        decision_section = protocol.decision
    if args.workers is not None and args.workers < 1:
        raise InputError(
            f"--workers {args.workers} is not positive",
            field="--workers",
            expected="an integer >= 1 (1 = no worker processes)",
        )
    if args.workers is not None and args.scheduler is not None:
        raise InputError(
            "--workers and --scheduler both say where the blocks run",
            field="--scheduler",
            expected="one of them (--workers: processes on this machine; --scheduler: a Dask cluster)",
        )
    settings = MetricSettings.from_protocol(
        metrics_section, decision_section, n_bootstrap=args.bootstrap, seed=args.seed
    )
    text = categorical_columns(protocol) if protocol is not None else []
    table = read_predictions(
        args.predictions, task=task, class_names=class_names, label_names=label_names, text_columns=text
    )
    subgroups = None
    if protocol is not None and subgroup_columns:
        from validate.cohort import derive_subgroups

        subgroups = derive_subgroups(table.frame, protocol)
    if table.task == "segmentation":
        report = _segmentation_report(table.frame, protocol, settings, subgroups, subgroup_columns)
    else:
        with _scheduler.session(args, local=args.workers is not None):
            report = metrics_report(
                table,
                settings=settings,
                class_names=class_names,
                label_names=label_names,
                subgroup_columns=subgroup_columns,
                subgroups=subgroups,
                development_site=development,
                workers=args.workers,
            )
    print(format_table(report))
    if args.json:
        atomic_write_json(Path(args.json), report, shared_mode())  # aggregates, no case rows
        print(f"wrote {args.json}", file=sys.stderr)
    return EXIT_OK
