"""`validate combine SITE_BUNDLE... --out BUNDLE`: merge the site bundles of a multi-hospital study.

Each hospital runs ``validate run PROTOCOL --site ID`` where its data is and sends its site bundle
(no case rows, ids or image paths). The coordinator merges them here into one combined bundle: the
per-site blocks, curves, subgroup analyses and cohorts side by side, the synthesis across sites, the
gates and the report (:func:`validate.federation.combine_bundles`). Bundles of different protocols or
checkpoints (sha256), two bundles of one site, a bundle that is not a site bundle, or a file changed
since the site wrote it are refused (exit 2). Exit codes: 0 every gate passes, 1 a gate failed (a gate
on a pooled scope fails: a combined bundle has no pooled patient-level block), 2 bad input, 3 the
combination could not complete.
"""

from __future__ import annotations

NAME = "combine"
HELP = "merge site bundles (validate run --site) into one multi-site bundle with the synthesis and the gates"
DESCRIPTION = (
    HELP + ". Refuses bundles of different protocols or checkpoints, two bundles of one site, or a bundle "
    "that is not a site bundle (exit 2); exit code 0 when every gate passes, 1 when one fails."
)


def register(parser) -> None:
    parser.add_argument("bundles", nargs="+", metavar="SITE_BUNDLE", help="site bundle folders, one per site")
    parser.add_argument(
        "--out",
        metavar="DIR",
        required=True,
        help="the combined bundle folder: a new path, an empty folder, or an earlier bundle to replace",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="print only the verdict line")


def run(args) -> int:
    from validate.escape import terminal_text
    from validate.federation import combine_bundles

    bundle, gates, metrics = combine_bundles(args.bundles, out=args.out)
    if not args.quiet:
        sites = ", ".join(f"{s} (n={b.get('n')})" for s, b in (metrics.get("sites") or {}).items())
        print(terminal_text(f"Combined {len(metrics.get('sites') or {})} site bundle(s): {sites}"))
        for line in _synthesis_lines(metrics.get("synthesis")):
            print(terminal_text(line))
        c = gates.counts
        print(f"Gates: {len(gates.rows)} check(s): {c['pass']} pass, {c['warn']} warn, {c['fail']} fail")
        for r in gates.rows:
            if r.verdict != "pass":
                print(terminal_text(f"  {r.verdict.upper():<4} {r.gate} [{r.item}]: {r.reason}"))
        print(f"Bundle: {bundle}")
        print(f"Report: {bundle / 'report.html'}")
    print(f"Verdict: {gates.verdict.upper()} (exit {gates.exit_code})")
    return gates.exit_code


def _synthesis_lines(synthesis: dict | None) -> list[str]:
    """The synthesis across sites in short: each pooled metric, its interval and the prediction interval."""
    if not synthesis:
        return ["Synthesis across sites: none (the protocol asks for none)"]

    from validate.formatting import format_interval, format_range

    pooled = synthesis.get("metrics") or {}
    # the sites pooled (those of the rule that have a block), not the rule's whole list
    inputs = [i.get("site") for m in pooled.values() for i in m.get("inputs") or []]
    sites = [s for s in synthesis.get("sites") or [] if s in inputs]
    lines = [
        f"Synthesis across {', '.join(sites) or 'no site'} ({synthesis.get('method')}, "
        f"{synthesis.get('interval')}, {synthesis.get('ci_level', 0.95):.0%}):"
    ]
    for name, m in pooled.items():
        pi = f"prediction interval {format_range(m.get('pi_low'), m.get('pi_high'), name)}"
        lines.append(
            f"  {name:<24} {format_interval(m.get('estimate'), m.get('ci_low'), m.get('ci_high'), name)}, "
            + (pi if m.get("pi_low") is not None else (m.get("pi_reason") or "no prediction interval"))
        )
    return lines
