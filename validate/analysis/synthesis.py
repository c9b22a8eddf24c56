"""Random-effects synthesis of per-site performance: what the next hospital should expect.

A multi-site validation reports, beside each site, the between-site average of each performance
measure, its heterogeneity and a prediction interval for a new site (Debray et al. BMJ 2017;356:i6460;
Riley et al. BMJ 2016;353:i3140; R ``metamisc::valmeta``). This module computes it from the per-site
BLOCKs of ``metrics.json`` alone (never from patient rows), so a coordinator holding only site bundles
gets the same numbers as a central run.

Model (one measure, k sites, site estimate θ_i with standard error s_i on the pooling scale):
θ_i ~ N(μ, s_i² + τ²). Estimators and intervals:

- τ²: REML (restricted maximum likelihood, Fisher scoring as R ``metafor::rma(method="REML")``,
  Viechtbauer 2005) or DerSimonian–Laird (DerSimonian & Laird 1986), truncated at 0.
- μ̂ = Σ w_i θ_i / Σ w_i with w_i = 1/(s_i² + τ̂²); SE(μ̂) = (Σ w_i)^(-1/2).
- Interval for μ: ``hksj`` (Hartung–Knapp–Sidik–Jonkman, as metafor's ``test="knha"``): SE_HK =
  sqrt(Σ w_i (θ_i − μ̂)² / ((k − 1) Σ w_i)) and μ̂ ± t_{k−1} SE_HK (no truncation of the scale factor,
  as metafor's default); ``z``: μ̂ ± z SE(μ̂).
- Prediction interval for the measure at a new site (Higgins, Thompson & Spiegelhalter, JRSS A
  2009;172:137–59): μ̂ ± t_{k−2} sqrt(τ̂² + SE²), SE the standard error of the chosen interval (the
  HKSJ one with ``hksj``). metafor 3.8's ``predict`` uses t_{k−1} with ``test="knha"``; the t_{k−2}
  of Higgins et al. (and Riley et al. 2011) is wider and is the one used here. k < 3 gives none.
- Cochran's Q = Σ v_i⁻¹ (θ_i − θ̂_FE)² with its χ²_{k−1} p-value; I² = τ̂² / (τ̂² + s̃²) with the
  "typical" within-site variance s̃² = (k − 1) Σ v_i⁻¹ / ((Σ v_i⁻¹)² − Σ v_i⁻²) (Higgins & Thompson
  2002, as metafor's I² for a random-effects model), given as a share 0..1 (metafor prints 100 I²).

Scales (the registry's :attr:`~validate.metrics.registry.Metric.synthesis`): AUROC is pooled on the
logit scale with se = se_DeLong / (C (1 − C)) (delta method; Debray et al. 2017, as valmeta); the O/E
ratio on the log scale with se(ln O/E) = sqrt((1 − O/n) / O) (Debray et al. 2017, O = observed
events); calibration slope, calibration-in-the-large and the net-benefit family on their own scale
with the block's Wald or bootstrap standard error. Estimates and intervals are transformed back to
the metric's scale; τ², I², Q and the pooled ``se`` stay on the pooling scale.

Sites below the insufficient rule are included and flagged in ``inputs``; a site whose metric is
undefined (or has no standard error) is listed under ``excluded`` with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from validate.numerics import logit, sigmoid

METHODS = ("REML", "DL")
INTERVALS = ("hksj", "z")
SITE_RULES = ("external", "all")
#: Fisher scoring of the REML τ²: stop when a step changes τ² by less than this (metafor: 1e-10).
REML_TOLERANCE = 1e-12
REML_MAX_ITER = 1000


# ---- the estimator --------------------------------------------------------------------------------


def dersimonian_laird(theta: np.ndarray, v: np.ndarray) -> float:
    """DerSimonian & Laird's moment estimator of τ²: max(0, (Q − (k − 1)) / (Σw − Σw²/Σw)), w = 1/v."""
    w = 1.0 / v
    mu = np.sum(w * theta) / np.sum(w)
    q = float(np.sum(w * (theta - mu) ** 2))
    c = np.sum(w) - np.sum(w**2) / np.sum(w)
    return max(0.0, (q - (len(theta) - 1)) / c) if c > 0 else 0.0


