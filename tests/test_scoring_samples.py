"""The sample protocols (protocols/heart.yaml, protocols/chest.yaml): `validate score`'s logits equal a
bare forward pass of the same model on inputs preprocessed here independently (pandas for the
features; Pillow and pydicom for the images), for the export program and the state dict + factory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from validate.protocol import load_protocol
from validate.scoring import score_protocol

REPO = Path(__file__).resolve().parents[1]
HEART = REPO / "protocols" / "heart.yaml"
CHEST = REPO / "protocols" / "chest.yaml"
HEART_FEATURES = [
    "age",
    "sex",
    "cp",
    "trestbps",
    "chol",
    "fbs",
    "restecg",
    "thalach",
    "exang",
    "oldpeak",
    "slope",
    "ca",
    "thal",
]


def _bare(model_file: Path, x: np.ndarray) -> np.ndarray:
    module = torch.export.load(str(model_file)).module()
    with torch.inference_mode():
        return module(torch.from_numpy(x))[:, 0].double().numpy()


@pytest.mark.skipif(not HEART.exists(), reason="heart sample protocol not present")
@pytest.mark.parametrize("form", ["export", pytest.param("state_dict", marks=pytest.mark.slow)])
def test_heart_logits_equal_bare_forward(tmp_path, form):
    protocol = load_protocol(HEART)
    kwargs = {}
    if form == "state_dict":
        # the protocol's own comment: the same model ships as a state dict with a factory
        text = HEART.read_text().replace("../sample_sites/", f"{REPO}/sample_sites/")
        text = text.replace("heart/model.pt2", "heart/model_state.pt").replace(
            "  format: export\n",
            f"  format: state_dict\n  factory: model_def:build_model\n  factory_path: {REPO}/sample_sites/heart\n",
        )
        assert "model_state.pt" in text and "factory_path" in text
        (tmp_path / "heart.yaml").write_text(text)
        protocol = load_protocol(tmp_path / "heart.yaml")
    result = score_protocol(protocol, out_dir=tmp_path / "out", **kwargs)
    assert result.counts["failed"] == 0
    pred = result.predictions
    for site in protocol.sites:
        manifest = pd.read_csv(protocol.resolve(site.manifest))
        x = manifest[HEART_FEATURES].to_numpy(dtype=np.float32)  # empty cells are NaN
        want = _bare(REPO / "sample_sites/heart/model.pt2", x)
        got = pred.loc[pred["site"] == site.id, "logit"].to_numpy()
        assert pred.loc[pred["site"] == site.id, "case_id"].tolist() == manifest["case_id"].astype(str).tolist()
        assert np.abs(got - want).max() <= 1e-5
    assert {"sex_label", "age"} <= set(pred.columns)
    assert set(pred["y"].unique()) == {0, 1}


def _chest_pixels(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".dcm":
        import pydicom

        ds = pydicom.dcmread(path)
        # the sample files' window (c=128, w=256) is the identity on 0..255: raw pixels are the reference
        assert float(ds.WindowCenter) == 128 and float(ds.WindowWidth) == 256
        return ds.pixel_array.astype(np.float32)
    return np.asarray(Image.open(path).convert("L"), dtype=np.float32)


@pytest.mark.skipif(not CHEST.exists(), reason="chest sample protocol not present")
@pytest.mark.parametrize("checkpoint", ["model.pt2", pytest.param("model_state.pt", marks=pytest.mark.slow)])
def test_chest_logits_equal_bare_forward(tmp_path, checkpoint):
    protocol = load_protocol(CHEST)
    result = score_protocol(
        protocol, checkpoint=REPO / "sample_sites/chest" / checkpoint, out_dir=tmp_path / "out", batch_size=128
    )
    assert result.counts["failed"] == 0
    assert result.checkpoint_format == ("export" if checkpoint.endswith(".pt2") else "state_dict")
    pred = result.predictions
    for site in protocol.sites:
        manifest = pd.read_csv(protocol.resolve(site.manifest), dtype=str)
        root = protocol.resolve(site.image_root)
        raw = np.stack([_chest_pixels(root / name) for name in manifest["image"]])
        x = ((raw / np.float32(255.0) - np.float32(0.5)) / np.float32(0.5))[:, None].astype(np.float32)
        want = _bare(REPO / "sample_sites/chest/model.pt2", x)
        got = pred.loc[pred["site"] == site.id, "logit"].to_numpy()
        assert np.abs(got - want).max() <= 1e-5, site.id
    assert {"sex", "age", "manufacturer"} <= set(pred.columns)
    assert pred.loc[pred["site"] == "drift_site", "acquired_at"].notna().all()


def _sample_model(protocol) -> torch.nn.Module:
    from validate.scoring.checkpoints import import_factory

    factory_path = protocol.resolve(protocol.model.factory_path)
    model = import_factory(protocol.model.factory, factory_path)()
    model.load_state_dict(torch.load(factory_path / "model_state.pt", weights_only=True))
    return model.eval()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["heart", "chest"])
def test_every_checkpoint_format_scores_the_sample_protocol(tmp_path, name):
    """The sample model re-saved as TorchScript, safetensors (+ factory) and ONNX gives the logits of
    its torch.export program on every site (the `validate score` flag picks the file, format auto)."""
    import warnings

    from safetensors.torch import save_file

    from validate.cli import main

    source = HEART if name == "heart" else CHEST
    text = source.read_text().replace("../sample_sites/", f"{REPO}/sample_sites/")
    if name == "heart":
        text = text.replace(
            "  format: export\n",
            f"  format: export\n  factory: model_def:build_model\n  factory_path: {REPO}/sample_sites/heart\n",
        )
    (tmp_path / "p.yaml").write_text(text)
    protocol = load_protocol(tmp_path / "p.yaml")
    reference = score_protocol(protocol, out_dir=tmp_path / "ref", batch_size=256).predictions
    model = _sample_model(protocol)
    example = torch.zeros((4, 13)) if name == "heart" else torch.zeros((4, 1, 28, 28))
    files = {
        "torchscript": tmp_path / "model_ts.pt",
        "safetensors": tmp_path / "model.safetensors",
        "onnx": tmp_path / "model.onnx",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(model, example), str(files["torchscript"]))
        torch.onnx.export(
            model, (example,), str(files["onnx"]), dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "batch"}}
        )
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(files["safetensors"]))
    for fmt, path in files.items():
        out = tmp_path / fmt
        assert (
            main(
                ["score", str(tmp_path / "p.yaml"), "--checkpoint", str(path), "--out", str(out), "--batch-size", "256"]
            )
            == 0
        )
        pred = pd.read_parquet(out / "predictions.parquet")
        assert pred["case_id"].tolist() == reference["case_id"].tolist()
        assert np.abs(pred["logit"].to_numpy() - reference["logit"].to_numpy()).max() <= 1e-5, fmt
        summary = (out / "scoring.json").read_text()
        assert f'"checkpoint_format": "{"state_dict" if fmt == "safetensors" else fmt}"' in summary
