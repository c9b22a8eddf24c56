"""`validate run PROTOCOL`: score (cached) -> metrics -> calibration comparison -> shift -> subgroups
-> gates -> results bundle -> HTML report, then a short summary and the exit code of the gates.

Every stage can start from a file: ``--predictions PATH`` (or ``model.format: predictions`` in the
protocol) skips scoring. The bundle is assembled beside its target and renamed into place when whole
(:class:`validate.bundle.BundleWriter`). ``--out`` may name a new path, an empty folder, or an earlier
bundle of validate (replaced); anything else there is refused before scoring starts (exit 2), so a run
never deletes the user's files. Exit codes: 0 every gate passes, 1 a gate failed, 2 bad input, 3 the
run could not complete (e.g. a full disk: the staging folder is removed, an earlier bundle stays whole).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from validate.errors import InputError

NAME = "run"
HELP = "run a validation protocol end to end: score, metrics, calibration, shift, gates, bundle, report"
DESCRIPTION = (HELP + ". Writes a results bundle folder (default runs/<protocol>-<timestamp>) with report.html, "
               "gates.json and junit.xml; exit code 0 when every gate passes, 1 when one fails, 2 for bad input.")


def register(parser) -> None:
    parser.add_argument("protocol", metavar="PROTOCOL", help="protocol YAML file")
    parser.add_argument("--checkpoint", metavar="PATH", help="model checkpoint (overrides model.checkpoint)")
    parser.add_argument("--predictions", metavar="PATH",
                        help="a predictions table (Parquet or CSV) to validate instead of scoring a checkpoint")
    parser.add_argument("--out", metavar="DIR",
                        help="bundle folder (default: RUNS_DIR/<protocol>-<timestamp>): a new path, an empty folder, "
                             "or an earlier bundle to replace; any other existing path is refused")
    parser.add_argument("--runs-dir", metavar="DIR", default="runs", help="where default bundle folders go (runs)")
    parser.add_argument("--cache", metavar="DIR",
                        help="scoring cache folder (default: .cache beside the bundle folder); it holds the "
                             "original case identifiers, keep it local")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default auto)")
    parser.add_argument("--batch-size", type=int, default=64, metavar="N", help="scoring batch size (64)")
    parser.add_argument("--workers", type=int, default=None, metavar="N", help="data loading workers (auto)")
    parser.add_argument("--cache-inputs", action="store_true",
                        help="keep decoded inputs in the scoring cache: the next checkpoint on these cohorts skips "
                             "decoding (the cache then holds the cohort's pixels)")
    parser.add_argument("--hash-inputs", action="store_true", default=None,
                        help="key the scoring cache by each image file's content (sha256), not its size and "
                             "modification time (default on when the environment variable CI is true or 1)")
    parser.add_argument("--quiet", "-q", action="store_true", help="print only the verdict line")


@dataclass
class RunResult:
    bundle: Path
    gates: Any            # validate.gates.GateReport
    metrics: dict
    summary: str

    @property
    def exit_code(self) -> int:
        return self.gates.exit_code


def run(args) -> int:
    result = run_protocol(args.protocol, checkpoint=args.checkpoint, predictions=args.predictions, out=args.out,
                          runs_dir=args.runs_dir, cache_dir=args.cache, device=args.device,
                          batch_size=args.batch_size, workers=args.workers, cache_inputs=args.cache_inputs,
                          hash_inputs=args.hash_inputs)
    if args.quiet:
        print(result.summary.splitlines()[-1])
    else:
        print(result.summary)
    return result.exit_code


# ---- the pipeline --------------------------------------------------------------------------------------

def _names(protocol) -> dict:
    if protocol.task == "multiclass":
        return {"class_names": list(protocol.classes)}
    if protocol.task == "multilabel":
        return {"label_names": list(protocol.labels)}
    return {}


def load_predictions(protocol, *, checkpoint=None, predictions=None, scoring_dir: Path, cache_dir=None,
                     device="auto", batch_size=64, workers=None, cache_inputs=False, hash_inputs=None) -> dict:
    """The predictions frame, the failures, and what made them (for provenance)."""
    import pandas as pd

    from validate.io import sha256_file
    from validate.predictions import categorical_columns, read_predictions

    empty_failures = pd.DataFrame(columns=["site", "case_id", "reason", "stage"])
    source = predictions
    if source is None and checkpoint is None and protocol.model.format == "predictions":
        source = protocol.resolve(protocol.model.checkpoint)
        if source is None:
            raise InputError("model.format is predictions but model.checkpoint names no file", file=protocol.path,
                             line=protocol.line_of("model", "checkpoint"), field="model.checkpoint",
                             expected="the path of a predictions table")
    if source is not None:
        source = Path(source)
        if not source.exists():
            raise InputError("predictions file not found", file=source, field="--predictions",
                             expected="a Parquet or CSV predictions table")
        table = read_predictions(source, task=protocol.task, text_columns=categorical_columns(protocol),
                                 **_names(protocol))
        return {"frame": table.frame, "failures": empty_failures, "device": "none (predictions file)",
                "checkpoint": None, "predictions_source": {"path": str(source.resolve()), "sha256": sha256_file(source)}}

    from validate.scoring import score_protocol

    res = score_protocol(protocol, checkpoint=checkpoint, out_dir=scoring_dir, device=device, batch_size=batch_size,
                         workers=workers, cache_dir=cache_dir, cache_inputs=cache_inputs, hash_inputs=hash_inputs)
    failures = res.failures if res.failures is not None else empty_failures
    ck = {"path": str(res.checkpoint_path), "sha256": res.checkpoint_sha256, "format": res.checkpoint_format}
    if res.checkpoint_format == "predictions":
        return {"frame": res.predictions, "failures": failures, "device": "none (predictions file)", "checkpoint": None,
                "predictions_source": {"path": str(res.checkpoint_path), "sha256": res.checkpoint_sha256}}
    return {"frame": res.predictions, "failures": failures, "device": res.device, "checkpoint": ck,
            "predictions_source": None, "counts": res.counts}


def compare(protocol, table, settings) -> Optional[dict]:
    """The calibration comparison (Calibration JSON) of the protocol's primary design."""
    from validate.calibrators import compare_calibration

    return compare_calibration(table, protocol=protocol, settings=settings)


