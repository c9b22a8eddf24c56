"""Prior (label) shift: adjusting probabilities to a site's prevalence, known or estimated.

Under prior shift the class-conditional distributions p(x | y) are the same at the new site and only
the class priors π differ. Bayes' rule then gives the new posterior from the old one without refitting
anything (Saerens, Latinne & Decaestecker 2002, Neural Computation 14:21, eq. 2.4; Elkan 2001, IJCAI):

    p'(k | x) = (π'_k / π_k) p(k | x) / Σ_j (π'_j / π_j) p(j | x)

which for two classes is the odds correction p' = p·r₁ / (p·r₁ + (1 − p)·r₀), r₁ = π'/π,
r₀ = (1 − π')/(1 − π), i.e. logit p' = logit p + logit π' − logit π. When the new prevalence is not
known, the EM algorithm of Saerens et al. 2002 (§2.3) estimates it from the unlabelled scores alone.

Both assume the model is calibrated where π was measured; a miscalibrated model biases the EM
estimate (Alexandari, Kundaje & Shrikumar 2020, ICML), so the report shows the development site's own
calibration-in-the-large beside the adjusted one.

:func:`prior_shift_calibration` answers the reviewer's question "how much of this site's
calibration-in-the-large error is the prevalence change?": the calibration intercept before and after
adjusting the probabilities from the development prevalence to the site's (known from its labels, and
estimated by EM without them).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import expit, logsumexp

from validate.numerics import log_probability, logit

# Priors are kept inside (PRIOR_FLOOR, 1 − PRIOR_FLOOR) so that their logits stay finite; EM can walk
# towards a boundary when the scores carry no evidence of one class.
PRIOR_FLOOR = 1e-12
#: An EM estimate closer than this to 0 or 1 has run to the boundary: the likelihood keeps rising
#: towards a site with a single class, which real sites are not. Under true prior shift with calibrated
#: probabilities this does not happen; it is the signature of scores that are miscalibrated, or shifted
#: in another way than by the prior.
BOUNDARY = 1e-4


def _check_prior(prior: Any, k: int | None, name: str) -> np.ndarray:
    pr = np.atleast_1d(np.asarray(prior, dtype=float))
    if k is not None and pr.size != k:
        raise ValueError(f"{name} must have {k} entries, got {pr.size}")
    if not np.all(np.isfinite(pr)) or np.any(pr <= 0) or np.any(pr >= 1 if pr.size == 1 else pr > 1):
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {prior!r}")
    if pr.size > 1 and abs(pr.sum() - 1.0) > 1e-6:
        raise ValueError(f"{name} must sum to 1, got {pr.sum()}")
    return pr


def adjust_to_prior(p: np.ndarray, old_prior: Any, new_prior: Any) -> np.ndarray:
    """Posterior probabilities re-weighted from ``old_prior`` to ``new_prior`` (Bayes' rule).

    Binary: ``p`` is the positive-class probability (1-D) and the priors are prevalences (floats);
    computed as logit p' = logit p + logit π' − logit π (the odds correction, in a form that cannot
    overflow; ``p`` clipped to [1e-15, 1 − 1e-15] first). Multiclass: ``p`` is (n, K) with rows summing
    to 1 and the priors are K-vectors; p'_k ∝ p_k π'_k / π_k (Saerens et al. 2002, eq. 2.4).
    """
    p = np.asarray(p, dtype=float)
    if p.ndim == 1:
        old = float(_check_prior(old_prior, 1, "old_prior")[0])
        new = float(_check_prior(new_prior, 1, "new_prior")[0])
        return expit(logit(p) + (logit(new) - logit(old)))
    if p.ndim != 2:
        raise ValueError(f"p must be 1-D (binary) or 2-D (multiclass), got shape {p.shape}")
    old = _check_prior(old_prior, p.shape[1], "old_prior")
    new = _check_prior(new_prior, p.shape[1], "new_prior")
    logw = log_probability(p) + (np.log(new) - np.log(old))
    return np.exp(logw - logsumexp(logw, axis=1, keepdims=True))


def em_prior(
    p: np.ndarray, old_prior: Any, *, logits: np.ndarray | None = None, tol: float = 1e-8, max_iter: int = 10_000
) -> dict:
    """Estimate a site's class priors from its unlabelled probabilities (Saerens et al. 2002, §2.3).

    EM iteration, from π⁽⁰⁾ = ``old_prior``:
      E step: p⁽ˢ⁾(k | xᵢ) = adjust_to_prior(p(k | xᵢ), π, π⁽ˢ⁾)
      M step: π⁽ˢ⁺¹⁾_k = (1/N) Σᵢ p⁽ˢ⁾(k | xᵢ)
    until max_k |π⁽ˢ⁺¹⁾ − π⁽ˢ⁾| < ``tol``. Each step does not decrease the likelihood
    Σᵢ log Σ_k (π'_k / π_k) p(k | xᵢ) of the new priors, whose maximiser is the fixed point.
    Binary ``p`` may be replaced by its ``logits`` (pass ``p=None``), which avoids the 1e-15 clipping.

    Returns ``{"prior": π̂ (float for binary, list for multiclass), "probabilities": adjusted p
    (array, same shape as ``p``), "iterations": s, "converged": bool, "log_likelihood": the
    log-likelihood ratio of π̂ against π (0 means no evidence of a shift), "at_boundary": whether a
    prior ran to within :data:`BOUNDARY` of 0 (or 1): then π̂ is not a usable prevalence estimate}``.
    """
    if logits is not None or np.asarray(p).ndim == 1:
        z = np.asarray(logits, dtype=float) if logits is not None else logit(p)
        old = float(_check_prior(old_prior, 1, "old_prior")[0])

        def lg(q: float) -> float:
            return math.log(q) - math.log1p(-q)

        prior = old
        converged = False
        it = 0
        for it in range(1, max_iter + 1):  # noqa: B007 (read after the loop: the iteration count)
            new = min(max(float(expit(z + (lg(prior) - lg(old))).mean()), PRIOR_FLOOR), 1 - PRIOR_FLOOR)
            done = abs(new - prior) < tol
            prior = new
            if done:
                converged = True
                break
        adjusted = expit(z + (lg(prior) - lg(old)))
        # log[(π'/π) q + ((1-π')/(1-π)) (1-q)] with q = expit(z), written with log-sigmoids
        ls_pos, ls_neg = -np.logaddexp(0.0, -z), -np.logaddexp(0.0, z)
        loglik = float(np.sum(np.logaddexp(ls_pos + math.log(prior / old), ls_neg + math.log((1 - prior) / (1 - old)))))
        return {
            "prior": prior,
            "probabilities": adjusted,
            "iterations": it,
            "converged": converged,
            "log_likelihood": loglik,
            "at_boundary": bool(min(prior, 1 - prior) < BOUNDARY),
        }
    p = np.asarray(p, dtype=float)
    if p.ndim != 2:
        raise ValueError(f"p must be 1-D (binary) or 2-D (multiclass), got shape {p.shape}")
    old = _check_prior(old_prior, p.shape[1], "old_prior")
    logp = log_probability(p)
    prior = old.copy()
    converged = False
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 (read after the loop: the iteration count)
        logw = logp + (np.log(prior) - np.log(old))
        post = np.exp(logw - logsumexp(logw, axis=1, keepdims=True))
        new = np.clip(post.mean(axis=0), PRIOR_FLOOR, None)
        new /= new.sum()
        done = np.max(np.abs(new - prior)) < tol
        prior = new
        if done:
            converged = True
            break
    logw = logp + (np.log(prior) - np.log(old))
    adjusted = np.exp(logw - logsumexp(logw, axis=1, keepdims=True))
    loglik = float(np.sum(logsumexp(logw, axis=1) - logsumexp(logp, axis=1)))
    return {
        "prior": prior.tolist(),
        "probabilities": adjusted,
        "iterations": it,
        "converged": converged,
        "log_likelihood": loglik,
        "at_boundary": bool(prior.min() < BOUNDARY),
    }


def _intercept_entry(y: np.ndarray, z: np.ndarray, level: float) -> dict:
    """The metrics engine's calibration intercept (on logits, so nothing is clipped), JSON-ready."""
    from validate.metrics import calibration_intercept

    try:
        res = calibration_intercept(y, logits=z, level=level)
    except (ArithmeticError, ValueError) as exc:  # a fit that cannot converge must not sink the report
        return {
            "method": "wald",
            "estimate": None,
            "se": None,
            "ci_low": None,
            "ci_high": None,
            "converged": False,
            "reason": f"the fit failed: {exc}",
        }
    out = {"method": "wald"}
    for k, v in res.items():
        if isinstance(v, (bool, np.bool_)):
            v = bool(v)
        elif isinstance(v, (float, np.floating)):
            v = float(v) if math.isfinite(float(v)) else None
        elif isinstance(v, np.integer):
            v = int(v)
        out[k] = v
    return out


def prior_shift_calibration(
    y: np.ndarray,
    p: np.ndarray | None = None,
    *,
    old_prior: float,
    logits: np.ndarray | None = None,
    ci_level: float = 0.95,
    tol: float = 1e-8,
    max_iter: int = 10_000,
) -> dict:
    """How much of a binary site's calibration-in-the-large error a prevalence change explains.

    ``y`` (0/1) and ``p`` (positive-class probabilities; or their ``logits``) are the site's cases;
    ``old_prior`` is the prevalence the model's probabilities refer to (the development site's observed
    prevalence). Calibration-in-the-large is the metrics engine's ``calibration_intercept`` (logistic fit
    of y with offset logit p, slope fixed at 1; Wald interval), computed for:

    - ``plain``: the probabilities as they are;
    - ``known``: after :func:`adjust_to_prior` to the site's observed prevalence ȳ (the labels are known);
    - ``em``: after :func:`adjust_to_prior` to the prevalence :func:`em_prior` estimates without labels
      (``em.prior``, ``em.intercept``).

    ``explained`` = 1 − |α_known| / |α_plain|: the share of the intercept's magnitude removed by the
    prevalence adjustment (1: all of it, 0: none, negative: the adjustment made it worse); None when the
    plain intercept is 0 or undefined. ``prior_log_odds_shift`` = logit ȳ − logit π: the intercept a
    model calibrated at the development site would show under pure prior shift. Undefined parts are
    None beside a ``reason``.
    """
    y = np.asarray(y, dtype=float)
    z = np.asarray(logits, dtype=float) if logits is not None else logit(p)
    n = y.size
    events = int(y.sum())
    out: dict = {
        "old_prior": float(old_prior),
        "n": int(n),
        "n_events": events,
        "site_prevalence": events / n if n else None,
    }
    em = em_prior(None, old_prior, logits=z, tol=tol, max_iter=max_iter)
    out["em"] = {
        "prior": em["prior"],
        "iterations": em["iterations"],
        "converged": em["converged"],
        "log_likelihood_ratio": em["log_likelihood"],
        "at_boundary": em["at_boundary"],
    }
    if em["at_boundary"]:
        out["em"]["note"] = (
            "the EM estimate ran to the boundary: the scores are not consistent with a pure "
            "prior shift from a model calibrated at the development prevalence"
        )
    if n == 0 or events == 0 or events == n:
        out.update(
            {
                "plain": None,
                "known": None,
                "explained": None,
                "prior_log_odds_shift": None,
                "reason": "the site has a single class: calibration-in-the-large is undefined",
            }
        )
        out["em"]["intercept"] = None
        return out
    prev = events / n
    shift = float(logit(prev) - logit(old_prior))
    out["prior_log_odds_shift"] = shift
    plain = _intercept_entry(y, z, ci_level)
    known = _intercept_entry(y, z + shift, ci_level)
    out["plain"] = plain
    out["known"] = known
    if em["at_boundary"]:
        out["em"]["intercept"] = None
        out["em"]["intercept_reason"] = "the EM estimate is at the boundary: no adjusted intercept"
    else:
        out["em"]["intercept"] = _intercept_entry(y, z + float(logit(em["prior"]) - logit(old_prior)), ci_level)
    a, b = plain.get("estimate"), known.get("estimate")
    if a is None or b is None or a == 0:
        out["explained"] = None
        out["explained_reason"] = "the plain calibration intercept is 0 or undefined"
    else:
        out["explained"] = 1.0 - abs(b) / abs(a)
    return out
