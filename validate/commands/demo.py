"""`validate demo`: run the sample protocols (heart, heart-compare, chest, volume, fetal_head) on their shipped
checkpoints into runs/.

heart-compare scores heart's model again as its baseline; running it after heart, into the same runs
folder (hence the same scoring cache), makes that free.

The exit code is the worst of the runs (2 bad input > 1 a gate failed > 0 all passed); a protocol
with bad input is reported and the others still run.
"""

from __future__ import annotations

import sys
from pathlib import Path

from validate import progress
from validate.errors import EXIT_BAD_INPUT, InputError
from validate.pipeline import run_protocol

NAME = "demo"
HELP = (
    "run the sample protocols (protocols/heart.yaml, heart-compare.yaml, chest.yaml, volume.yaml, fetal_head.yaml) "
    "into runs/"
)
# heart before heart-compare: its baseline comes from the cache
SAMPLES = ("heart", "heart-compare", "chest", "volume", "fetal_head")


def register(parser) -> None:
    parser.add_argument("--runs-dir", metavar="DIR", default="runs", help="where the bundles go (runs)")
    parser.add_argument(
        "--protocols-dir",
        metavar="DIR",
        help="folder holding heart.yaml, heart-compare.yaml, chest.yaml, volume.yaml and fetal_head.yaml "
        "(default: ./protocols, else the source tree's)",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | mps (default auto)")


def protocols_dir(given=None) -> Path:
    if given:
        return Path(given)
    here = Path("protocols")
    if (here / "heart.yaml").exists():
        return here
    return Path(__file__).resolve().parents[2] / "protocols"


@progress.command
def run(args) -> int:
    folder = protocols_dir(args.protocols_dir)
    worst = 0
    for name in SAMPLES:
        path = folder / f"{name}.yaml"
        print(f"== validate run {path}", flush=True)
        try:
            result = run_protocol(path, runs_dir=args.runs_dir, device=args.device)
        except InputError as exc:
            for line in str(exc).splitlines():
                print(f"validate demo: error: {line}", file=sys.stderr)
            worst = max(worst, EXIT_BAD_INPUT)
            continue
        print(result.summary, flush=True)
        worst = max(worst, result.exit_code)
    return worst
