"""`validate run` stores thumbnails of each site's most confident errors for image protocols.

A tiny two-site image protocol (simulated: random images and logits unrelated to the labels, so about
half the cases are errors) run from a predictions file: a PNG site and a 12-bit DICOM site. Expected
cases are ranked here from the definition (binary call p >= 0.5; confidence = probability of the
wrong call; top 20 per site), names are HMAC-SHA256 computed here with the standard library, and
pixels are compared with Pillow's own thumbnail (PNG) and pydicom's pixel array (DICOM).
"""

from __future__ import annotations

import hashlib
import hmac
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from validate.pipeline import run_protocol

from test_scoring_support import dicom_dataset

KEY = "thumbnail-test-key"
N = 50  # cases per site: about 25 errors, so the top-20 cut matters
TOP = 20
MARK = "RAWIMGNAME"  # in every image file name; must not appear in any file of the bundle


def _dicom(path: Path, pixels: np.ndarray) -> None:
    ds = dicom_dataset(*pixels.shape)
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("thumbs")
    rng = np.random.default_rng(7)
    rows, originals = [], {}
    for site, _role, suffix in (("png_site", "development", ".png"), ("dcm_site", "external", ".dcm")):
        root = tmp / f"images_{site}"
        root.mkdir()
        manifest = []
        for i in range(N):
            case = f"MRN-{site}-{i:03d}"
            name = f"{MARK}_{site}_{i:03d}{suffix}"
            if suffix == ".png":  # 8-bit grey, larger than a thumbnail: must be reduced
                px = rng.integers(0, 256, (160, 200), dtype=np.uint8)
                Image.fromarray(px).save(root / name)
            else:  # 12-bit values: outside 0..scale, so stretched min to max
                px = rng.integers(0, 4096, (16, 16)).astype(np.uint16)
                _dicom(root / name, px)
            originals[(site, case)] = root / name
            y = int(rng.random() < 0.5)
            manifest.append({"case_id": case, "patient_id": f"P{site}{i}", "label": ["neg", "pos"][y], "image": name})
            rows.append(
                {"case_id": case, "site": site, "patient_id": f"P{site}{i}", "y": y, "logit": float(rng.normal(0, 2))}
            )
        pd.DataFrame(manifest).to_csv(tmp / f"{site}.csv", index=False)
    pd.DataFrame(rows).to_csv(tmp / "predictions.csv", index=False)
    protocol = tmp / "tiny.yaml"
    protocol.write_text("""name: tiny
version: "0.1"
task: binary
classes: [neg, pos]
input: {kind: image, size: [16, 16], channels: 1, scale: 255.0, mean: [0.5], std: [0.5]}
model: {checkpoint: predictions.csv, format: predictions}
sites:
  - {id: png_site, manifest: png_site.csv, image_root: images_png_site, role: development}
  - {id: dcm_site, manifest: dcm_site.csv, image_root: images_dcm_site, role: external}
metrics: {n_bootstrap: 10, seed: 0, bins: 5, thresholds: [0.5]}
calibration: {designs: [held-out], methods: [temperature], fit_on: [png_site], seed: 0}
""")
    mp = pytest.MonkeyPatch()
    mp.setenv("VALIDATE_CASE_ID_KEY", KEY)
    try:
        result = run_protocol(protocol, out=tmp / "runs" / "tiny")
    finally:
        mp.undo()
    return {"bundle": result.bundle, "rows": pd.DataFrame(rows), "originals": originals, "runs": tmp / "runs"}


def _hashed(case_id: str) -> str:
    return hmac.new(KEY.encode(), case_id.encode(), hashlib.sha256).hexdigest()[:20]


def _expected_top(rows: pd.DataFrame) -> dict[str, list[str]]:
    out = {}
    for site, g in rows.groupby("site"):
        p = 1.0 / (1.0 + np.exp(-g["logit"].to_numpy()))
        call = (p >= 0.5).astype(int)
        conf = np.where(call == 1, p, 1 - p)
        wrong = call != g["y"].to_numpy()
        order = np.argsort(-conf[wrong], kind="stable")[:TOP]
        out[site] = list(g["case_id"].to_numpy()[wrong][order])
    return out


def test_thumbnails_of_the_top_errors_per_site_are_in_the_bundle(image_run):
    bundle = image_run["bundle"]
    expected = _expected_top(image_run["rows"])
    for site, cases in expected.items():
        assert len(cases) == TOP  # the fixture has more errors than the cut
        stored = sorted(p.name for p in (bundle / "thumbnails" / site).iterdir())
        assert stored == sorted(f"{_hashed(c)}.png" for c in cases)
        hashed_ids = set(pd.read_parquet(bundle / "predictions.parquet")["case_id"])
        assert {_hashed(c) for c in cases} <= hashed_ids
        for case in cases:
            with Image.open(bundle / "thumbnails" / site / f"{_hashed(case)}.png") as im:
                assert im.format == "PNG" and im.mode == "L" and max(im.size) <= 128
                got = np.asarray(im)
            original = image_run["originals"][(site, case)]
            if site == "png_site":
                with Image.open(original) as ref:
                    ref.thumbnail((128, 128), Image.Resampling.LANCZOS)
                    np.testing.assert_array_equal(got, np.asarray(ref))
            else:
                import pydicom

                raw = pydicom.dcmread(original).pixel_array.astype(np.float64)
                ref = np.rint((raw - raw.min()) / (raw.max() - raw.min()) * 255)
                np.testing.assert_array_equal(got, ref.astype(np.uint8))


def test_no_image_path_or_file_name_enters_the_bundle(image_run):
    for f in image_run["bundle"].rglob("*"):
        if f.is_file():
            assert MARK.encode() not in f.read_bytes(), f
            assert MARK not in str(f.relative_to(image_run["bundle"]))


