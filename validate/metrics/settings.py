"""Metric settings: the ``metrics:`` section of a protocol, with its defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any


def section_values(cls, section: Any, overrides: dict) -> dict:
    """The fields of dataclass ``cls`` found in a protocol section (a pydantic model, a dict, an object
    or ``None``), with the keyword ``overrides`` that are not ``None`` winning."""
    if section is None:
        values: dict[str, Any] = {}
    elif isinstance(section, dict):
        values = dict(section)
    elif hasattr(section, "model_dump"):
        values = section.model_dump()
    else:
        values = {f.name: getattr(section, f.name) for f in fields(cls) if hasattr(section, f.name)}
    known = {f.name for f in fields(cls)}
    values = {k: v for k, v in values.items() if k in known}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return values


@dataclass(frozen=True)
class PrecisionTargets:
    """The protocol's ``metrics.precision``: target widths of the 95% (``ci_level``) intervals a block
    should reach (defaults: Riley et al. Stat Med 2021;40:4230-51 and BMJ 2024;384:e074821), and whether
    a gate row that would pass at a block short of its metric's target takes the gate's insufficient
    policy (``insufficient``; default False: the shortfall is noted in the row, the verdict unchanged).

    ``oe_ratio`` is the width on the O/E scale (as Riley et al. and pmvalsampsize state it).
    """

    oe_ratio: float = 0.2
    calibration_slope: float = 0.2
    auroc: float = 0.1
    standardized_net_benefit: float = 0.2
    insufficient: bool = False

    @classmethod
    def of(cls, value: Any) -> PrecisionTargets:
        """From a protocol section (a pydantic model, a dict, an instance or ``None``)."""
        if isinstance(value, cls):
            return value
        return replace(cls(), **section_values(cls, value, {}))


@dataclass(frozen=True)
class MetricSettings:
    """How metrics and their intervals are computed.

    ``bins``: equal-width bins for ECE/MCE (and equal-mass bins for adaptive ECE).
    ``n_bootstrap``: bootstrap replicates for percentile intervals (0 = no bootstrap intervals).
    ``ci_level``: two-sided level of every interval. ``seed``: bootstrap seed (deterministic).
    ``cluster_by``: column whose repeated values are resampled together (``None``: cases).
    ``thresholds``: probability thresholds of the reported operating points.
    ``target_sensitivity``: sensitivity whose threshold is found at the development site and carried
    to the other sites. ``min_events``/``min_cases``: the insufficiency rule (see
    :func:`validate.metrics.blocks.insufficiency`). ``precision``: the target interval widths of the
    precision criteria (:class:`PrecisionTargets`, :mod:`validate.metrics.precision`).
    ``decision_thresholds``: the decision thresholds at which a binary block reports net benefit
    (:mod:`validate.metrics.net_benefit`); ``decision_range`` (``None``: the protocol has no ``decision``
    section, so no decision entries and no decision curve) and ``decision_step``: the decision curve's grid.
    """

    bins: int = 15
    n_bootstrap: int = 1000
    ci_level: float = 0.95
    seed: int = 0
    thresholds: tuple[float, ...] = (0.5,)
    target_sensitivity: float | None = 0.9
    min_events: int = 10
    min_cases: int = 30
    cluster_by: str | None = "patient_id"
    precision: PrecisionTargets = PrecisionTargets()
    decision_thresholds: tuple[float, ...] = ()
    decision_range: tuple[float, float] | None = None
    decision_step: float = 0.01

    @classmethod
    def from_protocol(cls, metrics: Any = None, decision: Any = None, **overrides: Any) -> MetricSettings:
        """Settings from a protocol's ``metrics`` section (a pydantic model, a dict or ``None``) and its
        ``decision`` section (the same kinds; ``None``: no decision analysis).

        Keyword ``overrides`` that are not ``None`` win (e.g. ``n_bootstrap`` from the command line).
        """
        values = section_values(cls, metrics, overrides)
        if "thresholds" in values and values["thresholds"] is not None:
            values["thresholds"] = tuple(float(t) for t in values["thresholds"])
        if "precision" in values:
            values["precision"] = PrecisionTargets.of(values["precision"])
        values.update(_decision_values(decision))
        return replace(cls(), **values)

    @property
    def decision_grid(self) -> tuple[float, ...]:
        """The decision curve's thresholds: ``round(low + i·step, 10)`` for i = 0, 1, ... up to ``high``
        inclusive (rounded so that 0.01 + 9·0.01 is 0.1, as a protocol writes it); empty without a
        ``decision`` section."""
        if self.decision_range is None:
            return ()
        low, high = self.decision_range
        count = int(math.floor((high - low) / self.decision_step + 1e-9)) + 1
        return tuple(round(low + i * self.decision_step, 10) for i in range(count))


def _decision_values(decision: Any) -> dict:
    """The ``decision_*`` settings of a protocol's ``decision`` section (none without one)."""
    if decision is None:
        return {}
    if hasattr(decision, "model_dump"):
        decision = decision.model_dump()
    elif not isinstance(decision, dict):
        decision = {k: getattr(decision, k) for k in ("thresholds", "range", "step") if hasattr(decision, k)}
    low, high = decision.get("range") or (0.01, 0.5)
    return {
        "decision_thresholds": tuple(float(t) for t in decision.get("thresholds") or ()),
        "decision_range": (float(low), float(high)),
        "decision_step": float(decision.get("step") or 0.01),
    }
