"""Multi-hospital studies where the data never leaves the site: site bundles and their combination.

``validate run PROTOCOL --site ID`` (:func:`run_site`) runs the protocol on one site's cases, at the
site, and writes a *site bundle*: the results bundle of that site with no case row in it. It holds the
site's metric BLOCK (with intervals, the DeLong/Wald standard errors and the bootstrap ``se`` the
synthesis needs), its subgroup analysis, curves (ROC, PR, reliability bins: no case values), cohort
counts, gates judged on what is there, the report, and provenance with ``bundle_kind: "site"``, the
site id and the protocol and checkpoint sha256. It holds NO ``predictions.parquet``, NO
``failures.csv`` (exclusions are counted by reason in ``sites.json``), NO ``cases.json``, NO
thumbnails: no case id (raw or hashed), patient id or image path in any byte.

The numbers are those of a central run: each site's block is computed from the site's cases alone in a
central run too (:func:`validate.metrics.report.site_block`: same seed, no strata, same clusters), so
the site bundle's block equals the central bundle's block of that site. The one input from elsewhere is
the target-sensitivity threshold, found at the development site and carried to the others: a
non-development site takes it from the development site's own site bundle (``--development-bundle
DIR``), and is refused without it when the protocol sets ``metrics.target_sensitivity``.

What a site cannot compute alone is written as not computed, with the reason: the pooled patient-level
blocks (``overall`` of metrics.json and curves.json: :class:`validate.contract.PooledAbsent`; pooled
subgroup blocks), the calibration comparison (its methods are fitted on the fit sites' cases and
evaluated on the others') and the dataset-shift tests (they compare a site's cases with the development
site's).

``validate combine SITE_BUNDLE... --out BUNDLE`` (:func:`combine_bundles`) checks that every bundle is a
site bundle, made with one protocol (sha256) and one checkpoint (sha256), one bundle per site, each file
as its provenance hashed it, and each non-development site carrying the development bundle's threshold;
then merges the per-site parts into a *combined bundle* (``bundle_kind: "combined"``) with the synthesis
across sites (:func:`synthesis_of`), the gates and the report.

Gates on a site or combined bundle (:func:`judge_federated`): scopes judged per site (``each_site``,
``subgroup_gap``) and on the synthesis are judged as in a central run; the pooled scopes (``overall``,
``each_subgroup``, ``worst_subgroup``), gates after a calibration method, shift and drift counts, and
comparisons with a baseline have nothing to be judged on, so their rows FAIL whatever the insufficient
policy: nothing may read as PASS that was not judged. A declared site without a site bundle fails the
built-in ``sites scored`` check.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from validate.errors import InputError
from validate.site_gates import CALIBRATION_ABSENT, SHIFT_ABSENT, bundle_kind, judge_federated, name_absent_sites

POOLED_ABSENT_SITE = (
    "a site bundle holds one site's results: pooling patients across sites needs every site's cases, "
    "which stay at their sites"
)
POOLED_ABSENT_COMBINED = (
    "no pooled patient-level block in a combined bundle: each site's cases stayed at the site; "
    "see the synthesis across sites"
)


def pooled_absent(kind: str) -> dict:
    """What a site (``kind="site"``) or combined bundle writes in place of a pooled block."""
    return {"not_computed": True, "reason": POOLED_ABSENT_SITE if kind == "site" else POOLED_ABSENT_COMBINED}


# ---- the site's run --------------------------------------------------------------------------------


def site_protocol(protocol, site: str):
    """``protocol`` with only ``site`` declared (what a site scores and judges); :class:`InputError`
    naming the declared sites when ``site`` is not one. The roles of the other sites (which one is the
    development site) are read from the full protocol, never from this one."""
    declared = [s.id for s in protocol.sites]
    if site not in declared:
        raise InputError(
            f"--site {site!r} is not a site of the protocol",
            file=protocol.path,
            field="--site",
            expected=f"one of the protocol's site ids: {', '.join(declared)}",
        )
    return protocol.model_copy(update={"sites": [s for s in protocol.sites if s.id == site]})


def development_site(protocol) -> str | None:
    """The protocol's (first) development site, None without one."""
    dev = protocol.sites_with_role("development")
    return dev[0].id if dev else None


