"""Temporal drift: metrics per time window, and a detector that flags the windows that moved.

Cases carry an acquisition date (``acquired_at``, ISO 8601). They are grouped into calendar windows
(monthly by default: pandas periods, so a window is e.g. ``"2021-03"``, from its first to its last day).
Per window: n, events, prevalence (Wilson interval), mean score, AUROC (DeLong interval), ECE and
calibration-in-the-large (Wald interval), computed by the metrics engine (:mod:`validate.metrics`);
the mean score's and ECE's intervals are bootstrap percentile intervals from the engine's
replicate weights (clustered by patient when a cluster column is given; window i of the calendar
uses seed ``settings.seed + i``, so results are deterministic).

Change detection compares every later window with the *reference*: the pooled cases of the first
``reference_windows`` non-empty windows (default 3), the period in which the model is assumed to
behave as validated. Two detectors:

- ``tests`` (default; controls false alarms): for each later window, four two-sample tests against the
  reference — the score distribution (Kolmogorov–Smirnov), the calibration residual y − p (Welch's t
  on its mean, i.e. a change in calibration-in-the-large), AUROC (z = (A_w − A_ref)/sqrt(se_w² + se_ref²)
  with DeLong standard errors, independent samples) and prevalence (two-proportion test). All tests of
  all windows form one family, adjusted by Holm (family-wise error rate; default) or Benjamini–Hochberg.
  A window is flagged when any of its adjusted p-values is below ``alpha``.
- ``cusum``: a two-sided tabular CUSUM (Page 1954, Biometrika 41:100; Montgomery, Introduction to
  Statistical Quality Control, 6th ed., §9.1) on the window means of two per-case statistics, the score
  p and the residual y − p, standardised against the reference:
  z_t = (x̄_t − μ_ref) / (σ_ref · sqrt(1/n_t + 1/n_ref)); C⁺_t = max(0, C⁺_{t−1} + z_t − k),
  C⁻_t = max(0, C⁻_{t−1} − z_t − k), from 0 at the first window after the reference; an alarm when
  C⁺ or C⁻ exceeds h. k = 0.5 and h = 5 (an in-control average run length of about 465 windows for
  normal z; Montgomery Table 9.3). CUSUM accumulates small persistent shifts that single-window tests
  miss, at the price of a less precise false-alarm rate.

``detector`` chooses which flags set ``drift``: ``"tests"``, ``"cusum"`` or ``"either"``. Both are
always reported.

Output of :func:`temporal_drift` (JSON-ready, undefined numbers None beside a reason)::

    {"freq": "M", "detector": "tests", "alpha": 0.05, "correction": "holm",
     "n_dated": int, "n_undated": int,
     "reference_windows": ["2021-01", ...],
     "windows": [WINDOW, ...],                  # every calendar window from first to last date
     "flagged_windows": [...],                  # by the tests
     "cusum_alarm_windows": [...],              # by the CUSUM
     "first_flagged": "2021-07" | None,         # first window flagged by the chosen detector
     "drift": bool,                             # any window flagged by the chosen detector
     "reason": str}                             # only when nothing could be tested

    WINDOW = {"window": "2021-03", "start": "2021-03-01", "end": "2021-03-31", "n": int, "n_events": int,
              "reference": bool, "insufficient": bool, "insufficient_reason": str | None,
              "prevalence": ENTRY, "mean_score": ENTRY, "auroc": ENTRY, "ece": ENTRY,
              "calibration_intercept": ENTRY,   # ENTRY = {"estimate", "ci_low", "ci_high", "method"}
              "tests": {"score": TEST, "calibration": TEST, "auroc": TEST, "prevalence": TEST} | None,
              "cusum": {"score": {"z", "upper", "lower", "alarm"}, "calibration": {...}} | None,
              "flagged": bool, "cusum_alarm": bool}
    TEST = {"test", "statistic", "p_value", "p_adjusted", "significant", "effect"?, "reason"?}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from validate.analysis import two_sample as ts
from validate.errors import InputError

CUSUM_K = 0.5
CUSUM_H = 5.0
DETECTORS = ("tests", "cusum", "either")
WINDOW_TESTS = ("score", "calibration", "auroc", "prevalence")


_UTC_OFFSET = r"^(.*[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)(?:Z|[+-]\d{2}(?::?\d{2})?)$"


def parse_dates(values: pd.Series | Sequence, *, column: str = "acquired_at", file: str | None = None) -> pd.Series:
    """ISO 8601 dates (``2021-03-14``, or with a time) as a datetime64 series; empty cells become NaT.

    A time's UTC offset (``Z``, ``+02:00``) is dropped, keeping the local wall-clock time as written:
    a case belongs to the calendar window of the date on which it was acquired where it was acquired.
    A cell that is not an ISO date raises :class:`InputError` naming its row (1-based) and column.
    """
    s = pd.Series(values).reset_index(drop=True)
    if pd.api.types.is_datetime64_any_dtype(s):
        return s.dt.tz_localize(None) if s.dt.tz is not None else s
    text = s.astype("string").str.strip()
    empty = (s.isna() | (text == "") | text.isna()).to_numpy()
    text = text.str.replace(_UTC_OFFSET, r"\1", regex=True)
    out = pd.to_datetime(text.where(~empty), format="ISO8601", errors="coerce")
    bad = np.flatnonzero(out.isna().to_numpy() & ~empty)
    if bad.size:
        raise InputError(
            f"not an ISO date: {s.iloc[bad[0]]!r}",
            file=file,
            row=int(bad[0]) + 1,
            field=column,
            expected="an ISO 8601 date such as 2021-03-14",
        )
    return out


def _entry(estimate: float | None, lo: float | None, hi: float | None, method: str, **extra: Any) -> dict:
    def clean(v):
        if v is None:
            return None
        v = float(v)
        return v if math.isfinite(v) else None

    out = {"estimate": clean(estimate), "ci_low": clean(lo), "ci_high": clean(hi), "method": method}
    out.update(extra)
    return out


def _none_entry(method: str, reason: str) -> dict:
    return {"estimate": None, "ci_low": None, "ci_high": None, "method": method, "reason": reason}


def _settings(settings: Any):
    from validate.metrics import MetricSettings

    return settings if settings is not None else MetricSettings()


def _bootstrap_entries(
    y: np.ndarray, p: np.ndarray, clusters: np.ndarray | None, settings: Any, seed: int
) -> tuple[dict, dict]:
    """Mean score and ECE with bootstrap percentile intervals from the metrics engine's weights."""
    from validate.metrics import bootstrap_replicates, ece, percentile_interval, weighted_ece
    from validate.metrics.calibration import bin_index

    est_mean = float(p.mean())
    est_ece = float(ece(y, p, bins=settings.bins))
    if settings.n_bootstrap <= 0:
        return (
            _entry(est_mean, None, None, "bootstrap", reason="n_bootstrap is 0"),
            _entry(est_ece, None, None, "bootstrap", reason="n_bootstrap is 0"),
        )
    idx = bin_index(p, settings.bins)

    def statistic(w: np.ndarray) -> np.ndarray:
        return np.column_stack([(w @ p) / w.sum(axis=1), weighted_ece(y, p, w, bins=settings.bins, idx=idx)])

    reps = bootstrap_replicates(statistic, p.size, n_rep=settings.n_bootstrap, clusters=clusters, seed=seed)
    lo, hi = percentile_interval(reps, settings.ci_level)
    return (_entry(est_mean, lo[0], hi[0], "bootstrap"), _entry(est_ece, lo[1], hi[1], "bootstrap"))


