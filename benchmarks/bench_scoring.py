"""Scoring throughput against its ceiling, and peak memory against the number of cases.

Two limits are measured in the same run as the evaluator, on the same inputs:

- **model only**: a bare loop over the inputs preloaded as normalised float32 tensors (on the scoring
  device), through the same model with the same batch size: what the model alone allows;
- **decode only, all cores**: every file read and preprocessed exactly as the evaluator's dataset does
  (``ImageCases``: decode, image statistics, resize), by one process per available core and nothing
  else: what the machine's decoders allow.

The **ceiling** is the smaller of the two (issue 21). Printed ratios: ``cold / ceiling`` (the evaluator
reading and decoding every file; target >= 0.90) and ``cached / model only`` (the evaluator on decoded
inputs left by ``--cache-inputs``; target >= 0.90). On a CPU device the model and the decoders share the
same cores, so a cold run cannot exceed ``1 / (1/model + 1/decode)`` cases/s; that bound is printed too
(``shared-core bound``) and ``cold / shared-core bound`` says how much of the attainable the pipeline
reaches. Each figure is the best of ``--repeats`` interleaved runs (every other repeat in reverse
order), so that other processes on a shared machine disturb every side alike; the ratios are also
printed as the median over the repeats of each repeat's own ratio (``paired``: a side against the limits
measured within seconds of it, under the same load), the steadier figure on a busy machine.
``--device-decode`` adds the evaluator with JPEG / JPEG 2000 decoded by nvImageCodec on the device
(``validate.scoring.device_decode``), where installed.

Parts (``--part``, default all that fit the machine):

- ``chest``: the chest sample protocol (28x28 PNG sites and one DICOM site, the sample CNN).
- ``volume``: the volume sample protocol (20x20x20 CT phantoms as NIfTI, DICOM series folders and
  enhanced multi-frame DICOM, the sample 3D CNN): reading, reorienting, resampling and windowing a
  volume against a bare forward pass on the same volumes preloaded as tensors.
- ``resnet``: a ResNet-shaped plain torch.nn model (``--arch resnet18`` on 3x224x224 by default,
  ``resnet50`` for the GPU check) on ``--n`` generated 224x224 RGB PNGs, random weights.
- ``memory``: peak resident memory of a fresh process scoring N and 10N chest-like cases end to end
  (``score_protocol``); the ratio should stay below 1.2.

Run: ``.venv/bin/python benchmarks/bench_scoring.py`` (CPU, a few minutes on 2 cores), or on a GPU
machine see ``benchmarks/gpu_check.sh``. ``--json FILE`` writes the numbers. The ``resnet`` part
needs only torch, numpy and Pillow (no pandas, pydantic or pydicom).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from validate.machine import available_cpus  # noqa: E402
from validate.scoring.evaluator import EngineOptions, ImageCases, default_workers, resolve_device, score_shards  # noqa: E402
from validate.scoring.inputs import Preprocessing, normalise, read_case  # noqa: E402

# ---- models ----------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.down is None else self.down(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        cout = width * 4
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + (x if self.down is None else self.down(x)))


class ResNet(nn.Module):
    """The ResNet layout (He et al. 2016) in plain torch.nn, one logit out, random weights."""

    def __init__(self, arch: str = "resnet18", outputs: int = 1):
        super().__init__()
        block, layers = {"resnet18": (BasicBlock, [2, 2, 2, 2]), "resnet50": (Bottleneck, [3, 4, 6, 3])}[arch]
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
        )
        stages, cin = [], 64
        for i, n in enumerate(layers):
            width = 64 * 2**i
            for j in range(n):
                stages.append(block(cin, width, 2 if (j == 0 and i > 0) else 1))
                cin = width * block.expansion
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(cin, outputs)

    def forward(self, x):
        return self.head(self.stages(self.stem(x)).mean(dim=(2, 3)))


# ---- inputs ----------------------------------------------------------------------------------------


def _write_png(args: tuple) -> None:
    from PIL import Image

    path, seed, size = args
    rng = np.random.default_rng(seed)
    # smooth structure plus noise: compresses like a photograph, not like pure noise or flat colour
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack(
        [np.sin(2 * np.pi * (xx * rng.uniform(1, 4) + yy * rng.uniform(1, 4) + c / 3)) for c in range(3)], -1
    )
    img = np.clip(127.5 + 80 * base + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(path, **({"quality": 90} if path.suffix == ".jpg" else {}))


def make_pngs(folder: Path, n_unique: int, size: int = 224, suffix: str = ".png") -> list[Path]:
    """``n_unique`` generated RGB images (``.png``, ``.jpg`` at quality 90, or ``.jp2``) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"img-{i:05d}{suffix}" for i in range(n_unique)]
    todo = [(p, i, size) for i, p in enumerate(paths) if not p.exists()]
    if todo:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(max(1, min(16, os.cpu_count() or 1))) as pool:
            pool.map(_write_png, todo, chunksize=16)
    return paths


