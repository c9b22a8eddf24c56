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
from typing import Any

import numpy as np
import torch

from validate.errors import InputError
from validate.io import atomic_write_json
from validate.scoring import device_decode, distributed
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
    strict_failure,
    write_failures,
    write_predictions,
)
from validate.scoring.volume_inputs import ACQUISITION_COLUMNS, bounded_batch_size, preprocessing_key

DEFAULT_BATCH_SIZE = 64
DEFAULT_SHARD_SIZE = 512


@dataclass
class ScoreResult:
    """What scoring produced; the files are in ``out_dir`` (written by rank 0)."""

    predictions: Any  # pandas DataFrame, DESIGN.md's predictions table
    failures: Any  # pandas DataFrame: site, case_id, reason, stage
    checkpoint_sha256: str
    checkpoint_format: str
    checkpoint_path: Path
    device: str  # e.g. "cpu", "cuda:0"; "none" for a predictions file
    counts: dict  # {"cases", "scored", "failed", "cached", "sites": {site: {...}}}
    out_dir: Path | None = None
    files: dict = field(default_factory=dict)  # name -> path written

    @property
    def n_failed(self) -> int:
        return int(self.counts.get("failed", 0))


def _as_protocol(protocol: Any) -> Any:
    if isinstance(protocol, (str, Path)):
        from validate.protocol import load_protocol

        return load_protocol(protocol)
    return protocol


def score_protocol(
    protocol: Any,
    *,
    checkpoint: str | Path | None = None,
    out_dir: str | Path,
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    amp: str = "none",
    strict: bool = False,
    cache_dir: str | Path | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    progress: bool | None = None,
    cache_inputs: bool = False,
    hash_inputs: bool | None = None,
) -> ScoreResult:
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
        raise InputError(
            "no checkpoint: give --checkpoint or model.checkpoint in the protocol",
            file=protocol.path,
            line=protocol.line_of("model"),
            field="model.checkpoint",
            expected="a path to the model file",
        )
    fmt = protocol.model.format
    if checkpoint is not None and ckpt_path.is_file() and detect_format(ckpt_path) is not None:
        fmt = "auto"  # the flag's file may be another kind than the protocol's: trust its contents
    ckpt = load_checkpoint(
        ckpt_path,
        format=fmt,
        factory=protocol.model.factory,
        factory_path=protocol.resolve(protocol.model.factory_path),
    )
    if ckpt.format == "predictions":
        return _from_predictions_file(protocol, ckpt, out_dir, strict)
    if protocol.task == "segmentation":  # per-case metrics and pixel summaries, cached per shard, one process
        from validate.scoring.segmentation import score_segmentation

        return score_segmentation(
            protocol,
            ckpt,
            out_dir=out_dir,
            device=device,
            batch_size=batch_size,
            workers=workers,
            amp=amp,
            strict=strict,
            progress=progress,
            result_type=ScoreResult,
            cache_dir=Path(cache_dir) if cache_dir else out_dir / "cache",
            shard_size=shard_size,
            hash_inputs=ci_mode() if hash_inputs is None else bool(hash_inputs),
        )

    ctx = distributed.setup(device)
    try:
        return _score(
            protocol,
            ckpt,
            ctx,
            out_dir=out_dir,
            device=device,
            batch_size=batch_size,
            workers=workers,
            amp=amp,
            strict=strict,
            cache_dir=Path(cache_dir) if cache_dir else out_dir / "cache",
            shard_size=shard_size,
            progress=progress,
            cache_inputs=cache_inputs,
            hash_inputs=ci_mode() if hash_inputs is None else bool(hash_inputs),
        )
    finally:
        ctx.close()


@dataclass
class _Scoring:
    """What every site of one scoring run shares: the protocol, the checkpoint prepared on its device,
    the preprocessing, the output columns and how logits are read, the cache key and the engine's
    settings."""

    protocol: Any
    ckpt: Checkpoint
    ctx: distributed.Context
    dev: torch.device
    spec: Preprocessing
    columns: list
    to_logits: Any
    channels_last: bool
    key: str
    progress: bool
    batch_size: int
    workers: int | None
    amp: str
    shard_size: int
    cache_dir: Path
    cache_inputs: bool
    hash_inputs: bool
    served: int = 0  # cases whose decoded inputs came from the input cache

    @property
    def image(self) -> bool:
        return self.spec.kind != "tabular"


