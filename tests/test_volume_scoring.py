"""The ``volume`` input kind through protocol, scoring, caches and shift.

End to end: ``validate run`` on a protocol of kind volume whose sites hold NIfTI files, DICOM series
folders and enhanced multi-frame DICOM (written by tests/volume_fixtures.py), scored by a tiny
TorchScript 3D model. Units: the memory bound of a batch, acquisition rows and columns, the cache's
folder keys and acquisition round trip, and the shift report's acquisition findings against scipy.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError
from scipy import stats

from validate.protocol import InputSpec
from validate.scoring.cache import CACHE_VERSION, ShardCache, image_rows_key
from validate.scoring.evaluator import ShardResult
from validate.scoring.input_cache import DecodedShard, InputCache
from validate.scoring.inputs import IMAGE_STAT_COLUMNS, Preprocessing
from validate.scoring.volume_inputs import (
    ACQUISITION_COLUMNS,
    acquisition_columns,
    acquisition_row,
    bounded_batch_size,
    preprocessing_key,
)

# ---- protocol ------------------------------------------------------------------------------------


def test_volume_input_needs_three_sizes_and_checks_its_fields():
    spec = InputSpec(kind="volume", size=[16, 20, 24], spacing=[2.0, 1.0, 1.0], orientation="las", scale=1.0)
    assert spec.size == (16, 20, 24) and spec.spacing == (2.0, 1.0, 1.0) and spec.orientation == "LAS"
    pre = Preprocessing.from_protocol(spec)
    assert pre.case_shape == (1, 16, 20, 24)
    key = preprocessing_key(pre)  # the cache keys: another spacing or orientation is another input
    assert key["spacing"] == [2.0, 1.0, 1.0] and key["orientation"] == "LAS" and key["kind"] == "volume"
    assert preprocessing_key(replace(pre, spacing=(1.0, 1.0, 1.0))) != key
    assert preprocessing_key(replace(pre, orientation="RAS")) != key
    with pytest.raises(ValidationError, match=r"\[depth, height, width\]"):
        InputSpec(kind="volume", size=[20, 24])
    with pytest.raises(ValidationError, match="one of L/R, one of A/P and one of S/I"):
        InputSpec(kind="volume", size=[4, 4, 4], orientation="RAR")
    with pytest.raises(ValidationError, match="spacing must be > 0"):
        InputSpec(kind="volume", size=[4, 4, 4], spacing=[1.0, 0.0, 1.0])
    with pytest.raises(ValidationError, match="applies to input.kind volume only"):
        InputSpec(kind="dicom", size=[4, 4], spacing=[1.0, 1.0, 1.0])
    with pytest.raises(ValidationError, match=r"\[height, width\]"):
        InputSpec(kind="image", size=[4, 4, 4])


def test_two_dimensional_cache_keys_are_unchanged_by_the_volume_fields():
    # a 2D run's preprocessing key (part of its cache key) has exactly the keys it had before volumes
    pre = Preprocessing.from_protocol(InputSpec(kind="image", size=[8, 8]))
    assert preprocessing_key(pre) == pre.key()
    assert "spacing" not in pre.key() and "orientation" not in pre.key()


# ---- batching within the memory bound ----------------------------------------------------------------


def test_batch_size_keeps_a_batch_within_the_memory_bound():
    case = (1, 64, 64, 64)  # 64^3 float32 voxels = 1 MiB per case
    mib = 1024**2
    assert bounded_batch_size(64, case, int(3.5 * mib)) == 3  # floor(3.5 MiB / 1 MiB)
    assert bounded_batch_size(2, case, 512 * mib) == 2  # never above --batch-size
    assert bounded_batch_size(64, case, mib // 2) == 1  # one case always goes
    assert bounded_batch_size(64, (2, 32, 32, 32), mib) == 4  # 2 x 32^3 x 4 bytes = 256 KiB


def test_volumes_are_decoded_in_workers_beside_an_accelerator(monkeypatch):
    import torch

    from validate.scoring import evaluator

    monkeypatch.setattr(evaluator, "available_cpus", lambda: 16)
    volume = Preprocessing(kind="volume", size=(20, 20, 20))  # 8,000 voxels: a series of slices to decode
    small_image = Preprocessing(kind="image", size=(20, 20))
    assert evaluator.default_workers(volume, torch.device("cuda"), 500) == 15
    assert evaluator.default_workers(small_image, torch.device("cuda"), 500) == 2
    assert evaluator.default_workers(volume, torch.device("cpu"), 500) == 4


# ---- acquisition rows and columns ----------------------------------------------------------------------


def test_acquisition_row_round_trips_numbers_exactly_and_marks_absent_values():
    acq = {"convolution_kernel": " BONE ", "slice_thickness_mm": 0.1 + 0.2, "kvp": 120, "spacing_x_mm": float("nan")}
    row = acquisition_row(acq)
    assert len(row) == len(ACQUISITION_COLUMNS)
    assert dict(zip(ACQUISITION_COLUMNS, row, strict=True)) == {
        "convolution_kernel": "BONE",
        "acq_slice_thickness_mm": repr(0.1 + 0.2),
        "acq_kvp": "120.0",
        "acq_spacing_z_mm": "",
        "acq_spacing_y_mm": "",
        "acq_spacing_x_mm": "",  # NaN is not a recorded value
    }
    table = np.asarray([row, acquisition_row({"kvp": 100.0})], dtype=object)
    cols = acquisition_columns(table, np.array([0, 1]))
    assert set(cols) == {"convolution_kernel", "acq_slice_thickness_mm", "acq_kvp"}  # columns no case records: none
    assert cols["acq_slice_thickness_mm"][0] == 0.1 + 0.2 and math.isnan(cols["acq_slice_thickness_mm"][1])
    assert cols["convolution_kernel"] == ["BONE", None]
    assert list(cols["acq_kvp"]) == [120.0, 100.0]


# ---- caches --------------------------------------------------------------------------------------------


def test_a_series_folder_is_keyed_by_its_files_not_its_own_times(tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    for k in range(3):
        (folder / f"IM{k}.dcm").write_bytes(bytes([k]) * 100)
    before = image_rows_key(["c1"], [str(folder)])
    folder_stat = os.stat(folder)
    # a slice rewritten in place (same name, same size): the folder's own size and times do not change
    (folder / "IM1.dcm").write_bytes(bytes([9]) * 100)
    st = os.stat(folder / "IM1.dcm")
    os.utime(folder / "IM1.dcm", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    os.utime(folder, ns=(folder_stat.st_atime_ns, folder_stat.st_mtime_ns))
    assert os.stat(folder).st_mtime_ns == folder_stat.st_mtime_ns
    assert image_rows_key(["c1"], [str(folder)]) != before
    # by content: same bytes give the same key, one changed byte another
    by_content = image_rows_key(["c1"], [str(folder)], content=True)
    assert image_rows_key(["c1"], [str(folder)], content=True) == by_content
    (folder / "IM2.dcm").write_bytes(bytes([7]) * 100)
    assert image_rows_key(["c1"], [str(folder)], content=True) != by_content


def _acq_result() -> ShardResult:
    acq = np.asarray([acquisition_row({"convolution_kernel": "BONE", "kvp": 120.0}), ("",) * 6], dtype=object)
    return ShardResult(
        positions=np.array([0, 1]),
        logits=np.array([[0.5], [np.nan]]),
        failures=[(1, "DICOM series has a gap", "read")],
        image_stats=np.zeros((2, len(IMAGE_STAT_COLUMNS))),
        equipment=np.asarray([["ACME", "CT 64"], ["", ""]], dtype=object),
        acquisition=acq,
    )


def test_score_shards_carry_acquisition_and_refuse_other_columns(tmp_path):
    cache = ShardCache(tmp_path, "site", "k" * 64)
    res = _acq_result()
    path = cache.save(0, "r" * 64, ["a", "b"], res)
    back = cache.load(0, "r" * 64, ["a", "b"])
    assert back is not None and back.acquisition is not None
    assert back.acquisition.tolist() == res.acquisition.tolist()
    # a shard whose acquisition columns are another list is read again, never mislabelled
    with np.load(path) as z:
        content = {k: z[k] for k in z.files}
    content["acquisition_columns"] = np.asarray(list(ACQUISITION_COLUMNS[::-1]), dtype=str)
    with open(path, "wb") as fh:
        np.savez(fh, **content)
    from validate.scoring.checksums import write_checksum

    write_checksum(path, path)
    assert cache.load(0, "r" * 64, ["a", "b"]) is None
    assert CACHE_VERSION >= 4  # shards before acquisition rows have another run key


def test_input_cache_carries_acquisition(tmp_path):
    cache = InputCache(tmp_path, "site", "i" * 64)
    res = _acq_result()
    shard = DecodedShard(
        positions=np.array([0]),
        x=np.zeros((1, 1, 2, 2, 2), dtype=np.float32),
        image_stats=np.zeros((1, len(IMAGE_STAT_COLUMNS))),
        equipment=res.equipment[:1],
        failures=res.failures,
        acquisition=res.acquisition[:1],
    )
    cache.save(0, "r" * 64, ["a", "b"], shard)
    back = cache.load(0, "r" * 64, ["a", "b"])
    assert back is not None and back.acquisition is not None
    assert back.acquisition.tolist() == res.acquisition[:1].tolist()
    batch = back.batch([0, 1])
    assert batch["acquisition"] == [tuple(res.acquisition[0])]


# ---- shift ---------------------------------------------------------------------------------------------


def _shift_table(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for site, thickness, kernel, kvp_mean in (("dev", 1.0, "STANDARD", 120.0), ("ext", 2.5, "BONE", 100.0)):
        for i in range(40):
            rows.append(
                {
                    "case_id": f"{site}{i}",
                    "site": site,
                    "patient_id": f"{site}{i}",
                    "y": int(i % 2),
                    "logit": float(rng.normal()),
                    "acq_slice_thickness_mm": thickness,
                    "acq_kvp": float(rng.normal(kvp_mean, 8.0)),
                    "convolution_kernel": kernel if i % 4 else "STANDARD",
                }
            )
    return pd.DataFrame(rows)


def test_shift_finds_a_slice_thickness_difference_and_tests_kvp_as_numbers():
    from validate.analysis.shift import shift_report

    table = _shift_table()
    report = shift_report(table, dev_sites="dev", external_sites="ext", attributes=[], task="binary")
    assert report["columns"]["acquisition"] == {"acq_slice_thickness_mm": "categorical", "acq_kvp": "numeric"}
    site = report["sites"]["ext"]
    thick = site["acquisition"]["acq_slice_thickness_mm"]
    a = table.loc[table.site == "ext", "acq_slice_thickness_mm"]
    b = table.loc[table.site == "dev", "acq_slice_thickness_mm"]
    counts = np.array([[(a == v).sum(), (b == v).sum()] for v in (1.0, 2.5)])
    chi2, p, _, _ = stats.chi2_contingency(counts, correction=False)
    assert thick["statistic"] == pytest.approx(chi2) and thick["p_value"] == pytest.approx(p)
    assert thick["effect"] == pytest.approx(1.0)  # Cramér's V of disjoint mixes
    assert thick["flagged"] and thick["exceeds_threshold"]
    kvp = site["acquisition"]["acq_kvp"]
    ka = table.loc[table.site == "ext", "acq_kvp"]
    kb = table.loc[table.site == "dev", "acq_kvp"]
    welch = stats.ttest_ind(ka, kb, equal_var=False)
    assert kvp["test"] == "welch_t" and kvp["p_value"] == pytest.approx(welch.pvalue)
    assert kvp["statistic"] == pytest.approx(welch.statistic)
    kernel = site["equipment"]["convolution_kernel"]
    assert kernel["test"] and kernel["flagged"]
    ranked = {(r["group"], r["name"]) for r in site["ranking"]}
    assert ("acquisition", "acq_slice_thickness_mm") in ranked and ("equipment", "convolution_kernel") in ranked
    assert site["flagged"]


def test_shift_does_not_test_a_setting_one_side_never_records():
    from validate.analysis.shift import shift_report

    table = _shift_table()
    table.loc[table.site == "dev", "acq_kvp"] = np.nan
    report = shift_report(table, dev_sites="dev", external_sites="ext", attributes=[], task="binary")
    kvp = report["sites"]["ext"]["acquisition"]["acq_kvp"]
    assert kvp["p_value"] is None and kvp["reason"] == "not recorded at the development site"


# ---- end to end: validate run on a volume protocol --------------------------------------------------------

DEV_SPACING = (1.0, 0.8, 0.8)  # (slices, rows, columns) mm
EXT_SPACING = (2.5, 0.8, 0.8)
SHAPE = (10, 12, 12)


def _tiny_model(path: Path) -> Path:
    """A 3D conv and a fixed voxel weighting, as TorchScript: input [N, 1, 8, 10, 10], output [N, 1].
    The weights differ per voxel, so a flipped or shifted volume gets another logit."""
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv3d(1, 1, 3, padding=1)
            self.register_buffer("weight", torch.randn(1, 1, 8, 10, 10) / 30.0)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (self.conv(x) * self.weight).sum(dim=(1, 2, 3, 4)).unsqueeze(1)

    torch.manual_seed(0)
    torch.jit.script(Tiny().eval()).save(str(path))
    return path


def _equipment(thickness: float, kernel: str, kvp: float, model: str) -> dict:
    return {
        "Manufacturer": "ACME Medical",
        "ManufacturerModelName": model,
        "ConvolutionKernel": kernel,
        "SliceThickness": thickness,
        "KVP": kvp,
    }


def _write_sites(root: Path) -> dict:
    """Two sites of volumes: ``dev`` as DICOM series folders (1.0 mm slices, STANDARD kernel), ``ext``
    as enhanced multi-frame files (2.5 mm, BONE); each also holds one NIfTI case, and ``dev`` a series
    with a slice missing. Case ``same_*``: one volume written in all three forms."""
    from volume_fixtures import axial_affine, known_volume, write_dicom_series, write_enhanced_multiframe, write_nifti

    rows: dict[str, list[dict]] = {"dev": [], "ext": []}
    for site, spacing, writer in (("dev", DEV_SPACING, "series"), ("ext", EXT_SPACING, "enhanced")):
        folder = root / site
        folder.mkdir(parents=True)
        equip = _equipment(spacing[0], "STANDARD" if site == "dev" else "BONE", 120.0, f"CT {site}")
        affine = axial_affine(spacing)
        for i in range(12):
            vol = known_volume(SHAPE, seed=100 * (site == "ext") + i)
            cid = f"{site}{i:02d}"
            if writer == "series":
                write_dicom_series(
                    folder / cid, vol, affine, equipment=equip, series_uid=f"1.2.826.0.1.3680043.8.498.{i + 10}"
                )
                rel = cid
            else:
                rel = f"{cid}.dcm"
                write_enhanced_multiframe(folder / rel, vol, affine, equipment=equip)
            rows[site].append({"case_id": cid, "label": i % 2, "image": rel})
        nifti = write_nifti(folder / f"{site}_nifti.nii.gz", known_volume(SHAPE, seed=7), affine)
        rows[site].append({"case_id": f"{site}_nifti", "label": 1, "image": nifti.name})
    same = known_volume(SHAPE, seed=42)
    affine = axial_affine(DEV_SPACING)
    write_dicom_series(
        root / "dev" / "same_series", same, affine, equipment=_equipment(1.0, "STANDARD", 120.0, "CT dev")
    )
    write_nifti(root / "dev" / "same.nii.gz", same, affine)
    write_enhanced_multiframe(
        root / "ext" / "same.dcm", same, affine, equipment=_equipment(1.0, "BONE", 120.0, "CT ext")
    )
    write_dicom_series(root / "dev" / "gap", known_volume(SHAPE, seed=9), affine, skip=(4,))
    rows["dev"] += [
        {"case_id": "same_series", "label": 0, "image": "same_series"},
        {"case_id": "same_nifti", "label": 0, "image": "same.nii.gz"},
        {"case_id": "gap", "label": 1, "image": "gap"},
    ]
    rows["ext"].append({"case_id": "same_enhanced", "label": 0, "image": "same.dcm"})
    for site, site_rows in rows.items():
        pd.DataFrame(site_rows).to_csv(root / f"{site}.csv", index=False)
    return rows


def _volume_protocol(root: Path, *, name: str = "volume.yaml", manifest_dev: str = "dev.csv") -> Path:
    protocol = {
        "name": "volume-test",
        "task": "binary",
        "classes": ["negative", "positive"],
        "input": {
            "kind": "volume",
            "size": [8, 10, 10],
            "spacing": [2.0, 1.0, 1.0],
            "orientation": "SPL",  # an axial stack as stored: slices to S, rows to P, columns to L
            "window": {"center": 0.0, "width": 2000.0},
            "scale": 1.0,
        },
        "scoring": {"max_batch_bytes": 3 * 8 * 10 * 10 * 4},  # three cases per batch
        "model": {"checkpoint": "model.pt", "format": "torchscript"},
        "sites": [
            {"id": "dev", "manifest": manifest_dev, "image_root": "dev", "role": "development"},
            {"id": "ext", "manifest": "ext.csv", "image_root": "ext", "role": "external"},
        ],
        "metrics": {"n_bootstrap": 20, "seed": 0, "bins": 5},
        "calibration": {"designs": ["held-out"], "methods": ["temperature"], "fit_on": ["dev"], "seed": 0},
        "keep_case_ids": True,
    }
    path = root / name
    path.write_text(yaml.safe_dump(protocol, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def volume_run(tmp_path_factory):
    pytest.importorskip("nibabel")
    from validate.cli import main

    root = tmp_path_factory.mktemp("volume_sites")
    _write_sites(root)
    _tiny_model(root / "model.pt")
    proto = _volume_protocol(root)
    out = root / "runs" / "first"
    code = main(["run", str(proto), "--out", str(out), "--quiet", "--device", "cpu"])
    return {"root": root, "protocol": proto, "bundle": out, "code": code}


def test_volume_protocol_scores_nifti_series_and_multiframe_end_to_end(volume_run):
    assert volume_run["code"] in (0, 1)  # a verdict, not bad input or a crash
    bundle = volume_run["bundle"]
    preds = pd.read_parquet(bundle / "predictions.parquet")
    scored = set(preds["case_id"])
    assert {f"dev{i:02d}" for i in range(12)} <= scored  # DICOM series folders
    assert {f"ext{i:02d}" for i in range(12)} <= scored  # enhanced multi-frame files
    assert {"dev_nifti", "ext_nifti", "same_series", "same_nifti", "same_enhanced"} <= scored
    failures = pd.read_csv(bundle / "failures.csv")
    assert failures["case_id"].tolist() == ["gap"]
    reason = failures["reason"].iloc[0]
    assert "gap" in reason and "missing" in reason
    # scoring.max_batch_bytes holds three cases of 8 x 10 x 10 float32 voxels: batches of 3, not 64
    summaries = [json.loads(p.read_text()) for p in volume_run["root"].rglob("scoring.json")]
    assert summaries and all(s["batch_size"] == 3 and s["max_batch_bytes"] == 9600 for s in summaries)


def test_one_volume_in_three_formats_gets_one_logit(volume_run):
    preds = pd.read_parquet(volume_run["bundle"] / "predictions.parquet").set_index("case_id")
    logits = preds.loc[["same_series", "same_nifti", "same_enhanced"], "logit"].to_numpy()
    # one physical volume, one preprocessing: the logits agree to float32 rounding of the resampling
    assert np.ptp(logits) < 1e-4
    others = preds.loc[[f"dev{i:02d}" for i in range(12)], "logit"].to_numpy()
    assert np.ptp(others) > 1e-3  # the model does tell volumes apart: the agreement above is not trivial


def test_volume_predictions_carry_equipment_and_acquisition(volume_run):
    preds = pd.read_parquet(volume_run["bundle"] / "predictions.parquet").set_index("case_id")
    dev = preds.loc[[f"dev{i:02d}" for i in range(12)]]
    ext = preds.loc[[f"ext{i:02d}" for i in range(12)]]
    assert (dev["manufacturer"] == "ACME Medical").all() and (dev["manufacturer_model"] == "CT dev").all()
    assert (dev["convolution_kernel"] == "STANDARD").all() and (ext["convolution_kernel"] == "BONE").all()
    assert (dev["acq_slice_thickness_mm"] == 1.0).all() and (ext["acq_slice_thickness_mm"] == 2.5).all()
    assert (dev["acq_kvp"] == 120.0).all()
    assert dev["acq_spacing_z_mm"].to_numpy() == pytest.approx(1.0)
    assert ext["acq_spacing_z_mm"].to_numpy() == pytest.approx(2.5)
    assert ext["acq_spacing_x_mm"].to_numpy() == pytest.approx(0.8)
    nifti = preds.loc["dev_nifti"]
    assert pd.isna(nifti["acq_slice_thickness_mm"]) and nifti["acq_spacing_z_mm"] == pytest.approx(1.0)
    assert pd.isna(nifti["convolution_kernel"])
    # image statistics of the windowed volume: every case has them
    assert preds[["img_mean", "img_p50", "img_hist_00"]].notna().all().all()


def test_shift_report_flags_the_slice_thickness_and_kernel_of_the_external_scanner(volume_run):
    shift = json.loads((volume_run["bundle"] / "shift.json").read_text())
    ext = shift["sites"]["ext"]
    thickness = ext["acquisition"]["acq_slice_thickness_mm"]
    assert thickness["flagged"] and thickness["effect_name"] == "cramers_v"
    assert ext["equipment"]["convolution_kernel"]["flagged"]
    assert ext["acquisition"]["acq_spacing_z_mm"]["flagged"]


def test_a_rerun_reads_volume_scores_and_acquisition_from_the_cache(volume_run, tmp_path):
    from validate.cli import main

    out = volume_run["root"] / "runs" / "second"
    code = main(["run", str(volume_run["protocol"]), "--out", str(out), "--quiet", "--device", "cpu"])
    assert code == volume_run["code"]
    first = pd.read_parquet(volume_run["bundle"] / "predictions.parquet")
    second = pd.read_parquet(out / "predictions.parquet")
    pd.testing.assert_frame_equal(first, second)
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["scoring_counts"]["cached"] == provenance["scoring_counts"]["cases"]


def test_a_series_folder_outside_the_image_root_is_refused(volume_run, tmp_path, capsys):
    from validate.cli import main

    root = volume_run["root"]
    rows = pd.read_csv(root / "dev.csv")
    rows.loc[len(rows)] = {"case_id": "escape", "label": 0, "image": "../ext"}
    link = root / "dev" / "linked_series"  # a folder inside the root that is a link to one outside it
    if not link.exists():
        link.symlink_to(root / "ext", target_is_directory=True)
    rows.loc[len(rows)] = {"case_id": "linked", "label": 0, "image": "linked_series"}
    rows.to_csv(root / "dev_escape.csv", index=False)
    proto = _volume_protocol(root, name="escape.yaml", manifest_dev="dev_escape.csv")
    code = main(["run", str(proto), "--out", str(tmp_path / "out"), "--quiet", "--device", "cpu"])
    assert code == 2
    err = capsys.readouterr().err
    assert "image path '../ext' points outside the image root" in err
    assert "image path 'linked_series' points outside the image root" in err
    assert not (tmp_path / "out" / "predictions.parquet").exists()


def test_check_files_counts_a_series_folder_as_present(volume_run):
    from validate.cohort import load_site_manifest
    from validate.protocol import load_protocol

    protocol = load_protocol(volume_run["protocol"])
    cohort = load_site_manifest(protocol, "dev", check_files=True)
    assert (cohort.cases["image_path"].map(lambda p: Path(p).is_dir())).sum() == 14  # 12 + same_series + gap
    assert cohort.warnings == []


def test_decoded_volumes_and_their_acquisition_come_back_from_the_input_cache(volume_run, tmp_path, monkeypatch):
    import torch

    from validate.scoring import evaluator, score_protocol

    protocol, root = volume_run["protocol"], volume_run["root"]
    other = root / "other_model.pt"
    if not other.exists():
        torch.manual_seed(1)
        model = torch.jit.load(str(root / "model.pt"))
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1)
        model.save(str(other))
    kw = {"cache_dir": tmp_path / "cache", "shard_size": 8, "device": "cpu"}
    score_protocol(protocol, out_dir=tmp_path / "one", cache_inputs=True, **kw)
    fresh = score_protocol(protocol, checkpoint=other, out_dir=tmp_path / "fresh", cache_dir=tmp_path / "none")
    reads = []
    real = evaluator.read_volume_with_stats

    def counting(*args, **kwargs):
        reads.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr("validate.scoring.evaluator.read_volume_with_stats", counting)
    warm = score_protocol(protocol, checkpoint=other, out_dir=tmp_path / "two", cache_inputs=True, **kw)
    assert reads == []  # every volume came from the input cache
    assert warm.counts["inputs_cached"] == warm.counts["cases"] and warm.counts["cached"] == 0
    pd.testing.assert_frame_equal(warm.predictions, fresh.predictions)
    assert {"convolution_kernel", "acq_slice_thickness_mm", "acq_spacing_z_mm"} <= set(warm.predictions.columns)
