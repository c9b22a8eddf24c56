"""Checkpoints: detect the format, load it safely, and call it on a batch.

Formats (the protocol's ``model.format``; ``auto`` detects from the file):

- ``export``: a ``torch.export`` program (``.pt2``), loaded with ``torch.export.load``.
- ``torchscript``: a TorchScript archive, ``torch.jit.load``.
- ``state_dict``: weights only (``.pt``/``.pth`` saved by ``torch.save``, or ``.safetensors``) plus
  the factory the protocol names (``model.factory: module:function``), imported from
  ``model.factory_path`` and from nowhere else.
- ``onnx``: an ONNX graph run by onnxruntime (CUDA execution provider when asked for and present).
- ``predictions``: a predictions table made elsewhere (``.parquet``/``.csv``): scoring is skipped.

Safety: a checkpoint never runs code. ``torch.load`` runs only with ``weights_only=True``; a pickle
that needs code to load (a whole pickled ``nn.Module``, a custom class) is refused with an
explanation. A ``.pt2`` is inspected before torch reads it (:mod:`validate.scoring.archive`): torch's
own loader would unpickle some entries without restriction and eval or exec some strings of the
graph, so anything beyond tensors and a graph of operators is refused, naming the archive entry.
TorchScript runs no Python (its pickles go through the C++ unpickler, which builds only tensors and
TorchScript types). Nothing is imported that the protocol did not name: the factory module of a state
dict (``model.factory``) is code the user chose to run. Every error names the checkpoint file and its
format.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import logging
import pickle
import re
import sys
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from validate.errors import InputError
from validate.io import sha256_file
from validate.scoring.archive import ArchiveRefused, inspect_export_archive

FORMATS = ("export", "torchscript", "state_dict", "onnx", "predictions")
FORMAT_NAMES = {
    "export": "torch.export program",
    "torchscript": "TorchScript",
    "state_dict": "state dict",
    "onnx": "ONNX",
    "predictions": "predictions file",
}
PREDICTION_SUFFIXES = (".parquet", ".csv")
# wrappers people put around a state dict (Lightning, training scripts)
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "weights", "net")


def _error(path: Path, fmt: str | None, message: str, expected: str | None = None) -> InputError:
    what = f"{FORMAT_NAMES.get(fmt, fmt)} checkpoint" if fmt else "checkpoint"
    return InputError(f"{what}: {message}", file=path, field="model.checkpoint", expected=expected)


# ---- format detection ----------------------------------------------------------------------------


def detect_format(path: Path) -> str | None:
    """The format a file's contents (then its name) say it has; None if neither says."""
    suffix = path.suffix.lower()
    if suffix in PREDICTION_SUFFIXES:
        return "predictions"
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".safetensors":
        return "state_dict"
    with open(path, "rb") as fh:
        head = fh.read(16)
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except zipfile.BadZipFile:
            names = []
        # torch.export writes archive_format and models/*.json; TorchScript writes code/ and constants.pkl;
        # torch.save writes only data.pkl and tensor storages
        if any(
            n.endswith("/archive_format") or n == "archive_format" or ("/models/" in n and n.endswith(".json"))
            for n in names
        ):
            return "export"
        if any("/code/" in n or n.endswith("constants.pkl") for n in names):
            return "torchscript"
        if any(n.endswith("data.pkl") for n in names):
            return "state_dict"
    if head.startswith(b"PAR1"):
        return "predictions"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (1 << 30):
        return "state_dict"  # safetensors: little-endian header length, then a JSON header
    if head[:1] == b"\x80":
        return "state_dict"  # a legacy (non-zip) torch.save pickle
    if suffix == ".pt2":
        return "export"
    return None


