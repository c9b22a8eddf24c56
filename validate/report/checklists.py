"""Reporting checklists filled from a results bundle: TRIPOD+AI, CLAIM 2024 and STARD-AI.

Each item of :mod:`validate.report.checklist_items` gets one of three statuses:

- ``filled``: the bundle holds the evidence the item asks for; the evidence text says what and where
  (file and report section), with the numbers read from the bundle's files.
- ``partial``: the bundle holds part of it (e.g. the number of centres, not the care setting); the
  row says what the bundle shows and, plainly, what the author must add.
- ``author``: nothing in the bundle answers it (ethics, funding, annotators...), or the file that would
  answer it is absent: then the evidence reads "not in bundle: <file> ...", never a guess.

Nothing is computed here: every number comes from the bundle's JSON files, ``failures.csv`` and the
protocol copy, as the report shows them. The evidence finders are :data:`FINDERS`; each takes
:class:`Facts` and returns an :class:`Evidence`. An item's ``cap`` lowers ``filled`` to ``partial``
where the item also asks for what only the author knows.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

from validate.contract import pooled_block
from validate.escape import markdown_text
from validate.metrics import registry
from validate.report.checklist_items import GUIDELINES, Guideline, Item, Status
from validate.view import fmt, interval_text

NAMES = tuple(GUIDELINES)
MARKER = "<!-- validate reporting checklist"  # the first line of every checklist file validate writes


@dataclass(frozen=True)
class Evidence:
    status: Status
    text: str
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class Row:
    item: Item
    status: Status
    evidence: str
    sources: tuple[str, ...]

    @property
    def author(self) -> str:
        """What the author must supply ("" when the bundle answers the item in full)."""
        return "" if self.status == "filled" else self.item.author


def _absent(name: str, why: str) -> Evidence:
    return Evidence("author", f"not in bundle: {name} is absent ({why})")


class Facts:
    """The bundle's files as the finders read them (each loaded once)."""

    def __init__(self, bundle) -> None:
        self.bundle = bundle

    def has(self, name: str) -> bool:
        return (self.bundle.path / name).is_file()

    @cached_property
    def protocol(self) -> dict:
        import yaml

        try:
            data = yaml.safe_load(self.bundle.protocol_text)
        except Exception:  # a protocol copy that does not parse answers nothing, it is not fatal here
            return {}
        return data if isinstance(data, dict) else {}

    @cached_property
    def metrics(self) -> dict:
        return self.bundle.metrics

    @cached_property
    def site_order(self) -> list[str]:
        sites = (self.bundle.sites or {}).get("sites") or {}
        return list(sites) or list(self.metrics.get("sites") or {})

    @cached_property
    def roles(self) -> dict[str, str]:
        sites = (self.bundle.sites or {}).get("sites") or {}
        if sites:
            return {s: str(info.get("role")) for s, info in sites.items()}
        return {str(s.get("id")): str(s.get("role")) for s in self.protocol.get("sites") or [] if isinstance(s, dict)}

    def sites_with(self, role: str) -> list[str]:
        return [s for s in self.site_order if self.roles.get(s) == role]

    @cached_property
    def failures(self):
        return self.bundle.failures


# ---- small text helpers ---------------------------------------------------------------------------------


def _n_events(block: Mapping) -> str:
    ev = block.get("n_events")
    return f"n={block.get('n')}" + (f" ({ev} events)" if isinstance(ev, int) else "")


def _first_metric(block: Mapping, names: Sequence[str]) -> str | None:
    for m in names:
        e = block.get(m)
        if isinstance(e, Mapping) and e.get("estimate") is not None:
            return f"{registry.label(m)} {interval_text(e)}"
    return None


_HEADLINE = ("auroc", "auroc_macro", "accuracy")
_CALIBRATION = ("calibration_slope", "ece")


def _block_text(name: str, block: Mapping) -> str:
    parts = [p for p in (_first_metric(block, _HEADLINE), _first_metric(block, _CALIBRATION)) if p]
    flag = " [insufficient data]" if block.get("insufficient") else ""
    return f"{name}: {', '.join(parts) or 'no metric estimate'}, {_n_events(block)}{flag}"


def _join(items: Iterable[str], sep: str = "; ") -> str:
    return sep.join(items)


# ---- evidence finders --------------------------------------------------------------------------------------


def _description(f: Facts) -> Evidence:
    desc = " ".join(str(f.protocol.get("description") or "").split())
    if not desc:
        return Evidence("author", "not in bundle: the protocol has no description")
    return Evidence("filled", f'The protocol\'s description: "{desc}"', ("protocol.yaml",))


def _study_kind(f: Facts) -> Evidence:
    ext, dev = f.sites_with("external"), f.sites_with("development")
    task = f.protocol.get("task") or f.metrics.get("task")
    text = (
        f"Evaluation of an existing model, without refitting it ({task} task): "
        f"evaluated at {len(ext)} external site(s) ({_join(ext, ', ') or 'none'})"
        + (f" and at its development site(s) {_join(dev, ', ')} (apparent performance)" if dev else "")
    )
    cal = f.bundle.calibration
    if cal and cal.get("methods"):
        methods = [m for m in cal["methods"] if m != "none"]
        text += f"; recalibration methods compared ({_join(methods, ', ')}, design {cal.get('design')})"
    return Evidence("filled", text + ".", ("sites.json", "calibration.json"))


