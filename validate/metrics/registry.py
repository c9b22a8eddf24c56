"""The metric registry: one declaration per metric, and the only place that says what a metric is.

Every consumer iterates over :data:`METRICS` instead of keeping its own list: the metric blocks
(:mod:`validate.metrics.blocks`: which entries a BLOCK has, with which interval, from which function),
the subgroup gaps and the worst group (:mod:`validate.analysis.subgroups`), the ranking of
recalibration methods (:mod:`validate.calibrators.designs`), the labels and colour directions of the
charts (:mod:`validate.charts`), the tables of the report, the dashboard and the command line.
:func:`check_gate_metric` says whether a gate's metric name can be in a BLOCK of the task; the
protocol's gates are refused before a run by :mod:`validate.preflight`, which asks the metrics engine.

Adding a binary metric is one :class:`Metric` entry in :data:`METRICS` with its functions (a replicate
kernel for the blocks, see :mod:`validate.metrics.kernels`, and a weighted function where paired
comparisons should use it) and a test against an independent reference; the entry's ``shown`` says in
which tables it appears.

Definitions and sources are those of DESIGN.md ("Metrics JSON"); each entry repeats its own.

Public names: :class:`Metric`, :data:`METRICS`, :func:`get`, :func:`metrics_for`, :func:`names`,
:func:`label`, :func:`badness`, :func:`check_gate_metric`, :data:`BLOCK_FIELDS`, :data:`LISTS`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from validate.metrics import kernels as R

#: A segmentation NSD metric key: ``nsd_<τ>mm`` (a dot in τ written ``p``), optionally ``_median``.
NSD_KEY = re.compile(r"^nsd_(\d+(?:p\d+)?)mm(_median)?$")

TASKS = ("binary", "multiclass", "multilabel", "segmentation")
BINARY, MULTICLASS, MULTILABEL = ("binary",), ("multiclass",), ("multilabel",)
SEGMENTATION = ("segmentation",)

#: Where a metric can be shown or used, by list name (a :class:`Metric`'s ``shown`` gives its position):
LISTS = {
    "cli": "`validate metrics`: the columns of the printed table",
    "run_summary": "`validate run`: the columns of the printed per-site summary",
    "overview": "dashboard Overview: the per-site key metrics",
    "report_discrimination": "report section 4: the discrimination table per site",
    "report_calibration": "report section 5: the calibration table per site",
    "report_subgroups": "report section 6: the columns of the pooled subgroup tables",
    "report_methods": "report section 7: the columns of the recalibration methods table",
    "subgroup_gaps": "subgroups.json: metrics with a paired bootstrap gap group − site",
    "subgroup_worst": "subgroups.json: metrics whose worst group is named",
    "calibration_ranking": "calibration.json: metrics ranking the recalibration methods (and the dashboard's "
    "design figures)",
}

#: Keys of a BLOCK that are not metrics: counts, per-class or per-label blocks, notes.
BLOCK_FIELDS = {
    "binary": (
        "n",
        "n_events",
        "insufficient",
        "reason",
        "undefined",
        "operating_points",
        "target_sensitivity",
        "precision",
        "decision",
    ),
    "multiclass": ("n", "n_events", "insufficient", "reason", "undefined", "class_counts", "classes"),
    "multilabel": ("n", "n_events", "insufficient", "reason", "undefined", "label_counts", "labels", "macro"),
    "segmentation": ("n", "n_patients", "n_excluded", "insufficient", "reason", "undefined", "labels"),
}


@dataclass(frozen=True)
class Metric:
    """One metric of one or more tasks.

    name: the exact key in a metric BLOCK (DESIGN.md, Metrics JSON) and in gates.
    label: how tables and charts name it.
    tasks: the tasks whose BLOCK holds it (a name may be declared again for other tasks with another
        definition, e.g. the top-label ECE of a multiclass model; label and direction are then the same).
    definition: the definition and its source.
    direction: ``"higher"`` or ``"lower"`` is better, ``"target"`` (best at :attr:`target`), or None
        (descriptive: no better or worse).
    target: the ideal value where direction is ``"target"`` (calibration slope 1, intercept 0).
    interval: how a BLOCK gives its interval: ``"delong"``, ``"wald"``, ``"bootstrap"`` (percentile,
        from :attr:`replicate`), ``"test"`` (a test's statistic and p-value, no interval) or ``"none"``.
    point: the point estimate from the block's :class:`~validate.metrics.replicates.BinaryCases` and the
        interval level, where it is not the replicate kernel at unit weights (DeLong, Wald and tests
        return their dict; the smoothers a number).
    replicate: the replicate kernel ``f(draw) -> (k,)`` (``f(draw, i)`` at threshold ``i`` for
        operating-point metrics) of :mod:`validate.metrics.kernels`, binary blocks only.
    weighted: ``f(cases, w) -> (k,)`` on :class:`~validate.metrics.replicates.WeightedCases` for
        paired comparisons (subgroup gaps, recalibration designs); ``w=None`` gives the point estimate.
    ranking: computed from the order of the scores only (AUROC, AUPRC): the logit ranks as well as
        the probability, and a monotone recalibration cannot change it.
    at_threshold: an operating-point metric, computed at every threshold; the BLOCK's own entry is the
        first threshold's.
    at_decision: a member of the net-benefit family (:mod:`validate.metrics.net_benefit`), computed at
        every decision threshold of the protocol's ``decision`` section (kernel ``f(draw, i)`` at decision
        threshold ``i``); a BLOCK holds it only under ``decision`` (one item per threshold), and a gate
        names it ``<name>@<t>``.
    smooth: needs a smoother fit per replicate (costly: its bootstrap may be skipped).
    one_class: what happens when a BLOCK has one class only: None (still defined), ``""`` (undefined)
        or a note appended to the reason it is undefined.
    why_undefined: the reason given when the computation returns no value.
    digits: decimals shown (:mod:`validate.formatting`, the one number formatter: a smaller value that
        is not rounding noise gets two significant digits instead of reading 0).
    shown: ``{list name: position}``: the lists of :data:`LISTS` it belongs to, and where.
    in_block: False for quantities computed elsewhere only (``mean_score`` of the drift windows).
    synthesis: the scale the metric is pooled on across sites (``"logit"``, ``"log"`` or ``"identity"``;
        :mod:`validate.analysis.synthesis`), or None when it is not poolable (it needs a standard error
        per site and a meaningful between-site average).
    """

    name: str
    label: str
    tasks: tuple[str, ...]
    definition: str
    direction: str | None = None
    target: float | None = None
    interval: str = "bootstrap"
    point: Callable[..., Any] | None = None
    replicate: Callable[..., Any] | None = None
    weighted: Callable[..., Any] | None = None
    ranking: bool = False
    at_threshold: bool = False
    at_decision: bool = False
    smooth: bool = False
    one_class: str | None = None
    why_undefined: str | None = None
    digits: int = 3
    shown: dict[str, int] = field(default_factory=dict, hash=False, compare=False)
    in_block: bool = True
    synthesis: str | None = None

    def __post_init__(self):
        if self.direction not in (None, "higher", "lower", "target"):
            raise ValueError(f"metric {self.name}: direction {self.direction!r}")
        if (self.direction == "target") != (self.target is not None):
            raise ValueError(f"metric {self.name}: a target value goes with direction 'target'")
        if self.synthesis not in (None, "logit", "log", "identity"):
            raise ValueError(f"metric {self.name}: synthesis scale {self.synthesis!r}")
        if self.interval not in ("delong", "wald", "bootstrap", "test", "none"):
            raise ValueError(f"metric {self.name}: interval {self.interval!r}")
        unknown = set(self.shown) - set(LISTS)
        if unknown:
            raise ValueError(f"metric {self.name}: unknown list(s) {sorted(unknown)}")
        unknown_tasks = set(self.tasks) - set(TASKS)
        if unknown_tasks:
            raise ValueError(f"metric {self.name}: unknown task(s) {sorted(unknown_tasks)}")


def _smooth(name: str, label: str, definition: str, **kw) -> Metric:
    return Metric(
        name,
        label,
        BINARY,
        definition,
        direction="lower",
        smooth=True,
        point=lambda c, level: c.lowess_point()[name],
        replicate=R.smooth_kernel(name),
        **kw,
    )


def _delong(c, level):
    from validate.metrics.discrimination import delong_ci

    return delong_ci(c.y_in, c.score_in, level=level)


def _intercept(c, level):
    from validate.metrics.calibration import calibration_intercept

    return calibration_intercept(c.y_in, logits=c.logits, level=level)


def _slope(c, level):
    from validate.metrics.calibration import calibration_slope

    return calibration_slope(c.y_in, logits=c.logits, level=level)


def _hosmer_lemeshow(c, level):
    from validate.metrics.calibration import hosmer_lemeshow

    return hosmer_lemeshow(c.y_in, c.p_in)


def _spiegelhalter(c, level):
    from validate.metrics.calibration import spiegelhalter_z

    return spiegelhalter_z(c.y_in, c.p_in)


_LOWESS = (
    "of |p − s(p)|, s a lowess smooth of y on p (f = 2/3, no robustness iterations, delta = 1% of "
    "the range of p), as R's rms::val.prob"
)
_BIN15 = "15 equal-width bins, right-closed (a, b] with 0 in the first bin, weighted by counts, empty bins skipped"

# ---- segmentation: means of per-case metrics (validate.analysis.segmentation), each with its median
_SEG_MEAN = (
    "mean over cases of the per-case value (validate.metrics.segmentation.case_metrics); percentile "
    "interval of the patient-clustered bootstrap. "
)
_SEG_EMPTY = (
    " Empty masks (Metrics Reloaded, Maier-Hein et al. Nat Methods 2024): both empty count as perfect "
    "(or are excluded, per the protocol); exactly one empty as the worst value."
)
_SEG_BASE = (
    ("dice", "Dice", "higher", "2|P∩R| / (|P| + |R|) of the predicted and reference masks (Dice 1945)", 3, 1),
    ("iou", "IoU", "higher", "|P∩R| / |P∪R| (Jaccard index)", 3, None),
    (
        "nsd",
        "NSD",
        "higher",
        "normalised surface Dice at tolerance τ mm, key nsd_<τ>mm (1.5 mm: nsd_1p5mm): (|∂P within τ of ∂R| "
        "+ |∂R within τ of ∂P|) / (|∂P| + |∂R|) (Nikolov et al. 2021)",
        3,
        None,
    ),
    (
        "hd_mm",
        "HD (mm)",
        "lower",
        "Hausdorff distance: the larger of the two directed maximum boundary distances",
        2,
        None,
    ),
    (
        "hd95_mm",
        "HD95 (mm)",
        "lower",
        "the larger of the two directed 95th percentiles of boundary distances (MONAI's convention)",
        2,
        2,
    ),
    ("assd_mm", "ASSD (mm)", "lower", "mean of all boundary distances in both directions", 2, 3),
    ("area_abs_error_mm2", "|Area error| (mm²)", "lower", "|area of P − area of R| in mm² (2D masks)", 1, None),
    ("volume_abs_error_mm3", "|Volume error| (mm³)", "lower", "|volume of P − volume of R| in mm³ (3D masks)", 1, None),
    (
        "hc_abs_error_mm",
        "|HC error| (mm)",
        "lower",
        "|head circumference of the ellipse fitted to P − that of R| in mm (moments ellipse, Ramanujan's "
        "second perimeter approximation)",
        2,
        None,
    ),
)


def _segmentation_metrics() -> tuple[Metric, ...]:
    """The segmentation entries: each per-case metric's mean ``<m>`` and median ``<m>_median``."""
    out = []
    for name, label, direction, definition, digits, position in _SEG_BASE:
        shown = {"cli": position, "run_summary": position, "overview": position} if position else {}
        out.append(
            Metric(
                name,
                label,
                SEGMENTATION,
                _SEG_MEAN + definition + "." + _SEG_EMPTY,
                direction,
                digits=digits,
                shown=shown,
            )
        )
        out.append(
            Metric(
                f"{name}_median",
                f"{label}, median",
                SEGMENTATION,
                "median over cases (type-7) of the per-case value; percentile interval of the patient-clustered "
                f"bootstrap. {definition}." + _SEG_EMPTY,
                direction,
                digits=digits,
            )
        )
    return tuple(out)


