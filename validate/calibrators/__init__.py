"""Calibrators (pure numpy, fit / predict_proba / to_json / from_json) and the cross-site comparison.

Methods by name (:data:`METHODS` says which tasks each supports): ``temperature``, ``vector``,
``matrix``, ``platt``, ``beta``, ``isotonic``, ``histogram``, ``bbq``, ``enir``; multilabel tasks
calibrate each label on its own with any binary method. Inputs are logits; see
:func:`logits_from_probabilities` for probability inputs.

>>> cal = get_calibrator("temperature", "multiclass").fit(logits_fit, y_fit)
>>> probs = cal.predict_proba(logits_new)
>>> same = calibrator_from_json("temperature", "multiclass", cal.to_json())
"""

from validate.calibrators.base import MIN_FIT_CASES, CalibrationFitError, Calibrator, logits_from_probabilities
from validate.calibrators.binning import predicted_class_changed
from validate.calibrators.registry import (
    METHODS,
    calibrator_from_json,
    check_method,
    export_params,
    get_calibrator,
    methods_for,
)

__all__ = [
    "Calibrator",
    "CalibrationFitError",
    "MIN_FIT_CASES",
    "METHODS",
    "get_calibrator",
    "calibrator_from_json",
    "export_params",
    "check_method",
    "methods_for",
    "logits_from_probabilities",
    "predicted_class_changed",
    "compare_calibration",
]


def __getattr__(name):
    # the comparison designs pull in the metrics engine; plain calibrator use should not
    if name == "compare_calibration":
        from validate.calibrators.designs import compare_calibration

        return compare_calibration
    raise AttributeError(name)