def _score(
    protocol: Any,
    ckpt: Checkpoint,
    ctx: distributed.Context,
    *,
    out_dir: Path,
    device: str,
    batch_size: int,
    workers: int | None,
    amp: str,
    strict: bool,
    cache_dir: Path,
    shard_size: int,
    progress: bool | None,
    cache_inputs: bool = False,
    hash_inputs: bool = False,
) -> ScoreResult:
    from validate.cohort import load_site_manifest

    started = time.time()
    run = _prepare(
        protocol,
        ckpt,
        ctx,
        device=device,
        batch_size=batch_size,
        workers=workers,
        amp=amp,
        cache_dir=cache_dir,
        shard_size=shard_size,
        progress=progress,
        cache_inputs=cache_inputs,
        hash_inputs=hash_inputs,
    )
    cohorts = [load_site_manifest(protocol, site) for site in protocol.sites]
    mine, cached_cases = _score_my_shards(run, cohorts)
    merged, total_cached, total_decoded = _gather(ctx, cohorts, mine, cached_cases, run.served)

    frames, failure_rows, site_counts = [], [], {}
    for cohort in cohorts:
        frame, rows, site_counts[cohort.site.id] = _assemble_site(run, cohort, merged[cohort.site.id])
        frames.append(frame)
        failure_rows.extend(rows)

    import pandas as pd

    predictions = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    counts = _counts(site_counts, total_cached, total_decoded if cache_inputs else None)
    result = ScoreResult(
        predictions=predictions,
        failures=failures_frame(failure_rows),
        checkpoint_sha256=ckpt.sha256,
        checkpoint_format=ckpt.format,
        checkpoint_path=ckpt.path,
        device=str(run.dev),
        counts=counts,
        out_dir=out_dir,
    )
    if ctx.is_main:
        result.files = _write(result, out_dir, strict=strict, summary=_summary(run, counts, started))
    if strict and counts["failed"]:
        raise strict_failure(counts["failed"], failure_rows[0], out_dir / "failures.csv")
    return result


def _prepare(
    protocol: Any,
    ckpt: Checkpoint,
    ctx: distributed.Context,
    *,
    device: str,
    batch_size: int,
    workers: int | None,
    amp: str,
    cache_dir: Path,
    shard_size: int,
    progress: bool | None,
    cache_inputs: bool,
    hash_inputs: bool,
) -> _Scoring:
    """The device, the preprocessing and the output reading of the run; the checkpoint prepared on the
    device; the cache key of the run's shards."""
    dev = resolve_device(device, local_rank=ctx.local_rank if ctx.active else None)
    spec = Preprocessing.from_protocol(protocol.input)
    columns = logit_columns(protocol.task, protocol.classes, protocol.labels)
    positive_index = protocol.classes.index(protocol.positive) if protocol.task == "binary" else 1
    to_logits = make_to_logits(
        task=protocol.task,
        n_columns=len(columns),
        output=protocol.model.output,
        positive_index=positive_index,
        checkpoint=ckpt.path,
        fmt=ckpt.format,
    )
    # channels-last is a 4-D layout: volumes ([N, C, D, H, W]) keep the plain one
    channels_last = dev.type == "cuda" and spec.kind not in ("tabular", "volume")
    if dev.type == "cuda" and spec.kind == "volume":
        torch.backends.cudnn.benchmark = True  # every batch but a site's last has one shape
    if channels_last:
        # every batch has the protocol's input shape: let cuDNN pick its fastest kernels once
        torch.backends.cudnn.benchmark = True
    ckpt.prepare(dev, channels_last=channels_last)
    if progress is None:
        progress = sys.stderr.isatty() and ctx.is_main
    key = run_key(
        checkpoint_sha256=ckpt.sha256,
        preprocessing=_decoding_key(dev, spec),
        output={
            "task": protocol.task,
            "columns": columns,
            "output": protocol.model.output,
            "positive_index": positive_index,
        },
        amp=amp,
        shard_size=shard_size,
    )
    return _Scoring(
        protocol=protocol,
        ckpt=ckpt,
        ctx=ctx,
        dev=dev,
        spec=spec,
        columns=columns,
        to_logits=to_logits,
        channels_last=channels_last,
        key=key,
        progress=bool(progress),
        batch_size=_batch_size(protocol, spec, batch_size),
        workers=workers,
        amp=amp,
        shard_size=shard_size,
        cache_dir=cache_dir,
        cache_inputs=cache_inputs,
        hash_inputs=hash_inputs,
    )


