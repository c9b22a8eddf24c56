"""Precision adequacy (issue #15 items 3): the ``oe_ratio`` metric, the Riley et al. (2021) sample-size
criteria of :mod:`validate.metrics.precision`, each binary block's ``precision`` and the gate strictness.

References are independent of the code under test: hand-computed values, the published worked example
of the pmvalsampsize documentation (Riley et al., Stat Med 2021;40:4230-51: external validation of a
model for mechanical heart valve failure), scipy quadrature, Monte Carlo simulation and numpy loops.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from validate.gates import judge_gates
from validate.metrics import precision as P
from validate.metrics.blocks import binary_block
from validate.metrics.replicates import BinaryCases, Draw
from validate.metrics.settings import MetricSettings, PrecisionTargets
from validate.protocol import MetricsSpec

# ---- oe_ratio ----------------------------------------------------------------------------------------


def test_oe_ratio_known_answer():
    # O = 2 events, E = 0.2 + 0.3 + 0.4 + 0.1 = 1.0 → O/E = 2 (by hand)
    block = binary_block([1, 0, 1, 0], [0.2, 0.3, 0.4, 0.1], settings=MetricSettings(n_bootstrap=0))
    assert block["oe_ratio"]["estimate"] == pytest.approx(2.0, abs=1e-15)
    assert block["oe_ratio"]["method"] == "none"


def test_oe_ratio_replicates_equal_a_naive_loop():
    rng = np.random.default_rng(3)
    p = rng.uniform(0.01, 0.99, 50)
    y = (rng.uniform(size=50) < p).astype(int)
    cases = BinaryCases(y, p, 15)
    w = rng.poisson(1.0, size=(7, 50)).astype(float)
    got = P_kernel(Draw(cases, w[:, cases.order], []))
    naive = [sum(w[r, i] * y[i] for i in range(50)) / sum(w[r, i] * p[i] for i in range(50)) for r in range(7)]
    np.testing.assert_allclose(got, naive, rtol=1e-13)


def P_kernel(draw):
    from validate.metrics.kernels import oe_ratio_kernel

    return oe_ratio_kernel(draw)


def test_oe_ratio_bootstrap_interval_brackets_the_estimate():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.05, 0.9, 300)
    y = (rng.uniform(size=300) < p).astype(int)
    e = binary_block(y, p, settings=MetricSettings(n_bootstrap=200))["oe_ratio"]
    assert e["method"] == "bootstrap"
    assert e["ci_low"] < y.sum() / p.sum() < e["ci_high"]


# ---- the published worked example --------------------------------------------------------------------
# pmvalsampsize documentation (and its Python port's example notebook), after Riley et al. 2021: a model
# for mechanical heart valve failure, anticipated prevalence 0.018, C-statistic 0.8, linear predictor
# Normal(mean −5, SD 2.5), O/E interval width 1, other widths the defaults (slope 0.2, C 0.1). Published:
#   criterion 1 (O/E)          905  (SE of ln O/E 0.246)
#   criterion 2 (C-slope)     4544  (SE 0.051; from 10⁶ simulated linear predictors)
#   criterion 3 (C-statistic) 4252  (SE 0.026)
#   final 4544 with 82 events; with a Beta(0.5, 0.5) distribution of risks instead, the slope needs 1644.
PHI, C = 0.018, 0.8


def test_published_example_oe():
    # pmvalsampsize steps the SE up in 1e-4 until the width reaches 1: SE 0.2456 gives the published 905
    assert P.oe_needed_n(PHI, 0.2456) == 905
    # the exact SE for width 1 (asinh(0.5)/z = 0.24552) is a hair smaller, so the exact n is one more
    se = P.oe_se_for_width(1.0)
    assert se == pytest.approx(math.asinh(0.5) / 1.959963984540054, rel=1e-12)
    assert round(se, 3) == 0.246
    assert P.oe_needed_n(PHI, se) == 906
    assert P.oe_width(906, PHI) <= 1.0 < P.oe_width(905, PHI)


def test_published_example_cstatistic():
    assert P.cstat_needed_n(C, PHI, 0.1) == 4252
    assert round(P.cstat_se(C, 4252, PHI), 3) == 0.026


def test_published_example_slope_normal_lp():
    # published 4544 is a Monte Carlo figure (10⁶ draws); quadrature gives the limit, within 0.5%
    n = P.slope_needed_n(P.slope_information_normal(-5, 2.5), 0.2)
    assert n == pytest.approx(4544, rel=0.005)
    assert n * PHI == pytest.approx(82, abs=1)


def test_published_example_slope_beta_risks():
    # risks ~ Beta(0.5, 0.5): the information integrals by scipy quadrature (independent of the module)
    def mean(f):
        return integrate.quad(lambda q: f(q) * stats.beta.pdf(q, 0.5, 0.5), 0, 1, limit=500)[0]

    def lp(q):
        return math.log(q / (1 - q))

    info = P.SlopeInformation(
        mean(lambda q: q * (1 - q)), mean(lambda q: q * (1 - q) * lp(q)), mean(lambda q: q * (1 - q) * lp(q) ** 2)
    )
    assert P.slope_needed_n(info, 0.2) == pytest.approx(1644, rel=0.005)


def test_published_example_largest_criterion_is_the_slope():
    needs = {
        "oe": P.oe_needed_n(PHI, P.oe_se_for_width(1.0)),
        "slope": P.slope_needed_n(P.slope_information_normal(-5, 2.5), 0.2),
        "c": P.cstat_needed_n(C, PHI, 0.1),
    }
    assert max(needs, key=needs.get) == "slope"


# ---- the formulas against independent computations -------------------------------------------------------


def test_normal_quadrature_equals_a_large_empirical_sample():
    lp = np.random.default_rng(1).normal(-1.0, 1.2, 2_000_000)
    emp = P.slope_information_empirical(lp).n_var_slope
    assert P.slope_information_normal(-1.0, 1.2).n_var_slope == pytest.approx(emp, rel=0.01)


def test_slope_width_matches_the_wald_interval_of_a_large_sample():
    from validate.metrics.calibration import calibration_slope

    rng = np.random.default_rng(5)
    lp = rng.normal(-1.0, 1.0, 20000)
    y = (rng.uniform(size=lp.size) < 1 / (1 + np.exp(-lp))).astype(int)
    fit = calibration_slope(y, logits=lp)
    achieved = fit["ci_high"] - fit["ci_low"]
    assert P.slope_width(lp.size, P.slope_information_empirical(lp)) == pytest.approx(achieved, rel=0.05)


def test_cstat_needed_n_is_the_smallest_integer_by_brute_force():
    def newcombe_width(c, phi, n):
        # Newcombe (2006) as Riley et al. 2021 state it, written out here independently
        se2 = c * (1 - c) * (1 + (n / 2 - 1) * ((1 - c) / (2 - c)) + ((n / 2 - 1) * c) / (1 + c))
        return 2 * 1.959963984540054 * math.sqrt(se2 / (n * n * phi * (1 - phi)))

    for c, phi, width in [(0.7, 0.1, 0.1), (0.85, 0.3, 0.05), (0.6, 0.5, 0.08)]:
        n = P.cstat_needed_n(c, phi, width)
        assert newcombe_width(c, phi, n) <= width < newcombe_width(c, phi, n - 1)


def test_snb_standard_error_matches_simulation():
    # sNB = sens − w(1 − spec) from multinomial samples of n cases; its SD against the delta method
    rng = np.random.default_rng(7)
    n, phi, sens, spec, t = 2000, 0.2, 0.8, 0.7, 0.15
    sims = []
    for _ in range(4000):
        events = rng.binomial(n, phi)
        tp = rng.binomial(events, sens)
        fp = rng.binomial(n - events, 1 - spec)
        nb = tp / n - fp / n * t / (1 - t)
        sims.append(nb / (events / n))
    se = math.sqrt(P.snb_n_var(phi, sens, spec, t) / n)
    assert np.std(sims, ddof=1) == pytest.approx(se, rel=0.05)
    # by hand: w = (0.8/0.2)·(0.15/0.85) = 0.705882; sNB = 0.8 − 0.3·0.705882 = 0.588235
    assert P.standardized_net_benefit(phi, sens, spec, t) == pytest.approx(0.588235294, abs=1e-9)


def test_snb_needed_n_reaches_the_width():
    n = P.snb_needed_n(0.2, 0.8, 0.7, 0.15, 0.2)
    assert P.snb_width(n, 0.2, 0.8, 0.7, 0.15) <= 0.2 < P.snb_width(n - 1, 0.2, 0.8, 0.7, 0.15)


# ---- the block's precision -----------------------------------------------------------------------------


def _cases(n=300, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.05, 0.9, n)
    return (rng.uniform(size=n) < p).astype(int), p


def test_block_precision_criteria_read_the_block_intervals():
    y, p = _cases()
    b = binary_block(y, p, settings=MetricSettings(n_bootstrap=200))
    crit = {c["metric"]: c for c in b["precision"]["criteria"]}
    assert list(crit) == ["auroc", "calibration_slope", "oe_ratio"]
    for m in crit:
        assert crit[m]["width"] == pytest.approx(b[m]["ci_high"] - b[m]["ci_low"], abs=1e-15)
        assert crit[m]["adequate"] == (crit[m]["width"] <= crit[m]["target"])
        assert crit[m]["n"] == 300
    # 300 cases cannot give a slope interval 0.2 wide (its Wald width is about 0.55 here)
    assert crit["calibration_slope"]["adequate"] is False
    assert b["precision"]["adequate"] is False
    assert b["precision"]["reason"].startswith("slope CI width 0.5")
    assert "(has 300)" in b["precision"]["reason"]
    logits = np.log(p / (1 - p))
    assert crit["calibration_slope"]["needed_n"] == P.slope_needed_n(P.slope_information_empirical(logits), 0.2)
    assert crit["auroc"]["needed_n"] == P.cstat_needed_n(b["auroc"]["estimate"], y.mean(), 0.1)
    assert crit["calibration_slope"]["needed_events"] == math.ceil(crit["calibration_slope"]["needed_n"] * y.mean())


def test_block_precision_targets_come_from_the_settings():
    y, p = _cases()
    loose = PrecisionTargets(oe_ratio=5, calibration_slope=5, auroc=0.9)
    b = binary_block(y, p, settings=MetricSettings(n_bootstrap=50, precision=loose))
    assert b["precision"]["adequate"] is True and b["precision"]["reason"] is None
    assert [c["target"] for c in b["precision"]["criteria"]] == [0.9, 5, 5]


def test_insufficient_block_reason_leads_with_precision():
    y, p = _cases(40, seed=2)
    b = binary_block(y, p, settings=MetricSettings(n_bootstrap=0, min_cases=50))
    assert b["insufficient"] is True
    lead, counts = b["reason"].split("; 40 cases < min_cases 50")
    assert lead == b["precision"]["reason"]
    assert "slope CI width" in lead


def test_precision_does_not_make_a_block_insufficient():
    y, p = _cases()
    b = binary_block(y, p, settings=MetricSettings(n_bootstrap=0))
    assert b["precision"]["adequate"] is False
    assert "insufficient" not in b


def test_without_bootstrap_oe_width_is_the_delta_method():
    y, p = _cases()
    b = binary_block(y, p, settings=MetricSettings(n_bootstrap=0))
    oe = {c["metric"]: c for c in b["precision"]["criteria"]}["oe_ratio"]
    ratio, phi = y.sum() / p.sum(), y.mean()
    se = math.sqrt((1 - phi) / (300 * phi))
    assert oe["width"] == pytest.approx(ratio * (math.exp(1.959963984540054 * se) - math.exp(-1.959963984540054 * se)))


def test_precision_settings_from_the_protocol():
    spec = MetricsSpec.model_validate({"precision": {"auroc": 0.05, "insufficient": True}})
    s = MetricSettings.from_protocol(spec)
    assert s.precision == PrecisionTargets(auroc=0.05, insufficient=True)
    assert MetricSettings.from_protocol(None).precision == PrecisionTargets(0.2, 0.2, 0.1, 0.2, False)
    with pytest.raises(ValueError):
        MetricsSpec.model_validate({"precision": {"auroc": -0.1}})
    with pytest.raises(ValueError):
        MetricsSpec.model_validate({"precision": {"slope": 0.1}})


# ---- gates -------------------------------------------------------------------------------------------------


def _metrics(strict: bool) -> dict:
    auroc = {"estimate": 0.80, "ci_low": 0.70, "ci_high": 0.90, "method": "delong"}
    precision = {
        "adequate": False,
        "criteria": [
            {"metric": "auroc", "width": 0.20, "target": 0.1, "adequate": False, "needed_n": 1200,
             "needed_events": 400, "n": 300, "basis": "by hand"},
            {"metric": "oe_ratio", "width": 0.15, "target": 0.2, "adequate": True, "needed_n": 250,
             "needed_events": 80, "n": 300, "basis": "by hand"},
        ],
        "reason": "C-statistic CI width 0.20 > 0.10 target: needs ≈ 1,200 cases (has 300)",
        "insufficient": strict,
    }  # fmt: skip
    oe = {"estimate": 1.05, "ci_low": 0.98, "ci_high": 1.13, "method": "bootstrap"}
    block = {"n": 300, "n_events": 100, "auroc": auroc, "oe_ratio": oe, "precision": precision}
    return {"task": "binary", "n_bootstrap": 200, "ci_level": 0.95, "seed": 0, "overall": block, "sites": {}}


def _row(gate, strict):
    return judge_gates([gate], _metrics(strict), sites=[]).rows[-1]


def test_gate_passing_at_an_imprecise_block_is_noted_by_default():
    row = _row({"metric": "auroc", "min": 0.75}, strict=False)
    assert row.verdict == "pass"
    assert "note: imprecise: C-statistic CI width 0.20 > 0.10 target" in row.reason


def test_gate_passing_at_an_imprecise_block_takes_the_insufficient_policy_when_strict():
    row = _row({"metric": "auroc", "min": 0.75, "insufficient": "fail"}, strict=True)
    assert row.verdict == "fail" and row.insufficient
    assert "imprecise" in row.reason and "insufficient policy: fail" in row.reason
    assert _row({"metric": "auroc", "min": 0.75}, strict=True).verdict == "warn"


def test_failing_gate_is_never_made_more_lenient():
    row = _row({"metric": "auroc", "min": 0.85, "insufficient": "pass"}, strict=True)
    assert row.verdict == "fail"
    assert "imprecise" not in row.reason


def test_gate_on_an_adequate_criterion_is_untouched():
    row = _row({"metric": "oe_ratio", "min": 0.9, "insufficient": "fail"}, strict=True)
    assert row.verdict == "pass" and "imprecise" not in row.reason


def test_gate_criterion_maps_the_net_benefit_family_to_its_threshold():
    prec = {
        "criteria": [
            {"metric": "standardized_net_benefit", "threshold": 0.2, "adequate": False},
            {"metric": "oe_ratio", "adequate": False},
        ]
    }
    assert P.gate_criterion(prec, "net_benefit_vs_treat_all@0.2")["threshold"] == 0.2
    assert P.gate_criterion(prec, "net_benefit@0.1") is None
    assert P.gate_criterion(prec, "calibration_intercept")["metric"] == "oe_ratio"
    assert P.gate_criterion(prec, "ece") is None


def test_block_precision_has_a_net_benefit_criterion_per_decision_threshold():
    y, p = _cases(400, seed=4)
    settings = MetricSettings.from_protocol({"n_bootstrap": 100}, {"thresholds": [0.2, 0.4]})
    b = binary_block(y, p, settings=settings)
    snb = [c for c in b["precision"]["criteria"] if c["metric"] == "standardized_net_benefit"]
    assert [c["threshold"] for c in snb] == [0.2, 0.4]
    for c, item in zip(snb, b["decision"], strict=True):
        e = item["standardized_net_benefit"]
        assert c["width"] == pytest.approx(e["ci_high"] - e["ci_low"], abs=1e-15)
        # sensitivity and specificity at t by a plain loop, then Riley's n
        tp = sum(1 for yi, pi in zip(y, p, strict=True) if yi == 1 and pi >= c["threshold"])
        tn = sum(1 for yi, pi in zip(y, p, strict=True) if yi == 0 and pi < c["threshold"])
        sens, spec = tp / y.sum(), tn / (len(y) - y.sum())
        assert c["needed_n"] == P.snb_needed_n(y.mean(), sens, spec, c["threshold"], 0.2)


def test_gate_on_net_benefit_reads_the_criterion_at_its_threshold():
    metrics = _metrics(strict=True)
    block = metrics["overall"]
    nb = {"estimate": 0.10, "ci_low": 0.05, "ci_high": 0.15, "method": "bootstrap", "se": 0.025}
    block["decision"] = [{"threshold": 0.2, "prevalence": 0.33, "net_benefit": nb}]
    block["precision"]["criteria"].append(
        {"metric": "standardized_net_benefit", "threshold": 0.2, "width": 0.5, "target": 0.2, "adequate": False,
         "needed_n": 2000, "needed_events": 660, "n": 300, "basis": "by hand"}
    )  # fmt: skip
    row = judge_gates([{"metric": "net_benefit@0.2", "min": 0.0, "insufficient": "fail"}], metrics, sites=[]).rows[-1]
    assert row.verdict == "fail" and "sNB@0.2 CI width 0.50 > 0.20 target" in row.reason


def test_constant_predictions_leave_the_slope_criterion_without_a_needed_n():
    y = np.array([0, 1] * 20)
    b = binary_block(y, np.full(40, 0.5), settings=MetricSettings(n_bootstrap=0))
    slope = {c["metric"]: c for c in b["precision"]["criteria"]}["calibration_slope"]
    assert slope["needed_n"] is None and slope["adequate"] is False