def reml_tau2(theta: np.ndarray, v: np.ndarray) -> float:
    """The REML estimate of τ² by Fisher scoring (metafor's algorithm), started at the DL estimate and
    truncated at 0: τ² ← τ² + (r'PPr − tr P) / tr PP with W = diag(1/(v + τ²)),
    P = W − W11'W / 1'W1 (so Pθ = W(θ − μ̂)); a step that would leave τ² < 0 stops at 0 (the
    restricted likelihood is then maximised on the boundary). Step halving keeps the likelihood rising."""
    tau2 = dersimonian_laird(theta, v)
    for _ in range(REML_MAX_ITER):
        w = 1.0 / (v + tau2)
        sw, sw2, sw3 = np.sum(w), np.sum(w**2), np.sum(w**3)
        mu = np.sum(w * theta) / sw
        pr = w * (theta - mu)
        tr_p = sw - sw2 / sw
        tr_pp = sw2 - 2.0 * sw3 / sw + (sw2 / sw) ** 2
        step = (np.sum(pr**2) - tr_p) / tr_pp
        new = max(0.0, tau2 + step)
        while _restricted_loglik(theta, v, new) < _restricted_loglik(theta, v, tau2) - 1e-14 and abs(new - tau2) > 0:
            new = (new + tau2) / 2.0
        if abs(new - tau2) < REML_TOLERANCE:
            return float(new)
        tau2 = new
    return float(tau2)


def _restricted_loglik(theta: np.ndarray, v: np.ndarray, tau2: float) -> float:
    """The restricted log-likelihood of τ² (constants dropped): −½ [Σ log(v + τ²) + log Σw + Σ w (θ − μ̂)²]."""
    w = 1.0 / (v + tau2)
    mu = np.sum(w * theta) / np.sum(w)
    return float(-0.5 * (np.sum(np.log(v + tau2)) + math.log(np.sum(w)) + np.sum(w * (theta - mu) ** 2)))


def _heterogeneity(theta: np.ndarray, v: np.ndarray, tau2: float) -> dict:
    """Cochran's Q (fixed-effect weights), its χ²_{k−1} p-value, and I² as a share (see module docstring)."""
    k = len(theta)
    w = 1.0 / v
    mu_fe = np.sum(w * theta) / np.sum(w)
    q = float(np.sum(w * (theta - mu_fe) ** 2))
    denom = np.sum(w) ** 2 - np.sum(w**2)
    typical = (k - 1) * np.sum(w) / denom if denom > 0 else 0.0
    i2 = tau2 / (tau2 + typical) if tau2 + typical > 0 else 0.0
    return {"q": q, "q_p_value": float(stats.chi2.sf(q, k - 1)), "i2": float(i2)}


def random_effects(theta, se, *, method: str = "REML", test: str = "hksj", level: float = 0.95) -> dict:
    """The random-effects synthesis of estimates ``theta`` with standard errors ``se`` (pooling scale).

    Returns ``{"k", "estimate", "se", "ci_low", "ci_high", "pi_low", "pi_high", "tau2", "i2", "q",
    "q_p_value", "pi_reason"}`` on the pooling scale (definitions: module docstring). k = 1 gives the
    site's own estimate with τ² = 0 and no interval under ``hksj`` (t with 0 degrees of freedom);
    k < 3 gives no prediction interval, and ``pi_reason`` says why."""
    if method not in METHODS:
        raise ValueError(f"method {method!r}: one of {METHODS}")
    if test not in INTERVALS:
        raise ValueError(f"test {test!r}: one of {INTERVALS}")
    theta = np.asarray(theta, dtype=np.float64)
    v = np.asarray(se, dtype=np.float64) ** 2
    k = len(theta)
    if k == 0:
        raise ValueError("random_effects needs at least one estimate")
    if not (np.all(np.isfinite(theta)) and np.all(np.isfinite(v)) and np.all(v > 0)):
        raise ValueError("random_effects needs finite estimates and positive finite standard errors")
    tau2 = 0.0 if k == 1 else (reml_tau2(theta, v) if method == "REML" else dersimonian_laird(theta, v))
    w = 1.0 / (v + tau2)
    mu = float(np.sum(w * theta) / np.sum(w))
    se_mu = float(1.0 / math.sqrt(np.sum(w)))
    alpha = 1.0 - level
    if test == "hksj":
        df = k - 1
        se_ci = math.sqrt(np.sum(w * (theta - mu) ** 2) / (df * np.sum(w))) if df > 0 else math.nan
        crit = float(stats.t.ppf(1 - alpha / 2, df)) if df > 0 else math.nan
    else:
        se_ci, crit = se_mu, float(stats.norm.ppf(1 - alpha / 2))
    out: dict[str, Any] = {
        "k": k,
        "estimate": mu,
        "se": se_ci,
        "ci_low": mu - crit * se_ci,
        "ci_high": mu + crit * se_ci,
    }
    out["tau2"] = tau2
    out.update(_heterogeneity(theta, v, tau2) if k > 1 else {"q": 0.0, "q_p_value": None, "i2": None})
    out.update(_prediction_interval(mu, se_ci, tau2, k, level))
    return {key: _finite(val) for key, val in out.items()}


