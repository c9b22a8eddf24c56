"""Calibration: logistic recalibration (intercept, slope), binned errors (ECE, adaptive ECE, MCE),
Hosmer–Lemeshow and Spiegelhalter's z.

Definitions follow DESIGN.md (Metrics JSON) exactly; each docstring names its source.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit
from scipy.stats import chi2, norm

from validate.metrics.checks import as_weights, binary_args, fast_binary_args, logit

_MAX_ITER = 100


def _wald(est: float, se: float, level: float) -> tuple[float, float]:
    z = norm.ppf(0.5 + level / 2)
    return est - z * se, est + z * se


def _loglik(y, eta):
    # log-likelihood of a logistic model, stable for large |eta|: Σ y·eta − Σ log(1 + e^eta), with one
    # per-case temporary
    return float(np.dot(y, eta) - np.sum(np.logaddexp(0.0, eta)))


def calibration_intercept(y, p=None, *, logits=None, level: float = 0.95) -> dict:
    """Calibration-in-the-large: α in logit P(y = 1) = α + logit(p), the slope fixed at 1 (an offset).

    Maximum likelihood by Newton–Raphson on the score equation to full convergence (|step| < 1e-12),
    safeguarded by bisection inside a bracket of the root; Wald interval α ± z √(1 / Σ p̂(1 − p̂)).
    Equal to R's ``glm(y ~ 1 + offset(qlogis(p)), binomial)`` with ``confint.default`` and to statsmodels ``GLM``
    with ``offset`` (Steyerberg, Clinical Prediction Models, 2nd ed., ch. 15; Van Calster et al. 2016).
    ``logits`` may be given instead of ``p`` (avoids the clipping at 1e-15).
    Returns ``{"estimate", "se", "ci_low", "ci_high", "converged", "iterations"}``; NaN estimate if
    ``y`` has one class (no finite maximum).
    """
    y, z = _logit_args(y, p, logits)
    nan = float("nan")
    if y.min() == y.max():
        return {"estimate": nan, "se": nan, "ci_low": nan, "ci_high": nan, "converged": False, "iterations": 0}
    # the score g(α) = Σ y − Σ sigmoid(z + α) falls from Σ y > 0 to Σ y − n < 0: Newton steps kept
    # inside a bracket of the root, bisecting when a step leaves it. Plain Newton from α = 0 overshoots
    # by ~1e18 when the logits saturate (p(1 − p) ~ e^-40), and no step halving brings it back.
    target = float(np.sum(y))
    reach = float(np.max(np.abs(z))) + 50.0  # beyond it every sigmoid(z + α) is within e^-50 of 0 or 1
    lo, hi = -reach, reach
    a = 0.0
    converged = False
    it = 0
    for it in range(1, _MAX_ITER + 1):  # noqa: B007 (read after the loop: the iteration count)
        g = target - float(np.sum(expit(z + a)))
        if g > 0:
            lo = a
        elif g < 0:
            hi = a
        else:
            converged = True
            break
        info = float(np.sum(_bernoulli_variance(z + a)))
        new = a + g / info if info > 0 else np.nan
        if not lo < new < hi:
            new = 0.5 * (lo + hi)
        step, a = new - a, new
        if abs(step) < 1e-12 * max(1.0, abs(a)):
            converged = True
            break
    info = float(np.sum(_bernoulli_variance(z + a)))
    se = float(1.0 / np.sqrt(info)) if info > 0 else nan
    lo, hi = _wald(a, se, level)
    return {"estimate": a, "se": se, "ci_low": lo, "ci_high": hi, "converged": converged, "iterations": it}


def calibration_slope(y, p=None, *, logits=None, level: float = 0.95) -> dict:
    """Calibration slope β (and intercept α) of the logistic recalibration logit P(y = 1) = α + β logit(p).

    Maximum likelihood by Newton–Raphson (IRLS) to full convergence, step halving on a likelihood
    decrease; Wald interval from the inverse observed information. β equals ``Slope`` of R's
    ``rms::val.prob`` (``lrm.fit(logit, y)``), R's ``glm(y ~ qlogis(p), binomial)`` and statsmodels
    ``Logit`` (Cox 1958; Steyerberg ch. 15).
    Returns ``{"estimate", "se", "ci_low", "ci_high", "intercept", "intercept_se", "converged",
    "iterations"}``; not converged (e.g. perfect separation) leaves ``converged`` False.
    """
    y, z = _logit_args(y, p, logits)
    nan = float("nan")
    empty = {
        "estimate": nan,
        "se": nan,
        "ci_low": nan,
        "ci_high": nan,
        "intercept": nan,
        "intercept_se": nan,
        "converged": False,
        "iterations": 0,
    }
    if y.min() == y.max() or np.ptp(z) == 0:
        return empty
    beta = np.array([0.0, 1.0])
    eta = _linear_predictor(z, beta)
    ll = _loglik(y, eta)
    converged = False
    it = 0
    for it in range(1, _MAX_ITER + 1):  # noqa: B007 (read after the loop: the iteration count)
        info, score = _slope_information(y, z, eta)
        try:
            step = np.linalg.solve(info, score)
        except np.linalg.LinAlgError:
            break
        t = 1.0
        while True:
            new = beta + t * step
            eta = _linear_predictor(z, new, out=eta)
            new_ll = _loglik(y, eta)
            if new_ll >= ll - 1e-12 * abs(ll) or t < 1e-10:
                break
            t /= 2
        beta, ll = new, new_ll
        if np.max(np.abs(t * step)) < 1e-12 * max(1.0, np.max(np.abs(beta))):
            converged = True
            break
    info, _ = _slope_information(y, z, _linear_predictor(z, beta, out=eta))
    try:
        cov = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        return {**empty, "estimate": float(beta[1]), "intercept": float(beta[0]), "iterations": it}
    # a numerically singular information matrix (separation) can leave a negative variance: the
    # standard error is then undefined (NaN, reported as null), not a warning on the console
    with np.errstate(invalid="ignore"):
        se = float(np.sqrt(cov[1, 1]))
        intercept_se = float(np.sqrt(cov[0, 0]))
    lo, hi = _wald(float(beta[1]), se, level)
    return {
        "estimate": float(beta[1]),
        "se": se,
        "ci_low": lo,
        "ci_high": hi,
        "intercept": float(beta[0]),
        "intercept_se": intercept_se,
        "converged": converged and np.isfinite(se),
        "iterations": it,
    }


def _linear_predictor(z: np.ndarray, beta: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """α + β z into ``out`` (one per-case array, reused across iterations)."""
    out = np.multiply(z, beta[1], out=out)
    out += beta[0]
    return out


def _slope_information(y: np.ndarray, z: np.ndarray, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Observed information X'WX and score X'(y − μ) of the logistic recalibration at ``eta``,
    X = [1, z], W = diag(μ(1 − μ)) (:func:`_bernoulli_variance`), μ = sigmoid(eta): as sums over the
    cases with two per-case arrays, no (n, 2) design matrix or its weighted copy."""
    w = _bernoulli_variance(eta)
    wz = w * z
    info = np.array([[w.sum(), wz.sum()], [0.0, float(np.dot(wz, z))]])
    info[1, 0] = info[0, 1]
    del w, wz
    resid = expit(eta)
    np.subtract(y, resid, out=resid)
    return info, np.array([resid.sum(), float(np.dot(z, resid))])


