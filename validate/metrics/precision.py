"""Precision-based sample size for the external validation of a binary prediction model.

Pure functions: the interval width an estimate would have with n cases, and the smallest n whose
interval is no wider than a target width, for the four criteria of Riley et al., "Minimum sample size
for external validation of a clinical prediction model with a binary outcome", Stat Med
2021;40:4230-51 (and "Evaluation of clinical prediction models (part 3): calculating the sample size
required for an external validation study", BMJ 2024;384:e074821):

1. O/E (observed / expected events): SE(ln O/E) = √((1 − φ)/(nφ)) by the delta method (φ the outcome
   proportion); interval exp(ln O/E ± z·SE), so its width on the O/E scale is O/E · 2 sinh(z·SE).
2. Calibration slope: the Wald SE of the slope β of the calibration model logit P(y) = α + β·LP with the
   model well calibrated (α = 0, β = 1): n·Var(β̂) = I_αα / (I_αα·I_ββ − I_αβ²), I the per-case Fisher
   information E[p(1 − p)·(1, LP, LP²)], p = expit(LP), over the linear predictor's distribution (a
   normal by Gauss-Hermite quadrature, or an empirical array of logits exactly).
3. C-statistic: Newcombe's SE (Newcombe, Stat Med 2006;25:543-57, as Riley et al. use it):
   SE(C)² = C(1 − C)·[1 + (n/2 − 1)(1 − C)/(2 − C) + (n/2 − 1)C/(1 + C)] / (n²φ(1 − φ)).
4. Standardised net benefit sNB = NB/φ = sens − w(1 − spec) at threshold t, w = (1 − φ)/φ · t/(1 − t):
   n·Var(sNB) = sens(1 − sens)/φ + w²·spec(1 − spec)/(1 − φ) + w²(1 − spec)²/(φ(1 − φ)).

A target width W gives the target SE: W/(2z) for the slope, C and sNB (symmetric Wald intervals), and
asinh(W/(2·O/E))/z for O/E. The needed n is the smallest integer reaching it (ceil of the closed form).
Differences from the pmvalsampsize package (GPL; read for understanding, none of it used here): it
finds the O/E and sNB SEs by stepping in 1e-4 (and rounds the sNB SE to 3 decimals), and it averages the
slope information over 10⁶ simulated linear predictors; the exact solutions here may differ from its
printed numbers by a case or a fraction of a percent (the tests say where).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

#: Gauss-Hermite nodes for the normal linear predictor (exact to far below a case for |mean|, sd < 20)
_HERMITE_NODES = 200


def z_value(level: float = 0.95) -> float:
    """The two-sided normal quantile of an interval of ``level`` (1.959964 at 0.95)."""
    return NormalDist().inv_cdf(0.5 + level / 2)


def _ceil(x: float) -> int:
    # a closed form that lands on an integer up to rounding error must not need one case more
    return int(math.ceil(x - 1e-9))


# ---- 1. O/E -----------------------------------------------------------------------------------------


def oe_se_for_width(width: float, oe: float = 1.0, level: float = 0.95) -> float:
    """The SE of ln(O/E) whose interval exp(ln O/E ± z·SE) has ``width`` on the O/E scale."""
    return math.asinh(width / (2.0 * oe)) / z_value(level)


def oe_needed_n(prevalence: float, se_ln_oe: float) -> int:
    """Riley et al. 2021 eq. (criterion 1): n = (1 − φ) / (φ·SE(ln O/E)²)."""
    return _ceil((1.0 - prevalence) / (prevalence * se_ln_oe**2))


def oe_width(n: float, prevalence: float, oe: float = 1.0, level: float = 0.95) -> float:
    """The width of the O/E interval with n cases at outcome proportion φ: O/E·2 sinh(z·√((1 − φ)/(nφ)))."""
    se = math.sqrt((1.0 - prevalence) / (n * prevalence))
    return oe * 2.0 * math.sinh(z_value(level) * se)


# ---- 2. calibration slope ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SlopeInformation:
    """The per-case Fisher information of the calibration model at α = 0, β = 1:
    I_αα = E[p(1 − p)], I_αβ = E[p(1 − p)·LP], I_ββ = E[p(1 − p)·LP²], p = expit(LP)."""

    i00: float
    i01: float
    i11: float

    @property
    def n_var_slope(self) -> float:
        """n·Var(β̂) = I_αα / (I_αα·I_ββ − I_αβ²) (the (β, β) element of I⁻¹); inf for a constant LP."""
        det = self.i00 * self.i11 - self.i01**2
        return self.i00 / det if det > 0 else math.inf


def _information(lp: np.ndarray, weights: np.ndarray) -> SlopeInformation:
    p = 1.0 / (1.0 + np.exp(-lp))
    v = weights * p * (1.0 - p)
    return SlopeInformation(float(v.sum()), float((v * lp).sum()), float((v * lp * lp).sum()))


def slope_information_empirical(logits) -> SlopeInformation:
    """The information averaged over an empirical linear-predictor distribution (the cases' logits)."""
    lp = np.asarray(logits, dtype=np.float64)
    lp = lp[np.isfinite(lp)]
    if lp.size == 0:
        raise ValueError("no finite linear predictor")
    return _information(lp, np.full(lp.size, 1.0 / lp.size))


def slope_information_normal(mean: float, sd: float) -> SlopeInformation:
    """The information for LP ~ Normal(mean, sd), by Gauss-Hermite quadrature (Riley et al. 2021 simulate
    10⁶ draws instead)."""
    if not sd > 0:
        raise ValueError(f"the linear predictor's SD must be > 0, got {sd}")
    x, w = np.polynomial.hermite_e.hermegauss(_HERMITE_NODES)
    return _information(mean + sd * x, w / w.sum())


def slope_needed_n(info: SlopeInformation, width: float, level: float = 0.95) -> int:
    """Riley et al. 2021 criterion 2: n = I_αα / (SE² (I_αα·I_ββ − I_αβ²)), SE = width / (2z)."""
    se = width / (2.0 * z_value(level))
    return _ceil(info.n_var_slope / se**2)


def slope_width(n: float, info: SlopeInformation, level: float = 0.95) -> float:
    """The anticipated width of the slope's Wald interval with n cases."""
    return 2.0 * z_value(level) * math.sqrt(info.n_var_slope / n)


# ---- 3. C-statistic ---------------------------------------------------------------------------------


def cstat_se(c: float, n: float, prevalence: float) -> float:
    """Newcombe's (2006) SE of the C-statistic with n cases at outcome proportion φ (module docstring)."""
    half = n / 2.0 - 1.0
    num = c * (1 - c) * (1 + half * (1 - c) / (2 - c) + half * c / (1 + c))
    return math.sqrt(num / (n * n * prevalence * (1 - prevalence)))


def cstat_needed_n(c: float, prevalence: float, width: float, level: float = 0.95) -> int:
    """The smallest n whose Newcombe interval 2z·SE(C) is no wider than ``width`` (Riley et al. 2021
    criterion 3). SE² = (A + B·n)/(K·n²) with A = C(1−C)(1 − a − b), B = C(1−C)(a + b)/2,
    a = (1−C)/(2−C), b = C/(1+C), K = φ(1−φ): the positive root of K·s²·n² − B·n − A = 0, s = width/(2z)."""
    if not 0 < c < 1:
        raise ValueError(f"C must be in (0, 1), got {c}")
    a, b = (1 - c) / (2 - c), c / (1 + c)
    big_a, big_b = c * (1 - c) * (1 - a - b), c * (1 - c) * (a + b) / 2
    k = prevalence * (1 - prevalence) * (width / (2.0 * z_value(level))) ** 2
    n = _ceil((big_b + math.sqrt(big_b**2 + 4 * k * big_a)) / (2 * k))
    # the root is exact up to rounding: settle the integer on the width itself
    while n > 1 and 2 * z_value(level) * cstat_se(c, n - 1, prevalence) <= width:
        n -= 1
    while 2 * z_value(level) * cstat_se(c, n, prevalence) > width:
        n += 1
    return n


# ---- 4. standardised net benefit ----------------------------------------------------------------------


def snb_n_var(prevalence: float, sensitivity: float, specificity: float, threshold: float) -> float:
    """n·Var(sNB) at threshold t (Riley et al. 2021 criterion 4; delta method, module docstring)."""
    phi = prevalence
    w = (1 - phi) / phi * threshold / (1 - threshold)
    return (
        sensitivity * (1 - sensitivity) / phi
        + w * w * specificity * (1 - specificity) / (1 - phi)
        + w * w * (1 - specificity) ** 2 / (phi * (1 - phi))
    )


def standardized_net_benefit(prevalence: float, sensitivity: float, specificity: float, threshold: float) -> float:
    """sNB = sens − (1 − spec)·(1 − φ)/φ · t/(1 − t) (Vickers & Elkin 2006, standardised by φ)."""
    return sensitivity - (1 - specificity) * (1 - prevalence) / prevalence * threshold / (1 - threshold)


def snb_needed_n(
    prevalence: float, sensitivity: float, specificity: float, threshold: float, width: float, level: float = 0.95
) -> int:
    """n = n·Var(sNB) / SE², SE = width / (2z)."""
    se = width / (2.0 * z_value(level))
    return _ceil(snb_n_var(prevalence, sensitivity, specificity, threshold) / se**2)


def snb_width(n: float, prevalence: float, sensitivity: float, specificity: float, threshold: float, level=0.95):
    """The anticipated width of the sNB interval with n cases."""
    return 2.0 * z_value(level) * math.sqrt(snb_n_var(prevalence, sensitivity, specificity, threshold) / n)


def sens_spec_at(y, p, threshold: float) -> tuple[float, float]:
    """Sensitivity and specificity calling p >= t positive (NaN where a class is absent)."""
    y = np.asarray(y).astype(bool)
    call = np.asarray(p, dtype=np.float64) >= threshold
    sens = float(call[y].mean()) if y.any() else math.nan
    spec = float((~call[~y]).mean()) if (~y).any() else math.nan
    return sens, spec


# ---- the precision of one metric BLOCK ----------------------------------------------------------------

#: How a criterion is named in a reason.
_SHORT = {
    "auroc": "C-statistic",
    "calibration_slope": "slope",
    "oe_ratio": "O/E",
    "standardized_net_benefit": "sNB",
}

#: The gate metrics each criterion answers for (the net-benefit family at its threshold).
GATE_CRITERION = {
    "auroc": "auroc",
    "calibration_slope": "calibration_slope",
    "oe_ratio": "oe_ratio",
    "calibration_intercept": "oe_ratio",
    "net_benefit": "standardized_net_benefit",
    "net_benefit_vs_treat_all": "standardized_net_benefit",
    "standardized_net_benefit": "standardized_net_benefit",
    "interventions_avoided": "standardized_net_benefit",
}


def _width(entry) -> float | None:
    if not isinstance(entry, dict) or entry.get("ci_low") is None or entry.get("ci_high") is None:
        return None
    return float(entry["ci_high"]) - float(entry["ci_low"])


def _criterion(metric: str, width, target: float, needed_n, n: int, prevalence: float, basis: str, **extra) -> dict:
    """One criterion: the achieved width against the target, and the n the target needs."""
    adequate = width is not None and width <= target + 1e-12
    return {
        "metric": metric,
        **extra,
        "width": width,
        "target": float(target),
        "adequate": bool(adequate),
        "needed_n": needed_n,
        "needed_events": _ceil(needed_n * prevalence) if needed_n is not None else None,
        "n": int(n),
        "basis": basis,
    }


def _auroc_criterion(block: dict, n: int, phi: float, target: float, level: float) -> dict:
    entry = block.get("auroc")
    c = entry.get("estimate") if isinstance(entry, dict) else None
    needed = cstat_needed_n(c, phi, target, level) if c is not None and 0 < c < 1 else None
    basis = f"observed prevalence {phi:.3g}, C {c:.3g}; Newcombe SE" if c is not None else "C undefined"
    return _criterion("auroc", _width(entry), target, needed, n, phi, basis + "; width of the DeLong interval")


def _slope_criterion(block: dict, logits, n: int, phi: float, target: float, level: float) -> dict:
    finite = np.isfinite(np.asarray(logits, dtype=np.float64))
    info = slope_information_empirical(logits) if finite.any() else SlopeInformation(0.0, 0.0, 0.0)
    needed = slope_needed_n(info, target, level) if math.isfinite(info.n_var_slope) else None
    basis = (
        f"observed prevalence {phi:.3g}; the {n} cases' logits as the linear-predictor distribution, "
        "calibration assumed (α = 0, β = 1); width of the Wald interval"
    )
    return _criterion("calibration_slope", _width(block.get("calibration_slope")), target, needed, n, phi, basis)


def _oe_criterion(block: dict, n: int, phi: float, target: float, level: float) -> dict:
    entry = block.get("oe_ratio")
    oe = entry.get("estimate") if isinstance(entry, dict) else None
    width, how = _width(entry), "width of the bootstrap interval"
    if width is None and oe and 0 < phi < 1:
        width, how = oe_width(n, phi, oe, level), "width of the delta-method interval (no bootstrap interval)"
    needed = oe_needed_n(phi, oe_se_for_width(target, oe, level)) if oe else None
    basis = f"observed prevalence {phi:.3g}, O/E {oe:.3g}; {how}" if oe else "O/E undefined"
    return _criterion("oe_ratio", width, target, needed, n, phi, basis)


def _snb_criteria(block: dict, y, p, n: int, phi: float, thresholds, target: float, level: float) -> list[dict]:
    by_t = {
        round(float(d["threshold"]), 9): d
        for d in block.get("decision") or []
        if isinstance(d, dict) and d.get("threshold") is not None
    }
    out = []
    for t in thresholds:
        sens, spec = sens_spec_at(y, p, t)
        defined = math.isfinite(sens) and math.isfinite(spec)
        width = _width((by_t.get(round(float(t), 9)) or {}).get("standardized_net_benefit"))
        how = "width of the bootstrap interval"
        if width is None and defined:
            width, how = snb_width(n, phi, sens, spec, t, level), "width of the delta-method interval"
        needed = snb_needed_n(phi, sens, spec, t, target, level) if defined else None
        basis = (
            f"observed prevalence {phi:.3g}, sensitivity {sens:.3g}, specificity {spec:.3g} at t = {t:g}; {how}"
            if defined
            else "sensitivity or specificity undefined (one class)"
        )
        out.append(_criterion("standardized_net_benefit", width, target, needed, n, phi, basis, threshold=float(t)))
    return out


def criterion_label(c: dict) -> str:
    """``slope``, ``C-statistic``, ``O/E``, ``sNB@0.2``."""
    name = _SHORT.get(c["metric"], c["metric"])
    return f"{name}@{c['threshold']:g}" if c.get("threshold") is not None else name


def criterion_reason(c: dict) -> str:
    """Why a criterion is not adequate: "slope CI width 0.49 > 0.20 target: needs ≈ 1,350 cases (has 294)"."""
    label = criterion_label(c)
    if c["width"] is None:
        return f"{label} has no interval ({c['basis']})"
    need = f"needs ≈ {c['needed_n']:,} cases" if c["needed_n"] is not None else "needed n unknown"
    return f"{label} CI width {c['width']:.2f} > {c['target']:.2f} target: {need} (has {c['n']:,})"


def block_precision(block: dict, y, p, logits, targets, *, decision_thresholds=(), level: float = 0.95) -> dict:
    """The ``precision`` field of a binary BLOCK: per criterion (auroc, calibration_slope, oe_ratio,
    standardized_net_benefit at each decision threshold) the achieved interval width against the
    protocol's target, whether it is adequate, and the n (and events) the target needs given the
    block's own prevalence, C, logits and sensitivity/specificity (Riley et al. 2021; the formulas assume
    these are the true values). ``insufficient`` repeats the protocol's gate strictness so that a gate
    judged later from the bundle alone applies it."""
    n = int(block["n"])
    phi = float(block["n_events"]) / n
    crit: list[dict] = []
    if 0 < phi < 1:
        crit.append(_auroc_criterion(block, n, phi, targets.auroc, level))
        crit.append(_slope_criterion(block, logits, n, phi, targets.calibration_slope, level))
        crit.append(_oe_criterion(block, n, phi, targets.oe_ratio, level))
        crit += _snb_criteria(block, y, p, n, phi, decision_thresholds, targets.standardized_net_benefit, level)
    failing = [criterion_reason(c) for c in crit if not c["adequate"]]
    if not crit:
        failing = ["only one class present: no criterion can be judged"]
    return {
        "adequate": not failing,
        "criteria": crit,
        "reason": "; ".join(failing) or None,
        "insufficient": bool(targets.insufficient),
    }


def gate_criterion(precision: dict | None, metric: str) -> dict | None:
    """The inadequate criterion of a block's ``precision`` that a gate on ``metric`` depends on, or None
    (``metric`` may carry ``@t``; a criterion at a decision threshold answers only for that threshold)."""
    if not isinstance(precision, dict):
        return None
    head, _, at = metric.partition("@")
    name = GATE_CRITERION.get(head.split(".", 1)[0])
    if name is None:
        return None
    for c in precision.get("criteria") or []:
        if c.get("metric") != name or c.get("adequate"):
            continue
        if c.get("threshold") is not None:
            try:
                if not at or abs(float(at) - float(c["threshold"])) >= 1e-9:
                    continue
            except ValueError:
                continue
        return c
    return None