def _decoding_key(dev: Any, spec: Preprocessing) -> dict:
    """The preprocessing part of the score and input cache keys, with the device decoder where the
    device decodes (its pixels may differ from the CPU decoders' by a few levels); CPU keys unchanged."""
    key = preprocessing_key(spec)
    on_device = device_decode.cache_identity(dev, spec)
    if on_device is not None:
        key["device_decode"] = on_device
    return key


def _batch_size(protocol: Any, spec: Preprocessing, requested: int) -> int:
    """``requested`` (``--batch-size``), lowered so that one batch's float32 inputs stay within the
    protocol's ``scoring.max_batch_bytes``
    (:func:`~validate.scoring.volume_inputs.bounded_batch_size`); inputs without a fixed shape (tabular
    rows, arrays without a size) are not bounded."""
    if spec.kind == "tabular" or spec.size is None:
        return requested
    bound = getattr(getattr(protocol, "scoring", None), "max_batch_bytes", None)
    if bound is None:
        return requested
    return bounded_batch_size(requested, spec.case_shape, int(bound))


def _score_my_shards(run: _Scoring, cohorts: list) -> tuple[dict[str, dict[int, ShardResult]], int]:
    """This rank's shards of every site, from the cache or scored: ``({site: {shard: result}}, cases
    found in the cache)``. Every rank learns whether one failed; the failure is raised on each."""
    mine: dict[str, dict[int, ShardResult]] = {}
    cached_cases = 0
    error: BaseException | None = None
    try:
        for cohort in cohorts:
            mine[cohort.site.id], cached = _score_site(run, cohort)
            cached_cases += cached
    except BaseException as exc:  # noqa: BLE001 - every rank must learn that one failed, then re-raise
        error = exc
    if not run.ctx.all_ok(error is None):
        if error is not None:
            raise error
        raise InputError("another scoring process failed; see its error above")
    return mine, cached_cases


def _site_dataset(run: _Scoring, cases: Any, ids: list[str]) -> tuple[Any, Any]:
    """The site's cases as the evaluator reads them, and ``rows_key(shard, lo, hi)``: the cache key of
    the rows [lo, hi) (their ids and features, or their ids and image files)."""
    if not run.image:
        feats, bad = feature_matrix(cases, run.spec.features)

        def rows_key(s: int, lo: int, hi: int) -> str:
            return tabular_rows_key(ids[lo:hi], feats[lo:hi], {k: v for k, v in bad.items() if lo <= k < hi}, lo)

        return TabularCases(feats, bad), rows_key
    paths = cases["image_path"].astype(str).tolist()

    def image_key(s: int, lo: int, hi: int) -> str:
        return image_rows_key(ids[lo:hi], paths[lo:hi], content=run.hash_inputs)

    return ImageCases(paths, run.spec), image_key


def _score_site(run: _Scoring, cohort: Any) -> tuple[dict[int, ShardResult], int]:
    """This rank's shards of one site: those in the cache loaded, the others scored and cached as they
    finish. Returns ``({shard: result}, cases found in the cache)``."""
    site, cases = cohort.site.id, cohort.cases
    n = len(cases)
    ids = cases["case_id"].astype(str).tolist()
    dataset, rows_key = _site_dataset(run, cases, ids)
    cache = ShardCache(run.cache_dir, site, run.key)
    shard_ids = run.ctx.mine(range(math.ceil(n / run.shard_size)))
    bounds = {s: (s * run.shard_size, min(n, (s + 1) * run.shard_size)) for s in shard_ids}
    keys = {s: rows_key(s, *bounds[s]) for s in shard_ids}
    done: dict[int, ShardResult] = {}
    cached_cases = 0
    for s in shard_ids:
        hit = cache.load(s, keys[s], ids[slice(*bounds[s])])
        if hit is not None:
            done[s] = hit
            cached_cases += bounds[s][1] - bounds[s][0]
    todo = [s for s in shard_ids if s not in done]
    if not todo:
        return done, cached_cases
    inputs = None
    if run.cache_inputs and run.image:
        inputs = InputCache(
            run.cache_dir, site, input_key(preprocessing=_decoding_key(run.dev, run.spec), shard_size=run.shard_size)
        )
        found = {s: (keys[s], ids[slice(*bounds[s])]) for s in todo if inputs.path(s, keys[s]).exists()}
        dataset = DecodedCases(dataset, inputs, found, run.shard_size)

    def on_shard(s: int, res: ShardResult) -> None:
        _scrub_failures(res, cases, run.spec, run.protocol)
        cache.save(s, keys[s], ids[slice(*bounds[s])], res)
        if inputs is not None:
            if res.decoded is not None:
                inputs.save(s, keys[s], ids[slice(*bounds[s])], res.decoded)
            else:  # no decoded inputs came back: the shard was read from the input cache
                run.served += len(res.positions)
        res.decoded = None  # the pixels are not needed once saved

    done.update(_score_shards(run, site, dataset, todo, n, sum(bounds[s][1] - bounds[s][0] for s in todo), on_shard))
    return done, cached_cases


