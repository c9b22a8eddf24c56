"""The one number formatter: how every value reads on the terminal, in the report and in the dashboard.

The command line (``validate metrics``, ``calibrate``, ``run``), the gate reasons, the HTML report, the
charts' labels and the dashboard's tables all format through here, so the same ECE reads the same
everywhere. Presentation only: nothing here changes a number in the bundle's JSON.

Conventions:

- **Precision per metric.** A metric's decimals come from its declaration in
  :mod:`validate.metrics.registry` (:attr:`~validate.metrics.registry.Metric.digits`, 3 unless declared:
  interventions avoided per 100 patients has 1); a value without a metric gets 3.
- **Tiny values.** A value below :data:`NOISE_FLOOR` is floating-point rounding noise (a difference of
  identical models, ``-1.11e-07``) and reads ``0.000``, never ``-0.000`` nor scientific notation. A value
  above it that would round to zero at its precision is small but real (an ECE of 0.0004 must not read
  0.000, which says perfect calibration): it reads with two significant digits, ``0.00040``.
- **Large values** (|x| ≥ 100,000) read as integers with thousands separators; scientific notation is
  not used (a p-value below 0.001 is ``< 0.001`` anyway).
- **Counts** (``n``, events, any integer) read as integers with thousands separators: ``12,345``.
- **Intervals** read ``0.812 (0.771–0.850)``: the estimate, then the bounds in parentheses joined by an
  en dash, all three at the same decimals; when a bound is negative the bounds are joined by `` to ``
  (``-0.020 (-0.051 to 0.011)``: a dash beside a minus sign misreads, the BMJ and AMA style rule).
- **p-values** read with three decimals, ``< 0.001`` below 0.001 (APA, 7th ed., 6.36).
- Missing, undefined or non-finite values read as an em dash ``—``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

#: How a missing or undefined value reads.
DASH = "—"
#: Decimals of a value without a metric (and of a metric that declares none).
DEFAULT_DIGITS = 3
#: Below this magnitude a value is floating-point noise on every scale the bundle holds (probabilities,
#: their differences, calibration parameters) and reads as 0 at its precision.
NOISE_FLOOR = 1e-6
#: From this magnitude on, values read as integers with thousands separators.
LARGE = 1e5
#: Significant digits of a small but real value (one that would round to zero at its precision).
TINY_SIGNIFICANT = 2
#: p-values below this read ``< 0.001``.
P_FLOOR = 0.001


def number(x: Any) -> float | None:
    """``x`` as a finite float, or None (None, booleans, text, NaN and infinities)."""
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _is_count(x: Any) -> bool:
    """An integer-typed value (Python or numpy), not a float that happens to be whole."""
    return isinstance(x, int) and not isinstance(x, bool) or type(x).__name__.startswith(("int", "uint"))


def metric_digits(metric: str | None) -> int:
    """The decimals of ``metric`` from the registry; :data:`DEFAULT_DIGITS` for an unknown name.

    A dotted gate path (``hosmer_lemeshow.p_value``) or a decision item (``net_benefit@0.1``) is read by
    its metric's head."""
    if not metric:
        return DEFAULT_DIGITS
    from validate.metrics import registry  # the declarations only: names, labels, digits

    head = str(metric).split("@", 1)[0].split(".", 1)[0]
    m = registry.get(head)
    return m.digits if m is not None else DEFAULT_DIGITS


def decimals_for(x: float, metric: str | None = None, digits: int | None = None) -> int:
    """The decimals ``x`` is shown with (see the module's conventions)."""
    d = metric_digits(metric) if digits is None else digits
    ax = abs(x)
    if NOISE_FLOOR <= ax < 0.5 * 10**-d:
        # the first significant digit's position, then TINY_SIGNIFICANT digits from it
        return max(d, -math.floor(math.log10(ax)) + TINY_SIGNIFICANT - 1)
    return d


def _fixed(v: float, decimals: int) -> str:
    if abs(v) >= LARGE:
        return f"{v:,.0f}"
    text = f"{v:.{decimals}f}"
    # rounding noise of either sign reads as zero, never "-0.000"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def format_count(n: Any) -> str:
    """A count as an integer with thousands separators (``12,345``); ``—`` when missing; anything else
    (a per-class map of counts) as its text."""
    v = number(n)
    if v is None:
        return DASH if n is None or isinstance(n, (bool, float)) or _is_float(n) else str(n)
    return f"{round(v):,}"