def needs_development_threshold(protocol, site: str) -> bool:
    """Whether ``site``'s blocks take the target-sensitivity threshold from the development site:
    a binary protocol with ``metrics.target_sensitivity``, a development site, and ``site`` not it."""
    dev = development_site(protocol)
    return (
        protocol.task == "binary"
        and protocol.metrics.target_sensitivity is not None
        and dev is not None
        and dev != site
    )


def development_threshold(protocol, site: str, development_bundle=None, *, checkpoint_sha256=None) -> dict | None:
    """The development site's target-sensitivity threshold for ``site`` (``{"site", "threshold",
    "bundle_sha256"}``), from the development site's bundle; None when ``site`` needs none.

    The development bundle must be a site bundle of the development site, made with this protocol
    (sha256) and, when known, this checkpoint; otherwise, or when it is missing, :class:`InputError`."""
    if not needs_development_threshold(protocol, site):
        return None
    dev = development_site(protocol)
    if development_bundle is None:
        raise InputError(
            f"site {site} is not the development site: its target-sensitivity threshold "
            f"(metrics.target_sensitivity: {protocol.metrics.target_sensitivity}) is found at development "
            f"site {dev} and carried here",
            file=protocol.path,
            field="--development-bundle",
            expected=f"--development-bundle DIR: the site bundle made at {dev} with "
            f"`validate run PROTOCOL --site {dev}`",
        )
    from validate.bundle import read_bundle

    path = Path(development_bundle)
    bundle = read_bundle(path)
    prov = bundle.provenance
    expected = f"the site bundle of development site {dev} made with this protocol and checkpoint"
    problem = _development_problem(prov, protocol, dev, checkpoint_sha256)
    if problem:
        raise InputError(problem, file=path, field="--development-bundle", expected=expected)
    block = (bundle.metrics.get("sites") or {}).get(dev) or {}
    target = block.get("target_sensitivity") or {}
    threshold = target.get("threshold")
    return {"site": dev, "threshold": threshold, "bundle_sha256": _file_sha256(path / "provenance.json")}


def _development_problem(prov: dict, protocol, dev: str | None, checkpoint_sha256) -> str | None:
    """Why a development bundle cannot lend its threshold, None when it can."""
    if bundle_kind(prov) != "site":
        return f"it is a {bundle_kind(prov)} bundle, not a site bundle"
    if prov.get("site") != dev:
        return f"it is the site bundle of {prov.get('site')}, not of development site {dev}"
    if (prov.get("protocol") or {}).get("sha256") != protocol.sha256:
        return "it was made with another protocol (protocol sha256 differs)"
    theirs = (prov.get("checkpoint") or {}).get("sha256")
    if checkpoint_sha256 is not None and theirs != checkpoint_sha256:
        return "it was made with another checkpoint (checkpoint sha256 differs)"
    return None


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def site_frame(frame, site: str, source: str):
    """The rows of ``site`` in a predictions frame; :class:`InputError` when it holds none."""
    rows = frame[frame["site"].astype(str) == site]
    if rows.empty:
        raise InputError(
            f"no scored case of site {site}",
            field="site",
            expected=f"{source} holding cases of site {site}",
        )
    return rows.reset_index(drop=True)