def test_the_dashboard_shows_the_bundles_thumbnails_for_its_top_cases(image_run):
    from dashboard.data import confident_errors, load_run, thumbnail

    run = load_run(image_run["bundle"], image_run["runs"])
    top, _ = confident_errors(run, per_site=TOP)
    assert len(top) == 2 * TOP and "image" not in top.columns
    for _, case in top.iterrows():
        png = thumbnail(run, case["site"], case["case_id"], None)
        assert png is not None and Image.open(io.BytesIO(png)).format == "PNG"


def test_cases_json_holds_the_ranking_and_the_dashboard_lists_it_without_predictions(image_run, tmp_path):
    """cases.json: per site the top errors (hashed ids, confidence, thumbnail name) ranked as defined
    above; the dashboard's Cases data come from it alone (predictions.parquet removed)."""
    import json
    import shutil

    from dashboard.data import confident_errors, load_run

    data = json.loads((image_run["bundle"] / "cases.json").read_text())
    assert data["schema"] == "validate.cases/1" and data["per_site"] == TOP
    (ranking,) = data["rankings"]
    assert ranking["label"] is None and ranking["threshold"] == 0.5
    rows = image_run["rows"]
    for site, cases in _expected_top(rows).items():
        entry = ranking["sites"][site]
        g = rows[rows["site"] == site]
        p = 1.0 / (1.0 + np.exp(-g["logit"].to_numpy()))
        assert entry["cases"] == N and entry["errors"] == int(((p >= 0.5).astype(int) != g["y"]).sum())
        assert [c["case_id"] for c in entry["top"]] == [_hashed(c) for c in cases]
        assert [c["thumbnail"] for c in entry["top"]] == [_hashed(c) for c in cases]
        by_id = dict(zip(g["case_id"], p, strict=True))
        assert [c["confidence"] for c in entry["top"]] == pytest.approx(
            [max(by_id[c], 1 - by_id[c]) for c in cases], abs=1e-12
        )
    copy = tmp_path / "runs" / "copy"
    shutil.copytree(image_run["bundle"], copy)
    (copy / "predictions.parquet").unlink()
    top, counts = confident_errors(load_run(copy, copy.parent), per_site=5)
    assert len(top) == 2 * 5 and set(counts["cases"]) == {N}
    assert list(top[top["site"] == "png_site"]["case_id"]) == [_hashed(c) for c in _expected_top(rows)["png_site"][:5]]


# ---- kept case ids of any length or character --------------------------------------------------------


def _sha_name(case_id: str) -> str:
    return "id-" + hashlib.sha256(case_id.encode()).hexdigest()[:40]


def test_thumbnail_names_are_bounded_and_plain():
    from validate.thumbnails import thumbnail_name

    assert thumbnail_name("MRN-001.a_b") == "MRN-001.a_b"
    long_id = "X" * 300
    assert thumbnail_name(long_id) == _sha_name(long_id)
    for odd in ("../../etc/passwd", ".hidden", "a/b", "with space", "é"):
        assert thumbnail_name(odd) == _sha_name(odd)
    # a plain name that looks like a hashed one is hashed too: no two ids share a file
    lookalike = "id-" + "0" * 40
    assert thumbnail_name(lookalike) == _sha_name(lookalike)


def test_kept_case_ids_of_300_characters_get_hashed_thumbnail_names(tmp_path):
    """Regression: `keep_case_ids: true` with 300-character ids crashed the run (file name too long)."""
    from dashboard.data import load_run, thumbnail

    rng = np.random.default_rng(3)
    (tmp_path / "imgs").mkdir()
    manifest, rows = [], []
    for i in range(30):
        case = "X" * 290 + f"{i:010d}"
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(tmp_path / "imgs" / f"i{i}.png")
        manifest.append({"case_id": case, "patient_id": f"p{i}", "label": ["neg", "pos"][i % 2], "image": f"i{i}.png"})
        for site in ("s", "t"):
            rows.append(
                {"case_id": case, "site": site, "patient_id": f"p{i}", "y": i % 2, "logit": float(rng.normal(0, 2))}
            )
    pd.DataFrame(manifest).to_csv(tmp_path / "s.csv", index=False)
    pd.DataFrame(rows).to_csv(tmp_path / "pred.csv", index=False)
    protocol = tmp_path / "p.yaml"
    protocol.write_text("""name: long
version: "0.1"
task: binary
classes: [neg, pos]
keep_case_ids: true
input: {kind: image, size: [16, 16], channels: 1, scale: 255.0}
model: {checkpoint: pred.csv, format: predictions}
sites:
  - {id: s, manifest: s.csv, image_root: imgs, role: development}
  - {id: t, manifest: s.csv, image_root: imgs, role: external}
metrics: {n_bootstrap: 10, seed: 0, bins: 5, thresholds: [0.5]}
calibration: {designs: [held-out], methods: [temperature], fit_on: [s], seed: 0}
""")
    result = run_protocol(protocol, out=tmp_path / "runs" / "long")
    stored = sorted(p.name for p in (result.bundle / "thumbnails" / "s").iterdir())
    assert stored and all(len(name) == len("id-") + 40 + len(".png") for name in stored)
    ids = {_sha_name(c) + ".png": c for c in pd.read_csv(tmp_path / "s.csv")["case_id"]}
    assert set(stored) <= set(ids)
    run = load_run(result.bundle, tmp_path / "runs")
    for name in stored:  # the dashboard finds each by the same rule (no image root needed)
        assert thumbnail(run, "s", ids[name], None) is not None