def format_value(x: Any, metric: str | None = None, *, digits: int | None = None) -> str:
    """One value for reading: at ``metric``'s precision (or ``digits`` decimals), counts as integers.

    ``—`` for a missing or non-finite value; text that is not a number is returned as it is."""
    if _is_count(x):
        return format_count(x)
    v = number(x)
    if v is None:
        return DASH if x is None or isinstance(x, (bool, float, int)) or _is_float(x) else str(x)
    if abs(v) < NOISE_FLOOR:
        v = 0.0
    return _fixed(v, decimals_for(v, metric, digits))


#: The most decimals :func:`format_beside` adds to tell a value from its threshold.
MAX_BESIDE_DIGITS = 6


def format_beside(x: Any, reference: Any, metric: str | None = None) -> str:
    """``x`` as :func:`format_value`, with more decimals (up to :data:`MAX_BESIDE_DIGITS`) where it would
    read the same as ``reference`` but differs from it: a gate's value 0.0504 against a threshold of
    0.05 reads ``0.0504 > 0.05``, not ``0.050 > 0.05``, which would contradict its verdict."""
    text = format_value(x, metric)
    v, r = number(x), number(reference)
    if v is None or r is None or v == r or _is_count(x):
        return text
    d = decimals_for(v, metric)
    while d < MAX_BESIDE_DIGITS and float(_fixed(v, d)) == float(_fixed(r, d)):
        d += 1
    return _fixed(v, d)


def _is_float(x: Any) -> bool:
    return type(x).__name__.startswith("float")


def format_interval(est: Any, lo: Any, hi: Any, metric: str | None = None, *, digits: int | None = None) -> str:
    """``0.812 (0.771–0.850)``: the estimate and its interval at one precision (the finest any needs), the
    bounds joined by `` to `` when one is negative; the estimate alone when a bound is missing."""
    e, a, b = number(est), number(lo), number(hi)
    if e is None:
        return DASH
    if a is None or b is None:
        return format_value(e, metric, digits=digits)
    return f"{_fixed(*_one_precision([e, a, b], metric, digits))} ({format_range(a, b, metric, digits=digits, like=e)})"


def _one_precision(values: list[float], metric: str | None, digits: int | None) -> tuple[float, int]:
    """The first value (noise as 0) and the decimals all of ``values`` share: the finest any needs."""
    vals = [0.0 if abs(v) < NOISE_FLOOR else v for v in values]
    return vals[0], max(decimals_for(v, metric, digits) for v in vals)


def format_range(lo: Any, hi: Any, metric: str | None = None, *, digits: int | None = None, like: Any = None) -> str:
    """``0.771–0.850``: two bounds at one precision (shared with ``like``, an estimate shown beside
    them), joined by an en dash, or by `` to `` when one is negative; ``—`` when one is missing."""
    a, b, e = number(lo), number(hi), number(like)
    if a is None or b is None:
        return DASH
    extra = [] if e is None else [e]
    _, d = _one_precision([a, b, *extra], metric, digits)
    ta, tb = (_fixed(0.0 if abs(v) < NOISE_FLOOR else v, d) for v in (a, b))
    sep = " to " if ta.startswith("-") or tb.startswith("-") else "–"
    return f"{ta}{sep}{tb}"


def format_entry(entry: Any, metric: str | None = None, *, digits: int | None = None) -> str:
    """A metric entry of the bundle (``{"estimate", "ci_low", "ci_high"}``, a bare number or missing)
    as :func:`format_interval`; an undefined entry with its reason: ``— (no events)``."""
    if isinstance(entry, Mapping):
        est = entry.get("estimate", entry.get("statistic"))
        if number(est) is None:
            reason = entry.get("reason")
            return f"{DASH} ({reason})" if reason else DASH
        return format_interval(est, entry.get("ci_low"), entry.get("ci_high"), metric, digits=digits)
    return format_value(entry, metric, digits=digits)


def format_p(p: Any) -> str:
    """A p-value: three decimals, ``< 0.001`` below 0.001, ``—`` when missing."""
    v = number(p)
    if v is None:
        return DASH
    if v < P_FLOOR:
        return f"< {P_FLOOR:g}"
    return f"{min(v, 1.0):.3f}"


def p_clause(p: Any) -> str:
    """``p = 0.042``, ``p < 0.001`` or ``p = —``: a p-value inside a sentence."""
    text = format_p(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def format_declared(x: Any) -> str:
    """A number as a protocol declares it, shortest exact form (a threshold 0.65, a band edge 40):
    never padded to a precision it was not given."""
    v = number(x)
    if v is None:
        return DASH
    return str(int(v)) if v.is_integer() else f"{v:g}"
