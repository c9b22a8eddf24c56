"""The caches never serve what they did not compute: a shard changed on disk is detected by its
checksum and computed again (with a warning), and with content keys (``hash_inputs``, on in CI) an
image replaced by another of the same size with its modification time set back is scored afresh."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import torch
from PIL import Image

from validate.scoring import score_protocol

from test_scoring_support import chest_like_images, png_protocol, reference_inputs, tiny_model


def _rewrite_npz(path, **changes):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update({k: f(arrays[k]) for k, f in changes.items()})
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _second_checkpoint(tmp_path):
    path = tmp_path / "other_state.pt"
    torch.save(tiny_model(seed=7).state_dict(), path)
    return path


def test_an_altered_score_shard_is_scored_again_with_a_warning(tmp_path, capsys):
    """Regression: a shard rewritten with altered scores was served as it was."""
    images = chest_like_images(48, seed=2)
    protocol = png_protocol(tmp_path, images)
    first = score_protocol(protocol, out_dir=tmp_path / "out", batch_size=8, shard_size=16)
    shard = next((tmp_path / "out" / "cache").rglob("shard-000001-*.npz"))
    _rewrite_npz(shard, logits=lambda v: v + 5.0)
    capsys.readouterr()
    again = score_protocol(protocol, out_dir=tmp_path / "out", batch_size=8, shard_size=16)
    err = capsys.readouterr().err
    assert "does not match its checksum" in err and shard.name in err
    assert again.counts["cached"] == 32  # shards 0 and 2; shard 1 scored again
    with torch.inference_mode():
        bare = tiny_model()(reference_inputs(images))[:, 0].numpy()
    assert np.abs(again.predictions["logit"].to_numpy() - bare).max() <= 1e-5
    pd.testing.assert_frame_equal(again.predictions, first.predictions)
    # rescored shards are cached whole again: a third run takes all from the cache, silently
    third = score_protocol(protocol, out_dir=tmp_path / "out", batch_size=8, shard_size=16)
    assert third.counts["cached"] == 48 and "warning" not in capsys.readouterr().err


def test_a_score_shard_without_its_checksum_is_not_trusted(tmp_path, capsys):
    images = chest_like_images(20, seed=3)
    protocol = png_protocol(tmp_path, images)
    score_protocol(protocol, out_dir=tmp_path / "out", batch_size=8, shard_size=16)
    for sidecar in (tmp_path / "out" / "cache").rglob("shard-*.npz.sha256"):
        sidecar.unlink()
    again = score_protocol(protocol, out_dir=tmp_path / "out", batch_size=8, shard_size=16)
    assert again.counts["cached"] == 0 and "has no checksum" in capsys.readouterr().err


def test_altered_cached_inputs_are_decoded_again_with_a_warning(tmp_path, capsys):
    images = chest_like_images(48, seed=5)
    protocol = png_protocol(tmp_path, images)
    score_protocol(
        protocol, out_dir=tmp_path / "one", cache_dir=tmp_path / "cache", batch_size=8, shard_size=16, cache_inputs=True
    )
    inputs = next((tmp_path / "cache").rglob("inputs-*/shard-000001-*-x.npy"))
    x = np.load(inputs)
    np.save(inputs, 255 - x)  # same shape and dtype, other pixels
    capsys.readouterr()
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
    assert "do not match the checksum" in capsys.readouterr().err
    assert warm.counts["inputs_cached"] == 32
    with torch.inference_mode():
        bare = tiny_model(seed=7)(reference_inputs(images))[:, 0].numpy()
    assert np.abs(warm.predictions["logit"].to_numpy() - bare).max() <= 1e-5
    # the index's own checksum guards the statistics and failures it holds
    index = next((tmp_path / "cache").rglob("inputs-*/shard-000002-*.npz"))
    _rewrite_npz(index, cases=lambda t: t + 0.0 * t - np.where(np.arange(t.shape[1]) == 3, 1.0, 0.0))
    third = tmp_path / "third_state.pt"  # a new checkpoint: no cached scores, the decoded inputs are read
    torch.save(tiny_model(seed=9).state_dict(), third)
    again = score_protocol(
        protocol,
        checkpoint=third,
        out_dir=tmp_path / "three",
        cache_dir=tmp_path / "cache",
        batch_size=8,
        shard_size=16,
        cache_inputs=True,
    )
    assert "does not match its checksum" in capsys.readouterr().err
    assert again.counts["inputs_cached"] == 32  # shards 0 and 1 (shard 1 saved afresh above)
    fresh = score_protocol(
        protocol,
        checkpoint=third,
        out_dir=tmp_path / "fresh",
        cache_dir=tmp_path / "nocache",
        batch_size=8,
        shard_size=16,
    )
    pd.testing.assert_frame_equal(again.predictions, fresh.predictions)


def _same_size_replacement(path, new):
    """Replace the PNG at ``path`` by ``new`` (uncompressed, so of the same byte size) and set its
    modification time back: what size and mtime keys cannot see."""
    st = os.stat(path)
    Image.fromarray(new).save(path, compress_level=0)
    assert os.stat(path).st_size == st.st_size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _uncompressed_site(tmp_path, n=48, seed=6):
    images = chest_like_images(n, seed=seed)
    protocol = png_protocol(tmp_path, images)
    for i, img in enumerate(images):  # same size for any content: a replacement can match byte for byte
        Image.fromarray(img).save(tmp_path / "data" / "a" / f"a-{i:04d}.png", compress_level=0)
    return images, protocol


def test_content_keys_see_a_replaced_image_with_the_same_size_and_mtime(tmp_path, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    images, protocol = _uncompressed_site(tmp_path)
    score_protocol(protocol, out_dir=tmp_path / "out", batch_size=8, shard_size=16, hash_inputs=True)
    new = 255 - images[20]
    _same_size_replacement(tmp_path / "data" / "a" / "a-0020.png", new)
    again = score_protocol(protocol, out_dir=tmp_path / "out", batch_size=8, shard_size=16, hash_inputs=True)
    assert again.counts["cached"] == 32  # shard 1 (cases 16..31) scored afresh
    with torch.inference_mode():
        want = tiny_model()(reference_inputs(new[None]))[0, 0].item()
    assert abs(again.predictions.set_index("case_id").loc["a-0020", "logit"] - want) <= 1e-5
    # without content keys, size and mtime are all the cache sees (the documented limit of the default)
    score_protocol(protocol, out_dir=tmp_path / "plain", batch_size=8, shard_size=16)
    _same_size_replacement(tmp_path / "data" / "a" / "a-0020.png", images[20])
    stale = score_protocol(protocol, out_dir=tmp_path / "plain", batch_size=8, shard_size=16)
    assert stale.counts["cached"] == 48


def test_ci_mode_keys_by_content_by_default_for_scores_and_decoded_inputs(tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "true")
    images, protocol = _uncompressed_site(tmp_path)
    score_protocol(
        protocol, out_dir=tmp_path / "one", cache_dir=tmp_path / "cache", batch_size=8, shard_size=16, cache_inputs=True
    )
    new = 255 - images[40]
    _same_size_replacement(tmp_path / "data" / "a" / "a-0040.png", new)
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
    assert warm.counts["inputs_cached"] == 32  # shard 2 (cases 32..47) decoded afresh
    with torch.inference_mode():
        want = tiny_model(seed=7)(reference_inputs(new[None]))[0, 0].item()
    assert abs(warm.predictions.set_index("case_id").loc["a-0040", "logit"] - want) <= 1e-5
    import json

    assert json.loads((tmp_path / "two" / "scoring.json").read_text())["cache_keys"] == "file content (sha256)"
