"""Prior-shift adjustment against Bayes' rule on simulated data with known class densities."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize, stats
from scipy.special import expit, logit

from validate.analysis.prior_shift import adjust_to_prior, em_prior, prior_shift_calibration

MU = 1.0  # class-conditional densities N(+MU, 1) (positive) and N(-MU, 1) (negative)


def _simulate(n: int, prevalence: float, seed: int):
    """Cases from the two-Gaussian world; returns x, y."""
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < prevalence).astype(float)
    x = rng.normal(np.where(y == 1, MU, -MU), 1.0)
    return x, y


def _bayes(x: np.ndarray, prior: float) -> np.ndarray:
    """True posterior P(y=1 | x) under ``prior``, straight from Bayes' rule with the densities."""
    f1, f0 = stats.norm.pdf(x, MU, 1), stats.norm.pdf(x, -MU, 1)
    return prior * f1 / (prior * f1 + (1 - prior) * f0)


@pytest.mark.parametrize("new_prior", [0.05, 0.3, 0.5, 0.9])
def test_odds_correction_equals_bayes_rule(new_prior):
    x = np.linspace(-4, 4, 201)
    p_dev = _bayes(x, 0.4)  # a perfectly calibrated model at a development prevalence of 0.4
    adjusted = adjust_to_prior(p_dev, 0.4, new_prior)
    assert np.allclose(adjusted, _bayes(x, new_prior), rtol=1e-12, atol=1e-14)


def test_odds_correction_textbook_formula():
    p = np.array([0.01, 0.2, 0.5, 0.93])
    old, new = 0.3, 0.6
    r1, r0 = new / old, (1 - new) / (1 - old)
    assert np.allclose(adjust_to_prior(p, old, new), p * r1 / (p * r1 + (1 - p) * r0), rtol=1e-13)


def test_multiclass_adjustment_equals_bayes_rule():
    means = np.array([-2.0, 0.0, 2.5])
    x = np.linspace(-5, 5, 101)
    dens = stats.norm.pdf(x[:, None], means[None, :], 1.0)
    old, new = np.array([0.2, 0.5, 0.3]), np.array([0.6, 0.1, 0.3])
    post_old = dens * old / (dens * old).sum(axis=1, keepdims=True)
    post_new = dens * new / (dens * new).sum(axis=1, keepdims=True)
    assert np.allclose(adjust_to_prior(post_old, old, new), post_new, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("true_prior", [0.1, 0.25, 0.7])
def test_em_recovers_known_prevalence(true_prior):
    x, y = _simulate(20_000, true_prior, seed=int(true_prior * 100))
    p = _bayes(x, 0.5)  # calibrated at the development prevalence 0.5
    res = em_prior(p, 0.5)
    assert res["converged"]
    se = np.sqrt(true_prior * (1 - true_prior) / x.size)
    # the MLE's SE exceeds the labelled-proportion SE; 4 labelled SEs of the observed share is generous
    assert abs(res["prior"] - y.mean()) < 4 * se + 0.005
    assert abs(res["prior"] - true_prior) < 0.02
    assert np.allclose(res["probabilities"], adjust_to_prior(p, 0.5, res["prior"]))


def test_em_fixed_point_is_the_maximum_likelihood():
    x, _ = _simulate(3000, 0.35, seed=11)
    p = _bayes(x, 0.6)
    res = em_prior(p, 0.6, tol=1e-12)

    def nll(t):
        return -np.sum(np.log(p * t / 0.6 + (1 - p) * (1 - t) / (1 - 0.6)))

    ref = optimize.minimize_scalar(nll, bounds=(1e-6, 1 - 1e-6), method="bounded", options={"xatol": 1e-10})
    assert res["prior"] == pytest.approx(ref.x, abs=1e-6)
    assert res["log_likelihood"] == pytest.approx(-ref.fun + nll(0.6), abs=1e-6)


def test_em_multiclass_recovers_priors():
    rng = np.random.default_rng(12)
    means = np.array([-2.0, 0.0, 2.0])
    true = np.array([0.6, 0.3, 0.1])
    y = rng.choice(3, 30_000, p=true)
    x = rng.normal(means[y], 1.0)
    dens = stats.norm.pdf(x[:, None], means[None, :], 1.0)
    old = np.full(3, 1 / 3)
    post = dens * old / (dens * old).sum(axis=1, keepdims=True)
    res = em_prior(post, old)
    assert res["converged"]
    assert np.allclose(res["prior"], true, atol=0.02)
    assert np.allclose(res["probabilities"].sum(axis=1), 1.0)


def test_em_no_shift_stays_put():
    x, _ = _simulate(5000, 0.5, seed=13)
    res = em_prior(_bayes(x, 0.5), 0.5)
    assert abs(res["prior"] - 0.5) < 0.03


def _glm_offset_intercept(y, offset):
    import statsmodels.api as sm

    fit = sm.GLM(y, np.ones((y.size, 1)), family=sm.families.Binomial(), offset=offset).fit(tol=1e-12)
    return float(fit.params[0])


def test_prior_shift_calibration_explains_pure_prior_shift():
    pytest.importorskip("validate.metrics.calibration")
    x, y = _simulate(8000, 0.15, seed=14)
    p = _bayes(x, 0.5)  # calibrated at the development prevalence 0.5, used at a site with 0.15
    res = prior_shift_calibration(y, p, old_prior=0.5)
    # independent references: statsmodels GLM with offset, on the raw and on the Bayes-adjusted logits
    prev = y.mean()
    assert res["plain"]["estimate"] == pytest.approx(_glm_offset_intercept(y, logit(p)), abs=1e-8)
    adjusted = _bayes(x, prev)
    assert res["known"]["estimate"] == pytest.approx(_glm_offset_intercept(y, logit(adjusted)), abs=1e-8)
    assert res["plain"]["estimate"] < -1.0  # a large calibration-in-the-large error ...
    assert abs(res["known"]["estimate"]) < 0.1  # ... nearly all explained by the prevalence
    assert res["explained"] > 0.9
    assert res["prior_log_odds_shift"] == pytest.approx(logit(prev) - logit(0.5))
    assert abs(res["em"]["prior"] - 0.15) < 0.02
    assert abs(res["em"]["intercept"]["estimate"]) < 0.15
    assert res["plain"]["method"] == "wald"


def test_prior_shift_calibration_single_class_is_reasoned():
    pytest.importorskip("validate.metrics.calibration")
    res = prior_shift_calibration(np.zeros(20), np.full(20, 0.3), old_prior=0.4)
    assert res["plain"] is None and res["explained"] is None and "reason" in res


def test_logits_and_probabilities_agree():
    pytest.importorskip("validate.metrics.calibration")
    x, y = _simulate(500, 0.3, seed=15)
    z = 2 * MU * x  # the log-likelihood ratio: logits of a model calibrated at prevalence 0.5
    a = prior_shift_calibration(y, expit(z), old_prior=0.5)
    b = prior_shift_calibration(y, logits=z, old_prior=0.5)
    assert a["known"]["estimate"] == pytest.approx(b["known"]["estimate"], abs=1e-9)
    assert a["em"]["prior"] == pytest.approx(b["em"]["prior"], abs=1e-9)


def test_bad_priors_rejected():
    with pytest.raises(ValueError):
        adjust_to_prior(np.array([0.5]), 0.0, 0.5)
    with pytest.raises(ValueError):
        adjust_to_prior(np.full((2, 2), 0.5), [0.5, 0.6], [0.5, 0.5])
