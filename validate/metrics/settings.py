"""Metric settings: the ``metrics:`` section of a protocol, with its defaults."""

from __future__ import annotations

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

    @classmethod
    def from_protocol(cls, metrics: Any = None, **overrides: Any) -> MetricSettings:
        """Settings from a protocol's ``metrics`` section (a pydantic model, a dict or ``None``).

        Keyword ``overrides`` that are not ``None`` win (e.g. ``n_bootstrap`` from the command line).
        """
        values = section_values(cls, metrics, overrides)
        if "thresholds" in values and values["thresholds"] is not None:
            values["thresholds"] = tuple(float(t) for t in values["thresholds"])
        if "precision" in values:
            values["precision"] = PrecisionTargets.of(values["precision"])
        return replace(cls(), **values)