def window_metrics(
    y: np.ndarray, p: np.ndarray, *, settings: Any = None, clusters: np.ndarray | None = None, seed: int | None = None
) -> dict:
    """Metrics of one window's cases (binary ``y``, probabilities ``p``), each with its interval.

    prevalence: Wilson; mean score and ECE (``settings.bins`` equal-width bins): bootstrap percentile
    (``settings.n_bootstrap`` replicates, ``settings.ci_level``, resampling ``clusters`` when given);
    AUROC: DeLong; calibration intercept: Wald. ``insufficient`` follows the metrics rule: fewer than
    ``settings.min_cases`` cases or fewer than ``settings.min_events`` events or non-events.
    """
    from validate.metrics import calibration_intercept, delong_ci

    settings = _settings(settings)
    seed = settings.seed if seed is None else seed
    n = int(y.size)
    events = int(y.sum())
    out: dict = {"n": n, "n_events": events}
    if n == 0:
        reason = "no cases in this window"
        out.update(
            {
                k: _none_entry(m, reason)
                for k, m in (
                    ("prevalence", "wilson"),
                    ("mean_score", "bootstrap"),
                    ("auroc", "delong"),
                    ("ece", "bootstrap"),
                    ("calibration_intercept", "wald"),
                )
            }
        )
        out.update({"insufficient": True, "insufficient_reason": reason})
        return out
    lo, hi = ts.wilson_interval(events, n, settings.ci_level)
    out["prevalence"] = _entry(events / n, lo, hi, "wilson")
    out["mean_score"], out["ece"] = _bootstrap_entries(y, p, clusters, settings, seed)
    if 0 < events < n:
        d = delong_ci(y, p, level=settings.ci_level)
        out["auroc"] = _entry(d["estimate"], d["ci_low"], d["ci_high"], "delong", se=_clean(d.get("se")))
        ci = calibration_intercept(y, p, level=settings.ci_level)
        out["calibration_intercept"] = _entry(ci["estimate"], ci["ci_low"], ci["ci_high"], "wald")
    else:
        reason = "a single class in this window"
        out["auroc"] = _none_entry("delong", reason)
        out["calibration_intercept"] = _none_entry("wald", reason)
    reasons = []
    if n < settings.min_cases:
        reasons.append(f"{n} cases < {settings.min_cases}")
    if min(events, n - events) < settings.min_events:
        reasons.append(f"{min(events, n - events)} events or non-events < {settings.min_events}")
    out["insufficient"] = bool(reasons)
    out["insufficient_reason"] = "; ".join(reasons) if reasons else None
    return out


