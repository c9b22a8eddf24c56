"""The Clinical utility page's data: net benefit at the decision thresholds, the decision curve and the
precision criteria of a loaded run, as tables and figures (pure reshaping; the rows come from
:mod:`validate.report.utility`, shared with the HTML report, the figure from :mod:`validate.charts`).

Each table builder returns ``(display, data)`` as :mod:`dashboard.tables` does: estimates with their
intervals as text, and the same numbers as numeric columns for the CSV download.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from validate import charts
from validate.report import utility
from validate.view import interval_text, triplet

POOLED_KEY = "overall"


def available(run) -> bool:
    """Whether the run carries net benefit or precision (the page is listed only then)."""
    return utility.has_decision(run.metrics, run.curves) or utility.has_precision(run.metrics)


def has_decision(run) -> bool:
    return utility.has_decision(run.metrics, run.curves)


def has_precision(run) -> bool:
    return utility.has_precision(run.metrics)


def decision_sites(run) -> list[str]:
    """The sites with a decision curve or decision items, then ``"overall"`` (pooled) when it has one."""
    curves = (run.curves or {}).get("decision")
    keys = [*run.sites, POOLED_KEY]
    out = []
    for key in keys:
        block = run.metrics.get(POOLED_KEY) if key == POOLED_KEY else (run.metrics.get("sites") or {}).get(key)
        if charts.decision_curve_block(curves, key) is not None or (block or {}).get("decision"):
            out.append(key)
    return out


def site_label(key: str) -> str:
    return utility.POOLED if key == POOLED_KEY else key


def decision_figure(run, site: str):
    """The decision curve of ``site`` with the protocol's decision thresholds marked; None without curves."""
    curves = (run.curves or {}).get("decision")
    if charts.decision_curve_block(curves, site) is None:
        return None
    block = run.metrics.get(POOLED_KEY) if site == POOLED_KEY else (run.metrics.get("sites") or {}).get(site)
    return charts.decision_curve_figure(
        curves, site, decision=(block or {}).get("decision"), color=run.site_colors.get(site)
    )


def _entry_columns(row: dict, data: dict, r: Mapping) -> None:
    for m in utility.DECISION_METRICS:
        head = utility.DECISION_LABELS[m]
        entry = r[m]
        row[head] = (
            f"undefined ({r['undefined'].get(m)})" if entry is None else interval_text(entry, utility.DIGITS.get(m, 3))
        )
        data[m], data[f"{m}_ci_low"], data[f"{m}_ci_high"] = triplet(entry)


def decision_table(run, site: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Net benefit at each decision threshold: per site and pooled, or one ``site`` (``"overall"``: pooled)."""
    rows, data = [], []
    for r in utility.decision_rows(run.metrics, run.sites):
        if site is not None and r["key"] != site:
            continue
        row = {
            "Site": r["site"],
            "n": r["n"],
            "Events": r["n_events"],
            "Prevalence": charts.fmt(r["prevalence"], 2),
            "Threshold": charts.fmt(r["threshold"], 2),
        }
        numbers = {k: r[k] for k in ("site", "n", "n_events", "prevalence", "threshold")}
        _entry_columns(row, numbers, r)
        row["Beats both defaults"] = utility.share_text(r["beats_defaults"])
        numbers["beats_defaults"] = r["beats_defaults"]
        row["Insufficient"] = "insufficient" if r["insufficient"] else ""
        rows.append(row)
        data.append(numbers)
    return pd.DataFrame(rows), pd.DataFrame(data)


def precision_table(run) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per site and criterion: the achieved interval width vs the target, needed n (events) vs the site's n."""
    rows, data = [], []
    for r in utility.precision_rows(run.metrics, run.sites):
        verdict = {True: "adequate", False: "too wide"}.get(r["adequate"], "—")
        needed = utility.count_text(r["needed_n"])
        if r["needed_events"] is not None:
            needed += f" ({utility.count_text(r['needed_events'])} events)"
        rows.append(
            {
                "Site": r["site"],
                "Criterion": r["criterion"],
                "CI width": charts.fmt(r["width"], 2),
                "Target width": charts.fmt(r["target"], 2),
                "Precision": verdict,
                "Needed n": needed,
                "Has n": utility.count_text(r["n"]),
                "Basis": r["basis"] or "",
            }
        )
        data.append(
            {k: r[k] for k in ("site", "metric", "width", "target", "adequate", "needed_n", "needed_events", "n")}
        )
    return pd.DataFrame(rows), pd.DataFrame(data)


def precision_reasons(run) -> dict[str, str]:
    """The reason of every block whose precision falls short, by site label."""
    out: dict[str, str] = {}
    for r in utility.precision_rows(run.metrics, run.sites):
        if r["block_adequate"] is False and r["block_reason"]:
            out[r["site"]] = str(r["block_reason"])
    return out
