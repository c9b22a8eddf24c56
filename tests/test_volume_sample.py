"""The volume sample sites: files, documented acquisitions, the shipped model, and the protocol end to end.

Checks are made against independent sources: the files read with nibabel and pydicom directly, the
README's site and scanner tables, noise and HU levels measured on the stored voxels, and the model
input rebuilt by train_model.py's own numpy reader (np.interp), not the suite's volume reader.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
VOLUME = REPO / "sample_sites" / "volume"


def _sample_module(name: str):
    """``sample_sites/volume/<name>.py`` imported under a name of its own: the chest and heart samples ship
    modules of the same names (``model_def``, ``make_sites``, ``train_model``), and whichever a test
    imported first would otherwise stand for all of them in ``sys.modules``. While a module runs, the
    sibling names it imports are the volume ones."""
    import importlib.util

    key = f"volume_sample_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, VOLUME / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    siblings = {} if name in _SIBLINGS else {sib: _sample_module(sib) for sib in _SIBLINGS}
    saved = {sib: sys.modules.get(sib) for sib in siblings}
    sys.modules.update(siblings)
    try:
        sys.modules[key] = module
        spec.loader.exec_module(module)
    finally:
        for sib, before in saved.items():
            if before is None:
                sys.modules.pop(sib, None)
            else:
                sys.modules[sib] = before
    return module


_SIBLINGS = ("model_def", "make_sites")  # imported by name by train_model.py; they import no sibling

PROTOCOL = REPO / "protocols" / "volume.yaml"
README = VOLUME / "README.md"


@pytest.fixture(scope="module")
def sites():
    """site id -> (manifest rows, image root), as protocols/volume.yaml names them."""
    proto = yaml.safe_load(PROTOCOL.read_text())
    out = {}
    for s in proto["sites"]:
        with open((PROTOCOL.parent / s["manifest"]).resolve(), newline="") as fh:
            out[s["id"]] = (list(csv.DictReader(fh)), (PROTOCOL.parent / s["image_root"]).resolve())
    return out


def _readme_table(header_start: str) -> list[dict[str, str]]:
    """The markdown table of README.md whose header row starts with header_start."""
    lines = README.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(header_start))
    names = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for ln in lines[start + 2 :]:
        if not ln.startswith("|"):
            break
        rows.append(dict(zip(names, (c.strip().strip("`") for c in ln.strip("|").split("|")), strict=True)))
    return rows


def test_committed_data_stays_small():
    files = [p for p in VOLUME.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert len(files) <= 1500, len(files)
    assert sum(p.stat().st_size for p in files) <= 4 * 1024**2


def test_site_sizes_and_prevalences_are_as_the_readme_says(sites):
    table = {r["site"]: r for r in _readme_table("| site | cases |")}
    assert set(table) == set(sites)
    for sid, (rows, _root) in sites.items():
        lesions = sum(r["label"] == "lesion" for r in rows)
        assert {r["label"] for r in rows} <= {"lesion", "no_lesion"}
        assert int(table[sid]["cases"]) == len(rows) and int(table[sid]["lesion"]) == lesions
        assert len({r["case_id"] for r in rows}) == len(rows) == len({r["patient_id"] for r in rows})
        # a lesion diameter exactly where there is a lesion, within the documented 3.5-9 mm
        for r in rows:
            assert (r["lesion_diameter_mm"] != "") == (r["label"] == "lesion"), r
            if r["lesion_diameter_mm"]:
                assert 3.5 <= float(r["lesion_diameter_mm"]) <= 9.0


def _series(folder: Path) -> list:
    import pydicom

    return sorted((pydicom.dcmread(p) for p in folder.iterdir()), key=lambda ds: float(ds.ImagePositionPatient[2]))


def test_each_site_is_stored_as_the_readme_says(sites):
    """Format, geometry and equipment tags per scanner, read with nibabel and pydicom directly."""
    import nibabel as nib
    import pydicom

    scanners = {r["site"]: r for r in _readme_table("| site | format |")}
    for sid, (rows, root) in sites.items():
        doc = scanners[sid]
        thickness, n_slices = float(doc["slice mm"]), int(round(40 / float(doc["slice mm"])))
        for r in rows[:5]:
            path = root / r["image"]
            if doc["format"] == "NIfTI":
                img = nib.load(path)
                assert nib.aff2axcodes(img.affine) == ("L", "P", "S") and img.shape == (20, 20, n_slices)
                assert np.allclose(img.header.get_zooms(), (2.0, 2.0, thickness))
                continue
            if doc["format"] == "DICOM series":
                slices = _series(path)
                assert len(slices) == n_slices and len({ds.SeriesInstanceUID for ds in slices}) == 1
                z = [float(ds.ImagePositionPatient[2]) for ds in slices]
                ds = slices[0]
            else:
                ds = pydicom.dcmread(path)
                assert ds.SOPClassUID == pydicom.uid.EnhancedCTImageStorage and int(ds.NumberOfFrames) == n_slices
                frames = ds.PerFrameFunctionalGroupsSequence
                z = [float(f.PlanePositionSequence[0].ImagePositionPatient[2]) for f in frames]
            assert np.allclose(np.diff(z), thickness)
            assert float(ds.SliceThickness) == thickness and float(ds.KVP) == float(doc["kVp"])
            assert ds.ConvolutionKernel == doc["kernel"]
            assert f"{ds.Manufacturer} {ds.ManufacturerModelName}" == doc["manufacturer, model"]
            assert ds.PatientID == r["patient_id"] and ds.PatientSex == r["sex"]


def _background_hu(scan: np.ndarray) -> np.ndarray:
    """Voxels in the four in-plane corners (>= 14 mm from the centre in both in-plane axes): outside
    every organ (semi-axes <= 15 mm, centre <= 4 mm off) except where the vessel happens to pass."""
    return np.concatenate([scan[:, :3, :3], scan[:, :3, -3:], scan[:, -3:, :3], scan[:, -3:, -3:]], axis=None)


def test_background_level_and_noise_are_as_documented(sites):
    train_model = _sample_module("train_model")

    scanners = {r["site"]: r for r in _readme_table("| site | format |")}
    for sid, (rows, root) in sites.items():
        reader = {
            "NIfTI": train_model._scan_from_nifti,
            "DICOM series": train_model._scan_from_series,
            "enhanced DICOM": train_model._scan_from_enhanced,
        }[scanners[sid]["format"]]
        hu = np.concatenate([_background_hu(reader(root / r["image"])) for r in rows[:20]])
        median = np.median(hu)
        robust_sd = 1.4826 * np.median(np.abs(hu - median))  # the vessel's bright voxels do not move it
        assert abs(median - (-90.0)) < 3.0, (sid, median)
        assert robust_sd == pytest.approx(float(scanners[sid]["noise SD HU"]), rel=0.12), sid


def test_the_suites_volume_reader_gives_the_independent_model_input(sites):
    """validate.scoring.volumes (reorient, trilinear resample, window, crop/pad) against
    train_model.py's reader: nibabel/pydicom, a hand-written axis flip and np.interp along z."""
    train_model = _sample_module("train_model")

    from validate.scoring.volumes import VolumeSpec, read_volume_case

    spec = VolumeSpec(size=(20, 20, 20), spacing=(2.0, 2.0, 2.0), orientation="RAS", window=(40.0, 400.0))
    for scanner in train_model.SITES:
        x, _labels, rows = train_model.read_site(scanner, limit=4)
        for i, r in enumerate(rows):
            got, _stats, acquisition = read_volume_case(sites[scanner.id][1] / r["image"], spec)
            assert got.shape == (1, 20, 20, 20)
            assert np.abs(got - x[i]).max() < 1e-5, (scanner.id, r["case_id"])
            if scanner.storage != "nifti":
                assert acquisition["convolution_kernel"] == scanner.kernel
                assert float(acquisition["slice_thickness_mm"]) == scanner.slice_mm


