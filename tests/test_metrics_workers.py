"""Blocks evaluated in worker processes give the same report as one process (to rounding: BLAS sums
in a different order with one thread per worker)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from validate.errors import InputError
from validate.metrics import MetricSettings, metrics_report
from validate.metrics.workers import AUTO_MIN_WORK, available_cpus, choose_workers, run_blocks


def _table(n=1500, seed=3):
    rng = np.random.default_rng(seed)
    site = rng.choice(["a", "b", "c"], n)
    z = rng.normal(-0.5, 1.3, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(0.9 * z + (site == "b") * 0.5)))).astype(int)
    return pd.DataFrame(
        {
            "site": site,
            "y": y,
            "logit": z,
            "sex": rng.choice(["F", "M"], n),
            "patient_id": [f"p{i // 2}" for i in range(n)],
        }
    )


def test_worker_processes_reproduce_the_single_process_report():
    df = _table()
    # n >= 1000 per pooled block: the moment engine for lowess/loess runs in the workers too
    settings = MetricSettings(n_bootstrap=60, seed=11)
    one = metrics_report(df, settings=settings, subgroup_columns=["sex"], development_site="a", workers=1)
    two = metrics_report(df, settings=settings, subgroup_columns=["sex"], development_site="a", workers=2)
    flat_one, flat_two = _flatten(one), _flatten(two)
    assert flat_one.keys() == flat_two.keys()
    for k, v in flat_one.items():
        if isinstance(v, float):
            assert flat_two[k] == pytest.approx(v, rel=1e-11, abs=1e-13), k
        else:
            assert flat_two[k] == v, k
    assert list(two["sites"]) == list(one["sites"]) and sorted(two["sites"]) == ["a", "b", "c"]
    assert list(two["subgroups"]["sex"]) == ["F", "M"]
    assert two["overall"]["ece"]["ci_low"] is not None and two["overall"]["ici"]["ci_high"] is not None


def _flatten(obj, prefix=""):
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}/{k}"))
        return out
    if isinstance(obj, list):
        out = {}
        for i, v in enumerate(obj):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: obj}


def test_automatic_choice_follows_the_amount_of_work(monkeypatch):
    monkeypatch.delenv("VALIDATE_METRICS_WORKERS", raising=False)
    small = [1000, 500, 500]
    assert choose_workers(None, small, 1000) == 1  # 2e6 case-replicates: not worth a process
    big = [AUTO_MIN_WORK // 1000, 10, 10]
    assert choose_workers(None, big, 1000) == min(available_cpus(), 3)
    assert choose_workers(None, [AUTO_MIN_WORK], 1000) == 1  # one block: nothing to share
    assert choose_workers(4, [10, 10], 1000) == 2  # never more processes than blocks
    assert choose_workers(1, big, 1000) == 1
    monkeypatch.setenv("VALIDATE_METRICS_WORKERS", "3")
    assert choose_workers(None, [10] * 5, 1) == 3
    monkeypatch.setenv("VALIDATE_METRICS_WORKERS", "many")
    with pytest.raises(InputError, match="VALIDATE_METRICS_WORKERS"):
        choose_workers(None, small, 10)
    with pytest.raises(InputError):
        choose_workers(0, small, 10)


def _fails(x):
    raise ZeroDivisionError(f"job {x}")


def test_an_error_inside_a_block_propagates_from_a_worker():
    with pytest.raises(ZeroDivisionError, match="job"):
        run_blocks(_fails, [{"x": 1}, {"x": 2}], [1, 2], workers=2)


def _inside_a_pool_worker(_):
    return run_blocks(_square, [{"x": 2}, {"x": 3}], [1, 1], workers=2)


def _square(x):
    return x * x


def test_a_pool_worker_evaluates_its_blocks_itself():
    import multiprocessing as mp

    with mp.get_context("fork").Pool(1) as pool:  # pool workers are daemonic: no children allowed
        assert pool.map(_inside_a_pool_worker, [0]) == [[4, 9]]


def test_automatic_choice_leaves_memory_for_the_workers(monkeypatch):
    import validate.metrics.workers as w

    monkeypatch.delenv("VALIDATE_METRICS_WORKERS", raising=False)
    monkeypatch.setattr(w, "available_cpus", lambda: 8)
    sizes = [100_000] * 6
    monkeypatch.setattr(w, "_available_memory", lambda: 64 * 2**30)
    assert w.choose_workers(None, sizes, 1000) == 6  # blocks, not CPUs, are the limit
    block = w.BYTES_PER_CASE * 100_000  # one worker's peak
    monkeypatch.setattr(w, "_available_memory", lambda: 3 * block)  # half usable: room for one block
    assert w.choose_workers(None, sizes, 1000) == 1
    monkeypatch.setattr(w, "_available_memory", lambda: 8 * block)  # half usable: four blocks
    assert w.choose_workers(None, sizes, 1000) == 4
    assert w.choose_workers(4, sizes, 1000) == 4  # an explicit count is obeyed
