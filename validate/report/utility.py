"""Clinical utility and precision as the report and the dashboard show them: the BLOCKs' ``decision``
items (net benefit at the protocol's decision thresholds) and ``precision`` summaries of ``metrics.json``
reshaped into table rows. Pure reshaping of bundle data, shared by both presentations so that a table
reads the same in each; nothing is computed here (tests/test_architecture.py keeps the engine out).

Definitions (computed at run time, :mod:`validate.metrics`): net benefit NB(t) = TP/n − FP/n · t/(1−t)
(Vickers & Elkin 2006); treat all NB = prev − (1 − prev) · t/(1−t); net interventions avoided per 100
patients = (NB − NB_all) / (t/(1−t)) × 100; standardised NB = NB / prev; ``beats_defaults`` = the share of
bootstrap replicates in which NB > max(0, NB_all) — a description of the replicates, not a significance
test (Vickers et al., Diagn Progn Res 2023). Precision: the achieved interval width of each criterion
against the protocol's target and the sample size the target would need (Riley et al., Stat Med
2021;40:4230–51; BMJ 2024;384:e074821).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

POOLED = "all sites (pooled)"
# the entries of a decision item, in the order the tables show them
DECISION_METRICS = (
    "net_benefit",
    "net_benefit_treat_all",
    "net_benefit_vs_treat_all",
    "interventions_avoided",
    "standardized_net_benefit",
)
DECISION_LABELS = {
    "net_benefit": "Net benefit",
    "net_benefit_treat_all": "Treat all",
    "net_benefit_vs_treat_all": "NB − treat all",
    "interventions_avoided": "Interventions avoided per 100",
    "standardized_net_benefit": "Standardised NB",
}
# decimals shown: interventions avoided are counted per 100 patients
DIGITS = {"interventions_avoided": 1}
PRECISION_LABELS = {
    "auroc": "C-statistic (AUROC)",
    "calibration_slope": "Calibration slope",
    "oe_ratio": "O/E ratio",
    "standardized_net_benefit": "Standardised net benefit",
}


def _blocks(metrics: Mapping | None, order: Sequence[str]) -> Iterator[tuple[str, str, Mapping]]:
    """(label, site key, BLOCK) for each site in ``order``, then the pooled block; per-class or per-label
    binary blocks of a multi-outcome task follow their site, labelled ``site · class``."""
    metrics = metrics or {}
    sites = metrics.get("sites") or {}
    parts = [(s, s, sites.get(s)) for s in order] + [(POOLED, "overall", metrics.get("overall"))]
    for label, key, block in parts:
        if not isinstance(block, Mapping):
            continue
        yield label, key, block
        for kind in ("classes", "labels"):
            for c, sub in (block.get(kind) or {}).items():
                if isinstance(sub, Mapping):
                    yield f"{label} · {c}", key, sub


def has_decision(metrics: Mapping | None, curves: Mapping | None = None) -> bool:
    """Whether the bundle holds net benefit: a BLOCK with ``decision`` items or the decision curves."""
    if (curves or {}).get("decision"):
        return True
    sites = list(((metrics or {}).get("sites") or {}).keys())
    return any(block.get("decision") for _, _, block in _blocks(metrics, sites))


def has_precision(metrics: Mapping | None) -> bool:
    sites = list(((metrics or {}).get("sites") or {}).keys())
    return any(isinstance(block.get("precision"), Mapping) for _, _, block in _blocks(metrics, sites))


def undefined_reason(block: Mapping, metric: str, threshold: Any) -> str | None:
    """Why ``metric`` at decision threshold ``threshold`` is null: the BLOCK's ``undefined["<metric>@<t>"]``."""
    undefined = block.get("undefined") or {}
    for key in (f"{metric}@{threshold}", f"{metric}@{threshold:g}" if isinstance(threshold, float) else None):
        if key and key in undefined:
            return str(undefined[key])
    return None


def decision_rows(metrics: Mapping | None, order: Sequence[str]) -> list[dict]:
    """One row per block and decision threshold: site label and key, n, events, prevalence, threshold,
    the five entries (``None`` when undefined, the reason under ``undefined``) and ``beats_defaults``."""
    rows = []
    for label, key, block in _blocks(metrics, order):
        for item in block.get("decision") or []:
            if not isinstance(item, Mapping):
                continue
            t = item.get("threshold")
            row = {
                "site": label,
                "key": key,
                "n": block.get("n"),
                "n_events": block.get("n_events"),
                "prevalence": item.get("prevalence", block.get("prevalence")),
                "threshold": t,
                "beats_defaults": item.get("beats_defaults"),
                "insufficient": bool(block.get("insufficient")),
                "undefined": {},
            }
            for m in DECISION_METRICS:
                entry = item.get(m)
                row[m] = entry if isinstance(entry, Mapping) and entry.get("estimate") is not None else None
                if row[m] is None:
                    row["undefined"][m] = undefined_reason(block, m, t) or "undefined"
            rows.append(row)
    return rows


def criterion_label(criterion: Mapping) -> str:
    """``Calibration slope``; a criterion at a decision threshold adds it: ``Standardised net benefit at 0.2``."""
    metric = str(criterion.get("metric") or "")
    name, _, at = metric.partition("@")
    label = PRECISION_LABELS.get(name, name.replace("_", " "))
    t = criterion.get("threshold", at or None)
    return f"{label} at {t}" if t not in (None, "") else label


def precision_rows(metrics: Mapping | None, order: Sequence[str]) -> list[dict]:
    """One row per block and precision criterion: the achieved interval width against the target, the
    sample size (and events) the target needs, the block's n, whether it is adequate, and the basis of
    the calculation; the block's overall ``adequate`` and ``reason`` ride along."""
    rows = []
    for label, key, block in _blocks(metrics, order):
        summary = block.get("precision")
        if not isinstance(summary, Mapping):
            continue
        for c in summary.get("criteria") or []:
            if not isinstance(c, Mapping):
                continue
            rows.append(
                {
                    "site": label,
                    "key": key,
                    "criterion": criterion_label(c),
                    "metric": c.get("metric"),
                    "width": c.get("width"),
                    "target": c.get("target"),
                    "adequate": c.get("adequate"),
                    "needed_n": c.get("needed_n"),
                    "needed_events": c.get("needed_events"),
                    "n": c.get("n", block.get("n")),
                    "n_events": block.get("n_events"),
                    "basis": c.get("basis"),
                    "block_adequate": summary.get("adequate"),
                    "block_reason": summary.get("reason"),
                }
            )
    return rows


def share_text(x: Any) -> str:
    """A share of bootstrap replicates as a percentage (``97%``); — without replicates."""
    if x is None or isinstance(x, bool):
        return "—"
    return f"{100 * float(x):.0f}%"


def count_text(x: Any) -> str:
    """A sample size for reading: ``1,350``; — when the criterion gives none."""
    if x is None or isinstance(x, bool):
        return "—"
    try:
        return f"{int(round(float(x))):,}"
    except (TypeError, ValueError):
        return str(x)
