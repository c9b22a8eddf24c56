"""`validate run PROTOCOL`: score (cached) -> metrics -> calibration comparison -> shift -> subgroups
-> gates -> results bundle -> HTML report, then a short summary and the exit code of the gates.

The command parses its flags, calls :func:`validate.pipeline.run_protocol` (the pipeline, a library
call) and prints :attr:`~validate.pipeline.RunResult.summary`. Every stage can start from a file:
``--predictions PATH`` (or ``model.format: predictions`` in the protocol) skips scoring. ``--baseline
PATH`` (or ``model.baseline`` in the protocol) scores a second model on the same cases and adds the
paired comparison (``comparison.json``) and its gates. The bundle is
assembled beside its target and renamed into place when whole (:class:`validate.bundle.BundleWriter`).
``--out`` may name a new path, an empty folder, or an earlier bundle of validate (replaced); anything
else there is refused before scoring starts (exit 2), so a run never deletes the user's files. Exit
codes: 0 every gate passes, 1 a gate failed, 2 bad input, 3 the run could not complete (e.g. a full
disk: the staging folder is removed, an earlier bundle stays whole).
"""

from __future__ import annotations

import sys

from validate import progress
from validate.commands import _scheduler
from validate.pipeline import run_protocol

NAME = "run"
HELP = "run a validation protocol end to end: score, metrics, calibration, shift, gates, bundle, report"
DESCRIPTION = (
    HELP + ". Writes a results bundle folder (default runs/<protocol>-<timestamp>) with report.html, "
    "gates.json and junit.xml; exit code 0 when every gate passes, 1 when one fails, 2 for bad input."
)


def register(parser) -> None:
    parser.add_argument("protocol", metavar="PROTOCOL", help="protocol YAML file")
    parser.add_argument("--checkpoint", metavar="PATH", help="model checkpoint (overrides model.checkpoint)")
    parser.add_argument(
        "--predictions",
        metavar="PATH",
        help="a predictions table (Parquet or CSV) to validate instead of scoring a checkpoint",
    )
    parser.add_argument(
        "--baseline",
        metavar="PATH",
        help="the model to compare with (a checkpoint, or a .parquet/.csv predictions table; "
        "overrides model.baseline): scored on the same cases, paired differences in "
        "comparison.json, judged by `compare: baseline` gates",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="bundle folder (default: RUNS_DIR/<protocol>-<timestamp>): a new path, an empty folder, "
        "or an earlier bundle to replace; any other existing path is refused",
    )
    parser.add_argument("--runs-dir", metavar="DIR", default="runs", help="where default bundle folders go (runs)")
    parser.add_argument(
        "--cache",
        metavar="DIR",
        help="scoring cache folder (default: .cache beside the bundle folder); it holds the "
        "original case identifiers, keep it local",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default auto)")
    parser.add_argument("--batch-size", type=int, default=64, metavar="N", help="scoring batch size (64)")
    parser.add_argument("--workers", type=int, default=None, metavar="N", help="data loading workers (auto)")
    parser.add_argument(
        "--cache-inputs",
        action="store_true",
        help="keep decoded inputs in the scoring cache: the next checkpoint on these cohorts skips "
        "decoding (the cache then holds the cohort's pixels)",
    )
    parser.add_argument(
        "--hash-inputs",
        action="store_true",
        default=None,
        help="key the scoring cache by each image (and mask) file's content (sha256), not its size and "
        "modification time (default on when the environment variable CI is true or 1)",
    )
    parser.add_argument(
        "--site",
        metavar="ID",
        help="run at one site and write a site bundle: that site's results with no case rows, ids or "
        "image paths (for `validate combine`); the data never leaves the site",
    )
    parser.add_argument(
        "--development-bundle",
        metavar="DIR",
        help="with --site: the development site's site bundle, whose target-sensitivity threshold this "
        "site's blocks carry (required at a non-development site when the protocol sets one)",
    )
    _scheduler.add_argument(parser)
    parser.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        help="print only the verdict line: no progress on stderr (errors still print)",
    )


@progress.command
def run(args) -> int:
    from validate.errors import InputError

    call = run_protocol
    extra = {}
    if args.site is not None:
        from validate.federation import run_site

        call, extra = run_site, {"site": args.site, "development_bundle": args.development_bundle}
    elif args.development_bundle is not None:
        raise InputError(
            "--development-bundle is for a site's run", field="--development-bundle", expected="--site ID with it"
        )
    with _scheduler.session(args):
        result = _call(call, args, extra)
    if args.quiet:
        print(result.summary.splitlines()[-1])
    else:
        print(result.summary)
    return result.exit_code


def _call(call, args, extra: dict):
    """The pipeline ``call`` (a central run or a site's run) with the command's flags."""
    return call(
        args.protocol,
        checkpoint=args.checkpoint,
        predictions=args.predictions,
        out=args.out,
        runs_dir=args.runs_dir,
        cache_dir=args.cache,
        device=args.device,
        batch_size=args.batch_size,
        workers=args.workers,
        cache_inputs=args.cache_inputs,
        hash_inputs=args.hash_inputs,
        baseline=args.baseline,
        **extra,
    )


if __name__ == "__main__":  # pragma: no cover
    from validate.cli import main

    sys.exit(main(["run", *sys.argv[1:]]))
