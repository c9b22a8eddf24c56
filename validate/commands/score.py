"""``validate score``: run a checkpoint over every site of a protocol and write the predictions table."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from validate.errors import EXIT_OK

NAME = "score"
HELP = "score a checkpoint on every site of a protocol; write predictions.parquet and failures.csv"
DESCRIPTION = (
    "Score a checkpoint (torch.export .pt2, TorchScript, state dict + factory, safetensors + factory, ONNX, "
    "or a predictions file) on every site of PROTOCOL. Writes OUT/predictions.parquet, OUT/failures.csv and "
    "OUT/scoring.json. Finished shards are cached in OUT/cache (or --cache-dir): a re-run, or a run after a "
    "kill, scores only what is missing. Under `torchrun --nproc-per-node N` the cases are spread over the "
    "processes and rank 0 writes the files."
)


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("protocol", type=Path, help="protocol YAML file")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="model file (default: the protocol's model.checkpoint, relative to the protocol)",
    )
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: runs/<protocol name>-score)")
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    parser.add_argument("--batch-size", type=int, default=64, help="cases per forward pass (default 64)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="DataLoader decoding processes (default: chosen from device, cores and image size)",
    )
    parser.add_argument(
        "--amp", choices=["bf16", "fp16", "none"], default="none", help="autocast precision (default none: float32)"
    )
    parser.add_argument("--strict", action="store_true", help="any case that cannot be scored is fatal (exit 2)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="shard cache folder (default OUT/cache)")
    parser.add_argument("--shard-size", type=int, default=512, help="cases per cached shard (default 512)")
    parser.add_argument(
        "--cache-inputs",
        action="store_true",
        help="also keep the decoded inputs in the cache, so that scoring other checkpoints on "
        "the same cohort skips decoding (holds the cohort's pixels: keep the cache folder "
        "where the images may be)",
    )
    parser.add_argument(
        "--hash-inputs",
        action="store_true",
        default=None,
        help="key cached shards by each image (and mask) file's content (sha256) instead of its size and "
        "modification time, so a replaced image is never served a stale score; on by default "
        "when the environment variable CI is true or 1",
    )


def run(args: argparse.Namespace) -> int:
    from validate.protocol import load_protocol
    from validate.scoring.pipeline import score_protocol

    protocol = load_protocol(args.protocol)
    out = args.out or Path("runs") / f"{protocol.name}-score"
    result = score_protocol(
        protocol,
        checkpoint=args.checkpoint,
        out_dir=out,
        device=args.device,
        batch_size=args.batch_size,
        workers=args.workers,
        amp=args.amp,
        strict=args.strict,
        cache_dir=args.cache_dir,
        shard_size=args.shard_size,
        cache_inputs=args.cache_inputs,
        hash_inputs=args.hash_inputs,
    )
    if int(os.environ.get("RANK", "0") or 0) != 0:
        return EXIT_OK  # under torchrun, rank 0 alone reports
    c = result.counts
    lines = [
        f"checkpoint {result.checkpoint_path} ({result.checkpoint_format}, sha256 {result.checkpoint_sha256[:16]}) "
        f"on {result.device}"
    ]
    for site, sc in c["sites"].items():
        lines.append(f"  {site}: {sc['scored']}/{sc['cases']} scored, {sc['failed']} failed")
    lines.append(
        f"total: {c['scored']}/{c['cases']} scored, {c['failed']} failed, {c['cached']} from cache"
        + (f", {c['inputs_cached']} decoded inputs from cache" if "inputs_cached" in c else "")
    )
    for row in result.failures.head(3).itertuples(index=False):
        lines.append(f"  failed: {row.site}/{row.case_id} ({row.stage}): {row.reason}")
    if len(result.failures) > 3:
        lines.append(f"  ... {len(result.failures) - 3} more in failures.csv")
    for name, path in result.files.items():
        lines.append(f"{name}: {path}")
    print("\n".join(lines), file=sys.stdout)
    return EXIT_OK
