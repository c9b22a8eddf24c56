"""Scoring a segmentation checkpoint (issue #20): logits upsampled to each mask's native size, per-case
metric rows, the pixel histogram, the pixel sample and the worst-case overlays, checked against
independent computations (a numpy bilinear resampler with half-pixel centres, naive loops over
pixels, scipy's distance transform); bad masks and outputs are failures or bad input."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy import ndimage

from validate.errors import InputError
from validate.scoring import score_protocol

H, W = 24, 32  # the masks' native size
h, w = 6, 8  # the model's output size


class FixedMaps(torch.nn.Module):
    """Returns the same logit maps for every image: the upsampling and thresholding are then known."""

    def __init__(self, maps: torch.Tensor):
        super().__init__()
        self.register_buffer("maps", maps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maps.expand(x.shape[0], -1, -1, -1) + 0.0 * x.mean()


def logit_maps(channels: int) -> torch.Tensor:
    rng = np.random.default_rng(7)
    base = rng.normal(0, 3, size=(channels, h, w))  # distinct values: each sampled logit locates its pixel
    return torch.tensor(base, dtype=torch.float32)[None]


def save_model(path: Path, maps: torch.Tensor) -> None:
    model = FixedMaps(maps).eval()
    x = torch.zeros(2, 1, 12, 16)
    torch.export.save(torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("b")},)), str(path))


def bilinear(z: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resampling with half-pixel centres (align_corners=False), written out in numpy: the
    source coordinate of output pixel i is max((i + 0.5)·in/out − 0.5, 0)."""

    def axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0)
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    r0, r1, wr = axis(out_h, z.shape[0])
    c0, c1, wc = axis(out_w, z.shape[1])
    top = z[r0][:, c0] * (1 - wc) + z[r0][:, c1] * wc
    bottom = z[r1][:, c0] * (1 - wc) + z[r1][:, c1] * wc
    return top * (1 - wr[:, None]) + bottom * wr[:, None]


def masks(n: int) -> list[np.ndarray]:
    out = []
    for i in range(n):
        m = np.zeros((H, W), np.uint8)
        m[4 + i % 5 : 14 + i % 7, 6 + i : 20 + i % 4] = 255
        out.append(m)
    out[1][:] = 0  # an empty reference: scored by the empty-mask policy
    return out


def workspace(tmp_path: Path, n: int = 8, *, activation: str = "sigmoid", extra: str = "", labels="[head]") -> Path:
    root = tmp_path / "site"
    root.mkdir()
    rows = []
    for i, m in enumerate(masks(n)):
        Image.fromarray((np.arange(H * W).reshape(H, W) % 251).astype(np.uint8)).save(root / f"img{i}.png")
        Image.fromarray(m).save(root / f"mask{i}.png")
        rows.append({"case_id": f"c{i}", "patient_id": f"p{i // 2}", "image": f"img{i}.png", "mask": f"mask{i}.png",
                     "pixel_size_mm": 0.5, "band": "a" if i % 2 else "b"})  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "dev.csv", index=False)
    channels = 2 if activation == "softmax" else 1
    save_model(tmp_path / "model.pt2", logit_maps(channels))
    (tmp_path / "p.yaml").write_text(
        textwrap.dedent(
            f"""\
            name: seg
            task: segmentation
            labels: {labels}
            input: {{kind: image, size: [12, 16]}}
            segmentation:
              label_values: {{head: 255}}
              activation: {activation}
              spacing_column: pixel_size_mm
              nsd_tolerances_mm: [1.0]
              pixel_sample: 40
              worst_cases: 3
            {extra}
            model: {{checkpoint: model.pt2, format: export}}
            attributes: [band]
            sites:
              - {{id: dev, manifest: dev.csv, image_root: site, role: development}}
            """
        )
    )
    return tmp_path / "p.yaml"