def _bernoulli_variance(x: np.ndarray) -> np.ndarray:
    """p(1 − p) at p = sigmoid(x), as sigmoid(x)·sigmoid(−x): 1 − p is exactly 0 in float64 for
    x above ~36.7, which made the information of a saturated model 0 (a division by zero)."""
    return expit(x) * expit(-x)


def _logit_args(y, p, logits):
    if (p is None) == (logits is None):
        raise ValueError("give exactly one of p or logits")
    if logits is not None:
        y, z = binary_args(y, logits, probabilities=False)
        return y, z
    y, p = binary_args(y, p)
    return y, logit(p)


# ---------------------------------------------------------------- binned calibration errors


def bin_edges(bins: int) -> np.ndarray:
    """The ``bins + 1`` equal-width edges k / B on [0, 1] (float64), for plotting and reports."""
    if int(bins) < 1:
        raise ValueError("bins must be a positive integer")
    return np.linspace(0.0, 1.0, int(bins) + 1)


def bin_index(p: np.ndarray, bins: int) -> np.ndarray:
    """Index of the right-closed bin (k/B, (k+1)/B] holding each p, with p = 0 in the first bin:
    ceil(p·B) − 1 with p·B rounded to float64, clipped to [0, B − 1]. There is no extra bin for p = 1."""
    t = np.multiply(p, bins)
    np.ceil(t, out=t)
    idx = t.astype(np.intp)
    idx -= 1
    np.maximum(idx, 0, out=idx)
    return idx


