"""Hand-made ``metrics.json["synthesis"]`` sections shaped as SPEC_S5 #16 (validate.analysis.synthesis),
for the presentation tests of the forest plot (charts, report, dashboard) before and apart from the
engine: the numbers are inputs to draw, not results to check.

Sites and blocks are those of tests/test_dashboard_data.py (alpha development; beta, gamma external;
gamma below min_events). ``all_sites`` pools the three (k = 3: a prediction interval); ``external``
pools beta and gamma (k = 2: none, with the reason).
"""

from __future__ import annotations

import copy
import math

# per site: AUROC and its DeLong SE, n, events, insufficient (the fixture blocks' numbers)
AUROC = {
    "alpha": (0.872, 0.0566, 40, 20, False),
    "beta": (0.743, 0.079, 40, 20, False),
    "gamma": (0.690, 0.138, 20, 6, True),
}
# per site: calibration slope and its Wald SE
SLOPE = {"alpha": (1.02, 0.24), "beta": (0.64, 0.22), "gamma": (0.71, 0.46)}
# per site: net benefit minus treat-all at t = 0.2 and its bootstrap SE
NB_GAIN = {"alpha": (0.061, 0.030), "beta": (0.018, 0.027), "gamma": (-0.012, 0.041)}


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _inputs(sites, theta_se) -> list[dict]:
    out = []
    for s in sites:
        _, _, n, events, small = AUROC[s]
        theta, se = theta_se(s)
        out.append({"site": s, "theta": theta, "se": se, "n": n, "n_events": events, "insufficient": small})
    return out


def _auroc_inputs(sites):
    return _inputs(sites, lambda s: (_logit(AUROC[s][0]), AUROC[s][1] / (AUROC[s][0] * (1 - AUROC[s][0]))))


def _oe_inputs(sites):
    # ln(O/E) with Debray's SE sqrt((1 - O/n)/O); O/E of 1.10, 0.85, 1.30
    ratio = {"alpha": 1.10, "beta": 0.85, "gamma": 1.30}
    return _inputs(sites, lambda s: (math.log(ratio[s]), math.sqrt((1 - AUROC[s][3] / AUROC[s][2]) / AUROC[s][3])))


def all_sites() -> dict:
    """k = 3 (all sites): every pooled metric has a prediction interval."""
    sites = ["alpha", "beta", "gamma"]
    return {
        "method": "REML",
        "interval": "hksj",
        "ci_level": 0.95,
        "sites": sites,
        "role_rule": "all sites (protocol: synthesis.sites: all)",
        "metrics": {
            "auroc": {
                "scale": "logit",
                "k": 3,
                "estimate": 0.801,
                "ci_low": 0.612,
                "ci_high": 0.911,
                "pi_low": 0.203,
                "pi_high": 0.986,
                "se": 0.221,
                "tau2": 0.052,
                "i2": 0.27,
                "q": 2.74,
                "q_p_value": 0.254,
                "pi_reason": None,
                "inputs": _auroc_inputs(sites),
            },
            "calibration_slope": {
                "scale": "identity",
                "k": 3,
                "estimate": 0.81,
                "ci_low": 0.29,
                "ci_high": 1.33,
                "pi_low": -1.21,
                "pi_high": 2.83,
                "se": 0.121,
                "tau2": 0.011,
                "i2": 0.08,
                "q": 1.61,
                "q_p_value": 0.447,
                "pi_reason": None,
                "inputs": _inputs(sites, lambda s: SLOPE[s]),
            },
            "oe_ratio": {
                "scale": "log",
                "k": 3,
                "estimate": 1.02,
                "ci_low": 0.71,
                "ci_high": 1.47,
                "pi_low": 0.29,
                "pi_high": 3.61,
                "se": 0.085,
                "tau2": 0.0,
                "i2": 0.0,
                "q": 1.12,
                "q_p_value": 0.571,
                "pi_reason": None,
                "inputs": _oe_inputs(sites),
            },
            "net_benefit_vs_treat_all@0.2": {
                "scale": "identity",
                "k": 3,
                "estimate": 0.027,
                "ci_low": -0.048,
                "ci_high": 0.102,
                "pi_low": -0.31,
                "pi_high": 0.364,
                "se": 0.017,
                "tau2": 0.0004,
                "i2": 0.21,
                "q": 2.52,
                "q_p_value": 0.283,
                "pi_reason": None,
                "inputs": _inputs(sites, lambda s: NB_GAIN[s]),
            },
        },
    }


def external() -> dict:
    """k = 2 (the external sites beta and gamma): no prediction interval, with the reason."""
    sites = ["beta", "gamma"]
    reason = "k = 2 < 3 sites: no prediction interval"
    return {
        "method": "REML",
        "interval": "hksj",
        "ci_level": 0.95,
        "sites": sites,
        "role_rule": "external sites (protocol: synthesis.sites)",
        "metrics": {
            "auroc": {
                "scale": "logit",
                "k": 2,
                "estimate": 0.729,
                "ci_low": 0.431,
                "ci_high": 0.906,
                "pi_low": None,
                "pi_high": None,
                "se": 0.07,
                "tau2": 0.0,
                "i2": 0.0,
                "q": 0.12,
                "q_p_value": 0.729,
                "pi_reason": reason,
                "inputs": _auroc_inputs(sites),
            },
            "net_benefit_vs_treat_all@0.2": {
                "scale": "identity",
                "k": 2,
                "estimate": 0.008,
                "ci_low": -0.19,
                "ci_high": 0.21,
                "pi_low": None,
                "pi_high": None,
                "se": 0.016,
                "tau2": 0.0,
                "i2": 0.0,
                "q": 0.37,
                "q_p_value": 0.54,
                "pi_reason": reason,
                "inputs": _inputs(sites, lambda s: NB_GAIN[s]),
            },
        },
    }


def with_synthesis(metrics: dict, synthesis: dict) -> dict:
    """``metrics`` (a metrics.json dict) with the synthesis section and, for the net-benefit rows of
    sites outside the synthesis, a ``decision`` item at t = 0.2 in each site block."""
    out = copy.deepcopy(metrics)
    out["synthesis"] = copy.deepcopy(synthesis)
    for site, (gain, se) in NB_GAIN.items():
        entry = {
            "estimate": gain,
            "ci_low": gain - 1.96 * se,
            "ci_high": gain + 1.96 * se,
            "method": "bootstrap",
            "se": se,
        }
        out["sites"][site]["decision"] = [{"threshold": 0.2, "prevalence": 0.5, "net_benefit_vs_treat_all": entry}]
    return out
