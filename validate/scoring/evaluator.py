"""The batch evaluator: cases in, logits out, as fast as the model allows.

One loop per site over batches that never cross a shard boundary (so each finished shard can be
cached at once). Decoding runs in DataLoader workers when that helps, raw pixels go to the device
(pinned memory, non-blocking copies on CUDA) and are normalised there; the model runs under
``torch.inference_mode`` with optional autocast and channels-last; a batch's outputs are copied back
only after the next batch has been launched, so the accelerator does not wait for the host.

Failures never stop a site: a case that cannot be read, or whose output is NaN/Inf, is returned as a
failure row (position, reason, stage) and its logits are NaN.
"""

from __future__ import annotations

import contextlib
import math
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from validate.errors import InputError
from validate.machine import available_cpus
from validate.scoring import device_decode
from validate.scoring.inputs import (
    IMAGE_STAT_COLUMNS,
    CaseError,
    Preprocessing,
    finite_rows,
    normalise,
    read_case_with_stats,
)
from validate.scoring.volume_inputs import ACQUISITION_COLUMNS, read_volume_with_stats

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# Above this many pixels per case, decoding costs about as much as a small model's forward pass and
# workers pay off even on a CPU; below it, on 2 cores, the worker processes only take cores from
# the model (measured with benchmarks/bench_scoring.py, see the report).
SMALL_IMAGE_PIXELS = 64 * 64


# ---- device and defaults -------------------------------------------------------------------------


def resolve_device(name: str = "auto", *, local_rank: int | None = None) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit device must exist."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank if local_rank is not None else torch.cuda.current_device())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise InputError(
            f"unknown device {name!r}", field="--device", expected="auto, cpu, cuda, cuda:N or mps"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(
                "CUDA is not available on this machine",
                field="--device",
                expected="auto or cpu (or a machine with an NVIDIA GPU)",
            )
        if device.index is None:
            device = torch.device("cuda", local_rank if local_rank is not None else torch.cuda.current_device())
        if device.index >= torch.cuda.device_count():
            raise InputError(
                f"no CUDA device {device.index} (this machine has {torch.cuda.device_count()})",
                field="--device",
                expected=f"cuda:0 .. cuda:{torch.cuda.device_count() - 1}",
            )
    elif device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError("MPS is not available on this machine", field="--device", expected="auto or cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise InputError(
            f"unsupported device type {device.type!r}", field="--device", expected="auto, cpu, cuda or mps"
        )
    return device


