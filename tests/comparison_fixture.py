"""A hand-written ``comparison.json`` of the shape SPEC14 gives (schema ``validate.comparison/1``).

The numbers are made up and fixed, so tests can compare what a figure or a page shows with the file,
never with what the code under test computed.
"""

from __future__ import annotations

import copy

SITES = ("cleveland", "hungary", "switzerland", "va")


def _entry(
    new: float, base: float, lo: float, hi: float, method: str = "bootstrap_paired", p: float | None = None
) -> dict:
    return {
        "new": new,
        "baseline": base,
        "delta": round(new - base, 6),
        "ci_low": lo,
        "ci_high": hi,
        "method": method,
        "p_value": p,
    }


def _block(
    n: int,
    events: int,
    auroc: tuple,
    ece: tuple,
    *,
    insufficient: bool = False,
    reason: str | None = None,
    undefined: dict | None = None,
) -> dict:
    metrics = {}
    if auroc:
        metrics["auroc"] = _entry(*auroc, method="delong_paired", p=auroc[-1] if len(auroc) > 4 else 0.5)
    if ece:
        metrics["ece"] = _entry(*ece)
    return {
        "n": n,
        "n_events": events,
        "insufficient": insufficient,
        "reason": reason,
        "metrics": metrics,
        "undefined": dict(undefined or {}),
    }


def _auroc(new, base, lo, hi):
    return (new, base, lo, hi)


COMPARISON = {
    "schema": "validate.comparison/1",
    "new": {"label": "new", "source": "model_v2.pt2", "sha256": "ab" * 32},
    "baseline": {"label": "baseline", "source": "model.pt2", "sha256": "cd" * 32},
    "level": 0.95,
    "n_boot": 200,
    "seed": 0,
    "matched": {
        "n": 920,
        "n_new_only": 0,
        "n_baseline_only": 0,
        "sites": {"cleveland": 303, "hungary": 294, "switzerland": 123, "va": 200},
    },
    "overall": _block(920, 509, _auroc(0.861, 0.853, -0.004, 0.020), (0.041, 0.052, -0.024, 0.003)),
    "sites": {
        "cleveland": _block(303, 139, _auroc(0.921, 0.913, -0.006, 0.022), (0.038, 0.047, -0.030, 0.011)),
        "hungary": _block(294, 106, _auroc(0.902, 0.897, -0.011, 0.021), (0.052, 0.061, -0.033, 0.016)),
        "switzerland": _block(
            123,
            115,
            _auroc(0.741, 0.772, -0.081, 0.019),
            (0.211, 0.190, -0.012, 0.054),
            insufficient=True,
            reason="8 non-events < min_events 10",
        ),
        "va": _block(200, 149, _auroc(0.733, 0.712, 0.003, 0.039), (0.083, 0.094, -0.041, 0.020)),
    },
    "subgroups": {
        "sex": {
            "female": {
                "overall": _block(194, 50, _auroc(0.884, 0.870, -0.012, 0.040), (0.063, 0.071, -0.040, 0.024)),
                "sites": {
                    "va": _block(
                        6,
                        0,
                        (),
                        (0.101, 0.120, -0.070, 0.031),
                        insufficient=True,
                        reason="0 events < min_events 10",
                        undefined={"auroc": "one class only (no events)"},
                    )
                },
            },
            "male": {
                "overall": _block(726, 459, _auroc(0.835, 0.829, -0.009, 0.021), (0.045, 0.050, -0.021, 0.011)),
                "sites": {"va": _block(194, 149, _auroc(0.731, 0.710, 0.002, 0.040), (0.085, 0.096, -0.043, 0.021))},
            },
        },
    },
}


def comparison(**changes) -> dict:
    """A deep copy of :data:`COMPARISON` with top-level keys replaced."""
    out = copy.deepcopy(COMPARISON)
    out.update(changes)
    return out
