"""The shard cache of segmentation scoring (issue #20 item 2): a rerun loads every shard and scores
nothing, with the same output files; a changed mask rescores only its shard (also when only its
content changed, with hash_inputs); a changed segmentation setting rescores everything; the worst-case
overlays do not depend on how the cases were cut into shards."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import validate.scoring.segmentation as scorer
from validate.scoring import score_protocol

from tests.test_segmentation_scoring import H, W, workspace

OUTPUTS = ("predictions.parquet", "pixel_histogram.parquet", "pixel_sample.parquet", "overlays.parquet", "failures.csv")


@pytest.fixture
def scored(monkeypatch):
    """Case ids passed to ``score_case`` (the per-case scoring) since the last reset."""
    calls: list[str] = []
    real = scorer.score_case

    def counting(out, mask, spacing, site, case_id, s):
        calls.append(case_id)
        return real(out, mask, spacing, site, case_id, s)

    monkeypatch.setattr(scorer, "score_case", counting)
    return calls


def run(protocol: Path, out: Path, cache: Path, **kw):
    return score_protocol(protocol, out_dir=out, device="cpu", cache_dir=cache, shard_size=3, **kw)


def ring(size: int) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[2 : 2 + size, 3 : 3 + size] = 255
    return m


def test_rerun_loads_every_shard_and_scores_nothing(tmp_path, scored):
    protocol = workspace(tmp_path)
    Image.fromarray(np.full((H, W), 7, np.uint8)).save(tmp_path / "site" / "mask4.png")  # a failure, cached too
    first = run(protocol, tmp_path / "a", tmp_path / "cache")
    assert sorted(scored) == ["c0", "c1", "c2", "c3", "c5", "c6", "c7"] and first.counts["cached"] == 0
    scored.clear()
    second = run(protocol, tmp_path / "b", tmp_path / "cache")
    assert scored == []
    assert second.counts["cached"] == 8 and second.counts["scored"] == 7 and second.counts["failed"] == 1
    for name in OUTPUTS:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    pd.testing.assert_frame_equal(first.predictions, second.predictions)


def test_changed_mask_rescores_only_its_shard(tmp_path, scored):
    protocol = workspace(tmp_path)
    run(protocol, tmp_path / "a", tmp_path / "cache")
    Image.fromarray(ring(10)).save(tmp_path / "site" / "mask4.png")  # shard 1: cases c3, c4, c5
    scored.clear()
    res = run(protocol, tmp_path / "b", tmp_path / "cache")
    assert sorted(scored) == ["c3", "c4", "c5"] and res.counts["cached"] == 5
    row = res.predictions.set_index("case_id").loc["c4"]
    assert row["area_ref_mm2"] == pytest.approx(100 * 0.5 * 0.5)  # 10x10 pixels of 0.5 mm: the new mask


def test_mask_with_new_content_and_old_time_is_rescored_with_hash_inputs(tmp_path, scored):
    """A mask replaced in place with its modification time set back is caught by content keys."""
    protocol = workspace(tmp_path)
    run(protocol, tmp_path / "a", tmp_path / "cache", hash_inputs=True)
    path = tmp_path / "site" / "mask6.png"
    st = os.stat(path)
    Image.fromarray(ring(6)).save(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    scored.clear()
    res = run(protocol, tmp_path / "b", tmp_path / "cache", hash_inputs=True)
    assert sorted(scored) == ["c6", "c7"] and res.counts["cached"] == 6
    assert res.predictions.set_index("case_id").loc["c6", "area_ref_mm2"] == pytest.approx(36 * 0.25)


def test_changed_threshold_rescores_everything(tmp_path, scored):
    protocol = workspace(tmp_path)
    run(protocol, tmp_path / "a", tmp_path / "cache")
    protocol.write_text(protocol.read_text().replace("pixel_sample: 40", "pixel_sample: 40\n  threshold: 0.4"))
    scored.clear()
    res = run(protocol, tmp_path / "b", tmp_path / "cache")
    assert sorted(scored) == [f"c{i}" for i in range(8)] and res.counts["cached"] == 0


def test_changed_spacing_rescores_its_shard(tmp_path, scored):
    protocol = workspace(tmp_path)
    run(protocol, tmp_path / "a", tmp_path / "cache")
    manifest = pd.read_csv(tmp_path / "dev.csv")
    manifest.loc[manifest["case_id"] == "c0", "pixel_size_mm"] = 0.25
    manifest.to_csv(tmp_path / "dev.csv", index=False)
    scored.clear()
    res = run(protocol, tmp_path / "b", tmp_path / "cache")
    assert sorted(scored) == ["c0", "c1", "c2"] and res.counts["cached"] == 5


def test_worst_cases_do_not_depend_on_the_shards(tmp_path):
    """The run's heaps rebuilt from each shard's candidates keep the same cases, in the same order, as
    one heap over every case (worst_cases 3 over 8 cases cut into shards of 3, 2 and 1)."""
    protocol = workspace(tmp_path)
    whole = pd.read_parquet(
        score_protocol(protocol, out_dir=tmp_path / "w", device="cpu", shard_size=100).files["overlays"]
    )
    for size in (1, 2, 3):
        cut = pd.read_parquet(
            score_protocol(protocol, out_dir=tmp_path / f"s{size}", device="cpu", shard_size=size).files["overlays"]
        )
        pd.testing.assert_frame_equal(whole, cut)
    # independent check: the three lowest Dice, ties to the earlier case, as a sort of the rows gives
    rows = pd.read_parquet(tmp_path / "w" / "predictions.parquet")
    rows["order"] = rows["case_id"].str[1:].astype(int)
    expected = rows.dropna(subset=["dice"]).sort_values(["dice", "order"], kind="stable").head(3)["case_id"]
    assert whole["case_id"].tolist() == expected.tolist()