def site_parts(protocol, frame, failures, *, site: str, development: str | None, threshold_carry: float | None) -> dict:
    """Every JSON part of a site bundle from the site's predictions frame (original identifiers; none is
    output): the parts of :func:`validate.pipeline.analyse` restricted to what the site can compute.
    ``protocol`` declares the site alone (:func:`site_protocol`); ``development``: the full protocol's
    development site; ``threshold_carry``: its target-sensitivity threshold (None at that site)."""
    from validate.analysis.sites import cohort_summary, site_curves
    from validate.analysis.subgroups import subgroup_analysis
    from validate.cohort import derive_subgroups
    from validate.metrics import MetricSettings
    from validate.metrics.report import site_block
    from validate.pipeline import predictions_table, step

    table = predictions_table(protocol, frame)
    settings = MetricSettings.from_protocol(protocol.metrics, protocol.decision)
    names = list(protocol.classes or []) if protocol.task == "multiclass" else list(protocol.labels or [])
    block = site_block(
        table,
        site,
        settings=settings,
        development_site=development,
        threshold_carry=threshold_carry,
        names=names or None,
    )
    metrics = {
        "task": protocol.task,
        "n_bootstrap": settings.n_bootstrap,
        "ci_level": settings.ci_level,
        "seed": settings.seed,
        "overall": pooled_absent("site"),
        "sites": {site: block},
        "subgroups": {},
    }
    groups = derive_subgroups(table.frame, protocol)
    subgroups = None
    if protocol.subgroups:
        name_kw = _name_kw(protocol)
        subgroups = step(
            "subgroups",
            subgroup_analysis,
            table,
            groups,
            task=protocol.task,
            settings=settings,
            metrics=None,
            sites=[site],
            **name_kw,
        )
        subgroups["overall"] = None
    curves = step(
        "curves",
        site_curves,
        table,
        task=protocol.task,
        names=names,
        settings=settings,
        sites=[site],
        calibration=None,
        groups=groups,
    )
    curves["overall"] = pooled_absent("site")
    if curves.get("decision"):  # the decision curve pooled over sites: not here either
        curves["decision"]["blocks"]["overall"] = pooled_absent("site")
    if curves.get("subgroups"):
        curves["subgroups"]["overall"] = {}
    cohort = cohort_summary(table, protocol, groups, failures, ci_level=settings.ci_level)
    parts = {
        "table": table,
        "metrics": metrics,
        "calibration": {"reason": CALIBRATION_ABSENT},
        "shift": {"reason": SHIFT_ABSENT},
        "subgroups": subgroups,
        "curves": curves,
        "sites": cohort,
        "settings": settings,
        "order": [site],
        "comparison": None,
    }
    parts["gates"] = judge_federated(protocol, parts, kind="site")
    return parts


def _name_kw(protocol) -> dict:
    if protocol.task == "multiclass":
        return {"class_names": list(protocol.classes)}
    if protocol.task == "multilabel":
        return {"label_names": list(protocol.labels)}
    return {}


def write_site_bundle(w, protocol, parts: dict, loaded: dict, *, site: str, started: str, carried) -> Path:
    """Assemble a site bundle (no case row, id or path: module docstring) in the staging folder of ``w``
    (a :class:`validate.bundle.BundleWriter`), with its report, and commit it."""
    from validate.bundle import make_provenance, now_iso

    _write_parts(w, protocol, parts)
    prov = make_provenance(
        protocol=protocol,
        started_at=started,
        finished_at=now_iso(),
        checkpoint=loaded.get("checkpoint"),
        predictions_source=loaded.get("predictions_source"),
        device=loaded.get("device"),
        case_ids="none: a site bundle holds no case rows",
        extra={
            "bundle_kind": "site",
            "site": site,
            "development_threshold": carried,
            "files": w.file_hashes(),
            "scoring_counts": loaded.get("counts"),
        },
    )
    return _finish(w, prov)


def _write_parts(w, protocol, parts: dict) -> None:
    """The JSON parts, gates and protocol copy of a site or combined bundle (no case-level file)."""
    gates = parts["gates"]
    w.copy_file(protocol.path, "protocol.yaml")
    w.write_json("metrics.json", parts["metrics"])
    w.write_json("calibration.json", parts["calibration"])
    w.write_json("shift.json", parts["shift"])
    if parts.get("subgroups") is not None:
        w.write_json("subgroups.json", parts["subgroups"])
    w.write_json("curves.json", parts["curves"])
    w.write_json("sites.json", parts["sites"])
    w.write_json("gates.json", gates.to_json())
    w.write_text("junit.xml", gates.to_junit())
    w.write_text("gates.md", gates.to_markdown(ci_level=parts["settings"].ci_level))


def _finish(w, prov: dict) -> Path:
    from validate.bundle import Bundle
    from validate.report import render_report

    w.write_json("provenance.json", prov)
    w.write_text("report.html", render_report(Bundle(path=w.staging, display_name=w.target.name)))
    return w.commit()


