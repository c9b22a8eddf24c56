"""The HTML report: one self-contained file a reviewer can open on a closed hospital network.

plotly.js is embedded once, inline (``plotly.offline.get_plotlyjs()``); figures come from
:mod:`validate.charts` and the data from the bundle files (nothing is recomputed from predictions).
Sections follow the order a reviewer reads: verdict; protocol and provenance; cohorts (and, when the
bundle has it, sample size and precision); discrimination; calibration (and clinical utility: net
benefit, when the protocol declares ``decision``); subgroups; calibration methods; shift and drift;
limitations. Every number is shown with
its n and its interval.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from validate import charts, view
from validate.charts import entry_text, fmt, metric_label
from validate.contract import Block, GateRowFile, MetricsFile, pooled_absent_reason, pooled_block
from validate.formatting import format_count, p_clause
from validate.groups import group_sort_key
from validate.metrics import registry
from validate.report import segmentation, utility
from validate.report.checklists import checklist_section
from validate.report.print_layout import PRINT_CSS


def _shown(table: str, task) -> tuple[str, ...]:
    """The columns of one of the report's metric tables: the registry's ``report_<table>`` list."""
    return registry.names(f"report_{table}", task if task in registry.TASKS else "binary")


CSS = """
:root { --ink:#1d2330; --muted:#5b6475; --line:#d9dde5; --pass:#1E8449; --warn:#B9770E; --fail:#C0392B;
        --bg:#f6f7f9; }
* { box-sizing: border-box; }
body { font-family: Inter, "Segoe UI", Helvetica, Arial, sans-serif; color: var(--ink); margin: 0;
       background: var(--bg);
       font-size: 14px; line-height: 1.45; }
header { background: #1d2330; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px 0; font-size: 22px; }
header p { margin: 0; color: #c9cfdb; }
nav { background: #fff; border-bottom: 1px solid var(--line); padding: 8px 32px; position: sticky; top: 0;
      z-index: 10; }
nav a { margin-right: 14px; color: #2c4f8a; text-decoration: none; font-size: 13px; }
main { max-width: 1280px; margin: 0 auto; padding: 8px 32px 48px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 16px 22px; margin: 18px 0; }
h2 { font-size: 19px; margin: 4px 0 10px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
p.note, .muted { color: var(--muted); font-size: 13px; }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f0f2f6; font-weight: 600; }
td.num { font-variant-numeric: tabular-nums; white-space: nowrap; }
.verdict { font-size: 20px; font-weight: 700; padding: 12px 16px; border-radius: 6px; color: #fff;
           display: inline-block; }
.v-pass { background: var(--pass); } .v-warn { background: var(--warn); } .v-fail { background: var(--fail); }
.tag { font-weight: 600; padding: 1px 6px; border-radius: 4px; color: #fff; font-size: 12px; }
.tag.pass { background: var(--pass); } .tag.warn { background: var(--warn); } .tag.fail { background: var(--fail); }
.small { font-size: 12px; }
.insufficient { color: #7a7a7a; font-style: italic; }
.grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 10px; }
.figure { margin: 6px 0 14px; min-height: 200px; }
.scroll { overflow-x: auto; max-width: 100%; }
details pre { background: #f4f5f8; padding: 10px; overflow: auto; font-size: 12px; max-height: 420px; }
code { background: #f0f2f6; padding: 0 3px; border-radius: 3px; }
"""


def esc(x: Any) -> str:
    return html.escape("" if x is None else str(x))


class _Figures:
    """Collects figures as HTML divs (plotly.js itself is embedded once per file)."""

    def __init__(self) -> None:
        self.count = 0
        self.titles: list[str] = []

    def html(self, fig, caption: str | None = None) -> str:
        self.count += 1
        div_id = f"figure-{self.count}"
        body = fig.to_html(
            full_html=False, include_plotlyjs=False, div_id=div_id, config={"displaylogo": False, "responsive": True}
        )
        self.titles.append(div_id)
        cap = f'<p class="note">{esc(caption)}</p>' if caption else ""
        return f'<div class="figure validate-figure" data-figure="{div_id}">{body}{cap}</div>'


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, raw: bool = False, cls: str = "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for r in rows:
        cells = []
        for c in r:
            if isinstance(c, tuple):  # (html, css class)
                cells.append(f'<td class="{c[1]}">{c[0]}</td>')
            else:
                cells.append(f"<td>{c if raw else esc(c)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
        "</table></div>"
    )


def _num(text: str) -> tuple:
    return (esc(text), "num")


def _tag(verdict: str) -> tuple:
    return (f'<span class="tag {verdict}">{verdict.upper()}</span>', "")


def _block_cell(block: Block | None, metric: str) -> tuple:
    if block is None:
        return ("—", "num")
    e = block.metric(metric)
    if e is None:
        why = block.undefined.get(metric)
        return (f'<span class="insufficient" title="{esc(why or "undefined")}">undefined</span>', "num")
    if isinstance(e, Mapping) and "statistic" in e and "estimate" not in e:
        return (esc(f"{fmt(e.get('statistic'))} ({p_clause(e.get('p_value'))})"), "num")
    note = e.get("note") if isinstance(e, Mapping) else None
    if note:
        # an estimate outside its interval is explained where it is shown, not only in the bundle
        return (f'{esc(entry_text(e, metric=metric))} <span class="insufficient" title="{esc(note)}">†</span>', "num")
    return (esc(entry_text(e, metric=metric)), "num")


def _n_cell(block: Block | None) -> tuple:
    if block is None:
        return ("—", "num")
    text = format_count(block.n)
    if block.n_events is not None:
        text += f" ({format_count(block.n_events)})"
    if block.insufficient:
        return (f'{esc(text)} <span class="insufficient" title="{esc(block.reason)}">insufficient</span>', "num")
    return (esc(text), "num")


# ---- sections -----------------------------------------------------------------------------------


def _verdict(bundle, figs: _Figures) -> str:
    gates = bundle.typed.gates
    v = gates.verdict if gates else "pass"
    rows = gates.rows if gates else []
    ci = bundle.typed.metrics.ci_level
    out = [f'<div class="verdict v-{v}">Release gates: {v.upper()}</div>']
    if not rows:
        out.append("<p>No gates are declared in the protocol: the verdict is PASS by default.</p>")
    else:
        c = gates.counts
        out.append(
            f"<p>{len(rows)} check(s) from {len(gates.gates)} gate(s): "
            f"{c.pass_} pass, {c.warn} warn, {c.fail} fail. Failing checks first.</p>"
        )
        rank = {"fail": 0, "warn": 1, "pass": 2}
        ordered = sorted(rows, key=lambda r: rank[r.verdict])
        out.append(
            _table(
                ["", "Gate", "Item", "Rule", "Value", f"Estimate ({ci:.0%} CI)", "n (events)", "Reason"],
                [
                    [
                        _tag(r.verdict),
                        esc(r.gate),
                        esc(r.item),
                        esc(_rule(r)),
                        _num(fmt(r.value)),
                        _num(entry_text({"estimate": r.estimate, "ci_low": r.ci_low, "ci_high": r.ci_high})),
                        _num(f"{'—' if r.n is None else r.n}" + (f" ({r.n_events})" if r.n_events is not None else "")),
                        esc(r.reason),
                    ]
                    for r in ordered
                ],
                raw=True,
            )
        )
    return _section("verdict", "1. Verdict", "".join(out))


def _rule(r: GateRowFile) -> str:
    op = ">=" if r.direction == "min" else "<="
    what = f"|gap| {r.metric}" if r.scope.startswith("subgroup_gap") else r.metric
    if r.compare == "baseline":
        what = f"Δ {r.metric} (new − baseline)"
    after = f" after {r.calibration}" if r.calibration else ""
    return f"{what} {r.on}{after} {op} {fmt(r.threshold)}"


# ---- model comparison (comparison.json: a run with a baseline model) -------------------------------

_PAIRED_METHOD = {"delong_paired": "paired DeLong", "bootstrap_paired": "paired bootstrap"}


def _comparison(bundle, figs: _Figures) -> str:
    """Δ = new − baseline per block and metric with its paired interval and n, the comparison gates'
    verdict words and a forest per gate metric; empty (no section) when the run had no baseline."""
    cmp = bundle.model("comparison.json")
    if cmp is None:
        return ""
    gates = bundle.typed.gates
    rows = [r for r in gates.rows if r.compare == "baseline"] if gates else []
    bounds: dict[str, float] = {}
    for g in gates.gates if gates else []:
        if g.compare == "baseline":
            bounds.setdefault(g.metric, g.threshold)
    out = [_comparison_intro(cmp)]
    if rows:
        out.append(_comparison_gates(rows))
    keys = _comparison_metrics(cmp, list(bounds))
    blocks = _delta_blocks(cmp)
    out.append(
        _table(
            ["Block", "n (events)"]
            + [f"Δ {metric_label(m)} ({cmp.level:.0%} CI, {_delta_method(cmp, m)})" for m in keys],
            [[esc(label), _n_cell(b)] + [_delta_cell(b, m) for m in keys] for label, b, inner in blocks if not inner],
            raw=True,
        )
    )
    within = [[esc(label), _n_cell(b)] + [_delta_cell(b, m) for m in keys] for label, b, inner in blocks if inner]
    if within:
        out.append(
            "<details><summary>Subgroups within each site</summary>"
            + _table(["Block", "n (events)"] + [f"Δ {metric_label(m)}" for m in keys], within, raw=True)
            + "</details>"
        )
    data = bundle.comparison  # the figures of validate.charts read the JSON itself
    for m in list(bounds) or [k for k in ("auroc", "ece") if k in keys]:
        fig = charts.comparison_forest(
            charts.comparison_blocks(data),
            m,
            bounds.get(m),
            ci_level=cmp.level,
            new_label=cmp.new.label,
            baseline_label=cmp.baseline.label,
        )
        margin = f" Dashed: the gate's margin (Δ = {fmt(bounds[m])})." if m in bounds else ""
        out.append(
            figs.html(fig, f"Δ {metric_label(m)} per block with its paired interval; solid: no difference." + margin)
        )
    return _section("comparison", "1.1 Model comparison with the baseline", "".join(out))


def _comparison_intro(cmp) -> str:
    new, base, matched = cmp.new, cmp.baseline, cmp.matched
    left = matched.n_new_only + matched.n_baseline_only
    return (
        f"<p><b>New</b>: {esc(new.label)} ({esc(new.source)}, sha256 <code>{esc((new.sha256 or '')[:12])}</code>) "
        f"against the <b>baseline</b>: {esc(base.label)} ({esc(base.source)}, sha256 "
        f"<code>{esc((base.sha256 or '')[:12])}</code>). Both models scored the same {matched.n} cases, matched by "
        f"site and case id"
        + (
            f"; {left} case(s) scored by one model only are left out "
            f"({matched.n_new_only} new only, {matched.n_baseline_only} baseline only)"
            if left
            else ""
        )
        + ".</p>"
        f'<p class="note">Δ = new − baseline. Intervals at {cmp.level:.0%}: paired DeLong for AUROC (as pROC\'s '
        f"roc.test(paired=TRUE)), otherwise the same patient-clustered, site-stratified bootstrap replicates "
        f"({cmp.n_boot}, seed {cmp.seed}) applied to both models (percentile interval of the Δ replicates). "
        "Under each Δ: the new and the baseline model's values.</p>"
    )


def _comparison_gates(rows) -> str:
    body = [
        [
            _tag(r.verdict),
            esc(r.gate),
            esc(r.item),
            esc(_rule(r)),
            _num(entry_text({"estimate": r.estimate, "ci_low": r.ci_low, "ci_high": r.ci_high})),
            _num(f"{'—' if r.n is None else r.n}" + (f" ({r.n_events})" if r.n_events is not None else "")),
            esc(r.reason),
        ]
        for r in sorted(rows, key=lambda r: {"fail": 0, "warn": 1, "pass": 2}[r.verdict])
    ]
    return "<h3>Comparison gates</h3>" + _table(
        ["", "Gate", "Item", "Rule", "Δ (CI)", "n (events)", "Verdict"], body, raw=True
    )


def _comparison_metrics(cmp, gate_metrics: list[str]) -> list[str]:
    """The columns: the gate metrics, then the report's discrimination and calibration metrics, that the
    comparison holds."""
    present: set[str] = set()
    for _, b, _ in _delta_blocks(cmp):
        present |= set(b.metrics) | set(b.undefined)
    wanted = [*gate_metrics, *_shown("discrimination", "binary"), *_shown("calibration", "binary")]
    return [m for m in dict.fromkeys(wanted) if m in present]


def _delta_blocks(cmp) -> list[tuple[str, Any, bool]]:
    """(label, DELTA_BLOCK, within a site) in reading order: pooled, sites, subgroups (pooled, then per site)."""
    out = [(charts.POOLED_LABEL, cmp.overall, False)] + [(s, b, False) for s, b in cmp.sites.items()]
    for attr, values in cmp.subgroups.items():
        for value in sorted(values, key=group_sort_key):
            cell = values[value]
            out.append((f"{attr} = {value} (all sites)", cell.overall, False))
            out += [(f"{attr} = {value} at {s}", b, True) for s, b in cell.sites.items()]
    return out


def _delta_method(cmp, metric: str) -> str:
    for _, b, _ in _delta_blocks(cmp):
        e = b.metrics.get(metric)
        if e is not None:
            return _PAIRED_METHOD.get(e.method, e.method)
    return "undefined"


def _delta_cell(block, metric: str) -> tuple:
    e = block.metrics.get(metric)
    if e is None or e.delta is None:
        why = block.undefined.get(metric) or "undefined"
        return (f'<span class="insufficient" title="{esc(why)}">undefined</span>', "num")
    p = f", {p_clause(e.p_value)}" if e.p_value is not None else ""
    return (
        f"{esc(entry_text({'estimate': e.delta, 'ci_low': e.ci_low, 'ci_high': e.ci_high}, metric=metric))}"
        f'<br><span class="small muted">new {esc(fmt(e.new, metric=metric))} · baseline '
        f"{esc(fmt(e.baseline, metric=metric))}{esc(p)}</span>",
        "num",
    )


def _bundle_kind_text(prov) -> str:
    """What kind of bundle this is (central, one site's, or site bundles combined), in words."""
    kind = getattr(prov, "bundle_kind", None) or "central"
    if kind == "site":
        return f"site bundle of {prov.site}: this site's results only, no case rows (validate run --site)"
    if kind == "combined":
        sources = ", ".join(str(s.get("site")) for s in prov.combined_from or [])
        return (
            f"combined from site bundles ({sources}): per-site results and the synthesis across sites; "
            "pooled patient-level blocks are not computed (each site's cases stayed at the site)"
        )
    return "central: every site's cases in one run"


def _provenance(bundle, figs: _Figures) -> str:
    prov = bundle.typed.provenance
    proto, ck, src = prov.protocol, prov.checkpoint, prov.predictions_source
    metrics = bundle.typed.metrics
    rows = [
        ("Bundle", _bundle_kind_text(prov)),
        ("Protocol", f"{proto.name} v{proto.version} ({proto.path})"),
        ("Protocol sha256", proto.sha256),
        ("Model checkpoint", f"{ck.path} (format {ck.format})" if ck else "—"),
        ("Checkpoint sha256", ck.sha256 if ck else "—"),
    ]
    if src:
        rows.append(("Predictions file", f"{src.path} (sha256 {src.sha256})"))
    rows += [
        ("Device", prov.device),
        ("Started / finished", f"{prov.started_at} / {prov.finished_at}"),
        ("Seeds", ", ".join(f"{k} {v}" for k, v in prov.seeds.items())),
        ("Bootstrap", f"{metrics.n_bootstrap} replicates, {metrics.ci_level:.0%} intervals"),
        ("Case identifiers", prov.case_ids),
        ("Command", " ".join(prov.command)),
    ]
    sw = prov.software
    out = [
        _table(
            ["Item", "Value"],
            [[esc(k), f"<code>{esc(v)}</code>" if "sha256" in k else esc(v)] for k, v in rows],
            raw=True,
        )
    ]
    out.append("<h3>Software</h3>")
    out.append(_table(["Package", "Version"], [[esc(k), esc(v or "not installed")] for k, v in sw.items()], raw=True))
    try:
        text = bundle.protocol_text
    except OSError:
        text = ""
    if text:
        out.append(f"<details><summary>The protocol that ran (protocol.yaml)</summary><pre>{esc(text)}</pre></details>")
    files = prov.files
    if files:
        out.append(
            "<details><summary>sha256 of the bundle's files</summary>"
            + _table(["File", "sha256"], [[esc(k), f"<code>{esc(v)}</code>"] for k, v in files.items()], raw=True)
            + "</details>"
        )
    return _section("provenance", "2. Protocol and provenance", "".join(out))


def _site_order(bundle) -> list[str]:
    cohorts = bundle.typed.sites
    return view.site_order(list(cohorts.sites) if cohorts else [], list(bundle.typed.metrics.sites))


def _cohorts(bundle, figs: _Figures) -> str:
    cohorts = bundle.typed.sites
    sites = cohorts.sites if cohorts else {}
    blocks = bundle.typed.metrics.sites
    ci = cohorts.ci_level if cohorts else 0.95
    order = _site_order(bundle)
    rows = []
    for s in order:
        info, blk = sites.get(s), blocks.get(s)
        prev = info.prevalence if info else None
        prev_text = entry_text(prev.model_dump()) if prev else fmt(blk.prevalence if blk else None)
        excl_text = "; ".join(f"{k}: {v}" for k, v in (info.excluded if info else {}).items()) or "none"
        rows.append(
            [
                esc(s),
                esc(info.name if info else s),
                esc(info.role if info else ""),
                _num(str(blk.n if blk else info.n if info else 0)),
                _num(str(info.patients if info and info.patients is not None else "—")),
                _num(str(blk.n_events if blk and blk.n_events is not None else "—")),
                _num(prev_text),
                _num(str(info.n_excluded if info else 0)),
                esc(excl_text),
            ]
        )
    out = [
        _table(
            [
                "Site",
                "Name",
                "Role",
                "n",
                "Patients",
                "Events",
                f"Prevalence ({ci:.0%} CI, Wilson)",
                "Excluded",
                "Why excluded (from failures.csv)",
            ],
            rows,
            raw=True,
        )
    ]
    attrs = []
    for info in sites.values():
        for a in info.make_up:
            if a not in attrs:
                attrs.append(a)
    for a in attrs:
        groups = []
        for info in sites.values():
            for g in info.make_up.get(a, {}):
                if g not in groups:
                    groups.append(g)
        from validate.groups import group_sort_key

        groups.sort(key=group_sort_key)
        trows = []
        for s in order:
            mk = sites[s].make_up.get(a, {}) if s in sites else {}
            total = sum(mk.values()) or 1
            trows.append([esc(s)] + [_num(f"{mk.get(g, 0)} ({mk.get(g, 0) / total:.0%})") for g in groups])
        out.append(f"<h3>Make-up by {esc(a)}</h3>")
        out.append(_table(["Site"] + groups, trows, raw=True))
    return _section("cohorts", "3. Cohorts per site", "".join(out))


def _pooled_row(typed: MetricsFile, keys: Sequence[str]) -> list[list[Any]]:
    """The table row of the pooled block; in a site or combined bundle, which has none, a row saying why."""
    block = pooled_block(typed)
    if block is None:
        why = pooled_absent_reason(typed) or "no pooled block"
        return [[esc("all sites (pooled)"), esc("not computed")] + [esc(why)] + [""] * (len(keys) - 1)]
    return [[esc("all sites (pooled)"), _n_cell(block)] + [_block_cell(block, m) for m in keys]]


def _discrimination(bundle, figs: _Figures) -> str:
    typed = bundle.typed.metrics
    metrics = bundle.metrics  # the figures of validate.charts read the JSON itself
    curves = bundle.curves or {}
    order = _site_order(bundle)
    colors = charts.site_colors(order)
    blocks = typed.sites
    ci = typed.ci_level
    out = []
    if typed.task == "binary":
        keys = _shown("discrimination", "binary")
        rows = [[esc(s), _n_cell(blocks.get(s))] + [_block_cell(blocks.get(s), m) for m in keys] for s in order]
        rows += _pooled_row(typed, keys)
        out.append(_table(["Site", "n (events)"] + [f"{metric_label(m)} ({ci:.0%} CI)" for m in keys], rows, raw=True))
        if curves.get("sites"):
            out.append(
                figs.html(
                    charts.roc_figure(
                        curves["sites"], metrics, sites=order, colors=colors, ci_level=ci, title="ROC curve per site"
                    ),
                    "Shaded: pointwise bootstrap band of each curve. Circles: the protocol's threshold; "
                    "diamonds: the threshold set for the target sensitivity at the development site and "
                    "carried unchanged to every other site (bars: intervals).",
                )
            )
            out.append(
                figs.html(
                    charts.pr_figure(
                        curves["sites"], metrics, sites=order, colors=colors, title="Precision-recall curve per site"
                    ),
                    "Dotted lines: each site's prevalence, the precision of a random ranking.",
                )
            )
        out.append(
            figs.html(
                charts.operating_points_figure(metrics, sites=order, title="Operating points as the threshold travels")
            )
        )
        out.append(_operating_table(typed, order))
    else:
        keys = _shown("discrimination", typed.task)
        rows = [[esc(s), _n_cell(blocks.get(s))] + [_block_cell(blocks.get(s), m) for m in keys] for s in order]
        out.append(_table(["Site", "n"] + [metric_label(k) for k in keys], rows, raw=True))
        for s in order:
            per = ((curves.get("sites") or {}).get(s) or {}).get("classes") or {}
            if per:
                out.append(figs.html(charts.roc_figure(per, None, title=f"One-vs-rest ROC curves at {s}")))
    return _section("discrimination", "4. Discrimination", "".join(out))


def _operating_table(metrics: MetricsFile, order: Sequence[str]) -> str:
    rows = []
    for s in order:
        b = metrics.sites.get(s)
        if b is None:
            continue
        for op in b.operating_points:
            rows.append(
                [esc(s), _num(f"{fmt(op.threshold)} (protocol)")]
                + [_num(entry_text(op.extra(m))) for m in ("sensitivity", "specificity", "ppv", "npv")]
                + [_n_cell(b)]
            )
        t = b.target_sensitivity
        if isinstance(t, Mapping) and t.get("threshold") is not None:
            how = "carried" if t.get("carried") else "set here"
            rows.append(
                [esc(s), _num(f"{fmt(t.get('threshold'))} ({how}, target {fmt(t.get('target'), 2)})")]
                + [_num(entry_text(t.get(m))) for m in ("sensitivity", "specificity", "ppv", "npv")]
                + [_n_cell(b)]
            )
    if not rows:
        return ""
    return _table(["Site", "Threshold", "Sensitivity", "Specificity", "PPV", "NPV", "n (events)"], rows, raw=True)


def _calibration(bundle, figs: _Figures) -> str:
    typed = bundle.typed.metrics
    metrics = bundle.metrics  # the figures of validate.charts read the JSON itself
    curves = bundle.curves or {}
    order = _site_order(bundle)
    colors = charts.site_colors(order)
    blocks = typed.sites
    ci = typed.ci_level
    out = []
    keys = _shown("calibration", typed.task)
    rows = [
        [esc(s), _n_cell(blocks.get(s))]
        + [_block_cell(blocks.get(s), m) for m in keys]
        + [_block_cell(blocks.get(s), "hosmer_lemeshow")]
        for s in order
    ]
    rows += _pooled_row(typed, [*keys, "hosmer_lemeshow"])
    out.append(
        _table(["Site", "n (events)"] + [metric_label(k) for k in keys] + ["Hosmer-Lemeshow χ² (p)"], rows, raw=True)
    )
    out.append(
        f'<p class="note">Intervals at {ci:.0%}: Wald for intercept and slope; bootstrap percentile for Eavg, '
        "E50, E90, Emax and ICI. ECE and adaptive ECE: a bootstrap bound on the estimate's error (the "
        "percentile interval of a binned error sits above its own estimate and misses a true error of 0, "
        "because |gap| is biased upward and more so in resamples): ECE ± c, c the "
        f"{ci:.0%} quantile of the bootstrap L1 error of the per-bin mean gaps, which by the triangle "
        "inequality covers the true ECE at least at that level and exactly for a perfectly calibrated model; "
        "the debiased ECE (Kumar, Liang &amp; Ma 2019) is in metrics.json beside it. MCE: the per-bin Wilson "
        "intervals, "
        "Bonferroni-simultaneous, projected to the largest gap. Their upper ends are never below the percentile "
        "interval's (no upper-bound gate is judged more leniently). An estimate outside its interval is marked † "
        "with a note saying why (hover; in metrics.json its entry's note).</p>"
    )
    if typed.task == "binary":
        out.append(
            figs.html(
                charts.calibration_forest(
                    metrics, sites=order, colors=colors, title="Calibration slope and intercept per site"
                ),
                "Slope below 1: predictions too extreme at that site; intercept below 0: risks overestimated.",
            )
        )
    grid = []
    for s in order:
        c = (curves.get("sites") or {}).get(s)
        if not c:
            continue
        if typed.task == "multiclass":
            c = c.get("top_label") or {}
        if not c.get("reliability"):
            continue
        # the recommended method drawn over the uncalibrated curve (all methods: the dashboard)
        cal = bundle.typed.calibration
        rec = cal.recommended if cal is not None and cal.computed else None
        after = ((curves.get("calibrated") or {}).get(rec) or {}).get("sites", {}).get(s) if rec else None
        grid.append(
            figs.html(
                charts.reliability_figure(
                    c,
                    title=f"Reliability at {s} ({charts.n_text(c.get('n'), c.get('n_events'))})",
                    calibrated={f"after {rec} (recommended)": after} if after else None,
                    color=colors.get(s, charts.PALETTE[0]),
                    ci_level=ci,
                )
            )
        )
    if grid:
        out.append(
            '<h3>Reliability diagrams</h3><p class="note">Each point is a bin of predictions (equal width, as '
            "ECE); the band around them is the Wilson interval of the observed rate (a binomial proportion, "
            "often of few cases near 0 or 1, where Wilson keeps its level and Wald does not); the dotted line is "
            "the lowess smooth with its bootstrap band, pointwise, not simultaneous (the loess smooth and its "
            "band can be shown from the legend); below, the predictions per bin by outcome.</p>"
        )
        out.append('<div class="grid2">' + "".join(grid) + "</div>")
    return _section("calibration", "5. Calibration", "".join(out))


def _site_roles(bundle) -> dict[str, str]:
    """Each site's protocol role: from sites.json, else from the bundle's protocol copy."""
    cohorts = bundle.typed.sites
    if cohorts:
        return {s: str(info.role or "") for s, info in cohorts.sites.items()}
    try:
        import yaml

        sites = (yaml.safe_load(bundle.protocol_text) or {}).get("sites") or []
    except Exception:  # the roles only order the rows; a protocol copy that does not parse is shown raw above
        return {}
    return {str(s.get("id")): str(s.get("role") or "") for s in sites if isinstance(s, Mapping)}


def _synthesis(bundle, figs: _Figures) -> str:
    """Across hospitals: the random-effects synthesis of metrics.json (a table and a forest plot per
    pooled metric); nothing without a synthesis."""
    metrics = bundle.metrics  # the figures of validate.charts read the JSON itself
    pooled = charts.synthesis_metrics(metrics)
    if not pooled:
        return ""
    synthesis = metrics["synthesis"]
    level = float(synthesis.get("ci_level") or 0.95)
    roles = _site_roles(bundle)
    sites = ", ".join(str(s) for s in synthesis.get("sites") or []) or "none"
    out = [
        f"<p>What will the next hospital see? Each site's result, pooled by a random-effects meta-analysis "
        f"({esc(synthesis.get('method', 'REML'))}; {esc(_interval_name(synthesis))} {level:.0%} CI) over "
        f"{esc(synthesis.get('role_rule') or 'the chosen sites')}: {esc(sites)}. The pooled estimate is the "
        f"average site; the {level:.0%} prediction interval is where the next hospital's value is expected "
        f"to lie, {level:.0%} (Higgins et al. 2009; it needs at least 3 sites). τ² is the between-site "
        "variance on the pooling scale, I² the share of the variation not due to chance. Sites below the "
        "protocol's minimum cases or events are pooled but flagged.</p>",
        _synthesis_table(synthesis, pooled, level),
    ]
    for m in pooled:
        fig = charts.synthesis_forest_figure(metrics, m, roles=roles)
        out.append(figs.html(fig, charts.synthesis_caption(synthesis, m)))
    return _section("synthesis", "5.2 Across hospitals", "".join(out))


def _interval_name(synthesis: Mapping) -> str:
    return "Hartung–Knapp–Sidik–Jonkman" if synthesis.get("interval", "hksj") == "hksj" else "normal (z)"


def _synthesis_table(synthesis: Mapping, pooled: Sequence[str], level: float) -> str:
    rows = []
    for m in pooled:
        e = synthesis["metrics"][m]
        i2 = e.get("i2")
        inputs = [
            f"{i.get('site')} n={i.get('n')} ({i.get('n_events')})" + (" insufficient" if i.get("insufficient") else "")
            for i in e.get("inputs") or []
        ]
        rows.append(
            [
                esc(charts.synthesis_metric_label(m)),
                _num(str(e.get("k", "—"))),
                _num(entry_text(e)),
                _num(charts.prediction_interval_text(e)),
                _num(f"{charts.tau2_text(e.get('tau2'))} ({e.get('scale') or 'identity'})"),
                _num("—" if i2 is None else f"{float(i2):.0%}"),
                _num(f"{fmt(e.get('q'), 2)} ({p_clause(e.get('q_p_value'))})"),
                esc("; ".join(inputs)),
            ]
        )
    return _table(
        [
            "Metric",
            "k",
            f"Pooled ({level:.0%} CI)",
            f"{level:.0%} prediction interval",
            "τ² (scale)",
            "I²",
            "Q (p)",
            "Sites pooled: n (events)",
        ],
        rows,
        raw=True,
    )


def _subgroups(bundle, figs: _Figures) -> str:
    typed = bundle.typed.subgroups
    analysis = bundle.subgroups  # the figures of validate.charts read the JSON itself
    metrics = bundle.metrics
    if typed is None or not typed.attributes:
        return _section("subgroups", "6. Subgroups", "<p>No subgroups are declared in the protocol.</p>")
    order = _site_order(bundle)
    ci = typed.ci_level
    out = [
        f'<p class="note">Blocks per subgroup, pooled over sites and per site; gaps are group − site value with '
        f"a paired bootstrap {ci:.0%} interval. Groups with too little data are shown grey and marked "
        "insufficient.</p>"
    ]
    task = typed.task or bundle.typed.metrics.task
    keys = _shown("subgroups", task)
    for attr in typed.attributes:
        out.append(f"<h3>{esc(attr)}</h3>")
        pooled = typed.overall.subgroups.get(attr, {}) if typed.overall else {}
        groups = typed.groups.get(attr) or list(pooled)
        rows = []
        for g in groups:
            cell = pooled.get(g)
            b = cell.block if cell else None
            gap = cell.gap.get("auroc") if cell and task == "binary" else None
            rows.append(
                [esc(g), _n_cell(b)]
                + [_block_cell(b, m) for m in keys]
                + ([_num(entry_text(gap))] if task == "binary" else [])
            )
        out.append(
            _table(
                ["Group (all sites)", "n (events)"]
                + [metric_label(m) for m in keys]
                + (["AUROC gap to all sites"] if task == "binary" else []),
                rows,
                raw=True,
            )
        )
        main = "auroc" if task == "binary" else "ece"
        wide = len(groups) > 4  # many groups (intersections): full width, one figure per row
        out.append('<div class="grid2">' if not wide else "<div>")
        out.append(
            figs.html(
                charts.subgroup_forest(analysis, attr, main, site="overall", metrics=metrics),
                "Squares: estimate with interval; hollow grey: too little data; dashed: the value over all cases."
                if attr == typed.attributes[0]
                else None,
            )
        )
        out.append(figs.html(charts.subgroup_heatmap(analysis, attr, main, sites=order)))
        out.append("</div>")
        worst_rows = []
        for level in ["overall"] + order:
            data = typed.overall if level == "overall" else typed.sites.get(level)
            w = data.worst.get(attr, {}) if data else {}
            for m in keys:
                r = w.get(m)
                if r is None:
                    continue
                worst_rows.append(
                    [
                        esc("all sites" if level == "overall" else level),
                        esc(metric_label(m)),
                        esc(r.group or "none judgeable"),
                        _num(entry_text({"estimate": r.estimate, "ci_low": r.ci_low, "ci_high": r.ci_high})),
                        _num(entry_text(r.gap) if r.gap else "—"),
                        _num(f"{'—' if r.n is None else r.n} ({'—' if r.n_events is None else r.n_events})"),
                        esc(", ".join(r.excluded_insufficient) or "none"),
                    ]
                )
        if worst_rows:
            out.append(
                "<details><summary>Worst group per metric, per site</summary>"
                + _table(
                    [
                        "Site",
                        "Metric",
                        "Worst group",
                        "Estimate (CI)",
                        "Gap to site (CI)",
                        "n (events)",
                        "Too small to judge",
                    ],
                    worst_rows,
                    raw=True,
                )
                + "</details>"
            )
    return _section("subgroups", "6. Subgroups", "".join(out))


FAIRNESS_SUMMARY = (
    ("equalized_odds_difference", "Equalised-odds difference"),
    ("equalized_odds_ratio", "Equalised-odds ratio"),
    ("demographic_parity_difference", "Demographic-parity difference"),
    ("demographic_parity_ratio", "Demographic-parity ratio"),
)


def _fairness_entry(e: Mapping | None, why: str | None = None) -> tuple:
    if not e or e.get("estimate") is None:
        return (f'<span class="insufficient" title="{esc(why or "undefined")}">undefined</span>', "num")
    return _num(entry_text(e))


def _fairness_summary_rows(fair: Mapping, order: Sequence[str], attr: str) -> list[list]:
    """One row per level (all sites, each site) and operating threshold: the summary measures."""
    rows = []
    for level in ["overall", *order]:
        att = (charts.fairness_level(fair, level).get("attributes") or {}).get(attr)
        if not att:
            continue
        small = ", ".join(att.get("excluded_insufficient") or []) or "none"
        cal = att.get("calibration") or {}
        for t in att.get("thresholds") or []:
            why = t.get("undefined") or {}
            rows.append(
                [
                    esc("all sites" if level == "overall" else level),
                    esc(charts.fairness_threshold_label(t)),
                    *[_fairness_entry(t["summary"].get(m), why.get(m)) for m, _ in FAIRNESS_SUMMARY],
                    _fairness_entry(
                        (cal.get("summary") or {}).get("calibration_slope_range"),
                        (cal.get("undefined") or {}).get("calibration_slope_range"),
                    ),
                    esc(small),
                ]
            )
    return rows


def _fairness_group_rows(fair: Mapping, attr: str) -> list[list]:
    """Pooled over sites, at each threshold: each group's rates and TPR/FPR gaps to the reference."""
    att = (charts.fairness_level(fair, "overall").get("attributes") or {}).get(attr) or {}
    info, rows = att.get("groups") or {}, []
    for t in att.get("thresholds") or []:
        for g in (fair.get("groups") or {}).get(attr) or list(info):
            if g not in info:
                continue
            cells = (t.get("groups") or {}).get(g) or {}
            n = f"{info[g].get('n')} ({info[g].get('n_events')})"
            if info[g].get("insufficient"):
                n += f' <span class="insufficient" title="{esc(info[g].get("reason"))}">insufficient</span>'
            label = esc(g) + (" (reference)" if g == att.get("reference") else "")
            rows.append(
                [esc(charts.fairness_threshold_label(t)), label, (n, "num")]
                + [_fairness_entry(cells.get(r)) for r in ("tpr", "fpr", "ppv", "selection_rate")]
                + [_fairness_entry(cells.get(r)) for r in ("tpr_gap", "fpr_gap")]
            )
    return rows


def _fairness_decision_rows(fair: Mapping, attr: str) -> list[list]:
    """Pooled over sites, at each decision threshold: each group's net benefit, treat all (at the group's
    own prevalence) and NB − treat all; the spread of NB over the groups judged."""
    att = (charts.fairness_level(fair, "overall").get("attributes") or {}).get(attr) or {}
    info, rows = att.get("groups") or {}, []
    for d in att.get("decision") or []:
        spread_text = entry_text((d.get("summary") or {}).get("net_benefit_difference"))
        for g in (fair.get("groups") or {}).get(attr) or list(info):
            cells = (d.get("groups") or {}).get(g)
            if cells is None:
                continue
            small = ' <span class="insufficient">insufficient</span>' if info.get(g, {}).get("insufficient") else ""
            rows.append(
                [esc(f"{d.get('threshold'):g}"), esc(g) + small]
                + [
                    _fairness_entry(cells.get(k))
                    for k in ("net_benefit", "net_benefit_treat_all", "net_benefit_vs_treat_all")
                ]
                + [_num(spread_text)]
            )
    return rows


def _fairness(bundle, figs: _Figures) -> str:
    """Group fairness measures (``fairness.json``); nothing when the run has none."""
    fair = bundle.fairness
    if not fair:
        return ""
    order = _site_order(bundle)
    ci = fair.get("ci_level", 0.95)
    out = [
        f'<p class="note">Per subgroup, pooled over sites and per site, at each operating threshold (a case is '
        f"selected when p ≥ t): equalised odds and demographic parity as fairlearn defines them (max − min, "
        f"min / max over the groups judged), and the range of calibration slopes across groups. Intervals: "
        f"{ci:.0%} patient-clustered paired bootstrap (the same replicates for every group). Groups with too "
        "little data are shown and marked insufficient, and left out of the summaries (their disparity is "
        "unknown, not absent). A maximum over groups leans upward in resamples, so the upper bound is "
        "conservative.</p>"
    ]
    for attr in fair.get("attributes") or []:
        ref = ((fair.get("references") or {}).get(attr) or {}).get("group")
        out.append(f"<h3>{esc(attr)} <small>(reference group: {esc(ref)})</small></h3>")
        out.append(
            _table(
                ["Site", "Operating threshold", *[t for _, t in FAIRNESS_SUMMARY], "Slope range", "Too small"],
                _fairness_summary_rows(fair, order, attr),
                raw=True,
            )
        )
        out.append('<div class="grid2">')
        out.append(figs.html(charts.fairness_gap_figure(fair, attr, "tpr")))
        out.append(figs.html(charts.fairness_gap_figure(fair, attr, "fpr")))
        out.append("</div>")
        out.append(
            "<details><summary>Rates per group (all sites)</summary>"
            + _table(
                [
                    "Operating threshold",
                    "Group",
                    "n (events)",
                    "TPR",
                    "FPR",
                    "PPV",
                    "Selection rate",
                    "TPR gap",
                    "FPR gap",
                ],
                _fairness_group_rows(fair, attr),
                raw=True,
            )
            + "</details>"
        )
        decision = _fairness_decision_rows(fair, attr)
        if decision:
            out.append(
                "<details open><summary>Net benefit per group at the decision thresholds (all sites; each group "
                "at its own prevalence)</summary>"
                + _table(
                    ["Decision threshold", "Group", "Net benefit", "Treat all", "NB − treat all", "NB spread"],
                    decision,
                    raw=True,
                )
                + "</details>"
            )
    return _section("fairness", "6.1 Fairness across groups", "".join(out))


def _methods(bundle, figs: _Figures) -> str:
    typed = bundle.typed.calibration
    cal = bundle.calibration  # the figures and adapters read the JSON itself
    if typed is None or not typed.computed or not typed.methods:
        return _section("methods", "7. Calibration method comparison", "<p>No calibration comparison in this run.</p>")
    out = [
        f"<p>Design <b>{esc(typed.design)}</b>: methods fitted on {esc(', '.join(typed.fit_on))}, "
        f"evaluated on cases not used for fitting. Recommended: <b>{esc(typed.recommended or '—')}</b>."
        + (f" {esc(typed.recommendation_note)}" if typed.recommendation_note else "")
        + "</p>"
    ]
    out.append(figs.html(charts.calibration_methods_figure(cal, "ece")))
    methods = typed.methods
    keys = _shown("methods", typed.task or bundle.typed.metrics.task)
    names = (["none"] if "none" in methods else []) + sorted(m for m in methods if m != "none")
    sites = []
    for m in names:
        for s in methods[m].sites:
            if s not in sites:
                sites.append(s)
    rows = []
    for s in sites:
        for m in names:
            b = methods[m].sites.get(s)
            if b is None:
                continue
            change = methods[m].change_vs_none.get(s, {}).get("ece")
            rows.append(
                [esc(s), esc(m + (" (recommended)" if m == typed.recommended else "")), _n_cell(b)]
                + [_block_cell(b, k) for k in keys]
                + [_num(entry_text(change) if change else "—")]
            )
    out.append(
        _table(
            ["Site", "Method", "n (events)"] + [metric_label(k) for k in keys] + ["ECE change vs none (paired CI)"],
            rows,
            raw=True,
        )
    )
    failed = [f"{m}: {methods[m].error}" for m in names if methods[m].error]
    if failed:
        out.append(f'<p class="note">Fits that failed (left out of the recommendation): {esc("; ".join(failed))}.</p>')
    params = [[esc(m), esc(k), _num(v)] for m in names for k, v in _parameter_rows(methods[m].params)]
    out.append(
        "<details><summary>Fitted parameters</summary>"
        + _table(["Method", "Parameter", "Value"], params, raw=True)
        + "</details>"
    )
    colors = charts.site_colors(_site_order(bundle))
    for html_part in (_sample_size(cal, figs, colors), _transfer(cal, figs)):
        if html_part:
            out.append(html_part)
    return _section("methods", "7. Calibration method comparison", "".join(out))


def _parameter_rows(params: Mapping | None) -> list[tuple[str, str]]:
    """A method's fitted parameters as (name, value) rows (:func:`validate.view.parameter_rows`)."""
    return view.parameter_rows(params or {}) or [("—", "none fitted")]


def _sample_size(cal: Mapping, figs: _Figures, colors: Mapping[str, str] | None = None) -> str:
    from validate.view import sample_size_rows

    rec = cal.get("recommended")
    method = rec if rec and rec != "none" else None
    rows = sample_size_rows(cal, "ece", methods=[method] if method else None)
    if not rows:
        return ""
    shown = method or "each method"
    return "<h3>How many local cases recalibration needs</h3>" + figs.html(
        charts.sample_size_figure(
            rows,
            "ece",
            title=f"ECE after local recalibration with {shown}, by number of local fitting cases",
            colors=colors,
        ),
        "Lines: mean ECE over the repeats on the site's remaining cases; band: 2.5–97.5% of the "
        "repeats; dotted: the same cases uncalibrated. Below the dotted line recalibration helps.",
    )


def _transfer(cal: Mapping, figs: _Figures) -> str:
    from validate.view import transfer_matrix

    matrix = transfer_matrix(cal, "ece")
    if not matrix:
        return ""
    rec = cal.get("recommended")
    method = rec if rec in matrix and rec != "none" else next((m for m in matrix if m != "none"), next(iter(matrix)))
    return f"<h3>Transfer between sites ({esc(method)})</h3>" + figs.html(
        charts.transfer_matrix_figure(
            matrix[method], "ece", title=f"ECE after {method} fitted at one site (rows), used at another (columns)"
        ),
        "Point estimates; each row's calibrator is fitted on all of that site's cases.",
    )


def _shift(bundle, figs: _Figures) -> str:
    typed = bundle.typed.shift
    shift = bundle.shift  # the figures of validate.charts read the JSON itself
    if typed is None or not typed.computed:
        why = (typed.reason if typed is not None else None) or "no shift analysis in this bundle"
        return _section("shift", "8. Dataset shift and drift", f"<p>No shift analysis: {esc(why)}.</p>")
    dev = typed.development
    out = [
        f"<p>Each external site against the development site(s) {esc(', '.join(dev.sites))} "
        f"(n={dev.n}); p-values corrected ({esc(typed.correction)}) within each site, "
        f"alpha {fmt(typed.alpha, 2)}. Flagged: {esc(', '.join(typed.flagged_sites) or 'none')}; "
        f"material (significant and beyond its practical threshold): "
        f"{esc(', '.join(typed.material_sites) or 'none')}.</p>"
    ]
    rows = []
    for s, info in typed.sites.items():
        top = [r for r in info.ranking if r.flagged][:3]
        rows.append(
            [
                esc(s),
                _num(str(info.n)),
                esc("yes" if info.flagged else "no"),
                esc("yes" if info.material else "no"),
                _num(str(info.n_tests)),
                esc(
                    "; ".join(f"{r.id} ({r.effect_name} {fmt(r.effect)}, adj. {p_clause(r.p_adjusted)})" for r in top)
                    or "—"
                ),
            ]
        )
    out.append(_table(["Site", "n", "Flagged", "Material", "Tests", "Largest flagged differences"], rows, raw=True))
    colors = charts.site_colors(_site_order(bundle))
    grid = [figs.html(charts.shift_summary_figure(shift, s, color=colors.get(s))) for s in typed.sites]
    if grid:
        out.append(
            '<p class="note">What differs most per site: bars are −log10 of the adjusted p-value; red: '
            "significant and beyond its practical threshold (material), amber: significant, grey: not "
            "significant; dashed: alpha.</p>"
        )
        out.append('<div class="grid2">' + "".join(grid) + "</div>")
    drift = typed.drift
    if drift.sites:
        out.append(f"<h3>Temporal drift (windows: {esc(drift.freq)})</h3>")
        for s, d in drift.sites.items():
            if d.windows:
                flagged = ", ".join(d.flagged_windows) or "none"
                out.append(
                    figs.html(
                        charts.drift_figure(
                            shift["drift"]["sites"][s], title=f"{s}: metrics per window (flagged: {flagged})"
                        )
                    )
                )
    elif drift.reason:
        out.append(f'<p class="note">Temporal drift: {esc(drift.reason)}.</p>')
    return _section("shift", "8. Dataset shift and drift", "".join(out))


def _limitations(bundle, figs: _Figures) -> str:
    from validate.view import insufficient_cells

    out = []
    items = []
    for s, b in bundle.typed.metrics.sites.items():
        if b.insufficient:
            items.append(f"Site <b>{esc(s)}</b> has too little data for trustworthy estimates: {esc(b.reason)}.")
        for m, why in b.undefined.items():
            items.append(f"At site <b>{esc(s)}</b>, {esc(metric_label(m))} is undefined: {esc(why)}.")
    cohorts = bundle.typed.sites
    roles = {s: info.role for s, info in cohorts.sites.items()} if cohorts else {}
    dev = [s for s, r in roles.items() if r == "development"]
    if dev:
        items.append(
            f"Metrics at the development site(s) {esc(', '.join(dev))} are apparent (in-sample) performance "
            "when the model was fitted there; judge generalisation by the external sites."
        )
    fails = bundle.failures
    if len(fails):
        by = fails.groupby([fails["site"].astype(str), fails["reason"].astype(str).str.split(":").str[0]]).size()
        items.append(
            f"{len(fails)} case(s) could not be read or scored and are excluded: "
            + "; ".join(f"{esc(site)}: {esc(reason)} ({k})" for (site, reason), k in by.items())
            + "."
        )
    gates = bundle.typed.gates
    small_gates = [r for r in gates.rows if r.insufficient] if gates else []
    if small_gates:
        items.append(
            f"{len(small_gates)} gate check(s) were decided by their insufficient-data policy "
            f"({', '.join(sorted({esc(r.gate) for r in small_gates}))})."
        )
    out.append("<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>" if items else "<p>None noted.</p>")
    cells = insufficient_cells(bundle.subgroups or {})
    if cells:
        out.append(f"<h3>Subgroup cells with too little data ({len(cells)})</h3>")
        out.append(
            _table(
                ["Site", "Subgroup", "Group", "n", "Events", "Reason"],
                [[c["site"], c["subgroup"], c["group"], c.get("n"), c.get("n_events"), c.get("reason")] for c in cells],
            )
        )
    return _section("limitations", "9. Limitations", "".join(out))


def _entry_cell(entry: Any, why: str | None, digits: int = 3) -> tuple:
    if entry is None:
        return (f'<span class="insufficient" title="{esc(why or "undefined")}">undefined</span>', "num")
    return _num(entry_text(entry, digits))


def _rows_n_cell(row: Mapping) -> tuple:
    text = f"{row['n']}" + (f" ({row['n_events']})" if row.get("n_events") is not None else "")
    if row.get("insufficient"):
        return (f'{esc(text)} <span class="insufficient">insufficient</span>', "num")
    return _num(text)


def _utility(bundle, figs: _Figures) -> str:
    """Net benefit at the protocol's decision thresholds per site and pooled (each with n and interval),
    the share of replicates beating both defaults, and a decision curve per site; empty (no section)
    when the protocol declared no ``decision``."""
    metrics, curves = bundle.metrics or {}, (bundle.curves or {}).get("decision")
    if not utility.has_decision(metrics, bundle.curves):
        return ""
    order = _site_order(bundle)
    ci = bundle.typed.metrics.ci_level
    rows = [
        [esc(r["site"]), _rows_n_cell(r), _num(fmt(r["prevalence"], 2)), _num(fmt(r["threshold"], 2))]
        + [_entry_cell(r[m], r["undefined"].get(m), utility.DIGITS.get(m, 3)) for m in utility.DECISION_METRICS]
        + [_num(utility.share_text(r["beats_defaults"]))]
        for r in utility.decision_rows(metrics, order)
    ]
    out = [
        '<p class="note">Net benefit NB = TP/n − FP/n · t/(1−t) of treating the patients whose predicted risk is '
        "at least the threshold t (Vickers &amp; Elkin 2006): true positives per patient, net of the false "
        "positives weighted by the odds of the threshold. Defaults: treat all, treat none (NB = 0). Each site "
        "at its own prevalence (what that site would get); the pooled row mixes the sites' prevalences. "
        f"Intervals: {ci:.0%} bootstrap percentile (patients resampled within sites). “Beats both defaults”: "
        "the share of bootstrap replicates in which the model beats both defaults — not a significance test.</p>"
    ]
    if rows:
        heads = [f"{utility.DECISION_LABELS[m]} ({ci:.0%} CI)" for m in utility.DECISION_METRICS]
        out.append(
            _table(
                ["Site", "n (events)", "Prevalence", "Threshold", *heads, "Beats both defaults"],
                rows,
                raw=True,
            )
        )
    grid = []
    colors = charts.site_colors(order)
    for key in [*order, "overall"] if curves else []:
        if charts.decision_curve_block(curves, key) is None:
            continue
        items = ((metrics.get("sites") or {}).get(key) if key != "overall" else metrics.get("overall")) or {}
        fig = charts.decision_curve_figure(curves, key, decision=items.get("decision"), color=colors.get(key))
        grid.append(figs.html(fig, _utility_caption(key)))
    if grid:
        out.append('<h3>Decision curves</h3><div class="grid2">' + "".join(grid) + "</div>")
    return _section("utility", "5.1 Clinical utility (net benefit)", "".join(out))


def _utility_caption(key: str) -> str:
    where = (
        "All sites pooled: the curve mixes the sites' prevalences."
        if key == "overall"
        else "Each site at its own prevalence (what this site would get)."
    )
    return (
        f"{where} Solid: the model; dashed: treat all; dotted: treat none; shaded: pointwise bootstrap "
        "intervals. Diamonds: the protocol's decision thresholds with their intervals (the hover text gives "
        "the share of bootstrap replicates in which the model beats both defaults — not a significance test)."
    )


def _has_n(row: Mapping) -> str:
    events = row.get("n_events")
    return utility.count_text(row["n"]) + (f" ({utility.count_text(events)})" if isinstance(events, int) else "")


def _precision(bundle, figs: _Figures) -> str:
    """Per site and criterion: the achieved interval width against the protocol's target, and the sample
    size the target would need against the site's n (Riley et al. 2021/2024); empty (no section) when the
    bundle carries no ``precision``."""
    metrics = bundle.metrics or {}
    if not utility.has_precision(metrics):
        return ""
    rows, reasons = [], {}
    for r in utility.precision_rows(metrics, _site_order(bundle)):
        verdict = {True: ("adequate", "pass"), False: ("too wide", "fail")}.get(r["adequate"], ("—", ""))
        needed = utility.count_text(r["needed_n"])
        if r["needed_events"] is not None:
            needed += f" ({utility.count_text(r['needed_events'])} events)"
        rows.append(
            [esc(r["site"]), esc(r["criterion"]), _num(f"{fmt(r['width'], 2)} vs {fmt(r['target'], 2)}")]
            + [(f'<span class="tag {verdict[1]}">{esc(verdict[0])}</span>', "") if verdict[1] else "—"]
            + [_num(needed), _num(_has_n(r)), esc(r["basis"] or "")]
        )
        if r["block_reason"] and r["block_adequate"] is False:
            reasons[r["site"]] = r["block_reason"]
    out = [
        '<p class="note">Is each site large enough to trust its numbers? For each criterion, the width of the '
        "interval the site achieved against the protocol's target width, and the sample size that target "
        "would need at the site's observed prevalence, C-statistic and linear-predictor distribution (Riley "
        "et al., Stat Med 2021;40:4230–51; BMJ 2024;384:e074821). The count floor (min_cases, min_events) "
        "still marks a block insufficient.</p>",
        _table(
            ["Site", "Criterion", "CI width vs target", "Precision", "Needed n (events)", "Has n (events)", "Basis"],
            rows,
            raw=True,
        ),
    ]
    if reasons:
        out.append("<ul>" + "".join(f"<li><b>{esc(s)}</b>: {esc(why)}</li>" for s, why in reasons.items()) + "</ul>")
    return _section("precision", "3.1 Sample size and precision", "".join(out))


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{esc(title)}</h2>{body}</section>'


SECTIONS = (
    ("verdict", "Verdict", _verdict),
    ("comparison", "Model comparison", _comparison),
    ("provenance", "Provenance", _provenance),
    ("cohorts", "Cohorts", _cohorts),
    ("precision", "Sample size", _precision),
    ("discrimination", "Discrimination", _discrimination),
    ("calibration", "Calibration", _calibration),
    ("utility", "Net benefit", _utility),
    ("synthesis", "Across hospitals", _synthesis),
    ("subgroups", "Subgroups", _subgroups),
    ("fairness", "Fairness", _fairness),
    ("methods", "Calibration methods", _methods),
    ("shift", "Shift & drift", _shift),
    ("limitations", "Limitations", _limitations),
)
# a segmentation run: its own sections (validate.report.segmentation) in place of the classification ones
# (discrimination, calibration, net benefit, synthesis, subgroups, fairness, methods), whose metrics it has not
_SHARED = {s[0]: s for s in SECTIONS}
SEGMENTATION_SECTIONS = (
    *(_SHARED[a] for a in ("verdict", "provenance", "cohorts", "precision")),
    *segmentation.SECTIONS,
    *(_SHARED[a] for a in ("shift", "limitations")),
)


def render_report(bundle, checklists: Sequence[str] = ()) -> str:
    """The report of a bundle (a :class:`validate.bundle.Bundle`) as one self-contained HTML string.

    ``checklists`` (names of :data:`validate.report.checklists.NAMES`) adds section 10, "Reporting
    checklists", mapping each guideline item to the bundle's evidence; without it there is no such section.

    A bundle missing a file its protocol implies is refused (:class:`validate.errors.InputError`): without
    ``gates.json`` the verdict below would read PASS for a protocol whose gates failed.
    """
    from plotly.offline import get_plotlyjs

    bundle.require_implied_files()
    figs = _Figures()
    sections = SEGMENTATION_SECTIONS if (bundle.metrics or {}).get("task") == "segmentation" else SECTIONS
    parts = [(anchor, title, fn(bundle, figs)) for anchor, title, fn in sections]
    parts.append(("checklists", "Checklists", checklist_section(bundle, checklists)))
    parts = [p for p in parts if p[2]]  # a section with nothing to say (no comparison) is left out
    body = "".join(html_part for _, _, html_part in parts)
    prov = bundle.typed.provenance
    gates = bundle.typed.gates
    verdict = gates.verdict if gates else "pass"
    title = f"Validation report: {prov.protocol.name} v{prov.protocol.version}"
    desc = ""
    try:
        import yaml

        desc = (yaml.safe_load(bundle.protocol_text) or {}).get("description") or ""
    except Exception:  # the description is decoration; a protocol copy that does not parse is shown raw above
        desc = ""
    nav = "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t, _ in parts)  # on paper: the table of contents
    plotly_js = get_plotlyjs()
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="validate-figures" content="{figs.count}">'
        f'<meta name="validate-verdict" content="{esc(verdict)}">'
        f"<title>{esc(title)}</title><style>{CSS}{PRINT_CSS}</style>"
        f'<script type="text/javascript">{plotly_js}</script></head>'
        f'<body data-figures="{figs.count}"><header><h1>{esc(title)}</h1>'
        f"<p>{esc(desc)}</p><p>Run {esc(prov.started_at)} · bundle {esc(bundle.name)} · "
        f"verdict {esc(verdict.upper())}</p></header><nav>{nav}</nav><main>{body}</main>"
        "</body></html>\n"
    )


def write_report(bundle, path=None, checklists: Sequence[str] = ()):
    """Render and write ``report.html`` atomically (default: into the bundle folder); returns the path."""
    from pathlib import Path

    from validate.io import atomic_write_text, shared_mode

    path = Path(path) if path is not None else bundle.path / "report.html"
    atomic_write_text(path, render_report(bundle, checklists), shared_mode())  # a report is meant to be shared
    return path