def _clean(v):
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


# --------------------------------------------------------------------------- window tests


def _auroc_z(y_a, p_a, y_b, p_b) -> dict:
    from validate.metrics import delong_ci

    if min(y_a.sum(), y_a.size - y_a.sum()) < 2 or min(y_b.sum(), y_b.size - y_b.sum()) < 2:
        return {
            "test": "delong_z_unpaired",
            "statistic": None,
            "p_value": None,
            "reason": "fewer than 2 events or non-events",
        }
    a, b = delong_ci(y_a, p_a), delong_ci(y_b, p_b)
    se = math.sqrt(a["se"] ** 2 + b["se"] ** 2)
    diff = a["estimate"] - b["estimate"]
    if not math.isfinite(se) or se == 0:
        return {
            "test": "delong_z_unpaired",
            "statistic": None,
            "p_value": None,
            "effect": diff,
            "reason": "zero standard error",
        }
    z = diff / se
    return {"test": "delong_z_unpaired", "statistic": z, "p_value": float(2 * stats.norm.sf(abs(z))), "effect": diff}


def _window_tests(y_w, p_w, y_r, p_r, which: Sequence[str]) -> dict:
    out = {}
    if "score" in which:
        res = ts.score_shift(p_w, p_r)
        out["score"] = {
            "test": res["test"],
            "statistic": res["statistic"],
            "p_value": res["p_value"],
            "effect": res.get("psi"),
            "effect_name": "psi",
        }
    if "calibration" in which:
        res = ts.numeric_shift(y_w - p_w, y_r - p_r)
        out["calibration"] = {
            "test": res["test"],
            "statistic": res["statistic"],
            "p_value": res["p_value"],
            "effect": (res["site"]["mean"] - res["reference"]["mean"]) if res["site"]["mean"] is not None else None,
            "effect_name": "residual_mean_difference",
        }
        if res.get("reason"):
            out["calibration"]["reason"] = res["reason"]
    if "auroc" in which:
        out["auroc"] = _auroc_z(y_w, p_w, y_r, p_r)
    if "prevalence" in which:
        res = ts.proportion_shift(int(y_w.sum()), y_w.size, int(y_r.sum()), y_r.size)
        out["prevalence"] = {
            "test": res.get("test"),
            "statistic": res.get("statistic"),
            "p_value": res.get("p_value"),
            "effect": res.get("effect"),
            "effect_name": "difference",
        }
        if res.get("reason"):
            out["prevalence"]["reason"] = res["reason"]
    return out


