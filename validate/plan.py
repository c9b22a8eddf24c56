"""``validate plan``: the sample size each site of a protocol needs, before any data is scored.

For each site, the n that each precision criterion of :mod:`validate.metrics.precision` needs for the
protocol's target widths (``metrics.precision``), the largest of them (the recommendation, as Riley et
al. Stat Med 2021;40:4230-51 and BMJ 2024;384:e074821 recommend), and whether the site's manifest has
that many rows. What the formulas need is anticipated, from the command line or from the development
site's predictions:

- the outcome prevalence φ (``--prevalence P`` for every site, ``--prevalence SITE=P`` for one; else
  the development predictions' observed prevalence);
- the C-statistic (``--cstatistic``; else the development predictions' AUROC);
- the linear predictor's distribution for the calibration slope and the net benefit (``--lp-normal
  M,SD``; else the development predictions' logits as an empirical distribution; else, given the
  prevalence and C only, the normal distribution of a calibrated model that has them,
  :meth:`LinearPredictor.matching`, as pmvalsampsize's ``lpcstat``).

A criterion whose inputs are missing is reported as not computed, with what it needs; it does not
count towards the recommendation (which says so). Sensitivity and specificity at a decision threshold t
are those the linear-predictor distribution implies for a calibrated model (sens = E[p·1(p ≥ t)]/E[p],
spec = E[(1 − p)·1(p < t)]/E[1 − p]), or, from predictions, the observed ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from validate.metrics import precision as P


def _expit(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class LinearPredictor:
    """A distribution of the linear predictor: points with weights summing to 1, and how it was made."""

    points: np.ndarray
    weights: np.ndarray
    source: str

    @classmethod
    def normal(cls, mean: float, sd: float) -> LinearPredictor:
        """Normal(mean, sd) on a midpoint grid of 200,000 cells over ±10 SD: the sensitivity and
        specificity integrate a step at the threshold, which Gauss-Hermite nodes resolve poorly; the grid
        is exact to about 1e-5 there and far better for the smooth slope information."""
        if not sd > 0:
            raise ValueError(f"the SD of the linear predictor must be > 0, got {sd}")
        edges = np.linspace(-10.0, 10.0, 200_001)
        z = (edges[:-1] + edges[1:]) / 2
        w = np.exp(-z * z / 2)
        return cls(mean + sd * z, w / w.sum(), f"linear predictor Normal({mean:g}, {sd:g})")

    @classmethod
    def matching(cls, prevalence: float, cstatistic: float) -> LinearPredictor:
        """The Normal(μ, σ) linear predictor of a calibrated model (p = expit(LP)) whose mean risk is
        ``prevalence`` and whose C-statistic is ``cstatistic``, as pmvalsampsize's ``lpcstat`` finds it
        by simulation (Riley et al. 2021, section 3): for each σ, μ solves E[expit(μ + σZ)] = φ; then σ
        solves C(σ) = c, where C is P(LP of an event > LP of a non-event) with events weighted by p and
        non-events by 1 − p. C(σ) rises from 0.5 at σ = 0, so the root is unique."""
        from scipy.optimize import brentq

        if not (0 < prevalence < 1 and 0.5 < cstatistic < 1):
            raise ValueError(f"need 0 < prevalence < 1 and 0.5 < C < 1, got {prevalence}, {cstatistic}")
        edges = np.linspace(-10.0, 10.0, 40_001)
        z = (edges[:-1] + edges[1:]) / 2
        w = np.exp(-z * z / 2)
        w /= w.sum()

        def mean_for(sd: float) -> float:
            return brentq(lambda m: float(w @ _expit(m + sd * z)) - prevalence, -500.0, 500.0, xtol=1e-12)

        def c_of(sd: float) -> float:
            p = _expit(mean_for(sd) + sd * z)
            w1, w0 = w * p, w * (1 - p)
            below = np.cumsum(w0) - w0  # non-event mass strictly below each cell; ties within a cell: half
            return float((w1 @ (below + w0 / 2)) / (w1.sum() * w0.sum()))

        if c_of(15.0) < cstatistic:  # beyond what a normal linear predictor of this prevalence reaches
            raise ValueError(f"no normal linear predictor has prevalence {prevalence:g} and C {cstatistic:g}")
        sd = brentq(lambda s: c_of(s) - cstatistic, 1e-4, 15.0, xtol=1e-10)
        mean = mean_for(sd)
        lp = cls.normal(mean, sd)
        source = (
            f"linear predictor Normal({mean:.3g}, {sd:.3g}) matching prevalence {prevalence:.3g} and C {cstatistic:.3g}"
        )
        return cls(lp.points, lp.weights, source)

    @classmethod
    def empirical(cls, logits, source: str) -> LinearPredictor:
        lp = np.asarray(logits, dtype=np.float64)
        lp = lp[np.isfinite(lp)]
        return cls(lp, np.full(lp.size, 1.0 / lp.size), source)

    def information(self) -> P.SlopeInformation:
        p = 1.0 / (1.0 + np.exp(-self.points))
        v = self.weights * p * (1.0 - p)
        return P.SlopeInformation(float(v.sum()), float(v @ self.points), float(v @ self.points**2))

    def sens_spec(self, t: float) -> tuple[float, float]:
        """Sensitivity and specificity at t of a calibrated model with this linear predictor."""
        p = 1.0 / (1.0 + np.exp(-self.points))
        call = p >= t
        sens = float((self.weights * p * call).sum() / (self.weights * p).sum())
        spec = float((self.weights * (1 - p) * ~call).sum() / (self.weights * (1 - p)).sum())
        return sens, spec


@dataclass
class Anticipated:
    """What the formulas need, site by site: ``prevalence`` per site id (``default_prevalence`` for the
    others), the C-statistic, the linear predictor, and observed sensitivity/specificity per decision
    threshold when predictions gave them."""

    default_prevalence: float | None = None
    prevalence: dict[str, float] = field(default_factory=dict)
    cstatistic: float | None = None
    lp: LinearPredictor | None = None
    sens_spec: dict[float, tuple[float, float]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def prevalence_of(self, site: str) -> float | None:
        return self.prevalence.get(site, self.default_prevalence)


def from_predictions(y, p, logits, thresholds, source: str) -> Anticipated:
    """Prevalence, C (AUROC), the empirical logits and the sensitivity/specificity at each threshold
    observed in the development site's predictions."""
    from validate.metrics.discrimination import delong_ci

    y = np.asarray(y).astype(int)
    if y.size == 0 or y.min() == y.max():
        raise ValueError("the development predictions need both outcomes to anticipate prevalence and C")
    c = float(delong_ci(y, np.asarray(logits, dtype=np.float64))["estimate"])
    return Anticipated(
        default_prevalence=float(y.mean()),
        cstatistic=c,
        lp=LinearPredictor.empirical(logits, f"the {y.size} development cases' logits"),
        sens_spec={float(t): P.sens_spec_at(y, p, t) for t in thresholds},
        sources={"prevalence": source, "cstatistic": source},
    )