def run_site(
    protocol_path,
    *,
    site: str,
    development_bundle=None,
    checkpoint=None,
    predictions=None,
    out=None,
    runs_dir="runs",
    cache_dir=None,
    device="auto",
    batch_size=64,
    workers=None,
    cache_inputs=False,
    hash_inputs=None,
    baseline=None,
):
    """``validate run PROTOCOL --site ID``: score the site's cases (or read its predictions), and write
    its site bundle; returns a :class:`validate.pipeline.RunResult`."""
    from validate.bundle import BundleWriter, default_bundle_dir, now_iso
    from validate.pipeline import RunResult, load_predictions
    from validate.preflight import check_protocol_gates
    from validate.protocol import load_protocol
    from validate.summary import summarise

    full = load_protocol(protocol_path)
    protocol = site_protocol(full, site)
    if baseline is not None or protocol.model.baseline is not None or protocol.comparison_gates:
        raise InputError(
            "a site bundle holds no comparison with a baseline model",
            file=protocol.path,
            field="--site",
            expected="a protocol without model.baseline and compare: baseline gates, and no --baseline",
        )
    check_protocol_gates(full, baseline=False)  # the study's gates, as every site and the coordinator read them
    # a missing or mismatched development bundle is refused before any scoring (its checkpoint after)
    development_threshold(full, site, development_bundle)
    started = now_iso()
    t0 = time.perf_counter()
    target = Path(out) if out else default_bundle_dir(runs_dir, f"{protocol.name}-{site}")
    with BundleWriter(target) as writer:
        cache_root = Path(cache_dir) if cache_dir else writer.target.parent / ".cache"
        loaded = load_predictions(
            protocol,
            checkpoint=checkpoint,
            predictions=predictions,
            scoring_dir=cache_root / f"{protocol.name}.{site}",
            cache_dir=cache_root / "shards",
            device=device,
            batch_size=batch_size,
            workers=workers,
            cache_inputs=cache_inputs,
            hash_inputs=hash_inputs,
        )
        ck = (loaded.get("checkpoint") or {}).get("sha256")
        carried = development_threshold(full, site, development_bundle, checkpoint_sha256=ck)
        frame = site_frame(loaded["frame"], site, "the predictions")
        failures = loaded["failures"]
        failures = failures[failures["site"].astype(str) == site] if len(failures) else failures
        parts = site_parts(
            protocol,
            frame,
            failures,
            site=site,
            development=development_site(full),
            threshold_carry=(carried or {}).get("threshold"),
        )
        bundle = write_site_bundle(writer, protocol, parts, loaded, site=site, started=started, carried=carried)
    loaded = {**loaded, "failures": failures}
    summary = summarise(protocol, parts, loaded, bundle, seconds=time.perf_counter() - t0)
    return RunResult(bundle=bundle, gates=parts["gates"], metrics=parts["metrics"], summary=summary)


# ---- combine ---------------------------------------------------------------------------------------


def synthesis_of(protocol, metrics: dict) -> dict | None:
    """The random-effects synthesis across sites of ``metrics`` (metrics.json's ``synthesis``), by the
    function a central run calls (:func:`validate.analysis.synthesis.synthesis_for_protocol`), from the
    site blocks alone: a combined bundle's synthesis is the central run's. None when the protocol asks
    for none."""
    from validate.analysis.synthesis import synthesis_for_protocol

    return synthesis_for_protocol(metrics, protocol)


def _read_site_bundle(path: Path):
    """A site bundle, checked: a bundle, of kind site, its files as its provenance hashed them, one site."""
    from validate.bundle import read_bundle

    bundle = read_bundle(path)
    prov = bundle.provenance
    kind = bundle_kind(prov)
    if kind != "site":
        raise InputError(
            f"a {kind} bundle, not a site bundle",
            file=path,
            expected="site bundles made at each site with `validate run PROTOCOL --site ID`",
        )
    for name, digest in sorted((prov.get("files") or {}).items()):
        file = path / name
        if not file.is_file() or _file_sha256(file) != digest:
            raise InputError(
                f"{name} is not the file the site's run wrote (its sha256 differs from provenance.json's)",
                file=path,
                field=f"files.{name}",
                expected="the site bundle as `validate run --site` wrote it",
            )
    sites = list(bundle.metrics.get("sites") or {})
    if sites != [prov.get("site")]:
        raise InputError(
            f"provenance names site {prov.get('site')!r} but metrics.json holds site(s) {sites}",
            file=path,
            field="site",
            expected="the site bundle as `validate run --site` wrote it",
        )
    return bundle