def expected_probability(activation: str) -> tuple[np.ndarray, np.ndarray]:
    """The label's logit and probability maps at the masks' size, computed without torch."""
    maps = logit_maps(2 if activation == "softmax" else 1)[0].double().numpy()
    up = np.stack([bilinear(m, H, W) for m in maps])
    if activation == "sigmoid":
        z = up[0]
    else:
        z = up[1] - up[0]  # two classes: log p1 − log p0
    return z, 1 / (1 + np.exp(-z))


def surface_distances(a: np.ndarray, b: np.ndarray, spacing: float) -> np.ndarray:
    sa = a & ~ndimage.binary_erosion(a)
    sb = b & ~ndimage.binary_erosion(b)
    return ndimage.distance_transform_edt(~sb, sampling=spacing)[sa]


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_rows_match_independent_computation(tmp_path, activation):
    res = score_protocol(workspace(tmp_path, activation=activation), out_dir=tmp_path / "out", device="cpu")
    df = pd.read_parquet(tmp_path / "out" / "predictions.parquet")
    assert len(df) == 8 and list(df["label"]) == ["head"] * 8 and res.counts["scored"] == 8
    z, p = expected_probability(activation)
    pred = p >= 0.5
    assert pred.any() and not pred.all()
    for i, ref in enumerate(m == 255 for m in masks(8)):
        row = df.iloc[i]
        assert row["case_id"] == f"c{i}" and row["patient_id"] == f"p{i // 2}"
        assert row["spacing_y_mm"] == row["spacing_x_mm"] == 0.5
        assert row["area_ref_mm2"] == pytest.approx(ref.sum() * 0.25, abs=1e-12)
        assert row["area_pred_mm2"] == pytest.approx(pred.sum() * 0.25, abs=1e-12)
        assert row["area_expected_mm2"] == pytest.approx(p.sum() * 0.25, rel=1e-6)
        if not ref.any():  # one mask empty: the worst case, distances the image diagonal
            assert row["dice"] == 0 and row["ref_empty"] == 1
            assert row["hd_mm"] == pytest.approx(np.hypot(H * 0.5, W * 0.5), abs=1e-9)
            continue
        assert row["dice"] == pytest.approx(2 * (pred & ref).sum() / (pred.sum() + ref.sum()), abs=1e-12)
        d = np.concatenate([surface_distances(pred, ref, 0.5), surface_distances(ref, pred, 0.5)])
        assert row["hd_mm"] == pytest.approx(d.max(), abs=1e-9)
        assert row["assd_mm"] == pytest.approx(d.mean(), abs=1e-9)
        assert row["nsd_1mm"] == pytest.approx((d <= 1.0).mean(), abs=1e-12)
    assert {"img_mean", "band"} <= set(df.columns)


def test_histogram_is_every_pixel_in_right_closed_bins(tmp_path):
    score_protocol(workspace(tmp_path), out_dir=tmp_path / "out", device="cpu")
    hist = pd.read_parquet(tmp_path / "out" / "pixel_histogram.parquet")
    _, p = expected_probability("sigmoid")
    for i, m in enumerate(masks(8)):
        got = hist[hist["case_id"] == f"c{i}"].set_index("bin")
        assert got["n"].sum() == H * W
        for b in range(20):  # naive: pixel by pixel, bin (b/20, (b+1)/20], 0 in bin 0
            lo, hi = b / 20, (b + 1) / 20
            inside = [
                (pp, yy)
                for pp, yy in zip(p.ravel(), (m == 255).ravel(), strict=True)
                if (lo < pp <= hi) or (b == 0 and pp == 0)
            ]
            if not inside:
                assert b not in got.index
                continue
            assert got.loc[b, "n"] == len(inside)
            assert got.loc[b, "sum_p"] == pytest.approx(sum(pp for pp, _ in inside), rel=1e-6)
            assert got.loc[b, "sum_y"] == sum(yy for _, yy in inside)
    assert set(hist["site"]) == {"dev"} and set(hist["label"]) == {"head"}