def _sites_setting(f: Facts) -> Evidence:
    sites = (f.bundle.sites or {}).get("sites") or {}
    if not sites:
        return _absent("sites.json", "no cohort summary")
    rows = [f"{s} ({info.get('name') or 'no name given'}; role {info.get('role')})" for s, info in sites.items()]
    return Evidence("filled", f"{len(sites)} site(s): " + _join(rows) + ".", ("sites.json", "protocol.yaml"))


def _dates(f: Facts) -> Evidence:
    shift = f.bundle.shift
    if shift is None:
        return _absent("shift.json", "no shift and drift analysis")
    drift = shift.get("drift") or {}
    spans = []
    for s, d in (drift.get("sites") or {}).items():
        windows = d.get("windows") or []
        if windows:
            first, last = windows[0], windows[-1]
            start, end = first.get("start") or first.get("window"), last.get("end") or last.get("window")
            spans.append(f"{s}: {start} to {end} ({len(windows)} windows of {drift.get('freq')})")
    if not spans:
        why = drift.get("reason") or "no acquisition dates"
        return Evidence("author", f"not in bundle: no acquisition dates ({why})")
    dated = {s for s, d in (drift.get("sites") or {}).items() if d.get("windows")}
    undated = [s for s in f.site_order if s not in dated]
    text = "Acquisition windows per site (shift.json drift): " + _join(spans)
    if undated:
        text += f"; no acquisition dates for {_join(undated, ', ')}"
    return Evidence("partial" if undated else "filled", text + ".", ("shift.json",))


def _where_when(f: Facts) -> Evidence:
    where, when = _sites_setting(f), _dates(f)
    if where.status == "author":
        return where
    status: Status = "filled" if when.status == "filled" else "partial"
    return Evidence(status, f"{where.text} Dates: {when.text}", where.sources + when.sources)


def _input_block(f: Facts) -> dict:
    block = f.protocol.get("input")
    return block if isinstance(block, dict) else {}


def _preprocessing(f: Facts) -> Evidence:
    block = _input_block(f)
    if not block:
        return Evidence("author", "not in bundle: the protocol has no input section")
    spec = _join((f"{k}: {v}" for k, v in block.items() if k != "features" and v is not None), ", ")
    feats = block.get("features")
    extra = f"; {len(feats)} feature column(s) handed to the model in order" if isinstance(feats, list) else ""
    return Evidence(
        "filled",
        f"Input preparation as the protocol declares it (protocol.yaml `input`): {spec}{extra}.",
        ("protocol.yaml",),
    )


def _predictors(f: Facts) -> Evidence:
    block = _input_block(f)
    feats = block.get("features")
    if isinstance(feats, list) and feats:
        return Evidence(
            "filled", f"The model's inputs (protocol.yaml `input.features`): {_join(map(str, feats), ', ')}."
        )
    if block:
        return Evidence("filled", f"The model's input is of kind {block.get('kind')} (protocol.yaml `input`).")
    return Evidence("author", "not in bundle: the protocol has no input section")


def _outcome(f: Facts) -> Evidence:
    p = f.protocol
    classes, label = p.get("classes"), (p.get("columns") or {}).get("label", "label")
    if not classes:
        return Evidence("author", "not in bundle: the protocol names no classes")
    pos = p.get("positive_class")
    text = f"Task {p.get('task')}; classes {_join(map(str, classes), ', ')}"
    text += f"; positive class {pos}" if pos else ""
    return Evidence("filled", text + f"; read from the manifests' `{label}` column.", ("protocol.yaml",))


def _precision_rows(block: Mapping) -> list[str]:
    prec = block.get("precision") or {}
    out = []
    for c in prec.get("criteria") or []:
        at = f" at t={fmt(c.get('threshold'), 2)}" if c.get("threshold") is not None else ""
        width = "—" if c.get("width") is None else fmt(c.get("width"), 3)
        out.append(
            f"{registry.label(c['metric'])}{at}: width {width} vs target {fmt(c['target'], 3)}, "
            f"{'adequate' if c.get('adequate') else 'too wide'}, needs n≈{c.get('needed_n')} (has {c.get('n')})"
        )
    return out


def _sample_size(f: Facts) -> Evidence:
    blocks = [(s, b) for s, b in (f.metrics.get("sites") or {}).items() if isinstance(b, Mapping)]
    rows = [f"{s}: " + _join(_precision_rows(b), ", ") for s, b in blocks if _precision_rows(b)]
    if not rows:
        return Evidence(
            "author",
            "not in bundle: no precision targets (protocol `metrics.precision`); `validate plan` computes the "
            "sample size each site needs",
        )
    return Evidence(
        "filled",
        "Achieved interval widths against the precision targets (protocol `metrics.precision`, else validate's "
        "defaults) and the sample size each target "
        "needs (Riley et al. 2021/2024; metrics.json `precision`, report section 3.1): " + _join(rows) + ".",
        ("metrics.json",),
    )


