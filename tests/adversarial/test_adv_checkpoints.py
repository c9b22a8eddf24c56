"""Hostile and wrong checkpoints: a checkpoint never runs code, and a checkpoint that does not fit the
protocol (another protocol's model, an empty or cut file) is bad input, exit 2, with the file named.

Each malicious ``.pt2`` is the shipped heart model with one change that torch 2.13's
``torch.export.load`` would act on: the payload writes a marker file, and the tests assert the marker
never appears. Without the archive inspection every one of them ran its payload (most then scored
normally, with real weights).
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from validate.errors import InputError
from validate.scoring.checkpoints import load_checkpoint

from tests.adversarial.harness import REPO, Unchanged, run_cli

HEART = REPO / "sample_sites" / "heart" / "model.pt2"
CHEST = REPO / "sample_sites" / "chest" / "model.pt2"


class Payload:
    """Unpickling this evaluates ``expr`` (builtins.eval): any code at all."""

    def __init__(self, expr: str):
        self.expr = expr

    def __reduce__(self):
        return (eval, (self.expr,))


def _touch(marker: Path) -> str:
    return f"__import__('os').system('touch {marker}')"


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _edit_json(files: dict, name: str, edit: Callable[[dict], None]) -> None:
    data = json.loads(files[name])
    edit(data)
    files[name] = json.dumps(data).encode()


def craft(dst: Path, edit: Callable[[dict], None], src: Path = HEART) -> Path:
    """Copy the .pt2 ``src`` to ``dst``, letting ``edit`` change its entries (name -> bytes)."""
    with zipfile.ZipFile(src) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    edit(files)
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return dst


# ---- the payloads: each returns the edit and the archive entry the refusal must name --------------


def pickled_weight(marker: Path):
    """A weight whose config says use_pickle: torch.load(weights_only=False). It returns the real bias."""

    def edit(files):
        _edit_json(
            files,
            "model/data/weights/model_weights_config.json",
            lambda d: d["config"]["linear.bias"].update(use_pickle=True),
        )
        bias = torch.frombuffer(bytearray(files["model/data/weights/weight_1"]), dtype=torch.float32).tolist()
        files["model/data/weights/weight_1"] = _torch_bytes(
            Payload(f"{_touch(marker)} or __import__('torch').nn.Parameter(__import__('torch').tensor({bias}))")
        )

    return edit, "model/data/weights/model_weights_config.json ['linear.bias']"


def opaque_constant(marker: Path):
    """An opaque_obj_ constant: pickle.loads."""

    def edit(files):
        _edit_json(
            files,
            "model/data/constants/model_constants_config.json",
            lambda d: d["config"].__setitem__(
                "evil", {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True, "tensor_meta": None}
            ),
        )
        files["model/data/constants/opaque_obj_0"] = pickle.dumps(Payload(_touch(marker)))

    return edit, "model/data/constants/opaque_obj_0"


def legacy_weights(marker: Path):
    """The legacy weights file: weights_only=True fails, torch retries with weights_only=False.
    The pickle holds the real state dict plus the payload, so the model then runs normally."""

    def edit(files):
        state = dict(torch.export.load(str(HEART)).state_dict)
        state["zz"] = Payload(_touch(marker))
        files["model/data/weights/model.pt"] = _torch_bytes(state)

    return edit, "model/data/weights/model.pt"


def sample_inputs(marker: Path):
    """The sample inputs, read like the legacy weights (restricted, then unrestricted)."""

    def edit(files):
        files["model/data/sample_inputs/model.pt"] = _torch_bytes(
            ((Payload(f"{_touch(marker)} or __import__('torch').zeros(2, 13)"),), {})
        )

    return edit, "model/data/sample_inputs/model.pt"


def guards_code(marker: Path):
    """guards_code: Python source that ExportedProgram.module() execs into the forward's guard."""
    return (
        lambda files: _edit_json(
            files, "model/models/model.json", lambda d: d.__setitem__("guards_code", [f"{_touch(marker)} == 0"])
        ),
        "model/models/model.json guards_code",
    )


def shape_expression(marker: Path):
    """A symbolic shape's expr_str: sympy.sympify, i.e. eval."""

    def edit(files):
        text = files["model/models/model.json"].decode()
        honest = "Symbol('s77', positive=True, integer=True)"
        assert honest in text
        evil = f"{honest} + 0*{_touch(marker)}".replace("'", "\\u0027")
        files["model/models/model.json"] = text.replace(honest, evil, 1).encode()

    return edit, "expr_str"


def aoti_library(marker: Path):
    """An AOTInductor package entry: torch would dlopen a compiled library."""

    def edit(files):
        files["model/data/aotinductor/model/model.so"] = b"\x7fELF not really"

    return edit, "model/data/aotinductor/model/model.so"


