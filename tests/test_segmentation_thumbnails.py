"""validate.thumbnails.write_case_thumbnails: the pictures of chosen cases (a segmentation run's worst
cases) written into a bundle under the identifiers it stores, from the manifests' images, reduced as
Pillow reduces them; a case without a readable image gets none."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from PIL import Image

from validate.protocol import load_protocol
from validate.thumbnails import write_case_thumbnails


class _Writer:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def write_bytes(self, name: str, data: bytes) -> None:
        self.files[name] = data


def test_chosen_cases_get_their_thumbnails_under_the_stored_names(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    root.mkdir()
    pixels = {}
    for i in range(3):
        pixels[f"case-{i}"] = rng.integers(0, 256, (160, 200), dtype=np.uint8)
        Image.fromarray(pixels[f"case-{i}"]).save(root / f"img{i}.png")
    manifest = [{"case_id": f"case-{i}", "patient_id": f"p{i}", "image": f"img{i}.png"} for i in range(4)]
    manifest[3]["image"] = "missing.png"
    pd.DataFrame(manifest).assign(label="neg").to_csv(tmp_path / "dev.csv", index=False)
    (tmp_path / "p.yaml").write_text(
        "name: t\nversion: '1'\ntask: binary\nclasses: [neg, pos]\n"
        "input: {kind: image, size: [16, 16], channels: 1, scale: 255.0}\n"
        "model: {checkpoint: x.csv, format: predictions}\n"
        "sites:\n  - {id: dev, manifest: dev.csv, image_root: images, role: development}\n"
    )
    protocol = load_protocol(tmp_path / "p.yaml")
    writer = _Writer()
    written = write_case_thumbnails(
        writer, [("dev", "case-2"), ("dev", "case-0"), ("dev", "case-3")], protocol, lambda c: f"h{c[-1]}"
    )
    assert written == {("dev", "h2"): "h2", ("dev", "h0"): "h0"}  # case-3's image is missing: none
    assert sorted(writer.files) == ["thumbnails/dev/h0.png", "thumbnails/dev/h2.png"]
    expected = Image.fromarray(pixels["case-2"])
    expected.thumbnail((128, 128), Image.Resampling.LANCZOS)
    got = Image.open(io.BytesIO(writer.files["thumbnails/dev/h2.png"]))
    assert got.size == (128, 102) and np.array_equal(np.asarray(got), np.asarray(expected))