def _need(metric: str, target: float, n: int | None, phi: float, basis: str, **extra) -> dict:
    return {
        "metric": metric,
        **extra,
        "target": float(target),
        "needed_n": n,
        "needed_events": int(math.ceil(n * phi - 1e-9)) if n is not None else None,
        "basis": basis,
    }


def _criteria(phi: float, a: Anticipated, targets, thresholds, level: float) -> list[dict]:
    if a.lp is None and a.cstatistic is not None and 0.5 < a.cstatistic < 1:
        # only prevalence and C anticipated: the normal linear predictor they imply (pmvalsampsize lpcstat)
        try:
            a = replace(a, lp=LinearPredictor.matching(phi, a.cstatistic))
        except ValueError:  # an extreme C: the slope and net benefit stay not computed, with what they need
            pass
    out = [
        _need(
            "oe_ratio",
            targets.oe_ratio,
            P.oe_needed_n(phi, P.oe_se_for_width(targets.oe_ratio, 1.0, level)),
            phi,
            f"prevalence {phi:.3g}, anticipated O/E 1",
        )
    ]
    if a.lp is not None:
        n = P.slope_needed_n(a.lp.information(), targets.calibration_slope, level)
        out.append(_need("calibration_slope", targets.calibration_slope, n, phi, f"{a.lp.source}, slope 1"))
    else:
        out.append(
            _need("calibration_slope", targets.calibration_slope, None, phi, "needs --lp-normal or --predictions")
        )
    if a.cstatistic is not None:
        n = P.cstat_needed_n(a.cstatistic, phi, targets.auroc, level)
        out.append(_need("auroc", targets.auroc, n, phi, f"prevalence {phi:.3g}, C {a.cstatistic:.3g}"))
    else:
        out.append(_need("auroc", targets.auroc, None, phi, "needs --cstatistic or --predictions"))
    for t in thresholds:
        ss = a.sens_spec.get(float(t)) or (a.lp.sens_spec(t) if a.lp is not None else None)
        if ss is None or not all(map(math.isfinite, ss)):
            out.append(
                _need("standardized_net_benefit", targets.standardized_net_benefit, None, phi,
                      "needs --lp-normal or --predictions", threshold=float(t))
            )  # fmt: skip
            continue
        n = P.snb_needed_n(phi, ss[0], ss[1], t, targets.standardized_net_benefit, level)
        basis = f"prevalence {phi:.3g}, sensitivity {ss[0]:.3g}, specificity {ss[1]:.3g} at t = {t:g}"
        out.append(
            _need("standardized_net_benefit", targets.standardized_net_benefit, n, phi, basis, threshold=float(t))
        )
    return out


