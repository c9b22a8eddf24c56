"""The calibrator interface, shared input checks and numerically safe link functions.

A calibrator maps a model's scores to probabilities. Scores are logits:

- binary: a vector of N logits of the positive class; ``predict_proba`` returns N probabilities of the
  positive class;
- multiclass: an [N, K] matrix of logits; ``predict_proba`` returns [N, K] probabilities whose rows sum
  to 1.

Probabilities are turned into logits by the caller (:func:`logits_from_probabilities`), with the
1e-15 floor of DESIGN.md. Every calibrator validates its fitting data once, in ``fit``; degenerate
data (one class only, fewer than :data:`MIN_FIT_CASES` cases, all scores equal, a maximum-likelihood
fit that does not exist) raises :class:`CalibrationFitError`, an :class:`~validate.errors.InputError`,
never a silent flip or a NaN.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from validate.errors import InputError
from validate.numerics import PROB_FLOOR, log_probability, log_sigmoid, logit, sigmoid, softmax  # noqa: F401 - re-exported

#: Fewest cases any calibrator is fitted on: below this no calibration map is trustworthy.
MIN_FIT_CASES = 10


class CalibrationFitError(InputError):
    """The fitting data cannot support the calibrator (degenerate, separable, too small)."""


class Calibrator:
    """Base class: ``fit(scores, y) -> self``, ``predict_proba(scores)``, ``to_json()``, ``from_json()``.

    Subclasses set ``name`` and ``tasks`` (the tasks they support, "binary" and/or "multiclass"), and
    implement ``_fit``, ``_predict`` and ``_params``/``_load``. ``task`` is fixed by the shape of the
    first fitting data (1-D binary, 2-D multiclass).
    """

    name: ClassVar[str] = ""
    tasks: ClassVar[tuple[str, ...]] = ("binary", "multiclass")

    def __init__(self) -> None:
        self.task: str | None = None
        self.n_classes: int | None = None

    # ---- public interface ---------------------------------------------------------------------
    def fit(self, scores: Any, y: Any) -> Calibrator:
        """Fit on logits ``scores`` (N or [N, K]) and labels ``y`` (0/1, or 0..K-1)."""
        scores, y, task = check_fit_data(scores, y, self.name, self.tasks)
        self.task = task
        self.n_classes = 2 if task == "binary" else scores.shape[1]
        self._fit(scores, y)
        return self

    def predict_proba(self, scores: Any) -> np.ndarray:
        """Calibrated probabilities: positive class (binary, shape N) or all classes ([N, K])."""
        if self.task is None:
            raise RuntimeError(f"{self.name}: call fit() or from_json() before predict_proba()")
        scores = check_scores(scores, self.task, self.n_classes, self.name)
        p = self._predict(scores)
        return np.clip(p, 0.0, 1.0)

    def to_json(self) -> dict:
        """The fitted parameters as plain JSON types (what ``from_json`` needs to rebuild it)."""
        if self.task is None:
            raise RuntimeError(f"{self.name}: not fitted")
        return {"task": self.task, "n_classes": self.n_classes, **self._params()}

    @classmethod
    def from_json(cls, params: dict) -> Calibrator:
        """Rebuild a fitted calibrator from ``to_json()`` output."""
        obj = cls.__new__(cls)
        Calibrator.__init__(obj)
        try:
            obj.task = str(params["task"])
            obj.n_classes = int(params["n_classes"])
            obj._load(params)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(
                f"calibration parameters for {cls.name!r} are incomplete or malformed: {exc}",
                field=f"methods.{cls.name}.params",
            ) from None
        if obj.task not in cls.tasks:
            raise InputError(
                f"{cls.name} parameters are for task {obj.task!r}",
                field=f"methods.{cls.name}.params.task",
                expected=" or ".join(cls.tasks),
            )
        return obj

    # ---- for subclasses ---------------------------------------------------------------------
    def _fit(self, scores: np.ndarray, y: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _predict(self, scores: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _params(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _load(self, params: dict) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        state = "unfitted" if self.task is None else f"{self.task}, K={self.n_classes}"
        return f"{type(self).__name__}({state})"


# ---- checks ------------------------------------------------------------------------------------
def check_scores(scores: Any, task: str, n_classes: int | None, name: str) -> np.ndarray:
    """Logits as float64 of the shape the task needs; finite."""
    s = np.asarray(scores, dtype=np.float64)
    if task == "binary":
        if s.ndim == 2 and s.shape[1] == 1:
            s = s[:, 0]
        if s.ndim != 1:
            raise InputError(
                f"{name}: binary scores must be one logit per case, got shape {s.shape}",
                field="logit",
                expected="a vector of N logits",
            )
    else:
        if s.ndim != 2 or (n_classes is not None and s.shape[1] != n_classes):
            want = f"[N, {n_classes}]" if n_classes else "[N, K]"
            raise InputError(
                f"{name}: multiclass scores must be a {want} matrix of logits, got shape {s.shape}",
                field="logit_<class>",
                expected=f"a {want} matrix",
            )
    if not np.all(np.isfinite(s)):
        bad = int(np.flatnonzero(~np.isfinite(s).reshape(len(s), -1).all(axis=1))[0]) + 1
        raise InputError(
            f"{name}: scores must be finite; case {bad} is not",
            row=bad,
            field="logit",
            expected="finite logits (probabilities become logits after the 1e-15 floor)",
        )
    return s


def check_fit_data(scores: Any, y: Any, name: str, tasks: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, str]:
    """Validate fitting data once; raise :class:`CalibrationFitError` for degenerate data."""
    s = np.asarray(scores, dtype=np.float64)
    task = "binary" if (s.ndim == 1 or (s.ndim == 2 and s.shape[1] == 1)) else "multiclass"
    if task not in tasks:
        raise InputError(
            f"{name} calibrates {' and '.join(tasks)} scores, not {task} ones",
            field="method",
            expected=f"a method for {task} tasks",
        )
    s = check_scores(s, task, None, name)
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != s.shape[0]:
        raise InputError(
            f"{name}: labels must be a vector with one entry per case ({s.shape[0]}), got shape {y.shape}", field="y"
        )
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise InputError(f"{name}: labels must be integers", field="y")
    elif y.dtype.kind not in "iub":
        raise InputError(f"{name}: labels must be integers, got {y.dtype}", field="y")
    y = y.astype(np.int64)
    k = 2 if task == "binary" else s.shape[1]
    if y.size and (y.min() < 0 or y.max() >= k):
        raise InputError(f"{name}: labels must lie in 0..{k - 1}, found {int(y.min())}..{int(y.max())}", field="y")
    n = s.shape[0]
    if n < MIN_FIT_CASES:
        raise CalibrationFitError(
            f"{name}: {n} fitting case(s) is too few to fit a calibration map", expected=f"at least {MIN_FIT_CASES}"
        )
    counts = np.bincount(y, minlength=k)
    if np.count_nonzero(counts) < 2:
        raise CalibrationFitError(
            f"{name}: every fitting case has label {int(np.argmax(counts))}; a calibration map needs both outcomes",
            field="y",
            expected="at least two classes among the fitting cases",
        )
    flat = s if s.ndim == 1 else s - s[:, :1]  # multiclass: equal up to a per-row shift is equal
    if np.all(flat == flat[0]):
        raise CalibrationFitError(
            f"{name}: all fitting scores are equal; no calibration map can be learned from them",
            field="logit",
            expected="scores that vary between cases",
        )
    return s, y, task


def check_separable_binary(z: np.ndarray, y: np.ndarray, name: str) -> None:
    """Raise when the logit perfectly separates the outcomes: the maximum-likelihood fit of a
    logistic map on z then does not exist (its slope diverges)."""
    z0, z1 = z[y == 0], z[y == 1]
    if z0.max() < z1.min() or z1.max() < z0.min():
        raise CalibrationFitError(
            f"{name}: the fitting cases are perfectly separated by the score, so the maximum-likelihood "
            "calibration map does not exist (its slope diverges)",
            expected="fitting cases whose scores overlap between outcomes (use more cases)",
        )


# ---- links ---------------------------------------------------------------------------------
# sigmoid, log_sigmoid, softmax and logit: validate.numerics (imported above), one definition each


def logits_from_probabilities(p: Any, task: str) -> np.ndarray:
    """Logits from probabilities, as DESIGN.md prescribes: binary ``logit(clip(p, 1e-15, 1 - 1e-15))``;
    multiclass ``log(clip(p, 1e-15, 1))`` (log-probabilities: softmax is unchanged by a per-row shift, so
    they are exact stand-ins for logits). Never clipped coarser than 1e-15."""
    if task == "multiclass":
        return log_probability(p)
    return logit(p)


def renormalise(p: np.ndarray) -> np.ndarray:
    """Rows scaled to sum to 1; a row of zeros becomes uniform (no class has any support)."""
    s = p.sum(axis=1, keepdims=True)
    k = p.shape[1]
    return np.divide(p, s, out=np.full_like(p, 1.0 / k), where=s > 0)


def as_float_list(a: Any) -> list:
    return np.asarray(a, dtype=np.float64).tolist()