def reliability_bins(y, p, *, bins: int = 15) -> dict:
    """Per-bin counts, mean predicted probability and observed frequency on the equal-width right-closed
    bins of :func:`ece` (empty bins have count 0 and NaN means). For reliability diagrams."""
    y, p = binary_args(y, p)
    idx = bin_index(p, bins)
    n = np.bincount(idx, minlength=bins).astype(np.float64)
    sp = np.bincount(idx, weights=p, minlength=bins)
    sy = np.bincount(idx, weights=y, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"edges": bin_edges(bins), "count": n, "mean_p": sp / n, "mean_y": sy / n}


def ece(y, p, *, bins: int = 15) -> float:
    """Expected calibration error: Σ_b (n_b / N) |ȳ_b − p̄_b| over ``bins`` equal-width bins on [0, 1],
    right-closed (k/B, (k+1)/B] with p = 0 in the first bin (bin = ceil(p·B) − 1 in float64), float64
    sums, empty bins skipped (Naeini et al. 2015; Guo et al. 2017). Unlike some libraries there is no
    extra bin for p = 1. For a binary model ``p`` is P(y = 1) and ``y`` the 0/1 label; for top-label
    ECE pass the confidence and whether the prediction was correct.

    One pass per step, sized for 10^7 cases: Σ_b |Σ(y − p)| / N equals the count-weighted form.
    """
    y, p = fast_binary_args(y, p)
    t = np.multiply(p, bins)
    np.ceil(t, out=t)
    # ceil(p·B) is 0 only for p = 0, which belongs to the first bin: merge the two slots after counting
    d = np.bincount(t.astype(np.intp), weights=y - p, minlength=bins + 1)
    d[1] += d[0]
    return float(np.abs(d[1:]).sum() / y.size)


def mce(y, p, *, bins: int = 15) -> float:
    """Maximum calibration error: max over non-empty equal-width bins (as :func:`ece`) of |ȳ_b − p̄_b|
    (Naeini et al. 2015)."""
    y, p = binary_args(y, p)
    idx = bin_index(p, bins)
    n = np.bincount(idx, minlength=bins)
    d = np.bincount(idx, weights=y - p, minlength=bins)
    keep = n > 0
    return float(np.max(np.abs(d[keep]) / n[keep]))


def adaptive_groups(n: int, bins: int) -> np.ndarray:
    """Sizes of the equal-mass groups of :func:`ece_adaptive` (``np.array_split``: the first n mod B
    groups hold one more case)."""
    base, extra = divmod(n, bins)
    return np.array([base + 1] * extra + [base] * (bins - extra), dtype=np.int64)


def ece_adaptive(y, p, *, bins: int = 15) -> float:
    """Adaptive (equal-mass) ECE: cases sorted by p (stable), cut into ``bins`` consecutive groups of
    equal size (``np.array_split`` sizes), then Σ_g (n_g / N) |ȳ_g − p̄_g| (Nixon et al. 2019,
    "Measuring calibration in deep learning"). Tied p values may fall in adjacent groups."""
    y, p = binary_args(y, p)
    return float(weighted_ece_adaptive(y, p, None, bins=bins))


