"""Gates on a site or combined bundle (:mod:`validate.federation`), and the bundle kinds.

Scopes judged per site (``each_site``, ``subgroup_gap``) and on the synthesis are judged as in a central
run (:func:`validate.gates.judge_gates`). A gate with nothing to be judged on gets one FAIL row with the
reason, whatever its insufficient policy, because nothing may read as PASS that was not judged: the
pooled scopes (``overall``, ``each_subgroup``, ``worst_subgroup``: no pooled patient-level block), gates
after a calibration method (no calibration comparison), shift and drift counts (no development-site
cases) and comparisons with a baseline model. Kept apart from :mod:`validate.federation` so that
:func:`validate.pipeline.regate` can judge such a bundle again without importing the run machinery.
"""

from __future__ import annotations

BUNDLE_KINDS = ("central", "site", "combined")

CALIBRATION_ABSENT = (
    "the calibration comparison fits each method on the fit sites' cases and evaluates it on the other "
    "sites' cases: not computed where the cases stay at their sites"
)
SHIFT_ABSENT = (
    "dataset shift compares a site's cases with the development site's cases: not computed where the "
    "cases stay at their sites"
)
# gate scopes that read a pooled patient-level block (gates.py); see judge_federated
POOLED_SCOPES = ("overall", "each_subgroup", "worst_subgroup")
GATE_POOLED_REASON = "no pooled patient-level block in a combined bundle"


def bundle_kind(provenance: dict | None) -> str:
    """``central``, ``site`` or ``combined`` (absent: central, every bundle made before site bundles)."""
    return str((provenance or {}).get("bundle_kind") or "central")


def _unjudgeable(spec, kind: str) -> str | None:
    """Why a gate has nothing to be judged on in a site or combined bundle, None when it has."""
    from validate.gates import SHIFT_METRICS

    if spec.compare is not None:
        return "no paired comparison with a baseline model in a site or combined bundle"
    if spec.metric in SHIFT_METRICS:
        return SHIFT_ABSENT
    if spec.calibration is not None:
        return CALIBRATION_ABSENT
    if spec.kind == "across_sites" and kind == "site":
        return "the synthesis across sites is made by `validate combine` from the site bundles, not in a site bundle"
    if spec.kind in POOLED_SCOPES:
        return GATE_POOLED_REASON if kind == "combined" else "no pooled patient-level block in a site bundle"
    return None


def judge_federated(protocol, parts: dict, *, kind: str, sites=None):
    """The :class:`validate.gates.GateReport` of a site or combined bundle: gates judged per site and on
    the synthesis as in a central run; a gate with nothing to judge (module docstring) gets one FAIL row
    with the reason, whatever its insufficient policy."""
    from validate.gates import GateReport, GateRow, gate_specs, judge_gates

    specs = gate_specs(protocol.gates)
    failed, judged = [], []
    for spec in specs:
        why = _unjudgeable(spec, kind)
        if why is None:
            judged.append(spec)
            continue
        failed.append(
            GateRow(
                gate=spec.label,
                metric=spec.metric,
                scope=spec.scope,
                item=spec.scope,
                on=spec.on,
                direction=spec.direction,
                threshold=spec.threshold,
                calibration=spec.calibration,
                verdict="fail",
                reason=f"{why}; a gate with nothing to judge fails",
                subgroup=spec.attribute,
            )
        )
    metrics = parts["metrics"]
    blocks = list((metrics.get("sites") or {}).values())
    # the gate checks read the metric names from a block: every site block has the pooled block's keys
    view = {**metrics, "overall": blocks[0] if blocks else {}}
    report = judge_gates(
        judged,
        view,
        subgroups=parts.get("subgroups"),
        protocol=protocol,
        sites=sites,
        cohort=parts.get("sites"),
    )
    rows = [r for r in report.rows if not r.builtin] + failed + [r for r in report.rows if r.builtin]
    return GateReport(gates=specs, rows=rows, name=report.name)


def name_absent_sites(report, absent: list[str]) -> None:
    """A declared site with no site bundle among those combined: its failing rows say so."""
    for row in report.rows:
        if row.site in absent and row.verdict == "fail":
            row.reason = f"no site bundle of declared site {row.site} among those combined"


def regate_federated(bundle, protocol):
    """The gates of a site or combined bundle judged again (``validate gate``), on its own parts."""
    parts = {
        "metrics": bundle.metrics,
        "subgroups": bundle.subgroups,
        "sites": bundle.sites,
    }
    report = judge_federated(protocol, parts, kind=bundle_kind(bundle.provenance))
    if bundle_kind(bundle.provenance) == "combined":
        declared = [s.id for s in protocol.sites]
        name_absent_sites(report, [s for s in declared if s not in (bundle.metrics.get("sites") or {})])
    return report