def analyse(protocol, frame, failures) -> dict:
    """Every JSON part of the bundle from the predictions frame (original identifiers; none is output)."""
    from validate.analysis.sites import cohort_summary, site_curves
    from validate.analysis.subgroups import subgroup_analysis
    from validate.cohort import derive_subgroups
    from validate.gates import judge_gates
    from validate.metrics import MetricSettings, metrics_report
    from validate.predictions import table_from_frame

    names = _names(protocol)
    table = table_from_frame(frame, task=protocol.task, **names)
    frame = table.frame
    known = {s.id for s in protocol.sites}
    stray = sorted(set(frame["site"].astype(str)) - known)
    if stray:
        raise InputError(f"predictions hold site(s) {stray} that the protocol does not declare", field="site",
                         expected=f"sites among {sorted(known)}")
    order = [s.id for s in protocol.sites if (frame["site"] == s.id).any()]
    settings = MetricSettings.from_protocol(protocol.metrics)
    groups = derive_subgroups(frame, protocol)
    sub_cols = [g.name for g in protocol.subgroups]
    dev = [s.id for s in protocol.sites_with_role("development") if s.id in order]
    metrics = metrics_report(table, task=protocol.task, settings=settings, subgroup_columns=sub_cols,
                             subgroups=groups, development_site=dev[0] if dev else None, **names)
    calibration = compare(protocol, table, settings)
    shift = None
    external = [s for s in order if s not in dev]
    if dev and external:
        from validate.analysis.shift import shift_report

        features = [f for f in (protocol.input.features or []) if f in frame.columns]
        attributes = [a for a in protocol.attributes if a in frame.columns]
        shift = shift_report(frame, dev_sites=dev, external_sites=external, attributes=attributes, features=features,
                             seed=settings.seed, metric_settings=settings, task=protocol.task)
    subgroups = subgroup_analysis(frame, groups, task=protocol.task, settings=settings, metrics=metrics, sites=order,
                                  **names)
    curve_names = list(protocol.classes or []) if protocol.task == "multiclass" else list(protocol.labels or [])
    curves = site_curves(frame, task=protocol.task, names=curve_names, settings=settings, sites=order,
                         calibration=calibration, fit_on=protocol.calibration_fit_sites)
    sites = cohort_summary(frame, protocol, groups, failures, ci_level=settings.ci_level)
    gates = judge_gates(protocol.gates, metrics, calibration=calibration, subgroups=subgroups, shift=shift,
                        protocol=protocol, cohort=sites)
    return {"table": table, "metrics": metrics, "calibration": calibration, "shift": shift, "subgroups": subgroups,
            "curves": curves, "sites": sites, "gates": gates, "settings": settings, "order": order}