def hosmer_lemeshow(y, p) -> dict:
    """Hosmer–Lemeshow goodness-of-fit test (Hosmer & Lemeshow 1980).

    Groups: p cut at its unique deciles (type-7 quantiles, ``quantile(p, 0:10/10)`` in R), intervals
    right-closed with the lowest value included (R ``cut(..., include.lowest = TRUE)``); empty groups
    are dropped. Statistic Σ_g (O_g − E_g)² / (E_g (1 − E_g / n_g)) with O the events and E = Σ p;
    df = groups formed − 2; p-value from χ²(df) (None when df < 1).
    Returns ``{"statistic", "df", "p_value", "groups"}``.
    """
    y, p = binary_args(y, p)
    breaks = np.unique(np.quantile(p, np.linspace(0.0, 1.0, 11)))
    if breaks.size < 2:
        g = np.zeros(p.size, dtype=np.intp)
        ngroups = 1
    else:
        g = np.searchsorted(breaks, p, side="left") - 1
        np.clip(g, 0, breaks.size - 2, out=g)
        ngroups = breaks.size - 1
    n = np.bincount(g, minlength=ngroups).astype(np.float64)
    o = np.bincount(g, weights=y, minlength=ngroups)
    e = np.bincount(g, weights=p, minlength=ngroups)
    keep = n > 0
    n, o, e = n[keep], o[keep], e[keep]
    with np.errstate(invalid="ignore", divide="ignore"):
        stat = float(np.sum((o - e) ** 2 / e + ((n - o) - (n - e)) ** 2 / (n - e)))
    groups = int(keep.sum())
    df = groups - 2
    pval = float(chi2.sf(stat, df)) if df >= 1 and np.isfinite(stat) else None
    return {"statistic": stat if np.isfinite(stat) else None, "df": df, "p_value": pval, "groups": groups}


def spiegelhalter_z(y, p) -> dict:
    """Spiegelhalter's z test of calibration (Spiegelhalter 1986), as ``S:z`` / ``S:p`` of R's
    ``rms::val.prob``: z = Σ (y − p)(1 − 2p) / √Σ (1 − 2p)² p (1 − p), two-sided p = 2 Φ(−|z|).
    Returns ``{"statistic", "p_value"}`` (None when the denominator is 0, e.g. all p ∈ {0, 1/2, 1})."""
    y, p = binary_args(y, p)
    den = np.sqrt(np.sum((1 - 2 * p) ** 2 * p * (1 - p)))
    if not den > 0:
        return {"statistic": None, "p_value": None}
    z = float(np.sum((y - p) * (1 - 2 * p)) / den)
    return {"statistic": z, "p_value": float(2 * norm.sf(abs(z)))}


# ---------------------------------------------------------------- weighted forms (bootstrap)