def _cusum(
    stat_w: list[tuple[float, int] | None], mu: float, sd: float, n_ref: int, k: float = CUSUM_K, h: float = CUSUM_H
) -> list[dict | None]:
    upper = lower = 0.0
    out = []
    for item in stat_w:
        if item is None:
            out.append(None)
            continue
        mean, n = item
        if sd == 0 or not math.isfinite(sd):
            out.append(
                {"z": None, "upper": upper, "lower": lower, "alarm": False, "reason": "no variation in the reference"}
            )
            continue
        z = (mean - mu) / (sd * math.sqrt(1.0 / n + 1.0 / n_ref))
        upper = max(0.0, upper + z - k)
        lower = max(0.0, lower - z - k)
        out.append({"z": z, "upper": upper, "lower": lower, "alarm": bool(upper > h or lower > h)})
    return out


# --------------------------------------------------------------------------- the analysis


def temporal_drift(
    y: np.ndarray,
    p: np.ndarray,
    dates: pd.Series | Sequence,
    *,
    freq: str = "M",
    reference_windows: int = 3,
    alpha: float = 0.05,
    correction: str = "holm",
    detector: str = "tests",
    tests: Sequence[str] = WINDOW_TESTS,
    settings: Any = None,
    clusters: np.ndarray | None = None,
    cusum_k: float = CUSUM_K,
    cusum_h: float = CUSUM_H,
) -> dict:
    """Metrics per calendar window and the windows that drifted (structure in the module docstring).

    ``y`` binary labels, ``p`` probabilities, ``dates`` datetimes or ISO strings (cases without a date are
    left out and counted); ``freq`` a pandas period alias ("M" month, "W" week, "Q" quarter, "Y" year);
    ``settings`` a :class:`validate.metrics.MetricSettings` for intervals and the insufficiency rule;
    ``clusters`` per-case patient ids for the bootstrap.
    """
    _check_drift_options(detector, correction, tests, reference_windows)
    settings = _settings(settings)
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    dates = parse_dates(dates)
    dated = dates.notna().to_numpy()
    out: dict = {
        "freq": freq,
        "detector": detector,
        "alpha": alpha,
        "correction": correction,
        "n_dated": int(dated.sum()),
        "n_undated": int((~dated).sum()),
        "reference_windows": [],
        "windows": [],
        "flagged_windows": [],
        "cusum_alarm_windows": [],
        "first_flagged": None,
        "drift": False,
    }
    if not dated.any():
        out["reason"] = "no case has a date"
        return out
    calendar, members = _calendar(dates[dated], freq)
    y, p = y[dated], p[dated]
    cl = None if clusters is None else np.asarray(clusters)[dated]
    nonempty = [per for per in calendar if members[per].size]
    n_ref = min(reference_windows, max(1, len(nonempty) - 1))
    ref_set = set(nonempty[:n_ref])
    out["reference_windows"] = [str(per) for per in nonempty[:n_ref]]
    ref_idx = np.concatenate([members[per] for per in nonempty[:n_ref]])
    y_r, p_r = y[ref_idx], p[ref_idx]

    windows = []
    for i, per in enumerate(calendar):
        idx = members[per]
        w = {
            "window": str(per),
            "start": per.start_time.date().isoformat(),
            "end": per.end_time.date().isoformat(),
            "reference": per in ref_set,
        }
        w.update(
            window_metrics(
                y[idx], p[idx], settings=settings, clusters=None if cl is None else cl[idx], seed=settings.seed + i
            )
        )
        w["tests"] = None
        if not w["reference"] and idx.size and len(nonempty) > 1:
            w["tests"] = _window_tests(y[idx], p[idx], y_r, p_r, tests)
        windows.append(w)
    _adjust_window_tests(windows, correction=correction, alpha=alpha)
    later = [(members[per], w) for per, w in zip(calendar, windows, strict=True) if per > nonempty[n_ref - 1]]
    _cusum_windows(windows, later, {"score": p, "calibration": y - p}, ref_idx, cusum_k, cusum_h)
    _verdict(out, windows, detector)
    if len(nonempty) < 2:
        out["reason"] = "a single window with cases: nothing to compare"
    return out