_NO_FAILURES_FILE = "failures.csv is not in this bundle, so it does not say which cases could not be scored"


def _failure_counts(f: Facts) -> str:
    if not f.has("failures.csv"):  # site and combined bundles hold no case rows
        return _NO_FAILURES_FILE
    fails = f.failures
    if not len(fails):
        return "no case failed to be read or scored (failures.csv is empty)"
    reasons = fails["reason"].astype(str).str.split(":").str[0]
    by = fails.assign(_r=reasons).groupby([fails["site"].astype(str), "_r"]).size()
    return f"{len(fails)} case(s) could not be read or scored: " + _join(f"{s}: {r} ({k})" for (s, r), k in by.items())


def _exclusion_counts(f: Facts) -> list[str]:
    sites = (f.bundle.sites or {}).get("sites") or {}
    out = []
    for s, info in sites.items():
        excluded = info.get("excluded") or {}
        if info.get("n_excluded"):
            why = _join((f"{r}: {k}" for r, k in excluded.items()), ", ")
            out.append(f"{s}: {info['n_excluded']} manifest row(s) excluded ({why})")
    return out


def _missing(f: Facts) -> Evidence:
    parts = [_failure_counts(f)]
    parts += _exclusion_counts(f) or ["no manifest row was excluded (sites.json)"]
    shift = f.bundle.shift
    if shift is not None and shift.get("sites"):
        flagged = sorted(
            {
                r["name"]
                for info in shift["sites"].values()
                for r in info.get("ranking") or []
                if r.get("group") == "missingness" and r.get("flagged")
            }
        )
        parts.append(
            "predictors whose share of missing values differs significantly from development (shift.json): "
            + (_join(flagged, ", ") or "none")
        )
    return Evidence("filled", _join(parts) + ".", ("failures.csv", "sites.json", "shift.json"))


def _data_use(f: Facts) -> Evidence:
    dev, ext = f.sites_with("development"), f.sites_with("external")
    cal_sites = f.sites_with("calibration")
    text = (
        f"Each site is a separate cohort. Development site(s): {_join(dev, ', ') or 'none'} (apparent performance); "
        f"external evaluation: {_join(ext, ', ') or 'none'}"
        + (f"; calibration site(s): {_join(cal_sites, ', ')}" if cal_sites else "")
    )
    cal = f.bundle.calibration
    if cal:
        text += f". Recalibration fitted on {_join(cal.get('fit_on') or [], ', ')} (design {cal.get('design')})"
        text += f"; designs compared: {_join(cal.get('designs') or [], ', ')}" if cal.get("designs") else ""
    return Evidence("filled", text + ".", ("sites.json", "calibration.json"))


def _heterogeneity(f: Facts) -> Evidence:
    syn = f.metrics.get("synthesis")
    if syn and syn.get("metrics"):
        parts = []
        for m, s in syn["metrics"].items():
            if "@" in m or s.get("estimate") is None:
                continue
            pi = (
                f", prediction interval {fmt(s.get('pi_low'))} to {fmt(s.get('pi_high'))}"
                if s.get("pi_low") is not None
                else ""
            )
            parts.append(
                f"{registry.label(m)} pooled {interval_text(s)}{pi}, tau²={fmt(s.get('tau2'))}, "
                f"I²={fmt(s.get('i2'), 2)} over k={s.get('k')} sites"
            )
        text = (
            f"Random-effects synthesis across sites {_join(syn.get('sites') or [], ', ')} ({syn.get('method')}, "
            f"{syn.get('interval')} interval; metrics.json `synthesis`, report section 5.2): " + _join(parts) + "."
        )
        return Evidence("filled", text, ("metrics.json",))
    sites = f.metrics.get("sites") or {}
    text = "Performance per site (no random-effects synthesis declared): " + _join(
        _block_text(s, b) for s, b in sites.items()
    )
    return Evidence("partial", text + ".", ("metrics.json",))


def _measures(f: Facts) -> Evidence:
    m = f.metrics
    sites = m.get("sites") or {}
    names = sorted({k for b in sites.values() if isinstance(b, Mapping) for k in b if registry.get(k) is not None})
    labels = _join((registry.label(k) for k in names), ", ")
    extra = []
    if f.bundle.curves:
        extra.append("reliability diagrams (calibration plots) and ROC curves per site (curves.json, report section 5)")
    if (f.bundle.curves or {}).get("decision"):
        extra.append("decision curves (net benefit)")
    text = (
        f"Measures: {labels}. Intervals at {fmt(m.get('ci_level'), 2)}: DeLong for AUROC, Wald for calibration "
        f"intercept and slope, otherwise {m.get('n_bootstrap')} patient-clustered bootstrap replicates "
        f"(seed {m.get('seed')}). Plots: {_join(extra, '; ') or 'none in this bundle'}."
    )
    return Evidence("filled", text, ("metrics.json", "curves.json"))