def write_bundle(w, protocol, parts: dict, loaded: dict, *, started: str) -> Path:
    """Assemble the bundle, the report included, in the staging folder of ``w`` (a
    :class:`validate.bundle.BundleWriter`) and commit it."""
    from validate.bundle import Bundle, case_id_key, hash_ids, make_provenance, now_iso, pseudonymise
    from validate.report import render_report

    from validate.thumbnails import write_thumbnails

    original = frame = parts["table"].frame
    failures = loaded["failures"]
    if protocol.keep_case_ids:
        ids = "kept as in the manifests (protocol keep_case_ids: true)"
        name_of = str
    else:
        key, ids = case_id_key()
        frame = pseudonymise(frame, key)
        failures = pseudonymise(failures, key)
        name_of = lambda case: hash_ids([case], key)[0]  # noqa: E731 - the name predictions.parquet holds
    gates = parts["gates"]
    w.copy_file(protocol.path, "protocol.yaml")
    w.write_table("predictions.parquet", frame)
    w.write_table("failures.csv", failures)
    w.write_json("metrics.json", parts["metrics"])
    w.write_json("calibration.json", parts["calibration"] or {})
    w.write_json("shift.json", parts["shift"] or {"reason": "no development and external site pair to compare"})
    w.write_json("subgroups.json", parts["subgroups"])
    w.write_json("curves.json", parts["curves"])
    w.write_json("sites.json", parts["sites"])
    w.write_json("gates.json", gates.to_json())
    w.write_text("junit.xml", gates.to_junit())
    w.write_text("gates.md", gates.to_markdown(ci_level=parts["settings"].ci_level))
    # image protocols: the Cases page's images, from the manifests' paths (no path enters the bundle)
    write_thumbnails(w, original, protocol, name_of)
    prov = make_provenance(protocol=protocol, started_at=started, finished_at=now_iso(),
                           checkpoint=loaded.get("checkpoint"), predictions_source=loaded.get("predictions_source"),
                           device=loaded.get("device"), case_ids=ids,
                           extra={"files": w.file_hashes(), "scoring_counts": loaded.get("counts")})
    w.write_json("provenance.json", prov)
    w.write_text("report.html", render_report(Bundle(path=w.staging, display_name=w.target.name)))
    return w.commit()


