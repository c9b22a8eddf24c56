"""Fixtures shared by the scoring tests: tiny models, image sites and protocols written in tmp_path.

Everything here is made from scratch in each test's temporary folder, so the tests do not depend on
the sample sites (those are checked separately, when present).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

# The factory module a protocol names for state-dict checkpoints. `build_model(k)` is deterministic;
# tests perturb the weights before saving so that a load that silently failed would be noticed.
TINY_DEF = textwrap.dedent("""
    import torch
    from torch import nn

    class TinyCNN(nn.Module):
        def __init__(self, channels=1, outputs=1):
            super().__init__()
            self.conv = nn.Conv2d(channels, 4, 3, padding=1)
            self.head = nn.Linear(4, outputs)

        def forward(self, x):
            return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))

    class TinyTabular(nn.Module):
        def __init__(self, features=3):
            super().__init__()
            self.linear = nn.Linear(features, 1)

        def forward(self, x):
            # NaN for missing becomes 0; a negative first feature makes the output NaN (log of it)
            z = torch.nan_to_num(x, nan=0.0)
            return self.linear(z) + torch.log(z[:, :1] + 1.0) * 0.0

    def build_model():
        torch.manual_seed(0)
        return TinyCNN()

    def build_model3():
        torch.manual_seed(0)
        return TinyCNN(channels=3, outputs=3)

    def build_tabular():
        torch.manual_seed(0)
        return TinyTabular()
""")


def write_factory(folder: Path, name: str = "tiny_def") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(TINY_DEF)
    return path


def tiny_model(builder: str = "build_model", seed: int = 1) -> torch.nn.Module:
    """The factory's model with weights moved away from the factory's own initialisation."""
    model = getattr(_tiny_module(), builder)()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.5)
    return model.eval()


def _tiny_module():
    """TINY_DEF imported from a real file (so that TorchScript and pickling can find its classes)."""
    import importlib.util
    import sys
    import tempfile

    name = "scoring_tiny_def"
    if name not in sys.modules:
        path = Path(tempfile.mkdtemp(prefix="scoring-tiny-")) / f"{name}.py"
        path.write_text(TINY_DEF)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def dicom_dataset(rows: int, cols: int, *, syntax=None):
    """A single-frame DICOM dataset (digital X-ray SOP class; explicit VR little endian unless
    ``syntax`` says otherwise) with its file meta. Callers set the pixel module and PixelData."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax or ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    return ds


def chest_like_images(n: int, size: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)


def write_png_site(
    root: Path, site: str, images: np.ndarray, *, labels: list[int] | None = None, suffix: str = ".png"
) -> Path:
    """A site folder of images and its manifest; returns the manifest path."""
    folder = root / site
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["case_id,patient_id,label,image,sex"]
    for i, img in enumerate(images):
        name = f"{site}-{i:04d}{suffix}"
        Image.fromarray(img).save(folder / name)
        lab = labels[i] if labels is not None else i % 2
        rows.append(f"{site}-{i:04d},p{i // 2},{lab},{name},{'FM'[i % 2]}")
    manifest = root / f"{site}.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def write_protocol(
    path: Path,
    *,
    sites: list[dict],
    input: dict,
    model: dict,
    task: str = "binary",
    classes: list[str] | None = None,
    attributes: list[str] | None = None,
    labels: list[str] | None = None,
) -> Path:
    doc = {
        "name": "t",
        "task": task,
        "input": input,
        "model": model,
        "sites": sites,
        "attributes": attributes if attributes is not None else ["sex"],
    }
    if task == "multilabel":
        doc["labels"] = labels
    else:
        doc["classes"] = classes or ["neg", "pos"]
    if task != "binary":
        doc["calibration"] = {"methods": []}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def image_input(size: int = 16, channels: int = 1) -> dict:
    return {
        "kind": "image",
        "size": [size, size],
        "channels": channels,
        "scale": 255.0,
        "mean": [0.5] * channels,
        "std": [0.5] * channels,
    }


def reference_inputs(images: np.ndarray) -> torch.Tensor:
    """Independent preprocessing of 8-bit grey images: /255 then (x - 0.5) / 0.5, as float32 [N,1,H,W]."""
    x = images.astype(np.float32) / np.float32(255.0)
    x = (x - np.float32(0.5)) / np.float32(0.5)
    return torch.from_numpy(x[:, None])


def png_protocol(
    tmp_path: Path,
    images: np.ndarray,
    *,
    model: dict | None = None,
    site: str = "a",
    extra_sites: list[dict] | None = None,
) -> Path:
    """A one-site image protocol with the tiny CNN as a state dict + factory."""
    write_png_site(tmp_path / "data", site, images)
    if model is None:
        write_factory(tmp_path / "code")
        state = tmp_path / "model_state.pt"
        torch.save(tiny_model().state_dict(), state)
        model = {
            "checkpoint": str(state),
            "format": "state_dict",
            "factory": "tiny_def:build_model",
            "factory_path": "code",
        }
    sites = [{"id": site, "manifest": f"data/{site}.csv", "image_root": f"data/{site}", "role": "development"}]
    sites += extra_sites or []
    return write_protocol(tmp_path / "protocol.yaml", sites=sites, input=image_input(images.shape[1]), model=model)


def test_support_models_are_deterministic():
    a, b = tiny_model(), tiny_model()
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(a(x), b(x))


def truncated_dicom(path: Path) -> None:
    ds = dicom_dataset(16, 16)
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = bytes(256)
    ds.save_as(path, enforce_file_format=True)
    path.write_bytes(path.read_bytes()[:-100])


def png_protocol_with_bad_cases(tmp_path: Path, images: np.ndarray) -> Path:
    """:func:`png_protocol` whose case 3 is not an image at all and case 7 a truncated DICOM: the
    site must go on past both."""
    protocol = png_protocol(tmp_path, images)
    site = tmp_path / "data" / "a"
    (site / "a-0003.png").write_bytes(b"garbage, not an image")
    (site / "a-0007.png").unlink()
    truncated_dicom(site / "a-0007.dcm")
    manifest = tmp_path / "data" / "a.csv"
    manifest.write_text(manifest.read_text().replace("a-0007.png", "a-0007.dcm"))
    return protocol
