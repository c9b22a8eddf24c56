"""Metric BLOCKs (DESIGN.md, Metrics JSON): every metric of a set of cases with its interval.

Which entries a binary BLOCK holds, and how each gets its interval, is declared in
:mod:`validate.metrics.registry` (one entry per metric): DeLong for AUROC, Wald for calibration
intercept and slope, a test's statistic and p-value for Hosmer-Lemeshow and Spiegelhalter, bootstrap
percentile for the rest (the registry's replicate kernels, :mod:`validate.metrics.replicates`, on
replicate weights from :mod:`validate.metrics.bootstrap`, clustered by patient and stratified by site
when given).

Insufficiency rule (documented contract): a block is ``insufficient`` when it has fewer than
``min_cases`` cases, or fewer than ``min_events`` events, or fewer than ``min_events`` non-events
(multiclass: the rarest class; multilabel: the rarest label's events or non-events). Its numbers are
kept; ``"insufficient": true`` and ``"reason"`` are added.

Undefined metrics (e.g. AUROC with one class, PPV with no positive call) are ``null`` — never NaN — and
the reason is given under ``"undefined": {metric: reason}``.
"""

from __future__ import annotations

import math

import numpy as np

from validate.metrics import ece_interval, registry
from validate.metrics.bootstrap import iter_bootstrap_weights, percentile_interval, replicate_chunk
from validate.metrics.calibration import bin_index
from validate.metrics.checks import as_labels, as_probabilities
from validate.metrics.discrimination import ScoreOrder, weighted_auroc
from validate.metrics.ece_interval import BinnedGaps
from validate.metrics.kernels import _auprc_untied  # noqa: F401 - re-exported
from validate.metrics.operating import threshold_for_sensitivity
from validate.metrics.replicates import BinaryCases
from validate.metrics.settings import MetricSettings

BOOTSTRAP_CHUNK = 100


def _num(x) -> float | None:
    """A JSON number: None for NaN/inf."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def entry(estimate, lo=None, hi=None, method: str = "bootstrap") -> dict:
    """One metric entry ``{"estimate", "ci_low", "ci_high", "method"}`` with NaN mapped to None."""
    est = _num(estimate)
    return {
        "estimate": est,
        "ci_low": _num(lo) if est is not None else None,
        "ci_high": _num(hi) if est is not None else None,
        "method": method,
    }


def insufficiency(n: int, counts: dict, settings: MetricSettings) -> str | None:
    """The reason a block is insufficient, or None. ``counts`` maps a description ("events",
    "non-events", "cases of class x") to its count; each must reach ``min_events``."""
    reasons = []
    if n < settings.min_cases:
        reasons.append(f"{n} cases < min_cases {settings.min_cases}")
    for what, c in counts.items():
        if c < settings.min_events:
            reasons.append(f"{c} {what} < min_events {settings.min_events}")
    return "; ".join(reasons) or None


class _BinaryData(BinaryCases):
    """One block's cases sorted once by their ranking score (main's signature: ``score`` the fourth
    argument); the registry's replicate kernels run on it."""

    def __init__(self, y, p, bins, score=None, logits=None):
        super().__init__(y, p, bins, logits=logits, score=score)


def _ranking_scores(scores, p: np.ndarray) -> np.ndarray:
    """The scores AUROC and AUPRC rank: ``scores`` when given (checked finite, one per case), else p."""
    if scores is None:
        return p
    from validate.metrics.checks import as_scores

    return as_scores(scores, p.size, "scores")


def _ranking_matrix(scores, P: np.ndarray) -> np.ndarray:
    S = np.asarray(scores, dtype=np.float64)
    if S.shape != P.shape or not np.all(np.isfinite(S)):
        raise ValueError(f"scores must be finite and of the probabilities' shape {P.shape}, got {S.shape}")
    return S


