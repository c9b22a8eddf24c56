"""``validate plan``: the sample size each site needs, before scoring (issue #15 item 4).

The worked example is the one published with pmvalsampsize (Riley et al., Stat Med 2021;40:4230-51:
external validation of a model for mechanical heart valve failure): anticipated prevalence 0.018,
C-statistic 0.8, linear predictor Normal(−5, 2.5), O/E interval width 1, slope width 0.2, C width 0.1.
Published: O/E 905 (SE 0.246), calibration slope 4544 (10⁶ simulated linear predictors), C-statistic
4252 (SE 0.026); recommended 4544 (82 events), driven by the slope. Expected values below are those
published numbers, hand computations or scipy/sklearn, never the planner's own output.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import integrate, stats
from sklearn.metrics import roc_auc_score

from validate.metrics import precision as P

from tests.adversarial.harness import run_cli

REPO = Path(__file__).resolve().parents[1]
HEART = REPO / "protocols" / "heart.yaml"
SITES = {"cleveland": 303, "hungary": 294, "switzerland": 123, "va": 200}


@pytest.fixture
def protocol(tmp_path: Path) -> Path:
    """The heart protocol with absolute manifest paths and the worked example's O/E width of 1."""
    doc = yaml.safe_load(HEART.read_text())
    for site in doc["sites"]:
        site["manifest"] = str((HEART.parent / site["manifest"]).resolve())
    doc["model"]["checkpoint"] = str((HEART.parent / doc["model"]["checkpoint"]).resolve())
    doc["metrics"]["precision"] = {"oe_ratio": 1.0}
    doc["gates"] = []  # a YAML dump writes the key `on:` bare, which reads back as true
    doc.pop("decision", None)  # the worked example has no net-benefit criterion
    out = tmp_path / "heart-plan.yaml"
    out.write_text(yaml.safe_dump(doc))
    return out


def _plan(tmp_path: Path, protocol: Path, *flags: str) -> dict:
    out = tmp_path / "plan.json"
    res = run_cli("plan", protocol, *flags, "--json", out)
    assert res.code == 0, res.err
    return json.loads(out.read_text())


def _needs(site: dict) -> dict:
    return {c["metric"]: c["needed_n"] for c in site["criteria"]}


def test_published_worked_example(tmp_path, protocol):
    result = _plan(tmp_path, protocol, "--prevalence", "0.018", "--cstatistic", "0.8", "--lp-normal=-5,2.5")
    assert [s["site"] for s in result["sites"]] == list(SITES)
    for site in result["sites"]:
        needs = _needs(site)
        # published 905 steps the SE on a 1e-4 grid (0.2456); the exact SE asinh(0.5)/z needs one case more
        assert needs["oe_ratio"] == 906
        assert needs["auroc"] == 4252
        assert needs["calibration_slope"] == pytest.approx(4544, rel=0.005)
        assert site["driven_by"] == "slope"
        assert site["recommended_n"] == needs["calibration_slope"]
        assert site["recommended_events"] == math.ceil(needs["calibration_slope"] * 0.018)
        assert site["recommended_events"] == pytest.approx(82, abs=1)
        # the manifests' row counts (the sample heart sites) are far below it
        assert site["n_manifest"] == SITES[site["site"]]
        assert site["reaches"] is False


def test_manifest_counts_are_the_manifest_rows(tmp_path, protocol):
    result = _plan(tmp_path, protocol, "--prevalence", "0.4", "--cstatistic", "0.7")
    doc = yaml.safe_load(protocol.read_text())
    for site, spec in zip(result["sites"], doc["sites"], strict=True):
        assert site["n_manifest"] == len(pd.read_csv(spec["manifest"]))


def test_site_prevalence_overrides_the_default(tmp_path, protocol):
    result = _plan(tmp_path, protocol, "--prevalence", "0.018", "--prevalence", "va=0.5")
    by_site = {s["site"]: s for s in result["sites"]}
    se = math.asinh(0.5) / 1.959963984540054
    # by hand: n = (1 − φ)/(φ·SE²) = 1/SE² at φ = 0.5 → 16.59 → 17
    assert _needs(by_site["va"])["oe_ratio"] == math.ceil(0.5 / (0.5 * se * se)) == 17
    assert _needs(by_site["hungary"])["oe_ratio"] == 906
    # neither C nor the linear predictor given: those criteria are reported as not computed
    assert by_site["va"]["not_computed"] == ["slope", "C-statistic"]
    assert by_site["va"]["recommended_n"] == 17 and by_site["va"]["reaches"] is True