def test_exported_program_agrees_with_state_dict_and_the_readme_table():
    import torch
    from sklearn.metrics import brier_score_loss, roc_auc_score

    train_model = _sample_module("train_model")
    build_model = _sample_module("model_def").build_model

    model = build_model()
    model.load_state_dict(torch.load(VOLUME / "model_state.pt", weights_only=True))
    model.eval()
    program = torch.export.load(VOLUME / "model.pt2").module()
    table = {r["site"]: r for r in _readme_table("| site | n |")}
    for scanner in train_model.SITES:
        x, labels, _rows = train_model.read_site(scanner)
        with torch.no_grad():
            logits = model(torch.from_numpy(x)).squeeze(1).double().numpy()
            exported = program(torch.from_numpy(x)).squeeze(1).double().numpy()
        assert np.abs(logits - exported).max() < 1e-4
        p = 1.0 / (1.0 + np.exp(-logits))
        doc = table[scanner.id]
        assert float(doc["AUROC"]) == pytest.approx(roc_auc_score(labels, logits), abs=5e-4)
        assert float(doc["Brier"]) == pytest.approx(brier_score_loss(labels, p), abs=5e-4)
        assert float(doc["mean p"]) == pytest.approx(p.mean(), abs=5e-4)


@pytest.fixture(scope="module")
def volume_run(tmp_path_factory):
    """`validate run` on protocols/volume.yaml (absolute paths, 50 bootstrap replicates)."""
    tmp = tmp_path_factory.mktemp("volume-run")
    text = PROTOCOL.read_text().replace("../sample_sites", str(REPO / "sample_sites"))
    text = re.sub(r"n_bootstrap: \d+", "n_bootstrap: 50", text)
    text = re.sub(r"repeats: \d+", "repeats: 3", text)
    protocol = tmp / "volume.yaml"
    protocol.write_text(text)
    runs = tmp / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "validate", "run", str(protocol), "--runs-dir", str(runs)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    bundles = [p for p in runs.iterdir() if not p.name.startswith(".")]
    assert len(bundles) == 1, (proc.stdout, proc.stderr)
    return proc, bundles[0]