def _check_drift_options(detector: str, correction: str, tests: Sequence[str], reference_windows: int) -> None:
    """Refuse an unknown detector, correction or window test, or fewer than one reference window."""
    if detector not in DETECTORS:
        raise InputError(f"unknown drift detector {detector!r}", field="detector", expected=" | ".join(DETECTORS))
    if correction not in ("holm", "bh"):
        raise InputError(f"unknown correction {correction!r}", field="correction", expected="holm or bh")
    unknown = set(tests) - set(WINDOW_TESTS)
    if unknown:
        raise InputError(f"unknown window test(s) {sorted(unknown)}", field="tests", expected=", ".join(WINDOW_TESTS))
    if reference_windows < 1:
        raise InputError("reference_windows must be at least 1", field="reference_windows")


def _calendar(dates: pd.Series, freq: str) -> tuple[pd.PeriodIndex, dict]:
    """Every calendar window from the first date's to the last's (empty ones included), and the
    positions of each window's cases in date order of their window, ascending."""
    try:
        periods = dates.dt.to_period(freq)
    except (ValueError, TypeError) as exc:
        raise InputError(
            f"unknown window frequency {freq!r}: {exc}",
            field="freq",
            expected="a pandas period alias such as M, W, Q or Y",
        ) from None
    codes = pd.PeriodIndex(periods).asi8
    first, last = periods.min(), periods.max()
    calendar = pd.period_range(first, last, freq=first.freq)
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], calendar.asi8, side="left")
    ends = np.searchsorted(codes[order], calendar.asi8, side="right")
    members = {per: np.sort(order[lo:hi]) for per, lo, hi in zip(calendar, starts, ends, strict=True)}
    return calendar, members


def _adjust_window_tests(windows: list[dict], *, correction: str, alpha: float) -> None:
    """One family, every test of every later window: adjusted p-values (Holm or Benjamini-Hochberg),
    significance at ``alpha``, and each window flagged when one of its tests is significant."""
    family = [t for w in windows if w["tests"] for t in w["tests"].values() if t.get("p_value") is not None]
    pv = np.array([t["p_value"] for t in family], dtype=float)
    adj = ts.holm(pv) if correction == "holm" else ts.benjamini_hochberg(pv)
    for t, a in zip(family, adj, strict=True):
        t["p_adjusted"] = float(a)
        t["significant"] = bool(a < alpha)
    for w in windows:
        for t in (w["tests"] or {}).values():
            t.setdefault("p_adjusted", None)
            t.setdefault("significant", False)
        w["flagged"] = any(t["significant"] for t in (w["tests"] or {}).values())


def _cusum_windows(
    windows: list[dict],
    later: list[tuple[np.ndarray, dict]],
    series: dict[str, np.ndarray],
    ref_idx: np.ndarray,
    k: float,
    h: float,
) -> None:
    """CUSUM of each series (the score, the calibration residual y − p) over the windows after the
    reference, standardised against the reference cases; ``later``: (positions of its cases, window)."""
    cus = {}
    for name, x in series.items():
        xr = x[ref_idx]
        sd = float(xr.std(ddof=1)) if xr.size > 1 else float("nan")
        items = [None if idx.size == 0 else (float(x[idx].mean()), int(idx.size)) for idx, _ in later]
        cus[name] = _cusum(items, float(xr.mean()), sd, int(xr.size), k, h)
    for w in windows:
        w["cusum"] = None
        w["cusum_alarm"] = False
    for j, (_, w) in enumerate(later):
        w["cusum"] = {name: cus[name][j] for name in cus}
        w["cusum_alarm"] = any(c is not None and c["alarm"] for c in w["cusum"].values())


def _verdict(out: dict, windows: list[dict], detector: str) -> None:
    """The windows, those flagged by the tests and by CUSUM, and the detector's verdict: drift and the
    first window it flagged."""
    out["windows"] = windows
    out["flagged_windows"] = [w["window"] for w in windows if w["flagged"]]
    out["cusum_alarm_windows"] = [w["window"] for w in windows if w["cusum_alarm"]]
    chosen = {
        "tests": out["flagged_windows"],
        "cusum": out["cusum_alarm_windows"],
        "either": sorted(set(out["flagged_windows"]) | set(out["cusum_alarm_windows"])),
    }[detector]
    out["first_flagged"] = chosen[0] if chosen else None
    out["drift"] = bool(chosen)
