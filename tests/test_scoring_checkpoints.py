"""Checkpoint formats: each loads to the same function as the model it was saved from; unsafe
pickles are refused without running their code; errors name the file and the format."""

from __future__ import annotations

import os
import pickle
import sys
import warnings

import numpy as np
import pytest
import torch

from validate.errors import InputError
from validate.scoring.checkpoints import detect_format, import_factory, load_checkpoint

from test_scoring_support import tiny_model, write_factory


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The same perturbed tiny CNN saved in every format."""
    root = tmp_path_factory.mktemp("ckpt")
    code = root / "code"
    write_factory(code)
    model = tiny_model()
    example = torch.randn(2, 1, 16, 16)
    files = {}
    files["state_dict"] = root / "model_state.pt"
    torch.save(model.state_dict(), files["state_dict"])
    from safetensors.torch import save_file

    files["safetensors"] = root / "model.safetensors"
    save_file(model.state_dict(), str(files["safetensors"]))
    files["torchscript"] = root / "model_ts.pt"
    torch.jit.save(torch.jit.trace(model, example), str(files["torchscript"]))
    batch = torch.export.Dim("batch")
    files["export"] = root / "model.pt2"
    torch.export.save(torch.export.export(model, (example,), dynamic_shapes=({0: batch},)), str(files["export"]))
    files["export_static"] = root / "model_b1.pt2"
    torch.export.save(torch.export.export(model, (example[:1],)), str(files["export_static"]))
    files["onnx"] = root / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the TorchScript-based exporter: 0.5 s here against ~10 s for the dynamo exporter, which the
        # slow test below covers
        torch.onnx.export(
            model,
            (example,),
            str(files["onnx"]),
            dynamo=False,
            input_names=["x"],
            output_names=["logit"],
            dynamic_axes={"x": {0: "batch"}, "logit": {0: "batch"}},
        )
    return {"root": root, "code": code, "model": model, "files": files}


def _check_same(ckpt, model, atol=1e-5):
    ckpt.prepare(torch.device("cpu"))
    x = torch.randn(5, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        got = ckpt(x)
        want = model(x)
    assert got.shape == want.shape
    assert float((got - want).abs().max()) <= atol


@pytest.mark.parametrize(
    "name,fmt", [("export", "export"), ("export_static", "export"), ("torchscript", "torchscript"), ("onnx", "onnx")]
)
def test_self_contained_formats_load_and_match(saved, name, fmt):
    path = saved["files"][name]
    assert detect_format(path) == fmt
    ckpt = load_checkpoint(path)
    assert ckpt.format == fmt
    assert len(ckpt.sha256) == 64
    _check_same(ckpt, saved["model"])


def test_static_batch_export_is_fed_in_chunks(saved):
    ckpt = load_checkpoint(saved["files"]["export_static"])
    assert ckpt.static_batch == 1


@pytest.mark.parametrize("name", ["state_dict", "safetensors"])
def test_state_dict_with_factory_matches(saved, name):
    path = saved["files"][name]
    assert detect_format(path) == "state_dict"
    ckpt = load_checkpoint(path, factory="tiny_def:build_model", factory_path=saved["code"])
    assert ckpt.format == "state_dict"
    _check_same(ckpt, saved["model"], atol=0.0)


def test_sha256_is_the_files(saved):
    import hashlib

    path = saved["files"]["state_dict"]
    ckpt = load_checkpoint(path, factory="tiny_def:build_model", factory_path=saved["code"])
    assert ckpt.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_state_dict_without_factory_is_explained(saved):
    with pytest.raises(InputError) as err:
        load_checkpoint(saved["files"]["state_dict"])
    text = str(err.value)
    assert "state dict" in text and "factory" in text and str(saved["files"]["state_dict"]) in text


def test_state_dict_not_fitting_the_factory_names_keys(saved):
    with pytest.raises(InputError) as err:
        load_checkpoint(saved["files"]["state_dict"], factory="tiny_def:build_tabular", factory_path=saved["code"])
    assert "missing keys" in str(err.value) and "conv.weight" in str(err.value)


def test_declared_format_that_does_not_match_is_named(saved):
    with pytest.raises(InputError) as err:
        load_checkpoint(saved["files"]["torchscript"], format="state_dict")
    text = str(err.value)
    assert "state_dict" in text and "TorchScript" in text


def test_factory_is_imported_only_from_the_given_folder(tmp_path):
    # a factory module named like a standard-library module: the protocol's file must win,
    # and the standard module must stay what it was
    import json as real_json

    code = tmp_path / "code"
    write_factory(code, name="json")
    fn = import_factory("json:build_model", code)
    assert isinstance(fn(), torch.nn.Module)
    assert sys.modules["json"] is real_json
    with pytest.raises(InputError) as err:
        import_factory("nowhere:build_model", code)
    assert "not found" in str(err.value)


class _RunsCode:
    """Unpickling this would create a folder: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_code_carrying_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(1), "payload": _RunsCode(marker)}, path)
    assert detect_format(path) == "state_dict"
    with pytest.raises(InputError) as err:
        load_checkpoint(path, factory="tiny_def:build_model", factory_path=tmp_path)
    text = str(err.value)
    assert "needs code to load" in text and "weights_only" in text and str(path) in text
    assert not marker.exists()
    # a plain (non-torch) pickle with the same payload is refused too
    plain = tmp_path / "evil.pth"
    plain.write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(InputError):
        load_checkpoint(plain, factory="tiny_def:build_model", factory_path=tmp_path)
    assert not marker.exists()


