"""Smoothed calibration curves: R's ``lowess`` (clowess) for Eavg/E50/E90/Emax and ``loess`` for ICI.

``clowess`` ports the algorithm of R's C function ``clowess`` (R ``stats``, src/library/stats/src/
lowess.c; Cleveland 1979, 1981) restricted to what ``rms::val.prob`` uses (no robustness iterations):
the same fit points, windows, weights and interpolation, with the local fits vectorised.
``loess_smooth`` ports R's ``loess`` for one predictor (see its docstring for what is matched). Both
agree with R to ~1e-12 (tests/test_metrics_r.py). Bootstrap replicates of these errors are computed
from case counts by :mod:`validate.metrics.smooth_bootstrap`.
"""

from __future__ import annotations

import numpy as np

from validate.metrics.checks import binary_args


def clowess(x, y, *, f: float = 2.0 / 3.0, delta: float | None = None) -> np.ndarray:
    """Lowess smooth of ``y`` on sorted ``x`` with no robustness iterations (R ``lowess(x, y, f, iter = 0,
    delta)`` on sorted input; Cleveland 1979). ``delta`` defaults to 1% of the range of x, as R.

    The algorithm of R's C ``clowess``: a tricube-weighted local line is fitted at x[0]; after each fit
    the next fit is at the last point within ``delta`` of it (at least the next point), points skipped
    in between are interpolated linearly, and ties of a fitted x share its value. The neighbourhood
    holds ns = max(2, min(n, floor(f n + 1e-7))) points and is moved right while that shrinks its radius
    h; weights are 1 within 0.001 h, (1 − (r/h)³)³ up to 0.999 h and 0 beyond; the line is the weighted
    mean unless the weighted spread of x exceeds 0.001 · range(x). As the fit positions and windows
    depend on x only, they are found first and the local fits computed together.
    ``x`` must be sorted ascending (``np.argsort(x, kind="stable")`` as R's ``order``).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = x.size
    if n < 2:
        return y.copy()
    if delta is None:
        delta = 0.01 * (x[-1] - x[0])
    ns = max(2, min(n, int(f * n + 1e-7)))
    fits, ends = _fit_positions(x, delta)
    nleft = _window_starts(x, fits, ns)
    ys_fit, ok = _local_lines(x, y, fits, nleft, ns)
    ys_fit = np.where(ok, ys_fit, y[fits])
    return _fill_between_fits(x, fits, ends, ys_fit)


def _fill_between_fits(x, fits, ends, ys_fit, piece: int = 1 << 16) -> np.ndarray:
    """The fitted value at every index: fits and their ties exactly, skipped points interpolated between
    the previous fit's last tie and the next fit (C: alpha * ys[i] + (1 - alpha) * ys[last]), a run of
    skipped points ``piece`` indices at a time (no per-case index arrays)."""
    ys = np.empty(x.size)
    for k in range(fits.size):
        last = int(ends[k])
        ys[fits[k] : last + 1] = ys_fit[k]
        if k + 1 == fits.size:
            break
        nxt = int(fits[k + 1])
        denom = x[nxt] - x[last]
        for g0 in range(last + 1, nxt, piece):
            g = slice(g0, min(nxt, g0 + piece))
            alpha = (x[g] - x[last]) / denom
            ys[g] = alpha * ys_fit[k + 1] + (1.0 - alpha) * ys_fit[k]
    return ys


def _fit_positions(x: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices where clowess fits a local line, and the last tie of each (found per fit: with delta
    1% of the range there are at most ~200 fits, however many cases)."""
    n = x.size
    fits, ends = [], []
    i = 0
    while True:
        last = int(np.searchsorted(x, x[i], side="right")) - 1
        fits.append(i)
        ends.append(last)
        if last >= n - 1:
            break
        i = max(last + 1, int(np.searchsorted(x, x[i] + delta, side="right")) - 1)
    return np.asarray(fits, dtype=np.int64), np.asarray(ends, dtype=np.int64)


def _window_starts(x: np.ndarray, fits: np.ndarray, ns: int) -> np.ndarray:
    """nleft of each fit: the first k <= n - ns with x[i] - x[k] <= x[k + ns] - x[i] (the C code moves
    the window right while that fails; the predicate is monotone in k and in i)."""
    n = x.size
    xi = x[fits]
    lo = np.zeros(fits.size, dtype=np.int64)
    hi = np.full(fits.size, n - ns, dtype=np.int64)
    while True:
        active = lo < hi
        if not active.any():
            return lo
        mid = (lo + hi) // 2
        move = (xi - x[mid]) > (x[np.minimum(mid + ns, n - 1)] - xi)
        lo = np.where(active & move, mid + 1, lo)
        hi = np.where(active & ~move, mid, hi)


