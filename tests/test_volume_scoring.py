"""The ``volume`` input kind through protocol, scoring, caches and shift.

End to end: ``validate run`` on a protocol of kind volume whose sites hold NIfTI files, DICOM series
folders and enhanced multi-frame DICOM (written by tests/volume_fixtures.py), scored by a tiny
TorchScript 3D model. Units: the memory bound of a batch, acquisition rows and columns, the cache's
folder keys and acquisition round trip, and the shift report's acquisition findings against scipy.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from scipy import stats

from validate.protocol import InputSpec
from validate.scoring.cache import CACHE_VERSION, ShardCache, image_rows_key
from validate.scoring.evaluator import ShardResult
from validate.scoring.input_cache import DecodedShard, InputCache
from validate.scoring.inputs import IMAGE_STAT_COLUMNS, Preprocessing
from validate.scoring.volume_inputs import ACQUISITION_COLUMNS, acquisition_columns, acquisition_row, bounded_batch_size

# ---- protocol ------------------------------------------------------------------------------------


def test_volume_input_needs_three_sizes_and_checks_its_fields():
    spec = InputSpec(kind="volume", size=[16, 20, 24], spacing=[2.0, 1.0, 1.0], orientation="las", scale=1.0)
    assert spec.size == (16, 20, 24) and spec.spacing == (2.0, 1.0, 1.0) and spec.orientation == "LAS"
    pre = Preprocessing.from_protocol(spec)
    assert pre.case_shape == (1, 16, 20, 24)
    assert pre.key()["spacing"] == (2.0, 1.0, 1.0) and pre.key()["orientation"] == "LAS"
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
    assert set(pre.key()) == {"kind", "size", "channels", "scale", "mean", "std", "window", "features", "resize"}


# ---- batching within the memory bound ----------------------------------------------------------------


def test_batch_size_keeps_a_batch_within_the_memory_bound():
    case = (1, 64, 64, 64)  # 64^3 float32 voxels = 1 MiB per case
    mib = 1024**2
    assert bounded_batch_size(64, case, int(3.5 * mib)) == 3  # floor(3.5 MiB / 1 MiB)
    assert bounded_batch_size(2, case, 512 * mib) == 2  # never above --batch-size
    assert bounded_batch_size(64, case, mib // 2) == 1  # one case always goes
    assert bounded_batch_size(64, (2, 32, 32, 32), mib) == 4  # 2 x 32^3 x 4 bytes = 256 KiB


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
