"""Conformance of the random-effects synthesis against R metafor (rma + predict), to 1e-6.

One Rscript call (tests/r/synthesis.R) computes, on the heart model's three external sites (the
shipped model's logits: Hungary, Switzerland, VA Long Beach) and on metafor's dat.bcg (a meta-analysis
of BCG vaccine trials: not a validation data set, it checks the estimator on k = 13), the per-site
inputs with pROC and glm, then rma(method = "REML", test = "knha"), REML with z, DL with z and with
knha, and predict(). validate's synthesis (validate.analysis.synthesis.synthesize over the site BLOCKs
of validate.metrics.metrics_report) must give the same inputs, estimates, intervals, τ², I², Q and the
prediction interval (t_{k−2}, Higgins et al. 2009, from metafor's τ² and se).

R with metafor is required when ``VALIDATE_REQUIRE_R=1`` (CI): a missing reference fails, not skips.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess

import numpy as np
import pytest

from validate.analysis.synthesis import random_effects, synthesize

from conftest import REPO, _require

pytestmark = pytest.mark.r
TOL = dict(rel=1e-6, abs=1e-8)
EXTERNAL = ("hungary", "switzerland", "va")
DESIGNS = {"REML_hksj": ("REML", "hksj"), "REML_z": ("REML", "z"), "DL_z": ("DL", "z"), "DL_hksj": ("DL", "hksj")}
BACK = {
    "auroc": lambda x: 1 / (1 + math.exp(-x)),
    "calibration_slope": float,
    "calibration_intercept": float,
    "oe_ratio": math.exp,
}


def _metafor_installed() -> bool:
    if shutil.which("Rscript") is None:
        return False
    probe = subprocess.run(["Rscript", "-e", "library(metafor)"], capture_output=True, timeout=120)
    return probe.returncode == 0


requires_metafor = _require("VALIDATE_REQUIRE_R", _metafor_installed(), "R with metafor (r-cran-metafor)")


@pytest.fixture(scope="module")
def heart_external():
    """The shipped heart model's predictions table at the external sites, and their metrics (no bootstrap:
    the synthesis reads DeLong and Wald standard errors only)."""
    from validate.metrics import MetricSettings, metrics_report
    from validate.predictions import table_from_frame

    from test_comparison import heart_pair

    new, _ = heart_pair()
    frame = new.frame[new.frame["site"].isin(EXTERNAL)].reset_index(drop=True)
    table = table_from_frame(frame)
    metrics = metrics_report(table, settings=MetricSettings(n_bootstrap=0), workers=1)
    return table, metrics


@pytest.fixture(scope="module")
def metafor(heart_external, tmp_path_factory):
    table, _ = heart_external
    f = tmp_path_factory.mktemp("synthesis") / "sites.csv"
    import pandas as pd

    pd.DataFrame({"site": table.frame["site"], "y": table.y().astype(int), "lp": table.logit()}).to_csv(
        f, index=False, float_format="%.17g"
    )
    proc = subprocess.run(
        ["Rscript", str(REPO / "tests" / "r" / "synthesis.R"), str(f)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _compare(ours: dict, ref: dict, back=lambda x: x) -> None:
    for key in ("estimate", "ci_low", "ci_high", "pi_low", "pi_high"):
        assert ours[key] == pytest.approx(back(ref[key]), **TOL), key
    for key in ("se", "tau2", "i2", "q", "q_p_value"):
        assert ours[key] == pytest.approx(ref[key], **TOL), key
    assert ours["k"] == ref["k"]


@requires_metafor
@pytest.mark.parametrize("design", DESIGNS)
def test_bcg_matches_metafor(metafor, design):
    method, interval = DESIGNS[design]
    data = metafor["bcg_data"]
    ours = random_effects(data["yi"], data["sei"], method=method, test=interval)
    _compare(ours, metafor["bcg"][design])


@requires_metafor
def test_metafor_predict_uses_t_k_minus_1_under_knha_ours_t_k_minus_2(metafor):
    # the documented difference (module docstring of validate.analysis.synthesis): same centre and
    # se, Higgins et al.'s t_{k-2} against metafor 3.8's t_{k-1}, so our interval is the wider one
    ref = metafor["bcg"]["REML_hksj"]
    data = metafor["bcg_data"]
    ours = random_effects(data["yi"], data["sei"])
    half_metafor = ref["estimate"] - ref["pi_low_metafor"]
    t_ratio = (ours["estimate"] - ours["pi_low"]) / half_metafor
    from scipy import stats

    assert t_ratio == pytest.approx(stats.t.ppf(0.975, 11) / stats.t.ppf(0.975, 12), rel=1e-9)


@requires_metafor
def test_heart_site_inputs_match_proc_and_glm(heart_external, metafor):
    _, metrics = heart_external
    syn = synthesize(metrics, sites=list(EXTERNAL), roles=dict.fromkeys(EXTERNAL, "external"))
    ref = {row["site"]: row for row in metafor["inputs"]}
    for metric in BACK:
        for item in syn["metrics"][metric]["inputs"]:
            assert item["theta"] == pytest.approx(ref[item["site"]][f"{metric}_yi"], **TOL), (metric, item["site"])
            assert item["se"] == pytest.approx(ref[item["site"]][f"{metric}_sei"], **TOL), (metric, item["site"])


@requires_metafor
@pytest.mark.parametrize("design", DESIGNS)
@pytest.mark.parametrize("metric", list(BACK))
def test_heart_external_synthesis_matches_metafor(heart_external, metafor, design, metric):
    _, metrics = heart_external
    method, interval = DESIGNS[design]
    syn = synthesize(
        metrics, sites=list(EXTERNAL), roles=dict.fromkeys(EXTERNAL, "external"), method=method, interval=interval
    )
    ours = syn["metrics"][metric]
    assert ours["k"] == 3 and not ours["excluded"]
    _compare(ours, metafor["heart"][metric][design], back=BACK[metric])
    assert np.isfinite(ours["pi_low"])
