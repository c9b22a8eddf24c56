"""The text summary of a run that ``validate run`` and ``validate demo`` print (and
:attr:`validate.pipeline.RunResult.summary` holds): sites with their headline metrics, the gates that
did not pass, the recommended calibration, where the bundle is, and the verdict line last."""

from __future__ import annotations

from pathlib import Path


def summarise(protocol, parts: dict, loaded: dict, bundle: Path, *, seconds: float) -> str:
    """The summary of a run of ``protocol``: ``parts`` from :func:`validate.pipeline.analyse`, ``loaded``
    from :func:`validate.pipeline.load_predictions`, the committed ``bundle`` folder."""
    from validate.charts import entry_text
    from validate.escape import terminal_text

    metrics = parts["metrics"]
    gates = parts["gates"]
    failures = loaded["failures"]
    ci = parts["settings"].ci_level
    # a site bundle has no pooled block: its cases are its site's
    n = metrics["overall"].get("n", sum((b.get("n") or 0) for b in metrics["sites"].values()))
    lines = [
        f"{protocol.name} v{protocol.version}: {len(parts['order'])} of {len(protocol.sites)} site(s), "
        f"{n} case(s) "
        f"scored, {len(failures)} excluded, device {loaded.get('device')}, {seconds:.0f} s"
    ]
    from validate.metrics import registry

    keys = registry.names("run_summary", protocol.task)
    # a segmentation block counts patients, not events
    count, count_name = ("n_patients", "pts") if protocol.task == "segmentation" else ("n_events", "events")
    head = f"  {'site':<14} {'role':<12} {'n':>6} {count_name:>6}  " + "  ".join(
        f"{k + f' ({ci:.0%} CI)':<24}" for k in keys
    )
    lines.append(head)
    for s in [site.id for site in protocol.sites]:  # every declared site: one without scored cases shows as 0
        b = metrics["sites"].get(s) or {}
        role = protocol.site(s).role
        flag = "  [insufficient]" if b.get("insufficient") else ""
        if s not in metrics["sites"]:
            flag = "  [no scored case]"
        lines.append(
            f"  {s:<14} {role:<12} {b.get('n', 0):>6} {str(b.get(count, '')):>6}  "
            + "  ".join(f"{entry_text(b.get(k), metric=k):<24}" for k in keys)
            + flag
        )
    c = gates.counts
    if gates.rows:
        lines.append(f"Gates: {len(gates.rows)} check(s): {c['pass']} pass, {c['warn']} warn, {c['fail']} fail")
        for r in gates.rows:
            if r.verdict != "pass":
                # gate names and subgroup values are data: no escape sequence reaches the terminal
                lines.append(terminal_text(f"  {r.verdict.upper():<4} {r.gate} [{r.item}]: {r.reason}"))
    if parts.get("comparison"):
        lines += comparison_lines(parts["comparison"], protocol.task)
    cal = parts.get("calibration") or {}
    if cal.get("recommended"):
        lines.append(
            f"Calibration: recommended method {cal['recommended']} ({cal.get('design')}, fitted on "
            f"{', '.join(cal.get('fit_on') or [])})"
        )
    lines.append(f"Bundle: {bundle}")
    lines.append(f"Report: {bundle / 'report.html'}")
    lines.append(f"Verdict: {gates.verdict.upper()} (exit {gates.exit_code})")
    return "\n".join(lines)


#: Most metric columns of the printed comparison table.
COMPARISON_COLUMNS = 3


def comparison_lines(comparison: dict, task: str) -> list[str]:
    """The short Δ table of a paired comparison (``comparison.json``): pooled and per site, the
    difference new − baseline of the run summary's metrics (others the comparison holds fill the
    columns up to :data:`COMPARISON_COLUMNS`) with its paired interval."""
    from validate.escape import terminal_text
    from validate.metrics import registry

    overall = comparison.get("overall") or {}
    held = list(overall.get("metrics") or {})
    keys = [k for k in registry.names("run_summary", task) if k in held]
    keys += [k for k in held if k not in keys][: max(0, COMPARISON_COLUMNS - len(keys))]
    level = comparison.get("level")
    ci = f"{level:.0%} CI" if isinstance(level, (int, float)) else "CI"
    matched = comparison.get("matched") or {}
    lines = [
        f"Comparison with the baseline (Δ = new − baseline, paired {ci}): {matched.get('n')} matched case(s)"
        + _unmatched_note(matched)
    ]
    lines.append(f"  {'block':<14} {'n':>6} {'events':>6}  " + "  ".join(f"{'Δ ' + k:<26}" for k in keys))
    blocks = [("overall", overall), *(comparison.get("sites") or {}).items()]  # sites in the protocol's order
    for name, blk in blocks:
        flag = "  [insufficient]" if blk.get("insufficient") else ""
        cells = [_delta_text((blk.get("metrics") or {}).get(k)) for k in keys]
        lines.append(
            terminal_text(
                f"  {name:<14} {blk.get('n', 0):>6} {str(blk.get('n_events', '')):>6}  "
                + "  ".join(f"{c:<26}" for c in cells)
                + flag
            )
        )
    return lines


def _unmatched_note(matched: dict) -> str:
    left = [
        f"{matched[k]} scored by the {who} model only"
        for k, who in (("n_new_only", "new"), ("n_baseline_only", "baseline"))
        if matched.get(k)
    ]
    return f" ({'; '.join(left)}, left out)" if left else ""


def _delta_text(entry) -> str:
    """A difference with its interval, signed: ``+0.012 (-0.004 to +0.029)``; ``—`` when undefined."""
    if not entry or entry.get("delta") is None:
        return "—"
    text = f"{entry['delta']:+.3f}"
    if entry.get("ci_low") is not None and entry.get("ci_high") is not None:
        text += f" ({entry['ci_low']:+.3f} to {entry['ci_high']:+.3f})"
    return text
