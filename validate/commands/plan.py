"""``validate plan PROTOCOL``: the sample size each site needs for the protocol's target precisions.

Before any data is scored: per site, the n each criterion (O/E, calibration slope, C-statistic,
standardised net benefit at each decision threshold) needs for the target interval widths of
``metrics.precision``, the largest (the recommendation) and whether the site's manifest has that many
rows (:mod:`validate.plan`). Exit 0; bad input 2.
"""

from __future__ import annotations

import argparse
import math

from validate.errors import EXIT_OK, InputError

NAME = "plan"
HELP = "sample size each site needs for the protocol's target precisions (Riley et al. 2021), before scoring"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("protocol", metavar="PROTOCOL", help="protocol YAML file")
    parser.add_argument(
        "--prevalence",
        action="append",
        default=[],
        metavar="P|SITE=P",
        help="anticipated outcome prevalence, for every site (P) or one site (SITE=P); repeatable",
    )
    parser.add_argument("--cstatistic", type=float, metavar="C", help="anticipated C-statistic (AUROC)")
    parser.add_argument(
        "--lp-normal",
        metavar="M,SD",
        help="linear predictor ~ Normal(M, SD) on the logit scale (a negative M as --lp-normal=-5,2.5)",
    )
    parser.add_argument(
        "--predictions",
        metavar="DEV_PREDICTIONS",
        help="the development site's predictions: prevalence, C and the logits are taken from them "
        "(flags given as well win)",
    )
    parser.add_argument("--json", metavar="FILE", help="write the plan as JSON here")


def _probability(text: str, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise InputError(f"{text!r} is not a number", field=what, expected="a number in (0, 1)") from None
    if not (math.isfinite(v) and 0 < v < 1):
        raise InputError(f"{v} is outside (0, 1)", field=what, expected="a number in (0, 1)")
    return v


def _prevalences(values: list[str], site_ids: list[str]) -> tuple[float | None, dict[str, float]]:
    default, per_site = None, {}
    for v in values:
        site, eq, p = v.partition("=")
        if not eq:
            default = _probability(v, "--prevalence")
            continue
        if site not in site_ids:
            raise InputError(
                f"{v}: no site {site!r} in the protocol",
                field="--prevalence",
                expected=f"one of {', '.join(site_ids)}",
            )
        per_site[site] = _probability(p, f"--prevalence {site}")
    return default, per_site


def _lp_normal(text: str | None):
    from validate.plan import LinearPredictor

    if text is None:
        return None
    parts = text.split(",")
    try:
        mean, sd = (float(x) for x in parts)
    except ValueError:
        raise InputError(f"{text!r} is not two numbers", field="--lp-normal", expected="M,SD e.g. -5,2.5") from None
    if not (math.isfinite(mean) and math.isfinite(sd) and sd > 0):
        raise InputError(f"{text!r}: the SD must be > 0", field="--lp-normal", expected="M,SD with SD > 0")
    return LinearPredictor.normal(mean, sd)


def _development_anticipated(path: str, protocol, thresholds):
    """Prevalence, C and logits from the development site's predictions (its rows when the file names
    the protocol's development site, else every row)."""
    from validate.plan import from_predictions
    from validate.predictions import read_predictions

    table = read_predictions(path, task="binary")
    dev = [s.id for s in protocol.sites if s.role == "development"]
    sites = [s for s in dev if s in table.sites()]
    if sites:
        table = table.site(sites[0])
    try:
        return from_predictions(table.labels(), table.probabilities(), table.logits(), thresholds, path)
    except ValueError as exc:
        raise InputError(f"{path}: {exc}", file=path, expected="events and non-events") from None


def _manifest_rows(protocol) -> dict[str, int | None]:
    from validate.cohort import load_cohorts

    return {c.site.id: len(c.cases) for c in load_cohorts(protocol)}


def anticipated(args, protocol):
    """What the formulas need: the development predictions' values, overridden by the flags."""
    from validate.plan import Anticipated

    decision = getattr(protocol, "decision", None)
    thresholds = tuple(float(t) for t in (getattr(decision, "thresholds", None) or ()))
    a = _development_anticipated(args.predictions, protocol, thresholds) if args.predictions else Anticipated()
    default, per_site = _prevalences(args.prevalence, [s.id for s in protocol.sites])
    if default is not None:
        a.default_prevalence = default
    a.prevalence.update(per_site)
    if args.cstatistic is not None:
        a.cstatistic = _probability(str(args.cstatistic), "--cstatistic")
    lp = _lp_normal(args.lp_normal)
    if lp is not None:
        a.lp, a.sens_spec = lp, {}
    lacking = [s.id for s in protocol.sites if a.prevalence_of(s.id) is None]
    if lacking:
        raise InputError(
            f"no anticipated prevalence for site(s) {', '.join(lacking)}",
            field="--prevalence",
            expected="--prevalence P (every site), --prevalence SITE=P, or --predictions DEV_PREDICTIONS",
        )
    return a


def format_plan(result: dict) -> str:
    """One block per site: each criterion's needed n, the recommendation, and whether the manifest has it."""
    t = result["targets"]
    lines = [
        f"plan for `{result['protocol']}`: target {result['ci_level']:.0%} interval widths O/E {t['oe_ratio']}, "
        f"slope {t['calibration_slope']}, C {t['auroc']}, sNB {t['standardized_net_benefit']}",
    ]
    from validate.metrics.precision import criterion_label

    for s in result["sites"]:
        has = "?" if s["n_manifest"] is None else f"{s['n_manifest']:,}"
        if s.get("recommended_n") is None:
            lines.append(f"  {s['site']} ({s['role']}): {s.get('reason', 'nothing computed')}")
            continue
        verdict = "reaches it" if s["reaches"] else "does NOT reach it"
        lines.append(
            f"  {s['site']} ({s['role']}): needs ≈ {s['recommended_n']:,} cases ({s['recommended_events']:,} events, "
            f"{s['driven_by']}); manifest has {has}: {verdict}"
        )
        for c in s["criteria"]:
            need = f"{c['needed_n']:,}" if c["needed_n"] is not None else "not computed"
            lines.append(f"    {criterion_label(c):<12} width {c['target']:<5} n {need:<13} {c['basis']}")
        if s["not_computed"]:
            lines.append(f"    (not in the recommendation: {', '.join(s['not_computed'])})")
    return "\n".join(lines)


def run(args) -> int:
    from validate.io import atomic_write_json
    from validate.plan import plan
    from validate.protocol import load_protocol

    protocol = load_protocol(args.protocol)
    if protocol.task != "binary":
        raise InputError(
            f"{args.protocol}: validate plan sizes binary-outcome validation (Riley et al. 2021); "
            f"this protocol's task is {protocol.task}",
            file=args.protocol,
            field="task",
            expected="binary",
        )
    a = anticipated(args, protocol)
    result = plan(protocol, a, _manifest_rows(protocol))
    print(format_plan(result))
    if args.json:
        atomic_write_json(args.json, result)
    return EXIT_OK
