"""Views of the Calibration JSON's optional design sections (``designs``: ``sample_size``, ``transfer``,
``local``; :mod:`validate.calibrators.designs`) in the shapes the figure builder takes."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional


def _designs(calibration: Mapping) -> Mapping:
    return (calibration or {}).get("designs") or {}


def sample_size_rows(calibration: Mapping, metric: str = "ece", *, methods: Optional[Sequence[str]] = None,
                     sites: Optional[Sequence[str]] = None) -> list[dict]:
    """Rows for :func:`validate.charts.sample_size_figure`: per external site, method (not ``none``) and
    fitting-set size, the mean of ``metric`` over repeats, its 2.5/97.5% quantiles as the spread, and
    the uncalibrated mean on the same evaluation cases as ``baseline``."""
    section = _designs(calibration).get("sample_size") or {}
    rows = []
    for site, info in (section.get("sites") or {}).items():
        if sites is not None and site not in sites:
            continue
        for size, res in sorted((info.get("sizes") or {}).items(), key=lambda kv: int(kv[0])):
            per = res.get("methods") or {}
            base = ((per.get("none") or {}).get(metric) or {}).get("mean")
            for method, stats in per.items():
                if method == "none" or (methods is not None and method not in methods):
                    continue
                s = (stats or {}).get(metric) or {}
                if s.get("mean") is None:
                    continue
                rows.append({"site": site, "method": method, "n_fit": int(res.get("n_fit", size)), "mean": s["mean"],
                             "low": s.get("q025"), "high": s.get("q975"), "repeats": res.get("repeats"),
                             "baseline": base, "n_eval": res.get("n_eval")})
    return rows


def transfer_matrix(calibration: Mapping, metric: str = "ece") -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """``{method: {fit_site: {eval_site: {"estimate": value}}}}`` of ``metric`` from the transfer design
    (point estimates, as :func:`validate.charts.transfer_matrix_figure` takes a matrix's cells)."""
    section = _designs(calibration).get("transfer") or {}
    out = {}
    for method, by_metric in (section.get("methods") or {}).items():
        matrix = (by_metric or {}).get(metric)
        if matrix:
            out[method] = {fit: {ev: {"estimate": v} for ev, v in (row or {}).items()}
                           for fit, row in matrix.items()}
    return out
