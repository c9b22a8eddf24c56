"""Bundle JSON -> tables for the pages (pure pandas; no statistics are computed here).

Each builder returns two frames over the same rows: ``display`` (what a reviewer reads: an
estimate with its interval as text, e.g. ``0.832 (0.781 to 0.880)``) and ``data`` (the same numbers as
separate numeric columns ``<metric>``, ``<metric>_ci_low``, ``<metric>_ci_high``: what the CSV
download holds). The helpers that read entries, blocks and gate rows are shared with the report and
live in :mod:`validate.view`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from validate import view
from validate.contract import pooled_block
from validate.formatting import format_beside, format_interval
from validate.groups import group_sort_key
from validate.metrics import registry
from validate.view import (  # noqa: F401 - the bundle-view helpers, re-exported for the pages
    _num,
    fmt,
    gate_verdicts_by_site,
    insufficient_reason,
    interval_text,
    metric_names,
    p_text,
    triplet,
)

VERDICT_COLOURS = {"pass": "#d8f0d8", "warn": "#fff1c2", "fail": "#f8d0d0"}


def label(metric: str) -> str:
    """The metric's display name (validate.metrics.registry)."""
    return registry.label(metric)


def _metric_columns(row: dict, data: dict, block: Mapping, metrics: Iterable[str]) -> None:
    for m in metrics:
        entry = block.get(m)
        est, lo, hi = triplet(entry)
        row[label(m)] = interval_text(entry, metric=m)
        data[m], data[f"{m}_ci_low"], data[f"{m}_ci_high"] = est, lo, hi


def _counts(row: dict, data: dict, block: Mapping) -> None:
    n, events, prev = block.get("n"), block.get("n_events"), triplet(block.get("prevalence"))[0]
    row["n"], row["Events"], row["Prevalence"] = n, events, fmt(prev)
    data["n"], data["n_events"], data["prevalence"] = n, events, prev


# ---- Overview ------------------------------------------------------------------------------------


def key_metrics(run) -> list[str]:
    blocks = [pooled_block(run.metrics) or {}, *(run.metrics.get("sites") or {}).values()]
    present = set(metric_names(blocks))
    task = run.task if run.task in registry.TASKS else "binary"
    # the Overview's columns: the registry's "overview" list, in reading order (those absent are skipped)
    return [m for m in registry.names("overview", task) if m in present]


def _declared_sites(run) -> list[str]:
    """The protocol's sites, in its order (``sites.json`` lists each, scored or not)."""
    declared = [str(s.get("id")) for s in run.protocol.get("sites") or [] if isinstance(s, dict) and s.get("id")]
    return declared or list(((run.cohorts or {}).get("sites") or {}).keys())


def site_table(run) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """One row per site (then the pooled row): n, events, prevalence and the key metrics with their
    intervals, and the worst gate verdict of the site. Also returns, for colouring, a frame of the
    same shape as ``display`` holding the gate verdict behind each cell ('' where no gate applies)."""
    verdicts = gate_verdicts_by_site(run.gates)
    metrics = key_metrics(run)
    rows, data, colours = [], [], []
    items = [(s, b) for s, b in (run.metrics.get("sites") or {}).items()]
    # a declared site without a single scored case has no block: show it, it is why the run failed
    items += [
        (s, {"n": 0, "insufficient": True, "reason": "no scored case (every case failed to read or score)"})
        for s in _declared_sites(run)
        if s not in (run.metrics.get("sites") or {})
    ]
    if pooled_block(run.metrics):  # a site or combined bundle has none (the page says why)
        items.append(("All sites", run.metrics["overall"]))
    for site, block in items:
        row = {"Site": site, "Name": run.site_name(site), "Role": run.site_role(site)}
        d = {"site": site, "name": row["Name"], "role": row["Role"]}
        _counts(row, d, block)
        _metric_columns(row, d, block, metrics)
        v = verdicts.get(site, {})
        row["Gates"] = v.get("*", "")
        row["Note"] = insufficient_reason(block) or ""
        d["gates"], d["insufficient"] = row["Gates"], bool(block.get("insufficient"))
        rows.append(row)
        data.append(d)
        colours.append({col: v.get(m, "") for col, m in [(label(m), m) for m in metrics]} | {"Gates": row["Gates"]})
    display = pd.DataFrame(rows)
    if (display["Name"] == "").all():
        display = display.drop(columns=["Name"])
    if run.task != "binary":  # counts of one event class mean nothing for several classes or labels
        display = display.drop(
            columns=[c for c in ("Events", "Prevalence") if display[c].isna().all() or (display[c] == "—").all()]
        )
    colour = pd.DataFrame(colours, index=display.index).reindex(columns=display.columns).astype(object).fillna("")
    return display, pd.DataFrame(data), colour