def _model_hash(prov: dict) -> str | None:
    return (prov.get("checkpoint") or {}).get("sha256")


def read_site_bundles(paths) -> list:
    """The site bundles to combine, checked together: one protocol, one checkpoint, one bundle per site,
    sites the protocol declares, and the development threshold carried consistently."""
    if not paths:
        raise InputError("no site bundle to combine", field="SITE_BUNDLE", expected="one or more site bundles")
    bundles = [_read_site_bundle(Path(p)) for p in paths]
    first = bundles[0]
    for b in bundles[1:]:
        for what, get in (("protocol", lambda p: (p.get("protocol") or {}).get("sha256")), ("checkpoint", _model_hash)):
            if get(b.provenance) != get(first.provenance):
                raise InputError(
                    f"made with another {what} than {first.path} ({what} sha256 "
                    f"{get(b.provenance)} vs {get(first.provenance)})",
                    file=b.path,
                    field=f"{what}.sha256",
                    expected=f"site bundles made with one {what}",
                )
    seen: dict[str, Path] = {}
    for b in bundles:
        site = b.provenance["site"]
        if site in seen:
            raise InputError(
                f"site {site} is given twice (also {seen[site]})",
                file=b.path,
                field="site",
                expected="one site bundle per site",
            )
        seen[site] = b.path
    protocol = first.load_protocol()
    declared = {s.id for s in protocol.sites}
    for b in bundles:
        if b.provenance["site"] not in declared:
            raise InputError(
                f"site {b.provenance['site']} is not declared by the protocol",
                file=b.path,
                field="site",
                expected=f"sites among {sorted(declared)}",
            )
    _check_carried(bundles, protocol)
    return bundles


def _check_carried(bundles, protocol) -> None:
    """Every non-development site carries the development bundle's target-sensitivity threshold."""
    dev = development_site(protocol)
    by_site = {b.provenance["site"]: b for b in bundles}
    if dev not in by_site:
        return
    dev_digest = _file_sha256(by_site[dev].path / "provenance.json")
    for site, b in by_site.items():
        carried = b.provenance.get("development_threshold")
        if carried and carried.get("bundle_sha256") != dev_digest:
            raise InputError(
                f"site {site} carried the target-sensitivity threshold of another bundle of development "
                f"site {dev} than the one combined",
                file=b.path,
                field="development_threshold.bundle_sha256",
                expected=f"site bundles made with --development-bundle {by_site[dev].path}",
            )


def combine_parts(protocol, bundles) -> dict:
    """The JSON parts of a combined bundle from checked site bundles (protocol order)."""
    from validate.groups import group_sort_key
    from validate.metrics import MetricSettings

    order = [s.id for s in protocol.sites]
    by_site = {b.provenance["site"]: b for b in bundles}
    present = [s for s in order if s in by_site]
    first = by_site[present[0]]
    metrics = {k: v for k, v in first.metrics.items() if k not in ("schema", "sites", "synthesis")}
    metrics.update(overall=pooled_absent("combined"), subgroups={})
    metrics["sites"] = {s: by_site[s].metrics["sites"][s] for s in present}
    synthesis = synthesis_of(protocol, metrics)
    if synthesis is not None:
        metrics["synthesis"] = synthesis
    curves = _merged(present, by_site, "curves", group_sort_key)
    curves["overall"] = pooled_absent("combined")
    if curves.get("decision"):
        curves["decision"] = _merged_decision(present, by_site)
    subgroups = _merged(present, by_site, "subgroups", group_sort_key)
    cohort = {k: v for k, v in first.sites.items() if k != "schema"}
    cohort["sites"] = {s: by_site[s].sites["sites"][s] for s in present}
    parts = {
        "metrics": metrics,
        "calibration": {"reason": CALIBRATION_ABSENT},
        "shift": {"reason": SHIFT_ABSENT},
        "subgroups": subgroups,
        "curves": curves,
        "sites": cohort,
        "settings": MetricSettings.from_protocol(protocol.metrics, protocol.decision),
        "order": present,
    }
    parts["gates"] = judge_federated(protocol, parts, kind="combined")
    name_absent_sites(parts["gates"], [s for s in order if s not in by_site])
    return parts