def _uncertainty(f: Facts) -> Evidence:
    base = _measures(f)
    shift = f.bundle.shift
    if shift:
        base = Evidence(
            base.status,
            base.text + f" Shift tests: p-values corrected by {shift.get('correction')} within each site, "
            f"alpha {fmt(shift.get('alpha'), 2)}.",
            base.sources + ("shift.json",),
        )
    return base


def _updating(f: Facts) -> Evidence:
    cal = f.bundle.calibration
    if cal is None:
        return _absent("calibration.json", "no recalibration was evaluated")
    if not cal.get("methods"):
        return Evidence("author", f"not in bundle: calibration.json holds no methods ({cal.get('reason') or 'none'})")
    methods = [m for m in cal["methods"] if m != "none"]
    text = (
        f"Recalibration methods evaluated: {_join(methods, ', ')}, fitted on {_join(cal.get('fit_on') or [], ', ')} "
        f"(design {cal.get('design')}); recommended: {cal.get('recommended') or 'none'}"
    )
    if cal.get("recommendation_note"):
        text += f" ({cal['recommendation_note']})"
    return Evidence("filled", text + ". calibration.json, report section 7.", ("calibration.json",))


def _updating_results(f: Facts) -> Evidence:
    base = _updating(f)
    cal = f.bundle.calibration
    if base.status == "author" or not cal:
        return base
    rec = cal.get("recommended")
    method = (cal.get("methods") or {}).get(rec) if rec else None
    if not method:
        return Evidence(
            "partial", base.text + " No method is recommended, so no updated model is reported.", base.sources
        )
    params = _join(
        (f"{k}={fmt(v, 4) if isinstance(v, (int, float)) else '…'}" for k, v in (method.get("params") or {}).items()),
        ", ",
    )
    sites = _join(_block_text(s, b) for s, b in (method.get("sites") or {}).items())
    return Evidence(
        "filled",
        base.text + f" {rec} parameters: {params or 'see calibration.json'}. After {rec}: {sites}.",
        base.sources,
    )


def _prediction_calc(f: Facts) -> Evidence:
    prov = f.bundle.provenance
    ck, src = prov.get("checkpoint"), prov.get("predictions_source")
    if ck:
        text = (
            f"Predictions computed by validate from the checkpoint {ck.get('path')} (format {ck.get('format')}, "
            f"sha256 {ck.get('sha256')})"
        )
    elif src:
        text = f"Predictions made elsewhere and read from {src.get('path')} (sha256 {src.get('sha256')})"
    else:
        return Evidence("author", "not in bundle: provenance.json names neither a checkpoint nor a predictions file")
    output = (f.protocol.get("model") or {}).get("output")
    return Evidence("filled", text + (f"; the model returns {output}" if output else "") + ".", ("provenance.json",))


def _model_identity(f: Facts) -> Evidence:
    return _prediction_calc(f)


def _index_test(f: Facts) -> Evidence:
    model, prep = _prediction_calc(f), _preprocessing(f)
    if model.status == "author":
        return model
    return Evidence(
        "filled", f"{model.text} {prep.text if prep.status != 'author' else ''}".strip(), model.sources + prep.sources
    )


def _fairness(f: Facts) -> Evidence:
    fair = f.bundle.fairness
    sub = f.bundle.subgroups
    if not fair and not sub:
        return _absent("fairness.json and subgroups.json", "no subgroup or fairness analysis")
    parts = []
    if sub:
        parts.append(
            f"performance per subgroup ({_join(sub.get('attributes') or [], ', ')}) in subgroups.json, report section 6"
        )
    if fair:
        parts.append(
            "group fairness measures (TPR/FPR/PPV gaps, equalised odds, demographic parity, calibration across "
            "groups) "
            f"for {_join(fair.get('attributes') or [], ', ')} in fairness.json"
        )
    gates = [
        g
        for g in (f.bundle.gates or {}).get("gates") or []
        if "subgroup" in g.get("scope", "") or "attribute" in g.get("scope", "")
    ]
    if gates:
        parts.append("subgroup gates: " + _join((g["name"] for g in gates), ", "))
    return Evidence("filled", _join(parts) + ".", ("subgroups.json", "fairness.json", "gates.json"))


def _model_output(f: Facts) -> Evidence:
    p = f.protocol
    m = p.get("metrics") or {}
    parts = [f"output: {(p.get('model') or {}).get('output') or 'scores'} ({p.get('task')} task)"]
    if m.get("thresholds"):
        parts.append(f"operating thresholds {_join(map(str, m['thresholds']), ', ')}")
    if m.get("target_sensitivity") is not None:
        parts.append(f"a threshold found at the development site for sensitivity {m['target_sensitivity']}")
    if (p.get("decision") or {}).get("thresholds"):
        parts.append(f"decision thresholds {_join(map(str, p['decision']['thresholds']), ', ')}")
    return Evidence("filled", "Declared in protocol.yaml: " + _join(parts) + ".", ("protocol.yaml",))