def test_protocol_runs_end_to_end_and_a_shifted_scanner_fails_a_gate(volume_run):
    proc, bundle = volume_run
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    gates = json.loads((bundle / "gates.json").read_text())
    assert gates["verdict"] == "fail"
    failed = {(r["gate"], r.get("site") or r["item"]) for r in gates["rows"] if r["verdict"] == "fail"}
    assert failed and all(site in ("scanner_b", "scanner_c") for _gate, site in failed), failed
    # the development scanner, where the model was trained and calibrated, fails nothing
    assert not any(site == "development" for _gate, site in failed)


def test_run_carries_every_case_and_the_scanners_acquisition(volume_run, sites):
    import pandas as pd

    _proc, bundle = volume_run
    preds = pd.read_parquet(bundle / "predictions.parquet")
    for sid, (rows, _root) in sites.items():
        at = preds[preds["site"] == sid]
        assert len(at) == len(rows), sid
    by_site = preds.groupby("site")
    # DICOM headers carry the equipment; the NIfTI site (scanner_c) carries spacing only
    assert by_site["convolution_kernel"].first().dropna().to_dict() == {
        "development": "STANDARD",
        "scanner_b": "STANDARD",
    }
    thickness = by_site["acq_slice_thickness_mm"].first().dropna().to_dict()
    assert thickness == {"development": 2.0, "scanner_b": 5.0}
    assert by_site["acq_spacing_z_mm"].first().to_dict() == {"development": 2.0, "scanner_b": 5.0, "scanner_c": 1.25}
    assert set(by_site["manufacturer_model"].first().dropna()) == {"PM-CT 64", "SI Helix 16"}


def test_shift_report_finds_scanner_bs_thicker_slices(volume_run):
    _proc, bundle = volume_run
    shift = json.loads((bundle / "shift.json").read_text())
    finding = shift["sites"]["scanner_b"]["acquisition"]["acq_slice_thickness_mm"]
    assert finding["flagged"], finding
    assert finding["reference"]["n"] == 80 and finding["site"]["n"] == 60


def test_demo_includes_the_volume_protocol():
    from validate.commands.demo import SAMPLES

    assert "volume" in SAMPLES and (REPO / "protocols" / "volume.yaml").is_file()