SEGMENTATION_METRICS = _segmentation_metrics()


#: Every metric, in the order blocks compute them.
METRICS: tuple[Metric, ...] = (
    # ---- binary: discrimination
    Metric(
        "auroc",
        "AUROC",
        BINARY,
        "area under the ROC curve; DeLong interval, as R's pROC (DeLong et al. 1988)",
        direction="higher",
        interval="delong",
        point=_delong,
        replicate=R.auroc_kernel,
        weighted=R.auroc_weighted,
        ranking=True,
        one_class="",
        synthesis="logit",
        shown=dict(
            cli=1,
            run_summary=1,
            overview=1,
            report_discrimination=1,
            report_subgroups=1,
            report_methods=6,
            subgroup_gaps=1,
            subgroup_worst=1,
        ),
    ),
    Metric(
        "auprc",
        "AUPRC",
        BINARY,
        "average precision: Σ (R_k − R_{k−1}) P_k over the distinct thresholds",
        direction="higher",
        replicate=R.auprc_kernel,
        weighted=R.auprc_weighted,
        ranking=True,
        one_class="",
        shown=dict(report_discrimination=2, subgroup_gaps=2, subgroup_worst=2),
    ),
    # ---- binary: scores
    Metric(
        "brier",
        "Brier score",
        BINARY,
        "mean of (p − y)² (Brier 1950)",
        direction="lower",
        replicate=R.brier_kernel,
        weighted=R.brier_weighted,
        shown=dict(
            cli=5, report_calibration=6, report_methods=2, subgroup_gaps=3, subgroup_worst=3, calibration_ranking=2
        ),
    ),
    Metric(
        "scaled_brier",
        "Scaled Brier",
        BINARY,
        "1 − Brier / π(1 − π), the Brier score of always predicting the prevalence π (Steyerberg et al. 2010)",
        direction="higher",
        replicate=R.scaled_brier_kernel,
        weighted=R.scaled_brier_weighted,
        one_class="the reference Brier score is 0",
        shown=dict(report_calibration=7, subgroup_gaps=4, subgroup_worst=4),
    ),
    Metric(
        "log_loss",
        "Log loss",
        BINARY,
        "−mean(y log p + (1 − y) log(1 − p)), p clipped to [1e-15, 1 − 1e-15]",
        direction="lower",
        replicate=R.log_loss_kernel,
        weighted=R.log_loss_weighted,
        shown=dict(report_calibration=8, report_methods=3, subgroup_gaps=5, subgroup_worst=5, calibration_ranking=3),
    ),
    # ---- binary: logistic recalibration
    Metric(
        "calibration_intercept",
        "Calibration intercept",
        BINARY,
        "calibration-in-the-large: logistic fit of y with offset logit(p), slope fixed at 1; Wald interval",
        direction="target",
        target=0.0,
        interval="wald",
        point=_intercept,
        one_class="no finite maximum likelihood",
        synthesis="identity",
        shown=dict(cli=2, overview=4, report_calibration=1, report_methods=5, subgroup_worst=11),
    ),
    Metric(
        "calibration_slope",
        "Calibration slope",
        BINARY,
        "logistic fit of y on logit(p); Wald interval (Cox 1958)",
        direction="target",
        target=1.0,
        interval="wald",
        point=_slope,
        one_class="no finite maximum likelihood",
        why_undefined="logistic fit did not converge (perfect separation or constant p)",
        synthesis="identity",
        shown=dict(
            cli=3,
            run_summary=3,
            overview=3,
            report_calibration=2,
            report_subgroups=3,
            report_methods=4,
            subgroup_worst=12,
        ),
    ),
    Metric(
        "oe_ratio",
        "O/E ratio",
        BINARY,
        "observed / expected events Σy / Σp (calibration-in-the-large as a ratio; Debray et al. 2017, "
        "Riley et al. 2021); bootstrap percentile interval",
        direction="target",
        target=1.0,
        replicate=R.oe_ratio_kernel,
        weighted=R.oe_ratio_weighted,
        why_undefined="no risk predicted (Σp = 0)",
        synthesis="log",
    ),
    # ---- binary: smoothed calibration
    _smooth("eavg", "Eavg", f"mean {_LOWESS}", shown=dict(report_calibration=4, subgroup_worst=9)),
    _smooth("e50", "E50", f"median {_LOWESS}"),
    _smooth("e90", "E90", f"90th percentile {_LOWESS}"),
    _smooth("emax", "Emax", f"maximum {_LOWESS}"),
    _smooth(
        "ici",
        "ICI",
        "mean |p − s(p)|, s a loess smooth (span 0.75, degree 2): Austin & Steyerberg 2019",
        shown=dict(report_calibration=5, subgroup_worst=10),
    ),
    # ---- binary: binned calibration
    Metric(
        "ece",
        "ECE",
        BINARY,
        f"expected calibration error: Σ_b n_b |mean(y) − mean(p)| / n, {_BIN15}",
        direction="lower",
        replicate=R.ece_kernel,
        weighted=R.ece_weighted,
        shown=dict(
            cli=4,
            run_summary=2,
            overview=2,
            report_calibration=3,
            report_subgroups=2,
            report_methods=1,
            subgroup_gaps=6,
            subgroup_worst=6,
            calibration_ranking=1,
        ),
    ),
    Metric(
        "ece_adaptive",
        "Adaptive ECE",
        BINARY,
        "ECE over 15 equal-mass bins",
        direction="lower",
        replicate=R.ece_adaptive_kernel,
        weighted=R.ece_adaptive_weighted,
        shown=dict(subgroup_gaps=7, subgroup_worst=7),
    ),
    Metric(
        "mce",
        "MCE",
        BINARY,
        f"maximum calibration error: the largest |mean(y) − mean(p)| over {_BIN15}",
        direction="lower",
        replicate=R.mce_kernel,
        shown=dict(subgroup_worst=8),
    ),
    # ---- binary: tests
    Metric(
        "hosmer_lemeshow",
        "Hosmer-Lemeshow χ²",
        BINARY,
        "Hosmer & Lemeshow 1980: groups cut at the unique deciles of p (type-7), df = groups − 2; "
        "statistic, df, p_value",
        interval="test",
        point=_hosmer_lemeshow,
    ),
    Metric(
        "spiegelhalter_z",
        "Spiegelhalter z",
        BINARY,
        "Spiegelhalter 1986, as rms::val.prob's S:z: Σ (y − p)(1 − 2p) / √Σ (1 − 2p)² p (1 − p); statistic, p_value",
        interval="test",
        point=_spiegelhalter,
        why_undefined="all p in {0, 1/2, 1}: zero variance",
    ),
    # ---- binary: operating points (p >= threshold called positive; Altman & Bland 1994)
    Metric(
        "sensitivity",
        "Sensitivity",
        BINARY,
        "TP / (TP + FN)",
        direction="higher",
        at_threshold=True,
        replicate=R.sensitivity_kernel,
        weighted=R.operating_weighted("sensitivity"),
        shown=dict(subgroup_gaps=8, subgroup_worst=13),
    ),
    Metric(
        "specificity",
        "Specificity",
        BINARY,
        "TN / (TN + FP)",
        direction="higher",
        at_threshold=True,
        replicate=R.specificity_kernel,
        weighted=R.operating_weighted("specificity"),
        shown=dict(subgroup_gaps=9, subgroup_worst=14),
    ),
    Metric(
        "ppv",
        "PPV",
        BINARY,
        "TP / (TP + FP)",
        direction="higher",
        at_threshold=True,
        replicate=R.ppv_kernel,
        weighted=R.operating_weighted("ppv"),
    ),
    Metric(
        "npv",
        "NPV",
        BINARY,
        "TN / (TN + FN)",
        direction="higher",
        at_threshold=True,
        replicate=R.npv_kernel,
        weighted=R.operating_weighted("npv"),
    ),
    # ---- binary: net benefit at the decision thresholds (treat = p >= t; Vickers & Elkin 2006)
    Metric(
        "net_benefit",
        "Net benefit",
        BINARY,
        "TP/n − FP/n · t/(1−t) at decision threshold t, treated = p >= t (Vickers & Elkin 2006), at the "
        "cases' own prevalence",
        direction="higher",
        at_decision=True,
        replicate=R.net_benefit_kernel,
        synthesis="identity",
    ),
    Metric(
        "net_benefit_treat_all",
        "Net benefit, treat all",
        BINARY,
        "π − (1 − π) · t/(1−t), π the prevalence: the net benefit of treating everyone (treat none: 0)",
        at_decision=True,
        replicate=R.treat_all_kernel,
    ),
    Metric(
        "net_benefit_vs_treat_all",
        "NB − treat all",
        BINARY,
        "net benefit − net benefit of treating all, paired within each bootstrap replicate",
        direction="higher",
        at_decision=True,
        replicate=R.net_benefit_vs_treat_all_kernel,
        synthesis="identity",
    ),
    Metric(
        "interventions_avoided",
        "Interventions avoided /100",
        BINARY,
        "(NB − NB_all) / (t/(1−t)) · 100: net interventions avoided per 100 patients (Vickers et al. 2008)",
        direction="higher",
        at_decision=True,
        replicate=R.interventions_avoided_kernel,
        synthesis="identity",
        digits=1,
    ),
    Metric(
        "standardized_net_benefit",
        "Standardised net benefit",
        BINARY,
        "NB / π: net benefit as a share of the most attainable (Kerr et al. 2016)",
        direction="higher",
        at_decision=True,
        replicate=R.standardized_net_benefit_kernel,
        synthesis="identity",
        why_undefined="no events: standardised net benefit divides by the prevalence",
    ),
    Metric(
        "beats_defaults",
        "Beats both defaults",
        BINARY,
        "share of bootstrap replicates with NB > max(0, NB_all): a descriptive share, not a p-value "
        "(Vickers et al., Diagn Progn Res 2023)",
        interval="none",
        at_decision=True,
    ),
    # ---- every task
    Metric(
        "prevalence",
        "Prevalence",
        ("binary", "multiclass", "multilabel"),
        "events / n (multiclass, multilabel: of the rarest class or label)",
        interval="none",
    ),
    Metric("mean_score", "Mean score", BINARY, "mean predicted probability (drift windows)", in_block=False),
    # ---- multiclass
    Metric(
        "accuracy",
        "Accuracy",
        MULTICLASS,
        "share of cases whose argmax class is the label",
        direction="higher",
        shown=dict(cli=1, run_summary=1, overview=2, report_discrimination=1, subgroup_worst=15),
    ),
    Metric(
        "auroc_macro",
        "Macro AUROC",
        MULTICLASS + MULTILABEL,
        "unweighted mean of the one-vs-rest (multilabel: per-label) AUROCs",
        direction="higher",
        ranking=True,
        shown=dict(cli=2, run_summary=2, overview=1, report_discrimination=2, subgroup_worst=16),
    ),
    Metric(
        "ece",
        "ECE",
        MULTICLASS,
        f"top-label ECE: confidence max p, correct argmax = label, {_BIN15}",
        direction="lower",
        weighted=R.top_label_ece_weighted,
        shown=dict(
            cli=3,
            run_summary=3,
            overview=3,
            report_calibration=1,
            report_subgroups=1,
            report_methods=1,
            subgroup_worst=6,
            calibration_ranking=1,
        ),
    ),
    Metric(
        "ece_classwise",
        "Classwise ECE",
        MULTICLASS,
        "mean over classes of the one-vs-rest ECE",
        direction="lower",
        shown=dict(cli=4, overview=4, subgroup_worst=17),
    ),
    Metric(
        "brier",
        "Brier score",
        MULTICLASS,
        "mean over cases of Σ_k (P_k − [y = k])²",
        direction="lower",
        weighted=R.multiclass_brier_weighted,
        shown=dict(cli=5, overview=5, report_calibration=2, report_methods=2, subgroup_worst=3, calibration_ranking=2),
    ),
    Metric(
        "log_loss",
        "Log loss",
        MULTICLASS,
        "−mean log P_y, P clipped to [1e-15, 1]",
        direction="lower",
        weighted=R.multiclass_log_loss_weighted,
        shown=dict(report_calibration=3, report_methods=3, subgroup_worst=5, calibration_ranking=3),
    ),
    # ---- multilabel: macro averages over the labels' binary BLOCKs (also under "macro" by plain name)
    Metric(
        "auprc_macro",
        "Macro AUPRC",
        MULTILABEL,
        "unweighted mean of the labels' AUPRCs",
        direction="higher",
        ranking=True,
        shown=dict(cli=3),
    ),
    Metric(
        "brier_macro",
        "Macro Brier score",
        MULTILABEL,
        "unweighted mean of the labels' Brier scores",
        direction="lower",
        shown=dict(cli=5, overview=3, report_calibration=2, report_methods=2),
    ),
    Metric(
        "log_loss_macro",
        "Macro log loss",
        MULTILABEL,
        "unweighted mean of the labels' log losses",
        direction="lower",
        shown=dict(report_calibration=3, report_methods=3),
    ),
    Metric(
        "ece_macro",
        "Macro ECE",
        MULTILABEL,
        "unweighted mean of the labels' ECEs",
        direction="lower",
        shown=dict(cli=4, overview=2, report_calibration=1, report_subgroups=1, report_methods=1),
    ),
    *SEGMENTATION_METRICS,
)


