"""Two-sample statistics for dataset shift: one site's cases against the development site's.

Pure functions over numpy arrays. Each returns a plain dict (JSON-ready: floats, ints, lists, and
``None`` with a ``reason`` where a number is undefined, never NaN). Every result that carries a test
has ``test``, ``statistic`` and ``p_value``; every result that carries an effect size has ``effect``
(its name in ``effect_name``), so that :mod:`validate.analysis.shift` can rank them side by side.

Conventions: ``a`` is always the site under study (external), ``b`` the reference (development);
differences are ``a - b``. The tests assume independent cases: when a patient contributes several
cases, the p-values are too small (anti-conservative) and the effect sizes are unaffected.

Definitions and sources are in each docstring. Multiplicity corrections (:func:`holm`,
:func:`benjamini_hochberg`) are here too, because every caller needs the same ones.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import special, stats

from validate.numerics import wilson_interval  # noqa: F401 - one definition; NaN where n = 0

#: Proportions below this are floored before the logarithm of the PSI (an empty bin would be
#: infinite). 1e-4 is the floor most PSI implementations use; it caps one empty bin's contribution
#: at about (p - 1e-4) * ln(p / 1e-4), i.e. 0.69 for a decile bin (p = 0.1).
PSI_EPSILON = 1e-4

#: Cochran's rule: the chi-square approximation is doubtful when more than 20% of the expected
#: counts are below 5 (Cochran 1954, Biometrics 10:417).
_COCHRAN_MIN_EXPECTED = 5.0


def _none(reason: str, **extra: Any) -> dict:
    out = {"statistic": None, "p_value": None, "reason": reason}
    out.update(extra)
    return out


def _finite(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


@functools.lru_cache(maxsize=32)
def _z(level: float) -> float:
    return float(stats.norm.ppf(0.5 + level / 2.0))


# --------------------------------------------------------------------------- proportions


def newcombe_difference(k_a: int, n_a: int, k_b: int, n_b: int, level: float = 0.95) -> tuple[float, float, float]:
    """Difference of two independent proportions k_a/n_a − k_b/n_b with Newcombe's hybrid score interval.

    Definition (Newcombe 1998, Stat Med 17:873, method 10): with Wilson intervals (l_a, u_a), (l_b, u_b),
    lower = d − sqrt((p_a − l_a)² + (u_b − p_b)²), upper = d + sqrt((u_a − p_a)² + (p_b − l_b)²).
    Equal to statsmodels' ``confint_proportions_2indep(method="newcomb", compare="diff")``.
    Returns ``(difference, lower, upper)``.
    """
    p_a, p_b = k_a / n_a, k_b / n_b
    l_a, u_a = wilson_interval(k_a, n_a, level)
    l_b, u_b = wilson_interval(k_b, n_b, level)
    d = p_a - p_b
    lower = d - math.sqrt((p_a - l_a) ** 2 + (u_b - p_b) ** 2)
    upper = d + math.sqrt((u_a - p_a) ** 2 + (p_b - l_b) ** 2)
    return d, lower, upper


def two_proportion_test(k_a: int, n_a: int, k_b: int, n_b: int) -> dict:
    """Test of equal proportions in two independent samples.

    Pooled two-proportion z test, z = (p_a − p_b) / sqrt(p̄(1 − p̄)(1/n_a + 1/n_b)), p̄ = (k_a + k_b)/(n_a + n_b),
    two-sided (equal to Pearson's chi-square on the 2×2 table without continuity correction, and to
    statsmodels' ``proportions_ztest``). When any expected cell count is below 5 the normal
    approximation is poor, and Fisher's exact test (two-sided, ``scipy.stats.fisher_exact``) is used
    instead; ``test`` says which ran. Undefined (None, with a reason) when p̄ is 0 or 1.
    """
    n = n_a + n_b
    k = k_a + k_b
    if n_a == 0 or n_b == 0:
        return _none("a sample is empty", test=None)
    if k == 0 or k == n:
        return _none("the proportion is 0 or 1 in both samples: nothing to test", test=None)
    pooled = k / n
    expected = np.array([n_a * pooled, n_a * (1 - pooled), n_b * pooled, n_b * (1 - pooled)])
    if expected.min() < _COCHRAN_MIN_EXPECTED:
        table = [[k_a, n_a - k_a], [k_b, n_b - k_b]]
        res = stats.fisher_exact(table, alternative="two-sided")
        return {
            "test": "fisher_exact",
            "statistic": _finite(res.statistic),
            "p_value": float(res.pvalue),
            "statistic_name": "odds_ratio",
        }
    z = (k_a / n_a - k_b / n_b) / math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    return {
        "test": "two_proportion_z",
        "statistic": float(z),
        "p_value": float(2 * special.ndtr(-abs(z))),
        "statistic_name": "z",
    }


def proportion_shift(k_a: int, n_a: int, k_b: int, n_b: int, *, level: float = 0.95) -> dict:
    """Shift of a proportion (prevalence, a missing-value rate) between two samples.

    ``effect`` is the difference p_a − p_b with Newcombe's interval (:func:`newcombe_difference`),
    the test is :func:`two_proportion_test`. Each proportion carries its Wilson interval.
    """
    if n_a == 0 or n_b == 0:
        return _none("a sample is empty", test=None, effect_name="difference", effect=None)
    la, ua = wilson_interval(k_a, n_a, level)
    lb, ub = wilson_interval(k_b, n_b, level)
    d, lo, hi = newcombe_difference(k_a, n_a, k_b, n_b, level)
    out = {
        "site": {"k": int(k_a), "n": int(n_a), "estimate": k_a / n_a, "ci_low": la, "ci_high": ua, "method": "wilson"},
        "reference": {
            "k": int(k_b),
            "n": int(n_b),
            "estimate": k_b / n_b,
            "ci_low": lb,
            "ci_high": ub,
            "method": "wilson",
        },
        "difference": {"estimate": d, "ci_low": lo, "ci_high": hi, "method": "newcombe"},
        "effect_name": "difference",
        "effect": d,
    }
    out.update(two_proportion_test(k_a, n_a, k_b, n_b))
    return out


# --------------------------------------------------------------------------- numeric


def standardized_mean_difference(a: np.ndarray, b: np.ndarray) -> float | None:
    """Standardised mean difference of a numeric variable between two samples.

    Definition (Austin 2009, Stat Med 28:3083, eq. 1; Cohen's d with the average-variance pooled SD):
    d = (x̄_a − x̄_b) / sqrt((s_a² + s_b²) / 2), s² the sample variances (denominator n − 1).
    A |d| above 0.1 is the conventional mark of a meaningful imbalance (Normand et al. 2001,
    Austin 2009). None when both samples are constant (the SD is 0), or a sample has fewer than 2 values.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.size < 2 or b.size < 2:
        return None
    sd = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2.0)
    if sd == 0.0:
        return 0.0 if a.mean() == b.mean() else None
    return float((a.mean() - b.mean()) / sd)


def numeric_shift(a: np.ndarray, b: np.ndarray) -> dict:
    """Shift of a numeric variable: standardised mean difference and Welch's t test.

    ``effect`` is :func:`standardized_mean_difference`; the test is Welch's unequal-variance t test
    (:func:`welch_t_test`), which tests the quantity the SMD measures (a difference in means).
    Missing values (NaN) are dropped first and counted. Each sample is summarised by n, missing, mean,
    SD and its 5/25/50/75/95th percentiles (type 7).
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    a_ok, b_ok = a[np.isfinite(a)], b[np.isfinite(b)]

    def summary(x: np.ndarray, total: int) -> dict:
        if x.size == 0:
            return {"n": 0, "missing": int(total), "mean": None, "sd": None, "percentiles": None}
        q = np.percentile(x, [5, 25, 50, 75, 95])
        return {
            "n": int(x.size),
            "missing": int(total - x.size),
            "mean": float(x.mean()),
            "sd": float(x.std(ddof=1)) if x.size > 1 else None,
            "percentiles": {"p05": q[0], "p25": q[1], "p50": q[2], "p75": q[3], "p95": q[4]},
        }

    out: dict = {
        "kind": "numeric",
        "site": summary(a_ok, a.size),
        "reference": summary(b_ok, b.size),
        "effect_name": "smd",
    }
    if a_ok.size < 2 or b_ok.size < 2:
        out.update(_none("fewer than 2 non-missing values in a sample", test="welch_t", effect=None))
        return out
    smd = standardized_mean_difference(a_ok, b_ok)
    out["effect"] = smd
    if a_ok.var(ddof=1) == 0.0 and b_ok.var(ddof=1) == 0.0:
        reason = "constant in both samples" + ("" if smd == 0.0 else " with different values")
        out.update(_none(reason, test="welch_t"))
        return out
    t, df, p = welch_t_test(a_ok, b_ok)
    out.update({"test": "welch_t", "statistic": t, "df": df, "p_value": p})
    return out


def welch_t_test(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Welch's unequal-variance t test of equal means (Welch 1947, Biometrika 34:28), two-sided.

    t = (x̄_a − x̄_b) / sqrt(s_a²/n_a + s_b²/n_b), Welch–Satterthwaite df
    = (s_a²/n_a + s_b²/n_b)² / ((s_a²/n_a)²/(n_a − 1) + (s_b²/n_b)²/(n_b − 1)); equal to
    ``scipy.stats.ttest_ind(equal_var=False)`` and statsmodels' ``ttest_ind(usevar="unequal")``.
    Returns ``(t, df, p)``; needs at least 2 values per sample and a non-zero variance.
    """
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se2 = va + vb
    t = float((a.mean() - b.mean()) / math.sqrt(se2))
    df = float(se2 * se2 / (va * va / (a.size - 1) + vb * vb / (b.size - 1)))
    return t, df, float(2.0 * special.stdtr(df, -abs(t)))


# --------------------------------------------------------------------------- categorical


def categorical_shift(a: Sequence, b: Sequence) -> dict:
    """Shift of a categorical variable: Pearson's chi-square test of homogeneity and Cramér's V.

    The 2 × L table counts each level in each sample (levels: the union of both samples, sorted as
    strings; missing values (None/NaN) are dropped and counted). Chi-square = Σ (O − E)² / E with
    E = row total × column total / n, df = L − 1, no continuity correction (Pearson 1900; equal to
    ``scipy.stats.chi2_contingency(correction=False)``). Cramér's V = sqrt(χ² / (n · (min(2, L) − 1)))
    (Cramér 1946, Mathematical Methods of Statistics, §21.9), 0 for identical mixes, 1 for disjoint
    ones; V > 0.1 is Cohen's "small" effect for one degree of freedom (Cohen 1988, §7.2).
    ``warning`` is set when more than 20% of expected counts are below 5 (Cochran 1954).
    """
    a_vals, a_missing = _categories(a)
    b_vals, b_missing = _categories(b)
    levels = sorted(set(a_vals) | set(b_vals))
    index = {lv: i for i, lv in enumerate(levels)}
    table = np.zeros((2, len(levels)), dtype=float)
    np.add.at(table[0], [index[v] for v in a_vals], 1.0)
    np.add.at(table[1], [index[v] for v in b_vals], 1.0)
    n_a, n_b = table[0].sum(), table[1].sum()
    out: dict = {
        "kind": "categorical",
        "levels": levels,
        "site": {
            "n": int(n_a),
            "missing": int(a_missing),
            "counts": table[0].astype(int).tolist(),
            "proportions": (table[0] / n_a).tolist() if n_a else None,
        },
        "reference": {
            "n": int(n_b),
            "missing": int(b_missing),
            "counts": table[1].astype(int).tolist(),
            "proportions": (table[1] / n_b).tolist() if n_b else None,
        },
        "effect_name": "cramers_v",
    }
    if n_a == 0 or n_b == 0:
        out.update(_none("no non-missing values in a sample", test="chi_square", effect=None))
        return out
    if len(levels) < 2:
        out.update(_none("a single level in both samples", test="chi_square", effect=0.0))
        return out
    n = n_a + n_b
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / n
    chi2 = float(((table - expected) ** 2 / expected).sum())
    df = len(levels) - 1
    out.update(
        {
            "test": "chi_square",
            "statistic": chi2,
            "df": df,
            "p_value": float(special.chdtrc(df, chi2)),
            "effect": math.sqrt(chi2 / n),
        }
    )
    if (expected < _COCHRAN_MIN_EXPECTED).mean() > 0.2:
        out["warning"] = "more than 20% of expected counts below 5: the chi-square p-value is approximate"
    return out


def _categories(values: Sequence) -> tuple[list[str], int]:
    """Non-missing values as level strings, and the number of missing ones (None, NaN, NaT, pd.NA)."""
    import pandas as pd

    s = values if isinstance(values, pd.Series) else pd.Series(list(values))
    missing = s.isna().to_numpy()
    kept = s[~missing]
    if pd.api.types.is_numeric_dtype(kept) and not pd.api.types.is_bool_dtype(kept):
        # 1 and 1.0 are the same level (a column read as float because of a missing value)
        x = kept.to_numpy(float)
        integral = np.isfinite(x) & (np.mod(x, 1.0) == 0.0)
        text = np.where(integral, np.where(integral, x, 0).astype(np.int64).astype(str), x.astype(str))
        return text.tolist(), int(missing.sum())
    return kept.astype(str).tolist(), int(missing.sum())


# --------------------------------------------------------------------------- scores


def population_stability_index(a: np.ndarray, b: np.ndarray, *, bins: int = 10, epsilon: float = PSI_EPSILON) -> dict:
    """Population stability index of scores ``a`` against reference scores ``b``.

    Definition (Siddiqi 2006, Credit Risk Scorecards, ch. 8; Yurdakul 2018, Statistical properties of
    the population stability index): bins are the deciles (``bins`` quantiles, numpy's default type 7)
    of the reference scores, right-closed, (−∞, q₁], (q₁, q₂], …, (q₉, ∞), ties merged into unique
    edges; with proportions r_i (reference) and s_i (site) per bin, each floored at ``epsilon``
    (:data:`PSI_EPSILON`), PSI = Σ (s_i − r_i) · ln(s_i / r_i). Rule of thumb (Siddiqi): below 0.1 stable,
    0.1–0.25 a moderate shift, above 0.25 a major one.
    Returns ``{"psi", "edges", "site", "reference"}`` (the last two: proportions per bin, before flooring).
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    edges = np.unique(np.quantile(b, np.arange(1, bins) / bins))
    # searchsorted(side="left") gives i with edges[i-1] < x <= edges[i]: right-closed bins
    ca = np.bincount(np.searchsorted(edges, a, side="left"), minlength=edges.size + 1) / a.size
    cb = np.bincount(np.searchsorted(edges, b, side="left"), minlength=edges.size + 1) / b.size
    fa, fb = np.maximum(ca, epsilon), np.maximum(cb, epsilon)
    psi = float(np.sum((fa - fb) * np.log(fa / fb)))
    return {"psi": psi, "edges": edges.tolist(), "site": ca.tolist(), "reference": cb.tolist(), "epsilon": epsilon}


def score_shift(a: np.ndarray, b: np.ndarray, *, psi_bins: int = 10) -> dict:
    """Shift of the model's scores (probabilities) between two samples.

    - Two-sample Kolmogorov–Smirnov test, D = sup |F_a − F_b| (``scipy.stats.ks_2samp``, two-sided,
      exact for small samples, asymptotic otherwise). D and its p-value are the same on the logit scale.
    - Population stability index (:func:`population_stability_index`): the ``effect`` used for ranking.
    - Wasserstein-1 distance ∫ |F_a − F_b| (``scipy.stats.wasserstein_distance``), in probability units:
      how far, on average, scores must move to turn one distribution into the other.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    out: dict = {
        "kind": "score",
        "effect_name": "psi",
        "site": {"n": int(a.size), "mean": float(a.mean()) if a.size else None},
        "reference": {"n": int(b.size), "mean": float(b.mean()) if b.size else None},
    }
    if a.size == 0 or b.size == 0:
        out.update(_none("a sample is empty", test="kolmogorov_smirnov", effect=None))
        return out
    ks = stats.ks_2samp(a, b)
    psi = population_stability_index(a, b, bins=psi_bins)
    out.update(
        {
            "test": "kolmogorov_smirnov",
            "statistic": float(ks.statistic),
            "p_value": float(ks.pvalue),
            "ks": float(ks.statistic),
            "psi": psi["psi"],
            "psi_bins": {k: psi[k] for k in ("edges", "site", "reference")},
            "wasserstein": float(stats.wasserstein_distance(a, b)),
            "effect": psi["psi"],
        }
    )
    return out


# --------------------------------------------------------------------------- embeddings


def mmd_permutation_test(
    a: np.ndarray, b: np.ndarray, *, n_permutations: int = 500, seed: int = 0, max_per_sample: int = 500
) -> dict:
    """Two-sample test on multivariate features (e.g. penultimate-layer embeddings): permutation MMD.

    Statistic: the unbiased squared maximum mean discrepancy (Gretton et al. 2012, JMLR 13:723, eq. 3),
    MMD²_u = Σ_{i≠j} k(a_i, a_j)/(m(m−1)) + Σ_{i≠j} k(b_i, b_j)/(n(n−1)) − 2 Σ_{i,j} k(a_i, b_j)/(mn),
    with the Gaussian kernel k(x, y) = exp(−‖x − y‖² / (2σ²)) and σ the median pairwise distance of the
    pooled sample (the median heuristic, Gretton et al. 2012 §8). The p-value is from ``n_permutations``
    random relabellings of the pooled sample, (1 + #{MMD²_perm ≥ MMD²_obs}) / (1 + n_permutations)
    (Phipson & Smyth 2010), which is exact for any sample size. σ is computed on the pooled sample, so
    it is the same under every relabelling. Samples larger than ``max_per_sample`` are subsampled
    (without replacement); everything random comes from ``seed``.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.ndim == 1:
        a = a[:, None]
    if b.ndim == 1:
        b = b[:, None]
    out: dict = {
        "kind": "embedding",
        "test": "mmd_permutation",
        "effect_name": "mmd2",
        "site": {"n": int(a.shape[0])},
        "reference": {"n": int(b.shape[0])},
        "dimensions": int(a.shape[1]),
        "n_permutations": int(n_permutations),
        "seed": int(seed),
    }
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embeddings differ in width: {a.shape[1]} vs {b.shape[1]}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        out.update(_none("embeddings contain missing or non-finite values", effect=None))
        return out
    if a.shape[0] < 2 or b.shape[0] < 2:
        out.update(_none("fewer than 2 cases in a sample", effect=None))
        return out
    rng = np.random.default_rng(seed)
    if a.shape[0] > max_per_sample:
        a = a[rng.choice(a.shape[0], max_per_sample, replace=False)]
    if b.shape[0] > max_per_sample:
        b = b[rng.choice(b.shape[0], max_per_sample, replace=False)]
    m, n = a.shape[0], b.shape[0]
    z = np.vstack([a, b])
    sq = np.einsum("ij,ij->i", z, z)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (z @ z.T), 0.0)
    iu = np.triu_indices(m + n, k=1)
    sigma = float(np.median(np.sqrt(d2[iu])))
    out["bandwidth"] = sigma
    out["site"]["n_used"], out["reference"]["n_used"] = m, n
    if sigma == 0.0:
        out.update(_none("all embeddings identical", effect=0.0))
        return out
    k = np.exp(-d2 / (2.0 * sigma * sigma))
    np.fill_diagonal(k, 0.0)
    total = k.sum()
    # row 0 is the observed labelling; the others are permutations. Sums over blocks via A K A^T.
    labels = np.zeros((n_permutations + 1, m + n))
    labels[0, :m] = 1.0
    for r in range(1, n_permutations + 1):
        labels[r, rng.permutation(m + n)[:m]] = 1.0
    ak = labels @ k
    s_aa = np.einsum("ij,ij->i", ak, labels)
    s_ab = ak.sum(axis=1) - s_aa
    s_bb = total - s_aa - 2.0 * s_ab
    mmd2 = s_aa / (m * (m - 1)) + s_bb / (n * (n - 1)) - 2.0 * s_ab / (m * n)
    observed = float(mmd2[0])
    p = (1.0 + np.sum(mmd2[1:] >= observed - 1e-12 * abs(observed))) / (1.0 + n_permutations)
    out.update({"statistic": observed, "p_value": float(p), "effect": observed})
    return out


# --------------------------------------------------------------------------- histograms


def histogram_shift(a: np.ndarray, b: np.ndarray) -> dict:
    """Descriptive shift of per-case intensity histograms (rows: cases, columns: bins).

    Each case's histogram is normalised to sum 1, then averaged over the cases of a sample. The
    distance is the total variation ½ Σ |h_a − h_b| of the two average histograms (0: identical,
    1: disjoint). No test: pixels of one image are not independent observations, so a pixel-count
    chi-square would be meaningless; per-case intensity statistics carry the tests instead.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)

    def mean_hist(h: np.ndarray) -> np.ndarray | None:
        h = h[np.isfinite(h).all(axis=1)]
        s = h.sum(axis=1, keepdims=True)
        h = h[s[:, 0] > 0] / s[s[:, 0] > 0]
        return h.mean(axis=0) if h.shape[0] else None

    ha, hb = mean_hist(a), mean_hist(b)
    if ha is None or hb is None:
        return {"site": None, "reference": None, "total_variation": None, "reason": "no usable histogram in a sample"}
    return {"site": ha.tolist(), "reference": hb.tolist(), "total_variation": float(0.5 * np.abs(ha - hb).sum())}


# --------------------------------------------------------------------------- multiplicity


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979, Scand J Stat 6:65): controls the family-wise
    error rate under any dependence. With p₍₁₎ ≤ … ≤ p₍ₘ₎, adj₍ᵢ₎ = max_{j≤i} min(1, (m − j + 1) p₍ⱼ₎).
    Equal to statsmodels' ``multipletests(method="holm")``."""
    p = np.asarray(p_values, dtype=float)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p, kind="mergesort")
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj
    return out


def benjamini_hochberg(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values; Benjamini & Hochberg 1995, JRSS B 57:289):
    controls the false discovery rate for independent or positively dependent tests.
    adj₍ᵢ₎ = min_{j≥i} min(1, m p₍ⱼ₎ / j). Equal to statsmodels' ``multipletests(method="fdr_bh")``."""
    p = np.asarray(p_values, dtype=float)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p, kind="mergesort")
    ranked = p[order] * m / np.arange(1, m + 1)
    adj = np.minimum(1.0, np.minimum.accumulate(ranked[::-1])[::-1])
    out = np.empty(m)
    out[order] = adj
    return out
