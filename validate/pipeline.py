"""The validation pipeline as a library call: protocol -> predictions (scored, cached, or read from a
file) -> metrics -> calibration comparison -> shift -> subgroups -> gates -> results bundle with its
HTML report.

:func:`run_protocol` runs it end to end and is what ``validate run`` calls; a notebook or another
tool calls it the same way (``validate.run_protocol``) and reads the :class:`RunResult`. Each stage
is also a function of its own: :func:`load_predictions` (score a checkpoint or read a predictions
table), :func:`analyse` (every JSON part of the bundle, gates judged), :func:`write_bundle`, and
:func:`regate` (the gates judged again on an existing bundle).

Every stage can start from a file: ``predictions=PATH`` (or ``model.format: predictions`` in the
protocol) skips scoring. The bundle is assembled beside its target and renamed into place when whole
(:class:`validate.bundle.BundleWriter`). ``out`` may name a new path, an empty folder, or an earlier
bundle of validate (replaced); anything else there is refused before scoring starts
(:class:`validate.errors.InputError`), so a run never deletes the user's files. The gates are checked
for answerability before anything is scored. :attr:`RunResult.exit_code` is the command's exit code:
0 every gate passes, 1 a gate failed (bad input raises ``InputError``, exit 2 on the command line).

Imports of the heavy stages (torch, pandas, the calibrators) happen inside the functions, so importing
this module (and ``validate``) stays cheap.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from validate import progress
from validate.errors import InputError
from validate.summary import summarise


@dataclass
class RunResult:
    """What a run made: the committed bundle folder, its gate report, the metrics (``metrics.json``),
    the paired comparison with the baseline model (``comparison.json``, None without a baseline) and
    the summary ``validate run`` prints."""

    bundle: Path
    gates: Any  # validate.gates.GateReport
    metrics: dict
    summary: str
    comparison: dict | None = None

    @property
    def exit_code(self) -> int:
        return self.gates.exit_code


def _names(protocol) -> dict:
    if protocol.task == "multiclass":
        return {"class_names": list(protocol.classes)}
    if protocol.task == "multilabel":
        return {"label_names": list(protocol.labels)}
    return {}


def load_predictions(
    protocol,
    *,
    checkpoint=None,
    predictions=None,
    scoring_dir: Path,
    cache_dir=None,
    device="auto",
    batch_size=64,
    workers=None,
    cache_inputs=False,
    hash_inputs=None,
) -> dict:
    """The predictions frame, the failures, and what made them (for provenance)."""
    import pandas as pd

    from validate.io import sha256_file
    from validate.predictions import categorical_columns, read_predictions

    empty_failures = pd.DataFrame(columns=["site", "case_id", "reason", "stage"])
    source = predictions
    if source is None and checkpoint is None and protocol.model.format == "predictions":
        source = protocol.resolve(protocol.model.checkpoint)
        if source is None:
            raise InputError(
                "model.format is predictions but model.checkpoint names no file",
                file=protocol.path,
                line=protocol.line_of("model", "checkpoint"),
                field="model.checkpoint",
                expected="the path of a predictions table",
            )
    if source is not None:
        source = Path(source)
        if not source.exists():
            raise InputError(
                "predictions file not found",
                file=source,
                field="--predictions",
                expected="a Parquet or CSV predictions table",
            )
        with progress.phase("predictions", unit="cases") as ph:
            table = read_predictions(
                source, task=protocol.task, text_columns=categorical_columns(protocol), **_names(protocol)
            )
            ph.advance(len(table.frame), detail=source.name)
            ph.note = f"read from {source.name}"
        return {
            "frame": table.frame,
            "failures": empty_failures,
            "device": "none (predictions file)",
            "checkpoint": None,
            "predictions_source": {"path": str(source.resolve()), "sha256": sha256_file(source)},
            "side_dir": source.parent,  # a segmentation table's pixel summaries lie beside it
        }

    from validate.scoring import score_protocol

    with progress.phase("scoring", unit="cases", live=False) as ph:
        res = score_protocol(
            protocol,
            checkpoint=checkpoint,
            out_dir=scoring_dir,
            device=device,
            batch_size=batch_size,
            workers=workers,
            cache_dir=cache_dir,
            cache_inputs=cache_inputs,
            hash_inputs=hash_inputs,
            progress=progress.scoring_bar(),
        )
        ph.advance(int(res.counts.get("cases", 0)))
        ph.note = scoring_note(res.counts)
    failures = res.failures if res.failures is not None else empty_failures
    ck = {"path": str(res.checkpoint_path), "sha256": res.checkpoint_sha256, "format": res.checkpoint_format}
    if res.checkpoint_format == "predictions":
        return {
            "frame": res.predictions,
            "failures": failures,
            "device": "none (predictions file)",
            "checkpoint": None,
            "predictions_source": {"path": str(res.checkpoint_path), "sha256": res.checkpoint_sha256},
        }
    return {
        "frame": res.predictions,
        "failures": failures,
        "device": res.device,
        "checkpoint": ck,
        "predictions_source": None,
        "counts": res.counts,
        "side_dir": getattr(res, "side_dir", None) or scoring_dir,
    }


def scoring_note(counts: dict) -> str:
    """``3 sites, 12 failed, 1,180 from the cache`` for the scoring phase's line, from
    :attr:`validate.scoring.ScoreResult.counts`."""
    sites = len(counts.get("sites") or {})
    parts = [f"{sites} site{'' if sites == 1 else 's'}"]
    if counts.get("failed"):
        parts.append(f"{counts['failed']:,} failed")
    if counts.get("cached"):
        parts.append(f"{counts['cached']:,} from the cache")
    return ", ".join(parts)


#: File suffixes that make ``--baseline PATH`` a predictions table rather than a checkpoint.
PREDICTIONS_SUFFIXES = (".parquet", ".csv")


@dataclass
class BaselineRequest:
    """How the baseline model is obtained: ``protocol`` is the run's protocol with ``model`` replaced by
    the baseline's model spec (``model.baseline``, else the protocol's own ``model`` for a
    ``--baseline`` checkpoint), and ``checkpoint`` or ``predictions`` the ``--baseline`` file."""

    protocol: Any
    checkpoint: Path | None = None
    predictions: Path | None = None


def baseline_request(protocol, baseline=None) -> BaselineRequest | None:
    """The baseline of a run (``--baseline PATH`` wins over ``model.baseline``), None when it has none.

    Raises :class:`InputError` before anything is scored for a ``--baseline`` file that does not exist
    or a ``model.baseline`` that names no checkpoint."""
    from validate.protocol import ModelSpec

    spec = protocol.model.baseline
    if baseline is None and spec is None:
        return None
    fields = (spec or protocol.model).model_dump(exclude={"baseline"}, exclude_unset=False)
    if baseline is not None:
        path = Path(baseline)
        if not path.exists():
            raise InputError(
                "baseline file not found",
                file=path,
                field="--baseline",
                expected="the baseline model's checkpoint, or a Parquet or CSV predictions table",
            )
        fields["checkpoint"] = str(path.resolve())
        as_table = path.suffix.lower() in PREDICTIONS_SUFFIXES
        fields["format"] = "predictions" if as_table else ("auto" if spec is None else fields["format"])
        request = BaselineRequest(
            protocol=None, predictions=path if as_table else None, checkpoint=None if as_table else path
        )
    else:
        if spec.checkpoint is None:
            raise InputError(
                "model.baseline names no checkpoint",
                file=protocol.path,
                line=protocol.line_of("model", "baseline"),
                field="model.baseline.checkpoint",
                expected="the baseline model's file (relative to the protocol), or --baseline PATH",
            )
        request = BaselineRequest(protocol=None)
    request.protocol = protocol.model_copy(update={"model": ModelSpec(**fields)})
    return request


def load_baseline(request: BaselineRequest, **scoring) -> dict:
    """The baseline's predictions (as :func:`load_predictions` returns them), scored through the same
    scoring path and shard cache as the new model (``scoring``: its keyword arguments)."""
    return load_predictions(request.protocol, checkpoint=request.checkpoint, predictions=request.predictions, **scoring)


def predictions_table(protocol, frame):
    """The :class:`validate.predictions.PredictionsTable` of a predictions frame, read for ``protocol``'s
    task and class or label names."""
    from validate.predictions import table_from_frame

    return table_from_frame(frame, task=protocol.task, **_names(protocol))


def model_identity(loaded: dict, label: str) -> dict:
    """``{"label", "source", "sha256"}`` of a model for comparison.json, from what
    :func:`load_predictions` returned or a bundle's ``provenance.json`` (both hold ``checkpoint`` or
    ``predictions_source``): the file's name, never its path."""
    ident = loaded.get("checkpoint") or loaded.get("predictions_source") or {}
    path = ident.get("path")
    return {"label": label, "source": Path(path).name if path else None, "sha256": ident.get("sha256")}


