"""Discrimination and calibration metrics with intervals (pure numpy).

Every function validates its arguments once, then computes; definitions and sources are in each
docstring. The Metrics JSON contract (keys, blocks) is in DESIGN.md; :func:`metrics_report` builds it
from a predictions table, :func:`binary_block` / :func:`multiclass_block` / :func:`multilabel_block`
build one BLOCK from arrays.
"""

from validate.metrics.blocks import binary_block, entry, insufficiency, multiclass_block, multilabel_block
from validate.metrics.bootstrap import (
    bootstrap_replicates,
    bootstrap_weights,
    iter_bootstrap_weights,
    paired_bootstrap_difference,
    percentile_interval,
)
from validate.metrics.calibration import (
    bin_edges,
    bin_index,
    calibration_intercept,
    calibration_slope,
    ece,
    ece_adaptive,
    hosmer_lemeshow,
    mce,
    reliability_bins,
    spiegelhalter_z,
    weighted_ece,
    weighted_ece_adaptive,
)
from validate.metrics.checks import PROB_FLOOR, clip_probability, logit, sigmoid
from validate.metrics.discrimination import (
    ScoreOrder,
    auprc,
    auroc,
    delong_ci,
    delong_paired_test,
    weighted_auprc,
    weighted_auroc,
)
from validate.metrics.multiclass import (
    accuracy,
    auroc_macro,
    classwise_ece,
    multiclass_brier,
    multiclass_log_loss,
    top_label_ece,
)
from validate.metrics.operating import (
    operating_point,
    operating_points,
    threshold_for_sensitivity,
    weighted_operating_point,
)
from validate.metrics.report import metrics_report
from validate.metrics.scores import brier, log_loss, scaled_brier
from validate.metrics.settings import MetricSettings
from validate.metrics.smooth import clowess, ici, loess_smooth, lowess_calibration

__all__ = [
    "MetricSettings",
    "clip_probability",
    "logit",
    "sigmoid",
    "PROB_FLOOR",
    "auroc",
    "delong_ci",
    "delong_paired_test",
    "auprc",
    "weighted_auroc",
    "weighted_auprc",
    "ScoreOrder",
    "brier",
    "scaled_brier",
    "log_loss",
    "calibration_intercept",
    "calibration_slope",
    "ece",
    "ece_adaptive",
    "mce",
    "reliability_bins",
    "hosmer_lemeshow",
    "spiegelhalter_z",
    "weighted_ece",
    "weighted_ece_adaptive",
    "bin_index",
    "bin_edges",
    "clowess",
    "lowess_calibration",
    "loess_smooth",
    "ici",
    "operating_point",
    "operating_points",
    "threshold_for_sensitivity",
    "weighted_operating_point",
    "accuracy",
    "multiclass_brier",
    "multiclass_log_loss",
    "top_label_ece",
    "classwise_ece",
    "auroc_macro",
    "bootstrap_weights",
    "iter_bootstrap_weights",
    "percentile_interval",
    "bootstrap_replicates",
    "paired_bootstrap_difference",
    "binary_block",
    "multiclass_block",
    "multilabel_block",
    "insufficiency",
    "entry",
    "metrics_report",
]