def test_from_development_predictions(tmp_path, protocol):
    rng = np.random.default_rng(11)
    lp = rng.normal(-0.5, 1.5, 400)
    y = (rng.uniform(size=400) < 1 / (1 + np.exp(-lp))).astype(int)
    other = rng.normal(0, 1, 50)
    frame = pd.DataFrame(
        {
            "site": ["cleveland"] * 400 + ["va"] * 50,
            "case_id": [f"c{i}" for i in range(450)],
            "y": np.r_[y, np.ones(50, dtype=int)],
            "logit": np.r_[lp, other],
        }
    )
    path = tmp_path / "dev.csv"
    frame.to_csv(path, index=False)
    result = _plan(tmp_path, protocol, "--predictions", str(path))
    assert result["anticipated"]["prevalence"] == pytest.approx(y.mean(), abs=1e-15)
    assert result["anticipated"]["cstatistic"] == pytest.approx(roc_auc_score(y, lp), abs=1e-12)
    site = result["sites"][0]
    phi, c = y.mean(), roc_auc_score(y, lp)
    assert _needs(site)["auroc"] == P.cstat_needed_n(c, phi, 0.1)
    # the slope from the development logits (the va rows are not the development site's)
    p = 1 / (1 + np.exp(-lp))
    v = p * (1 - p)
    i00, i01, i11 = v.mean(), (v * lp).mean(), (v * lp * lp).mean()
    se = 0.2 / (2 * 1.959963984540054)
    assert _needs(site)["calibration_slope"] == math.ceil(i00 / (se * se * (i00 * i11 - i01 * i01)))


def test_decision_thresholds_add_net_benefit_criteria(tmp_path, protocol):
    doc = yaml.safe_load(protocol.read_text())
    doc["decision"] = {"thresholds": [0.1, 0.2]}
    protocol.write_text(yaml.safe_dump(doc))
    result = _plan(tmp_path, protocol, "--prevalence", "0.4", "--cstatistic", "0.8", "--lp-normal=-0.5,1.5")
    assert result["decision_thresholds"] == [0.1, 0.2]
    snb = [c for c in result["sites"][0]["criteria"] if c["metric"] == "standardized_net_benefit"]
    assert [c["threshold"] for c in snb] == [0.1, 0.2]
    assert all(c["needed_n"] > 0 for c in snb)


def test_net_benefit_criterion_from_a_normal_linear_predictor():
    from validate.metrics.settings import PrecisionTargets
    from validate.plan import Anticipated, LinearPredictor, site_plan

    a = Anticipated(default_prevalence=0.2, cstatistic=0.75, lp=LinearPredictor.normal(-1.6, 1.0))
    row = site_plan("s", "external", 500, a, PrecisionTargets(), (0.1, 0.3), 0.95)
    snb = [c for c in row["criteria"] if c["metric"] == "standardized_net_benefit"]
    assert [c["threshold"] for c in snb] == [0.1, 0.3]
    for c in snb:
        t = c["threshold"]
        cut = math.log(t / (1 - t))

        # sensitivity/specificity of a calibrated model by scipy quadrature over LP ~ N(−1.6, 1)
        def e(f, lo, hi):
            lo, hi = max(lo, -1.6 - 12), min(hi, -1.6 + 12)  # ±12 SD: the rest is below 1e-30
            return integrate.quad(lambda x: f(x) * stats.norm.pdf(x, -1.6, 1.0), lo, hi)[0]

        def risk(x):
            return float(stats.logistic.cdf(x))

        sens = e(risk, cut, math.inf) / e(risk, -math.inf, math.inf)
        spec = e(lambda x: 1 - risk(x), -math.inf, cut) / e(lambda x: 1 - risk(x), -math.inf, math.inf)
        assert c["needed_n"] == pytest.approx(P.snb_needed_n(0.2, sens, spec, t, 0.2), abs=1)


@pytest.mark.parametrize(
    "flags, says",
    [
        ((), "no anticipated prevalence"),
        (("--prevalence", "1.5"), "outside (0, 1)"),
        (("--prevalence", "nowhere=0.2"), "no site 'nowhere'"),
        (("--prevalence", "0.2", "--lp-normal", "3"), "not two numbers"),
        (("--prevalence", "0.2", "--lp-normal=1,0"), "SD must be > 0"),
        (("--prevalence", "0.2", "--cstatistic", "1"), "outside (0, 1)"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, protocol, flags, says):
    res = run_cli("plan", protocol, *flags)
    assert res.code == 2
    assert says in res.err
    assert res.err.count("\n") == 1


def test_prevalence_and_c_alone_imply_a_matching_normal_linear_predictor():
    # the normal LP of a calibrated model with prevalence 0.1 and C 0.75 (pmvalsampsize's lpcstat): checked by
    # simulating outcomes from it and measuring prevalence and C with scikit-learn
    from validate.plan import LinearPredictor

    lp = LinearPredictor.matching(0.1, 0.75)
    mean, sd = (float(x) for x in lp.source.split("Normal(")[1].split(")")[0].split(","))
    rng = np.random.default_rng(7)
    x = rng.normal(mean, sd, 1_000_000)
    y = rng.random(x.size) < 1 / (1 + np.exp(-x))
    assert y.mean() == pytest.approx(0.1, abs=0.002)
    assert roc_auc_score(y, x) == pytest.approx(0.75, abs=0.003)
    with pytest.raises(ValueError):
        LinearPredictor.matching(0.5, 0.9999)


def test_slope_and_net_benefit_computed_from_prevalence_and_c_alone(tmp_path, protocol):
    site = _plan(tmp_path, protocol, "--prevalence", "0.4", "--cstatistic", "0.8")["sites"][0]
    slope = next(c for c in site["criteria"] if c["metric"] == "calibration_slope")
    assert slope["needed_n"] is not None and "matching prevalence 0.4 and C 0.8" in slope["basis"]
    assert site["not_computed"] == []