def compare_models(protocol, table, baseline_frame, *, settings, order) -> dict:
    """The paired comparison (``comparison.json``) of the new model's predictions ``table`` with the
    baseline's ``baseline_frame``, by :func:`validate.analysis.comparison.compare`: cases matched by
    (site, case id), every block (pooled, per site, per subgroup value, per subgroup value within each
    site) with its difference new − baseline and paired interval."""
    from validate.analysis.comparison import compare as compare_predictions
    from validate.cohort import derive_subgroups

    baseline = predictions_table(protocol, baseline_frame)
    _check_sites(protocol, baseline.frame, "the baseline's predictions")
    groups = derive_subgroups(table.frame, protocol)  # aligned with the new table's rows
    subgroups = {g.name: groups[g.name] for g in protocol.subgroups}
    return compare_predictions(table, baseline, settings=settings, subgroups=subgroups or None, sites=order)


def _check_sites(protocol, frame, what: str = "predictions") -> None:
    known = {s.id for s in protocol.sites}
    stray = sorted(set(frame["site"].astype(str)) - known)
    if stray:
        raise InputError(
            f"{what} hold site(s) {stray} that the protocol does not declare",
            field="site",
            expected=f"sites among {sorted(known)}",
        )


def compare(protocol, table, settings) -> dict | None:
    """The calibration comparison (Calibration JSON) of the protocol's primary design."""
    from validate.calibrators import compare_calibration

    return compare_calibration(table, protocol=protocol, settings=settings)