def test_whole_pickled_module_is_refused(tmp_path, saved):
    path = tmp_path / "full.pt"
    torch.save(saved["model"], path)
    with pytest.raises(InputError) as err:
        load_checkpoint(path, factory="tiny_def:build_model", factory_path=saved["code"])
    assert "TinyCNN" in str(err.value) or "needs code" in str(err.value)


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt2")
    odd = tmp_path / "model.bin"
    odd.write_bytes(b"\x00\x01 not a model")
    with pytest.raises(InputError, match="cannot tell its format"):
        load_checkpoint(odd)


def test_corrupt_export_names_format(tmp_path, saved):
    bad = tmp_path / "broken.pt2"
    data = saved["files"]["export"].read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as err:
        load_checkpoint(bad, format="export")
    assert "torch.export" in str(err.value) and str(bad) in str(err.value)


@pytest.mark.slow
def test_onnx_from_the_default_dynamo_exporter(tmp_path):
    pytest.importorskip("onnxscript")
    model = tiny_model()
    path = tmp_path / "dynamo.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.randn(2, 1, 16, 16),),
            str(path),
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            verbose=False,
        )
    ckpt = load_checkpoint(path)
    assert ckpt.format == "onnx"
    _check_same(ckpt, model)
    assert np.isfinite(ckpt.sha256 != "")


# ---- .pt2 inspection and declared shapes ----------------------------------------------------------


def test_shape_expressions_may_use_sympy_constructors_only():
    from validate.scoring.archive import IDENTIFIER, ArchiveRefused, _check_python_expression, _sympy_names

    honest = [
        "Symbol('s77', positive=True, integer=True)",
        "Mul(Integer(6), Symbol('s77', positive=True, integer=True))",
        "FloorDiv(s0, 2) + Max(1, u0)",
        "Eq(Mod(s1, 2), 0)",
        "-oo",
        "1.5*s0",
    ]
    for text in honest:
        _check_python_expression(text, "here", _sympy_names(), strings=IDENTIFIER)
    hostile = [
        "__import__('os').system('x')",
        "Symbol('s0').__class__",
        "s0[0]",
        "(lambda: 1)()",
        "open('f')",
        "Symbol('a b')",
        "eval('1')",
        "Integer(1); Integer(2)",
        "(s0 := 1)",
    ]
    for text in hostile:
        with pytest.raises(ArchiveRefused):
            _check_python_expression(text, "here", _sympy_names(), strings=IDENTIFIER)