def _thresholds(f: Facts) -> Evidence:
    base = _model_output(f)
    return Evidence(
        base.status,
        base.text + " The protocol was fixed before the run (its sha256 is in provenance.json): these cut-offs are "
        "pre-specified.",
        base.sources + ("provenance.json",),
    )


def _shift_word(info: Mapping) -> str:
    if info.get("material"):
        return "material shift"
    return "flagged" if info.get("flagged") else "no flagged difference"


def _shift(f: Facts) -> Evidence:
    shift = f.bundle.shift
    if shift is None:
        return _absent("shift.json", "no shift analysis was run")
    if not shift.get("sites"):
        return Evidence(
            "author", f"not in bundle: shift analysis not computed ({shift.get('reason') or 'no reason given'})"
        )
    dev = shift.get("development") or {}
    rows = []
    for s, info in shift["sites"].items():
        top = [r for r in info.get("ranking") or [] if r.get("flagged")][:3]
        found = _join((f"{r['id']} ({r.get('effect_name')} {fmt(r.get('effect'))})" for r in top), ", ")
        rows.append(
            f"{s} (n={info.get('n')}): {info.get('n_tests')} tests, {_shift_word(info)}"
            + (f": {found}" if found else "")
        )
    text = (
        f"Each external site compared with the development data ({_join(dev.get('sites') or [], ', ')}, "
        f"n={dev.get('n')}) "
        f"on case mix, labels, scores and missingness (shift.json, report section 8): " + _join(rows) + "."
    )
    return Evidence("filled", text, ("shift.json",))


def _cohort_lines(f: Facts) -> list[str]:
    sites = (f.bundle.sites or {}).get("sites") or {}
    if sites:
        return [
            f"{s}: n={i.get('n')}, {i.get('n_events')} with the outcome, "
            f"prevalence {interval_text(i.get('prevalence'))}"
            for s, i in sites.items()
        ]
    return [f"{s}: {_n_events(b)}" for s, b in (f.metrics.get("sites") or {}).items()]


def _flow(f: Facts) -> Evidence:
    prov = f.bundle.provenance
    counts = (prov.get("scoring_counts") or {}).get("sites") or {}
    lines = _cohort_lines(f)
    scored = _join(
        f"{s}: {c.get('cases')} cases, {c.get('scored')} scored, {c.get('failed')} failed" for s, c in counts.items()
    )
    text = "Analysed per site (sites.json): " + _join(lines)
    text += f". Scoring (provenance.json): {scored}" if scored else ""
    text += ". " + _failure_counts(f)
    exclusions = _exclusion_counts(f)
    text += ". " + (_join(exclusions) if exclusions else "No manifest row was excluded")
    return Evidence("filled", text + ".", ("sites.json", "provenance.json", "failures.csv"))


def _analysis_counts(f: Facts) -> Evidence:
    lines = _cohort_lines(f)
    cal = f.bundle.calibration
    text = "Cases and events per site: " + _join(lines)
    if cal:
        fit_on = _join(cal.get("fit_on") or [], ", ")
        text += f". Recalibration fitted on {fit_on} and evaluated at the other sites (calibration.json)"
    return Evidence("filled", text + ".", ("sites.json", "calibration.json"))


def _characteristics(f: Facts) -> Evidence:
    sites = (f.bundle.sites or {}).get("sites") or {}
    if not sites:
        return _absent("sites.json", "no cohort summary")
    rows = []
    for s, info in sites.items():
        make_up = _join(
            (
                f"{attr} " + ", ".join(f"{g} {k}" for g, k in groups.items())
                for attr, groups in (info.get("make_up") or {}).items()
            ),
            "; ",
        )
        rows.append(f"{s}: n={info.get('n')}, {info.get('n_events')} events" + (f"; {make_up}" if make_up else ""))
    return Evidence("filled", "Per site (sites.json, report section 3): " + _join(rows, " | ") + ".", ("sites.json",))


def _performance(f: Facts) -> Evidence:
    m = f.metrics
    parts = []
    pooled = pooled_block(m)
    if isinstance(pooled, Mapping):
        parts.append(_block_text("all sites pooled", pooled))
    parts += [_block_text(s, b) for s, b in (m.get("sites") or {}).items()]
    subs = m.get("subgroups") or {}
    text = f"With {fmt(m.get('ci_level'), 2)} intervals (metrics.json, report sections 4–5): " + _join(parts)
    if subs:
        text += (
            f". Subgroups: {_join(subs, ', ')}, each group with its n, events and intervals (metrics.json "
            "`subgroups`, subgroups.json, report section 6)"
        )
    return Evidence("filled", text + ".", ("metrics.json", "subgroups.json"))


