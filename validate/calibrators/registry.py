"""Calibration methods by name, per task, and the multilabel wrapper (each label on its own)."""

from __future__ import annotations

import difflib
from typing import Any

import numpy as np

from validate.calibrators.base import CalibrationFitError, Calibrator, check_scores
from validate.calibrators.binning import BBQ, ENIR, HistogramBinning, IsotonicCalibration
from validate.calibrators.scaling import BetaCalibration, MatrixScaling, PlattScaling, TemperatureScaling, VectorScaling
from validate.errors import InputError

_CLASSES: dict[str, type[Calibrator]] = {
    c.name: c
    for c in (
        TemperatureScaling,
        VectorScaling,
        MatrixScaling,
        PlattScaling,
        BetaCalibration,
        IsotonicCalibration,
        HistogramBinning,
        BBQ,
        ENIR,
    )
}

#: method -> tasks it supports. Multilabel supports every binary method (each label on its own).
METHODS: dict[str, tuple[str, ...]] = {
    name: cls.tasks + (("multilabel",) if "binary" in cls.tasks else ()) for name, cls in _CLASSES.items()
}
TASKS = ("binary", "multiclass", "multilabel")


def methods_for(task: str) -> list[str]:
    """Method names valid for ``task``, in registry order."""
    return [m for m, tasks in METHODS.items() if task in tasks]


def check_method(name: str, task: str) -> str:
    """``name`` if it is a method for ``task``; else an :class:`InputError` naming the nearest."""
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}", field="task", expected=" | ".join(TASKS))
    if name not in METHODS:
        near = difflib.get_close_matches(name, list(METHODS) + ["none"], n=1, cutoff=0.5)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise InputError(f"unknown calibration method {name!r}{hint}", field="methods", expected=", ".join(METHODS))
    if task not in METHODS[name]:
        raise InputError(
            f"calibration method {name!r} does not apply to a {task} task",
            field="methods",
            expected=f"one of {', '.join(methods_for(task))}",
        )
    return name


def get_calibrator(name: str, task: str, **options: Any) -> Calibrator:
    """A new, unfitted calibrator for ``task`` ("binary", "multiclass" or "multilabel")."""
    check_method(name, task)
    if task == "multilabel":
        return PerLabel(name, **options)
    return _CLASSES[name](**options)


def calibrator_from_json(name: str, task: str, params: dict, *, n_classes: int | None = None) -> Calibrator:
    """Rebuild a fitted calibrator from the ``params`` its ``to_json()`` wrote (or from
    :func:`export_params` output plus ``n_classes``)."""
    check_method(name, task)
    if not isinstance(params, dict):
        raise InputError(f"parameters of {name!r} must be an object", field=f"methods.{name}.params")
    params = dict(params)
    if task != "multilabel":
        params.setdefault("task", task)
        params.setdefault("n_classes", 2 if task == "binary" else n_classes)
    if task == "multilabel":
        return PerLabel.from_json_named(name, params)
    obj = _CLASSES[name].from_json(params)
    if obj.task != task:
        raise InputError(
            f"{name} parameters were fitted for a {obj.task} task, not {task}", field=f"methods.{name}.params.task"
        )
    return obj


def export_params(cal: Calibrator) -> dict:
    """A fitted calibrator's parameters for the Calibration JSON: ``to_json()`` without the task and
    class count, which the JSON states once at its top (``{"temperature": T}`` for temperature)."""
    d = cal.to_json()
    if d.get("task") != "multilabel":
        d.pop("task", None)
        d.pop("n_classes", None)
    return d


class PerLabel(Calibrator):
    """Multilabel calibration: an independent binary calibrator of method ``method`` for each label
    (column) of an [N, L] logit matrix; ``predict_proba`` returns [N, L] probabilities (rows need not
    sum to 1). Errors for a degenerate label name the label's column index."""

    tasks = ("multilabel",)

    def __init__(self, method: str, **options: Any) -> None:
        super().__init__()
        self.method = method
        self.name = method
        self.options = options
        self.members: list[Calibrator] = []

    def fit(self, scores: Any, y: Any) -> PerLabel:
        s = np.asarray(scores, dtype=np.float64)
        y = np.asarray(y)
        if s.ndim != 2 or y.shape != s.shape:
            raise InputError(
                f"{self.method}: multilabel scores and labels must both be [N, L] matrices, "
                f"got {s.shape} and {y.shape}",
                field="logit_<label>",
            )
        members = []
        for j in range(s.shape[1]):
            try:
                members.append(_CLASSES[self.method](**self.options).fit(s[:, j], y[:, j]))
            except CalibrationFitError as exc:
                raise CalibrationFitError(f"label {j}: {exc.message}", field=exc.field, expected=exc.expected) from None
        self.members = members
        self.task = "multilabel"
        self.n_classes = s.shape[1]
        return self

    def predict_proba(self, scores: Any) -> np.ndarray:
        if not self.members:
            raise RuntimeError(f"{self.method}: call fit() or from_json() before predict_proba()")
        s = check_scores(scores, "multiclass", self.n_classes, self.method)
        return np.column_stack([m.predict_proba(s[:, j]) for j, m in enumerate(self.members)])

    def to_json(self) -> dict:
        return {"task": "multilabel", "n_classes": self.n_classes, "labels": [m.to_json() for m in self.members]}

    @classmethod
    def from_json_named(cls, method: str, params: dict) -> PerLabel:
        obj = cls(method)
        try:
            obj.members = [_CLASSES[method].from_json(p) for p in params["labels"]]
            obj.n_classes = len(obj.members)
        except (KeyError, TypeError) as exc:
            raise InputError(
                f"multilabel parameters of {method!r} are malformed: {exc}", field=f"methods.{method}.params"
            ) from None
        obj.task = "multilabel"
        return obj
