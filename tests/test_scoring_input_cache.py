"""Decoded inputs kept between runs: a second checkpoint on the same cohort is scored without decoding,
with the same predictions, failures and image statistics as a fresh run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from validate.scoring import inputs as inputs_module, score_protocol

from test_scoring_support import chest_like_images, png_protocol_with_bad_cases, reference_inputs, tiny_model


def _site_with_bad_cases(tmp_path, n=40):
    images = chest_like_images(n, seed=5)
    return images, png_protocol_with_bad_cases(tmp_path, images)


def _second_checkpoint(tmp_path):
    path = tmp_path / "other_state.pt"
    torch.save(tiny_model(seed=7).state_dict(), path)
    return path


def test_another_checkpoint_reuses_the_decoded_inputs(tmp_path, monkeypatch):
    images, protocol = _site_with_bad_cases(tmp_path)
    first = score_protocol(
        protocol, out_dir=tmp_path / "one", cache_dir=tmp_path / "cache", batch_size=8, shard_size=16, cache_inputs=True
    )
    assert first.counts["inputs_cached"] == 0 and first.counts["failed"] == 2
    assert len(sorted((tmp_path / "cache" / "a").glob("inputs-*/shard-*.npz"))) == 3

    other = _second_checkpoint(tmp_path)
    fresh = score_protocol(
        protocol,
        checkpoint=other,
        out_dir=tmp_path / "fresh",
        cache_dir=tmp_path / "nocache",
        batch_size=8,
        shard_size=16,
    )

    reads = []
    real = inputs_module.read_case_with_stats

    def counting(*args, **kwargs):
        reads.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr("validate.scoring.evaluator.read_case_with_stats", counting)
    warm = score_protocol(
        protocol,
        checkpoint=other,
        out_dir=tmp_path / "two",
        cache_dir=tmp_path / "cache",
        batch_size=8,
        shard_size=16,
        cache_inputs=True,
    )
    assert reads == []  # nothing decoded: every shard's inputs came from the cache
    assert warm.counts["inputs_cached"] == 40 and warm.counts["cached"] == 0  # new checkpoint: new scores
    pd.testing.assert_frame_equal(warm.predictions, fresh.predictions)
    pd.testing.assert_frame_equal(warm.failures, fresh.failures)
    keep = [i for i in range(40) if i not in (3, 7)]
    model = tiny_model(seed=7)
    with torch.inference_mode():
        bare = model(reference_inputs(images[keep]))[:, 0].numpy()
    assert np.abs(warm.predictions["logit"].to_numpy() - bare).max() <= 1e-5


def test_loader_workers_read_the_cached_shards_themselves(tmp_path):
    _, protocol = _site_with_bad_cases(tmp_path, n=40)
    first = score_protocol(
        protocol,
        out_dir=tmp_path / "one",
        cache_dir=tmp_path / "cache",
        batch_size=8,
        shard_size=16,
        cache_inputs=True,
        workers=2,
    )
    assert first.counts["inputs_cached"] == 0
    other = _second_checkpoint(tmp_path)
    fresh = score_protocol(
        protocol,
        checkpoint=other,
        out_dir=tmp_path / "fresh",
        cache_dir=tmp_path / "nocache",
        batch_size=8,
        shard_size=16,
    )
    warm = score_protocol(
        protocol,
        checkpoint=other,
        out_dir=tmp_path / "two",
        cache_dir=tmp_path / "cache",
        batch_size=8,
        shard_size=16,
        cache_inputs=True,
        workers=2,
    )
    assert warm.counts["inputs_cached"] == 40
    pd.testing.assert_frame_equal(warm.predictions, fresh.predictions)
    pd.testing.assert_frame_equal(warm.failures, fresh.failures)


def test_an_incomplete_shard_is_decoded_again(tmp_path):
    _, protocol = _site_with_bad_cases(tmp_path, n=40)
    score_protocol(
        protocol, out_dir=tmp_path / "one", cache_dir=tmp_path / "cache", batch_size=8, shard_size=16, cache_inputs=True
    )
    inputs = sorted((tmp_path / "cache" / "a").glob("inputs-*/shard-000001-*-x.npy"))
    assert len(inputs) == 1
    inputs[0].write_bytes(inputs[0].read_bytes()[:200])  # cut short: the shard must not be trusted
    other = _second_checkpoint(tmp_path)
    fresh = score_protocol(
        protocol,
        checkpoint=other,
        out_dir=tmp_path / "fresh",
        cache_dir=tmp_path / "nocache",
        batch_size=8,
        shard_size=16,
    )
    warm = score_protocol(
        protocol,
        checkpoint=other,
        out_dir=tmp_path / "two",
        cache_dir=tmp_path / "cache",
        batch_size=8,
        shard_size=16,
        cache_inputs=True,
    )
    pd.testing.assert_frame_equal(warm.predictions, fresh.predictions)
    assert warm.counts["inputs_cached"] == 24  # shards 0 and 2; shard 1 was decoded
    # decoded again and saved whole
    assert np.load(inputs[0]).shape == (16, 1, 16, 16)


def test_a_changed_image_is_decoded_again(tmp_path):
    images, protocol = _site_with_bad_cases(tmp_path, n=48)
    score_protocol(
        protocol, out_dir=tmp_path / "one", cache_dir=tmp_path / "cache", batch_size=8, shard_size=16, cache_inputs=True
    )
    new = images[20].copy()
    new = 255 - new
    Image.fromarray(new).save(tmp_path / "data" / "a" / "a-0020.png")
    other = _second_checkpoint(tmp_path)
    warm = score_protocol(
        protocol,
        checkpoint=other,
        out_dir=tmp_path / "two",
        cache_dir=tmp_path / "cache",
        batch_size=8,
        shard_size=16,
        cache_inputs=True,
    )
    assert warm.counts["inputs_cached"] == 32  # shard 1 (cases 16..31) decoded afresh
    with torch.inference_mode():
        want = tiny_model(seed=7)(reference_inputs(new[None]))[0, 0].item()
    row = warm.predictions.set_index("case_id").loc["a-0020"]
    assert abs(row["logit"] - want) <= 1e-5
    assert row["img_mean"] == pytest.approx(np.mean(new / 255.0), rel=1e-12)


def test_without_the_flag_no_pixels_are_kept(tmp_path):
    _, protocol = _site_with_bad_cases(tmp_path, n=20)
    result = score_protocol(protocol, out_dir=tmp_path / "out", batch_size=8, shard_size=16)
    assert "inputs_cached" not in result.counts
    assert not list((tmp_path / "out" / "cache").rglob("inputs-*"))