# ---- the loaded model ----------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """A loaded checkpoint: call it on a float32 batch; ``None`` model for a predictions file."""

    path: Path
    format: str
    sha256: str
    model: Any = None
    static_batch: int | None = None  # a graph traced with a fixed batch size is fed in chunks of it
    input_device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # the shapes the file declares for its one input and its (first) output, None for a dynamic
    # dimension; None where the format does not say (TorchScript, a factory's module)
    input_shape: tuple[int | None, ...] | None = None
    output_shape: tuple[int | None, ...] | None = None
    _onnx_input: str | None = None
    _onnx_dtype: Any = None

    @property
    def describe(self) -> str:
        return f"{FORMAT_NAMES[self.format]} {self.path.name} (sha256 {self.sha256[:12]})"

    def prepare(self, device: torch.device, *, channels_last: bool = False) -> None:
        """Move the model to ``device`` (ONNX: choose the execution provider) in inference mode."""
        if self.format == "onnx":
            self._prepare_onnx(device)
            return
        if self.model is None:
            return
        try:
            self.model = self.model.to(device)
        except Exception as exc:
            raise _error(
                self.path, self.format, f"could not be moved to {device}: {type(exc).__name__}: {exc}"
            ) from None
        if channels_last:
            try:
                self.model = self.model.to(memory_format=torch.channels_last)
            except Exception:  # a module without 4-D weights, or a graph that cannot: contiguous is fine
                pass
        if self.format != "export":  # exported programs carry their mode from export time
            self.model.eval()
        self.input_device = device

    def _prepare_onnx(self, device: torch.device) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        providers: list[Any] = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in available:
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(self.path), sess_options=options, providers=providers)
        except Exception as exc:
            raise _error(self.path, "onnx", f"onnxruntime could not load it: {exc}") from None
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise _error(self.path, "onnx", f"the graph has {len(inputs)} inputs", expected="exactly one input")
        dim0 = inputs[0].shape[0] if inputs[0].shape else None
        self.static_batch = dim0 if isinstance(dim0, int) and dim0 > 0 else None
        self._onnx_input = inputs[0].name
        self.input_shape = _declared_shape(inputs[0].shape)
        outputs = session.get_outputs()
        self.output_shape = _declared_shape(outputs[0].shape) if outputs else None
        self._onnx_dtype = np.float16 if inputs[0].type == "tensor(float16)" else np.float32
        self.model = session
        self.input_device = torch.device("cpu")  # onnxruntime copies host arrays to its device itself

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.static_batch and x.shape[0] != self.static_batch:
            return self._chunked(x)
        if self.format == "onnx":
            out = self.model.run(
                None, {self._onnx_input: x.detach().cpu().numpy().astype(self._onnx_dtype, copy=False)}
            )
            return torch.from_numpy(np.asarray(out[0], dtype=np.float32))
        out = self.model(x)
        if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise _error(
                self.path,
                self.format,
                f"the model returned {type(out).__name__}",
                expected="a tensor of logits or probabilities",
            )
        return out

    def _chunked(self, x: torch.Tensor) -> torch.Tensor:
        b = self.static_batch
        outs = []
        for start in range(0, x.shape[0], b):
            part = x[start : start + b]
            n = part.shape[0]
            if n < b:  # pad the last chunk to the traced batch size, then drop the padding
                pad = part.new_zeros((b - n,) + tuple(part.shape[1:]))
                part = torch.cat([part, pad])
            saved, self.static_batch = self.static_batch, None
            try:
                outs.append(self(part)[:n])
            finally:
                self.static_batch = saved
        return torch.cat(outs)


# ---- loading -------------------------------------------------------------------------------------


def load_checkpoint(
    path: str | Path, *, format: str = "auto", factory: str | None = None, factory_path: str | Path | None = None
) -> Checkpoint:
    """Load a checkpoint on the CPU; see the module docstring for formats and safety.

    ``factory``/``factory_path`` are the protocol's ``model.factory`` ("module:function") and the
    folder its module is imported from (already resolved against the protocol file).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(
            "checkpoint file not found",
            file=path,
            field="model.checkpoint",
            expected="a .pt2, TorchScript, .pt/.pth/.safetensors, .onnx or predictions file",
        )
    if path.is_dir():
        raise InputError("checkpoint is a folder", file=path, field="model.checkpoint", expected="a file")
    detected = detect_format(path)
    if format not in ("auto", *FORMATS):
        raise _error(path, None, f"unknown format {format!r}", expected=f"auto or one of {', '.join(FORMATS)}")
    if format == "auto":
        if detected is None:
            raise _error(
                path,
                None,
                "cannot tell its format from its contents or name",
                expected=f"model.format set to one of {', '.join(FORMATS)}",
            )
        fmt = detected
    else:
        fmt = format
        if detected is not None and detected != fmt:
            raise _error(
                path,
                fmt,
                f"model.format says {fmt} ({FORMAT_NAMES[fmt]}) but the file is a {FORMAT_NAMES[detected]}",
                expected=f"model.format: {detected} (or auto)",
            )
    digest = sha256_file(path)
    ckpt = Checkpoint(path=path, format=fmt, sha256=digest)
    if fmt == "predictions":
        return ckpt
    if fmt == "export":
        ckpt.model, ckpt.static_batch, ckpt.input_shape, ckpt.output_shape = _load_export(path)
    elif fmt == "torchscript":
        # TorchScript runs no Python: its code/ is TorchScript, and its pickles go through the C++
        # unpickler, which builds only tensors and TorchScript types (a Python global is "Unknown type name")
        try:
            with _torch_logs_captured():
                ckpt.model = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise _error(path, fmt, f"torch.jit.load failed: {type(exc).__name__}: {_first_line(exc)}") from None
    elif fmt == "state_dict":
        ckpt.model = _load_state_dict_model(path, factory, factory_path)
    elif fmt == "onnx":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise _error(path, fmt, "onnxruntime is not installed", expected="pip install onnxruntime") from None
    return ckpt


def _load_export(path: Path) -> tuple[Any, int | None, tuple | None, tuple | None]:
    """The program's module, its static batch size (None if dynamic) and its declared input/output shapes."""
    _inspect_export(path)
    try:
        with _torch_logs_captured():  # torch logs a traceback itself before raising; the message is ours
            program = torch.export.load(str(path))
    except Exception as exc:
        raise _error(path, "export", f"torch.export.load failed: {type(exc).__name__}: {_first_line(exc)}") from None
    input_shape, output_shape = _export_shapes(program)
    static = input_shape[0] if input_shape else None  # exported without a dynamic batch dimension
    try:
        with _torch_logs_captured():
            module = program.module()
    except Exception as exc:
        raise _error(
            path, "export", f"the exported program could not be rebuilt: {type(exc).__name__}: {_first_line(exc)}"
        ) from None
    return module, static, input_shape, output_shape