def _merged(present: list[str], by_site: dict, part: str, sort_key) -> Any:
    """curves.json or subgroups.json of the sites merged: per-site parts as they are, the group order
    (``groups``) the union of the sites' in the house order; None when the sites have none."""
    first = getattr(by_site[present[0]], part)
    if first is None:
        return None
    out = {k: v for k, v in first.items() if k not in ("schema", "sites")}
    out["sites"] = {s: (getattr(by_site[s], part) or {}).get("sites", {}).get(s) for s in present}
    out["sites"] = {s: v for s, v in out["sites"].items() if v is not None}
    holder = out if part == "subgroups" else out.get("subgroups")
    if holder:
        holder["groups"] = _group_union(present, by_site, part, sort_key)
        if part == "curves":
            holder["sites"] = {
                s: by_site[s].curves["subgroups"]["sites"][s]
                for s in present
                if s in ((by_site[s].curves.get("subgroups") or {}).get("sites") or {})
            }
    return out


def _merged_decision(present: list[str], by_site: dict) -> dict:
    """curves.json ``decision`` of the sites merged: each site's curve at its own prevalence; the pooled
    curve (which mixes the sites' prevalences) needs every site's cases: absent, with the reason."""
    first = by_site[present[0]].curves["decision"]
    sites = {s: by_site[s].curves["decision"]["blocks"]["sites"][s] for s in present}
    return {**first, "blocks": {"overall": pooled_absent("combined"), "sites": sites}}


def _group_union(present: list[str], by_site: dict, part: str, sort_key) -> dict:
    union: dict[str, set] = {}
    for s in present:
        doc = getattr(by_site[s], part) or {}
        groups = (doc if part == "subgroups" else doc.get("subgroups") or {}).get("groups") or {}
        for attr, values in groups.items():
            union.setdefault(attr, set()).update(values)
    return {attr: sorted(values, key=sort_key) for attr, values in union.items()}


def combine_bundles(paths, *, out) -> tuple[Path, Any, dict]:
    """``validate combine``: merge checked site bundles into a combined bundle at ``out``; returns the
    bundle folder, its :class:`validate.gates.GateReport` and its metrics."""
    from validate.bundle import BundleWriter, make_provenance, now_iso

    started = now_iso()
    bundles = read_site_bundles(paths)
    first = bundles[0]
    protocol = first.load_protocol()
    parts = combine_parts(protocol, bundles)
    with BundleWriter(Path(out)) as w:
        _write_parts(w, protocol, parts)
        prov = make_provenance(
            protocol=protocol,
            started_at=started,
            finished_at=now_iso(),
            checkpoint=first.provenance.get("checkpoint"),
            device="none (combined from site bundles)",
            case_ids="none: a combined bundle holds no case rows",
            extra={
                "bundle_kind": "combined",
                "combined_from": [_source(b) for b in bundles],
                "files": w.file_hashes(),
            },
        )
        prov["protocol"]["path"] = (first.provenance.get("protocol") or {}).get("path")
        bundle = _finish(w, prov)
    return bundle, parts["gates"], parts["metrics"]


def _source(bundle) -> dict:
    prov = bundle.provenance
    return {
        "site": prov.get("site"),
        "bundle": bundle.path.name,
        "provenance_sha256": _file_sha256(bundle.path / "provenance.json"),
        "finished_at": prov.get("finished_at"),
        "predictions_source_sha256": (prov.get("predictions_source") or {}).get("sha256"),
    }