def test_node_targets_must_be_operators():
    from validate.scoring.archive import ArchiveRefused, _check_target

    for ok in (
        "torch.ops.aten.linear.default",
        "torch.ops.aten.__and__.Tensor",
        "_operator.add",
        "torch.sym_int",
        "torch.ops.higher_order.cond",
    ):
        _check_target(ok, "here")
    for bad in (
        "torch.ops.load_library",
        "torch.os.system",
        "builtins.eval",
        "torch.ops.aten.linear",
        "torch.ops.aten.__class__.__init__",
        "#custom:op",
        "torch.ops.nowhere.op.default",
    ):
        with pytest.raises(ArchiveRefused):
            _check_target(bad, "here")


def test_both_test_exports_pass_inspection(saved):
    # the dynamic-batch and the static-batch programs written by this torch, as the loader sees them
    for name in ("export", "export_static"):
        ckpt = load_checkpoint(saved["files"][name])
        assert ckpt.input_shape[1:] == (1, 16, 16) and ckpt.output_shape[1:] == (1,)
    assert load_checkpoint(saved["files"]["export"]).input_shape[0] is None
    assert load_checkpoint(saved["files"]["export_static"]).input_shape[0] == 1


def test_declared_shapes_that_do_not_fit_the_protocol_are_bad_input(saved):
    from validate.scoring.evaluator import check_declared_shapes
    from validate.scoring.inputs import Preprocessing
    from validate.scoring.outputs import make_to_logits

    binary = make_to_logits(
        task="binary", n_columns=1, output="logits", positive_index=1, checkpoint=saved["files"]["onnx"], fmt="onnx"
    )
    three = make_to_logits(
        task="multiclass", n_columns=3, output="logits", positive_index=1, checkpoint=saved["files"]["onnx"], fmt="onnx"
    )
    onnx = load_checkpoint(saved["files"]["onnx"])
    onnx.prepare(torch.device("cpu"))
    assert onnx.input_shape == (None, 1, 16, 16) and onnx.output_shape == (None, 1)
    image = Preprocessing(kind="image", size=(16, 16), channels=1)
    check_declared_shapes(onnx, image, binary)  # fits
    with pytest.raises(InputError) as err:
        check_declared_shapes(onnx, Preprocessing(kind="tabular", features=("a", "b")), binary)
    assert "[N, 1, 16, 16]" in str(err.value) and "[N, 2]" in str(err.value)
    with pytest.raises(InputError) as err:
        check_declared_shapes(onnx, Preprocessing(kind="image", size=(32, 32), channels=1), binary)
    assert "[N, 1, 32, 32]" in str(err.value)
    with pytest.raises(InputError) as err:  # right input, one output for three classes
        check_declared_shapes(onnx, image, three)
    assert "returns [N, 1]" in str(err.value) and "[N, 3]" in str(err.value)
    # a format that declares nothing (TorchScript) is left to the first batch
    check_declared_shapes(
        load_checkpoint(saved["files"]["torchscript"]), Preprocessing(kind="tabular", features=("a",)), binary
    )


def test_honest_export_with_numbered_children_buffers_and_string_arguments_loads(tmp_path):
    # nn.Sequential names its weights "0.weight"; einsum's equation is a string argument: an honest
    # program has both, and the inspection must let them through
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.seq = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
            self.register_buffer("scale", torch.tensor(2.0))

        def forward(self, x):
            return torch.einsum("bi,i->bi", self.seq(x) * self.scale, torch.ones(2)).softmax(-1)

    torch.manual_seed(0)
    for name, model in (("sequential", torch.nn.Sequential(torch.nn.Linear(4, 2))), ("wrapped", Model())):
        x = torch.randn(3, 4)
        path = tmp_path / f"{name}.pt2"
        torch.export.save(torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("b")},)), str(path))
        ckpt = load_checkpoint(path)
        ckpt.prepare(torch.device("cpu"))
        with torch.inference_mode():
            assert torch.allclose(ckpt(x), model(x), atol=1e-6)
        assert ckpt.input_shape == (None, 4) and ckpt.output_shape == (None, 2)