def run_protocol(protocol_path, *, checkpoint=None, predictions=None, out=None, runs_dir="runs", cache_dir=None,
                 device="auto", batch_size=64, workers=None, cache_inputs=False, hash_inputs=None) -> RunResult:
    """Run a protocol end to end; returns the bundle path, the gate report and the printed summary."""
    from validate.bundle import BundleWriter, default_bundle_dir, now_iso
    from validate.preflight import check_protocol_gates
    from validate.protocol import load_protocol

    protocol = load_protocol(protocol_path)
    check_protocol_gates(protocol)  # every gate answerable before anything is scored
    started = now_iso()
    t0 = time.perf_counter()
    target = Path(out) if out else default_bundle_dir(runs_dir, protocol.name)
    # the output is checked and its staging folder made before any scoring: a path holding the user's
    # files, or a folder that cannot be written, is refused in seconds, not after an hour of scoring
    with BundleWriter(target) as writer:
        cache_root = Path(cache_dir) if cache_dir else writer.target.parent / ".cache"
        loaded = load_predictions(protocol, checkpoint=checkpoint, predictions=predictions,
                                  scoring_dir=cache_root / protocol.name, cache_dir=cache_root / "shards",
                                  device=device, batch_size=batch_size, workers=workers, cache_inputs=cache_inputs,
                                  hash_inputs=hash_inputs)
        parts = analyse(protocol, loaded["frame"], loaded["failures"])
        bundle = write_bundle(writer, protocol, parts, loaded, started=started)
    summary = summarise(protocol, parts, loaded, bundle, seconds=time.perf_counter() - t0)
    return RunResult(bundle=bundle, gates=parts["gates"], metrics=parts["metrics"], summary=summary)


# ---- the printed summary ---------------------------------------------------------------------------------

def summarise(protocol, parts: dict, loaded: dict, bundle: Path, *, seconds: float) -> str:
    from validate.charts import entry_text
    from validate.escape import terminal_text

    metrics = parts["metrics"]
    gates = parts["gates"]
    failures = loaded["failures"]
    ci = parts["settings"].ci_level
    lines = [f"{protocol.name} v{protocol.version}: {len(parts['order'])} of {len(protocol.sites)} site(s), {metrics['overall'].get('n')} case(s) "
             f"scored, {len(failures)} excluded, device {loaded.get('device')}, {seconds:.0f} s"]
    from validate.metrics import registry

    keys = registry.names("run_summary", protocol.task)
    head = f"  {'site':<14} {'role':<12} {'n':>6} {'events':>6}  " + "  ".join(
        f"{k + f' ({ci:.0%} CI)':<24}" for k in keys)
    lines.append(head)
    for s in [site.id for site in protocol.sites]:  # every declared site: one without scored cases shows as 0
        b = metrics["sites"].get(s) or {}
        role = protocol.site(s).role
        flag = "  [insufficient]" if b.get("insufficient") else ""
        if s not in metrics["sites"]:
            flag = "  [no scored case]"
        lines.append(f"  {s:<14} {role:<12} {b.get('n', 0):>6} {str(b.get('n_events', '')):>6}  "
                     + "  ".join(f"{entry_text(b.get(k)):<24}" for k in keys) + flag)
    c = gates.counts
    if gates.rows:
        lines.append(f"Gates: {len(gates.rows)} check(s): {c['pass']} pass, {c['warn']} warn, {c['fail']} fail")
        for r in gates.rows:
            if r.verdict != "pass":
                # gate names and subgroup values are data: no escape sequence reaches the terminal
                lines.append(terminal_text(f"  {r.verdict.upper():<4} {r.gate} [{r.item}]: {r.reason}"))
    cal = parts.get("calibration") or {}
    if cal.get("recommended"):
        lines.append(f"Calibration: recommended method {cal['recommended']} ({cal.get('design')}, fitted on "
                     f"{', '.join(cal.get('fit_on') or [])})")
    lines.append(f"Bundle: {bundle}")
    lines.append(f"Report: {bundle / 'report.html'}")
    lines.append(f"Verdict: {gates.verdict.upper()} (exit {gates.exit_code})")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    from validate.cli import main

    sys.exit(main(["run", *sys.argv[1:]]))