def default_workers(spec: Preprocessing, device: torch.device, n_cases: int) -> int:
    """DataLoader workers when ``--workers`` is not given.

    Tabular inputs are sliced from memory: no workers. On a CPU device the model and the decoders
    share the cores; with 2 cores or small images (<= 64x64) worker processes lose more to start-up
    and contention than they gain, so decoding stays in the main process. With an accelerator (or
    many cores and large images) decoding overlaps the forward pass in up to 16 workers, keeping one
    core for the main process. A volume's size is its voxel count (D x H x W).
    """
    if spec.kind == "tabular" or n_cases < 64:
        return 0
    cpus = available_cpus()
    pixels = math.prod(spec.size) if spec.size else 0  # a volume's voxels: each costs a decode
    if device.type == "cpu":
        if cpus <= 2 or pixels <= SMALL_IMAGE_PIXELS:
            return 0
        return min(4, cpus // 2)
    if pixels <= SMALL_IMAGE_PIXELS:
        return max(0, min(2, cpus - 1))
    # a 224x224 PNG costs ~1-2 ms of one core to decode; a ResNet-50 on an H100 takes ~0.1-0.4 ms per
    # image, so every spare core is needed to keep up
    return max(0, min(16, cpus - 1))


# ---- datasets ------------------------------------------------------------------------------------


class ImageCases(torch.utils.data.Dataset):
    """Image-like cases; indexed by a list of positions, it returns that whole batch (see collate).

    Besides the pixels, each read case gives its image statistics (``stats``: float64
    ``[n_ok, len(IMAGE_STAT_COLUMNS)]``, taken from the same decode before resizing) and its DICOM
    equipment (``equipment``: one ``(manufacturer, model)`` pair per read case, ``""`` if none).
    Volumes (``kind: volume``) also give their ``acquisition`` row per read case
    (:data:`validate.scoring.volume_inputs.ACQUISITION_COLUMNS`).
    """

    def __init__(self, paths: Sequence[str], spec: Preprocessing):
        self.paths = list(paths)
        self.spec = spec
        # set by the evaluator when the device decodes JPEG / JPEG 2000: such cases are only read as
        # bytes here, into batch["encoded"] (see validate.scoring.device_decode.complete_batch)
        self.defer_to_device = False

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, positions: Sequence[int]) -> dict:
        ok, arrays, failed, stats, equipment = [], [], [], [], []
        volume = self.spec.kind == "volume"
        acquisition: list[tuple[str, ...]] = []
        encoded: list[tuple[int, str, Any]] = []
        for pos in positions:
            if self.defer_to_device and device_decode.on_device(self.paths[pos]):
                encoded.append(self._encoded(pos))
                continue
            try:
                arr, values, equip, acq = self._read(self.paths[pos])
                if volume:
                    acquisition.append(acq)
                arrays.append(arr)
                stats.append(values)
                equipment.append(equip)
                ok.append(pos)
            except CaseError as exc:
                failed.append((int(pos), exc.reason, exc.stage))
            except Exception as exc:  # a reader bug must not stop the site either
                failed.append((int(pos), f"{type(exc).__name__}: {exc}", "read"))
        x = None
        if arrays:
            if all(a.dtype == np.uint8 for a in arrays):
                x = torch.from_numpy(np.stack(arrays))
            else:
                x = torch.from_numpy(np.stack([a.astype(np.float32, copy=False) for a in arrays]))
        batch: dict[str, Any] = {
            "positions": torch.as_tensor(list(positions), dtype=torch.int64),
            "ok": torch.as_tensor(ok, dtype=torch.int64),
            "x": x,
            "failed": failed,
            "stats": torch.from_numpy(np.stack(stats)) if stats else None,
            "equipment": equipment,
        }
        if volume:
            batch["acquisition"] = acquisition
        if encoded:
            batch["encoded"] = encoded
        return batch

    def _encoded(self, pos: int) -> tuple[int, str, Any]:
        """A case left to the device decoder: (position, path, its bytes or the reading failure)."""
        path = self.paths[pos]
        if not path:
            return int(pos), path, CaseError("no image path for this case")
        try:
            return int(pos), path, device_decode.read_bytes(path)
        except CaseError as exc:
            return int(pos), path, exc

    def _read(self, path: str) -> tuple[np.ndarray, np.ndarray | None, tuple[str, str], tuple[str, ...]]:
        """One case: its input, image statistics, equipment and (volumes) acquisition row."""
        if self.spec.kind == "volume":
            return read_volume_with_stats(path, self.spec)
        arr, values, equip = read_case_with_stats(path, self.spec)
        return arr, values, equip, ()


class TabularCases(torch.utils.data.Dataset):
    """Feature rows already in memory (``[N, F]`` float32, NaN for missing); bad rows are failures."""

    def __init__(self, features: np.ndarray, bad: dict[int, str] | None = None):
        self.features = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        self.bad = dict(bad or {})

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, positions: Sequence[int]) -> dict:
        pos = torch.as_tensor(list(positions), dtype=torch.int64)
        failed = [(int(p), self.bad[int(p)], "read") for p in pos.tolist() if int(p) in self.bad]
        ok = pos if not failed else torch.as_tensor([p for p in pos.tolist() if p not in self.bad], dtype=torch.int64)
        return {"positions": pos, "ok": ok, "x": self.features[ok] if len(ok) else None, "failed": failed}


def shard_batches(shards: Sequence[int], n_cases: int, shard_size: int, batch_size: int) -> list[list[int]]:
    """Batches of positions for the given shards, none crossing a shard boundary."""
    out = []
    for s in shards:
        start, stop = s * shard_size, min(n_cases, (s + 1) * shard_size)
        for b in range(start, stop, batch_size):
            out.append(list(range(b, min(stop, b + batch_size))))
    return out


# ---- results -------------------------------------------------------------------------------------