def weighted_ece(
    y: np.ndarray, p: np.ndarray, w, *, bins: int = 15, kind: str = "ece", idx: np.ndarray | None = None
) -> np.ndarray:
    """ECE (``kind="ece"``) or MCE (``kind="mce"``) with frequency weights of shape (n,) or (r, n).

    One bin assignment for all replicates; per-bin sums are a matrix product with the bin indicator,
    so r replicates cost one pass over the (r, n) weights. Equals :func:`ece`/:func:`mce` of the
    expanded sample for integer weights."""
    w = np.atleast_2d(as_weights(w, y.size))
    if idx is None:
        idx = bin_index(p, bins)
    # sparse indicator product: columns [y - p per bin, count per bin]
    order = np.argsort(idx, kind="stable")
    starts = np.flatnonzero(np.r_[True, idx[order][1:] != idx[order][:-1]])
    ws = w[:, order]
    d = np.add.reduceat(ws * (y - p)[order], starts, axis=1)
    if kind == "ece":
        return np.abs(d).sum(axis=1) / w.sum(axis=1)
    cnt = np.add.reduceat(ws, starts, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = np.where(cnt > 0, np.abs(d) / np.where(cnt > 0, cnt, 1.0), -np.inf)
    out = gap.max(axis=1)
    return np.where(np.isfinite(out), out, np.nan)


def weighted_ece_adaptive(
    y: np.ndarray, p: np.ndarray, w, *, bins: int = 15, order: np.ndarray | None = None
) -> np.ndarray:
    """Adaptive ECE with frequency weights (n,) or (r, n): a case of weight k occupies k consecutive
    positions of the sorted sample, groups are ``np.array_split`` of the positions, and a case straddling
    two groups is shared between them in proportion, so integer weights equal the expanded sample."""
    squeeze = w is None or np.ndim(w) == 1
    w = np.atleast_2d(as_weights(w, y.size))
    if order is None:
        order = np.argsort(p, kind="stable")
    out = ece_adaptive_sorted(np.asarray(y, dtype=np.float64)[order], p[order], np.ascontiguousarray(w[:, order]), bins)
    return out[0] if squeeze else out


ADAPTIVE_BLOCK = 256
ADAPTIVE_RUN = 1 << 15  # cases whose (1, y, p) rows are formed at once (768 KB)


def ece_adaptive_sorted(
    ys: np.ndarray, ps: np.ndarray, ws: np.ndarray, bins: int, block: int = ADAPTIVE_BLOCK
) -> np.ndarray:
    """:func:`weighted_ece_adaptive` of cases already sorted by p, weights (r, n) C-contiguous.

    The group edges depend on each replicate's cumulative weight, but only at bins − 1 positions: the
    cases are cut into blocks of ``block``; one batched matrix product gives every block's sums of
    (w, w·y, w·p), their cumulative sums locate the block of each edge, and only that block is
    cumulated case by case. One pass over the weights instead of three full cumulative sums."""
    r, n = ws.shape
    L = int(block)
    nb, tail = divmod(n, L)
    parts = []
    if nb:
        s0, s1 = ws.strides
        ws3 = np.lib.stride_tricks.as_strided(ws, (r, nb, L), (s0, L * s1, s1), writeable=False)
        # (1, y, p) of a cache-sized run of blocks at a time: no (n, 3) copy of the cases per call
        step = max(1, ADAPTIVE_RUN // L)
        M = np.empty((min(nb, step) * L, 3))
        M[:, 0] = 1.0
        sums = np.empty((nb, r, 3))
        for b0 in range(0, nb, step):
            b1 = min(nb, b0 + step)
            m = M[: (b1 - b0) * L]
            m[:, 1] = ys[b0 * L : b1 * L]
            m[:, 2] = ps[b0 * L : b1 * L]
            np.matmul(ws3[:, b0:b1].transpose(1, 0, 2), m.reshape(b1 - b0, L, 3), out=sums[b0:b1])
        parts.append(sums.transpose(1, 0, 2))
    if tail:
        M = np.column_stack([np.ones(n - nb * L), ys[nb * L :], ps[nb * L :]])
        parts.append((ws[:, nb * L :] @ M)[:, None, :])
    S = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]  # (r, NB, 3) block sums
    NB = S.shape[1]
    ends = np.cumsum(S, axis=1)
    starts = ends - S
    total = ends[:, -1, 0]
    # group edges in position space for each replicate (array_split sizes of round(total))
    tot_int = np.rint(total).astype(np.int64)
    base, extra = np.divmod(tot_int, bins)
    k = np.arange(1, bins)
    inner = (k[None, :] * base[:, None] + np.minimum(k[None, :], extra[:, None])).astype(np.float64)  # (r, E)
    rows = np.arange(r)[:, None, None]
    lane = np.arange(L)
    # j = #cases with cumulative weight <= edge: whole blocks first, then within the next block
    nfull = (ends[:, None, :, 0] <= inner[:, :, None]).sum(axis=2)  # (r, E)
    kb = np.minimum(nfull, NB - 1)
    idx = kb[:, :, None] * L + lane  # (r, E, L)
    inside = idx < n
    g = np.where(inside, ws[rows, np.minimum(idx, n - 1)], 0.0)
    run = np.take_along_axis(starts[:, :, 0], kb, axis=1)[:, :, None] + np.cumsum(g, axis=2)
    j = np.where(nfull >= NB, n, nfull * L + (inside & (run <= inner[:, :, None])).sum(axis=2))
    jc = np.minimum(j, n - 1)
    # inclusive prefix sums of (w, w·y, w·p) at case q = jc − 1
    q = np.maximum(jc - 1, 0)
    qb = q // L
    idx = qb[:, :, None] * L + lane
    g = np.where(lane <= (q - qb * L)[:, :, None], ws[rows, np.minimum(idx, n - 1)], 0.0)
    mi = np.minimum(idx, n - 1)
    pre_w = np.take_along_axis(starts[:, :, 0], qb, axis=1) + g.sum(axis=2)
    pre_y = np.take_along_axis(starts[:, :, 1], qb, axis=1) + (g * ys[mi]).sum(axis=2)
    pre_p = np.take_along_axis(starts[:, :, 2], qb, axis=1) + (g * ps[mi]).sum(axis=2)
    has = j > 0
    prev_w = np.where(has, pre_w, 0.0)
    prev_y = np.where(has, pre_y, 0.0)
    prev_p = np.where(has, pre_p, 0.0)
    frac = inner - prev_w
    fy = prev_y + frac * ys[jc]
    fp = prev_p + frac * ps[jc]
    fy = np.concatenate([np.zeros((r, 1)), fy, ends[:, -1, 1:2]], axis=1)
    fp = np.concatenate([np.zeros((r, 1)), fp, ends[:, -1, 2:3]], axis=1)
    d = np.diff(fy, axis=1) - np.diff(fp, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs(d).sum(axis=1) / total


def _ece_adaptive_cumsum(y: np.ndarray, p: np.ndarray, w, *, bins: int = 15) -> np.ndarray:
    """The former full-cumulative-sum form of :func:`weighted_ece_adaptive` (w (r, n)), kept as the
    reference the blocked kernel is tested against."""
    w = np.atleast_2d(as_weights(w, y.size))
    order = np.argsort(p, kind="stable")
    ws = w[:, order]
    ys, ps = y[order], p[order]
    r, n = ws.shape
    cw = np.cumsum(ws, axis=1)
    total = cw[:, -1]
    cy = np.cumsum(ws * ys, axis=1)
    cp = np.cumsum(ws * ps, axis=1)
    tot_int = np.rint(total).astype(np.int64)
    base, extra = np.divmod(tot_int, bins)
    k = np.arange(1, bins)
    inner = k[None, :] * base[:, None] + np.minimum(k[None, :], extra[:, None])
    inner = inner.astype(np.float64)
    off = (np.arange(r) * (total.max() + 1.0))[:, None]
    j = np.searchsorted((cw + off).ravel(), (inner + off).ravel(), side="right").reshape(r, bins - 1)
    j -= (np.arange(r) * n)[:, None]
    jc = np.minimum(j, n - 1)
    rows = np.arange(r)[:, None]
    prev_w = np.where(j > 0, cw[rows, np.maximum(jc - 1, 0)], 0.0)
    prev_y = np.where(j > 0, cy[rows, np.maximum(jc - 1, 0)], 0.0)
    prev_p = np.where(j > 0, cp[rows, np.maximum(jc - 1, 0)], 0.0)
    frac = inner - prev_w
    fy = prev_y + frac * ys[jc]
    fp = prev_p + frac * ps[jc]
    fy = np.concatenate([np.zeros((r, 1)), fy, cy[:, -1:]], axis=1)
    fp = np.concatenate([np.zeros((r, 1)), fp, cp[:, -1:]], axis=1)
    d = np.diff(fy, axis=1) - np.diff(fp, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs(d).sum(axis=1) / total
