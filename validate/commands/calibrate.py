"""``validate calibrate PREDICTIONS``: compare calibration methods across sites (Calibration JSON).

Calibrators are fitted on the ``--fit-on`` sites and evaluated on cases not used for fitting (the
held-out design, always run: its fits are the ones ``validate apply-calibration`` applies); ``--design``
adds the local, transfer and sample-size designs. With ``--protocol`` the protocol's calibration and
metrics sections give the defaults (methods, designs, fit sites, repeats, sample sizes, seeds, bootstrap)
and its class names; command-line flags win. Predictions given as probabilities become logits with the
1e-15 floor (multiclass: log-probabilities).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from validate import progress
from validate.errors import EXIT_OK, InputError

NAME = "calibrate"
HELP = "compare calibration methods across sites (held-out, local, transfer, sample-size designs)"

DEFAULT_METHODS = {
    "binary": ["temperature", "platt", "isotonic"],
    "multiclass": ["temperature", "vector", "isotonic"],
    "multilabel": ["temperature", "platt", "isotonic"],
}


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("predictions", metavar="PREDICTIONS", help="predictions table (.parquet or .csv)")
    parser.add_argument("--protocol", metavar="P", help="protocol YAML: calibration and metrics settings, classes")
    parser.add_argument(
        "--fit-on",
        metavar="SITE[,SITE]",
        help="site(s) to fit calibrators on "
        "(default: the protocol's calibration.fit_on / calibration / development sites)",
    )
    parser.add_argument(
        "--methods",
        metavar="M[,M]",
        help="calibration methods, e.g. temperature,isotonic "
        "(default: the protocol's, else temperature, platt/vector, isotonic)",
    )
    parser.add_argument(
        "--design",
        metavar="D[,D]",
        action="append",
        help="held-out | local | transfer | sample-size; repeat or comma-separate for several (held-out always runs)",
    )
    parser.add_argument(
        "--fit-fraction",
        type=float,
        metavar="F",
        help="share of the fit sites used for fitting in held-out; the rest is evaluated too (default 1)",
    )
    parser.add_argument("--repeats", type=int, metavar="R", help="repetitions of the local and sample-size designs")
    parser.add_argument("--sample-sizes", metavar="N[,N]", help="fitting-set sizes of the sample-size design")
    parser.add_argument("--bootstrap", type=int, metavar="N", help="bootstrap replicates (overrides the protocol)")
    parser.add_argument("--seed", type=int, metavar="S", help="seed of the splits and the bootstrap")
    parser.add_argument(
        "--smooth-intervals",
        action="store_true",
        help="bootstrap intervals for eavg/e50/e90/emax/ici too (slow: ~10 s per method x site)",
    )
    parser.add_argument("--json", metavar="OUT", help="write the Calibration JSON here (atomically)")
    parser.add_argument("--quiet", "-q", action="store_true", help=progress.QUIET_HELP)


def _positive_int(value, flag: str, minimum: int = 0):
    if value is not None and value < minimum:
        raise InputError(f"{flag} {value} is below {minimum}", field=flag, expected=f"an integer >= {minimum}")
    return value


def _fmt(entry, metric: str | None = None) -> str:
    """A metric entry as the report and the dashboard show it (:func:`validate.formatting.format_entry`)."""
    from validate.formatting import format_interval

    if not isinstance(entry, dict):
        return "—"
    return format_interval(entry.get("estimate"), entry.get("ci_low"), entry.get("ci_high"), metric)


def _block_value(block: dict, key: str):
    """``key`` of a binary block, or of a multiclass block's ``macro`` part."""
    return block.get(key) if key in block else (block.get("macro") or {}).get(key)


