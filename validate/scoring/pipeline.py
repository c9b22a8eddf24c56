"""``score_protocol``: a protocol and a checkpoint in, the predictions table and failures out.

Flow per site: the cohort (validate.cohort) gives the checked cases; their shards are looked up in
the cache, the missing ones scored by the evaluator and cached as they finish; the site's results are
merged in manifest order, with the per-case columns the shift analysis reads (image statistics
and DICOM equipment for images, the feature values for tabular inputs; see
:func:`validate.scoring.outputs.predictions_frame`). Under torchrun the shards are spread over ranks
and gathered (see :mod:`validate.scoring.distributed`). Rank 0 writes ``predictions.parquet``,
``failures.csv`` and ``scoring.json`` into ``out_dir``.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from validate.errors import InputError
from validate.io import atomic_write_json
from validate.scoring import distributed
from validate.scoring.cache import ShardCache, ci_mode, image_rows_key, run_key, tabular_rows_key
from validate.scoring.checkpoints import Checkpoint, detect_format, load_checkpoint
from validate.scoring.evaluator import (
    AMP_DTYPES,
    EngineOptions,
    ImageCases,
    Progress,
    ShardResult,
    TabularCases,
    default_workers,
    resolve_device,
    score_shards,
)
from validate.scoring.input_cache import DecodedCases, InputCache, input_key
from validate.scoring.inputs import IMAGE_STAT_COLUMNS, Preprocessing, feature_matrix, scrub_paths
from validate.scoring.outputs import (
    failures_frame,
    logit_columns,
    make_to_logits,
    predictions_frame,
    read_predictions_file,
    write_failures,
    write_predictions,
)

DEFAULT_BATCH_SIZE = 64
DEFAULT_SHARD_SIZE = 512


@dataclass
class ScoreResult:
    """What scoring produced; the files are in ``out_dir`` (written by rank 0)."""

    predictions: Any                 # pandas DataFrame, DESIGN.md's predictions table
    failures: Any                    # pandas DataFrame: site, case_id, reason, stage
    checkpoint_sha256: str
    checkpoint_format: str
    checkpoint_path: Path
    device: str                      # e.g. "cpu", "cuda:0"; "none" for a predictions file
    counts: dict                     # {"cases", "scored", "failed", "cached", "sites": {site: {...}}}
    out_dir: Optional[Path] = None
    files: dict = field(default_factory=dict)  # name -> path written

    @property
    def n_failed(self) -> int:
        return int(self.counts.get("failed", 0))


def _as_protocol(protocol: Any) -> Any:
    if isinstance(protocol, (str, Path)):
        from validate.protocol import load_protocol

        return load_protocol(protocol)
    return protocol


def score_protocol(protocol: Any, *, checkpoint: Optional[str | Path] = None, out_dir: str | Path,
                   device: str = "auto", batch_size: int = DEFAULT_BATCH_SIZE, workers: Optional[int] = None,
                   amp: str = "none", strict: bool = False, cache_dir: Optional[str | Path] = None,
                   shard_size: int = DEFAULT_SHARD_SIZE, progress: Optional[bool] = None,
                   cache_inputs: bool = False, hash_inputs: Optional[bool] = None) -> ScoreResult:
    """Score every site of ``protocol`` (a Protocol or a protocol file) with ``checkpoint``.

    ``checkpoint`` defaults to the protocol's ``model.checkpoint`` (relative to the protocol file); a
    relative ``checkpoint`` argument is taken as given (relative to the working directory, as a
    command-line path). ``cache_dir`` defaults to ``out_dir/cache``. ``workers=None`` picks
    :func:`validate.scoring.evaluator.default_workers`. ``progress=None`` shows progress only when
    stderr is a terminal. With ``strict``, any failed case raises InputError (after failures.csv is
    written). ``cache_inputs`` keeps each shard's decoded inputs in the cache, so that scoring
    another checkpoint on the same cohort skips decoding (see :mod:`validate.scoring.input_cache`).
    ``hash_inputs`` keys cached shards by the content of each image file rather than its size and
    modification time; ``None`` turns it on in CI (:func:`validate.scoring.cache.ci_mode`).
    Raises InputError for bad input.
    """
    protocol = _as_protocol(protocol)
    if batch_size < 1:
        raise InputError(f"batch size {batch_size} is not positive", field="--batch-size", expected="an integer >= 1")
    if shard_size < 1:
        raise InputError(f"shard size {shard_size} is not positive", field="--shard-size", expected="an integer >= 1")
    if workers is not None and workers < 0:
        raise InputError(f"workers {workers} is negative", field="--workers", expected="an integer >= 0")
    if amp not in AMP_DTYPES:
        raise InputError(f"unknown autocast mode {amp!r}", field="--amp", expected="bf16, fp16 or none")
    out_dir = Path(out_dir)
    ckpt_path = Path(checkpoint) if checkpoint is not None else protocol.resolve(protocol.model.checkpoint)
    if ckpt_path is None:
        raise InputError("no checkpoint: give --checkpoint or model.checkpoint in the protocol", file=protocol.path,
                         line=protocol.line_of("model"), field="model.checkpoint",
                         expected="a path to the model file")
    fmt = protocol.model.format
    if checkpoint is not None and ckpt_path.is_file() and detect_format(ckpt_path) is not None:
        fmt = "auto"  # the flag's file may be another kind than the protocol's: trust its contents
    ckpt = load_checkpoint(ckpt_path, format=fmt, factory=protocol.model.factory,
                           factory_path=protocol.resolve(protocol.model.factory_path))
    if ckpt.format == "predictions":
        return _from_predictions_file(protocol, ckpt, out_dir, strict)

    ctx = distributed.setup(device)
    try:
        return _score(protocol, ckpt, ctx, out_dir=out_dir, device=device, batch_size=batch_size, workers=workers,
                      amp=amp, strict=strict, cache_dir=Path(cache_dir) if cache_dir else out_dir / "cache",
                      shard_size=shard_size, progress=progress, cache_inputs=cache_inputs,
                      hash_inputs=ci_mode() if hash_inputs is None else bool(hash_inputs))
    finally:
        ctx.close()


def _score(protocol: Any, ckpt: Checkpoint, ctx: distributed.Context, *, out_dir: Path, device: str,
           batch_size: int, workers: Optional[int], amp: str, strict: bool, cache_dir: Path, shard_size: int,
           progress: Optional[bool], cache_inputs: bool = False, hash_inputs: bool = False) -> ScoreResult:
    from validate.cohort import load_site_manifest

    started = time.time()
    dev = resolve_device(device, local_rank=ctx.local_rank if ctx.active else None)
    spec = Preprocessing.from_protocol(protocol.input)
    columns = logit_columns(protocol.task, protocol.classes, protocol.labels)
    positive_index = protocol.classes.index(protocol.positive) if protocol.task == "binary" else 1
    to_logits = make_to_logits(task=protocol.task, n_columns=len(columns), output=protocol.model.output,
                               positive_index=positive_index, checkpoint=ckpt.path, fmt=ckpt.format)
    channels_last = dev.type == "cuda" and spec.kind != "tabular"
    if channels_last:
        # every batch has the protocol's input shape: let cuDNN pick its fastest kernels once
        torch.backends.cudnn.benchmark = True
    ckpt.prepare(dev, channels_last=channels_last)
    if progress is None:
        progress = sys.stderr.isatty() and ctx.is_main
    key = run_key(checkpoint_sha256=ckpt.sha256, preprocessing=spec.key(),
                  output={"task": protocol.task, "columns": columns, "output": protocol.model.output,
                          "positive_index": positive_index}, amp=amp, shard_size=shard_size)

    cohorts = [load_site_manifest(protocol, site) for site in protocol.sites]
    mine: dict[str, dict[int, ShardResult]] = {}
    cached_cases = 0
    served = [0]  # cases whose decoded inputs came from the input cache
    error: Optional[BaseException] = None
    try:
        for cohort in cohorts:
            site = cohort.site.id
            cases = cohort.cases
            n = len(cases)
            ids = cases["case_id"].astype(str).tolist()
            if spec.kind == "tabular":
                feats, bad = feature_matrix(cases, spec.features)
                dataset: Any = TabularCases(feats, bad)

                def rows_key(s: int, lo: int, hi: int, ids=ids, feats=feats, bad=bad) -> str:
                    return tabular_rows_key(ids[lo:hi], feats[lo:hi], {k: v for k, v in bad.items() if lo <= k < hi}, lo)
            else:
                paths = cases["image_path"].astype(str).tolist()
                dataset = ImageCases(paths, spec)

                def rows_key(s: int, lo: int, hi: int, ids=ids, paths=paths) -> str:
                    return image_rows_key(ids[lo:hi], paths[lo:hi], content=hash_inputs)
            cache = ShardCache(cache_dir, site, key)
            shard_ids = ctx.mine(range(math.ceil(n / shard_size)))
            bounds = {s: (s * shard_size, min(n, (s + 1) * shard_size)) for s in shard_ids}
            keys = {s: rows_key(s, *bounds[s]) for s in shard_ids}
            done: dict[int, ShardResult] = {}
            for s in shard_ids:
                hit = cache.load(s, keys[s], ids[slice(*bounds[s])])
                if hit is not None:
                    done[s] = hit
                    cached_cases += bounds[s][1] - bounds[s][0]
            todo = [s for s in shard_ids if s not in done]
            inputs = None
            if todo and cache_inputs and spec.kind != "tabular":
                inputs = InputCache(cache_dir, site, input_key(preprocessing=spec.key(), shard_size=shard_size))
                found = {s: (keys[s], ids[slice(*bounds[s])]) for s in todo if inputs.path(s, keys[s]).exists()}
                dataset = DecodedCases(dataset, inputs, found, shard_size)
            if todo:
                n_todo = sum(bounds[s][1] - bounds[s][0] for s in todo)
                options = EngineOptions(device=dev, batch_size=batch_size, amp=amp, channels_last=channels_last,
                                        workers=workers if workers is not None else default_workers(spec, dev, n_todo))
                bar = Progress(site, n_todo, bool(progress))

                def on_shard(s: int, res: ShardResult, cache=cache, keys=keys, bounds=bounds, ids=ids,
                             inputs=inputs, cases=cases) -> None:
                    _scrub_failures(res, cases, spec, protocol)
                    cache.save(s, keys[s], ids[slice(*bounds[s])], res)
                    if inputs is not None:
                        if res.decoded is not None:
                            inputs.save(s, keys[s], ids[slice(*bounds[s])], res.decoded)
                        else:  # no decoded inputs came back: the shard was read from the input cache
                            served[0] += len(res.positions)
                    res.decoded = None  # the pixels are not needed once saved

                try:
                    done.update(score_shards(ckpt, dataset, todo, n_cases=n, shard_size=shard_size,
                                             n_outputs=len(columns), spec=spec, options=options,
                                             input_device=ckpt.input_device, to_logits=to_logits, progress=bar,
                                             on_shard=on_shard))
                finally:
                    bar.close()
            mine[site] = done
    except BaseException as exc:  # noqa: BLE001 - every rank must learn that one failed, then re-raise
        error = exc
    if not ctx.all_ok(error is None):
        if error is not None:
            raise error
        raise InputError("another scoring process failed; see its error above")

    merged: dict[str, dict[int, ShardResult]] = {c.site.id: {} for c in cohorts}
    total_cached = 0
    total_decoded = 0
    for part, cached, decoded_n in ctx.gather((mine, cached_cases, served[0])):
        total_cached += cached
        total_decoded += decoded_n
        for site, shards in part.items():
            merged[site].update(shards)

    frames, failure_rows, site_counts = [], [], {}
    for cohort in cohorts:
        site, cases = cohort.site.id, cohort.cases
        n = len(cases)
        logits = np.full((n, len(columns)), np.nan)
        image = spec.kind != "tabular"
        stats = np.full((n, len(IMAGE_STAT_COLUMNS)), np.nan) if image else None
        equipment = np.full((n, 2), "", dtype=object) if image else None
        failures: list[tuple[int, str, str]] = []
        for s in sorted(merged[site]):
            res = merged[site][s]
            _scrub_failures(res, cases, spec, protocol)  # shards from the cache too
            if len(res.positions):
                logits[res.positions] = res.logits
                if image and res.image_stats is not None:
                    stats[res.positions] = res.image_stats
                if image and res.equipment is not None:
                    equipment[res.positions] = res.equipment
            failures.extend(res.failures)
        failed_pos = {p for p, _, _ in failures}
        ok = np.array([i not in failed_pos for i in range(n)], dtype=bool) & np.isfinite(logits).all(axis=1)
        frames.append(predictions_frame(cases, logits, columns, ok, task=protocol.task, labels=protocol.labels,
                                        attributes=list(protocol.attributes),
                                        features=list(spec.features) if not image else None,
                                        image_stats=stats, equipment=equipment))
        ids = cases["case_id"].astype(str).tolist()
        for p, reason, stage in sorted(failures):
            failure_rows.append((site, ids[p], reason, stage))
        site_counts[site] = {"cases": n, "scored": int(ok.sum()), "failed": int(n - ok.sum())}

    import pandas as pd

    predictions = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    failures_df = failures_frame(failure_rows)
    counts = {"cases": sum(c["cases"] for c in site_counts.values()),
              "scored": sum(c["scored"] for c in site_counts.values()),
              "failed": sum(c["failed"] for c in site_counts.values()),
              "cached": total_cached, "sites": site_counts}
    if cache_inputs:
        counts["inputs_cached"] = total_decoded
    result = ScoreResult(predictions=predictions, failures=failures_df, checkpoint_sha256=ckpt.sha256,
                         checkpoint_format=ckpt.format, checkpoint_path=ckpt.path, device=str(dev), counts=counts,
                         out_dir=out_dir)
    if ctx.is_main:
        result.files = _write(result, out_dir, strict=strict, summary={
            "protocol": protocol.name, "protocol_sha256": protocol.sha256, "checkpoint": str(ckpt.path),
            "task": protocol.task, "classes": protocol.classes, "labels": protocol.labels,
            "checkpoint_sha256": ckpt.sha256, "checkpoint_format": ckpt.format, "device": str(dev),
            "world_size": ctx.world, "amp": amp, "batch_size": batch_size, "shard_size": shard_size,
            "cache_keys": "file content (sha256)" if hash_inputs else "file size and modification time",
            "counts": counts, "started": started, "finished": time.time()})
    if strict and counts["failed"]:
        first = failure_rows[0]
        raise InputError(f"{counts['failed']} case(s) could not be scored and --strict makes that fatal; first: "
                         f"site {first[0]}, case {first[1]}: {first[2]} (all listed in {out_dir / 'failures.csv'})",
                         field="--strict")
    return result


def _scrub_failures(res: ShardResult, cases: Any, spec: Preprocessing, protocol: Any) -> None:
    """Failure reasons without paths: they go into failures.csv and the bundle, and a site's folders
    (its image root, the folders above it) may be named after patients. The case id identifies the
    case; the manifest gives its file."""
    if not res.failures:
        return
    hide: list[str] = []
    if spec.kind != "tabular" and "image_path" in cases.columns:
        paths = cases["image_path"].astype(str).tolist()
    else:
        paths = None
    for site in protocol.sites:
        root = protocol.resolve(site.image_root) if site.image_root else None
        if root is not None:
            hide += [str(root), str(Path(root).resolve())]
    res.failures = [(p, scrub_paths(r, *(hide + ([paths[p]] if paths is not None and 0 <= p < len(paths) else []))), st)
                    for p, r, st in res.failures]


def _write(result: ScoreResult, out_dir: Path, *, strict: bool, summary: dict) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"failures": out_dir / "failures.csv", "summary": out_dir / "scoring.json"}
    write_failures(result.failures, files["failures"])
    if not (strict and result.counts["failed"]):
        files["predictions"] = out_dir / "predictions.parquet"
        write_predictions(result.predictions, files["predictions"], task=summary.get("task"),
                          classes=summary.get("classes"), labels=summary.get("labels"))
    atomic_write_json(files["summary"], summary)
    return files


def _from_predictions_file(protocol: Any, ckpt: Checkpoint, out_dir: Path, strict: bool) -> ScoreResult:
    """The checkpoint is a predictions table: nothing to score, the table is carried over as it is."""
    df = read_predictions_file(ckpt.path, task=protocol.task, classes=protocol.classes, labels=protocol.labels)
    sites = {}
    if "site" in df.columns:
        sites = {str(s): {"cases": int(n), "scored": int(n), "failed": 0} for s, n in df["site"].value_counts().items()}
    counts = {"cases": len(df), "scored": len(df), "failed": 0, "cached": 0, "sites": sites}
    result = ScoreResult(predictions=df, failures=failures_frame([]), checkpoint_sha256=ckpt.sha256,
                         checkpoint_format="predictions", checkpoint_path=ckpt.path, device="none", counts=counts,
                         out_dir=out_dir)
    result.files = _write(result, out_dir, strict=strict, summary={
        "protocol": protocol.name, "protocol_sha256": protocol.sha256, "checkpoint": str(ckpt.path),
        "checkpoint_sha256": ckpt.sha256, "checkpoint_format": "predictions", "device": "none",
        "counts": counts, "scoring": "skipped: the checkpoint is a predictions file"})
    return result
