"""Property tests (hypothesis) and the block contract: undefined metrics, insufficiency, JSON safety."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from validate.io import to_json_text
from validate.metrics import (
    MetricSettings,
    auroc,
    binary_block,
    calibration_intercept,
    calibration_slope,
    ece,
    multiclass_block,
    multilabel_block,
    threshold_for_sensitivity,
)

FAST = settings(max_examples=40, deadline=None)


@FAST
@given(st.integers(0, 10_000), st.sampled_from(["exp", "cube", "logit", "affine"]))
def test_auroc_invariant_to_increasing_transforms(seed, kind):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 200))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    s = np.round(rng.random(n), int(rng.integers(1, 4)))  # ties included
    f = {
        "exp": np.exp,
        "cube": lambda v: v**3,
        "logit": lambda v: np.log((v + 1e-3) / (1.001 - v)),
        "affine": lambda v: 3 * v - 7,
    }[kind]
    assert auroc(y, f(s)) == pytest.approx(auroc(y, s), abs=1e-12)


@FAST
@given(st.floats(0.0, 1.0), st.integers(1, 300), st.integers(0, 2**31 - 1))
def test_ece_of_constant_predictor_is_gap_to_prevalence(c, n, seed):
    y = np.random.default_rng(seed).integers(0, 2, n)
    assert ece(y, np.full(n, c)) == pytest.approx(abs(c - y.mean()), abs=1e-12)


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 10_000))
def test_perfectly_calibrated_data_has_slope_one_intercept_zero(seed):
    rng = np.random.default_rng(seed)
    n = 20_000
    z = rng.normal(-0.5, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    s = calibration_slope(y, logits=z)
    i = calibration_intercept(y, logits=z)
    # estimates within 4.5 standard errors of the truth (fails with probability < 1e-5 per draw)
    assert abs(s["estimate"] - 1) < 4.5 * s["se"]
    assert abs(i["estimate"]) < 4.5 * i["se"]


@FAST
@given(hnp.arrays(np.float64, st.integers(5, 60), elements=st.floats(0, 1)), st.floats(0.05, 1.0))
def test_target_threshold_reaches_target(p, target):
    y = (np.arange(p.size) % 2).astype(int)
    t = threshold_for_sensitivity(y, p, target)
    sens = np.mean(p[y == 1] >= t)
    assert sens >= target - 1e-12
    higher = p[(y == 1) & (p > t)]
    if higher.size:  # the next larger positive score would fall short of the target
        assert np.mean(p[y == 1] >= higher.min()) < target


SMALL = MetricSettings(n_bootstrap=30)


def test_single_class_block_nulls_with_reasons_and_no_nan():
    rng = np.random.default_rng(0)
    p = rng.random(50)
    block = binary_block(np.zeros(50, dtype=int), p, settings=SMALL)
    for k in ("auroc", "auprc", "scaled_brier", "calibration_intercept", "calibration_slope", "sensitivity"):
        assert block[k] is None and k in block["undefined"]
    assert block["brier"]["estimate"] is not None and block["ece"]["estimate"] is not None
    assert block["insufficient"] and "0 events" in block["reason"]
    json.loads(to_json_text(block))  # raises on NaN


def test_insufficient_rule_keeps_numbers():
    rng = np.random.default_rng(1)
    p = rng.random(40)
    y = (p > 0.8).astype(int)
    y[:3] = 1
    block = binary_block(y, p, settings=SMALL)
    assert block["insufficient"] is True and "min_events 10" in block["reason"]
    assert block["auroc"]["estimate"] is not None and block["auroc"]["method"] == "delong"
    ok = binary_block(rng.integers(0, 2, 200), rng.random(200), settings=SMALL)
    assert "insufficient" not in ok


def test_block_keys_follow_design():
    rng = np.random.default_rng(2)
    p = rng.random(120)
    y = (rng.random(120) < p).astype(int)
    b = binary_block(y, p, settings=SMALL)
    for k in (
        "n",
        "n_events",
        "prevalence",
        "auroc",
        "auprc",
        "brier",
        "scaled_brier",
        "log_loss",
        "calibration_intercept",
        "calibration_slope",
        "eavg",
        "e50",
        "e90",
        "emax",
        "ici",
        "ece",
        "ece_adaptive",
        "mce",
        "hosmer_lemeshow",
        "spiegelhalter_z",
    ):
        assert k in b, k
    assert b["auroc"]["method"] == "delong"
    assert b["calibration_slope"]["method"] == "wald" and b["calibration_intercept"]["method"] == "wald"
    assert b["ece"]["method"] == "bootstrap_bound"  # validate.metrics.ece_interval
    assert set(b["hosmer_lemeshow"]) >= {"statistic", "df", "p_value"}
    assert set(b["spiegelhalter_z"]) == {"statistic", "p_value"}
    assert b["ece"]["ci_low"] <= b["ece"]["ci_high"]


def test_threshold_carried_to_block():
    rng = np.random.default_rng(3)
    p = rng.random(200)
    y = (rng.random(200) < p).astype(int)
    b = binary_block(y, p, settings=SMALL, threshold_carry=0.3)
    assert b["target_sensitivity"]["threshold"] == 0.3 and b["target_sensitivity"]["carried"] is True
    assert b["target_sensitivity"]["sensitivity"]["estimate"] == pytest.approx(np.mean(p[y == 1] >= 0.3))


def test_multiclass_and_multilabel_blocks():
    rng = np.random.default_rng(4)
    P = rng.dirichlet([1, 1, 1], 150)
    y = np.array([rng.choice(3, p=r) for r in P])
    b = multiclass_block(y, P, settings=SMALL, class_names=["a", "b", "c"], smooth_intervals=False)
    for k in ("accuracy", "auroc_macro", "ece", "ece_classwise", "brier", "log_loss"):
        assert b[k]["estimate"] is not None, k
    assert set(b["classes"]) == {"a", "b", "c"} and "auroc" in b["classes"]["a"]
    Y = (rng.random((150, 2)) < 0.4).astype(int)
    Q = rng.random((150, 2))
    m = multilabel_block(Y, Q, settings=SMALL, label_names=["u", "v"], smooth_intervals=False)
    assert set(m["labels"]) == {"u", "v"} and m["auroc_macro"]["estimate"] is not None
    json.loads(to_json_text({"a": b, "b": m}))