def _diagnostic(f: Facts) -> Evidence:
    rows = []
    for s, b in (f.metrics.get("sites") or {}).items():
        for op in b.get("operating_points") or []:
            vals = _join(
                (
                    f"{k} {interval_text(op[k])}"
                    for k in ("sensitivity", "specificity", "ppv", "npv")
                    if isinstance(op.get(k), Mapping)
                ),
                ", ",
            )
            rows.append(f"{s} at p≥{fmt(op.get('threshold'), 2)}: {vals} ({_n_events(b)})")
    if not rows:
        return Evidence("author", "not in bundle: no operating threshold declared (protocol `metrics.thresholds`)")
    return Evidence(
        "filled",
        "Accuracy at the declared thresholds (metrics.json `operating_points`): " + _join(rows) + ".",
        ("metrics.json",),
    )


def _crosstab(f: Facts) -> Evidence:
    base = _diagnostic(f)
    if base.status == "author":
        return base
    return Evidence(
        "partial",
        base.text + " The bundle holds these rates with each site's n and events, not the 2x2 cell counts.",
        base.sources,
    )


def _variability(f: Facts) -> Evidence:
    perf = _performance(f)
    subs = [str(s.get("name")) for s in f.protocol.get("subgroups") or [] if isinstance(s, dict)]
    text = "Pre-specified in protocol.yaml: per-site analysis" + (f" and subgroups {_join(subs, ', ')}" if subs else "")
    return Evidence("filled", text + ". " + perf.text, perf.sources + ("protocol.yaml",))


def _robustness(f: Facts) -> Evidence:
    parts = []
    if f.bundle.shift is not None:
        parts.append("dataset shift per external site (shift.json)")
    if f.metrics.get("subgroups"):
        parts.append(f"subgroups {_join(f.metrics['subgroups'], ', ')} (subgroups.json)")
    cal = f.bundle.calibration
    if cal and cal.get("designs"):
        parts.append(f"calibration designs {_join(cal['designs'], ', ')} (calibration.json)")
    if f.metrics.get("synthesis"):
        parts.append("between-site heterogeneity (metrics.json `synthesis`)")
    if not parts:
        return Evidence("author", "not in bundle: no shift, subgroup, calibration-design or synthesis analysis")
    return Evidence(
        "filled", "Sensitivity of performance examined across: " + _join(parts) + ".", ("shift.json", "subgroups.json")
    )


def _internal(f: Facts) -> Evidence:
    dev = f.sites_with("development")
    sites = f.metrics.get("sites") or {}
    if not dev:
        return Evidence("author", "not in bundle: no site has the development role")
    text = "Apparent performance at the development site(s): " + _join(
        _block_text(s, sites[s]) for s in dev if s in sites
    )
    return Evidence("filled", text + ".", ("metrics.json", "sites.json"))


def _external(f: Facts) -> Evidence:
    ext = f.sites_with("external")
    sites = f.metrics.get("sites") or {}
    if not ext:
        return Evidence("author", "not in bundle: no site has the external role")
    return Evidence(
        "filled",
        "External sites: " + _join(_block_text(s, sites[s]) for s in ext if s in sites) + ".",
        ("metrics.json", "sites.json"),
    )


def _partitions(f: Facts) -> Evidence:
    cluster = (f.protocol.get("metrics") or {}).get("cluster_by") or "patient_id"
    text = (
        f"Sites are separate cohorts ({_join(f.site_order, ', ')}); intervals resample clusters of {cluster}, "
        "so cases of one patient stay together"
    )
    return Evidence("filled", text + ".", ("protocol.yaml", "sites.json"))


def _software(f: Facts) -> Evidence:
    sw = f.bundle.provenance.get("software") or {}
    if not sw:
        return Evidence("author", "not in bundle: provenance.json lists no software")
    text = "Evaluation environment (provenance.json): " + _join(
        (f"{k} {v or 'not installed'}" for k, v in sw.items()), ", "
    )
    return Evidence("filled", text + ".", ("provenance.json",))


def _code(f: Facts) -> Evidence:
    prov = f.bundle.provenance
    sw = prov.get("software") or {}
    ck = prov.get("checkpoint") or {}
    text = f"Evaluated with validate {sw.get('validate') or prov.get('validate_version')}"
    if ck.get("sha256"):
        text += f"; the model checkpoint's sha256 is {ck['sha256']}"
    return Evidence("filled", text + " (provenance.json).", ("provenance.json",))


def _protocol_doc(f: Facts) -> Evidence:
    proto = f.bundle.provenance.get("protocol") or {}
    files = f.bundle.provenance.get("files") or {}
    return Evidence(
        "filled",
        "The validation protocol that ran is in the bundle "
        f"(protocol.yaml: {proto.get('name')} v{proto.get('version')}, "
        f"sha256 {proto.get('sha256')}); provenance.json holds the sha256 of {len(files)} bundle file(s).",
        ("protocol.yaml", "provenance.json"),
    )


def _deidentification(f: Facts) -> Evidence:
    ids = f.bundle.provenance.get("case_ids")
    if not ids:
        return Evidence("author", "not in bundle: provenance.json does not say how case identifiers are stored")
    return Evidence(
        "filled", f"Case and patient identifiers in the bundle: {ids} (provenance.json).", ("provenance.json",)
    )