def _add_synthesis(metrics: dict, protocol) -> None:
    """The random-effects synthesis across sites under ``metrics["synthesis"]`` when the protocol asks
    for one (:func:`validate.analysis.synthesis.synthesis_for_protocol`); from the site BLOCKs only."""
    from validate.analysis.synthesis import synthesis_for_protocol

    synthesis = synthesis_for_protocol(metrics, protocol)
    if synthesis is not None:
        metrics["synthesis"] = synthesis


def step(name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` as the phase ``name`` of the run's progress (:mod:`validate.progress`)."""
    with progress.phase(name):
        return fn(*args, **kwargs)


def analyse(protocol, frame, failures, *, baseline_frame=None, side: dict | None = None) -> dict:
    """Every JSON part of the bundle from the predictions frame (original identifiers; none is output);
    with ``baseline_frame`` (the baseline model's predictions) the paired comparison too, whose
    ``compare: baseline`` gates are judged with the others. A segmentation task has analyses of its
    own (:func:`validate.analysis.segmentation_run.analyse_segmentation`; ``side``: its pixel summaries
    by file name)."""
    if protocol.task == "segmentation":
        from validate.analysis.segmentation_run import analyse_segmentation

        return step(
            "segmentation", analyse_segmentation, protocol, frame, failures, side=side, baseline_frame=baseline_frame
        )
    from validate.analysis.sites import cohort_summary, site_curves
    from validate.analysis.subgroups import subgroup_analysis
    from validate.cohort import derive_subgroups
    from validate.gates import judge_gates
    from validate.metrics import MetricSettings, metrics_report
    from validate.predictions import table_from_frame

    names = _names(protocol)
    table = table_from_frame(frame, task=protocol.task, **names)
    frame = table.frame
    _check_sites(protocol, frame)
    order = [s.id for s in protocol.sites if (frame["site"] == s.id).any()]
    settings = MetricSettings.from_protocol(protocol.metrics, protocol.decision)
    groups = derive_subgroups(frame, protocol)
    sub_cols = [g.name for g in protocol.subgroups]
    dev = [s.id for s in protocol.sites_with_role("development") if s.id in order]
    metrics = metrics_report(
        table,
        task=protocol.task,
        settings=settings,
        subgroup_columns=sub_cols,
        subgroups=groups,
        development_site=dev[0] if dev else None,
        **names,
    )
    _add_synthesis(metrics, protocol)
    calibration = compare(protocol, table, settings)
    shift = None
    external = [s for s in order if s not in dev]
    if dev and external:
        from validate.analysis.shift import shift_report

        features = [f for f in (protocol.input.features or []) if f in frame.columns]
        attributes = [a for a in protocol.attributes if a in frame.columns]
        shift = step(
            "shift",
            shift_report,
            table,
            dev_sites=dev,
            external_sites=external,
            attributes=attributes,
            features=features,
            seed=settings.seed,
            metric_settings=settings,
            task=protocol.task,
        )
    subgroups = step(
        "subgroups",
        subgroup_analysis,
        table,
        groups,
        task=protocol.task,
        settings=settings,
        metrics=metrics,
        sites=order,
        **names,
    )
    curve_names = list(protocol.classes or []) if protocol.task == "multiclass" else list(protocol.labels or [])
    curves = step(
        "curves",
        site_curves,
        table,
        task=protocol.task,
        names=curve_names,
        settings=settings,
        sites=order,
        calibration=calibration,
        fit_on=protocol.calibration_fit_sites,
        groups=groups,
    )
    sites = step("cohort", cohort_summary, table, protocol, groups, failures, ci_level=settings.ci_level)
    comparison = None
    if baseline_frame is not None:
        comparison = step("comparison", compare_models, protocol, table, baseline_frame, settings=settings, order=order)
    fairness = step(
        "fairness", fairness_report, protocol, table, groups, settings=settings, metrics=metrics, order=order
    )
    gates = step(
        "gates",
        judge_gates,
        protocol.gates,
        metrics,
        calibration=calibration,
        subgroups=subgroups,
        shift=shift,
        protocol=protocol,
        cohort=sites,
        comparison=comparison,
        fairness=fairness,
    )
    return {
        "table": table,
        "metrics": metrics,
        "calibration": calibration,
        "shift": shift,
        "subgroups": subgroups,
        "curves": curves,
        "sites": sites,
        "gates": gates,
        "settings": settings,
        "order": order,
        "comparison": comparison,
        "baseline_frame": baseline_frame,
        "fairness": fairness,
    }


def fairness_report(protocol, table, groups, *, settings, metrics, order) -> dict | None:
    """``fairness.json`` (:mod:`validate.analysis.fairness`): group fairness measures per subgroup, pooled
    and per site; None for multiclass and multilabel tasks and without subgroups."""
    from validate.analysis.fairness import fairness_analysis

    sub = groups[[g.name for g in protocol.subgroups]] if protocol.subgroups else None
    return fairness_analysis(
        table,
        sub,
        settings=settings,
        metrics=metrics,
        sites=order,
        reference=protocol.fairness.reference,
        file=protocol.path,
    )


def write_bundle(w, protocol, parts: dict, loaded: dict, *, started: str) -> Path:
    """Assemble the bundle, the report included, in the staging folder of ``w`` (a
    :class:`validate.bundle.BundleWriter`) and commit it."""
    from validate.bundle import Bundle, case_id_key, case_id_key_check, hash_ids, make_provenance, now_iso, pseudonymise
    from validate.report import render_report
    from validate.thumbnails import write_cases

    original = frame = parts["table"].frame
    failures = loaded["failures"]
    baseline_frame = parts.get("baseline_frame")
    key_check = None
    key: bytes | None = None
    if protocol.keep_case_ids:
        ids = "kept as in the manifests (protocol keep_case_ids: true)"
        name_of: Callable[[Any], str | None] = str
    else:
        key, ids = case_id_key()
        key_check = case_id_key_check(key)
        frame = pseudonymise(frame, key)
        failures = pseudonymise(failures, key)
        if baseline_frame is not None:
            baseline_frame = pseudonymise(baseline_frame, key)
        name_of = lambda case: hash_ids([case], key)[0]  # noqa: E731 - the name predictions.parquet holds
    gates = parts["gates"]
    w.copy_file(protocol.path, "protocol.yaml")
    w.write_table("predictions.parquet", frame)
    w.write_table("failures.csv", failures)
    w.write_json("metrics.json", parts["metrics"])
    w.write_json("calibration.json", parts["calibration"] or {})
    w.write_json("shift.json", parts["shift"] or {"reason": "no development and external site pair to compare"})
    w.write_json("subgroups.json", parts["subgroups"])
    w.write_json("curves.json", parts["curves"] or _segmentation_curves(parts))
    w.write_json("sites.json", parts["sites"])
    w.write_json("gates.json", gates.to_json())
    w.write_text("junit.xml", gates.to_junit())
    w.write_text("gates.md", gates.to_markdown(ci_level=parts["settings"].ci_level))
    if parts.get("fairness") is not None:
        w.write_json("fairness.json", parts["fairness"])
    if parts.get("comparison") is not None:
        w.write_json("comparison.json", parts["comparison"])
        w.write_table("baseline_predictions.parquet", baseline_frame)
    if parts.get("segmentation") is not None:
        from validate.analysis.segmentation_run import write_segmentation
        from validate.thumbnails import write_case_thumbnails

        write_segmentation(w, parts, name_of, key)
        # the worst cases' pictures, drawn under their outlines by the report and the dashboard
        worst = parts["segmentation"].get("worst_cases") or {}
        write_case_thumbnails(w, [(s, c["case_id"]) for s, cases in worst.items() for c in cases], protocol, name_of)
        if baseline_frame is not None:
            w.write_table("baseline_predictions.parquet", baseline_frame)
    else:
        # the Cases page's ranking and, for image protocols, its images from the manifests' paths (no path
        # enters the bundle)
        step("cases", write_cases, w, original, protocol, name_of)
    prov = make_provenance(
        protocol=protocol,
        started_at=started,
        finished_at=now_iso(),
        checkpoint=loaded.get("checkpoint"),
        predictions_source=loaded.get("predictions_source"),
        device=loaded.get("device"),
        case_ids=ids,
        extra={
            "files": w.file_hashes(),
            "scoring_counts": loaded.get("counts"),
            "case_id_key_check": key_check,
            **_baseline_provenance(loaded),
        },
    )
    w.write_json("provenance.json", prov)
    staged = Bundle(path=w.staging, display_name=w.target.name)
    w.write_text("report.html", step("report", render_report, staged))
    if protocol.report.pdf:  # printed from the report just written (not listed in files: a rendering)
        from validate.report.pdf import bundle_pdf_bytes

        pdf = step("pdf", bundle_pdf_bytes, staged, w.path("report.html"), paper_name=protocol.report.paper)
        w.write_bytes("report.pdf", pdf)
    return w.commit()


def _segmentation_curves(parts: dict) -> dict:
    """curves.json of a segmentation run: case counts only (its reliability diagrams are per pixel, in
    segmentation.json)."""
    metrics = parts["metrics"]
    return {
        "task": metrics["task"],
        "bins": 20,
        "ci_level": metrics["ci_level"],
        "sites": {s: {"n": b["n"]} for s, b in metrics["sites"].items()},
        "overall": {"n": metrics["overall"]["n"]},
    }


def _baseline_provenance(loaded: dict) -> dict:
    """``{"baseline": {...}}`` for provenance.json when the run compared with a baseline, else ``{}``."""
    base = loaded.get("baseline")
    if not base:
        return {}
    return {
        "baseline": {
            "checkpoint": base.get("checkpoint"),
            "predictions_source": base.get("predictions_source"),
            "device": base.get("device"),
            "scoring_counts": base.get("counts"),
        }
    }


def run_protocol(
    protocol_path,
    *,
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
) -> RunResult:
    """Run a protocol end to end; returns the bundle path, the gate report and the printed summary.

    A site's run (its site bundle, no case rows) is :func:`validate.federation.run_site`.

    ``baseline``: the model the new one is compared with (a checkpoint, or a ``.parquet``/``.csv``
    predictions table); it wins over the protocol's ``model.baseline``. The baseline is scored on the
    same cases through the same scoring cache, and the bundle gains ``comparison.json`` and
    ``baseline_predictions.parquet``."""
    from validate.bundle import BundleWriter, default_bundle_dir, now_iso
    from validate.preflight import check_protocol_gates
    from validate.protocol import load_protocol

    protocol = load_protocol(protocol_path)
    request = baseline_request(protocol, baseline)
    # every gate answerable before anything is scored
    check_protocol_gates(protocol, baseline=request is not None)
    if protocol.report.pdf:  # Playwright and a Chromium are there before anything is scored
        from validate.report.pdf import check_available

        check_available()
    started = now_iso()
    t0 = time.perf_counter()
    target = Path(out) if out else default_bundle_dir(runs_dir, protocol.name)
    # the output is checked and its staging folder made before any scoring: a path holding the user's
    # files, or a folder that cannot be written, is refused in seconds, not after an hour of scoring
    with BundleWriter(target) as writer:
        cache_root = Path(cache_dir) if cache_dir else writer.target.parent / ".cache"
        scoring = dict(
            cache_dir=cache_root / "shards",
            device=device,
            batch_size=batch_size,
            workers=workers,
            cache_inputs=cache_inputs,
            hash_inputs=hash_inputs,
        )
        loaded = load_predictions(
            protocol, checkpoint=checkpoint, predictions=predictions, scoring_dir=cache_root / protocol.name, **scoring
        )
        baseline_frame = None
        if request is not None:
            with progress.phase("baseline", live=False):
                loaded["baseline"] = load_baseline(
                    request, scoring_dir=cache_root / f"{protocol.name}.baseline", **scoring
                )
            baseline_frame = loaded["baseline"]["frame"]
        side = None
        if protocol.task == "segmentation":
            from validate.analysis.segmentation_run import read_side_files

            side = read_side_files(loaded.get("side_dir"))
        parts = analyse(protocol, loaded["frame"], loaded["failures"], baseline_frame=baseline_frame, side=side)
        parts["side"] = side
        seg_comparison = (parts.get("segmentation") or {}).get("comparison")
        if seg_comparison is not None:
            seg_comparison["baseline"] = model_identity(loaded["baseline"], "baseline")["source"]
        if parts["comparison"] is not None:
            parts["comparison"].update(
                new=model_identity(loaded, "new"), baseline=model_identity(loaded["baseline"], "baseline")
            )
        bundle = write_bundle(writer, protocol, parts, loaded, started=started)
    summary = summarise(protocol, parts, loaded, bundle, seconds=time.perf_counter() - t0)
    return RunResult(
        bundle=bundle, gates=parts["gates"], metrics=parts["metrics"], summary=summary, comparison=parts["comparison"]
    )


def regate(bundle_path, protocol_path=None):
    """The bundle (:class:`validate.bundle.Bundle`) and the :class:`validate.gates.GateReport` of its
    gates judged again, with its own protocol or the one at ``protocol_path``, on the bundle's own
    metrics, calibration, shift, subgroup and cohort results (no re-scoring)."""
    from validate.bundle import read_bundle
    from validate.gates import judge_gates
    from validate.protocol import load_protocol

    bundle = read_bundle(bundle_path)
    protocol = load_protocol(protocol_path) if protocol_path else bundle.load_protocol()
    if (bundle.provenance.get("bundle_kind") or "central") != "central":
        from validate.site_gates import regate_federated

        return bundle, regate_federated(bundle, protocol)
    comparison = bundle.comparison
    if comparison is None and bundle.segmentation is not None:  # a segmentation run's, in segmentation.json
        from validate.analysis.segmentation import gate_comparison

        comparison = gate_comparison(bundle.segmentation.get("comparison"))
    return bundle, judge_gates(
        protocol.gates,
        bundle.metrics,
        calibration=bundle.calibration,
        subgroups=bundle.subgroups,
        shift=bundle.shift,
        protocol=protocol,
        cohort=bundle.sites,
        comparison=comparison,
        fairness=bundle.fairness,
    )