# columns per block of a window wider than the chunk: its dozen temporaries stay in cache (measured at
# 1M cases: 4.7 s for the lowess fits in blocks of 2^16 columns, 6.7 s in blocks of 2^18)
_COLUMN_BLOCK = 1 << 16


def _local_lines(x, y, fits, nleft, ns, max_cells: int = 1 << 18):
    """C ``lowest`` at every fit position, vectorised over fits in chunks of about ``max_cells`` window
    cells (a few MB of temporaries whatever n; a window wider than that is summed in column blocks).
    Returns (ys, ok)."""
    n = x.size
    rng = x[-1] - x[0]
    xs_all = x[fits]
    nright = nleft + ns - 1
    h_all = np.maximum(xs_all - x[nleft], x[nright] - xs_all)
    # the C walk covers j >= nleft with |x_j - xs| <= 0.999 h; bound the columns by x <= xs + h
    stop_all = np.minimum(np.searchsorted(x, xs_all + h_all, side="right") + 1, n)
    out = np.empty(fits.size)
    ok = np.ones(fits.size, dtype=bool)
    start = 0
    while start < fits.size:
        width = int(stop_all[start] - nleft[start])
        per = max(1, max_cells // max(width, 1))
        sl = slice(start, min(fits.size, start + per))
        start = sl.stop
        win = (x, xs_all[sl][:, None], h_all[sl][:, None], nleft[sl], stop_all[sl])
        w_max = int((stop_all[sl] - nleft[sl]).max())
        if w_max <= max_cells:
            out[sl], ok[sl] = _lines_one_block(win, y, w_max, rng)
        else:
            out[sl], ok[sl] = _lines_in_column_blocks(win, y, w_max, rng, min(max_cells, _COLUMN_BLOCK))
    return out, ok


def _tricube_block(win, c0: int, c1: int):
    """Columns c0..c1 of the fits' windows: case indices, their x and C ``lowest``'s weights (1 within
    0.001 h, tricube up to 0.999 h, 0 beyond and past the window's end)."""
    x, xs, h, nl, st = win
    cols = nl[:, None] + np.arange(c0, c1)[None, :]
    inside_cols = cols < st[:, None]
    cols = np.minimum(cols, x.size - 1)
    xw = x[cols]
    r = np.abs(xw - xs)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = r / h
    q = q * q * q
    t = 1.0 - q
    w = np.where(inside_cols & (r <= 0.999 * h), np.where(r <= 0.001 * h, 1.0, t * t * t), 0.0)
    return cols, xw, w


def _slope(xs, h, ax, c, rng):
    """The local line's slope factor b of C ``lowest`` (0: the weighted mean) from the weighted mean ax
    and weighted spread c of x."""
    slope_ok = (h[:, 0] > 0) & (np.sqrt(c) > 0.001 * rng)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(slope_ok, (xs[:, 0] - ax) / np.where(slope_ok, c, 1.0), 0.0)


def _lines_one_block(win, y, w_max, rng):
    """The local lines of fits whose windows fit one block: normalised weights w, ax = Σ w x,
    c = Σ w (x − ax)², value Σ w (b (x − ax) + 1) y."""
    xs, h = win[1], win[2]
    cols, xw, w = _tricube_block(win, 0, w_max)
    a = w.sum(axis=1)
    good = a > 0
    a = np.where(good, a, 1.0)
    w = w / a[:, None]
    ax = (w * xw).sum(axis=1)
    c = (w * (xw - ax[:, None]) ** 2).sum(axis=1)
    b = _slope(xs, h, ax, c, rng)
    w = w * (b[:, None] * (xw - ax[:, None]) + 1.0)
    return (w * y[cols]).sum(axis=1), good


def _lines_in_column_blocks(win, y, w_max, rng, block):
    """As :func:`_lines_one_block` for windows wider than ``block`` columns, in two passes over column
    blocks: Σ w and Σ w x first (ax), then Σ w (x − ax)², Σ w y and Σ w (x − ax) y, so that the
    value is (Σ w y + b Σ w (x − ax) y) / Σ w. The same sums in another order (~1e-15 relative)."""
    xs, h = win[1], win[2]
    k = xs.shape[0]
    a, sx, c, sy, sxy = (np.zeros(k) for _ in range(5))
    for c0 in range(0, w_max, block):
        _, xw, w = _tricube_block(win, c0, min(w_max, c0 + block))
        a += w.sum(axis=1)
        sx += (w * xw).sum(axis=1)
    good = a > 0
    a = np.where(good, a, 1.0)
    ax = sx / a
    for c0 in range(0, w_max, block):
        cols, xw, w = _tricube_block(win, c0, min(w_max, c0 + block))
        d = xw - ax[:, None]
        wy = w * y[cols]
        c += (w * d * d).sum(axis=1)
        sy += wy.sum(axis=1)
        sxy += (wy * d).sum(axis=1)
    b = _slope(xs, h, ax, c / a, rng)
    return (sy + b * sxy) / a, good


def _interp_ties_mean(xs_sorted, fit_sorted, xout):
    """R ``approx(x, y, xout, ties = mean)``: average the fitted values of tied x, then interpolate.
    ``xs_sorted`` ascending: the runs of ties start where x changes (as ``np.unique`` finds them,
    without its sorted copies)."""
    start = np.flatnonzero(np.r_[True, xs_sorted[1:] != xs_sorted[:-1]])
    if start.size == xs_sorted.size:  # no ties: each mean is the value itself
        return np.interp(xout, xs_sorted, fit_sorted)
    ux = xs_sorted[start]
    uy = np.add.reduceat(fit_sorted, start)
    uy /= np.diff(start, append=xs_sorted.size)
    del start
    return np.interp(xout, ux, uy)


def lowess_calibration(y, p) -> dict:
    """Eavg, E50, E90 and Emax: mean, median, 90th percentile (type 7) and maximum of |p − s(p)|, where
    s is R's ``lowess(p, y, iter = 0)`` (f = 2/3, delta = 1% of the range of p) evaluated at each p with
    ``approx(..., ties = mean)`` — exactly as ``rms::val.prob`` computes Eavg/E90/Emax (Harrell;
    Austin & Steyerberg 2019). E50 is the median of the same errors.
    Returns ``{"eavg", "e50", "e90", "emax"}``.
    """
    y, p = binary_args(y, p)
    return _lowess_errors(y, p)


def _lowess_errors(y, p):
    if np.ptp(p) == 0:
        # rms::val.prob's single-probability branch: the smooth is the observed rate
        e = np.full(p.size, abs(p[0] - y.mean()))
    else:
        order = np.argsort(p, kind="stable")
        xs = p[order]
        fit = clowess(xs, y[order])
        del order  # each per-case array is let go once used: this runs on whole blocks
        # evaluated at the sorted probabilities: the same errors as at p in the cases' own order (a
        # permutation; mean, quantiles and maximum do not see the order), and a sorted query is one
        # linear pass where an unsorted one is a cache-missing binary search per case
        e = _interp_ties_mean(xs, fit, xs)
        del fit
        np.subtract(xs, e, out=e)
        del xs
        np.abs(e, out=e)
    return {
        "eavg": float(e.mean()),
        "e50": float(np.quantile(e, 0.5)),
        "e90": float(np.quantile(e, 0.9)),
        "emax": float(e.max()),
    }


# ---------------------------------------------------------------- loess (R's stats::loess, one predictor)


def _loess_vertex_fit(xs, ys, q, nf, span, degree, piece: int = 1 << 16):
    """Local polynomial at vertex ``q`` as R's ``ehg127``: the nf nearest points (squared distance below
    the nf-th smallest gets tricube weight; ties at the radius get weight 0), weighted least squares on
    columns 1, (x − q), (x − q)² with equilibrated columns and an SVD pseudo-inverse (singular values
    below 100·eps·σ₁ dropped). Returns (value, slope) at q.

    ``xs`` sorted (``ys`` alongside): the squared distances fall then rise along it, so the nf-th
    smallest is found by bisection and the neighbours are one run of cases. The least-squares problem
    is reduced ``piece`` rows at a time to the triangular factor R of [B | w y] (Householder QR of the
    stacked factors; B = Q R, so B's column norms and singular values are R's): the same pseudo-inverse
    solution as of B itself up to rounding, in memory independent of n."""
    lo, hi = _nearest_run(xs, q, nf)
    rho = max(_sq(xs, lo, q), _sq(xs, hi - 1, q)) * max(1.0, span)
    if not rho > 0:
        raise ValueError("loess: span too small (all neighbours at one point)")
    lo, hi = _closer_than(xs, q, rho, lo, hi)
    k = 3 if degree >= 2 else 2
    R: np.ndarray = np.zeros((0, k + 1))
    for c0 in range(lo, hi, piece):
        xd = xs[c0 : min(hi, c0 + piece)] - q
        w = np.sqrt(xd * xd / rho)
        w = np.sqrt((1.0 - w**3) ** 3)
        cols = [w, w * xd] + ([w * xd * xd] if degree >= 2 else [])
        block = np.column_stack([*cols, w * ys[c0 : c0 + xd.size]])
        R = np.asarray(np.linalg.qr(np.vstack([R, block]), mode="r"))
    scal = np.sqrt((R[:, :k] ** 2).sum(axis=0))
    scal[scal == 0] = 1.0
    coef, *_ = np.linalg.lstsq(R[:, :k] / scal, R[:, k], rcond=100 * np.finfo(float).eps)
    coef = coef / scal
    return coef[0], (coef[1] if degree >= 1 else 0.0)


def _sq(xs, i, q) -> float:
    d = xs[i] - q
    return float(d * d)


def _nearest_run(xs, q, nf) -> tuple[int, int]:
    """[lo, lo + nf): the nf indices of sorted ``xs`` nearest q by squared distance (its largest is the
    nf-th smallest squared distance: below the vertex the distances fall, above they rise, so the
    nf-th smallest of the two sorted runs is found by bisection on how many come from below)."""
    m = int(np.searchsorted(xs, q, side="left"))
    below, above = m, xs.size - m  # below: indices m-1, m-2, ... ; above: m, m+1, ...
    a, b = max(0, nf - above), min(nf, below)
    while a < b:  # the fewest taken from below with the next one below no closer than the last above
        i = (a + b) // 2
        if _sq(xs, m - 1 - i, q) < _sq(xs, m + nf - i - 1, q):
            a = i + 1
        else:
            b = i
    return m - a, m - a + nf


def _closer_than(xs, q, rho, lo, hi) -> tuple[int, int]:
    """The run of indices with (x − q)² < rho: within [lo, hi) widened by any farther equal points,
    found by bisection on either side of the vertex (squared distance is monotone on each)."""
    m = int(np.clip(np.searchsorted(xs, q, side="left"), lo, hi))
    a, b = 0, m  # first index below m with distance < rho
    while a < b:
        i = (a + b) // 2
        if _sq(xs, i, q) < rho:
            b = i
        else:
            a = i + 1
    start = a
    a, b = m, xs.size  # first index at or above m with distance >= rho
    while a < b:
        i = (a + b) // 2
        if _sq(xs, i, q) < rho:
            a = i + 1
        else:
            b = i
    return start, a


def _kd_splits(xs, fc):
    """Split points of R's loess k-d tree in one dimension (``ehg124``): a cell of sorted positions
    l..u (1-based) with more than fc points splits at its median order statistic m = floor((l+u)/2),
    moved to the nearest position (offsets 0, +1, −1, +2, ...) where x[m] < x[m+1] so that ties go to
    the upper cell; a split on a cell boundary makes a leaf. Cells are processed breadth first."""
    lo_v, hi_v = _bounding_box(xs)
    cells = [(1, xs.size, lo_v, hi_v)]
    splits = []
    p = 0
    nvmax = max(200, xs.size)
    nv = 2
    while p < len(cells):
        l, u, vl, vu = cells[p]
        p += 1
        leaf = (u - l + 1) <= fc or (vu - vl) <= 0.0 or nvmax < nv + 1 or nvmax < len(cells) + 2
        if leaf:
            continue
        m = (l + u) // 2
        offset = 0
        while not (m + offset >= u or m + offset < l):
            if xs[m + offset - 1] == xs[m + offset]:  # 1-based x[m+off] == x[m+off+1]
                offset = -offset
                if offset >= 0:
                    offset += 1
            else:
                m = m + offset
                break
        t = xs[m - 1]
        if vl == t or vu == t:
            continue
        splits.append(t)
        nv += 1
        cells.append((l, m, vl, t))
        cells.append((m + 1, u, t, vu))
    return splits, lo_v, hi_v


def _bounding_box(xs):
    alpha, beta = xs[0], xs[-1]
    mu = 0.005 * max(beta - alpha, 1e-10 * max(abs(alpha), abs(beta)) + 1e-30)
    return alpha - mu, beta + mu


def loess_smooth(x, y, *, span: float = 0.75, degree: int = 2, xout=None, cell: float = 0.2) -> np.ndarray:
    """R's ``loess(y ~ x, span, degree, family = "gaussian")`` fitted values for one predictor, with
    R's default ``surface = "interpolate"`` (Cleveland & Grosse 1991; R ``stats`` loessf.f).

    What is ported: the k-d tree (bounding box widened by 0.5% of the range, cells of at most
    floor(n · span · cell) points split at the median with ties to the upper cell), local fits at the
    vertices (nf = floor(n · span) nearest points, tricube weights on distance / distance of the nf-th,
    degree-2 weighted least squares with R's equilibration and pseudo-inverse tolerance) giving value and
    slope, and cubic Hermite interpolation between the vertices of the cell holding each point
    (``ehg128``). This equals R's fitted values to rounding (~1e-12), checked against R in
    tests/r/conformance.R. ``x`` need not be sorted; returns the fit at ``xout`` (default: at x).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = x.size
    order = np.argsort(x, kind="stable")
    xs = x[order]
    nf = min(n, int(np.floor(n * span)))
    if nf < degree + 2:
        raise ValueError(f"loess: span {span} leaves {nf} points per fit, too few for degree {degree}")
    fc = int(np.floor(n * (span * cell)))
    splits, lo_v, hi_v = _kd_splits(xs, fc)
    verts = np.array(sorted([lo_v, hi_v] + splits))
    vals = np.empty(verts.size)
    slopes = np.empty(verts.size)
    ys = y[order]
    del order
    for k, q in enumerate(verts):
        vals[k], slopes[k] = _loess_vertex_fit(xs, ys, q, nf, span, degree)
    del xs, ys
    z = x if xout is None else np.asarray(xout, dtype=np.float64)
    return _hermite(verts, vals, slopes, z)


def _hermite(verts, vals, slopes, z, piece: int = 1 << 16):
    """Cubic Hermite interpolation on the leaf cell holding z (a point on a split belongs to the lower
    cell, as R descends with z <= xi), ``piece`` points at a time (its temporaries are a dozen arrays)."""
    z = np.asarray(z, dtype=np.float64)
    if z.size <= piece:
        return _hermite_piece(verts, vals, slopes, z)
    out = np.empty(z.shape)
    for c0 in range(0, z.size, piece):
        out[c0 : c0 + piece] = _hermite_piece(verts, vals, slopes, z[c0 : c0 + piece])
    return out


def _hermite_piece(verts, vals, slopes, z):
    j = np.searchsorted(verts, z, side="left") - 1
    j = np.clip(j, 0, verts.size - 2)
    v0, v1 = verts[j], verts[j + 1]
    width = v1 - v0
    h = (z - v0) / width
    phi0 = (1 - h) ** 2 * (1 + 2 * h)
    phi1 = h**2 * (3 - 2 * h)
    psi0 = h * (1 - h) ** 2
    psi1 = h**2 * (h - 1)
    return phi0 * vals[j] + phi1 * vals[j + 1] + (psi0 * slopes[j] + psi1 * slopes[j + 1]) * width


def ici(y, p) -> float:
    """Integrated calibration index (Austin & Steyerberg 2019): mean over cases of |p − s(p)| where s is
    R's ``loess(y ~ p)`` with its defaults — span 0.75, degree 2, gaussian family, surface
    "interpolate" — as in the paper's R code; see :func:`loess_smooth` for what is matched."""
    y, p = binary_args(y, p)
    return _ici(y, p)


def _ici(y, p):
    if np.ptp(p) == 0:
        return float(abs(p[0] - y.mean()))
    if int(np.floor(len(p) * 0.75)) < 4:
        # a degree-2 local fit needs at least 4 neighbours: too few cases for a loess smooth
        return float("nan")
    try:
        return float(np.mean(np.abs(p - loess_smooth(p, y))))
    except ValueError:
        # heavily tied scores (all neighbours at one point) leave the local fit undefined
        return float("nan")