def format_summary(result: dict) -> str:
    """Method x site table of ECE, Brier and log loss (with intervals), and the recommendation."""
    header = ["site", "method", "n", "ece", "brier", "log_loss"]
    rows = []
    sites = list(result["methods"]["none"]["sites"])
    for s in sites:
        for m, spec in result["methods"].items():
            b = spec["sites"].get(s)
            if b is None:
                continue
            rows.append(
                [s, m, str(b.get("n", "")), *(_fmt(_block_value(b, k), k) for k in ("ece", "brier", "log_loss"))]
            )
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = [
        f"calibration fitted on {', '.join(result['fit_on'])} ({result['held_out']['n_fit']} cases), "
        f"evaluated on cases not used for fitting"
    ]
    lines.append("  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip())
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    for m, spec in result["methods"].items():
        if spec.get("error"):
            lines.append(f"{m}: not fitted: {spec['error']}")
    lines.append(f"recommended: {result['recommended']} ({result['recommendation'].get('criterion', '')})")
    if result.get("recommendation_note"):
        lines.append(f"note: {result['recommendation_note']}")
    for name in result.get("designs") or {}:
        lines.append(f"design {name}: see the JSON (`designs.{name}`)")
    return "\n".join(lines)


@progress.command
def run(args: argparse.Namespace) -> int:
    from validate.calibrators import compare_calibration
    from validate.calibrators.designs import DESIGNS, CalibrationSettings
    from validate.io import atomic_write_json, shared_mode
    from validate.metrics import MetricSettings
    from validate.predictions import read_predictions

    _positive_int(args.bootstrap, "--bootstrap")
    _positive_int(args.repeats, "--repeats", 1)
    if args.fit_fraction is not None and not 0 < args.fit_fraction <= 1:
        raise InputError(
            f"--fit-fraction {args.fit_fraction} is outside (0, 1]",
            field="--fit-fraction",
            expected="a share in (0, 1]",
        )
    protocol = None
    task = class_names = label_names = None
    if args.protocol:
        from validate.protocol import load_protocol

        protocol = load_protocol(args.protocol)
        task = protocol.task
        class_names = protocol.classes if task == "multiclass" else None
        label_names = protocol.labels if task == "multilabel" else None
    table = read_predictions(args.predictions, task=task, class_names=class_names, label_names=label_names)
    task = table.task

    designs = None
    if args.design:
        designs = [d for text in args.design for d in _csv(text)]
        for d in designs:
            if d not in DESIGNS:
                import difflib

                near = difflib.get_close_matches(d, DESIGNS, n=1)
                raise InputError(
                    f"unknown design {d!r}" + (f"; did you mean {near[0]!r}?" if near else ""),
                    field="--design",
                    expected=" | ".join(DESIGNS),
                )
    sizes = None
    if args.sample_sizes:
        try:
            sizes = [int(v) for v in _csv(args.sample_sizes)]
        except ValueError:
            raise InputError(
                f"--sample-sizes {args.sample_sizes!r} is not a list of integers",
                field="--sample-sizes",
                expected="e.g. 25,50,100",
            ) from None
    methods = _csv(args.methods) if args.methods else None
    if methods is None and protocol is None:
        methods = DEFAULT_METHODS[task]
    fit_on = _csv(args.fit_on) if args.fit_on else None
    if fit_on is None and protocol is None:
        raise InputError(
            "which site(s) should the calibrators be fitted on?",
            field="--fit-on",
            expected=f"--fit-on with one or more of: {', '.join(table.sites())}",
        )

    cfg = CalibrationSettings.from_protocol(
        protocol.calibration if protocol else None,
        fit_fraction=args.fit_fraction,
        repeats=args.repeats,
        sample_sizes=sizes,
        seed=args.seed,
    )
    settings = MetricSettings.from_protocol(
        protocol.metrics if protocol else None, n_bootstrap=args.bootstrap, seed=args.seed
    )
    result = compare_calibration(
        table,
        protocol=protocol,
        methods=methods,
        designs=designs,
        fit_on=fit_on,
        metric_settings=settings,
        calibration=cfg,
        smooth_intervals=args.smooth_intervals,
    )
    print(format_summary(result))
    if args.json:
        atomic_write_json(Path(args.json), result, shared_mode())  # aggregates, no case rows
        print(f"wrote {args.json}", file=sys.stderr)
    return EXIT_OK