def node_target(marker: Path):
    """A node whose target resolves to a plain Python callable (torch would call it as the model runs)."""

    def edit(files):
        def change(d):
            d["graph_module"]["graph"]["nodes"][0]["target"] = "torch.ops.load_library"

        _edit_json(files, "model/models/model.json", change)

    return edit, "nodes[0].target"


def argument_name(marker: Path):
    """A forward argument name, pasted by FX into the source of the generated forward."""

    def edit(files):
        def change(d):
            d["graph_module"]["module_call_graph"][0]["signature"]["forward_arg_names"] = [f"x={_touch(marker)}"]

        _edit_json(files, "model/models/model.json", change)

    return edit, "forward_arg_names"


def old_format(marker: Path):
    """The pre-2.8 layout (serialized_*.pt at the top), read with the weights_only=False fallback."""

    def edit(files):
        files.clear()
        files["version"] = b"8.5"
        files["serialized_state_dict.pt"] = _torch_bytes({"w": Payload(_touch(marker))})

    return edit, "serialized_state_dict.pt"


ALL_PAYLOADS = [
    pickled_weight,
    opaque_constant,
    legacy_weights,
    sample_inputs,
    guards_code,
    shape_expression,
    aoti_library,
    node_target,
    argument_name,
    old_format,
]
# the three unrestricted-pickle paths always run at the command line; the others there only with -m ""
# (the library test below covers every payload)
CLI_PAYLOADS = [pickled_weight, opaque_constant, legacy_weights] + [
    pytest.param(p, marks=pytest.mark.slow) for p in (sample_inputs, guards_code, shape_expression)
]


def _heart_protocol(tmp_path: Path, checkpoint: Path, base: str = "heart") -> Path:
    """A copy of protocols/BASE.yaml whose checkpoint is ``checkpoint`` (sites stay the shipped ones)."""
    text = (REPO / "protocols" / f"{base}.yaml").read_text()
    text = text.replace("../sample_sites/", f"{REPO}/sample_sites/")
    lines = [f"  checkpoint: {checkpoint}" if line.startswith("  checkpoint:") else line for line in text.splitlines()]
    protocol = tmp_path / f"{base}.yaml"
    protocol.write_text("\n".join(lines) + "\n")
    return protocol


# ---- the command line ------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", CLI_PAYLOADS, ids=lambda f: getattr(f, "__name__", str(f)))
def test_malicious_pt2_is_refused_at_the_command_line_and_never_runs(tmp_path, payload):
    marker = tmp_path / "PWNED"
    edit, entry = payload(marker)
    evil = craft(tmp_path / "evil.pt2", edit)
    protocol = _heart_protocol(tmp_path, evil)
    with Unchanged(tmp_path, allow=["out", "runs"]):
        r = run_cli("run", protocol, "--out", tmp_path / "out", "--runs-dir", tmp_path / "runs", cwd=tmp_path)
    assert not marker.exists(), "the checkpoint ran code"
    assert r.code == 2, r.text
    assert str(evil) in r.err and entry in r.err and "refused" in r.err, r.err
    assert r.err.count("\n") == 1, r.err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "checkpoint,base,model_shape,protocol_shape",
    [
        (CHEST, "heart", "[N, 1, 28, 28]", "[N, 13]"),
        (HEART, "chest", "[N, 13]", "[N, 1, 28, 28]"),
    ],
    ids=["chest-model-on-heart", "heart-model-on-chest"],
)
def test_checkpoint_of_another_protocol_is_bad_input_naming_both_shapes(
    tmp_path, checkpoint, base, model_shape, protocol_shape
):
    protocol = _heart_protocol(tmp_path, checkpoint, base)
    with Unchanged(tmp_path, allow=["out", "runs"]):
        r = run_cli("run", protocol, "--out", tmp_path / "out", "--runs-dir", tmp_path / "runs", cwd=tmp_path)
    assert r.code == 2, r.text
    assert str(checkpoint) in r.err and "model.checkpoint" in r.err
    assert f"takes input {model_shape}" in r.err and f"gives it {protocol_shape}" in r.err, r.err
    assert "returns [N, 1]" in r.err and "[N, 1] or [N, 2]" in r.err  # output width against the binary classes
    assert r.err.count("\n") == 1, r.err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("cut", ["empty", "half"])
