"""Gates on the group fairness measures of ``fairness.json`` (scope ``each_attribute``).

``{metric: equalized_odds_difference, scope: each_attribute, max: 0.10, on: ci_high}`` judges, for every
declared subgroup (``each_attribute:<name>``: that one only), pooled over sites, the summary measure at
every operating threshold of ``fairness.json`` (the protocol's ``metrics.thresholds`` and the
target-sensitivity threshold): one row per subgroup and threshold. The calibration ranges
(``calibration_in_the_large_range``, ``calibration_slope_range``) have no threshold: one row per subgroup.
Read with ``on: ci_high`` and ``max``, the row says "the largest disparity the data allow is at most
the bound" (the interval of a maximum over groups leans upward in resamples, so this reading is
conservative).

Groups too small to judge are left out of the summaries (:mod:`validate.analysis.fairness`); where any
were, the row's verdict is at least the gate's insufficient policy (``pass`` ignores them), as for
``worst_subgroup``: a disparity in a group nobody could measure must not read as a clean PASS. A
summary that cannot be computed (fewer than two groups with enough data, an undefined rate) follows the
insufficient policy with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from validate.analysis.fairness import CALIBRATION_SUMMARY, GATEABLE

SCOPE = "each_attribute"


def check_fairness_gate(spec: Any, fairness: Mapping | None, err: Callable[..., None]) -> None:
    """Report (``err(spec, key, message, expected)``) what makes an ``each_attribute`` gate unanswerable."""
    if spec.compare is not None or spec.calibration is not None:
        err(
            spec,
            "scope",
            "scope each_attribute judges fairness.json as scored: no `compare` or `calibration`",
            "a gate without compare and calibration",
        )
        return
    if spec.metric not in GATEABLE:
        err(spec, "metric", f"`{spec.metric}` is not a fairness measure", f"one of {', '.join(GATEABLE)}")
    if fairness is None:
        err(
            spec,
            "scope",
            "each_attribute needs the fairness analysis (fairness.json), which is absent",
            "a binary task with at least one subgroup",
        )
        return
    attr = spec.attribute
    if attr is not None and attr not in (fairness.get("attributes") or []):
        err(spec, "scope", f"subgroup `{attr}` is not in fairness.json", f"one of {fairness.get('attributes')}")


def _threshold_item(attr: str, t: Mapping) -> str:
    what = "target sensitivity" if t.get("kind") == "target_sensitivity" else "threshold"
    carried = ", carried" if t.get("carried") else ""
    return f"{attr} @ {what} {float(t['threshold']):.4g}{carried}"


def fairness_items(spec: Any, fairness: Mapping) -> list[tuple[str, str, dict, list[str]]]:
    """What an ``each_attribute`` gate judges: ``(item, attribute, block, small groups)`` per subgroup and
    threshold (per subgroup for the calibration ranges), where ``block`` is a metrics-BLOCK-shaped dict
    (the summary entries, the pooled ``n``/``n_events`` and ``undefined``) that
    :func:`validate.gates.judge_fairness` judges as any block."""
    level = fairness.get("overall") or {}
    counts = {"n": level.get("n"), "n_events": level.get("n_events")}
    items = []
    for attr in [spec.attribute] if spec.attribute else list(fairness.get("attributes") or []):
        block = (level.get("attributes") or {}).get(attr) or {}
        if spec.metric in CALIBRATION_SUMMARY:
            parts = [(attr, block.get("calibration") or {})]
        else:
            parts = [(_threshold_item(attr, t), t) for t in block.get("thresholds") or []]
        small = list(block.get("excluded_insufficient") or [])
        for item, part in parts:
            judged = {**(part.get("summary") or {}), **counts, "undefined": part.get("undefined") or {}}
            items.append((item, attr, judged, small))
    return items