def test_pixel_sample_is_reproducible_and_true_to_the_pixels(tmp_path):
    protocol = workspace(tmp_path)
    score_protocol(protocol, out_dir=tmp_path / "a", device="cpu")
    score_protocol(protocol, out_dir=tmp_path / "b", device="cpu")
    a = pd.read_parquet(tmp_path / "a" / "pixel_sample.parquet")
    b = pd.read_parquet(tmp_path / "b" / "pixel_sample.parquet")
    pd.testing.assert_frame_equal(a, b)
    assert a["logit"].dtype == np.float32 and a["y"].dtype == np.int8
    z, _ = expected_probability("sigmoid")
    for i, m in enumerate(masks(8)):
        s = a[a["case_id"] == f"c{i}"]
        assert len(s) == 40
        for logit, y in zip(s["logit"], s["y"], strict=True):
            where = np.flatnonzero(np.abs(z.ravel() - logit) < 1e-5)
            assert len(where) >= 1
            assert {int(m.ravel()[k] == 255) for k in where} == {int(y)}
        assert len(set(zip(s["logit"], s["y"], strict=True))) > 30  # drawn without replacement (few exact ties)
    seeds = [set(a[a["case_id"] == f"c{i}"]["logit"]) for i in range(2)]
    assert seeds[0] != seeds[1]  # each case its own draw


def test_overlays_keep_the_lowest_dice(tmp_path):
    score_protocol(workspace(tmp_path), out_dir=tmp_path / "out", device="cpu")
    df = pd.read_parquet(tmp_path / "out" / "predictions.parquet")
    ov = pd.read_parquet(tmp_path / "out" / "overlays.parquet")
    worst = df.sort_values("dice", kind="stable").head(3)
    assert list(ov["case_id"]) == list(worst["case_id"]) and list(ov["dice"]) == list(worst["dice"])
    _, p = expected_probability("sigmoid")
    all_masks = masks(8)
    for _, row in ov.iterrows():
        assert (row["height"], row["width"]) == (H, W)  # already within 128 px: kept as is
        ref = np.unpackbits(np.frombuffer(row["ref"], np.uint8))[: H * W].reshape(H, W)
        pred = np.unpackbits(np.frombuffer(row["pred"], np.uint8))[: H * W].reshape(H, W)
        np.testing.assert_array_equal(ref, all_masks[int(row["case_id"][1:])] == 255)
        np.testing.assert_array_equal(pred, p >= 0.5)


def test_downsample_is_nearest_within_128():
    from validate.scoring.segmentation import downsample

    m = np.arange(300 * 200).reshape(300, 200)
    small = downsample(m)
    assert small.shape == (128, 85)
    rows = np.minimum(((np.arange(128) + 0.5) * 300 / 128).astype(int), 299)
    cols = np.minimum(((np.arange(85) + 0.5) * 200 / 85).astype(int), 199)
    assert all(small[i, j] == m[rows[i], cols[j]] for i in range(128) for j in range(85))


def test_bad_masks_are_failures(tmp_path):
    protocol = workspace(tmp_path)
    Image.fromarray(np.full((H, W), 7, np.uint8)).save(tmp_path / "site" / "mask2.png")
    (tmp_path / "site" / "mask3.png").unlink()
    res = score_protocol(protocol, out_dir=tmp_path / "out", device="cpu")
    fails = res.failures.set_index("case_id")
    assert "[7]" in fails.loc["c2", "reason"] and "label_values" in fails.loc["c2", "reason"]
    assert "not found" in fails.loc["c3", "reason"] and str(tmp_path) not in fails.loc["c3", "reason"]
    df = pd.read_parquet(tmp_path / "out" / "predictions.parquet")
    assert sorted(df["case_id"]) == ["c0", "c1", "c4", "c5", "c6", "c7"]
    assert res.counts["failed"] == 2