def _export_shapes(program: Any) -> tuple[tuple | None, tuple | None]:
    """The shapes (None for a symbolic dimension) of the first user input and the first user output."""

    def shape_of(node: Any) -> tuple | None:
        val = getattr(node, "meta", {}).get("val")
        if not isinstance(val, torch.Tensor):
            return None
        return tuple(int(d) if isinstance(d, int) else None for d in val.shape)

    try:
        signature = program.graph_signature
        user_inputs = list(signature.user_inputs)
        user_outputs = list(signature.user_outputs)
        nodes = {n.name: n for n in program.graph.nodes}
        first_in = nodes.get(user_inputs[0]) if user_inputs else None
        first_out = nodes.get(user_outputs[0]) if user_outputs else None
        return (
            shape_of(first_in) if first_in is not None else None,
            shape_of(first_out) if first_out is not None else None,
        )
    except Exception:  # metadata is a convenience: without it the first batch tells
        return None, None


def _declared_shape(dims: Any) -> tuple[int | None, ...] | None:
    if not isinstance(dims, (list, tuple)):
        return None
    return tuple(d if isinstance(d, int) and d > 0 else None for d in dims)


def _inspect_export(path: Path) -> None:
    """Refuse, before torch reads it, a .pt2 that carries anything that could run code (see
    :mod:`validate.scoring.archive`), naming the archive entry; an empty or cut file is named as such."""
    if path.stat().st_size == 0:
        raise _error(path, "export", "the file is empty", expected="a .pt2 written by torch.export.save")
    try:
        inspect_export_archive(path, load_restricted=_load_weights_only)
    except zipfile.BadZipFile as exc:
        raise _error(
            path,
            "export",
            f"not a readable zip archive, so not a .pt2 (truncated or damaged?): {exc}",
            expected="a .pt2 written by torch.export.save",
        ) from None
    except ArchiveRefused as exc:
        raise _error(
            path,
            "export",
            f"refused, archive entry {exc.entry}: {exc.reason}. A checkpoint may hold "
            "tensors and a graph of torch operators only; nothing in it is run",
            expected="a .pt2 written by torch.export.save from a plain model",
        ) from None
    except (OSError, EOFError, ValueError, KeyError, RuntimeError) as exc:  # a zip whose members cannot be read
        raise _error(
            path,
            "export",
            f"the archive cannot be read (truncated or damaged?): {type(exc).__name__}: {_first_line(exc)}",
            expected="a .pt2 written by torch.export.save",
        ) from None


