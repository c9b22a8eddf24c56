"""The "Across hospitals" page's tables: the random-effects synthesis of ``metrics.json["synthesis"]``.

Reads the synthesis dict only (every number comes from it, through the same helpers as the report and
the forest plot of :mod:`validate.charts`); nothing is pooled or recomputed here. Each builder returns a
display frame (text with intervals) and a numeric frame for the CSV download.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from validate import charts
from validate.formatting import p_clause


def summary_frames(synthesis: Mapping) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per pooled metric: k, the pooled estimate with its CI, the prediction interval (or why
    none), τ² on the pooling scale, I², Cochran's Q with its p-value."""
    level = float(synthesis.get("ci_level") or 0.95)
    display, numeric = [], []
    for metric, e in (synthesis.get("metrics") or {}).items():
        if not isinstance(e, Mapping):
            continue
        i2 = e.get("i2")
        display.append(
            {
                "Metric": charts.synthesis_metric_label(metric),
                "k": e.get("k"),
                f"Pooled ({level:.0%} CI)": charts.entry_text(e),
                f"{level:.0%} prediction interval": charts.prediction_interval_text(e),
                "τ² (scale)": f"{charts.tau2_text(e.get('tau2'))} ({e.get('scale') or 'identity'})",
                "I²": "—" if i2 is None else f"{float(i2):.0%}",
                "Q (p)": f"{charts.fmt(e.get('q'), 2)} ({p_clause(e.get('q_p_value'))})",
            }
        )
        numeric.append(
            {"metric": metric, "scale": e.get("scale")}
            | {k: e.get(k) for k in ("k", "estimate", "ci_low", "ci_high", "pi_low", "pi_high", "pi_reason")}
            | {k: e.get(k) for k in ("se", "tau2", "i2", "q", "q_p_value")}
        )
    return pd.DataFrame(display), pd.DataFrame(numeric)


def site_frames(metrics: Mapping, metric: str, roles: Mapping[str, str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The forest plot's site rows as a table: each site's input to the synthesis on the metric's scale
    (or, for a site outside it, its own entry), with n, events and the insufficient flag."""
    display, numeric = [], []
    for r in charts.synthesis_site_rows(metrics, metric, roles):
        pooled = r["kind"] != "unpooled"
        display.append(
            {
                "Site": r["label"],
                "n (events)": charts.n_text(r.get("n"), r.get("n_events")),
                "Estimate (interval)": charts.entry_text(r) if r.get("estimate") is not None else "undefined",
                "Pooled": "yes" if pooled else "no",
                "Note": _note(r),
            }
        )
        numeric.append(
            {k: r.get(k) for k in ("label", "n", "n_events", "estimate", "ci_low", "ci_high", "insufficient")}
            | {"pooled": pooled}
        )
    return pd.DataFrame(display), pd.DataFrame(numeric)


def _note(row: dict) -> str:
    if row["kind"] == "unpooled":
        return f"not pooled: {row['not_pooled']}" if row.get("not_pooled") else "not in the synthesis"
    return "below the minimum cases/events (pooled, flagged)" if row.get("insufficient") else ""
