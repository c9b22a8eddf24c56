"""The chest sample sites: files, leakage, documented shifts and sizes, and the shipped model.

Every check here is made against an independent source: the PneumoniaMNIST arrays in ../shared/data,
the shift formulas as README.md states them (re-implemented here, not imported from make_sites.py),
pydicom's own LUT functions, and the README's site table.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CHEST = REPO / "sample_sites" / "chest"
PROTOCOL = REPO / "protocols" / "chest.yaml"
ORIGINAL_SITES = ("development", "control", "low_prevalence")  # stored without any pixel change


def _hash(img: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(img, dtype=np.uint8).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def npz(shared_data):
    path = shared_data / "pneumoniamnist" / "pneumoniamnist.npz"
    if not path.exists():
        pytest.skip(f"{path} not found")
    with np.load(path) as d:
        return {k: d[k] for k in d.files}


@pytest.fixture(scope="module")
def sites():
    """site id -> (rows of the manifest, image root), as protocols/chest.yaml names them."""
    proto = yaml.safe_load(PROTOCOL.read_text())
    out = {}
    for s in proto["sites"]:
        manifest = (PROTOCOL.parent / s["manifest"]).resolve()
        root = (PROTOCOL.parent / s["image_root"]).resolve()
        with open(manifest, newline="") as fh:
            out[s["id"]] = (list(csv.DictReader(fh)), root)
    return out


def _read(path: Path) -> np.ndarray:
    if path.suffix == ".dcm":
        import pydicom

        return pydicom.dcmread(path).pixel_array
    with Image.open(path) as im:
        assert im.mode == "L", f"{path}: mode {im.mode}, expected 8-bit grey"
        return np.asarray(im)


@pytest.fixture(scope="module")
def images(sites):
    """(site, case_id) -> decoded uint8 image."""
    return {(sid, r["case_id"]): _read(root / r["image"]) for sid, (rows, root) in sites.items() for r in rows}


def _source(npz, row) -> np.ndarray:
    assert row["source_split"] in ("val", "test"), row
    return npz[f"{row['source_split']}_images"][int(row["source_index"])]


def test_manifests_reference_files_inside_their_roots(sites):
    assert set(sites) == {"development", "control", "vendor_b", "noisy_blur", "low_res", "drift_site", "low_prevalence"}
    for sid, (rows, root) in sites.items():
        ids = [r["case_id"] for r in rows]
        assert len(ids) == len(set(ids)), sid
        referenced = set()
        for r in rows:
            path = (root / r["image"]).resolve()
            assert path.is_relative_to(root) and path.is_file(), (sid, r["image"])
            referenced.add(path)
            assert r["label"] in ("normal", "pneumonia")
            assert r["sex"] in ("F", "M") and 18 <= int(r["age"]) <= 95
            assert r["patient_id"].startswith("sim-")
            assert r["manufacturer"] == ("vendor_b" if sid == "vendor_b" else "vendor_a")
        assert referenced == set(root.iterdir()), f"{sid}: stray or missing files in {root}"


def test_images_decode_to_28x28_uint8(images):
    for key, img in images.items():
        assert img.shape == (28, 28) and img.dtype == np.uint8, key


def test_original_sites_are_pixel_identical_to_the_npz(sites, images, npz):
    for sid in ORIGINAL_SITES:
        for r in sites[sid][0]:
            src = _source(npz, r)
            assert np.array_equal(images[sid, r["case_id"]], src), (sid, r["case_id"])
            assert int(npz[f"{r['source_split']}_labels"][int(r["source_index"])][0]) == (r["label"] == "pneumonia")


def test_labels_match_the_source_at_every_site(sites, npz):
    for sid, (rows, _) in sites.items():
        for r in rows:
            y = int(npz[f"{r['source_split']}_labels"][int(r["source_index"])][0])
            assert ("normal", "pneumonia")[y] == r["label"], (sid, r["case_id"])


def test_no_training_image_at_any_site_and_sites_are_disjoint(sites, images, npz):
    train = {_hash(x) for x in npz["train_images"]}
    seen = {}
    for sid, (rows, _) in sites.items():
        for r in rows:
            src = _hash(_source(npz, r))
            assert src not in train, f"{sid} {r['case_id']}: its source image is in the training split"
            assert _hash(images[sid, r["case_id"]]) not in train, (sid, r["case_id"])
            assert src not in seen, f"{sid} {r['case_id']}: same source image as {seen.get(src)}"
            seen[src] = (sid, r["case_id"])


def test_vendor_b_is_the_documented_tone_curve(sites, images, npz):
    # README: window [0.10, 1.00] of full scale, clipped, then gamma 0.6, rounded to 8 bits
    for r in sites["vendor_b"][0]:
        x = np.clip((_source(npz, r) / 255.0 - 0.10) / 0.90, 0, 1)
        expected = np.clip(np.round(255 * x**0.6), 0, 255).astype(np.uint8)
        assert np.array_equal(images["vendor_b", r["case_id"]], expected), r["case_id"]


def test_low_res_is_box_down_bilinear_up(sites, images, npz):
    for r in sites["low_res"][0]:
        small = Image.fromarray(_source(npz, r)).resize((14, 14), Image.Resampling.BOX)
        expected = np.asarray(small.resize((28, 28), Image.Resampling.BILINEAR))
        assert np.array_equal(images["low_res", r["case_id"]], expected), r["case_id"]


def test_noisy_blur_has_the_documented_blur_and_noise(sites, images, npz):
    from scipy.ndimage import gaussian_filter

    resid = [
        images["noisy_blur", r["case_id"]] - gaussian_filter(_source(npz, r).astype(float), 1.0)
        for r in sites["noisy_blur"][0]
    ]
    resid = np.concatenate([x.ravel() for x in resid])
    assert abs(resid.mean()) < 0.5
    assert 14.0 < resid.std() < 16.0  # noise sd 15, rounding and rare clipping aside


def test_drift_site_dates_and_documented_drift(sites, images, npz):
    rows = sites["drift_site"][0]
    months = Counter(int(r["acquired_at"][5:7]) for r in rows)
    assert all(r["acquired_at"].startswith("2024-") for r in rows)
    assert dict(months) == {m: 16 for m in range(1, 13)}
    assert [r["acquired_at"] for r in rows] == sorted(r["acquired_at"] for r in rows)
    resid = defaultdict(list)
    for r in rows:
        month, src = int(r["acquired_at"][5:7]), _source(npz, r).astype(float)
        img = images["drift_site", r["case_id"]]
        k = max(0, month - 6)
        if k == 0:
            assert np.array_equal(img, src), r["case_id"]
            continue
        # README: contrast 1 - 0.08 k about the image's own mean, plus noise sd 3 k
        mu = src.mean()
        resid[k].append((img - (mu + (1 - 0.08 * k) * (src - mu))).ravel())
    for k, parts in resid.items():
        sd = np.concatenate(parts).std()
        assert abs(sd - 3 * k) < 0.1 * 3 * k + 0.3, (k, sd)
    assert all(r.get("acquired_at") is None for sid, (rs, _) in sites.items() if sid != "drift_site" for r in rs)


def test_simulated_patients(sites):
    for sid, (rows, _) in sites.items():
        by_patient = defaultdict(list)
        for r in rows:
            by_patient[r["patient_id"]].append(r)
        sizes = Counter(len(v) for v in by_patient.values())
        assert set(sizes) == {1, 2}, sid
        assert 0.07 < sizes[2] / len(by_patient) < 0.13, (sid, sizes)
        for v in by_patient.values():  # patient-level attributes agree across a patient's images
            assert len({(r["label"], r["sex"], r["age"]) for r in v}) == 1, v


def test_dicom_tags(sites, images):
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    rows, root = sites["vendor_b"]
    for r in rows:
        ds = pydicom.dcmread(root / r["image"])  # no force=True: a proper Part 10 file with preamble
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" == ds.file_meta.MediaStorageSOPClassUID
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        assert ds.Modality == "CR" and ds.PhotometricInterpretation == "MONOCHROME2"
        assert (ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.SamplesPerPixel) == (28, 28, 8, 8, 1)
        assert ds.Manufacturer == r["manufacturer"] and ds.ManufacturerModelName
        assert ds.PatientSex == r["sex"] and ds.PatientAge == f"{int(r['age']):03d}Y"
        assert ds.PatientID == r["patient_id"] and "SYNTHETIC" in str(ds.PatientName)
        raw = ds.pixel_array
        modality = apply_modality_lut(raw, ds)
        assert np.array_equal(modality, raw)  # identity rescale
        assert np.allclose(apply_voi_lut(modality, ds), raw, atol=1e-9)  # identity window
        assert np.array_equal(raw, images["vendor_b", r["case_id"]])
    assert len({pydicom.dcmread(root / r["image"]).SOPInstanceUID for r in rows}) == len(rows)


def _readme_table() -> dict[str, tuple[int, int]]:
    """site -> (images, pneumonia) from README.md's site table rows: | `site` | n | pneumonia | ..."""
    out = {}
    for line in (CHEST / "README.md").read_text().splitlines():
        m = re.match(r"\|\s*`(\w+)`\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*([\d.]+)%", line)
        if m:
            n, pos, pct = int(m[2]), int(m[3]), float(m[4])
            assert abs(100 * pos / n - pct) < 0.06, line
            out[m[1]] = (n, pos)
    return out


def test_sizes_and_prevalences_are_as_the_readme_says(sites):
    table = _readme_table()
    assert set(table) == set(sites)
    for sid, (rows, _) in sites.items():
        assert table[sid] == (len(rows), sum(r["label"] == "pneumonia" for r in rows)), sid


def test_exported_program_agrees_with_state_dict_and_factory():
    import sys

    import torch

    sys.path.insert(0, str(CHEST))
    try:
        from model_def import build_model
    finally:
        sys.path.remove(str(CHEST))
    model = build_model()
    model.load_state_dict(torch.load(CHEST / "model_state.pt", weights_only=True))
    model.eval()
    program = torch.export.load(CHEST / "model.pt2").module()
    gen = torch.Generator().manual_seed(0)
    for batch in (1, 7):  # the batch dimension is dynamic
        x = torch.randn(batch, 1, 28, 28, generator=gen)
        with torch.no_grad():
            expected, got = model(x), program(x)
        assert got.shape == (batch, 1)
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