def _prediction_interval(mu: float, se: float, tau2: float, k: int, level: float) -> dict:
    """Higgins et al. 2009: μ̂ ± t_{k−2} sqrt(τ̂² + SE²); none for k < 3."""
    if k < 3:
        return {"pi_low": None, "pi_high": None, "pi_reason": f"k = {k} < 3 sites: no prediction interval"}
    half = float(stats.t.ppf(1 - (1 - level) / 2, k - 2)) * math.sqrt(tau2 + se**2)
    return {"pi_low": mu - half, "pi_high": mu + half, "pi_reason": None}


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


# ---- scales ----------------------------------------------------------------------------------------


_BACK = {"logit": lambda x: float(sigmoid(x)), "log": math.exp, "identity": lambda x: x}


def _back(scale: str, x: float | None) -> float | None:
    if x is None:
        return None
    try:
        return _BACK[scale](x)
    except OverflowError:
        return math.inf if x > 0 else 0.0


# ---- per-site inputs from BLOCKs -------------------------------------------------------------------


def site_input(metric: str, scale: str, block: Mapping) -> tuple[float, float] | str:
    """``(θ, se)`` of ``metric`` at one site on the pooling scale, from the site's BLOCK only; or why
    the site cannot enter (a string).

    auroc (logit): θ = logit(C), se = se_DeLong / (C (1 − C)). oe_ratio (log): θ = ln(O/E), se =
    sqrt((1 − O/n) / O), O = the block's events (Debray et al. 2017). Identity scale: the entry's
    estimate and ``se`` (Wald for the calibration fits, bootstrap SD for the net-benefit family). Any
    other log or logit metric: the delta method on the entry's ``se``."""
    entry = _entry(block, metric)
    est = _number((entry or {}).get("estimate"))
    if entry is None or est is None:
        reason = (block.get("undefined") or {}).get(metric)
        return f"{metric} undefined" + (f": {reason}" if reason else "")
    if metric == "oe_ratio":
        return _oe_input(est, block)
    se = _number(entry.get("se"))
    if se is None or se <= 0:
        return f"{metric} has no standard error"
    if scale == "logit":
        if not 0 < est < 1:
            return f"{metric} = {est:g}: its logit is infinite"
        return float(logit(est)), se / (est * (1 - est))
    if scale == "log":
        if est <= 0:
            return f"{metric} = {est:g}: its log is undefined"
        return math.log(est), se / est
    return est, se


def _oe_input(oe: float, block: Mapping) -> tuple[float, float] | str:
    n, o = _number(block.get("n")), _number(block.get("n_events"))
    if oe <= 0 or not o or not n or o >= n:
        return "O/E needs events and non-events (se(ln O/E) = sqrt((1 − O/n)/O))"
    return math.log(oe), math.sqrt((1 - o / n) / o)


def _entry(block: Mapping, metric: str) -> Mapping | None:
    """The entry of ``metric`` in a BLOCK; ``name@t`` is the BLOCK's ``decision`` item at threshold t."""
    name, at, t = metric.partition("@")
    if not at:
        entry = block.get(metric)
        return entry if isinstance(entry, Mapping) else None
    for item in block.get("decision") or []:
        if abs(float(item.get("threshold")) - float(t)) < 1e-9:
            entry = item.get(name)
            return entry if isinstance(entry, Mapping) else None
    return None


def _number(x: Any) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


# ---- the synthesis of a metrics.json ---------------------------------------------------------------


def poolable_metrics(decision_thresholds: Sequence[float] = ()) -> dict[str, str]:
    """``{metric name: pooling scale}`` of every binary metric the registry marks as poolable; a metric
    computed at decision thresholds appears once per threshold as ``name@t``."""
    from validate.metrics.registry import metrics_for

    out: dict[str, str] = {}
    for m in metrics_for("binary"):
        if m.synthesis is None:
            continue
        if getattr(m, "at_decision", False):
            out.update({f"{m.name}@{format_threshold(t)}": m.synthesis for t in decision_thresholds})
        else:
            out[m.name] = m.synthesis
    return out


def canonical_metric(name: str) -> str:
    """A metric name as the synthesis keys it: ``net_benefit@0.20`` → ``net_benefit@0.2`` (a threshold
    written as its shortest float repr); other names unchanged, and so is a threshold that is no number."""
    head, at, t = name.partition("@")
    if not at:
        return name
    try:
        return f"{head}@{format_threshold(float(t))}"
    except ValueError:
        return name


def format_threshold(t: float) -> str:
    """A decision threshold as written in a metric name (``net_benefit@0.2``): the shortest repr."""
    return repr(float(t))