def style_by_verdict(display: pd.DataFrame, colour: pd.DataFrame):
    """A Styler painting each cell by the gate verdict behind it (text in the Gates column says it too)."""
    return display.style.apply(
        lambda _: colour.map(lambda v: f"background-color: {VERDICT_COLOURS[v]}" if v in VERDICT_COLOURS else ""),
        axis=None,
    )


def cohort_table(run) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per site from ``sites.json``: cases, patients, prevalence (Wilson interval) or class counts, the
    make-up of each subgroup and the cases excluded from scoring."""
    rows, data = [], []
    for site, e in ((run.cohorts or {}).get("sites") or {}).items():
        row = {
            "Site": site,
            "Name": e.get("name") or "",
            "Role": e.get("role") or "",
            "n": e.get("n"),
            "Patients": e.get("patients"),
        }
        d = {"site": site, "name": row["Name"], "role": row["Role"], "n": e.get("n"), "patients": e.get("patients")}
        if "prevalence" in e:
            row["Events"] = e.get("n_events")
            row["Prevalence"] = interval_text(e.get("prevalence"))
            d["n_events"] = e.get("n_events")
            d["prevalence"], d["prevalence_ci_low"], d["prevalence_ci_high"] = triplet(e.get("prevalence"))
        for key in ("classes", "labels"):
            if isinstance(e.get(key), Mapping):
                row[key.capitalize()] = ", ".join(
                    f"{k} {v.get('n_events') if isinstance(v, Mapping) else v}" for k, v in e[key].items()
                )
                d[key] = row[key.capitalize()]
        for name, counts in (e.get("make_up") or {}).items():
            row[name] = ", ".join(f"{g} {k}" for g, k in counts.items())
            d[f"make_up_{name}"] = row[name]
        excluded = e.get("excluded") or {}
        row["Excluded"] = e.get("n_excluded", sum(excluded.values()))
        row["Why excluded"] = "; ".join(f"{r}: {k}" for r, k in excluded.items())
        d["n_excluded"], d["excluded"] = row["Excluded"], row["Why excluded"]
        rows.append(row)
        data.append(d)
    return pd.DataFrame(rows), pd.DataFrame(data)


def gate_table(gates: Mapping | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, data = [], []
    for r in (gates or {}).get("rows") or []:
        op = ">=" if r.get("direction") == "min" else "<="
        rule = f"{r.get('metric')} {r.get('on')} {op} {r.get('threshold')}"
        if r.get("calibration"):
            rule += f" after {r['calibration']}"
        rows.append(
            {
                "Verdict": r.get("verdict"),
                "Gate": r.get("gate"),
                "Item": r.get("item"),
                "Rule": rule,
                # as gates.json's reason and the report write it (validate.formatting)
                "Value": format_beside(_num(r.get("value")), r.get("threshold"), r.get("metric")),
                "Estimate (CI)": interval_text(
                    {"estimate": r.get("estimate"), "ci_low": r.get("ci_low"), "ci_high": r.get("ci_high")},
                    metric=r.get("metric"),
                ),
                "n": r.get("n"),
                "Reason": r.get("reason"),
            }
        )
        data.append(
            {
                k: r.get(k)
                for k in (
                    "verdict",
                    "gate",
                    "item",
                    "metric",
                    "scope",
                    "on",
                    "direction",
                    "threshold",
                    "value",
                    "estimate",
                    "ci_low",
                    "ci_high",
                    "n",
                    "n_events",
                    "site",
                    "subgroup",
                    "group",
                    "calibration",
                    "reason",
                )
            }
        )
    return pd.DataFrame(rows), pd.DataFrame(data)


# ---- Subgroups -----------------------------------------------------------------------------------


def subgroup_names(run) -> list[str]:
    names = list((run.metrics.get("subgroups") or {}).keys())
    for s in ((run.subgroups or {}).get("sites") or {}).values():
        for a in s.get("subgroups") or {}:
            if a not in names:
                names.append(a)
    return names


def subgroup_table(run, attribute: str, metric: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per site x group of ``attribute``: n, events, the metric with its interval, the gap to the
    site's own value with its interval (from ``subgroups.json``) and whether the group is too small.
    Rows for the groups pooled over sites (``metrics.json``) come first, site ``All sites``."""
    rows, data = [], []

    def add(site: str, group: str, block: Mapping, gap: Any) -> None:
        row = {"Site": site, "Group": group}
        d = {"site": site, "subgroup": attribute, "group": group}
        _counts(row, d, block)
        _metric_columns(row, d, block, [metric])
        g = triplet(gap)
        row["Gap to site"] = interval_text(gap, metric=metric) if gap is not None else ""
        d["gap"], d["gap_ci_low"], d["gap_ci_high"] = g
        reason = insufficient_reason(block)
        row["Insufficient"] = reason or ""
        d["insufficient"] = reason is not None
        rows.append(row)
        data.append(d)

    analysis = run.subgroups or {}
    pooled = ((analysis.get("overall") or {}).get("subgroups") or {}).get(attribute)
    if pooled:
        for group, cell in pooled.items():
            add("All sites", group, cell.get("block") or {}, (cell.get("gap") or {}).get(metric))
    else:
        for group, block in ((run.metrics.get("subgroups") or {}).get(attribute) or {}).items():
            add("All sites", group, block, None)
    for site, entry in (analysis.get("sites") or {}).items():
        for group, cell in ((entry.get("subgroups") or {}).get(attribute) or {}).items():
            add(site, group, cell.get("block") or {}, (cell.get("gap") or {}).get(metric))
    return pd.DataFrame(rows), pd.DataFrame(data)