# ---- measurements ------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ceiling_pass(model, batches: list[torch.Tensor], device: torch.device, amp: str) -> tuple[float, np.ndarray]:
    """Seconds for one bare pass over preloaded batches (already normalised, on the device), and the
    outputs. Outputs stay on the device until the end: no per-batch synchronisation in the ceiling."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    _sync(device)
    t = time.perf_counter()
    outs = []
    with torch.inference_mode():
        for x in batches:
            if dtype is not None:
                with torch.autocast(device.type, dtype=dtype):
                    outs.append(model(x))
            else:
                outs.append(model(x))
        y = torch.cat(outs).float().cpu().numpy()
    _sync(device)
    return time.perf_counter() - t, y


_DECODE_DATASETS: list = []  # set before the decoding pool forks: workers inherit the datasets


def _quiet_decoder() -> None:
    torch.set_num_threads(1)  # one process per core; intra-op threads would only contend


def _decode_batch(job: tuple[int, list[int]]) -> int:
    d, positions = job
    return len(_DECODE_DATASETS[d][positions]["ok"])


def decode_all_cores(datasets: list, batch_size: int, processes: int) -> tuple[float, int]:
    """Seconds to read and preprocess every case exactly as the evaluator's dataset does (decode,
    image statistics, resize; ``ImageCases.__getitem__`` on batches of ``batch_size``), in
    ``processes`` worker processes doing nothing else, and the number of cases read. The pool starts
    before the clock does; the batches are handed out dynamically, so no core idles at the end."""
    import multiprocessing as mp

    global _DECODE_DATASETS
    _DECODE_DATASETS = list(datasets)
    jobs = [
        (d, list(range(b, min(len(ds), b + batch_size))))
        for d, ds in enumerate(datasets)
        for b in range(0, len(ds), batch_size)
    ]
    with mp.get_context("fork").Pool(processes, initializer=_quiet_decoder) as pool:
        pool.map(abs, range(processes))  # every worker up before timing
        t = time.perf_counter()
        read = sum(pool.imap_unordered(_decode_batch, jobs))
        seconds = time.perf_counter() - t
    _DECODE_DATASETS = []
    return seconds, read


def evaluator_pass(
    model, datasets: list, spec: Preprocessing, options: EngineOptions, shard_size: int
) -> tuple[float, np.ndarray]:
    _sync(options.device)
    t = time.perf_counter()
    logits = []
    for ds in datasets:
        n = len(ds)
        res = score_shards(
            model,
            ds,
            range((n + shard_size - 1) // shard_size),
            n_cases=n,
            shard_size=shard_size,
            n_outputs=1,
            spec=spec,
            options=options,
        )
        logits.extend(res[s].logits for s in sorted(res))
    _sync(options.device)
    return time.perf_counter() - t, np.concatenate(logits)


def fill_input_cache(
    model, datasets: list, spec: Preprocessing, options: EngineOptions, shard_size: int, root: Path
) -> list:
    """Score once with ``cache_inputs`` so that each shard's decoded inputs are on disk (as
    ``validate score --cache-inputs`` leaves them); returns (cache, ids) per dataset."""
    from validate.scoring.input_cache import DecodedCases, InputCache, input_key

    out = []
    for i, ds in enumerate(datasets):
        n = len(ds)
        cache = InputCache(root, f"site{i}", input_key(preprocessing=spec.key(), shard_size=shard_size))
        ids = [str(j) for j in range(n)]

        def save(s, res, cache=cache, ids=ids, n=n):
            cache.save(s, "bench", ids[s * shard_size : min(n, (s + 1) * shard_size)], res.decoded)

        score_shards(
            model,
            DecodedCases(ds, None, {}, shard_size),
            range((n + shard_size - 1) // shard_size),
            n_cases=n,
            shard_size=shard_size,
            n_outputs=1,
            spec=spec,
            options=options,
            on_shard=save,
        )
        out.append((cache, ids))
    return out


def warm_pass(
    model, datasets: list, caches: list, spec: Preprocessing, options: EngineOptions, shard_size: int
) -> tuple[float, np.ndarray]:
    """The evaluator on a cohort whose decoded inputs are cached: the shard files are read (and
    checked) inside the timing, as a run with ``--cache-inputs`` does; by DataLoader workers when
    ``options.workers`` > 0."""
    from validate.scoring.input_cache import DecodedCases

    _sync(options.device)
    t = time.perf_counter()
    logits = []
    for ds, (cache, ids) in zip(datasets, caches, strict=True):
        n = len(ds)
        shards = range((n + shard_size - 1) // shard_size)
        found = {s: ("bench", ids[s * shard_size : min(n, (s + 1) * shard_size)]) for s in shards}
        res = score_shards(
            model,
            DecodedCases(ds, cache, found, shard_size),
            shards,
            n_cases=n,
            shard_size=shard_size,
            n_outputs=1,
            spec=spec,
            options=options,
        )
        logits.extend(res[s].logits for s in sorted(res))
    _sync(options.device)
    return time.perf_counter() - t, np.concatenate(logits)


def _read_input(path: str, spec: Preprocessing) -> np.ndarray:
    if spec.kind == "volume":
        from validate.scoring.volume_inputs import read_volume_with_stats

        return read_volume_with_stats(path, spec)[0]
    return read_case(path, spec)


def preload(datasets: list, spec: Preprocessing, batch_size: int, device: torch.device, channels_last: bool):
    batches = []
    for ds in datasets:
        # C-contiguous as the evaluator's batches are: np.stack keeps the cases' own layout (an RGB
        # image read as a [C, H, W] view of [H, W, C] would give channels-last batches, which a CPU
        # convolution runs ~15% faster: a ceiling the evaluator's layout never reaches)
        x = torch.from_numpy(np.ascontiguousarray(np.stack([_read_input(p, spec) for p in ds.paths])))
        x = normalise(x, spec).to(device)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        batches.extend(x[i : i + batch_size] for i in range(0, len(x), batch_size))
    return batches


def _options(
    device: torch.device, batch_size: int, workers: int | str, amp: str, device_decode: bool = False
) -> EngineOptions:
    """Engine options for one evaluator variant; workers ``"0-serial"`` is no workers and no read-ahead
    thread (files read between batches: the evaluator before issue 21)."""
    return EngineOptions(
        device=device,
        batch_size=batch_size,
        workers=0 if workers == "0-serial" else int(workers),
        amp=amp,
        channels_last=device.type == "cuda",
        device_decode=device_decode,
        decode_thread=workers != "0-serial",
    )


def compare(
    name: str,
    model,
    datasets: list,
    spec: Preprocessing,
    *,
    device: torch.device,
    batch_size: int,
    amp: str,
    workers_list: list[int],
    repeats: int,
    shard_size: int = 512,
    warm: bool = True,
    device_decode: bool = False,
) -> dict:
    """The evaluator cold (each worker count), cached and (``device_decode``) decoding on the device,
    against the model-only and decode-only limits, all measured in the same interleaved repeats."""
    channels_last = device.type == "cuda"
    n = sum(len(d) for d in datasets)
    cores = available_cpus()
    t0 = time.perf_counter()
    batches = preload(datasets, spec, batch_size, device, channels_last)
    preload_s = time.perf_counter() - t0
    ceiling_pass(model, batches[:2], device, amp)  # warm-up (cudnn autotune, allocator)
    best = {"model": float("inf"), "decode": float("inf"), "cached": float("inf"), "device_decode": float("inf")}
    variants: list[int | str] = [*workers_list, *(["0-serial"] if 0 in workers_list else [])]
    best_eval = {w: float("inf") for w in variants}
    diff = 0.0
    tmp = tempfile.TemporaryDirectory()
    caches = None
    if warm:
        # the first scoring of the cohort, which leaves the decoded inputs behind, decodes as fast as it can
        options = _options(device, batch_size, max(workers_list), amp)
        caches = fill_input_cache(model, datasets, spec, options, shard_size, Path(tmp.name))
    _, want = ceiling_pass(model, batches, device, amp)
    sides: list[tuple[str, Callable[[], tuple[float, np.ndarray | None]]]] = [
        ("model", lambda: ceiling_pass(model, batches, device, amp)),
        ("decode", lambda: (decode_all_cores(datasets, batch_size, cores)[0], None)),
    ]
    sides += [
        (
            f"eval:{w}",
            lambda w=w: evaluator_pass(model, datasets, spec, _options(device, batch_size, w, amp), shard_size),
        )
        for w in variants
    ]
    if device_decode:
        options = _options(device, batch_size, max(workers_list), amp, device_decode=True)
        sides.append(("device_decode", lambda o=options: evaluator_pass(model, datasets, spec, o, shard_size)))
    if caches is not None:
        # reading decoded (memory-mapped) shards is cheap next to decoding: the main process on a
        # CPU; on an accelerator two workers slice the next batches while the current one is scored
        options = _options(device, batch_size, 0 if device.type == "cpu" else 2, amp)
        sides.append(("cached", lambda o=options: warm_pass(model, datasets, caches, spec, o, shard_size)))
    seconds: dict[str, list[float]] = {side: [] for side, _ in sides}
    for r in range(repeats):
        # every other repeat in reverse order: a load that rises or falls during a repeat favours no side
        for side, run in sides if r % 2 == 0 else sides[::-1]:
            t, got = run()
            seconds[side].append(t)
            if got is not None:
                diff = max(diff, float(np.abs(got[:, 0] - want[:, 0]).max()))
    tmp.cleanup()
    batches.clear()  # the preloaded tensors go before the next part
    best.update({side: min(ts) for side, ts in seconds.items() if not side.startswith("eval:")})
    best_eval.update({w: min(seconds[f"eval:{w}"]) for w in variants})
    result = _ratios(n, best, best_eval, device, cores)
    result["paired"] = _paired_ratios(seconds, variants)
    result.update(
        part=name,
        cases=n,
        device=str(device),
        batch_size=batch_size,
        amp=amp,
        max_abs_logit_diff_vs_ceiling=diff,
        serial_decode_cases_per_s=n / preload_s,
        default_workers=default_workers(spec, device, n),
    )
    _print_comparison(name, result)
    return result


def _paired_ratios(seconds: dict[str, list[float]], variants: list) -> dict:
    """The ratios of issue 21 within each repeat, then their median over the repeats: each side is set
    against the limits measured seconds before or after it, under the same load, so a machine shared
    with other work moves both alike (the best-of ratios set the luckiest run of one side against the
    luckiest of the other)."""
    model, decode = np.asarray(seconds["model"]), np.asarray(seconds["decode"])
    ceiling = np.maximum(model, decode)  # seconds of the slower limit, repeat by repeat
    out: dict = {"repeats": len(model)}
    out["cold_over_ceiling"] = {str(w): float(np.median(ceiling / np.asarray(seconds[f"eval:{w}"]))) for w in variants}
    if seconds.get("cached"):
        out["cached_over_model_only"] = float(np.median(model / np.asarray(seconds["cached"])))
    if seconds.get("device_decode"):
        out["device_decode_cold_over_ceiling"] = float(np.median(ceiling / np.asarray(seconds["device_decode"])))
    return out


def _ratios(n: int, best: dict, best_eval: dict, device: torch.device, cores: int) -> dict:
    """Throughputs (cases/s) and the ratios of issue 21 from the best seconds of each side."""
    model, decode = n / best["model"], n / best["decode"]
    ceiling = min(model, decode)
    out: dict = {
        "model_only_cases_per_s": model,
        "decode_only_cases_per_s": decode,
        "decode_processes": cores,
        "ceiling_cases_per_s": ceiling,
        "ceiling_is": "model" if model <= decode else "decode",
        "evaluator": {
            str(w): {"cases_per_s": n / t, "cold_over_ceiling": (n / t) / ceiling} for w, t in best_eval.items()
        },
    }
    if device.type == "cpu":
        # model and decoders take turns on the same cores: per case, their times add
        out["shared_core_bound_cases_per_s"] = 1.0 / (1.0 / model + 1.0 / decode)
        for v in out["evaluator"].values():
            v["cold_over_shared_core_bound"] = v["cases_per_s"] / out["shared_core_bound_cases_per_s"]
    if best["cached"] < float("inf"):
        out["evaluator_inputs_cached"] = {
            "cases_per_s": n / best["cached"],
            "cached_over_model_only": best["model"] / best["cached"],
        }
    if best["device_decode"] < float("inf"):
        out["evaluator_device_decode"] = {
            "cases_per_s": n / best["device_decode"],
            "cold_over_ceiling": (n / best["device_decode"]) / ceiling,
            "over_cpu_decode_only": (n / best["device_decode"]) / decode,
        }
    return out


def _print_comparison(name: str, r: dict) -> None:
    print(f"\n[{name}] {r['cases']} cases, batch {r['batch_size']}, amp {r['amp']}, on {r['device']}")
    print(f"  model only (preloaded tensors)   : {r['model_only_cases_per_s']:10.1f} cases/s")
    print(f"  decode only, {r['decode_processes']:>2} processes     : {r['decode_only_cases_per_s']:10.1f} cases/s")
    print(f"  decode only, 1 process (preload) : {r['serial_decode_cases_per_s']:10.1f} cases/s")
    print(f"  ceiling = min of the two         : {r['ceiling_cases_per_s']:10.1f} cases/s ({r['ceiling_is']})")
    if "shared_core_bound_cases_per_s" in r:
        print(f"  shared-core bound (CPU)          : {r['shared_core_bound_cases_per_s']:10.1f} cases/s")
    print(f"  max |logit - ceiling logit|      : {r['max_abs_logit_diff_vs_ceiling']:.2e}")
    for w, v in r["evaluator"].items():
        mark = "  <- default" if w == str(r["default_workers"]) else ""
        mark += "  (read between batches: before issue 21)" if w == "0-serial" else ""
        shared = (
            f", / shared-core bound {v['cold_over_shared_core_bound']:.3f}"
            if "cold_over_shared_core_bound" in v
            else ""
        )
        print(
            f"  cold, workers={w:<8}          : {v['cases_per_s']:10.1f} cases/s   cold/ceiling "
            f"{v['cold_over_ceiling']:.3f}{shared}{mark}"
        )
    if "evaluator_inputs_cached" in r:
        v = r["evaluator_inputs_cached"]
        print(
            f"  cached (--cache-inputs)          : {v['cases_per_s']:10.1f} cases/s   "
            f"cached/model-only {v['cached_over_model_only']:.3f}"
        )
    if "evaluator_device_decode" in r:
        v = r["evaluator_device_decode"]
        print(
            f"  cold, decoded on the device      : {v['cases_per_s']:10.1f} cases/s   cold/ceiling "
            f"{v['cold_over_ceiling']:.3f}, / CPU decode-only {v['over_cpu_decode_only']:.3f}"
        )
    if "paired" in r:
        v = r["paired"]
        cold = ", ".join(f"workers={w} {x:.3f}" for w, x in v["cold_over_ceiling"].items())
        print(f"  median of {v['repeats']} paired repeats      : cold/ceiling {cold}")
        if "cached_over_model_only" in v:
            print(f"  {'':38s}cached/model-only {v['cached_over_model_only']:.3f}")
        if "device_decode_cold_over_ceiling" in v:
            print(f"  {'':38s}device decode cold/ceiling {v['device_decode_cold_over_ceiling']:.3f}")


# ---- parts -----------------------------------------------------------------------------------------


def part_chest(args, device: torch.device) -> dict:
    from validate.cohort import load_site_manifest
    from validate.protocol import load_protocol
    from validate.scoring.checkpoints import load_checkpoint

    protocol = load_protocol(REPO / "protocols" / "chest.yaml")
    spec = Preprocessing.from_protocol(protocol.input)
    ckpt = load_checkpoint(protocol.resolve(protocol.model.checkpoint), format=protocol.model.format)
    ckpt.prepare(device, channels_last=device.type == "cuda")
    datasets = [ImageCases(load_site_manifest(protocol, s).cases["image_path"].tolist(), spec) for s in protocol.sites]
    workers = sorted({0, 1, 2} | {default_workers(spec, device, 1000)})
    res = compare(
        "chest sample sites (28x28 PNG + DICOM, sample CNN)",
        ckpt,
        datasets,
        spec,
        device=device,
        batch_size=args.batch_size or 128,
        amp=args.amp,
        workers_list=workers,
        repeats=args.repeats,
    )
    # the same sites with the DICOM site left out, to show what DICOM parsing costs
    png_only = [d for d, s in zip(datasets, protocol.sites, strict=True) if s.id != "vendor_b"]
    res["png_only"] = compare(
        "chest PNG sites only",
        ckpt,
        png_only,
        spec,
        device=device,
        batch_size=args.batch_size or 128,
        amp=args.amp,
        workers_list=[0],
        repeats=args.repeats,
    )
    return res


def part_volume(args, device: torch.device) -> dict:
    """The volume sample sites, each read ``--volume-repeat`` times over (200 volumes each pass)."""
    from validate.cohort import load_site_manifest
    from validate.protocol import load_protocol
    from validate.scoring.checkpoints import load_checkpoint

    protocol = load_protocol(REPO / "protocols" / "volume.yaml")
    spec = Preprocessing.from_protocol(protocol.input)
    ckpt = load_checkpoint(protocol.resolve(protocol.model.checkpoint), format=protocol.model.format)
    ckpt.prepare(device, channels_last=False)
    paths = [p for s in protocol.sites for p in load_site_manifest(protocol, s).cases["image_path"].tolist()]
    datasets = [ImageCases(paths * args.volume_repeat, spec)]
    workers = sorted({0, 1, 2} | {default_workers(spec, device, len(paths))})
    return compare(
        "volume sample sites (20^3 CT phantoms: NIfTI, DICOM series, enhanced DICOM; sample 3D CNN)",
        ckpt,
        datasets,
        spec,
        device=device,
        batch_size=args.batch_size or 64,
        amp=args.amp,
        workers_list=workers,
        repeats=args.repeats,
        warm=False,
    )


def part_resnet(args, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = ResNet(args.arch).eval().to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    folder = Path(args.images or (Path(tempfile.gettempdir()) / "validate-bench-png224"))
    unique = make_pngs(
        folder, min(args.n, args.unique), suffix={"png": ".png", "jpeg": ".jpg", "jpeg2000": ".jp2"}[args.format]
    )
    paths = [str(unique[i % len(unique)]) for i in range(args.n)]  # decoded afresh every time
    spec = Preprocessing(
        kind="image", size=(224, 224), channels=3, scale=255.0, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
    )
    ds = ImageCases(paths, spec)
    workers = args.workers if args.workers is not None else sorted({0, default_workers(spec, device, args.n)})
    batch = args.batch_size or (32 if device.type == "cpu" else 128)
    return compare(
        f"{args.arch}-shaped, 3x224x224 {args.format.upper()}, random weights",
        model,
        [ds],
        spec,
        device=device,
        batch_size=batch,
        amp=args.amp,
        workers_list=list(workers),
        repeats=args.repeats,
        device_decode=args.device_decode,
    )


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def memory_child(n: int, work: Path) -> None:
    """Score n chest-like cases end to end (fresh cache) and print the peak RSS in MB."""
    from validate.scoring import score_protocol

    src = sorted((REPO / "sample_sites" / "chest" / "development" / "images").glob("*.png"))
    manifest = work / f"site{n}.csv"
    with open(manifest, "w") as fh:
        fh.write("case_id,patient_id,label,image,sex\n")
        for i in range(n):
            fh.write(f"c{i},p{i},{i % 2},{src[i % len(src)].name},{'FM'[i % 2]}\n")
    protocol = work / f"p{n}.yaml"
    protocol.write_text(
        "name: mem\ntask: binary\nclasses: [normal, pneumonia]\n"
        "input: {kind: image, size: [28, 28], channels: 1, scale: 255.0, mean: [0.5], std: [0.5]}\n"
        f"model: {{checkpoint: {REPO / 'sample_sites/chest/model.pt2'}, format: export}}\n"
        f"sites: [{{id: s, manifest: {manifest}, image_root: {src[0].parent}, role: development}}]\n"
        "attributes: [sex]\n"
    )
    before = _peak_rss_mb()
    result = score_protocol(protocol, out_dir=work / f"out{n}", batch_size=128, workers=0)
    assert result.counts["scored"] == n
    print(json.dumps({"n": n, "peak_rss_mb": _peak_rss_mb(), "rss_before_mb": before}))


def part_memory(args) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (args.memory_n, 10 * args.memory_n):
            run = subprocess.run(
                [sys.executable, __file__, "--memory-child", str(n), tmp], capture_output=True, text=True, check=True
            )
            out[n] = json.loads(run.stdout.strip().splitlines()[-1])
    small, large = out[args.memory_n]["peak_rss_mb"], out[10 * args.memory_n]["peak_rss_mb"]
    print(
        f"\n[memory] peak RSS scoring {args.memory_n} cases: {small:.0f} MB; {10 * args.memory_n} cases: "
        f"{large:.0f} MB; growth x{large / small:.3f} (target < 1.2)"
    )
    return {"part": "memory", "runs": out, "growth": large / small}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--part",
        action="append",
        choices=["chest", "volume", "resnet", "memory"],
        help="which parts (repeatable; default: all)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--arch", default="resnet18", choices=["resnet18", "resnet50"])
    parser.add_argument("--n", type=int, default=256, help="images for the resnet part")
    parser.add_argument("--unique", type=int, default=512, help="distinct PNG files behind the n images")
    parser.add_argument("--images", default=None, help="folder for the generated PNGs (kept between runs)")
    parser.add_argument("--format", default="png", choices=["png", "jpeg", "jpeg2000"], help="resnet part's files")
    parser.add_argument(
        "--device-decode",
        action="store_true",
        help="resnet part: also the evaluator decoding JPEG/JPEG 2000 on the device",
    )
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--workers", type=int, action="append", default=None, help="evaluator workers to try")
    parser.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-n", type=int, default=1000)
    parser.add_argument("--volume-repeat", type=int, default=1, help="passes over the 200 sample volumes")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--memory-child", nargs=2, metavar=("N", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        memory_child(int(args.memory_child[0]), Path(args.memory_child[1]))
        return 0
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    print(
        f"torch {torch.__version__}, device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
        + f", {torch.get_num_threads()} threads, {os.cpu_count()} cpus"
    )
    parts = args.part or ["chest", "volume", "resnet", "memory"]
    results = {"device": str(device), "torch": torch.__version__}
    for part in parts:
        if part == "chest":
            results["chest"] = part_chest(args, device)
        elif part == "volume":
            results["volume"] = part_volume(args, device)
        elif part == "resnet":
            results["resnet"] = part_resnet(args, device)
        elif part == "memory":
            results["memory"] = part_memory(args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