def site_plan(site: str, role: str, n_manifest: int | None, a: Anticipated, targets, thresholds, level) -> dict:
    """One site's plan: each criterion's needed n, the recommendation and whether the manifest reaches it."""
    phi = a.prevalence_of(site)
    row: dict = {"site": site, "role": role, "n_manifest": n_manifest, "prevalence": phi}
    if phi is None:
        row.update(criteria=[], recommended_n=None, reaches=None, reason="no prevalence: give --prevalence")
        return row
    crit = _criteria(phi, a, targets, thresholds, level)
    known = [c for c in crit if c["needed_n"] is not None]
    top = max(known, key=lambda c: c["needed_n"])
    missing = [P.criterion_label(c) for c in crit if c["needed_n"] is None]
    row.update(
        criteria=crit,
        recommended_n=top["needed_n"],
        recommended_events=top["needed_events"],
        driven_by=P.criterion_label(top),
        not_computed=missing,
        reaches=None if n_manifest is None else bool(n_manifest >= top["needed_n"]),
    )
    return row


def plan(protocol, a: Anticipated, manifest_rows: dict[str, int | None]) -> dict:
    """The plan of every site of ``protocol`` (``manifest_rows``: each site's manifest row count)."""
    from validate.metrics.settings import MetricSettings

    settings = MetricSettings.from_protocol(protocol.metrics)
    decision = getattr(protocol, "decision", None)
    thresholds = tuple(float(t) for t in (getattr(decision, "thresholds", None) or ()))
    sites = [
        site_plan(s.id, s.role, manifest_rows.get(s.id), a, settings.precision, thresholds, settings.ci_level)
        for s in protocol.sites
    ]
    return {
        "schema": "validate.plan/1",
        "protocol": protocol.name,
        "ci_level": settings.ci_level,
        "targets": {
            "oe_ratio": settings.precision.oe_ratio,
            "calibration_slope": settings.precision.calibration_slope,
            "auroc": settings.precision.auroc,
            "standardized_net_benefit": settings.precision.standardized_net_benefit,
        },
        "decision_thresholds": list(thresholds),
        "anticipated": {
            "prevalence": a.default_prevalence,
            "prevalence_by_site": dict(a.prevalence),
            "cstatistic": a.cstatistic,
            "linear_predictor": a.lp.source if a.lp is not None else None,
        },
        "sites": sites,
        "method": "Riley et al. Stat Med 2021;40:4230-51; BMJ 2024;384:e074821 (largest criterion recommended)",
    }