def synthesize(
    metrics: Mapping,
    *,
    sites: Sequence[str],
    roles: Mapping[str, str],
    method: str = "REML",
    interval: str = "hksj",
    level: float = 0.95,
    role_rule: str = "",
    decision_thresholds: Sequence[float] = (),
) -> dict:
    """The ``synthesis`` part of ``metrics.json``: each poolable metric pooled over ``sites`` (in that
    order; a site without a BLOCK is excluded with the reason), from the site BLOCKs alone.

    ``roles``: each site's role (kept with each input, for ordering and display). ``role_rule``: how the
    sites were chosen, in words. ``decision_thresholds``: the thresholds of the net-benefit family."""
    blocks = metrics.get("sites") or {}
    out: dict[str, Any] = {
        "method": method,
        "interval": interval,
        "ci_level": level,
        "sites": list(sites),
        "role_rule": role_rule,
        "metrics": {},
    }
    for metric, scale in poolable_metrics(decision_thresholds).items():
        out["metrics"][metric] = _pool_metric(metric, scale, sites, blocks, roles, method, interval, level)
    return out


def _pool_metric(metric, scale, sites, blocks, roles, method, interval, level) -> dict:
    """One metric's synthesis: inputs, excluded sites, and the pooled numbers on the metric's scale."""
    inputs, excluded = [], []
    for site in sites:
        block = blocks.get(site)
        got = "no block in metrics.json" if block is None else site_input(metric, scale, block)
        if isinstance(got, str):
            excluded.append({"site": site, "reason": got})
            continue
        inputs.append(
            {
                "site": site,
                "role": roles.get(site),
                "theta": got[0],
                "se": got[1],
                "n": block.get("n"),
                "n_events": block.get("n_events"),
                "insufficient": bool(block.get("insufficient")),
            }
        )
    res: dict[str, Any] = {"scale": scale, "k": len(inputs)}
    if inputs:
        fit = random_effects(
            [i["theta"] for i in inputs], [i["se"] for i in inputs], method=method, test=interval, level=level
        )
        for key in ("estimate", "ci_low", "ci_high", "pi_low", "pi_high"):
            res[key] = _back(scale, fit[key])
        res.update({key: fit[key] for key in ("se", "tau2", "i2", "q", "q_p_value", "pi_reason")})
    else:
        res.update(
            dict.fromkeys(("estimate", "ci_low", "ci_high", "pi_low", "pi_high", "se", "tau2", "i2", "q", "q_p_value"))
        )
        res["pi_reason"] = "no site to pool"
    res["reason"] = _reason(len(inputs), interval)
    res["inputs"] = inputs
    res["excluded"] = excluded
    return res


def _reason(k: int, interval: str) -> str | None:
    """Why a pooled number is missing (None when all are there)."""
    if k == 0:
        return "no site to pool"
    if k == 1 and interval == "hksj":
        return "k = 1 site: no between-site interval (HKSJ has k − 1 = 0 degrees of freedom)"
    if k < 3:
        return f"k = {k} < 3 sites: no prediction interval"
    return None


# ---- from a protocol -------------------------------------------------------------------------------


def chosen_sites(rule: str | Sequence[str], roles: Mapping[str, str]) -> tuple[list[str], str]:
    """The sites a protocol's ``synthesis.sites`` chooses (in the protocol's site order) and the rule in
    words: ``"external"`` (default) the sites with role external, ``"all"`` every site, a list those."""
    if rule == "external":
        return [s for s, r in roles.items() if r == "external"], "external sites (protocol: synthesis.sites)"
    if rule == "all":
        return list(roles), "all sites (protocol: synthesis.sites: all)"
    listed = list(rule)
    return [s for s in roles if s in listed], "sites listed in the protocol (synthesis.sites)"


def needs_synthesis(protocol: Any) -> bool:
    """Whether a run writes ``synthesis``: a binary task with a ``synthesis`` section or an
    ``across_sites`` gate."""
    if getattr(protocol, "task", None) != "binary":
        return False
    gates = getattr(protocol, "gates", None) or []
    return getattr(protocol, "synthesis", None) is not None or any(g.scope == "across_sites" for g in gates)


def synthesis_for_protocol(metrics: Mapping, protocol: Any) -> dict | None:
    """The synthesis of ``metrics`` (a Metrics JSON) as the protocol asks for it; None when it asks
    for none (:func:`needs_synthesis`). Used by ``validate run`` and by ``validate combine``."""
    if not needs_synthesis(protocol):
        return None
    spec = protocol.synthesis
    rule = spec.sites if spec is not None else "external"
    method = spec.method if spec is not None else "REML"
    interval = spec.interval if spec is not None else "hksj"
    roles = {s.id: s.role for s in protocol.sites}
    sites, words = chosen_sites(rule, roles)
    decision = getattr(protocol, "decision", None)
    return synthesize(
        metrics,
        sites=sites,
        roles=roles,
        method=method,
        interval=interval,
        level=float(metrics.get("ci_level") or 0.95),
        role_rule=words,
        decision_thresholds=tuple(getattr(decision, "thresholds", None) or ()),
    )