def _acquisition(f: Facts) -> Evidence:
    shift = f.bundle.shift
    if shift is None:
        return _absent("shift.json", "no acquisition columns analysed")
    cols = shift.get("columns") or {}
    equipment = cols.get("equipment") or []
    if not equipment and not cols.get("image_stats"):
        return Evidence("author", "not in bundle: no equipment or image columns (a tabular or feature protocol)")
    text = f"Equipment columns compared across sites: {_join(equipment, ', ') or 'none'}"
    if cols.get("image_stats"):
        text += f"; image statistics: {_join(cols['image_stats'], ', ')}"
    return Evidence("filled", text + " (shift.json).", ("shift.json",))


def _failure_analysis(f: Facts) -> Evidence:
    cases = f.bundle.cases
    if not cases or not cases.get("rankings"):
        return _absent("cases.json", "no error ranking")
    rows = []
    for r in cases["rankings"]:
        label = f"{r.get('label')} " if r.get("label") else ""
        per = _join(f"{s} {v.get('errors')} of {v.get('cases')}" for s, v in (r.get("sites") or {}).items())
        rows.append(f"{label}at {fmt(r.get('threshold'), 2)}: errors {per}")
    return Evidence(
        "filled",
        f"Errors per site and the {cases.get('per_site')} most confident errors of each, with their attributes "
        "(cases.json; the dashboard's Cases page): " + _join(rows) + ".",
        ("cases.json",),
    )


def _limitations(f: Facts) -> Evidence:
    items = []
    for s, b in (f.metrics.get("sites") or {}).items():
        if b.get("insufficient"):
            items.append(f"{s} has too little data: {b.get('reason')}")
        items += [f"{registry.label(m)} undefined at {s}: {why}" for m, why in (b.get("undefined") or {}).items()]
    dev = f.sites_with("development")
    if dev:
        items.append(f"metrics at {_join(dev, ', ')} are apparent (in-sample) performance")
    if len(f.failures):
        items.append(_failure_counts(f))
    elif not f.has("failures.csv"):
        items.append(_NO_FAILURES_FILE)
    return Evidence(
        "filled",
        "The bundle's own limitations (report section 9): " + (_join(items) or "none noted") + ".",
        ("metrics.json", "failures.csv"),
    )


def _input_failures(f: Facts) -> Evidence:
    if not f.has("failures.csv"):
        return _absent("failures.csv", "a site or combined bundle holds no case rows")
    text = _failure_counts(f)
    return Evidence("filled", text[:1].upper() + text[1:] + " (failures.csv).", ("failures.csv",))


def _indeterminate(f: Facts) -> Evidence:
    base = _input_failures(f)
    if base.status == "author":
        return base
    return Evidence(
        "filled", base.text + " Such cases are excluded from every metric and listed with their reason.", base.sources
    )


def _gates(f: Facts) -> Evidence:
    gates = f.bundle.gates
    if gates is None:
        return _absent("gates.json", "no release gates declared")
    c = gates.get("counts") or {}
    failed = _join(sorted({r["gate"] for r in gates.get("rows") or [] if r.get("verdict") == "fail"}), ", ")
    text = (
        f"Pre-declared release gates: verdict {str(gates.get('verdict')).upper()}, "
        f"{len(gates.get('rows') or [])} check(s): "
        f"{c.get('pass')} pass, {c.get('warn')} warn, {c.get('fail')} fail"
        + (f" (failing: {failed})" if failed else "")
        + " (gates.json, report section 1)."
    )
    return Evidence("filled", text, ("gates.json",))


FINDERS: dict[str, Callable[[Facts], Evidence]] = {
    "description": _description,
    "study_kind": _study_kind,
    "sites_setting": _sites_setting,
    "dates": _dates,
    "where_when": _where_when,
    "preprocessing": _preprocessing,
    "predictors": _predictors,
    "outcome": _outcome,
    "sample_size": _sample_size,
    "missing": _missing,
    "data_use": _data_use,
    "heterogeneity": _heterogeneity,
    "measures": _measures,
    "uncertainty": _uncertainty,
    "updating": _updating,
    "updating_results": _updating_results,
    "prediction_calc": _prediction_calc,
    "model_identity": _model_identity,
    "index_test": _index_test,
    "fairness": _fairness,
    "model_output": _model_output,
    "thresholds": _thresholds,
    "shift": _shift,
    "flow": _flow,
    "analysis_counts": _analysis_counts,
    "characteristics": _characteristics,
    "performance": _performance,
    "diagnostic": _diagnostic,
    "crosstab": _crosstab,
    "variability": _variability,
    "robustness": _robustness,
    "internal": _internal,
    "external": _external,
    "partitions": _partitions,
    "software": _software,
    "code": _code,
    "protocol_doc": _protocol_doc,
    "deidentification": _deidentification,
    "acquisition": _acquisition,
    "failure_analysis": _failure_analysis,
    "limitations": _limitations,
    "input_failures": _input_failures,
    "indeterminate": _indeterminate,
    "gates": _gates,
}

