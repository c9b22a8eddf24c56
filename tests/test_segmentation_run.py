"""A segmentation run end to end (`validate run` → bundle → `validate gate`): metrics.json BLOCKs,
segmentation.json, the side files with hashed case ids, the gates (absolute and compare: baseline)
and their exit codes."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")


H, W = 24, 32


class FixedMaps(torch.nn.Module):
    """The same logit map for every image (a disc of positive logits): scores are known in advance."""

    def __init__(self, maps):
        super().__init__()
        self.register_buffer("maps", maps)

    def forward(self, x):
        return self.maps.expand(x.shape[0], -1, -1, -1) + 0.0 * x.mean()


def _model(path: Path, radius: float) -> None:
    yy, xx = np.mgrid[0:12, 0:16]
    z = np.where((yy - 6) ** 2 + (xx - 8) ** 2 <= radius**2, 4.0, -4.0)
    maps = torch.tensor(z, dtype=torch.float32)[None, None]
    x = torch.zeros(2, 1, 12, 16)
    program = torch.export.export(FixedMaps(maps).eval(), (x,), dynamic_shapes=({0: torch.export.Dim("b")},))
    torch.export.save(program, str(path))


def workspace(tmp_path: Path, gates: str) -> Path:
    from PIL import Image

    root = tmp_path / "images"
    root.mkdir()
    rows = []
    yy, xx = np.mgrid[0:H, 0:W]
    for i in range(36):
        mask = ((yy - 12) ** 2 + (xx - 16) ** 2 <= (7 + i % 3) ** 2).astype(np.uint8) * 255
        Image.fromarray((np.arange(H * W).reshape(H, W) % 251).astype(np.uint8)).save(root / f"img{i}.png")
        Image.fromarray(mask).save(root / f"mask{i}.png")
        rows.append({"case_id": f"c{i}", "patient_id": f"p{i // 2}", "image": f"img{i}.png", "mask": f"mask{i}.png",
                     "pixel_size_mm": 0.5})  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "cases.csv", index=False)
    _model(tmp_path / "good.pt2", 3.5)  # about the reference disc, at the model's half resolution
    _model(tmp_path / "bad.pt2", 1.0)  # a far too small disc
    text = """\
        name: seg_run
        task: segmentation
        labels: [head]
        input: {kind: image, size: [12, 16]}
        segmentation:
          label_values: {head: 255}
          spacing_column: pixel_size_mm
          nsd_tolerances_mm: [1.0]
          pixel_sample: 32
          worst_cases: 2
        model: {checkpoint: good.pt2, format: export, baseline: {checkpoint: bad.pt2, format: export}}
        metrics: {n_bootstrap: 200, min_cases: 10}
        sites:
          - {id: dev, manifest: cases.csv, image_root: images, role: development}
          - {id: ext, manifest: cases.csv, image_root: images, role: external}
        gates:
        """
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(text) + textwrap.indent(textwrap.dedent(gates), "  "))
    return path


def test_run_writes_the_segmentation_bundle_and_judges_its_gates(tmp_path):
    from validate.pipeline import regate, run_protocol

    gates = """\
        - {metric: dice, scope: each_site, min: 0.5, on: ci_low}
        - {metric: hd95_mm, scope: each_site, max: 20}
        - {metric: dice, scope: each_site, min: -0.02, on: ci_low, compare: baseline}
        """
    result = run_protocol(workspace(tmp_path, gates), out=tmp_path / "bundle", cache_dir=tmp_path / "cache")
    bundle = result.bundle
    metrics = json.loads((bundle / "metrics.json").read_text())
    assert metrics["task"] == "segmentation" and metrics["sites"]["ext"]["n"] == 36
    assert metrics["sites"]["ext"]["n_patients"] == 18
    pred = pd.read_parquet(bundle / "predictions.parquet")
    dice = pred.loc[pred["site"] == "ext", "dice"].to_numpy()
    assert metrics["sites"]["ext"]["dice"]["estimate"] == pytest.approx(dice.mean(), abs=1e-12)
    seg = json.loads((bundle / "segmentation.json").read_text())
    ids = set(pred["case_id"])
    assert all(c["case_id"] in ids for c in seg["worst_cases"]["ext"])  # hashed as predictions.parquet
    for name in ("pixel_histogram.parquet", "pixel_sample.parquet", "overlays.parquet"):
        assert set(pd.read_parquet(bundle / name)["case_id"]) <= ids
    assert seg["comparison"]["sites"]["ext"]["dice"]["estimate"] > 0  # the good model beats the bad one
    assert result.exit_code == 0, result.gates.to_markdown()
    _, again = regate(bundle)
    assert [r.verdict for r in again.rows] == [r.verdict for r in result.gates.rows]


def test_a_degraded_model_fails_its_segmentation_gate(tmp_path):
    from validate.pipeline import run_protocol

    path = workspace(tmp_path, "- {metric: dice, scope: each_site, min: 0.5, on: ci_low}\n")
    path.write_text(path.read_text().replace("checkpoint: good.pt2", "checkpoint: bad.pt2"))
    result = run_protocol(path, out=tmp_path / "bundle", cache_dir=tmp_path / "cache")
    assert result.exit_code == 1
    assert {r.site: r.verdict for r in result.gates.rows if r.metric == "dice"} == {"dev": "fail", "ext": "fail"}


def test_masks_whose_values_no_label_declares_fail_every_site_never_pass(tmp_path):
    # a typo in label_values: every case fails to read, and the run must say so as a FAIL (exit 1) with the
    # reason, not pass on an empty table, not stop as malformed predictions, not pair an empty baseline
    from validate.pipeline import run_protocol

    path = workspace(tmp_path, "- {metric: hd95_mm, scope: each_site, max: 20}\n")
    path.write_text(path.read_text().replace("label_values: {head: 255}", "label_values: {head: 1}"))
    result = run_protocol(path, out=tmp_path / "bundle", cache_dir=tmp_path / "cache")
    assert result.exit_code == 1
    rows = [r for r in result.gates.rows if r.site in ("dev", "ext")]
    assert rows and all(r.verdict == "fail" for r in rows)
    assert all("does not declare" in r.reason for r in rows)
    failures = pd.read_csv(result.bundle / "failures.csv")
    assert len(failures) == 72 and failures["reason"].str.contains("pixel value").all()