def _load_weights_only(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's text: messages here are one line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(exc).__name__


@contextlib.contextmanager
def _torch_logs_captured() -> Iterator[list[logging.LogRecord]]:
    """Keep torch's own log records (warnings with tracebacks) off the terminal while it loads a file.

    torch.export.load logs "Ran into the following error when deserializing" with the full traceback
    before it raises; our InputError says what went wrong instead.
    """
    records: list[logging.LogRecord] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("torch")  # the parent of torch.export's and torch._export's loggers
    saved = logger.handlers[:], logger.propagate
    logger.handlers = [_Keep(level=logging.DEBUG)]  # torch may have put its own stderr handler here
    logger.propagate = False
    try:
        yield records
    finally:
        logger.handlers, logger.propagate = saved


def _load_state_dict_model(path: Path, factory: str | None, factory_path: str | Path | None) -> torch.nn.Module:
    if not factory:
        raise _error(
            path,
            "state_dict",
            "a state dict holds weights only, so the model needs a factory",
            expected="model.factory: 'module:function' and model.factory_path: the folder holding module.py",
        )
    state = _read_state_dict(path)
    build = import_factory(factory, factory_path, checkpoint=path)
    try:
        model = build()
    except Exception as exc:
        raise _error(path, "state_dict", f"factory {factory} raised {type(exc).__name__}: {exc}") from None
    if not isinstance(model, torch.nn.Module):
        raise _error(
            path, "state_dict", f"factory {factory} returned {type(model).__name__}", expected="a torch.nn.Module"
        )
    keys = set(model.state_dict())
    if keys and not (set(state) & keys) and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}  # saved from DataParallel/DDP
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        missing = sorted(keys - set(state))
        unexpected = sorted(set(state) - keys)
        detail = []
        if missing:
            detail.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            detail.append(f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if not detail:
            detail.append(str(exc).splitlines()[-1].strip())
        raise _error(
            path,
            "state_dict",
            f"weights do not fit the model built by {factory}: " + "; ".join(detail),
            expected="a state dict saved from the same architecture",
        ) from None
    return model


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix.lower() == ".safetensors" or _looks_safetensors(path):
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise _error(
                path,
                "state_dict",
                "reading .safetensors needs the safetensors package",
                expected="pip install safetensors",
            ) from None
        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:
            raise _error(path, "state_dict", f"not a readable safetensors file: {exc}") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _refuse_pickle(path, exc) from None
    except Exception as exc:
        raise _error(path, "state_dict", f"torch.load (weights_only) failed: {type(exc).__name__}: {exc}") from None
    return _unwrap_state_dict(path, obj)


def _looks_safetensors(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{" and not zipfile.is_zipfile(path)


def _refuse_pickle(path: Path, exc: Exception) -> InputError:
    text = str(exc)
    found = re.search(r"(?:GLOBAL|global:?)\s+([\w.]+)", text)
    needs = f" ({found.group(1)})" if found else ""
    return _error(
        path,
        "state_dict",
        f"this torch.save pickle needs code to load{needs}, and unpickling it could run arbitrary code, "
        "so it is refused (torch.load runs only with weights_only=True). Re-save the weights alone with "
        "torch.save(model.state_dict(), path) or safetensors and name the factory in the protocol "
        "(model.factory, model.factory_path), or ship a torch.export (.pt2), TorchScript or ONNX file",
        expected="a weights-only state dict",
    )


def _unwrap_state_dict(path: Path, obj: Any) -> dict[str, torch.Tensor]:
    def tensors_only(d: Any) -> bool:
        return isinstance(d, dict) and bool(d) and all(isinstance(v, torch.Tensor) for v in d.values())

    if tensors_only(obj):
        return obj
    if isinstance(obj, dict):
        for key in STATE_DICT_KEYS:
            if tensors_only(obj.get(key)):
                return obj[key]
        keys = ", ".join(map(str, list(obj)[:8]))
        raise _error(
            path,
            "state_dict",
            f"a dict without a state dict in it (keys: {keys})",
            expected=f"a mapping of parameter names to tensors, or one under {', '.join(STATE_DICT_KEYS)}",
        )
    raise _error(
        path,
        "state_dict",
        f"holds a {type(obj).__name__}, not a state dict",
        expected="a mapping of parameter names to tensors",
    )


def import_factory(
    factory: str, factory_path: str | Path | None, *, checkpoint: Path | None = None
) -> Callable[[], torch.nn.Module]:
    """Import ``module:function`` from the file ``factory_path/module.py`` (dots are sub-folders).

    The module is loaded from that file under a private name, so an installed package of the same name
    is never picked instead; while it runs, ``factory_path`` leads ``sys.path`` so that it can import its
    own sibling files. Nothing else is imported.
    """
    where = checkpoint or Path(str(factory_path or "."))
    if factory.count(":") != 1 or not all(factory.split(":")):
        raise _error(where, "state_dict", f"factory {factory!r} is not 'module:function'", expected="module:function")
    if factory_path is None:
        raise _error(
            where,
            "state_dict",
            f"factory {factory} needs model.factory_path, the folder to import it from",
            expected="model.factory_path: a folder relative to the protocol",
        )
    module_name, func_name = factory.split(":")
    root = Path(factory_path).resolve()
    if not root.is_dir():
        raise _error(where, "state_dict", f"model.factory_path {root} is not a folder", expected="an existing folder")
    base = root.joinpath(*module_name.split("."))
    file = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
    if not file.is_file():
        raise _error(
            where,
            "state_dict",
            f"factory module {module_name} not found in {root}",
            expected=f"{base.with_suffix('.py')}",
        )
    private = f"_validate_factory_{hashlib.sha1(str(file).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(
        private, file, submodule_search_locations=[str(base)] if file.name == "__init__.py" else None
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[private] = module
    sys.path.insert(0, str(root))
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(private, None)
        raise _error(
            where, "state_dict", f"importing factory module {file} raised {type(exc).__name__}: {exc}"
        ) from None
    finally:
        try:
            sys.path.remove(str(root))
        except ValueError:
            pass
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise _error(where, "state_dict", f"{file} has no function {func_name}", expected=f"def {func_name}(): ...")
    return fn
