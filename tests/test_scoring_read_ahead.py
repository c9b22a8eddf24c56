"""The evaluator's read-ahead thread (validate.scoring.evaluator.ReadAhead): with no DataLoader workers,
files are read one batch ahead in a background thread; batches keep their order, a reader's exception
reaches the caller, stopping early stops the thread, and the scores are those of reading between batches."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from validate.scoring import evaluator
from validate.scoring.evaluator import EngineOptions, ImageCases, ReadAhead, score_shards
from validate.scoring.inputs import Preprocessing


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name == "validate-read-ahead"}


def test_batches_arrive_in_order_and_the_thread_ends():
    got = list(ReadAhead(iter([{"i": i} for i in range(50)]), depth=2))
    assert [b["i"] for b in got] == list(range(50))
    assert not _threads()


def test_a_readers_exception_reaches_the_caller():
    def loader():
        yield {"i": 0}
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(ReadAhead(loader()))
    assert not _threads()


def test_stopping_early_stops_the_thread():
    produced = []

    def loader():
        for i in range(1000):
            produced.append(i)
            yield {"i": i}

    it = iter(ReadAhead(loader(), depth=2))
    assert next(it)["i"] == 0
    it.close()
    assert not _threads()
    assert len(produced) < 10  # it did not read on to the end


def test_scores_with_and_without_read_ahead_are_identical(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(23):
        path = tmp_path / f"c{i}.png"
        Image.fromarray((rng.random((9 + i % 3, 11)) * 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    paths.insert(5, str(tmp_path / "missing.png"))
    spec = Preprocessing(kind="image", size=(8, 8), channels=1, scale=255.0)
    used = []
    real = evaluator.ReadAhead

    def spy(loader, depth=2):
        used.append(True)
        return real(loader, depth)

    monkeypatch.setattr(evaluator, "ReadAhead", spy)

    def run(thread):
        options = EngineOptions(device=torch.device("cpu"), batch_size=4, workers=0, decode_thread=thread)
        return score_shards(
            lambda x: x.reshape(len(x), -1)[:, :2],
            ImageCases(paths, spec),
            [0, 1],
            n_cases=len(paths),
            shard_size=16,
            n_outputs=2,
            spec=spec,
            options=options,
        )

    serial, ahead = run(False), run(True)
    assert used == [True]  # the read-ahead ran once, for the second run only
    assert sorted(serial) == sorted(ahead) == [0, 1]
    for s in serial:
        np.testing.assert_array_equal(serial[s].positions, ahead[s].positions)
        np.testing.assert_array_equal(serial[s].logits, ahead[s].logits)
        np.testing.assert_array_equal(serial[s].image_stats, ahead[s].image_stats)
        assert serial[s].failures == ahead[s].failures
    assert ahead[0].failures == [(5, "image file not found", "read")]