def metrics_for(task: str, *, in_block: bool = True) -> list[Metric]:
    """The metrics of ``task`` in declaration order (only those of its BLOCK unless ``in_block=False``)."""
    return [m for m in METRICS if task in m.tasks and (m.in_block or not in_block)]


def get(name: str, task: str | None = None) -> Metric | None:
    """The declaration of ``name`` (for ``task``, or the first declared); None when unknown. A
    segmentation NSD key (``nsd_2mm``, ``nsd_1p5mm_median``) is its family's entry (``nsd``)."""
    for m in METRICS:
        if m.name == name and (task is None or task in m.tasks):
            return m
    family = NSD_KEY.match(name)
    if family is not None:
        return get("nsd" + (family.group(2) or ""), task)
    return None


def names(shown_in: str, task: str) -> tuple[str, ...]:
    """The metric names of list ``shown_in`` (:data:`LISTS`) for ``task``, in the list's order."""
    if shown_in not in LISTS:
        raise KeyError(f"unknown metric list {shown_in!r}")
    chosen = [m for m in METRICS if task in m.tasks and shown_in in m.shown]
    return tuple(m.name for m in sorted(chosen, key=lambda m: m.shown[shown_in]))


def label(name: str) -> str:
    """The display name of metric ``name`` (a key with underscores as words when not registered); a
    segmentation NSD key names its tolerance (``NSD 1.5 mm``)."""
    family = NSD_KEY.match(name)
    if family is not None:
        tau = family.group(1).replace("p", ".")
        return f"NSD {tau} mm" + (", median" if family.group(2) else "")
    m = get(name)
    return m.label if m is not None else name.replace("_", " ")