@dataclass
class ShardResult:
    """Scores of one shard: ``positions`` (case rows in the site), ``logits`` (NaN where failed).

    Image inputs also carry, row for row with ``positions``, ``image_stats`` (float64
    ``[n, len(IMAGE_STAT_COLUMNS)]``, NaN where the case could not be read) and ``equipment`` (str
    ``[n, 2]``: DICOM manufacturer and model, ``""`` where unknown); both are None for tabular inputs.
    Volumes also carry ``acquisition`` (str ``[n, len(ACQUISITION_COLUMNS)]``, ``""`` where unknown;
    see :mod:`validate.scoring.volume_inputs`); None for other inputs.
    """

    positions: np.ndarray
    logits: np.ndarray
    failures: list[tuple[int, str, str]] = field(default_factory=list)  # (position, reason, stage)
    image_stats: np.ndarray | None = None
    equipment: np.ndarray | None = None
    acquisition: np.ndarray | None = None
    decoded: Any = None  # the shard's decoded inputs when the dataset keeps them (input cache)


@dataclass
class EngineOptions:
    device: torch.device
    batch_size: int = 64
    workers: int = 0
    amp: str = "none"
    channels_last: bool | None = None  # None: on CUDA for 4-D inputs
    progress: bool = False
    # JPEG / JPEG 2000 decoded on the device (validate.scoring.device_decode): None on CUDA where
    # nvImageCodec is installed, True forced (on a CPU its CPU codecs), False never
    device_decode: bool | None = None
    # with no worker processes, files are read in one background thread while the model runs (the
    # decoders' Python holds the GIL, the model's kernels release it); False reads between batches
    decode_thread: bool = True


class Progress:
    """``site: 1200/5000 cases, 850 cases/s`` on stderr, rewritten in place; silent when not a terminal."""

    def __init__(self, site: str, total: int, enabled: bool):
        self.site, self.total, self.enabled = site, total, enabled and total > 0
        self.done = 0
        self.start = time.perf_counter()
        self.last = 0.0

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.last < 0.2 and self.done < self.total:
            return
        self.last = now
        rate = self.done / max(now - self.start, 1e-9)
        sys.stderr.write(f"\r{self.site}: {self.done}/{self.total} cases, {rate:,.0f} cases/s")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


def make_loader(
    dataset: torch.utils.data.Dataset, batches: list[list[int]], *, workers: int, pin_memory: bool
) -> torch.utils.data.DataLoader:
    """A loader that hands each batch's positions to the dataset in one call (no per-item collate)."""
    kwargs: dict[str, Any] = {}
    if workers > 0:
        kwargs.update(prefetch_factor=2, worker_init_fn=_quiet_worker, persistent_workers=False)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        sampler=batches,
        num_workers=workers,
        pin_memory=pin_memory,
        collate_fn=_as_is,
        **kwargs,
    )


class ReadAhead:
    """Batches of a loader produced by one background thread, at most ``depth`` ahead, in order.

    Without DataLoader workers (the default on a CPU with few cores or small images, where worker
    processes cost more than they give), reading batch k+1 overlaps scoring batch k: decoding small
    files is mostly Python (it holds the GIL), the model's kernels release it, so the two share the
    cores instead of taking turns. An exception in the thread is raised in the consumer; closing the
    iteration early stops the thread."""

    def __init__(self, loader: Iterable[dict], depth: int = 2):
        self.loader, self.depth = loader, depth

    def __iter__(self) -> Iterator[dict]:
        items: queue.Queue = queue.Queue(self.depth)
        stop = threading.Event()
        done = object()

        def put(item: Any) -> bool:
            while not stop.is_set():
                try:
                    items.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for batch in self.loader:
                    if not put(batch):
                        return
                put(done)
            except BaseException as exc:  # handed to the consumer, raised there
                put(exc)

        thread = threading.Thread(target=produce, name="validate-read-ahead", daemon=True)
        thread.start()
        try:
            while (item := items.get()) is not done:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            thread.join()


def _as_is(batch: dict) -> dict:
    # the dataset already returns whole batches of tensors; the default conversion would walk every
    # case's equipment strings and failure tuples (~30 us per case, as much as a small model's forward)
    return batch


