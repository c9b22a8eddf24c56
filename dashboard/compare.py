"""The interval of a difference between two runs' metrics, from the two runs' own intervals.

Two bundles (e.g. model v1 and v2 on the same sites) each carry a metric's estimate and interval, but
not each other's bootstrap replicates, so a paired bootstrap of the difference is not available to a
reader of the bundles. The dashboard therefore combines the two intervals by MOVER.
"""
from __future__ import annotations

import math
from typing import Optional

Triplet = tuple[Optional[float], Optional[float], Optional[float]]


def mover_difference(new: Triplet, base: Triplet) -> Triplet:
    """Difference ``new - base`` with its MOVER interval (Method Of Variance Estimates Recovery).

    Definition (Zou & Donner 2008, Stat Med 27:1693-1702; Newcombe 1998, Stat Med 17:873-890, method
    10 for proportions): with estimates ``a`` (new) and ``b`` (base) and intervals ``[la, ua]``,
    ``[lb, ub]`` at the same level,

        d = a - b
        L = d - sqrt((a - la)^2 + (ub - b)^2)
        U = d + sqrt((ua - a)^2 + (b - lb)^2)

    It recovers each estimate's variance from its own (possibly asymmetric) interval and adds them,
    which is exact (to the normal approximation) when the two estimates are independent, e.g. two
    runs on different cases. When both runs scored the same cases their estimates are positively
    correlated, the variance of the difference is smaller than the sum, and the interval is
    conservative (wider than a paired interval would be). For symmetric intervals it reduces to
    ``d +/- z * sqrt(se_a^2 + se_b^2)``.

    Returns ``(d, L, U)``; ``(d, None, None)`` when either interval is missing, ``(None, None, None)``
    when either estimate is.
    """
    a, la, ua = new
    b, lb, ub = base
    if a is None or b is None:
        return None, None, None
    d = a - b
    if None in (la, ua, lb, ub):
        return d, None, None
    lower = d - math.sqrt((a - la) ** 2 + (ub - b) ** 2)
    upper = d + math.sqrt((ua - a) ** 2 + (b - lb) ** 2)
    return d, lower, upper