# ---- Calibration methods -------------------------------------------------------------------------


def calibration_table(calibration: Mapping | None, metric: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Method x site: the metric with its interval on cases not used for fitting."""
    rows, data = [], []
    methods = (calibration or {}).get("methods") or {}
    for method, entry in methods.items():
        for site, block in (entry.get("sites") or {}).items():
            row = {"Method": method, "Site": site}
            d = {"method": method, "site": site}
            _counts(row, d, block)
            _metric_columns(row, d, block, [metric])
            row["Insufficient"] = insufficient_reason(block) or ""
            rows.append(row)
            data.append(d)
    return pd.DataFrame(rows), pd.DataFrame(data)


def local_design_table(local: Mapping, metric: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per external site and method, the local design's summary of ``metric`` over repeats."""
    rows, data = [], []
    for site, entry in (local.get("sites") or {}).items():
        if "methods" not in (entry or {}):
            rows.append(
                {
                    "Site": site,
                    "Method": "—",
                    label(metric): "",
                    "Beats none (log loss)": "",
                    "Note": entry.get("skipped", ""),
                }
            )
            data.append({"site": site, "skipped": entry.get("skipped")})
            continue
        for method, summ in entry["methods"].items():
            v = summ.get(metric) or {}
            text = format_interval(v.get("mean"), v.get("q025"), v.get("q975"), metric)
            beats = summ.get("beats_none_log_loss")
            fb = summ.get("fallbacks") or {}
            rows.append(
                {
                    "Site": site,
                    "Method": method,
                    label(metric): text,
                    "Beats none (log loss)": "" if beats is None else f"{beats:.0%}",
                    "Note": f"{fb.get('count')} fit(s) failed: {fb.get('first_reason')}" if fb else "",
                }
            )
            data.append(
                {
                    "site": site,
                    "method": method,
                    "n_fit": entry.get("n_fit"),
                    "n_eval": entry.get("n_eval"),
                    "repeats": entry.get("repeats"),
                    f"{metric}_mean": v.get("mean"),
                    f"{metric}_sd": v.get("sd"),
                    f"{metric}_q025": v.get("q025"),
                    f"{metric}_q975": v.get("q975"),
                    "beats_none_log_loss": beats,
                }
            )
    return pd.DataFrame(rows), pd.DataFrame(data)


def calibration_params_table(calibration: Mapping | None) -> pd.DataFrame:
    """One row per fitted parameter (method, parameter, value): :func:`validate.view.parameter_rows`,
    the rows the report shows too, not a Python dump."""
    rows = []
    for method, entry in ((calibration or {}).get("methods") or {}).items():
        for name, value in view.parameter_rows((entry or {}).get("params") or {}) or [("—", "none fitted")]:
            rows.append({"Method": method, "Parameter": name, "Value": value})
    return pd.DataFrame(rows)


# ---- Compare runs --------------------------------------------------------------------------------


def compare_table(base, new, metrics: Iterable[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per site present in both runs (and the pooled block) and metric: both estimates with their
    intervals and the difference new - base with its MOVER interval (:func:`dashboard.compare.mover_difference`)."""
    from dashboard.compare import mover_difference

    rows, data = [], []
    sites_a = base.metrics.get("sites") or {}
    sites_b = new.metrics.get("sites") or {}
    items = [(s, sites_a[s], sites_b[s]) for s in sites_b if s in sites_a]
    if pooled_block(base.metrics) and pooled_block(new.metrics):
        items.append(("All sites", base.metrics["overall"], new.metrics["overall"]))
    for site, a, b in items:
        for m in metrics:
            ea, eb = a.get(m), b.get(m)
            if ea is None and eb is None:
                continue
            ta, tb = triplet(ea), triplet(eb)
            delta = mover_difference(tb, ta)
            better = ""
            if delta[0] is not None and delta[1] is not None and delta[2] is not None:
                if delta[1] > 0 or delta[2] < 0:
                    up = delta[1] > 0
                    direction = getattr(registry.get(m), "direction", None)
                    if direction == "higher":
                        better = "better" if up else "worse"
                    elif direction == "lower":
                        better = "worse" if up else "better"
                    else:  # a target value (calibration slope, intercept) or no direction
                        better = "changed"
                else:
                    better = "no clear change"
            rows.append(
                {
                    "Site": site,
                    "Metric": label(m),
                    f"Baseline ({base.name})": interval_text(ea, metric=m),
                    f"New ({new.name})": interval_text(eb, metric=m),
                    "Difference (new − base)": interval_text(
                        dict(zip(("estimate", "ci_low", "ci_high"), delta, strict=True)), metric=m
                    ),
                    "n (base → new)": f"{a.get('n')} → {b.get('n')}",
                    "Reading": better,
                }
            )
            data.append(
                {
                    "site": site,
                    "metric": m,
                    "base_run": base.name,
                    "new_run": new.name,
                    "base": ta[0],
                    "base_ci_low": ta[1],
                    "base_ci_high": ta[2],
                    "new": tb[0],
                    "new_ci_low": tb[1],
                    "new_ci_high": tb[2],
                    "difference": delta[0],
                    "difference_ci_low": delta[1],
                    "difference_ci_high": delta[2],
                    "n_base": a.get("n"),
                    "n_new": b.get("n"),
                    "reading": better,
                }
            )
    return pd.DataFrame(rows), pd.DataFrame(data)


# ---- Paired model comparison (comparison.json, or validate.compare_bundles of two runs) ----------------

METHOD_TEXT = {"delong_paired": "paired DeLong", "bootstrap_paired": "paired bootstrap"}


def comparison_rows(comparison: Mapping) -> list[tuple[str, str, Mapping]]:
    """``(block, site, DELTA_BLOCK)`` in reading order: pooled, each site, each subgroup value pooled
    over sites, then within each site (the site column is ``All sites`` for pooled blocks)."""
    rows: list[tuple[str, str, Mapping]] = [("All sites", "All sites", comparison["overall"])]
    rows += [(site, site, block) for site, block in comparison["sites"].items()]
    for attr, values in (comparison.get("subgroups") or {}).items():  # optional in the contract
        for value in sorted(values, key=group_sort_key):
            cell = values[value]
            rows.append((f"{attr} = {value}", "All sites", cell["overall"]))
            rows += [(f"{attr} = {value}", site, block) for site, block in (cell.get("sites") or {}).items()]
    return rows


def comparison_metric_names(comparison: Mapping) -> list[str]:
    """The metrics of the comparison's blocks (with a Δ or undefined), in first-seen order."""
    seen: dict[str, None] = {}
    for _, _, block in comparison_rows(comparison):
        for m in (*block["metrics"], *(block.get("undefined") or {})):
            seen.setdefault(m, None)
    return list(seen)


def delta_reading(metric: str, delta: float | None, lo: float | None, hi: float | None) -> str:
    """Which way a paired difference goes: ``better``/``worse`` when its interval excludes 0 (by the
    registry's direction of the metric), ``changed`` for a metric with a target value, else ``no clear change``."""
    if delta is None or lo is None or hi is None:
        return ""
    if lo <= 0 <= hi:
        return "no clear change"
    up = lo > 0
    direction = getattr(registry.get(metric), "direction", None)
    if direction == "higher":
        return "better" if up else "worse"
    if direction == "lower":
        return "worse" if up else "better"
    return "changed"


def comparison_table(comparison: Mapping, metrics: Iterable[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per block of a paired comparison and metric: n (events), the new and the baseline model's
    values, Δ = new − baseline with its paired interval, the interval's method and (DeLong) p-value.

    Raises ``KeyError`` on a comparison missing a required key (a renamed key must not read as "no data")."""
    rows, data = [], []
    metrics = list(metrics)
    for block_name, site, block in comparison_rows(comparison):
        for m in metrics:
            entry = block["metrics"].get(m)
            why = (block.get("undefined") or {}).get(m)
            if entry is None and why is None:
                continue
            e = entry or {}
            delta, lo, hi = _num(e.get("delta")), _num(e.get("ci_low")), _num(e.get("ci_high"))
            diff = interval_text({"estimate": delta, "ci_low": lo, "ci_high": hi}, metric=m) if entry else f"— ({why})"
            note = insufficient_reason(block) or ""
            rows.append(
                {
                    "Block": block_name,
                    "Site": site,
                    "Metric": label(m),
                    "n (events)": f"{block['n']} ({block.get('n_events')})",
                    "New": fmt(_num(e.get("new")), metric=m),
                    "Baseline": fmt(_num(e.get("baseline")), metric=m),
                    "Δ new − baseline (CI)": diff,
                    "Method": METHOD_TEXT.get(str(e.get("method")), str(e.get("method") or "")),
                    "p": p_text(_num(e.get("p_value"))),
                    "Reading": delta_reading(m, delta, lo, hi),
                    "Insufficient": note,
                }
            )
            data.append(
                {
                    "block": block_name,
                    "site": site,
                    "metric": m,
                    "n": block["n"],
                    "n_events": block.get("n_events"),
                    "new": _num(e.get("new")),
                    "baseline": _num(e.get("baseline")),
                    "delta": delta,
                    "delta_ci_low": lo,
                    "delta_ci_high": hi,
                    "method": e.get("method"),
                    "p_value": _num(e.get("p_value")),
                    "undefined": why,
                    "insufficient": bool(block.get("insufficient")),
                }
            )
    return pd.DataFrame(rows), pd.DataFrame(data)


def comparison_gate_rows(gates: Mapping | None) -> list[Mapping]:
    """The rows of ``gates.json`` judged on the comparison (``compare: baseline``)."""
    return [r for r in (gates or {}).get("rows") or [] if r.get("compare") == "baseline"]


def comparison_gate_table(gates: Mapping | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The comparison gates' rows: verdict, gate, item, rule, Δ with its interval, n and the verdict
    words (superior / non-inferior / inferior, with the margin) the engine wrote."""
    rows, data = [], []
    for r in comparison_gate_rows(gates):
        op = ">=" if r.get("direction") == "min" else "<="
        rows.append(
            {
                "Verdict": r.get("verdict"),
                "Gate": r.get("gate"),
                "Item": r.get("item"),
                "Rule": f"Δ {r.get('metric')} {r.get('on')} {op} {r.get('threshold')}",
                "Δ (CI)": interval_text(
                    {"estimate": r.get("estimate"), "ci_low": r.get("ci_low"), "ci_high": r.get("ci_high")},
                    metric=r.get("metric"),
                ),
                "n": r.get("n"),
                "Reading": r.get("reason"),
            }
        )
        data.append(
            {
                k: r.get(k)
                for k in (
                    "verdict",
                    "gate",
                    "item",
                    "metric",
                    "scope",
                    "on",
                    "direction",
                    "threshold",
                    "margin",
                    "estimate",
                    "ci_low",
                    "ci_high",
                    "estimate_new",
                    "estimate_baseline",
                    "n",
                    "n_events",
                    "site",
                    "subgroup",
                    "group",
                    "reason",
                )
            }
        )
    return pd.DataFrame(rows), pd.DataFrame(data)


def side_by_side_table(base, new, metrics: Iterable[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each run's own pooled and per-site estimates, one after the other, with no difference: for two
    runs that are not comparable (different protocols), shown only when the reader insists."""
    rows, data = [], []
    for run in (base, new):
        blocks = [*(run.metrics.get("sites") or {}).items()]
        if pooled_block(run.metrics):
            blocks.append(("All sites", run.metrics["overall"]))
        for site, block in blocks:
            row = {"Run": run.name, "Protocol": run.title, "Site": site}
            d = {"run": run.name, "protocol": run.title, "site": site}
            _counts(row, d, block)
            _metric_columns(row, d, block, metrics)
            rows.append(row)
            data.append(d)
    return pd.DataFrame(rows), pd.DataFrame(data)
