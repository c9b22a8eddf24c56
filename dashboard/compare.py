"""Which comparison two runs allow, and the MOVER interval for two independent cohorts.

"Compare runs" puts a run (new) beside another (baseline). What a difference between them means
depends on what the two runs scored (:func:`pairing`):

- **paired**: the same protocol (name and version), the same declared sites, and case ids hashed with
  one key (equal ``case_id_key_check`` in ``provenance.json``, or ids kept by both) with cases in
  common. Both models scored the same cases, so the difference is computed case by case by
  :func:`validate.compare_bundles` (paired DeLong for AUROC, the same bootstrap replicates for both
  models otherwise), exactly as a run with ``--baseline``.
- **independent**: the same protocol on cases that cannot be shared: no site in common, or ids hashed
  with one key and no case in common. Each run's own interval is all there is, and the difference's
  interval is combined by MOVER (:func:`mover_difference`), labelled "independent cohorts (MOVER)".
- **unknown**: the same protocol and shared sites, but case ids hashed with different keys (or one
  kept, or a bundle that does not record its key): whether they scored the same cases cannot be told.
  No difference is shown unless the reader says the cohorts are different cases.
- **partial**: one key, shared cases, but different declared sites: neither one cohort nor two.
- **unrelated**: different protocols (a heart model and a chest model): never compared; each run's own
  numbers can be listed side by side on request, without a difference.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PAIRED, INDEPENDENT, UNKNOWN, PARTIAL, UNRELATED = "paired", "independent", "unknown", "partial", "unrelated"
MOVER_LABEL = "independent cohorts (MOVER)"
SHARE_KEY_HINT = (
    "run both with the same secret in $VALIDATE_CASE_ID_KEY (a run without it draws a random key "
    "whose hashes match no other run), or run the new model once with `validate run ... --baseline "
    "OLD_CHECKPOINT`"
)

Triplet = tuple[float | None, float | None, float | None]


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


@dataclass(frozen=True)
class Pairing:
    """What two runs allow: ``kind`` (module docstring) and a sentence saying why."""

    kind: str
    why: str


def protocol_identity(run: Any) -> tuple[str | None, str | None]:
    """(name, version) of the protocol a run ran, from ``provenance.json`` (the protocol copy as fallback)."""
    p = run.provenance.get("protocol") or {}
    return (
        p.get("name") or run.protocol.get("name"),
        str(p.get("version") or run.protocol.get("version") or "") or None,
    )


def declared_sites(run: Any) -> list[str]:
    """The protocol's site ids (the copy in the bundle), else the sites with metrics."""
    ids = [str(s.get("id")) for s in run.protocol.get("sites") or [] if isinstance(s, dict) and s.get("id")]
    return ids or list(run.sites)


def key_fingerprint(run: Any) -> str | None:
    """``"kept"`` when the run kept the original case ids, else its ``case_id_key_check`` (None when the
    bundle does not record one: it cannot be paired with any other)."""
    if "kept" in str(run.provenance.get("case_ids") or ""):
        return "kept"
    check = run.provenance.get("case_id_key_check")
    return str(check) if check else None


def _ident(identity: tuple[str | None, str | None]) -> str:
    name, version = identity
    return f"{name} v{version}" if version else str(name)


def pairing(new: Any, base: Any, shared_cases: Callable[[], int]) -> Pairing:
    """The comparison ``new`` and ``base`` allow (module docstring). ``shared_cases()`` counts the
    (site, case id) pairs both runs scored; it is only called when both hashed with one key."""
    a, b = protocol_identity(new), protocol_identity(base)
    if a != b or new.task != base.task:
        return Pairing(
            UNRELATED,
            f"the runs are of different protocols ({_ident(a)} and {_ident(b)}): they measure "
            "different models' tasks on different cohorts, and a difference between their "
            "numbers means nothing",
        )
    sites_a, sites_b = declared_sites(new), declared_sites(base)
    if not set(sites_a) & set(sites_b):
        return Pairing(INDEPENDENT, "the runs share no site, so no case was scored by both")
    ka, kb = key_fingerprint(new), key_fingerprint(base)
    if ka is None or kb is None or ka != kb:
        why = (
            "one run does not record which key hashed its case ids"
            if None in (ka, kb)
            else "one run keeps the original case ids and the other hashes them"
            if "kept" in (ka, kb)
            else "their case ids were hashed with different keys"
        )
        return Pairing(
            UNKNOWN,
            f"both runs are of {_ident(a)} at the same sites, but {why}, so whether they scored "
            f"the same cases cannot be told. For the paired difference, {SHARE_KEY_HINT}",
        )
    n = shared_cases()
    if n == 0:
        return Pairing(INDEPENDENT, "the runs hashed their case ids with one key and share no case")
    if sorted(sites_a) != sorted(sites_b):
        return Pairing(
            PARTIAL,
            f"the runs share {n} case(s) but declare different sites ({', '.join(sites_b)} and "
            f"{', '.join(sites_a)}): neither one cohort scored twice nor two independent ones",
        )
    return Pairing(
        PAIRED,
        f"both runs are of {_ident(a)} and scored the same cases ({n} matched by site and hashed "
        "case id): the differences are paired, case by case",
    )


def shared_case_count(new_predictions: Any, base_predictions: Any) -> int:
    """How many (site, case id) pairs both predictions tables hold (ids as the bundles store them)."""

    import pandas as pd

    def pairs(frame: Any) -> pd.DataFrame:  # a hash join on the two columns: no Python tuple per case
        keys = {"site": frame["site"].astype(str), "case_id": frame["case_id"].astype(str)}
        return pd.DataFrame(keys).drop_duplicates()

    return len(pairs(new_predictions).merge(pairs(base_predictions), on=["site", "case_id"], how="inner"))