def _score_shards(
    run: _Scoring, site: str, dataset: Any, todo: list[int], n: int, n_todo: int, on_shard: Any
) -> dict[int, ShardResult]:
    """The evaluator on the shards ``todo`` of one site (``n`` cases, ``n_todo`` of them in ``todo``),
    with a progress bar."""
    workers = run.workers if run.workers is not None else default_workers(run.spec, run.dev, n_todo)
    options = EngineOptions(
        device=run.dev, batch_size=run.batch_size, amp=run.amp, channels_last=run.channels_last, workers=workers
    )
    bar = Progress(site, n_todo, run.progress)
    try:
        return score_shards(
            run.ckpt,
            dataset,
            todo,
            n_cases=n,
            shard_size=run.shard_size,
            n_outputs=len(run.columns),
            spec=run.spec,
            options=options,
            input_device=run.ckpt.input_device,
            to_logits=run.to_logits,
            progress=bar,
            on_shard=on_shard,
        )
    finally:
        bar.close()


def _gather(
    ctx: distributed.Context, cohorts: list, mine: dict[str, dict[int, ShardResult]], cached_cases: int, served: int
) -> tuple[dict[str, dict[int, ShardResult]], int, int]:
    """Every rank's shards merged per site, with the cases found in the shard cache and in the input
    cache summed over ranks."""
    merged: dict[str, dict[int, ShardResult]] = {c.site.id: {} for c in cohorts}
    total_cached = 0
    total_decoded = 0
    for part, cached, decoded_n in ctx.gather((mine, cached_cases, served)):
        total_cached += cached
        total_decoded += decoded_n
        for site, shards in part.items():
            merged[site].update(shards)
    return merged, total_cached, total_decoded


def _assemble_site(run: _Scoring, cohort: Any, shards: dict[int, ShardResult]) -> tuple[Any, list, dict]:
    """One site's predictions in manifest order from its shards: ``(frame, failure rows (site, case id,
    reason, stage), {"cases", "scored", "failed"})``. A case is scored when no stage failed on it and
    every logit is finite."""
    site, cases = cohort.site.id, cohort.cases
    n = len(cases)
    logits = np.full((n, len(run.columns)), np.nan)
    image = run.image
    stats = np.full((n, len(IMAGE_STAT_COLUMNS)), np.nan) if image else None
    equipment = np.full((n, 2), "", dtype=object) if image else None
    volume = run.spec.kind == "volume"
    acquisition = np.full((n, len(ACQUISITION_COLUMNS)), "", dtype=object) if volume else None
    failures: list[tuple[int, str, str]] = []
    for s in sorted(shards):
        res = shards[s]
        _scrub_failures(res, cases, run.spec, run.protocol)  # shards from the cache too
        if len(res.positions):
            logits[res.positions] = res.logits
            if stats is not None and res.image_stats is not None:
                stats[res.positions] = res.image_stats
            if equipment is not None and res.equipment is not None:
                equipment[res.positions] = res.equipment
            if acquisition is not None and res.acquisition is not None:
                acquisition[res.positions] = res.acquisition
        failures.extend(res.failures)
    failed_pos = {p for p, _, _ in failures}
    ok = np.array([i not in failed_pos for i in range(n)], dtype=bool) & np.isfinite(logits).all(axis=1)
    protocol = run.protocol
    frame = predictions_frame(
        cases,
        logits,
        run.columns,
        ok,
        task=protocol.task,
        labels=protocol.labels,
        attributes=list(protocol.attributes),
        features=list(run.spec.features) if not image else None,
        image_stats=stats,
        equipment=equipment,
        acquisition=acquisition,
    )
    ids = cases["case_id"].astype(str).tolist()
    rows = [(site, ids[p], reason, stage) for p, reason, stage in sorted(failures)]
    return frame, rows, {"cases": n, "scored": int(ok.sum()), "failed": int(n - ok.sum())}


