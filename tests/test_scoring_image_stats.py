"""Per-case columns the scorer adds for the shift analysis (validate.analysis.shift): image statistics
taken before resizing, DICOM equipment tags, and tabular features with NaN for missing.

Every expected value is computed here independently: numpy's mean/std/percentile/histogram on the
pixels as Pillow or pydicom (``pixel_array``) decode them, divided by the protocol's scale; the
features as pandas reads the manifest.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from PIL import Image

from validate.scoring import score_protocol
from validate.scoring.inputs import IMAGE_STAT_COLUMNS, Preprocessing, image_stats, read_case, read_case_with_stats

from test_scoring_support import dicom_dataset, tiny_model, write_factory, write_protocol

PERCENTILES = {"img_p01": 1, "img_p05": 5, "img_p50": 50, "img_p95": 95, "img_p99": 99}


def reference_stats(pixels: np.ndarray, scale: float) -> dict:
    """The documented definitions, written out with plain numpy on float64 ``pixels / scale``."""
    v = np.asarray(pixels, dtype=np.float64) / scale
    want = {"img_height": pixels.shape[0], "img_width": pixels.shape[1], "img_mean": v.mean(), "img_std": v.std()}
    want.update({name: np.percentile(v, q) for name, q in PERCENTILES.items()})
    counts, _ = np.histogram(np.clip(v, 0.0, 1.0), bins=16, range=(0.0, 1.0))
    want.update({f"img_hist_{b:02d}": c / v.size for b, c in enumerate(counts)})
    return want


def assert_stats(got, want: dict) -> None:
    got = (
        dict(zip(IMAGE_STAT_COLUMNS, np.asarray(got, dtype=np.float64), strict=True))
        if not isinstance(got, dict)
        else got
    )
    assert set(want) == set(IMAGE_STAT_COLUMNS)
    for name in IMAGE_STAT_COLUMNS:
        assert got[name] == pytest.approx(want[name], rel=1e-6, abs=1e-9), name


def _dicom(path, pixels, *, bits_stored=None, manufacturer=None, model=None, center=None, width=None):
    ds = dicom_dataset(*pixels.shape)
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    if center is not None:
        ds.WindowCenter, ds.WindowWidth = center, width
    if manufacturer is not None:
        ds.Manufacturer = manufacturer
    if model is not None:
        ds.ManufacturerModelName = model
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_png_stats_are_taken_before_resizing(tmp_path):
    rng = np.random.default_rng(0)
    # a skewed, non-square image with exact 0 and 255 pixels (the histogram's closed last bin)
    arr = (rng.beta(2, 5, size=(37, 23)) * 255).astype(np.uint8)
    arr[0, :3] = [0, 255, 128]
    path = tmp_path / "a.png"
    Image.fromarray(arr).save(path)
    spec = Preprocessing(kind="image", size=(8, 8), channels=1, scale=255.0, mean=(0.5,), std=(0.5,))
    x, stats, equipment = read_case_with_stats(path, spec)
    assert np.array_equal(x, read_case(path, spec)) and x.shape == (1, 8, 8)
    assert equipment == ("", "")
    assert_stats(stats, reference_stats(np.asarray(Image.open(path)), 255.0))
    assert np.asarray(stats)[len(IMAGE_STAT_COLUMNS) - 16 :].sum() == pytest.approx(1.0)


def test_colour_png_is_summarised_as_the_model_sees_it(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    path = tmp_path / "c.png"
    Image.fromarray(rgb).save(path)
    grey = Preprocessing(kind="image", size=(8, 8), channels=1, scale=255.0)
    assert_stats(read_case_with_stats(path, grey)[1], reference_stats(np.asarray(Image.open(path).convert("L")), 255.0))
    colour = Preprocessing(kind="image", size=(8, 8), channels=3, scale=255.0, mean=(0, 0, 0), std=(1, 1, 1))
    assert_stats(read_case_with_stats(path, colour)[1], reference_stats(rgb, 255.0))  # all channels' pixels


def test_sixteen_bit_png_takes_the_float_path(tmp_path):
    arr = np.random.default_rng(2).integers(0, 4096, (19, 31)).astype(np.uint16)
    path = tmp_path / "d.png"
    Image.fromarray(arr).save(path)
    spec = Preprocessing(kind="image", size=(8, 8), channels=1, scale=4095.0)
    assert_stats(read_case_with_stats(path, spec)[1], reference_stats(np.asarray(Image.open(path)), 4095.0))


def test_out_of_range_values_stay_in_the_end_bins():
    x = np.array([-3.0, 0.0, 0.5, 1.0, 7.0, 0.25], dtype=np.float32).reshape(2, 3, 1)
    got = dict(zip(IMAGE_STAT_COLUMNS, image_stats(x, 1.0), strict=True))
    want = reference_stats(x[:, :, 0], 1.0)
    assert_stats(got, want)
    assert got["img_hist_00"] == pytest.approx(2 / 6) and got["img_hist_15"] == pytest.approx(2 / 6)


def test_dicom_stats_and_equipment_tags(tmp_path):
    px = np.random.default_rng(3).integers(0, 4096, (24, 18)).astype(np.uint16)
    path = _dicom(tmp_path / "a.dcm", px, bits_stored=12, manufacturer="ACME Imaging", model="XR-9")
    spec = Preprocessing(kind="image", size=(8, 8), channels=1, scale=4095.0)
    _, stats, equipment = read_case_with_stats(path, spec)
    ds = pydicom.dcmread(path)
    assert equipment == (ds.Manufacturer, ds.ManufacturerModelName) == ("ACME Imaging", "XR-9")
    assert_stats(stats, reference_stats(ds.pixel_array, 4095.0))

    # an 8-bit file whose window maps 0..255 onto itself (as the chest sample's vendor_b site)
    px8 = np.random.default_rng(4).integers(0, 256, (28, 28)).astype(np.uint8)
    path8 = _dicom(tmp_path / "b.dcm", px8, center=128, width=256)
    _, stats8, equipment8 = read_case_with_stats(path8, Preprocessing(kind="dicom", size=(8, 8), scale=255.0))
    assert equipment8 == ("", "")
    assert_stats(stats8, reference_stats(pydicom.dcmread(path8).pixel_array, 255.0))


def test_scored_table_carries_image_columns_and_the_cache_keeps_them(tmp_path):
    rng = np.random.default_rng(5)
    images = [
        (rng.random((h, w)) ** p * 255).astype(np.uint8)
        for h, w, p in [(16, 16, 1.0), (20, 12, 2.0), (16, 16, 0.5), (9, 30, 1.0), (16, 16, 3.0), (16, 16, 1.0)]
    ]
    folder = tmp_path / "data" / "a"
    folder.mkdir(parents=True)
    rows = ["case_id,patient_id,label,image,sex"]
    want, tags = {}, {}
    for i, img in enumerate(images):
        if i in (1, 4):
            name = f"a-{i}.dcm"
            _dicom(folder / name, img, manufacturer="vendor_b" if i == 1 else None, model="SIM-CR 2000")
            tags[f"a-{i}"] = ("vendor_b" if i == 1 else None, "SIM-CR 2000")
            ref = pydicom.dcmread(folder / name).pixel_array
        else:
            name = f"a-{i}.png"
            Image.fromarray(img).save(folder / name)
            tags[f"a-{i}"] = (None, None)
            ref = np.asarray(Image.open(folder / name))
        want[f"a-{i}"] = reference_stats(ref, 255.0)
        rows.append(f"a-{i},p{i},{i % 2},{name},{'FM'[i % 2]}")
    (tmp_path / "data" / "a.csv").write_text("\n".join(rows) + "\n")
    write_factory(tmp_path / "code")
    torch.save(tiny_model().state_dict(), tmp_path / "model_state.pt")
    protocol = write_protocol(
        tmp_path / "protocol.yaml",
        sites=[{"id": "a", "manifest": "data/a.csv", "image_root": "data/a", "role": "development"}],
        input={"kind": "image", "size": [16, 16], "channels": 1, "scale": 255.0, "mean": [0.5], "std": [0.5]},
        model={
            "checkpoint": str(tmp_path / "model_state.pt"),
            "format": "state_dict",
            "factory": "tiny_def:build_model",
            "factory_path": "code",
        },
    )

    first = score_protocol(protocol, out_dir=tmp_path / "out", shard_size=4, batch_size=3)
    pred = pd.read_parquet(tmp_path / "out" / "predictions.parquet")
    assert first.counts["failed"] == 0 and first.counts["cached"] == 0
    for _, row in pred.iterrows():
        assert_stats({c: row[c] for c in IMAGE_STAT_COLUMNS}, want[row["case_id"]])
        got_tags = tuple(None if pd.isna(row[c]) else row[c] for c in ("manufacturer", "manufacturer_model"))
        assert got_tags == tags[row["case_id"]]

    again = score_protocol(protocol, out_dir=tmp_path / "out", shard_size=4, batch_size=3)
    assert again.counts["cached"] == len(images)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out" / "predictions.parquet"), pred)


def test_manifest_manufacturer_wins_over_the_dicom_tag(tmp_path):
    from validate.scoring.outputs import predictions_frame

    cases = pd.DataFrame(
        {
            "case_id": ["x", "y"],
            "site": "s",
            "patient_id": ["x", "y"],
            "y": [0, 1],
            "manufacturer": ["from manifest", "from manifest"],
        }
    )
    equipment = np.array([["tag", "model 1"], ["", ""]], dtype=object)
    out = predictions_frame(
        cases,
        np.zeros((2, 1)),
        ["logit"],
        np.array([True, True]),
        task="binary",
        labels=None,
        attributes=["manufacturer"],
        equipment=equipment,
    )
    assert out["manufacturer"].tolist() == ["from manifest"] * 2
    assert out["manufacturer_model"].tolist() == ["model 1", None]


def test_tabular_features_are_carried_with_nan_for_missing(tmp_path):
    rows = ["case_id,label,age,chol,ca,sex", "c1,1,63,233,0,F", "c2,0,41,,?,M", "c3,1,57,0,2,F", "c4,0,,250,,M"]
    (tmp_path / "s.csv").write_text("\n".join(rows) + "\n")
    write_factory(tmp_path / "code")
    torch.save(tiny_model("build_tabular").state_dict(), tmp_path / "tab.pt")
    protocol = write_protocol(
        tmp_path / "p.yaml",
        sites=[{"id": "s", "manifest": "s.csv", "role": "development"}],
        input={"kind": "tabular", "features": ["age", "chol", "ca"]},
        attributes=["sex", "age"],
        model={"checkpoint": "tab.pt", "factory": "tiny_def:build_tabular", "factory_path": "code"},
    )
    score_protocol(protocol, out_dir=tmp_path / "out")
    pred = pd.read_parquet(tmp_path / "out" / "predictions.parquet")
    manifest = pd.read_csv(tmp_path / "s.csv", na_values=["?"])
    assert list(pred.columns).count("age") == 1  # the attribute of that name is not duplicated
    assert not any(c.startswith("img_") for c in pred.columns)
    for feat in ("age", "chol", "ca"):
        got = pd.to_numeric(pred[feat]).to_numpy(dtype=np.float64)
        expected = manifest[feat].to_numpy(dtype=np.float64)
        np.testing.assert_array_equal(got, expected)  # NaN where the manifest has no value
    assert pred[["chol", "ca"]].isna().sum().tolist() == [1, 2]
