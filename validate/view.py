"""Bundle views: the helpers both presentations (the HTML report and the dashboard) use to read a
results bundle's JSON into the shapes they show. Pure reshaping of bundle data: nothing here computes a
statistic, reads predictions or imports the engine (``validate.analysis``, ``.metrics``, ``.scoring``
...); tests/test_architecture.py holds it to that.

- entries: :func:`triplet`, :func:`fmt`, :func:`p_text`, :func:`interval_text`, :func:`metric_names`,
  :func:`insufficient_reason` (a metric entry or BLOCK of the Metrics JSON as numbers and text);
- gates: :func:`gate_verdicts_by_site` (``gates.json`` rows per site and metric);
- subgroups: :func:`insufficient_cells` (``subgroups.json`` cells with too little data);
- calibration designs: :func:`sample_size_rows`, :func:`transfer_matrix` (``calibration.json``'s
  ``designs`` in the shapes :mod:`validate.charts` takes).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from validate import formatting
from validate.groups import group_sort_key

# ---- metric entries and blocks --------------------------------------------------------------------


def triplet(entry: Any) -> tuple[float | None, float | None, float | None]:
    """(estimate, ci_low, ci_high) of a metric entry: an interval dict, a bare number or missing."""
    if isinstance(entry, Mapping):
        return (
            _num(entry.get("estimate", entry.get("statistic"))),
            _num(entry.get("ci_low")),
            _num(entry.get("ci_high")),
        )
    return _num(entry), None, None


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def fmt(x: float | None, digits: int | None = None, *, metric: str | None = None) -> str:
    """A value for reading (:func:`validate.formatting.format_value`)."""
    return formatting.format_value(x, metric, digits=digits)


def p_text(p: float | None) -> str:
    """A p-value for reading: three decimals, or ``< 0.001`` (:func:`validate.formatting.format_p`)."""
    return formatting.format_p(p)


def interval_text(entry: Any, digits: int | None = None, *, metric: str | None = None) -> str:
    """An entry with its interval, or ``— (reason)`` (:func:`validate.formatting.format_entry`)."""
    if isinstance(entry, Mapping) and "estimate" not in entry and "statistic" not in entry:
        reason = entry.get("reason")
        return f"— ({reason})" if reason else "—"
    return formatting.format_entry(entry, metric, digits=digits)


def metric_names(blocks: Iterable[Mapping]) -> list[str]:
    """Metric keys holding an estimate (interval dicts or numbers), in first-seen order."""
    seen: dict[str, None] = {}
    skip = {"n", "n_events", "prevalence", "insufficient", "insufficient_reason", "reason", "classes", "labels"}
    for b in blocks:
        for k, v in (b or {}).items():
            if k in skip or k in seen:
                continue
            if isinstance(v, Mapping) and "estimate" in v:
                seen[k] = None
    return list(seen)


def insufficient_reason(block: Mapping) -> str | None:
    if not block or not block.get("insufficient"):
        return None
    r = block.get("insufficient_reason") or block.get("reason") or "too few cases or events"
    return str(r)


# ---- sites ----------------------------------------------------------------------------------------


def site_order(cohort_sites: Sequence[str], metric_sites: Sequence[str]) -> list[str]:
    """The bundle's site order, the one the site colours follow (:func:`validate.charts.site_colors`):
    the sites of ``sites.json`` that have a metrics block, in its (the protocol's) order, then any other
    site of ``metrics.json``. The report and the dashboard both build their colour map from it."""
    return [s for s in cohort_sites if s in metric_sites] + [s for s in metric_sites if s not in cohort_sites]


# ---- fitted calibrators (calibration.json methods' params) ----------------------------------------

#: Decimals of a fitted parameter (a slope, an intercept, a temperature: not a metric).
PARAMETER_DIGITS = 4
#: Lists up to this length are shown in full; longer ones as their length and range.
PARAMETER_LIST_SHOWN = 6


def parameter_rows(params: Any, name: str = "") -> list[tuple[str, str]]:
    """A fitted calibrator's parameters as readable ``(name, value)`` rows instead of a Python dump:
    nested keys joined with dots (``members[2].slope``), numbers at :data:`PARAMETER_DIGITS`
    decimals, long lists (an isotonic fit's knots) as their length and range."""
    if isinstance(params, Mapping):
        rows: list[tuple[str, str]] = []
        for k, v in params.items():
            rows += parameter_rows(v, f"{name}.{k}" if name else str(k))
        return rows
    if isinstance(params, (list, tuple)):
        if params and all(isinstance(v, (Mapping, list, tuple)) for v in params):
            return [r for i, v in enumerate(params) for r in parameter_rows(v, f"{name}[{i}]")]
        return [(name, _list_text(params))]
    return [(name, _parameter_text(params))]


def _parameter_text(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "—" if v is None else str(v)
    return formatting.format_value(v, digits=PARAMETER_DIGITS)


def _list_text(values: Sequence[Any]) -> str:
    if len(values) <= PARAMETER_LIST_SHOWN:
        return ", ".join(_parameter_text(v) for v in values) or "(none)"
    nums = [formatting.number(v) for v in values]
    finite = [v for v in nums if v is not None]
    if len(finite) < len(values):
        return f"{len(values)} values"
    lo, hi = min(finite), max(finite)
    return f"{len(values)} values from {_parameter_text(lo)} to {_parameter_text(hi)}"


# ---- gates.json ----------------------------------------------------------------------------------


def gate_verdicts_by_site(gates: Mapping | None) -> dict[str, dict[str, str]]:
    """``{site: {metric: worst verdict}}`` over the gate rows judged on that site, plus ``"*"`` per
    site for the worst verdict of any of its rows."""
    rank = {"pass": 0, "warn": 1, "fail": 2}
    out: dict[str, dict[str, str]] = {}
    for r in (gates or {}).get("rows") or []:
        site = r.get("site")
        if not site:
            continue
        v = r.get("verdict") or "pass"
        cell = out.setdefault(str(site), {})
        for key in (r.get("metric") if not r.get("calibration") else None, "*"):
            if key and rank.get(v, 0) >= rank.get(cell.get(key, "pass"), 0):
                cell[key] = v
    return out


# ---- subgroups.json ------------------------------------------------------------------------------


def insufficient_cells(analysis: Mapping) -> list[dict]:
    """Every (level, subgroup, group) marked insufficient, with n, events and the reason (for the
    report's limitations section)."""
    rows = []
    levels = [("overall", analysis.get("overall") or {})] + sorted((analysis.get("sites") or {}).items())
    for level, data in levels:
        for attr, cells in sorted((data.get("subgroups") or {}).items()):
            for g in sorted(cells, key=group_sort_key):
                b = cells[g].get("block") or {}
                if b.get("insufficient"):
                    rows.append(
                        {
                            "site": "all sites" if level == "overall" else level,
                            "subgroup": attr,
                            "group": g,
                            "n": b.get("n"),
                            "n_events": b.get("n_events"),
                            "reason": b.get("reason"),
                        }
                    )
    return rows


# ---- calibration.json designs (validate.calibrators.designs) ----------------------------------------


def _designs(calibration: Mapping) -> Mapping:
    return (calibration or {}).get("designs") or {}


def sample_size_rows(
    calibration: Mapping,
    metric: str = "ece",
    *,
    methods: Sequence[str] | None = None,
    sites: Sequence[str] | None = None,
) -> list[dict]:
    """Rows for :func:`validate.charts.sample_size_figure`: per external site, method (not ``none``) and
    fitting-set size, the mean of ``metric`` over repeats, its 2.5/97.5% quantiles as the spread, and
    the uncalibrated mean on the same evaluation cases as ``baseline``."""
    section = _designs(calibration).get("sample_size") or {}
    rows = []
    for site, info in (section.get("sites") or {}).items():
        if sites is not None and site not in sites:
            continue
        for size, res in sorted((info.get("sizes") or {}).items(), key=lambda kv: int(kv[0])):
            per = res.get("methods") or {}
            base = ((per.get("none") or {}).get(metric) or {}).get("mean")
            for method, stats in per.items():
                if method == "none" or (methods is not None and method not in methods):
                    continue
                s = (stats or {}).get(metric) or {}
                if s.get("mean") is None:
                    continue
                rows.append(
                    {
                        "site": site,
                        "method": method,
                        "n_fit": int(res.get("n_fit", size)),
                        "mean": s["mean"],
                        "low": s.get("q025"),
                        "high": s.get("q975"),
                        "repeats": res.get("repeats"),
                        "baseline": base,
                        "n_eval": res.get("n_eval"),
                    }
                )
    return rows


def transfer_matrix(calibration: Mapping, metric: str = "ece") -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """``{method: {fit_site: {eval_site: {"estimate": value}}}}`` of ``metric`` from the transfer design
    (point estimates, as :func:`validate.charts.transfer_matrix_figure` takes a matrix's cells)."""
    section = _designs(calibration).get("transfer") or {}
    out = {}
    for method, by_metric in (section.get("methods") or {}).items():
        matrix = (by_metric or {}).get(metric)
        if matrix:
            out[method] = {fit: {ev: {"estimate": v} for ev, v in (row or {}).items()} for fit, row in matrix.items()}
    return out