def _quiet_worker(_: int) -> None:
    # a decoding worker needs no intra-op threads of its own: they would only fight the model's
    torch.set_num_threads(1)


def run_batches(
    model: Callable[[torch.Tensor], torch.Tensor],
    dataset: torch.utils.data.Dataset,
    batches: list[list[int]],
    spec: Preprocessing,
    options: EngineOptions,
    *,
    input_device: torch.device | None = None,
    to_logits: Callable[[np.ndarray], np.ndarray] = lambda v: v,
    progress: Progress | None = None,
) -> Iterator[tuple[list[int], np.ndarray, list, dict]]:
    """Score ``batches`` of ``dataset``; yield ``(positions, logits, failures, extras)`` per batch, in
    order. ``extras`` holds, for image datasets, ``image_stats`` and ``equipment`` row for row with
    ``positions`` (see :class:`ShardResult`); it is empty for tabular ones.

    ``model`` takes a normalised float32 batch on ``input_device`` (default: the options' device);
    ``to_logits`` maps the raw output ``[n, k]`` to logit columns (and raises InputError when the
    shape does not fit the protocol).
    """
    device = options.device
    input_device = input_device or device
    cuda = input_device.type == "cuda"
    amp_dtype = AMP_DTYPES[options.amp]
    # channels-last pays on CUDA convolutions; a host-side runtime (ONNX on the CPU) wants plain layout
    channels_last = (options.channels_last if options.channels_last is not None else True) and cuda
    decoder = _device_decoder(dataset, spec, options, input_device)
    loader: Iterable[dict] = make_loader(dataset, batches, workers=options.workers, pin_memory=cuda)
    if options.workers == 0 and options.decode_thread and _image_cases(dataset) is not None:
        loader = ReadAhead(loader)
    keep_inputs = getattr(dataset, "keep_inputs", False)
    pending = None
    for batch in loader:
        out = None
        if decoder is not None and "encoded" in batch:
            batch = device_decode.complete_batch(batch, decoder, decoder_reader(dataset), input_device)
        x = batch["x"]
        if keep_inputs and not batch.get("from_cache"):
            batch["decoded"] = (batch["ok"].tolist(), x.cpu().numpy() if x is not None else None)
        if x is not None and len(x):
            # contexts per batch, not around the generator: they are thread-wide and must not leak
            # into the caller's code between yields
            autocast = (
                torch.autocast(device_type=device.type, dtype=amp_dtype)
                if amp_dtype is not None
                else contextlib.nullcontext()
            )
            with torch.inference_mode(), autocast:
                x = x.to(input_device, non_blocking=cuda)
                x = normalise(x, spec)
                if channels_last and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                out = _to_host(model(x))
        if pending is not None:  # the previous batch is read back only once this one is queued
            yield _finish(*pending, to_logits, progress)
        pending = (batch, out)
    if pending is not None:
        yield _finish(*pending, to_logits, progress)


def _image_cases(dataset: Any) -> ImageCases | None:
    """The ImageCases that reads a dataset's files (itself, or the one an input cache falls back on)."""
    inner = getattr(dataset, "cases", dataset)
    return inner if isinstance(inner, ImageCases) else None


def _device_decoder(
    dataset: Any, spec: Preprocessing, options: EngineOptions, device: torch.device
) -> device_decode.DeviceDecoder | None:
    """The device decoder for this run, with the dataset told to leave JPEG / JPEG 2000 to it (before
    the loader's workers start); None where the device does not decode."""
    cases = _image_cases(dataset)
    if cases is None or not device_decode.wanted(options.device_decode, device, spec):
        if cases is not None:
            cases.defer_to_device = False
        return None
    cases.defer_to_device = True
    return device_decode.DeviceDecoder(device, spec)


def decoder_reader(dataset: Any) -> Callable[[str], tuple]:
    """The CPU reader for a case the device decoder does not take."""
    cases = _image_cases(dataset)
    assert cases is not None
    return cases._read


