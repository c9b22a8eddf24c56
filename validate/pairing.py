"""Two existing results bundles compared case by case: :func:`compare_bundles` (``validate compare``, the
dashboard's "Compare runs").

Two bundles of the same protocol that scored the same cohort can be compared like a run with
``--baseline``: their cases are matched by (site, hashed case id) and the paired comparison of
:func:`validate.analysis.comparison.compare` is computed on their ``predictions.parquet``. The hashed ids
match only when both runs hashed with the same key, so both runs must set the same secret in
``$VALIDATE_CASE_ID_KEY`` (``validate.bundle``); a run without it draws a random key and its bundle can be
compared with no other. Each bundle records a fingerprint of its key (``case_id_key_check`` in
``provenance.json``, never the key), so different keys are told apart before anything is matched.

Refused (:class:`InputError`, exit 2): bundles of different protocols (name or version) or cohorts (the
declared sites), ids hashed with different keys (or one hashed and one kept), a bundle that does not say
which key it used, and bundles with no case in common.

The estimates of the differences equal those of the run with ``--baseline`` (same cases, same
predictions). AUROC intervals (paired DeLong) are equal too; the bootstrap intervals are drawn anew:
the patient clusters are resampled in the order of their hashed ids, not of the original ones, so they
differ from the run's by Monte Carlo error only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from validate.bundle import CASE_ID_KEY_ENV
from validate.errors import InputError

#: How to make two runs' hashed case ids comparable (every refusal about keys says it).
SHARE_KEY = (
    f"run both with the same secret in ${CASE_ID_KEY_ENV} (e.g. `export {CASE_ID_KEY_ENV}=...` kept "
    "in your CI's secret store), or run the new model once with --baseline"
)


def compare_bundles(
    new_path: str | Path,
    baseline_path: str | Path,
    *,
    protocol_path: str | Path | None = None,
    new_label: str = "new",
    baseline_label: str = "baseline",
) -> dict:
    """The paired comparison (a ``comparison.json`` dict, :class:`validate.contract.ComparisonFile`) of
    the bundle at ``new_path`` with the one at ``baseline_path``, with the metric settings of the new
    bundle's protocol (or of ``protocol_path``). Raises :class:`InputError` for bundles that cannot be
    paired (module docstring)."""
    from validate.bundle import read_bundle
    from validate.metrics import MetricSettings
    from validate.protocol import load_protocol

    new, base = read_bundle(new_path), read_bundle(baseline_path)
    protocol = load_protocol(protocol_path) if protocol_path else new.load_protocol()
    check_same_protocol(new, base)
    check_same_key(new, base)
    new_table, base_table = _table(new, protocol), _table(base, protocol)
    check_common_cases(new_table.frame, base_table.frame, new.path, base.path)
    from validate.pipeline import compare_models

    order = [s.id for s in protocol.sites if (new_table.frame["site"] == s.id).any()]
    comparison = compare_models(
        protocol, new_table, base_table.frame, settings=MetricSettings.from_protocol(protocol.metrics), order=order
    )
    comparison.update(new=bundle_identity(new, new_label), baseline=bundle_identity(base, baseline_label))
    return comparison


def check_same_protocol(new: Any, base: Any) -> None:
    """Refuse bundles of different protocols (name and version) or cohorts (declared sites)."""
    a, b = new.provenance.get("protocol") or {}, base.provenance.get("protocol") or {}

    def ident(p: dict) -> str:
        return f"{p.get('name')} v{p.get('version')}"

    if (a.get("name"), a.get("version")) != (b.get("name"), b.get("version")):
        raise InputError(
            f"the bundles are runs of different protocols ({ident(a)} and {ident(b)}); a paired "
            "comparison needs the same cases scored by both models",
            file=base.path,
            expected=f"a bundle of {ident(a)}, as {new.path.name} is",
        )
    sites_a, sites_b = _declared_sites(new), _declared_sites(base)
    if sites_a != sites_b:
        raise InputError(
            f"the bundles are of different cohorts: sites {sites_a} and {sites_b}",
            file=base.path,
            expected=f"a bundle of the same sites as {new.path.name}",
        )


def check_same_key(new: Any, base: Any) -> None:
    """Refuse bundles whose case ids were not hashed with one key (or kept by both)."""
    checks = [b.provenance.get("case_id_key_check") for b in (new, base)]
    kept = ["kept" in str(b.provenance.get("case_ids") or "") for b in (new, base)]
    if all(kept):
        return
    if any(kept):
        which = (new if kept[0] else base).path.name
        raise InputError(
            f"{which} keeps the original case ids and the other bundle hashes them: their cases cannot be matched",
            file=base.path,
            expected=f"both hashed with one key: {SHARE_KEY}",
        )
    if None in checks:
        which = (new if checks[0] is None else base).path.name
        raise InputError(
            f"{which} does not record which key hashed its case ids (case_id_key_check in "
            "provenance.json): its cases cannot be matched with another run's",
            file=base.path,
            expected=f"bundles written by this validate: {SHARE_KEY}",
        )
    if checks[0] != checks[1]:
        random = any("random" in str(b.provenance.get("case_ids") or "") for b in (new, base))
        why = " (a run without the variable draws a random key)" if random else ""
        raise InputError(
            f"the bundles' case ids were hashed with different keys{why}: their cases cannot be matched",
            file=base.path,
            expected=SHARE_KEY,
        )


def check_common_cases(new_frame: Any, base_frame: Any, new_path: Path, base_path: Path) -> None:
    """Refuse bundles with no (site, case id) in common."""

    def pairs(frame: Any) -> set:
        return set(zip(frame["site"].astype(str), frame["case_id"].astype(str), strict=True))

    if not pairs(new_frame) & pairs(base_frame):
        raise InputError(
            f"no case of {new_path.name} is in {base_path.name} (matched by site and hashed case id)",
            file=base_path,
            expected=f"runs on the same cases: {SHARE_KEY}",
        )


def bundle_identity(bundle: Any, label: str) -> dict:
    """``{"label", "source", "sha256"}`` of the model a bundle scored, from ``provenance.json``."""
    from validate.pipeline import model_identity

    return model_identity(bundle.provenance, label)


def _declared_sites(bundle: Any) -> list[str]:
    import yaml

    data = yaml.safe_load(bundle.protocol_text) or {}
    return [str(s.get("id")) for s in data.get("sites") or [] if isinstance(s, dict)]


def _table(bundle: Any, protocol: Any):
    from validate.pipeline import predictions_table

    return predictions_table(protocol, bundle.predictions)