def _in_order(w: np.ndarray, order: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Replicate weights (r, n) with columns permuted to ``order``, C-contiguous (the replicate kernels
    run along rows). Weights arriving column-major (as a column gather leaves them) are gathered as rows
    of the transpose, a cache-sized chunk of cases at a time, instead of one strided gather."""
    if w.flags.c_contiguous or not w.flags.f_contiguous:
        return np.take(w, order, axis=1)
    wt = w.T
    out = np.empty((w.shape[0], order.size), dtype=w.dtype)
    for c0 in range(0, order.size, chunk):
        out[:, c0 : c0 + chunk] = np.take(wt, order[c0 : c0 + chunk], axis=0).T
    return out


def binary_block(
    y,
    p,
    *,
    settings: MetricSettings = MetricSettings(),
    clusters=None,
    strata=None,
    threshold_carry: float | None = None,
    logits=None,
    smooth_intervals: bool = True,
    scores=None,
) -> dict:
    """The DESIGN.md BLOCK of a binary model on one set of cases.

    ``y`` 0/1 labels, ``p`` probabilities of class 1 (``logits``, when given, are used for the
    calibration intercept and slope instead of logit(p), avoiding the 1e-15 clip). ``scores``: what
    AUROC (with its DeLong interval) and AUPRC rank — any score monotone in p; default ``logits`` when
    given, else p (see :class:`~validate.metrics.replicates.BinaryCases`). ``clusters``
    (patient ids) and ``strata`` (sites) shape the bootstrap. ``threshold_carry``: the threshold
    found for ``settings.target_sensitivity`` at the development site; without it the block finds its own.
    ``smooth_intervals=False`` skips the bootstrap of the lowess/loess errors (the costliest part).
    """
    y = as_labels(y)
    p = as_probabilities(p, y.size)
    n = int(y.size)
    events = int(y.sum())
    block: dict = {"n": n, "n_events": events, "prevalence": _num(events / n) if n else None}
    undefined: dict[str, str] = {}
    if n == 0:
        block["insufficient"] = True
        block["reason"] = "no cases"
        return block
    rank = _ranking_scores(scores if scores is not None else logits, p)
    data = BinaryCases(y, p, settings.bins, logits=logits, score=rank)
    thresholds = list(settings.thresholds)
    t_target = _target_threshold(y, p, settings.target_sensitivity, threshold_carry)
    op_thresholds = thresholds + ([t_target] if t_target is not None and t_target not in thresholds else [])
    decision = settings.decision_thresholds
    gaps = BinnedGaps(data)
    boot = _BinaryEntries(
        _binary_points(data, op_thresholds, settings.ci_level, decision),
        _binary_replicates(data, op_thresholds, settings, clusters, strata, smooth_intervals, decision, gaps),
        settings,
        smooth_intervals,
        gaps,
    )
    _metric_entries(block, undefined, data, boot, events, settings.ci_level)
    _operating_point_entries(block, undefined, boot, thresholds)
    if settings.target_sensitivity is not None:
        block["target_sensitivity"] = _target_entry(
            undefined, boot, settings.target_sensitivity, t_target, carried=threshold_carry is not None
        )
    if decision:
        block["decision"] = _decision_entries(undefined, boot, decision, events / n)
    reason = _precision_field(
        block, data, settings, insufficiency(n, {"events": events, "non-events": n - events}, settings)
    )
    if reason:
        block["insufficient"] = True
        block["reason"] = reason
    if undefined:
        block["undefined"] = undefined
    return block


def _precision_field(block: dict, data: BinaryCases, settings: MetricSettings, count_reason: str | None) -> str | None:
    """Adds the block's ``precision`` (:func:`validate.metrics.precision.block_precision`) and returns the
    block's insufficiency reason: the count floor decides whether the block is insufficient; when it is,
    the reason leads with the precision shortfall, then the counts."""
    from validate.metrics.precision import block_precision

    block["precision"] = block_precision(
        block,
        data.y_in,
        data.p_in,
        data.logits,
        settings.precision,
        decision_thresholds=settings.decision_thresholds,
        level=settings.ci_level,
    )
    lead = block["precision"]["reason"]
    return f"{lead}; {count_reason}" if count_reason and lead else count_reason


def _target_threshold(
    y: np.ndarray, p: np.ndarray, target: float | None, threshold_carry: float | None
) -> float | None:
    """The threshold of the target sensitivity: the one carried from the development site, else the
    highest threshold reaching ``target`` on these cases; None without a target or when undefined."""
    if target is None:
        return None
    t = float(threshold_carry) if threshold_carry is not None else threshold_for_sensitivity(y, p, target)
    return t if math.isfinite(t) else None


def _binary_points(data: BinaryCases, op_thresholds: list, level: float, decision=()) -> dict:
    """Point estimates of every registered binary metric: each replicate kernel at unit weights
    (operating points as ``name@threshold``), or the metric's own point function where a bootstrap
    metric declares one (the smoothers)."""
    ones = np.ones((1, data.n))
    values = data.replicate(ones, op_thresholds, want_smooth=False, decision=decision)
    point = {k: float(v[0]) for k, v in values.items()}
    for m in registry.metrics_for("binary"):
        if m.interval == "bootstrap" and m.point is not None:
            point[m.name] = m.point(data, level)
    return point


def _binary_replicates(
    data: BinaryCases,
    op_thresholds: list,
    settings: MetricSettings,
    clusters,
    strata,
    smooth_intervals: bool,
    decision=(),
    gaps: BinnedGaps | None = None,
) -> dict[str, np.ndarray]:
    """``{name: (n_bootstrap,)}``: every kernel on the clustered, stratified bootstrap replicates, in
    chunks (with ``gaps``, the ECE error replicates of :mod:`validate.metrics.ece_interval` too); empty
    without replicates."""
    reps: dict[str, list] = {}
    if settings.n_bootstrap > 0:
        for _, w in iter_bootstrap_weights(
            settings.n_bootstrap,
            data.n,
            clusters=clusters,
            strata=strata,
            seed=settings.seed,
            chunk=replicate_chunk(data.n, BOOTSTRAP_CHUNK),
            order=data.order,
        ):
            vals = data.replicate(w, op_thresholds, want_smooth=smooth_intervals, decision=decision)
            if gaps is not None:
                vals.update(gaps.error_replicates(w))
            for k, v in vals.items():
                reps.setdefault(k, []).append(np.asarray(v))
            # not held while the next chunk is drawn, beside the block's per-case matrices
            del w, vals
    return {k: np.concatenate(v) for k, v in reps.items()}


class _BinaryEntries:
    """The bootstrap entries of one binary block: a point estimate with its percentile interval where
    replicates were drawn, else with no interval."""

    def __init__(
        self,
        point: dict,
        replicates: dict[str, np.ndarray],
        settings: MetricSettings,
        smooth_intervals: bool,
        gaps: BinnedGaps | None = None,
    ):
        self.point = point
        self.replicates = replicates
        self.gaps = gaps
        self.level = settings.ci_level
        # without replicates for a key: none drawn at all, or the smoothers' skipped on purpose
        self.no_interval = "none" if settings.n_bootstrap == 0 or not smooth_intervals else "bootstrap"

    def __call__(self, name: str, key: str | None = None) -> dict:
        key = key or name
        est = self.point[key]
        if key in ece_interval.METHODS:
            bound = ece_interval.bound_entry(key, est, self.replicates, self.gaps, self.level)
            if bound is not None:
                e = entry(est, bound["ci_low"], bound["ci_high"], bound["method"])
                if "debiased" in bound and e["estimate"] is not None:
                    e["debiased"] = _num(bound["debiased"])
                return e
        if key in self.replicates:
            lo, hi = percentile_interval(self.replicates[key], self.level)
            return ece_interval.with_note(entry(est, lo, hi, "bootstrap"))
        return entry(est, None, None, self.no_interval)


def _metric_entries(
    block: dict, undefined: dict, data: BinaryCases, boot: _BinaryEntries, events: int, level: float
) -> None:
    """One entry per registered binary metric that is not an operating point, by its interval method;
    with one class only, the metrics undefined then are None with the reason."""
    n = data.n
    one_class = events == 0 or events == n
    single_reason = f"only one class present ({'no events' if events == 0 else 'no non-events'})"
    for m in registry.metrics_for("binary"):
        if m.at_threshold or m.at_decision or m.interval == "none":
            continue
        if one_class and m.one_class is not None:
            block[m.name] = None
            undefined[m.name] = single_reason + (f": {m.one_class}" if m.one_class else "")
        elif m.interval == "bootstrap":
            block[m.name] = boot(m.name)
        else:
            assert m.point is not None  # the registry declares a point function for every other interval
            block[m.name], why = _ENTRY[m.interval](m, m.point(data, level))
            if why:
                undefined[m.name] = why


def _op_metrics() -> list[str]:
    return [m.name for m in registry.metrics_for("binary") if m.at_threshold]


def _op_entries(boot: _BinaryEntries, t: float) -> dict:
    """Every operating-point metric at threshold ``t`` (None where undefined)."""
    out: dict = {"threshold": float(t)}
    for m in _op_metrics():
        out[m] = boot(m, f"{m}@{t!r}")
        if out[m]["estimate"] is None:
            out[m] = None
    return out


def _operating_point_entries(block: dict, undefined: dict, boot: _BinaryEntries, thresholds: list) -> None:
    """``operating_points`` at the settings' thresholds; the block's own operating-point entries are the
    first threshold's."""
    ops = [_op_entries(boot, t) for t in thresholds]
    block["operating_points"] = ops
    if ops:
        for m in _op_metrics():
            block[m] = ops[0][m]
            if block[m] is None:
                undefined[m] = _op_reason(m, thresholds[0])


def _decision_entries(undefined: dict, boot: _BinaryEntries, thresholds, prevalence: float) -> list[dict]:
    """One item per decision threshold: every entry of the net-benefit family (registry ``at_decision``)
    with its percentile interval and bootstrap standard error ``se`` (sd of the finite replicates,
    ddof = 1; None without replicates), and ``beats_defaults`` from the same replicates. An undefined
    entry is None with its reason under ``undefined`` as ``"<metric>@<t>"``."""
    from validate.metrics.net_benefit import beats_defaults

    items = []
    for t in thresholds:
        item: dict = {"threshold": float(t), "prevalence": _num(prevalence)}
        for m in registry.metrics_for("binary"):
            if not m.at_decision or m.replicate is None:
                continue
            key = f"{m.name}@{t!r}"
            e = boot(m.name, key)
            if e["estimate"] is None:
                item[m.name] = None
                undefined[key] = m.why_undefined or f"undefined at decision threshold {t}"
                continue
            e["se"] = _replicate_sd(boot.replicates.get(key))
            item[m.name] = e
        nb, ref = (boot.replicates.get(f"{name}@{t!r}") for name in ("net_benefit", "net_benefit_treat_all"))
        item["beats_defaults"] = beats_defaults(nb, ref) if nb is not None and ref is not None else None
        items.append(item)
    return items


def _replicate_sd(replicates) -> float | None:
    """The bootstrap standard error: sd (ddof = 1) of the finite replicates; None with fewer than two."""
    if replicates is None:
        return None
    r = np.asarray(replicates, dtype=np.float64)
    r = r[np.isfinite(r)]
    return _num(np.std(r, ddof=1)) if r.size > 1 else None


def _target_entry(undefined: dict, boot: _BinaryEntries, target: float, t_target: float | None, carried: bool) -> dict:
    """The operating point at the target sensitivity's threshold, and whether it was carried."""
    tgt: dict = {"target": float(target), "threshold": t_target, "carried": carried}
    if t_target is None:
        undefined["target_sensitivity"] = "no events to set a threshold on"
    else:
        tgt.update({k: v for k, v in _op_entries(boot, t_target).items() if k != "threshold"})
    return tgt


def _delong_entry(m, d: dict) -> tuple[dict | None, str | None]:
    e = entry(d["estimate"], d["ci_low"], d["ci_high"], "delong")
    e["se"] = _num(d["se"])
    return e, None


def _wald_entry(m, fit: dict) -> tuple[dict | None, str | None]:
    """A logistic fit's Wald entry; undefined when the fit did not converge and the declaration says
    why (the slope; the intercept's one-parameter fit is kept as it is)."""
    if not fit.get("converged", True) and m.why_undefined:
        return None, m.why_undefined
    e = entry(fit["estimate"], fit["ci_low"], fit["ci_high"], "wald")
    e["se"] = _num(fit.get("se")) if e["estimate"] is not None else None  # the synthesis pools with it
    return e, None


def _test_entry(m, result: dict) -> tuple[dict | None, str | None]:
    """A test's statistic and p-value as JSON numbers (other keys, e.g. df and groups, as they are);
    the declared reason when there is no statistic."""
    value = {k: (_num(v) if k in ("statistic", "p_value") else v) for k, v in result.items()}
    return value, (m.why_undefined if result.get("statistic") is None else None)


_ENTRY = {"delong": _delong_entry, "wald": _wald_entry, "test": _test_entry}


def _op_reason(metric: str, t: float) -> str:
    return {
        "sensitivity": "no events",
        "specificity": "no non-events",
        "ppv": f"no case called positive at threshold {t}",
        "npv": f"no case called negative at threshold {t}",
    }.get(metric, f"undefined at threshold {t}")


def _bootstrap_entries(point: dict, stat, n: int, settings: MetricSettings, clusters, strata) -> dict:
    """Entries for metrics whose replicate values ``stat(weights (k, n)) -> {name: (k,)}`` gives."""
    reps: dict[str, list] = {}
    if settings.n_bootstrap > 0:
        for _, w in iter_bootstrap_weights(
            settings.n_bootstrap,
            n,
            clusters=clusters,
            strata=strata,
            seed=settings.seed,
            chunk=replicate_chunk(n, BOOTSTRAP_CHUNK),
        ):
            for k, v in stat(w).items():
                reps.setdefault(k, []).append(np.asarray(v, dtype=np.float64))
    out = {}
    for k, est in point.items():
        if k in reps:
            lo, hi = percentile_interval(np.concatenate(reps[k]), settings.ci_level)
            out[k] = ece_interval.with_note(entry(est, lo, hi, "bootstrap"))
        else:
            out[k] = entry(est, None, None, "none")
    return out


def multiclass_block(
    y,
    P,
    *,
    settings: MetricSettings = MetricSettings(),
    class_names=None,
    clusters=None,
    strata=None,
    smooth_intervals: bool = True,
    scores=None,
) -> dict:
    """The DESIGN.md BLOCK of a multiclass model: ``accuracy``, ``auroc_macro`` (one-vs-rest),
    top-label ``ece``, ``ece_classwise``, multiclass ``brier`` and ``log_loss`` with bootstrap intervals,
    and a one-vs-rest binary BLOCK per class under ``classes``.

    ``n_events`` and ``prevalence`` are those of the rarest class (the count that limits the estimates);
    ``class_counts`` gives every class. Insufficient when the rarest class has fewer than
    ``min_events`` cases or n < ``min_cases``. ``scores`` (n, K): what the one-vs-rest AUROCs rank,
    monotone in each column of P (e.g. the one-vs-rest log-odds of the logits, which do not saturate);
    default P.
    """
    from validate.metrics.multiclass import _brier_terms, _nll_terms, multiclass_args

    y, P = multiclass_args(y, P)
    n, K = P.shape
    names = list(class_names) if class_names is not None else [str(k) for k in range(K)]
    if len(names) != K:
        raise ValueError(f"{len(names)} class names for {K} probability columns")
    counts = np.bincount(y, minlength=K)
    rare = int(counts.min()) if n else 0
    block: dict = {
        "n": int(n),
        "n_events": rare,
        "prevalence": _num(rare / n) if n else None,
        "class_counts": {nm: int(c) for nm, c in zip(names, counts, strict=True)},
    }
    if n == 0:
        block.update(insufficient=True, reason="no cases")
        return block
    conf = P.max(axis=1)
    correct = (P.argmax(axis=1) == y).astype(np.float64)
    brier_t, nll_t = _brier_terms(y, P), _nll_terms(y, P)
    onehot = [(y == k).astype(np.float64) for k in range(K)]
    conf_idx = bin_index(conf, settings.bins)
    class_idx = [bin_index(P[:, k], settings.bins) for k in range(K)]
    S = P if scores is None else _ranking_matrix(scores, P)
    orders = [ScoreOrder.of(S[:, k]) for k in range(K)]
    present = [0 < counts[k] < n for k in range(K)]

    def stat(w):
        tot = w.sum(axis=1)
        from validate.metrics.calibration import weighted_ece

        out = {
            "accuracy": w @ correct / tot,
            "brier": w @ brier_t / tot,
            "log_loss": w @ nll_t / tot,
            "ece": weighted_ece(correct, conf, w, bins=settings.bins, idx=conf_idx),
            "ece_classwise": np.mean(
                [weighted_ece(onehot[k], P[:, k], w, bins=settings.bins, idx=class_idx[k]) for k in range(K)], axis=0
            ),
        }
        if all(present):
            out["auroc_macro"] = np.mean(
                [weighted_auroc(onehot[k], P[:, k], w, order=orders[k]) for k in range(K)], axis=0
            )
        return out

    point = {k: float(v[0]) for k, v in stat(np.ones((1, n))).items()}
    entries = _bootstrap_entries(point, stat, n, settings, clusters, strata)
    undefined = {}
    block.update(entries)
    if "auroc_macro" not in block:
        block["auroc_macro"] = None
        undefined["auroc_macro"] = "a class is absent (or is every case): its one-vs-rest AUROC is undefined"
    block["classes"] = {
        names[k]: binary_block(
            onehot[k],
            P[:, k],
            settings=settings,
            clusters=clusters,
            strata=strata,
            smooth_intervals=smooth_intervals,
            scores=S[:, k],
        )
        for k in range(K)
    }
    reason = insufficiency(int(n), {f"cases of class {names[k]}": int(counts[k]) for k in range(K)}, settings)
    if reason:
        block.update(insufficient=True, reason=reason)
    if undefined:
        block["undefined"] = undefined
    return block


#: The binary metrics a multilabel BLOCK averages over labels: the registry's ``<metric>_macro`` entries.
MACRO_METRICS = tuple(m.name[: -len("_macro")] for m in registry.metrics_for("multilabel") if m.name.endswith("_macro"))


def multilabel_block(
    Y,
    P,
    *,
    settings: MetricSettings = MetricSettings(),
    label_names=None,
    clusters=None,
    strata=None,
    smooth_intervals: bool = True,
    scores=None,
) -> dict:
    """The DESIGN.md BLOCK of a multilabel model: a binary BLOCK per label under ``labels`` and macro
    averages (unweighted mean over labels where defined) ``auroc_macro``, ``auprc_macro``,
    ``brier_macro``, ``log_loss_macro``, ``ece_macro`` with bootstrap intervals of the mean (repeated
    under ``macro`` by plain metric name: ``macro["ece"]`` is ``ece_macro``).
    ``n_events``/``prevalence`` are the rarest label's; insufficient when any label has fewer than
    ``min_events`` events or non-events, or n < ``min_cases``. ``scores`` (n, L): what the AUROCs and
    AUPRCs rank (e.g. the logits), monotone in each column of P; default P."""
    Y = np.asarray(Y)
    P = np.asarray(P, dtype=np.float64)
    if Y.ndim != 2 or Y.shape != P.shape:
        raise ValueError(f"Y and P must be matrices of the same shape, got {Y.shape} and {P.shape}")
    n, L = Y.shape
    names = list(label_names) if label_names is not None else [str(k) for k in range(L)]
    Yf = np.column_stack([as_labels(Y[:, k], f"Y[:, {k}]") for k in range(L)]) if L else Y.astype(float)
    for k in range(L):
        as_probabilities(P[:, k], n, f"P[:, {k}]")
    events = Yf.sum(axis=0).astype(int)
    limiting = np.minimum(events, n - events)
    rare = int(limiting.min()) if L else 0
    block: dict = {
        "n": int(n),
        "n_events": rare,
        "prevalence": _num(rare / n) if n else None,
        "label_counts": {nm: int(e) for nm, e in zip(names, events, strict=True)},
    }
    if n == 0:
        block.update(insufficient=True, reason="no cases")
        return block
    S = P if scores is None else _ranking_matrix(scores, P)
    block["labels"] = {
        names[k]: binary_block(
            Yf[:, k],
            P[:, k],
            settings=settings,
            clusters=clusters,
            strata=strata,
            smooth_intervals=smooth_intervals,
            scores=S[:, k],
        )
        for k in range(L)
    }
    data = [BinaryCases(Yf[:, k], P[:, k], settings.bins, score=S[:, k]) for k in range(L)]
    defined = [0 < events[k] < n for k in range(L)]
    # metrics undefined with one class (AUROC, AUPRC) average over the labels that have both
    needs_both = {m.name for m in registry.metrics_for("binary") if m.one_class is not None}

    def stat(w):
        per = [d.replicate(_in_order(w, d.order), [], want_smooth=False, auroc=True) for d in data]
        out = {}
        for m in MACRO_METRICS:
            ks = [k for k in range(L) if defined[k] or m not in needs_both]
            if ks:
                out[f"{m}_macro"] = np.mean([per[k][m] for k in ks], axis=0)
        return out

    point = {k: float(v[0]) for k, v in stat(np.ones((1, n))).items()}
    block.update(_bootstrap_entries(point, stat, n, settings, clusters, strata))
    undefined = {f"{m}_macro": "no label with both classes" for m in MACRO_METRICS if f"{m}_macro" not in block}
    for name in undefined:
        block[name] = None
    # the same entries by plain metric name, for code that compares metrics across tasks
    block["macro"] = {m: block[f"{m}_macro"] for m in MACRO_METRICS}
    counts = {}
    for nm, e in zip(names, events, strict=True):
        counts[f"events of {nm}"] = int(e)
        counts[f"non-events of {nm}"] = int(n - e)
    reason = insufficiency(int(n), counts, settings)
    if reason:
        block.update(insufficient=True, reason=reason)
    if undefined:
        block["undefined"] = undefined
    return block
