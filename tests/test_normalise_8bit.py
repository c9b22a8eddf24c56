"""8-bit batches on the CPU are normalised by table look-up (validate.scoring.inputs.normalise): the same
float32 values, bit for bit, as the arithmetic on the same values given as float32, and within float32
rounding of ``(x / scale - mean) / std`` computed in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from validate.scoring import inputs
from validate.scoring.inputs import Preprocessing, normalise

CASES = [
    # (spec, batch shape)
    (Preprocessing(kind="image", size=(28, 28), channels=1, scale=255.0, mean=(0.5,), std=(0.5,)), (130, 1, 28, 28)),
    (
        Preprocessing(
            kind="image", size=(64, 48), channels=3, scale=255.0, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
        ),
        (9, 3, 64, 48),
    ),
    (Preprocessing(kind="image", size=(5, 7), channels=3, scale=1.0, mean=(0.0,), std=(1.0,)), (4, 3, 5, 7)),
    # a volume batch [N, C, D, H, W] with per-channel constants
    (
        Preprocessing(kind="image", size=(6, 6), channels=2, scale=255.0, mean=(0.1, 0.2), std=(0.3, 0.4)),
        (3, 2, 4, 6, 6),
    ),
]


def _reference(x: np.ndarray, spec: Preprocessing) -> np.ndarray:
    c = x.shape[1]
    shape = (1, c) + (1,) * (x.ndim - 2)
    mean = np.broadcast_to(np.asarray(spec.mean, dtype=np.float64), (c,)).reshape(shape)
    std = np.broadcast_to(np.asarray(spec.std, dtype=np.float64), (c,)).reshape(shape)
    return (x.astype(np.float64) / spec.scale - mean) / std


@pytest.mark.parametrize("spec,shape", CASES)
def test_8bit_lookup_equals_the_arithmetic_and_the_definition(spec, shape):
    x = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    x.reshape(-1)[:256] = np.arange(256, dtype=np.uint8)  # every level at least once
    got = normalise(torch.from_numpy(x), spec)
    assert got.dtype == torch.float32 and tuple(got.shape) == shape
    arithmetic = normalise(torch.from_numpy(x.astype(np.float32)), spec)  # a float batch: no table
    np.testing.assert_array_equal(got.numpy(), arithmetic.numpy())
    np.testing.assert_allclose(got.numpy(), _reference(x, spec), rtol=1e-6, atol=1e-6)


def test_8bit_lookup_in_parts_and_on_a_strided_batch(monkeypatch):
    spec, _ = CASES[1]
    monkeypatch.setattr(inputs, "_GATHER_ELEMENTS", 3 * 64 * 48)  # three images a part: the parts' seams
    hwc = np.random.default_rng(5).integers(0, 256, (10, 64, 48, 3), dtype=np.uint8)
    x = torch.from_numpy(hwc).permute(0, 3, 1, 2)  # channels last in memory
    got = normalise(x, spec)
    np.testing.assert_array_equal(got.numpy(), normalise(x.float(), spec).numpy())
    assert not np.shares_memory(got.numpy(), hwc)  # the caller's batch is never written


def test_8bit_cpu_batches_take_the_table():
    spec, shape = CASES[0]
    inputs._8bit_table.cache_clear()
    normalise(torch.zeros(shape, dtype=torch.uint8), spec)
    assert inputs._8bit_table.cache_info().currsize == 1
    normalise(torch.zeros(shape, dtype=torch.float32), spec)  # float input: arithmetic, no new table
    assert inputs._8bit_table.cache_info().currsize == 1


def test_large_8bit_batches_keep_the_arithmetic(monkeypatch):
    spec, shape = CASES[1]
    monkeypatch.setattr(inputs, "_TABLE_MOST_ELEMENTS", int(np.prod(shape)) - 1)
    inputs._8bit_table.cache_clear()
    x = torch.from_numpy(np.random.default_rng(2).integers(0, 256, shape, dtype=np.uint8))
    got = normalise(x, spec)
    assert inputs._8bit_table.cache_info().currsize == 0
    np.testing.assert_allclose(got.numpy(), _reference(x.numpy(), spec), rtol=1e-6, atol=1e-6)