def test_wrong_output_channels_is_bad_input(tmp_path):
    protocol = workspace(tmp_path)
    save_model(tmp_path / "model.pt2", logit_maps(3))
    with pytest.raises(InputError, match=r"\[N, 1, H, W\]"):
        score_protocol(protocol, out_dir=tmp_path / "out", device="cpu")


def test_png_without_spacing_is_bad_input(tmp_path):
    protocol = workspace(tmp_path)
    protocol.write_text(protocol.read_text().replace("  spacing_column: pixel_size_mm\n", ""))
    with pytest.raises(InputError) as exc:
        score_protocol(protocol, out_dir=tmp_path / "out", device="cpu")
    assert exc.value.field == "segmentation.spacing_column" and "PixelSpacing" in str(exc.value)


def test_bad_pixel_size_is_reported(tmp_path):
    protocol = workspace(tmp_path)
    df = pd.read_csv(tmp_path / "dev.csv")
    df.loc[3, "pixel_size_mm"] = -1
    df.to_csv(tmp_path / "dev.csv", index=False)
    with pytest.raises(Exception) as exc:
        score_protocol(protocol, out_dir=tmp_path / "out", device="cpu")
    assert "pixel size" in str(exc.value) and "pixel_size_mm" in str(exc.value)


def test_mask_outside_the_image_root_is_refused(tmp_path):
    protocol = workspace(tmp_path)
    df = pd.read_csv(tmp_path / "dev.csv")
    df.loc[0, "mask"] = "../dev.csv"
    df.to_csv(tmp_path / "dev.csv", index=False)
    with pytest.raises(Exception) as exc:
        score_protocol(protocol, out_dir=tmp_path / "out", device="cpu")
    assert "mask path" in str(exc.value) and "outside the image root" in str(exc.value)


class FixedProbabilities(FixedMaps):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(super().forward(x))


def test_probability_output_is_upsampled_as_logits(tmp_path):
    protocol = workspace(tmp_path)
    protocol.write_text(protocol.read_text().replace("format: export}", "format: export, output: probabilities}"))
    model = FixedProbabilities(logit_maps(1)).eval()
    x = torch.zeros(2, 1, 12, 16)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("b")},))
    torch.export.save(program, str(tmp_path / "model.pt2"))
    score_protocol(protocol, out_dir=tmp_path / "out", device="cpu")
    df = pd.read_parquet(tmp_path / "out" / "predictions.parquet")
    _, p = expected_probability("sigmoid")  # bilinear on the logits, not on the probabilities
    for i, ref in enumerate(m == 255 for m in masks(8)):
        assert df["area_expected_mm2"].iloc[i] == pytest.approx(p.sum() * 0.25, rel=1e-5)
        pred = p >= 0.5
        assert df["area_pred_mm2"].iloc[i] == pytest.approx(pred.sum() * 0.25, abs=1e-12)
        if ref.any():
            assert df["dice"].iloc[i] == pytest.approx(2 * (pred & ref).sum() / (pred.sum() + ref.sum()), abs=1e-12)


def test_mask_of_another_size_than_its_image_is_a_failure(tmp_path):
    """The image's pixel spacing holds only at the image's size: a mask of another size (the model's
    input size here, 16x12) must fail its case, naming both sizes, not be scored at its own size."""
    protocol = workspace(tmp_path)
    small = np.zeros((12, 16), np.uint8)
    small[3:8, 4:10] = 255
    Image.fromarray(small).save(tmp_path / "site" / "mask2.png")
    res = score_protocol(protocol, out_dir=tmp_path / "out", device="cpu")
    fails = res.failures.set_index("case_id")
    assert list(fails.index) == ["c2"]
    reason = fails.loc["c2", "reason"]
    assert "16x12" in reason and f"{W}x{H}" in reason
    df = pd.read_parquet(tmp_path / "out" / "predictions.parquet")
    assert "c2" not in set(df["case_id"]) and len(df) == 7
    sample = pd.read_parquet(tmp_path / "out" / "pixel_sample.parquet")
    assert "c2" not in set(sample["case_id"])
