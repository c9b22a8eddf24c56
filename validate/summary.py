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