def _to_host(out: torch.Tensor) -> tuple[torch.Tensor, Any | None]:
    """Start copying a batch's outputs to the host. On CUDA the copy goes into pinned memory behind the
    batch's kernels, with an event to wait on, so the next batch's kernels can be queued meanwhile."""
    out = out.detach()
    if not out.is_cuda:
        return out, None
    host = torch.empty(out.shape, dtype=torch.float32, pin_memory=True)
    host.copy_(out.float(), non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    return host, event


def _finish(
    batch: dict, out: tuple[torch.Tensor, Any] | None, to_logits: Callable, progress: Progress | None
) -> tuple[list[int], np.ndarray, list, dict]:
    positions = batch["positions"].tolist()
    failures = list(batch["failed"])
    ok = batch["ok"].tolist()
    logits = None
    if out is not None:
        host, event = out
        if event is not None:
            event.synchronize()
        values = host.float().numpy()
        values = values.reshape(len(values), -1) if values.ndim != 2 else values
        if len(values) != len(ok):
            raise InputError(
                f"the model returned {len(values)} rows for a batch of {len(ok)} cases",
                field="model.checkpoint",
                expected="one output row per input case",
            )
        logits = to_logits(values)
        finite = finite_rows(logits)
        for i in np.flatnonzero(~finite):
            failures.append((ok[i], "model output is NaN or Inf", "score"))
        logits = np.where(finite[:, None], logits, np.nan)
    width = logits.shape[1] if logits is not None else None
    full = np.full((len(positions), width or 1), np.nan, dtype=np.float64)
    if logits is not None:
        where = {p: i for i, p in enumerate(positions)}
        full[[where[p] for p in ok]] = logits
    if progress is not None:
        progress.update(len(positions))
    extras = _case_extras(batch, positions, ok)
    if "decoded" in batch:
        extras["decoded"] = batch["decoded"]
    return positions, full, failures, extras


def _case_extras(batch: dict, positions: list[int], ok: list[int]) -> dict:
    """The batch's per-case image statistics and equipment, row for row with ``positions``."""
    if "equipment" not in batch:  # tabular: nothing but the features, which the manifest holds
        return {}
    stats = np.full((len(positions), len(IMAGE_STAT_COLUMNS)), np.nan, dtype=np.float64)
    equipment = np.full((len(positions), 2), "", dtype=object)
    if ok:
        index = {p: i for i, p in enumerate(positions)}
        rows = [index[p] for p in ok]
        if batch.get("stats") is not None:
            stats[rows] = np.asarray(batch["stats"], dtype=np.float64)
        equipment[rows] = np.asarray([list(e) for e in batch["equipment"]], dtype=object).reshape(len(ok), 2)
    extras = {"image_stats": stats, "equipment": equipment}
    if "acquisition" in batch:  # volumes
        acquisition = np.full((len(positions), len(ACQUISITION_COLUMNS)), "", dtype=object)
        if ok and batch["acquisition"]:
            acquisition[rows] = np.asarray([list(a) for a in batch["acquisition"]], dtype=object).reshape(len(ok), -1)
        extras["acquisition"] = acquisition
    return extras


def score_shards(
    model: Callable[[torch.Tensor], torch.Tensor],
    dataset: torch.utils.data.Dataset,
    shards: Sequence[int],
    *,
    n_cases: int,
    shard_size: int,
    n_outputs: int,
    spec: Preprocessing,
    options: EngineOptions,
    input_device: torch.device | None = None,
    to_logits: Callable[[np.ndarray], np.ndarray] = lambda v: v,
    progress: Progress | None = None,
    on_shard: Callable[[int, ShardResult], None] | None = None,
) -> dict[int, ShardResult]:
    """Score whole shards; ``on_shard(index, result)`` runs as soon as each shard is complete."""
    check_declared_shapes(model, spec, to_logits)
    shards = sorted(shards)
    batches = shard_batches(shards, n_cases, shard_size, options.batch_size)
    results: dict[int, ShardResult] = {}
    current: int | None = None
    parts: list[tuple[list[int], np.ndarray, list, dict]] = []

    def close(s: int) -> None:
        positions = np.asarray([p for ps, _, _, _ in parts for p in ps], dtype=np.int64)
        logits = np.concatenate([_width(lg, n_outputs) for _, lg, _, _ in parts]) if parts else np.zeros((0, n_outputs))
        failures = [f for _, _, fs, _ in parts for f in fs]
        extras = {
            k: np.concatenate([ex[k] for _, _, _, ex in parts])
            for k in ("image_stats", "equipment", "acquisition")
            if parts and all(k in ex for _, _, _, ex in parts)
        }
        res = ShardResult(positions=positions, logits=logits, failures=sorted(failures), **extras)
        if parts and all("decoded" in ex for _, _, _, ex in parts) and res.image_stats is not None:
            from validate.scoring.input_cache import collect

            res.decoded = collect(
                [ex["decoded"] for _, _, _, ex in parts],
                res.image_stats,
                res.equipment,
                positions,
                res.failures,
                acquisition=res.acquisition,
            )
        results[s] = res
        if on_shard is not None:
            on_shard(s, res)

    for positions, logits, failures, extras in run_batches(
        model, dataset, batches, spec, options, input_device=input_device, to_logits=to_logits, progress=progress
    ):
        s = positions[0] // shard_size
        if current is not None and s != current:
            close(current)
            parts = []
        current = s
        parts.append((positions, logits, failures, extras))
    if current is not None:
        close(current)
    return results


def _shape_text(shape: Sequence[int | None]) -> str:
    return (
        "["
        + ", ".join("N" if i == 0 and d is None else ("?" if d is None else str(d)) for i, d in enumerate(shape))
        + "]"
    )


def check_declared_shapes(model: Any, spec: Preprocessing, to_logits: Callable[[np.ndarray], np.ndarray]) -> None:
    """A checkpoint made for another protocol is bad input (exit 2), found before any case is read.

    Where the file declares its shapes (a torch.export program, an ONNX graph: ``input_shape`` and
    ``output_shape`` on the model, None for a dynamic dimension), the input must be the protocol's
    ``[N, *case_shape]`` (``[N, features]`` for tabular input, ``[N, channels, height, width]`` for
    images) and the output width must be one ``to_logits`` accepts for the task's classes. The error
    names both shapes, so a swapped checkpoint reads as such rather than as a crash inside the model.
    """
    declared_in = getattr(model, "input_shape", None)
    declared_out = getattr(model, "output_shape", None)
    try:
        case_shape = tuple(spec.case_shape)
    except (AssertionError, TypeError):
        return  # the protocol's input has no fixed shape (an array without size): the first batch tells
    given = (None, *case_shape)
    path = getattr(model, "path", None)
    if declared_in is not None:
        fits = len(declared_in) == len(given) and all(
            d is None or d == g for d, g in zip(declared_in[1:], given[1:], strict=True)
        )
        if not fits:
            what = (
                f"{len(spec.features)} input.features"
                if spec.kind == "tabular"
                else f"{spec.kind} input of {spec.channels} channel(s) at {'x'.join(map(str, case_shape[1:]))}"
            )
            returns = f" and returns {_shape_text(declared_out)}" if declared_out else ""
            widths = " or ".join(f"[N, {k}]" for k in _accepted_widths(to_logits))
            raise InputError(
                f"the model takes input {_shape_text(declared_in)}{returns}, but this protocol gives it "
                f"{_shape_text(given)} ({what}) and reads {widths or 'its output'} for its classes: "
                "the checkpoint was made for another protocol",
                file=path,
                field="model.checkpoint",
                expected=f"a model taking {_shape_text(given)}",
            )
    if declared_out is not None and len(declared_out) == 2 and declared_out[1] is not None:
        try:
            to_logits(np.zeros((1, declared_out[1])))
        except InputError as exc:
            raise InputError(
                f"the model returns {_shape_text(declared_out)}: {exc.message}",
                file=path,
                field="model.checkpoint",
                expected=exc.expected,
            ) from None


def _accepted_widths(to_logits: Callable[[np.ndarray], np.ndarray], most: int = 1024) -> list[int]:
    """The output widths the protocol's task accepts (binary: 1 or 2; K classes: K)."""
    widths = []
    for k in range(1, most + 1):
        try:
            to_logits(np.zeros((1, k)))
        except InputError:
            continue
        widths.append(k)
    return widths


def _width(logits: np.ndarray, n_outputs: int) -> np.ndarray:
    # a batch in which every case failed carries one NaN column; give it the model's width
    if logits.shape[1] == n_outputs:
        return logits
    return np.full((len(logits), n_outputs), np.nan)
