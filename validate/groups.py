"""The order of subgroup values, shared by every table that lists groups (``sites.json`` make-up,
``subgroups.json``, the report): numeric bands by their lower bound (``<45``, ``45-54``, ...,
``>=65``), other values alphabetically, ``missing`` last; intersections ``"a & b"`` part by part.

One module with one job, below both analyses that need it (:mod:`validate.analysis.sites` and
:mod:`validate.analysis.subgroups`) and importing nothing of validate, so neither analysis has to
import the other for it.
"""

from __future__ import annotations

import re

MISSING = "missing"

_NUM = re.compile(r"^(<|>=|\[)?\s*(-?\d+(?:\.\d+)?)")


def group_sort_key(value: str) -> tuple:
    """Natural order of group labels: bands by their lower bound, then text, ``missing`` last;
    intersections ``"a & b"`` part by part."""
    parts = str(value).split(" & ")
    key = []
    for part in parts:
        if part == MISSING:
            key.append((2, 0.0, part))
            continue
        m = _NUM.match(part)
        if m:
            x = float(m.group(2))
            key.append((0, x - 0.5 if m.group(1) == "<" else x, part))
        else:
            key.append((1, 0.0, part))
    return tuple(key)