def _counts(site_counts: dict, cached: int, inputs_cached: int | None) -> dict:
    """The run's counts: cases, scored and failed summed over sites, cases from the shard cache, per
    site counts, and (with the input cache) cases whose decoded inputs came from it."""
    counts = {
        "cases": sum(c["cases"] for c in site_counts.values()),
        "scored": sum(c["scored"] for c in site_counts.values()),
        "failed": sum(c["failed"] for c in site_counts.values()),
        "cached": cached,
        "sites": site_counts,
    }
    if inputs_cached is not None:
        counts["inputs_cached"] = inputs_cached
    return counts


def _summary(run: _Scoring, counts: dict, started: float) -> dict:
    """The contents of scoring.json besides the files written."""
    protocol, ckpt = run.protocol, run.ckpt
    return {
        "protocol": protocol.name,
        "protocol_sha256": protocol.sha256,
        "checkpoint": str(ckpt.path),
        "task": protocol.task,
        "classes": protocol.classes,
        "labels": protocol.labels,
        "checkpoint_sha256": ckpt.sha256,
        "checkpoint_format": ckpt.format,
        "device": str(run.dev),
        "world_size": run.ctx.world,
        "amp": run.amp,
        "batch_size": run.batch_size,
        "max_batch_bytes": getattr(getattr(protocol, "scoring", None), "max_batch_bytes", None),
        "shard_size": run.shard_size,
        "cache_keys": "file content (sha256)" if run.hash_inputs else "file size and modification time",
        "counts": counts,
        "started": started,
        "finished": time.time(),
    }


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
    res.failures = [
        (p, scrub_paths(r, *(hide + ([paths[p]] if paths is not None and 0 <= p < len(paths) else []))), st)
        for p, r, st in res.failures
    ]


def _write(result: ScoreResult, out_dir: Path, *, strict: bool, summary: dict) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"failures": out_dir / "failures.csv", "summary": out_dir / "scoring.json"}
    write_failures(result.failures, files["failures"])
    if not (strict and result.counts["failed"]):
        files["predictions"] = out_dir / "predictions.parquet"
        write_predictions(
            result.predictions,
            files["predictions"],
            task=summary.get("task"),
            classes=summary.get("classes"),
            labels=summary.get("labels"),
        )
    atomic_write_json(files["summary"], summary)
    return files


def _from_predictions_file(protocol: Any, ckpt: Checkpoint, out_dir: Path, strict: bool) -> ScoreResult:
    """The checkpoint is a predictions table: nothing to score, the table is carried over as it is."""
    df = read_predictions_file(ckpt.path, task=protocol.task, classes=protocol.classes, labels=protocol.labels)
    sites = {}
    if "site" in df.columns:
        sites = {str(s): {"cases": int(n), "scored": int(n), "failed": 0} for s, n in df["site"].value_counts().items()}
    counts = {"cases": len(df), "scored": len(df), "failed": 0, "cached": 0, "sites": sites}
    result = ScoreResult(
        predictions=df,
        failures=failures_frame([]),
        checkpoint_sha256=ckpt.sha256,
        checkpoint_format="predictions",
        checkpoint_path=ckpt.path,
        device="none",
        counts=counts,
        out_dir=out_dir,
    )
    result.files = _write(
        result,
        out_dir,
        strict=strict,
        summary={
            "protocol": protocol.name,
            "protocol_sha256": protocol.sha256,
            "checkpoint": str(ckpt.path),
            "checkpoint_sha256": ckpt.sha256,
            "checkpoint_format": "predictions",
            "device": "none",
            "counts": counts,
            "scoring": "skipped: the checkpoint is a predictions file",
        },
    )
    return result