def badness(name: str, estimate: float | None) -> float | None:
    """How bad an estimate is on a common scale (larger = worse): −x where higher is better, x where lower
    is better, |x − target| for a target; None for an unknown or descriptive metric or no estimate."""
    m = get(name)
    if estimate is None or m is None or m.direction is None:
        return None
    if m.direction == "higher":
        return -estimate
    if m.direction == "lower":
        return estimate
    return abs(estimate - m.target)


def check_gate_metric(path: str, task: str) -> str | None:
    """None when a gate's ``metric`` can name a value in a BLOCK of ``task``, else what is wrong.

    The first part of a dotted path must be a registered metric of the task (``auroc``,
    ``hosmer_lemeshow.p_value``) or a BLOCK field (``n``, ``classes.<c>.auroc``, ``macro.auroc``,
    ``target_sensitivity.sensitivity``); whether the value is present is known after the run."""
    head = path.split(".", 1)[0]
    if any(m.name == head for m in metrics_for(task)) or head in BLOCK_FIELDS.get(task, ()):
        return None
    known = sorted({m.name for m in metrics_for(task)})
    import difflib

    near = difflib.get_close_matches(head, known + list(BLOCK_FIELDS.get(task, ())), n=1)
    return (
        f"metric `{path}` is not a {task} metric"
        + (f"; did you mean `{near[0]}`?" if near else "")
        + f" (one of {', '.join(known)})"
    )