def test_empty_or_truncated_pt2_is_bad_input_without_torch_traceback(tmp_path, cut):
    data = HEART.read_bytes()
    broken = tmp_path / "broken.pt2"
    broken.write_bytes(b"" if cut == "empty" else data[: len(data) // 2])
    protocol = _heart_protocol(tmp_path, broken)
    with Unchanged(tmp_path, allow=["out", "runs"]):
        r = run_cli("run", protocol, "--out", tmp_path / "out", "--runs-dir", tmp_path / "runs", cwd=tmp_path)
    assert r.code == 2, r.text
    assert str(broken) in r.err
    assert ("empty" if cut == "empty" else "truncated") in r.err, r.err
    # torch logs "Ran into the following error when deserializing" and a traceback before raising
    assert "Ran into" not in r.text and r.err.count("\n") == 1, r.text


# ---- the library -----------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", ALL_PAYLOADS, ids=lambda f: f.__name__)
def test_malicious_pt2_is_refused_by_the_loader_naming_the_entry(tmp_path, payload):
    marker = tmp_path / "PWNED"
    edit, entry = payload(marker)
    evil = craft(tmp_path / "evil.pt2", edit)
    with pytest.raises(InputError) as err:
        ckpt = load_checkpoint(evil, format="export")
        ckpt.prepare(torch.device("cpu"))
        ckpt(torch.zeros(2, 13))  # what scoring would do next
    assert not marker.exists(), "the checkpoint ran code"
    text = str(err.value)
    assert str(evil) in text and entry in text and "\n" not in text, text


@pytest.mark.parametrize("folder,features", [("heart", (5, 13)), ("chest", (5, 1, 28, 28))])
def test_honest_sample_pt2_loads_and_matches_its_state_dict_model(folder, features):
    """The shipped .pt2 gives the same outputs as the same model rebuilt from its state dict and
    factory (an independent path through torch), and as torch.export.load itself."""
    root = REPO / "sample_sites" / folder
    ckpt = load_checkpoint(root / "model.pt2")
    ckpt.prepare(torch.device("cpu"))
    reference = load_checkpoint(root / "model_state.pt", factory="model_def:build_model", factory_path=root)
    reference.prepare(torch.device("cpu"))
    x = torch.rand(*features, generator=torch.Generator().manual_seed(0)) * (50 if folder == "heart" else 1)
    with torch.inference_mode():
        got = ckpt(x)
        want = reference(x)
        direct = torch.export.load(str(root / "model.pt2")).module()(x)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
    assert torch.equal(got, direct)


def test_torchscript_pickle_with_a_python_global_is_refused_and_not_run(tmp_path):
    from test_scoring_support import tiny_model

    marker = tmp_path / "PWNED"
    honest = tmp_path / "honest.pt"
    torch.jit.save(torch.jit.trace(tiny_model(), torch.randn(2, 1, 16, 16)), str(honest))
    for entry in ("honest/data.pkl", "honest/constants.pkl"):
        evil = craft(
            tmp_path / "evil.pt",
            lambda files, entry=entry: files.__setitem__(entry, pickle.dumps(Payload(_touch(marker)), protocol=2)),
            src=honest,
        )
        with pytest.raises(InputError) as err:
            load_checkpoint(evil, format="torchscript")
        assert not marker.exists()
        text = str(err.value)
        assert str(evil) in text and "eval" in text and "\n" not in text, text


def test_legacy_torch_save_pickle_with_code_is_refused_and_not_run(tmp_path):
    """The pre-1.6 (non-zip) torch.save format goes through the same weights_only unpickler."""
    marker = tmp_path / "PWNED"
    path = tmp_path / "old.pt"
    torch.save({"w": Payload(_touch(marker))}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(InputError) as err:
        load_checkpoint(path, factory="x:y", factory_path=tmp_path)
    assert not marker.exists()
    assert "needs code to load" in str(err.value)


def test_an_entry_twice_is_refused(tmp_path):
    """Two weights configs of one name: Python's zipfile reads the honest one, torch's reader the one
    that sends a weight through torch.load(weights_only=False). The inspected copy must be the loaded one."""
    import warnings

    marker = tmp_path / "PWNED"
    config = "model/data/weights/model_weights_config.json"
    with zipfile.ZipFile(HEART) as zf:
        honest = {n: zf.read(n) for n in zf.namelist()}
    evil = json.loads(honest[config])
    evil["config"]["linear.bias"].update(use_pickle=True, path_name="weight_99")
    path = tmp_path / "twice.pt2"
    with zipfile.ZipFile(path, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        zf.writestr(config, json.dumps(evil))
        zf.writestr(
            "model/data/weights/weight_99",
            _torch_bytes(
                Payload(f"{_touch(marker)} or __import__('torch').nn.Parameter(__import__('torch').zeros(1))")
            ),
        )
        for name, data in honest.items():
            zf.writestr(name, data)
    with pytest.raises(InputError) as err:
        load_checkpoint(path, format="export")
    assert not marker.exists(), "the checkpoint ran code"
    assert "appears twice" in str(err.value) and config in str(err.value)