_RANK = {"author": 0, "partial": 1, "filled": 2}


def fill(bundle, name: str) -> list[Row]:
    """Every item of guideline ``name`` with its status and evidence from ``bundle``."""
    guideline = GUIDELINES[name]
    facts = Facts(bundle)
    rows = []
    for item in guideline.items:
        if item.finder is None:
            rows.append(Row(item, "author", "", ()))
            continue
        ev = FINDERS[item.finder](facts)
        status = ev.status if _RANK[ev.status] <= _RANK[item.cap] else item.cap
        rows.append(Row(item, status, ev.text, ev.sources))
    return rows


def counts(rows: Sequence[Row]) -> dict[str, int]:
    return {s: sum(r.status == s for r in rows) for s in ("filled", "partial", "author")}


# ---- Markdown ------------------------------------------------------------------------------------------------

_LEGEND = (
    "Status: **filled** — the bundle holds the evidence (the text says where); **partial** — the bundle holds "
    "part of it, the last column says what the author must add; **author** — nothing in the bundle answers the "
    'item (or the file that would is absent: "not in bundle"), the author must supply it. Item texts are '
    "paraphrased; read the published checklist for the exact wording."
)


def checklist_markdown(bundle, name: str) -> str:
    """The checklist of guideline ``name`` for ``bundle`` as a Markdown document."""
    g: Guideline = GUIDELINES[name]
    rows = fill(bundle, name)
    c = counts(rows)
    out = [
        f"{MARKER} ({g.key}) -->",
        f"# Reporting checklist: {g.name} — {markdown_text(bundle.name)}",
        "",
        f"Guideline: {markdown_text(g.citation)}",
        "",
        markdown_text(g.note),
        "",
        f"{len(rows)} items: {c['filled']} filled from the bundle, {c['partial']} partly filled, "
        f"{c['author']} for the author.",
        "",
        _LEGEND,
        "",
    ]
    section = None
    for r in rows:
        if r.item.section != section:
            section = r.item.section
            out += [
                "",
                f"## {markdown_text(section)}",
                "",
                "| Item | Topic | Asks for (paraphrase) | Status | Evidence in the bundle | Author to supply |",
                "|---|---|---|---|---|---|",
            ]
        out.append(
            "| "
            + " | ".join(
                markdown_text(x)
                for x in (r.item.id, r.item.topic, r.item.text, r.status, r.evidence or "—", r.author or "—")
            )
            + " |"
        )
    return "\n".join(out) + "\n"


# ---- the report section ------------------------------------------------------------------------------------------

_TAG_STYLE = {"filled": "pass", "partial": "warn"}


def _tag(status: str) -> str:
    cls = _TAG_STYLE.get(status)
    if cls:
        return f'<span class="tag {cls}">{status}</span>'
    return f'<span class="tag" style="background:#5b6475">{status}</span>'


def checklist_html(bundle, names: Sequence[str]) -> str:
    """The body of the report's "Reporting checklists" section: one table per guideline in ``names``."""
    esc = html.escape
    out = [
        '<p class="note">Each item of the reporting guideline mapped to this bundle\'s evidence. <b>filled</b>: the '
        "bundle holds the evidence; <b>partial</b>: it holds part, the last column says what the author must add; "
        "<b>author</b>: nothing in the bundle answers it. Item texts are paraphrased with the guideline's citation; "
        "read the published checklist for the exact wording. <code>validate report --checklist</code> also writes "
        "each checklist as Markdown.</p>"
    ]
    for name in names:
        g = GUIDELINES[name]
        rows = fill(bundle, name)
        c = counts(rows)
        out.append(
            f'<h3 id="checklist-{esc(g.key)}">{esc(g.name)}</h3><p class="small">{esc(g.citation)} {esc(g.note)}</p>'
            f"<p>{len(rows)} items: {c['filled']} filled, {c['partial']} partly filled, "
            f"{c['author']} for the author.</p>"
        )
        body = "".join(
            f"<tr><td>{esc(r.item.id)}</td><td>{esc(r.item.topic)}</td><td>{esc(r.item.text)}</td><td>{_tag(r.status)}</td>"
            f"<td>{esc(r.evidence or '—')}</td><td>{esc(r.author or '—')}</td></tr>"
            for r in rows
        )
        out.append(
            '<div class="scroll"><table class="checklist"><thead><tr><th>Item</th><th>Topic</th>'
            '<th style="min-width:14em">Asks for</th>'
            f"<th>Status</th><th>Evidence in the bundle</th><th>Author to supply</th></tr></thead><tbody>{body}</tbody>"
            "</table></div>"
        )
    return "".join(out)


def checklist_section(bundle, names: Sequence[str]) -> str:
    """The report's section 10 (empty when no checklist was asked for)."""
    if not names:
        return ""
    return f'<section id="checklists"><h2>10. Reporting checklists</h2>{checklist_html(bundle, names)}</section>'
