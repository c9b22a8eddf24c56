"""Dataset shift between sites, and drift over time: the content of ``shift.json``.

:func:`shift_report` compares every external site with the development site(s) on what can differ —
labels, case mix, the model's scores, the images, the embeddings, missing values — ranks what differs
most, and flags a site when any difference is significant after correcting for the number of tests.
It also reports the prior-shift adjustment of calibration (:mod:`validate.analysis.prior_shift`) and,
when cases carry acquisition dates, temporal drift per site (:mod:`validate.analysis.drift`).
The statistics themselves are in :mod:`validate.analysis.two_sample`.

Input: a predictions table (DESIGN.md), read only through :class:`validate.predictions.PredictionsTable`
(its labels, its probabilities — sigmoid/softmax of the logits when given — and, for the prior shift,
its logits), with attribute columns, and optionally these columns that the
scorer may add (per case, computed on the pixel array after dividing by the protocol's ``scale`` and
before resizing or normalisation):

- ``img_height``, ``img_width``: the stored image size in pixels;
- ``img_mean``, ``img_std``, ``img_p01``, ``img_p05``, ``img_p25``, ``img_p50``, ``img_p75``,
  ``img_p95``, ``img_p99`` (any numeric ``img_<name>`` other than size and histogram is tested the same
  way): intensity statistics of the image;
- ``img_hist_00`` … ``img_hist_NN``: the image's intensity histogram (counts or fractions; equal-width
  bins on [0, 1], the same bins for every case);
- ``manufacturer``, ``manufacturer_model``: DICOM (0008,0070) Manufacturer and (0008,1090)
  Manufacturer's Model Name (categorical); for volumes also ``convolution_kernel`` (0018,1210)
  (categorical), tested with the equipment;
- ``acq_<name>`` (numeric; volumes: ``acq_slice_thickness_mm``, ``acq_kvp``, ``acq_spacing_z_mm``,
  ``acq_spacing_y_mm``, ``acq_spacing_x_mm``): acquisition settings, each tested as a case-mix
  attribute (group ``acquisition``), its kind decided on the whole table as for attributes
  (:func:`attribute_kind`: a setting with at most 10 distinct values, e.g. a slice thickness that
  each scanner protocol fixes, is compared as categories; a Welch test would have no variance);
- ``emb_0`` … ``emb_{D-1}``: a penultimate-layer embedding of the case.

Output (``shift.json``; JSON-ready: every undefined number is ``None`` beside a ``reason``)::

    {
      "schema": "validate.shift/1",
      "task": "binary" | "multiclass" | "multilabel",
      "alpha": 0.05, "correction": "holm", "ci_level": 0.95, "seed": 0,
      "thresholds": {"difference": 0.05, "smd": 0.1, "cramers_v": 0.1, "psi": 0.2, "mmd2": null},
      "development": {"sites": [...], "n": int, "n_events": int | null, "prevalence": float | null},
      "columns": {"attributes": {"<attr>": "numeric" | "categorical"}, "features": [...],
                  "image_stats": [...], "image_size": bool, "image_histogram": int (bins),
                  "equipment": [...], "acquisition": {"<acq_column>": "numeric" | "categorical"},
                  "embedding": int (dimensions)},
      "sites": {
        "<site>": {
          "n": int, "n_events": int | {"<label>": int} | null,
          "flagged": bool,        # any finding significant after correction (p_adjusted < alpha)
          "material": bool,       # any finding significant AND beyond its practical threshold
          "n_tests": int,         # findings with a p-value: the size of the correction's family
          "labels":     {"prevalence": FINDING} | {"<label>": FINDING} | {"class_mix": FINDING} | null,
          "case_mix":   {"<attr>": FINDING},
          "scores":     {"<score>": FINDING},        # "p" for binary; the class/label name otherwise
          "images":     {"intensity": {"<img_stat>": FINDING}, "size": FINDING | null,
                         "histogram": {"site": [...], "reference": [...], "total_variation": x} | null}
                        | null,
          "equipment":  {"<column>": FINDING} | null,
          "acquisition": {"<acq_column>": FINDING} | null,
          "embedding":  FINDING | null,
          "missingness": {"<feature>": FINDING} | null,
          "prior_shift": PRIOR | {"<label>": PRIOR} | null,
          "ranking": [ROW, ...]     # every finding, most different first
        }
      },
      "flagged_sites": [...], "material_sites": [...],
      "drift": {"freq": "M", "time_column": "acquired_at", "drift": bool, "flagged_sites": [...],
                "sites": {"<site>": DRIFT}, "reason": "..." (only when no site could be analysed)}
    }

FINDING is the dict of a :mod:`validate.analysis.two_sample` function (``test``, ``statistic``,
``p_value``, ``effect_name``, ``effect``, the two samples' summaries under ``site``/``reference``)
plus ``p_adjusted`` (the chosen correction), ``p_holm``, ``q_bh`` (Benjamini–Hochberg),
``threshold``, ``exceeds_threshold`` (|effect| > threshold; None when there is no threshold),
``significant`` (p_adjusted < alpha) and ``flagged`` (= significant). ROW repeats, for ranking, ``id``
("<group>:<name>"), ``group``, ``name``, ``test``, ``p_value``, ``p_adjusted``, ``effect_name``,
``effect``, ``threshold``, ``exceeds_threshold``, ``flagged``, ``material`` and ``rank`` (1 = most
different). PRIOR is :func:`validate.analysis.prior_shift.prior_shift_calibration`'s dict (binary;
per label for multilabel; for multiclass ``{"old_prior": [...], "site_prior": [...], "em": {"prior": [...],
...}}`` without intercepts), computed with the development site's observed prevalence as the model's
prior. DRIFT is :func:`validate.analysis.drift.temporal_drift`'s dict (binary tasks; every site whose
cases carry dates, development sites included).

Multiplicity: within each site, all findings with a p-value form one family. ``correction="holm"``
(default) controls the family-wise error rate (the chance that a site drawn from the development
distribution is flagged at all is at most ``alpha``, whatever the dependence between tests);
``"bh"`` controls the false discovery rate instead. Both adjusted values are always reported.

Ranking: flagged findings first, ordered by |effect| / threshold (how many times the practical
threshold the difference is; flagged findings without a threshold after those), then the rest by
p-value; findings without a p-value last.

Practical thresholds (``thresholds``; override any of them): absolute difference of a proportion
(prevalence, missing rate) 0.05; |SMD| 0.1 (Austin 2009); Cramér's V 0.1 (Cohen 1988, small effect);
PSI 0.2 (between Siddiqi's 0.1 "moderate" and 0.25 "major"); MMD² none (its scale depends on the
embedding). A finding is ``material`` when it is significant and beyond its threshold: the statistical
flag says the difference is real, the threshold says it is large enough to matter.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from validate.analysis import two_sample as ts
from validate.errors import InputError
from validate.predictions import PredictionsTable, as_table

SCHEMA = "validate.shift/1"

DEFAULT_THRESHOLDS: dict[str, float | None] = {
    "difference": 0.05,
    "smd": 0.1,
    "cramers_v": 0.1,
    "psi": 0.2,
    "mmd2": None,
}

IMAGE_SIZE_COLUMNS = ("img_height", "img_width")
IMAGE_HIST_PREFIX = "img_hist_"
IMAGE_PREFIX = "img_"
EQUIPMENT_COLUMNS = ("manufacturer", "manufacturer_model", "convolution_kernel")
ACQUISITION_PREFIX = "acq_"
EMBEDDING_PREFIX = "emb_"

#: A numeric attribute with at most this many distinct values (both sites together) is treated as
#: categorical: sex coded 0/1, chest-pain type 1–4, a 0–3 vessel count.
CATEGORICAL_MAX_LEVELS = 10

_CORRECTIONS = ("holm", "bh")


# --------------------------------------------------------------------------- table reading


def _outcome_names(table: PredictionsTable) -> tuple[list[str], list[str]]:
    """(label names, score names) of the shift findings: binary ``["y"]``, ``["p"]``; multiclass
    ``["y"]`` and the class names in the table's class order (the order its class indices refer to);
    multilabel the label names for both."""
    if table.task == "binary":
        return ["y"], ["p"]
    names = list(table.names or [])
    return (["y"], names) if table.task == "multiclass" else (names, names)


def attribute_kind(values: pd.Series) -> str:
    """'categorical' for non-numeric columns and numeric ones with at most
    :data:`CATEGORICAL_MAX_LEVELS` distinct values; 'numeric' otherwise."""
    if values.dtype == bool or not pd.api.types.is_numeric_dtype(values):
        return "categorical"
    return "categorical" if values.dropna().nunique() <= CATEGORICAL_MAX_LEVELS else "numeric"


# --------------------------------------------------------------------------- one site


def _finding(result: dict, group: str, name: str, thresholds: Mapping[str, float | None]) -> dict:
    result = dict(result)
    thr = thresholds.get(result.get("effect_name")) if result.get("effect_name") else None
    result["threshold"] = thr
    eff = result.get("effect")
    result["exceeds_threshold"] = None if (thr is None or eff is None) else bool(abs(eff) > thr)
    result["_id"] = (group, name)
    return result


def _column_shift(kind: str, a: pd.Series, b: pd.Series) -> dict:
    if kind == "numeric":
        return ts.numeric_shift(
            pd.to_numeric(a, errors="coerce").to_numpy(float), pd.to_numeric(b, errors="coerce").to_numpy(float)
        )
    return ts.categorical_shift(a, b)


def _recorded_everywhere(a: pd.Series, b: pd.Series) -> str | None:
    if b.notna().sum() == 0:
        return "not recorded at the development site"
    if a.notna().sum() == 0:
        return "not recorded at this site"
    return None


class _Findings:
    """The findings of one site, in the order they were added (the ranking breaks ties by it)."""

    def __init__(self, thresholds: Mapping[str, float | None]):
        self.thresholds = thresholds
        self.items: list[dict] = []

    def add(self, group: str, name: str, result: dict) -> dict:
        f = _finding(result, group, name, self.thresholds)
        self.items.append(f)
        return f


def site_shift(
    site: PredictionsTable,
    dev: PredictionsTable,
    *,
    attributes: Mapping[str, str],
    features: Sequence[str],
    columns: Mapping[str, Any],
    alpha: float = 0.05,
    correction: str = "holm",
    thresholds: Mapping[str, float | None] | None = None,
    ci_level: float = 0.95,
    seed: int = 0,
    n_permutations: int = 500,
) -> dict:
    """Every shift finding for one site against the development cases, corrected and ranked.

    ``site`` and ``dev`` are predictions tables (one site's cases, the development cases); labels and
    probabilities come from the tables, attributes from their columns; the other arguments are what
    :func:`shift_report` derives from the whole table (see the module docstring for the output).
    """
    task = site.task
    labels, score_names = _outcome_names(site)
    findings = _Findings({**DEFAULT_THRESHOLDS, **(thresholds or {})})
    out: dict = {"n": int(len(site))}
    y_a, y_b = site.labels(), dev.labels()
    p_a, p_b = site.probabilities(), dev.probabilities()
    z_a = site.logits() if task == "binary" else None  # prior shift: the logits, without the clip when given
    out["n_events"], out["labels"] = _label_shift(findings, task, labels, score_names, y_a, y_b, ci_level)
    a, b = site.frame, dev.frame  # the attributes, images, equipment and embeddings are columns
    out["case_mix"] = {
        name: findings.add("case_mix", name, _column_shift(kind, a[name], b[name])) for name, kind in attributes.items()
    }
    if task == "binary":
        out["scores"] = {"p": findings.add("scores", "p", ts.score_shift(p_a, p_b))}
    else:
        out["scores"] = {
            n: findings.add("scores", n, ts.score_shift(p_a[:, j], p_b[:, j])) for j, n in enumerate(score_names)
        }
    out["images"] = _image_shift(findings, a, b, columns)
    out["equipment"] = _equipment_shift(findings, a, b, columns["equipment"])
    out["acquisition"] = _acquisition_shift(findings, a, b, columns["acquisition"])
    if columns["embedding"]:
        ecols = columns["embedding_columns"]
        out["embedding"] = findings.add(
            "embedding",
            "penultimate",
            ts.mmd_permutation_test(
                a[ecols].to_numpy(float), b[ecols].to_numpy(float), n_permutations=n_permutations, seed=seed
            ),
        )
    else:
        out["embedding"] = None
    out["missingness"] = _missingness_shift(findings, a, b, features, ci_level)
    # prior shift (descriptive, not a test)
    out["prior_shift"] = _prior_shift(task, labels, y_a, y_b, p_a, z_a, ci_level)
    _rank(out, findings.items, alpha=alpha, correction=correction)
    return out


def _label_shift(
    findings: _Findings,
    task: str,
    labels: list[str],
    score_names: list[str],
    y_a: np.ndarray,
    y_b: np.ndarray,
    ci_level: float,
) -> tuple[Any, dict]:
    """The site's events and the shift of its labels: the prevalence (binary), each label's prevalence
    (multilabel) or the class mix (multiclass, whose events are None)."""
    if task == "binary":
        return int(y_a.sum()), {
            "prevalence": findings.add(
                "labels",
                "prevalence",
                ts.proportion_shift(int(y_a.sum()), y_a.size, int(y_b.sum()), y_b.size, level=ci_level),
            )
        }
    if task == "multilabel":
        n_events = {lab: int(y_a[:, j].sum()) for j, lab in enumerate(labels)}
        return n_events, {
            lab: findings.add(
                "labels",
                lab,
                ts.proportion_shift(
                    int(y_a[:, j].sum()), y_a.shape[0], int(y_b[:, j].sum()), y_b.shape[0], level=ci_level
                ),
            )
            for j, lab in enumerate(labels)
        }
    names = np.asarray(score_names, dtype=object)
    return None, {
        "class_mix": findings.add("labels", "class_mix", ts.categorical_shift(names[y_a].tolist(), names[y_b].tolist()))
    }


def _image_shift(findings: _Findings, site: pd.DataFrame, dev: pd.DataFrame, columns: Mapping[str, Any]) -> dict | None:
    """Intensity statistics, sizes (height x width) and the pooled histogram of the images; None
    without image columns."""
    if not (columns["image_stats"] or columns["image_size"] or columns["image_histogram"]):
        return None
    images: dict = {"intensity": {}, "size": None, "histogram": None}
    for c in columns["image_stats"]:
        images["intensity"][c] = findings.add(
            "image_intensity", c, ts.numeric_shift(site[c].to_numpy(float), dev[c].to_numpy(float))
        )
    if columns["image_size"]:
        images["size"] = findings.add("image_size", "height x width", ts.categorical_shift(_sizes(site), _sizes(dev)))
    if columns["image_histogram"]:
        hcols = columns["image_histogram_columns"]
        images["histogram"] = ts.histogram_shift(site[hcols].to_numpy(float), dev[hcols].to_numpy(float))
    return images


def _equipment_shift(
    findings: _Findings, site: pd.DataFrame, dev: pd.DataFrame, equipment: Sequence[str]
) -> dict | None:
    """The DICOM manufacturer / model mix; not tested where a site does not record it for every case."""
    if not equipment:
        return None
    eq = {}
    for c in equipment:
        reason = _recorded_everywhere(site[c], dev[c])
        res = ts.categorical_shift(site[c], dev[c])
        if reason:
            res.update({"statistic": None, "p_value": None, "effect": None, "reason": reason})
        eq[c] = findings.add("equipment", c, res)
    return eq


def _acquisition_shift(
    findings: _Findings, site: pd.DataFrame, dev: pd.DataFrame, acquisition: Mapping[str, str]
) -> dict | None:
    """Acquisition settings (slice thickness, kVp, voxel spacing), each compared as a case-mix
    attribute of the kind ``acquisition`` gives it (numeric: SMD with Welch's test; categorical:
    Cramér's V with the chi-square test); not tested where either side records none. None without
    such columns."""
    if not acquisition:
        return None
    out = {}
    for c, kind in acquisition.items():
        res = _column_shift(kind, site[c], dev[c])
        reason = _recorded_everywhere(site[c], dev[c])
        if reason:
            res.update({"statistic": None, "p_value": None, "effect": None, "reason": reason})
        out[c] = findings.add("acquisition", c, res)
    return out


def _missingness_shift(
    findings: _Findings, site: pd.DataFrame, dev: pd.DataFrame, features: Sequence[str], ci_level: float
) -> dict | None:
    """The share of missing values of each tabular feature; None without features."""
    if not features:
        return None
    miss = {}
    for c in features:
        res = ts.proportion_shift(
            int(site[c].isna().sum()), len(site), int(dev[c].isna().sum()), len(dev), level=ci_level
        )
        if res.get("p_value") is None and res.get("reason", "").startswith("the proportion is 0 or 1"):
            res["reason"] = (
                "no missing values at either site"
                if site[c].isna().sum() == 0
                else "missing for every case at both sites"
            )
        miss[c] = findings.add("missingness", c, res)
    return miss


def _rank(out: dict, findings: list[dict], *, alpha: float, correction: str) -> None:
    """The findings corrected for multiplicity and ranked: ``ranking``, ``n_tests``, ``flagged`` and
    ``material`` of the site."""
    _correct_and_rank(findings, alpha=alpha, correction=correction)
    out["ranking"] = [f.pop("_row") for f in sorted(findings, key=lambda f: f["_row"]["rank"])]
    for f in findings:
        f.pop("_id")
    out["n_tests"] = sum(1 for f in findings if f.get("p_value") is not None)
    out["flagged"] = any(f["flagged"] for f in findings)
    out["material"] = any(r["material"] for r in out["ranking"])


def _sizes(df: pd.DataFrame) -> list:
    h, w = df["img_height"], df["img_width"]
    return [None if (pd.isna(a) or pd.isna(b)) else f"{int(a)}x{int(b)}" for a, b in zip(h, w, strict=True)]


def _prior_shift(task, labels, y_a, y_b, p_a, z_a, ci_level) -> dict | None:
    from validate.analysis.prior_shift import em_prior, prior_shift_calibration

    if task == "binary":
        return _one_prior(y_a, None, z_a, y_b, ci_level, prior_shift_calibration)
    if task == "multilabel":
        return {
            lab: _one_prior(y_a[:, j], p_a[:, j], None, y_b[:, j], ci_level, prior_shift_calibration)
            for j, lab in enumerate(labels)
        }
    k = p_a.shape[1]
    old = np.bincount(y_b, minlength=k) / y_b.size
    new = np.bincount(y_a, minlength=k) / y_a.size
    if np.any(old == 0):
        return {
            "reason": "a class is absent at the development site",
            "old_prior": old.tolist(),
            "site_prior": new.tolist(),
            "em": None,
        }
    em = em_prior(p_a, old)
    return {
        "old_prior": old.tolist(),
        "site_prior": new.tolist(),
        "em": {
            "prior": em["prior"],
            "iterations": em["iterations"],
            "converged": em["converged"],
            "at_boundary": em["at_boundary"],
        },
    }


def _one_prior(y_a, p_a, z_a, y_b, ci_level, fn) -> dict:
    old = float(y_b.mean())
    if old <= 0.0 or old >= 1.0:
        return {
            "reason": "the development site has a single class: its prevalence cannot be adjusted from",
            "old_prior": old,
        }
    return fn(y_a, p_a, logits=z_a, old_prior=old, ci_level=ci_level)


def _correct_and_rank(findings: list[dict], *, alpha: float, correction: str) -> None:
    tested = [f for f in findings if f.get("p_value") is not None]
    pv = np.array([f["p_value"] for f in tested], dtype=float)
    p_holm, q_bh = ts.holm(pv), ts.benjamini_hochberg(pv)
    chosen = p_holm if correction == "holm" else q_bh
    for f, ph, qb, pa in zip(tested, p_holm, q_bh, chosen, strict=True):
        f["p_holm"], f["q_bh"], f["p_adjusted"] = float(ph), float(qb), float(pa)
        f["significant"] = bool(pa < alpha)
        f["flagged"] = f["significant"]
    for f in findings:
        if f.get("p_value") is None:
            f.update({"p_holm": None, "q_bh": None, "p_adjusted": None, "significant": False, "flagged": False})

    def size(f: dict) -> float:
        eff, thr = f.get("effect"), f.get("threshold")
        return abs(eff) / thr if (eff is not None and thr) else 0.0

    def key(f: dict) -> tuple:
        if f["p_value"] is None:
            return (2, 0.0, 0.0)
        if f["flagged"]:
            return (0, -size(f), f["p_value"])
        return (1, f["p_value"], -size(f))

    for rank, f in enumerate(sorted(findings, key=key), start=1):
        group, name = f["_id"]
        f["_row"] = {
            "rank": rank,
            "id": f"{group}:{name}",
            "group": group,
            "name": name,
            "test": f.get("test"),
            "statistic": f.get("statistic"),
            "p_value": f.get("p_value"),
            "p_adjusted": f["p_adjusted"],
            "effect_name": f.get("effect_name"),
            "effect": f.get("effect"),
            "threshold": f.get("threshold"),
            "exceeds_threshold": f.get("exceeds_threshold"),
            "flagged": f["flagged"],
            "material": bool(f["flagged"] and f.get("exceeds_threshold")),
        }
        if f.get("p_value") is None and f.get("reason"):
            f["_row"]["reason"] = f["reason"]


# --------------------------------------------------------------------------- the whole run


def _discover_columns(table: pd.DataFrame, attributes: Mapping[str, str]) -> dict:
    cols = list(table.columns)
    hist = sorted(
        (c for c in cols if c.startswith(IMAGE_HIST_PREFIX) and c[len(IMAGE_HIST_PREFIX) :].isdigit()),
        key=lambda c: int(c[len(IMAGE_HIST_PREFIX) :]),
    )
    stats_cols = [
        c
        for c in cols
        if c.startswith(IMAGE_PREFIX)
        and c not in IMAGE_SIZE_COLUMNS
        and c not in hist
        and pd.api.types.is_numeric_dtype(table[c])
    ]
    emb = sorted(
        (c for c in cols if c.startswith(EMBEDDING_PREFIX) and c[len(EMBEDDING_PREFIX) :].isdigit()),
        key=lambda c: int(c[len(EMBEDDING_PREFIX) :]),
    )
    return {
        "image_stats": stats_cols,
        "image_size": all(c in cols for c in IMAGE_SIZE_COLUMNS),
        "image_histogram": len(hist),
        "image_histogram_columns": hist,
        "equipment": [c for c in EQUIPMENT_COLUMNS if c in cols and c not in attributes],
        "acquisition": {
            c: attribute_kind(table[c])
            for c in cols
            if c.startswith(ACQUISITION_PREFIX) and c not in attributes and pd.api.types.is_numeric_dtype(table[c])
        },
        "embedding": len(emb),
        "embedding_columns": emb,
    }


def _needed_attributes(table: pd.DataFrame, kinds, features, columns) -> list[str]:
    """The attribute columns the per-site analysis reads (ids, labels and scores travel with the table)."""
    wanted = list(kinds) + list(features or []) + list(columns["image_stats"]) + list(IMAGE_SIZE_COLUMNS)
    wanted += columns["image_histogram_columns"] + columns["equipment"] + list(columns["acquisition"])
    wanted += columns["embedding_columns"]
    seen: set = set()
    return [c for c in wanted if c in table.columns and not (c in seen or seen.add(c))]


def _attribute_kinds(table: pd.DataFrame, attributes: Iterable[str] | Mapping[str, str] | None) -> dict[str, str]:
    if attributes is None:
        return {}
    if isinstance(attributes, Mapping):
        items = dict(attributes)
    else:
        items = {a: None for a in attributes}
    kinds = {}
    for name, kind in items.items():
        if name not in table.columns:
            raise InputError(
                "attribute not in the predictions table",
                field=name,
                expected=f"one of the columns {sorted(map(str, table.columns))}",
            )
        if kind is None:
            kind = attribute_kind(table[name])
        if kind not in ("numeric", "categorical"):
            raise InputError(f"unknown attribute kind {kind!r}", field=name, expected="numeric or categorical")
        kinds[name] = kind
    return kinds


def _as_list(x: str | Sequence[str] | None) -> list[str]:
    if x is None:
        return []
    return [x] if isinstance(x, str) else [str(v) for v in x]


def _jsonable(obj: Any) -> Any:
    """Plain Python types with no NaN/inf (those become None)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    return obj


def shift_report(
    table: PredictionsTable | pd.DataFrame,
    *,
    dev_sites: str | Sequence[str],
    external_sites: str | Sequence[str],
    attributes: Iterable[str] | Mapping[str, str] | None,
    features: Sequence[str] | None = None,
    alpha: float = 0.05,
    seed: int = 0,
    metric_settings: Any = None,
    time_column: str = "acquired_at",
    correction: str = "holm",
    thresholds: Mapping[str, float | None] | None = None,
    task: str | None = None,
    n_permutations: int = 500,
    drift_freq: str = "M",
    reference_windows: int = 3,
) -> dict:
    """The content of ``shift.json`` for one run (structure in the module docstring).

    ``table``: the predictions table (a :class:`~validate.predictions.PredictionsTable`, or a DataFrame
    read through :func:`~validate.predictions.as_table` with ``task``). ``dev_sites``: the development
    site(s) (pooled as the reference); ``external_sites``: the sites compared with it. ``attributes``:
    case-mix columns, a list (kinds inferred by :func:`attribute_kind`) or a mapping name → "numeric" |
    "categorical". ``features``: tabular input columns whose missing rate is compared (None: no missingness analysis).
    ``metric_settings``: a :class:`validate.metrics.MetricSettings` (CI level, bootstrap replicates
    and seed, cluster column, insufficiency rule) used for intervals and the drift windows.
    ``time_column``: acquisition dates (ISO) for temporal drift, per site, where present.
    Bad input (unknown site or column, missing or non-finite scores, bad labels) raises
    :class:`InputError`; rows are named by their row in the table.
    """
    if correction not in _CORRECTIONS:
        raise InputError(f"unknown correction {correction!r}", field="correction", expected="holm or bh")
    if not 0.0 < alpha < 1.0:
        raise InputError(f"alpha must lie in (0, 1), got {alpha!r}", field="alpha")
    if not isinstance(table, PredictionsTable) and "site" not in table.columns:
        raise InputError("no site column in the predictions table", field="site", expected="a site column")
    table = as_table(table, task=task)
    frame = table.frame
    dev_list, ext_list = _as_list(dev_sites), _as_list(external_sites)
    _check_sites(table, dev_list, ext_list)
    for f in features or []:
        if f not in frame.columns:
            raise InputError(
                "feature not in the predictions table",
                field=f,
                expected="the tabular feature columns carried into the predictions",
            )

    ci_level = float(getattr(metric_settings, "ci_level", 0.95))
    thresholds = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    task = table.task
    labels, _ = _outcome_names(table)
    kinds = _attribute_kinds(frame, attributes)
    columns = _discover_columns(frame, kinds)
    # split once, keeping only the attributes this analysis reads (taking string columns per site is what costs)
    work = table.keep_attributes(_needed_attributes(frame, kinds, features, columns))
    site_ids = work.site_ids.astype(str)
    dev = work.subset(np.isin(site_ids, dev_list))

    development = _development(dev, dev_list, labels)
    sites = {}
    for s in ext_list:
        sites[s] = site_shift(
            work.subset(site_ids == s),
            dev,
            attributes=kinds,
            features=list(features or []),
            columns=columns,
            alpha=alpha,
            correction=correction,
            thresholds=thresholds,
            ci_level=ci_level,
            seed=seed,
            n_permutations=n_permutations,
        )

    report = {
        "schema": SCHEMA,
        "task": task,
        "alpha": alpha,
        "correction": correction,
        "ci_level": ci_level,
        "seed": seed,
        "thresholds": thresholds,
        "development": development,
        "columns": {
            "attributes": kinds,
            "features": list(features or []),
            **{k: v for k, v in columns.items() if not k.endswith("_columns")},
        },
        "sites": sites,
        "flagged_sites": [s for s in ext_list if sites[s]["flagged"]],
        "material_sites": [s for s in ext_list if sites[s]["material"]],
        "drift": _drift_section(
            table,
            dev_list + ext_list,
            time_column=time_column,
            freq=drift_freq,
            alpha=alpha,
            correction=correction,
            reference_windows=reference_windows,
            metric_settings=metric_settings,
        ),
    }
    return _jsonable(report)


def _check_sites(table: PredictionsTable, dev_list: list[str], ext_list: list[str]) -> None:
    """Refuse a site without cases, no development site, or a site both development and external."""
    present = set(table.sites())
    for s in dev_list + ext_list:
        if s not in present:
            raise InputError(
                f"site {s!r} has no cases in the predictions table", field="site", expected=f"one of {sorted(present)}"
            )
    if not dev_list:
        raise InputError("no development site given", field="dev_sites", expected="at least one site")
    overlap = set(dev_list) & set(ext_list)
    if overlap:
        raise InputError(f"site(s) {sorted(overlap)} are both development and external", field="external_sites")


def _development(dev: PredictionsTable, dev_list: list[str], labels: list[str]) -> dict:
    """The pooled development cases: their sites, cases, and events and prevalence (per label for a
    multilabel task; None for a multiclass one)."""
    y_dev = dev.labels()
    development: dict = {"sites": dev_list, "n": int(len(dev)), "n_events": None, "prevalence": None}
    if dev.task == "binary":
        development.update({"n_events": int(y_dev.sum()), "prevalence": float(y_dev.mean())})
    elif dev.task == "multilabel":
        development.update(
            {
                "n_events": {lab: int(y_dev[:, j].sum()) for j, lab in enumerate(labels)},
                "prevalence": {lab: float(y_dev[:, j].mean()) for j, lab in enumerate(labels)},
            }
        )
    return development


def _drift_section(
    table: PredictionsTable, sites, *, time_column, freq, alpha, correction, reference_windows, metric_settings
) -> dict:
    base = {"freq": freq, "time_column": time_column, "drift": False, "flagged_sites": [], "sites": {}}
    if time_column not in table.frame.columns:
        base["reason"] = f"no {time_column!r} column in the predictions table"
        return base
    if table.task != "binary":
        base["reason"] = "temporal drift is computed for binary tasks"
        return base
    from validate.analysis.drift import parse_dates, temporal_drift

    for s in sites:
        part = table.site(s)
        when = part.frame[time_column]
        if when.isna().all() or (when.astype(str).str.strip() == "").all():
            continue
        dates = parse_dates(when, column=time_column)
        y, p = part.labels(), part.probabilities()
        cluster = None
        cluster_by = getattr(metric_settings, "cluster_by", None)
        if cluster_by and cluster_by in part.frame.columns:
            cluster = part.frame[cluster_by].astype(str).to_numpy()
        base["sites"][s] = temporal_drift(
            y,
            p,
            dates,
            freq=freq,
            alpha=alpha,
            correction=correction,
            reference_windows=reference_windows,
            settings=metric_settings,
            clusters=cluster,
        )
    base["flagged_sites"] = [s for s, d in base["sites"].items() if d.get("drift")]
    base["drift"] = bool(base["flagged_sites"])
    if not base["sites"]:
        base["reason"] = f"no site has dates in {time_column!r}"
    return base
