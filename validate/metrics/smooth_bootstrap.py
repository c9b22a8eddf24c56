"""Lowess (Eavg/E50/E90/Emax) and loess (ICI) errors of bootstrap replicates from case counts.

A replicate repeats case j c_j times. R's ``clowess`` and ``loess`` on the expanded sample only ever
need, at each local fit, sums over a window of tricube-weighted powers:
Σ c_j K(d_j / h) d_j^k (and the same with y_j), d = x − x_s. The tricube (1 − |u|³)³ is a polynomial
of degree 9 on each side of x_s, so these sums follow from moments Σ c_j (x_j − a_g)^m of runs of the
sorted cases, shifted to x_s by the binomial theorem. The runs are the nodes of a dyadic tree over
leaves of consecutive cases (a parent's moments are its children's shifted to its centre), so a
window is the union of O(log n) nodes plus the cases of the two leaves cut by its edges, which are
weighted one by one with R's exact rules. Moments are taken about each node's own centre and only
nodes lying inside the window (|a_g − x_s| ≤ h) are shifted, so no cancellation occurs. The window
positions, fit points and kd-tree cells are those of the expanded sample (positions are cumulative
counts; one flattened searchsorted serves all replicates of a batch), so every replicate equals the
point-estimate code on the materialised resample up to rounding (~1e-14;
tests/test_metrics_bootstrap.py compares them).
"""

from __future__ import annotations

from math import comb

import numpy as np

_CHUNK = 4096  # pairs per pass of the moment shift: its 14 rows stay in cache
_LEAF_CASES = 8192  # cases per range of leaves whose powers are formed at once (1.7 MB)
_Y_BY_COUNTS = 4  # fewer replicates a part than this: one replicate at a time (see moments)
_BINOM = np.array([[comb(e, m) for m in range(14)] for e in range(14)], dtype=np.float64)


class SortedCases:
    """Cases sorted by x (ascending, stable), cut into leaves of ``leaf`` consecutive cases, and the
    dyadic tree (heap layout, leaves at ``size + g``) whose nodes unite consecutive leaves: any run of
    whole leaves is the union of at most 2 log2(G) nodes. Nothing per case is kept beside x and y: the
    powers the moments need are formed leaf range by leaf range on each call of :meth:`moments`."""

    def __init__(self, x: np.ndarray, y: np.ndarray, leaf: int | None = None):
        self.x = np.asarray(x, dtype=np.float64)
        self.y = np.asarray(y, dtype=np.float64)
        n = self.x.size
        self.n = n
        # short leaves keep the one-by-one edge sums small; at most 4096 leaves bound the tree's memory
        # (2 size x 26 x replicates floats)
        L = leaf or max(int(min(32, max(8, n // 256))), -(-n // 4096))
        self.L = L
        self.seg_start = np.arange(0, n, L)
        self.G = self.seg_start.size
        self.seg_end = np.r_[self.seg_start[1:], n]
        self.center = 0.5 * (self.x[self.seg_start] + self.x[self.seg_end - 1])
        size = 1
        while size < self.G:
            size *= 2
        self.size = size
        # node case ranges and centres (empty padding nodes get a finite dummy centre)
        first = np.full(2 * size, n, dtype=np.int64)
        last = np.full(2 * size, -1, dtype=np.int64)
        first[size : size + self.G] = self.seg_start
        last[size : size + self.G] = self.seg_end - 1
        for p in range(size - 1, 0, -1):
            first[p] = min(first[2 * p], first[2 * p + 1])
            last[p] = max(last[2 * p], last[2 * p + 1])
        ok = last >= 0
        self.node_center = np.where(
            ok, 0.5 * (self.x[np.minimum(first, n - 1)] + self.x[np.maximum(last, 0)]), self.x[-1]
        )
        self.node_center[size : size + self.G] = self.center

    def seg_of(self, i: np.ndarray) -> np.ndarray:
        """The leaf holding each case index (leaves are runs of L consecutive cases)."""
        return i // self.L

    def tie_end(self, i: np.ndarray) -> np.ndarray:
        """The last index whose x equals x[i]."""
        return np.searchsorted(self.x, self.x[i], side="right") - 1

    def leaf_powers(self, g0: int, g1: int, with_y: bool = True) -> np.ndarray:
        """(g1 − g0, L, 26): the powers of :meth:`_powers` for the cases of leaves [g0, g1), v = x − the
        leaf's centre, zero rows padding the last leaf (a view of the power-major buffer); (.., 14),
        the powers of v only, without ``with_y``."""
        c0, c1 = g0 * self.L, min(g1 * self.L, self.n)
        g = g1 - g0
        v = np.empty(c1 - c0)
        full = (c1 - c0) // self.L  # leaves of L cases: their centres broadcast, not repeated
        np.subtract(
            self.x[c0 : c0 + full * self.L].reshape(full, self.L),
            self.center[g0 : g0 + full, None],
            out=v[: full * self.L].reshape(full, self.L),
        )
        v[full * self.L :] = self.x[c0 + full * self.L : c1] - self.center[g1 - 1]
        rows = self._powers(v, self.y[c0:c1] if with_y else None, g * self.L)
        k = rows.shape[1]
        return rows.T.reshape(k, g, self.L).transpose(1, 2, 0)

    @staticmethod
    def _powers(v: np.ndarray, y: np.ndarray | None, rows: int) -> np.ndarray:
        """(rows, 26): v^0 .. v^13 then y v^0 .. y v^11 per case ((rows, 14) without y), zero rows
        padding the last leaf. Each power is the previous one times v (the products ``np.cumprod``
        forms), written into a power-major buffer of which this is the transposed view: contiguous
        rows of one power cost a third of the strided columns of a case-major one (measured,
        2442-case leaves), and BLAS reads the transposed operand without a copy. The moments are
        formed anew for every chunk of replicates, so at 10M cases (one replicate a chunk) this is on
        the per-replicate path."""
        n = v.size
        out = np.empty((14 if y is None else 26, rows))
        out[:, n:] = 0.0
        out[0, :n] = 1.0
        for m in range(1, 14):
            np.multiply(out[m - 1, :n], v, out=out[m, :n])
        if y is not None:
            np.multiply(y, out[:12, :n], out=out[14:, :n])
        return out.T

    def moments(self, W: np.ndarray) -> np.ndarray:
        """Tree of moments for replicate counts W (R, n): T[node, r] = (Σ c v^m (m ≤ 13), Σ c y v^m
        (m ≤ 11)) over the node's cases, v = x − node centre; shape (2 size, R, 26). A parent's moments
        are its children's shifted to its centre: B(t) M with B[m, k] = C(m, k) t^(m − k)."""
        W = np.atleast_2d(W)
        R = W.shape[0]
        # the tree's buffer is kept for the next chunk of replicates: fresh pages of ~100 MB cost more
        # to fault in than the moments of the lowest level
        T = getattr(self, "_tree", None)
        if T is None or T.shape[1] != R:
            T = self._tree = np.empty((2 * self.size, R, 26))
        T[: self.size] = 0.0
        T[self.size + self.G :] = 0.0
        # (R, L) blocks of the counts times (L, 26) blocks of powers, a cache-sized range of leaves at a
        # time: the powers are formed anew per range rather than kept (208 bytes a case)
        step = max(1, _LEAF_CASES // self.L)
        # Σ c y v^m is Σ (c y) v^m: with few replicates the counts times y (R per case) are cheaper than
        # the twelve powers times y (12 per case) — at 10M cases a chunk holds one replicate
        by_counts = R < _Y_BY_COUNTS
        for g0 in range(0, self.G, step):
            g1 = min(self.G, g0 + step)
            c0, c1 = g0 * self.L, min(g1 * self.L, self.n)
            g = g1 - g0
            if c1 - c0 == g * self.L:
                Wr = W[:, c0:c1].reshape(R, g, self.L)
            else:  # the last leaf is short: its counts padded with zeros as its powers are
                Wp = np.zeros((R, g * self.L))
                Wp[:, : c1 - c0] = W[:, c0:c1]
                Wr = Wp.reshape(R, g, self.L)
            node = T[self.size + g0 : self.size + g1]
            if by_counts:
                # a vector-matrix product per replicate: BLAS's matrix product costs ~5 times as much
                # for 2 rows as for 1 (measured, 2442-case leaves)
                P = self.leaf_powers(g0, g1, with_y=False)
                Wy = np.zeros((g * self.L,))
                for r in range(R):
                    node[:, r, :14] = np.matmul(Wr[r][:, None, :], P)[:, 0]
                    np.multiply(W[r, c0:c1], self.y[c0:c1], out=Wy[: c1 - c0])
                    node[:, r, 14:] = np.matmul(Wy.reshape(g, 1, self.L), P[:, :, :12])[:, 0]
            else:
                np.matmul(Wr.transpose(1, 0, 2), self.leaf_powers(g0, g1), out=node)
        e = np.subtract.outer(np.arange(14), np.arange(14))
        low = e >= 0
        e = np.maximum(e, 0)
        lvl, real = self.size, self.G
        while lvl > 1:
            real = -(-real // 2)  # parents with at least one leaf below: the rest stay zero
            par = np.arange(lvl // 2, lvl // 2 + real)
            acc = T[par[0] : par[-1] + 1]
            for child in (2 * par, 2 * par + 1):
                t = self.node_center[child] - self.node_center[par]
                tp = np.cumprod(np.column_stack([np.ones(t.size)] + [t] * 13), axis=1)
                # row vectors of moments times B^T: moments of (v + t) from moments of v
                BT = np.where(low, _BINOM * tp[:, e], 0.0).transpose(0, 2, 1)
                acc[:, :, :14] += np.matmul(T[child, :, :14], BT)
                acc[:, :, 14:] += np.matmul(T[child, :, 14:], BT[:, :12, :12])
            lvl //= 2
        return T

    def cover(self, g0: np.ndarray, g1: np.ndarray):
        """(query, node) pairs whose nodes partition the leaves [g0, g1) of each query."""
        l = g0.astype(np.int64) + self.size
        r = g1.astype(np.int64) + self.size
        q = np.arange(l.size)
        qs, ns = [], []
        while True:
            act = l < r
            if not act.any():
                break
            m1 = act & (l & 1 == 1)
            qs.append(q[m1])
            ns.append(l[m1])
            l = l + m1
            m2 = act & (r & 1 == 1)
            r = r - m2
            qs.append(q[m2])
            ns.append(r[m2])
            l >>= 1
            r >>= 1
        return np.concatenate(qs), np.concatenate(ns)

    def split(self, lo: np.ndarray, hi: np.ndarray):
        """Case ranges [lo, hi) as the runs of whole leaves [g0, g1) they contain (empty where none) and
        the two ranges of cases in the leaves cut at either end."""
        lo = np.minimum(lo, hi)
        g_lo = self.seg_of(np.minimum(lo, self.n - 1))
        g0 = np.where(self.seg_start[g_lo] == lo, g_lo, g_lo + 1)  # first leaf fully inside
        g_hi = self.seg_of(np.maximum(hi - 1, 0))
        g1 = np.where(self.seg_end[g_hi] == hi, g_hi + 1, g_hi)  # one past the last fully inside
        full = (g0 < g1) & (hi > lo)
        cut1 = np.where(full, self.seg_start[np.minimum(g0, self.G - 1)], hi)
        cut2 = np.where(full, np.where(g1 >= self.G, hi, self.seg_start[np.minimum(g1, self.G - 1)]), hi)
        g1 = np.where(full, g1, g0)
        return g0, g1, (lo, np.minimum(cut1, hi)), (np.maximum(cut2, lo), hi)


def _dot(a, b) -> float:
    # einsum's own loop, not BLAS: a threaded BLAS dot stalls for milliseconds on a busy machine
    return float(np.einsum("i,i->", a, b))


def _node_sums(M: np.ndarray, t: np.ndarray, h: np.ndarray, side: np.ndarray, kmax: int) -> np.ndarray:
    """Σ c K(u) u^k (k ≤ kmax) over the node of each (fit, node) pair, u = (x − x_s)/h, from the node's
    moments M (pairs, ≥ kmax + 10) about its centre a_g, with t = (a_g − x_s)/h (|t| ≤ 1: the node
    lies in the window) and s = ``side`` = ±1 the side of x_s it lies on. The moments of v/h + t follow
    from those of v/h by the in-place binomial (Taylor) shift D_e += t D_(e−1); then
    K(u) u^k = u^k − 3s u^(k+3) + 3 u^(k+6) − s u^(k+9). Returns shape (kmax + 1, pairs)."""
    emax = kmax + 9
    out = np.empty((kmax + 1, t.size))
    D = np.empty((emax + 1, _CHUNK))
    tmp = np.empty(_CHUNK)
    hp = np.empty(_CHUNK)
    for c0 in range(0, t.size, _CHUNK):  # a cache-sized chunk of pairs at a time
        c1 = min(t.size, c0 + _CHUNK)
        m_, t_, inv, d, tm, hq = M[c0:c1], t[c0:c1], 1.0 / h[c0:c1], D[:, : c1 - c0], tmp[: c1 - c0], hp[: c1 - c0]
        hq[:] = 1.0
        for m in range(emax + 1):
            np.multiply(m_[:, m], hq, out=d[m])
            hq *= inv
        for k in range(1, emax + 1):
            for e in range(emax, k - 1, -1):
                np.multiply(t_, d[e - 1], out=tm)
                d[e] += tm
        s_ = side[c0:c1]
        out[:, c0:c1] = d[: kmax + 1] + 3 * d[6 : kmax + 7] - s_ * (3 * d[3 : kmax + 4] + d[9 : kmax + 10])
    return out


def _direct_sums(sc, W, rq, xs, h, parts, kc, ky, exact_w):
    """Σ m K u^k (k ≤ kc) and Σ m y K u^k (k ≤ ky), u = (x − x_s)/h, over cases weighted one by one with
    ``exact_w``. ``parts`` are (lo, hi, mult) triples of case ranges [lo, hi) per query: m is query
    rq's replicate count, or ``mult`` (per query) where given. All ranges in one flat pass."""
    Q = xs.size
    qids, idxs, ms = [], [], []
    for lo, hi, mult in parts:
        lens = np.maximum(hi - lo, 0)
        tot = int(lens.sum())
        if tot == 0:
            continue
        q = np.repeat(np.arange(Q), lens)
        first = np.cumsum(lens) - lens
        idx = np.arange(tot) - np.repeat(first - lo, lens)
        qids.append(q)
        idxs.append(idx)
        ms.append(W.ravel()[rq[q] * W.shape[1] + idx] if mult is None else mult[q])
    S = np.zeros((Q, kc + 1))
    T = np.zeros((Q, ky + 1))
    if not qids:
        return S, T
    q_all = np.concatenate(qids)
    idx_all = np.concatenate(idxs)
    m_all = np.concatenate(ms)
    K = max(kc, ky)
    for c0 in range(0, q_all.size, _CHUNK * 8):  # cache-sized chunks of cases
        q, idx = q_all[c0 : c0 + _CHUNK * 8], idx_all[c0 : c0 + _CHUNK * 8]
        d = sc.x[idx] - xs[q]
        hq = h[q]
        w = exact_w(np.abs(d), hq)
        w *= m_all[c0 : c0 + _CHUNK * 8]
        u = d / np.where(hq > 0, hq, 1.0)
        wy = w * sc.y[idx]
        for k in range(K + 1):
            if k <= kc:
                S[:, k] += np.bincount(q, weights=w, minlength=Q)
            if k <= ky:
                T[:, k] += np.bincount(q, weights=wy, minlength=Q)
            if k < K:
                w *= u
                wy *= u
    return S, T


def _window_sums(sc, W, TM, rq, xs, h, sides, kc, ky, exact_w, extra=()):
    """Σ c K u^k (k ≤ kc) and Σ c y K u^k (k ≤ ky) over windows given per side as case ranges
    ``sides`` = [(lo, hi, s), ...] (cases of [lo, hi) lie on side s = ±1 of x_s, where the kernel is
    the polynomial (1 − |u|³)³): the cases of leaves cut by a range edge one by one, whole leaves from
    the tree nodes that cover them. ``extra`` are further (lo, hi, mult) ranges summed case by case."""
    Q = xs.size
    parts = list(extra)
    qs, ns, ss = [], [], []
    for lo, hi, s in sides:
        g0, g1, cut_a, cut_b = sc.split(lo, hi)
        parts += [(*cut_a, None), (*cut_b, None)]
        rows = np.flatnonzero(g0 < g1)
        if rows.size:
            qi, node = sc.cover(g0[rows], g1[rows])
            qs.append(rows[qi])
            ns.append(node)
            ss.append(np.full(qi.size, float(s)))
    S, T = _direct_sums(sc, W, rq, xs, h, parts, kc, ky, exact_w)
    if qs:
        pf = np.concatenate(qs)
        node = np.concatenate(ns)
        side = np.concatenate(ss)
        t = (sc.node_center[node] - xs[pf]) / h[pf]
        Mp = TM[node, rq[pf]]
        Vc = _node_sums(Mp[:, :14], t, h[pf], side, kc)
        Vy = _node_sums(Mp[:, 14:], t, h[pf], side, ky)
        for k in range(kc + 1):
            S[:, k] += np.bincount(pf, weights=Vc[k], minlength=Q)
        for k in range(ky + 1):
            T[:, k] += np.bincount(pf, weights=Vy[k], minlength=Q)
    return S, T


def _lowess_w(r, h):
    # C lowest(): 1 within 0.001 h, tricube up to 0.999 h, 0 beyond
    with np.errstate(invalid="ignore", divide="ignore"):
        q = r / h
    q = q * q * q
    t = 1.0 - q
    return np.where(r <= 0.999 * h, np.where(r <= 0.001 * h, 1.0, t * t * t), 0.0)


def _loess_w(r, h):
    with np.errstate(invalid="ignore", divide="ignore"):
        q = r / h
    return np.where(q < 1.0, (1.0 - q**3) ** 3, 0.0)


class _BatchPositions:
    """Positions of the expanded samples of all replicates at once: row r's cumulative counts are
    offset by r (max N + 1) and flattened, so one searchsorted finds the case at (r, position). Only
    that flat array is kept (8 bytes per case and replicate): a row's cumulative counts are read back
    from it."""

    def __init__(self, W: np.ndarray):
        R, n = W.shape
        self.n = n
        flat = np.empty((R, n), dtype=np.int64)
        for r in range(R):  # row by row: no (R, n) integer copy of the counts beside the sums
            np.cumsum(W[r].astype(np.int64), out=flat[r])
        self.N = flat[:, -1].copy()
        self.off = np.arange(R, dtype=np.int64) * (int(self.N.max(initial=0)) + 1)
        flat[1:] += self.off[1:, None]  # row 0's offset is 0
        self.flat = flat.ravel()

    def end(self, r, j):
        """Cumulative count of replicate r through case j (one past the last position of case j)."""
        return self.flat[r * self.n + j] - self.off[r]

    def case_at(self, r, pos):
        return np.searchsorted(self.flat, pos + self.off[r], side="right") - r * self.n


class _ExpandedRow:
    """Replicate r's expanded sample (case j repeated by its count) read by position without building
    it: ``row[i]`` is the x at position i, ``row.size`` the sample's size."""

    def __init__(self, x: np.ndarray, P: _BatchPositions, r: int):
        self.x, self.P, self.r = x, P, r
        self.size = int(P.N[r])

    def __getitem__(self, i: int) -> float:
        if i < 0:
            i += self.size
        return self.x[int(self.P.case_at(self.r, i))]


def _window_starts_batch(x, P: _BatchPositions, r, centres, width):
    """First position k <= N − width with centre − x[k] <= x[k + width] − centre in replicate r's
    expanded sample: the start of the window of nearest positions as clowess (and loess) find it;
    bisection vectorised over queries of several replicates (row r and width per query)."""
    N = P.N[r]
    lo = np.zeros(centres.size, dtype=np.int64)
    hi = N - width
    while True:
        act = lo < hi
        if not act.any():
            return lo
        mid = (lo + hi) // 2
        move = (centres - x[P.case_at(r, mid)]) > (x[P.case_at(r, np.minimum(mid + width, N - 1))] - centres)
        lo = np.where(act & move, mid + 1, lo)
        hi = np.where(act & ~move, mid, hi)


def _lowess_plans(sc: SortedCases, P: _BatchPositions, f: float) -> list:
    """Fit points and windows of clowess on each replicate's expanded sample (they depend on x and the
    counts only), or None where the smooth is a constant; the fit-point walk is stepped for all
    replicates together."""
    x = sc.x
    R = P.N.size
    rows = np.arange(R)
    N = P.N
    first = P.case_at(rows, np.zeros(R, dtype=np.int64))
    last = P.case_at(rows, np.maximum(N - 1, 0))
    rng = x[np.minimum(last, sc.n - 1)] - x[np.minimum(first, sc.n - 1)]
    valid = (N >= 2) & (rng > 0)
    plans = [None] * R
    if not valid.any():
        return plans
    delta = 0.01 * rng
    ns = np.maximum(2, np.minimum(N, np.floor(f * N + 1e-7).astype(np.int64)))
    k = first.copy()
    act = valid.copy()
    fr, fk = [], []
    while act.any():
        ra = rows[act]
        ka = k[act]
        fr.append(ra)
        fk.append(ka)
        last_pos = P.end(ra, sc.tie_end(ka)) - 1
        go = last_pos < N[ra] - 1
        ra, ka, last_pos = ra[go], ka[go], last_pos[go]
        nc = np.searchsorted(x, x[ka] + delta[ra], side="right")
        k[ra] = P.case_at(ra, np.maximum(last_pos + 1, P.end(ra, nc - 1) - 1))
        act[:] = False
        act[ra] = True
    rq = np.concatenate(fr)
    fits = np.concatenate(fk)
    order = np.argsort(rq, kind="stable")
    rq, fits = rq[order], fits[order]
    xs = x[fits]
    w = ns[rq]
    nleft = _window_starts_batch(x, P, rq, xs, w)
    kl = P.case_at(rq, nleft)
    h = np.maximum(xs - x[kl], x[P.case_at(rq, nleft + w - 1)] - xs)
    h9, h1 = 0.999 * h, 0.001 * h
    start = kl + 1
    cols = {
        "fits": fits,
        "xs": xs,
        "h": h,
        "kl": kl,
        "mult": (P.end(rq, kl) - nleft).astype(np.float64),
        "a": np.maximum(np.searchsorted(x, xs - h9, side="left"), start),
        "b": np.maximum(np.searchsorted(x, xs - h1, side="left"), start),
        "c": np.maximum(np.searchsorted(x, xs + h1, side="right"), start),
        "d": np.maximum(np.searchsorted(x, xs + h9, side="right"), start),
    }
    bounds = np.searchsorted(rq, np.arange(R + 1))
    for r in np.flatnonzero(valid):
        sl = slice(bounds[r], bounds[r + 1])
        plans[r] = {k_: v[sl] for k_, v in cols.items()}
        plans[r]["range"] = rng[r]
    return plans


def _loess_plans(sc: SortedCases, P: _BatchPositions, W: np.ndarray, span: float, cell: float) -> list:
    """Vertices and neighbourhoods of R's loess on each replicate's expanded sample, or None for
    constant x: the k-d tree per replicate, the neighbourhoods of all vertices together."""
    from validate.metrics.smooth import _kd_splits

    x = sc.x
    R = W.shape[0]
    plans = [None] * R
    qs, rs = [], []
    for r in range(R):
        N = int(P.N[r])
        if N == 0:
            continue
        rep = _ExpandedRow(x, P, r)  # the kd-tree reads a few dozen positions: no expanded copy
        if rep[0] == rep[-1]:
            continue
        fc = int(np.floor(N * (span * cell)))
        splits, lo_v, hi_v = _kd_splits(rep, fc)
        q = np.array(sorted([lo_v, hi_v] + splits))
        qs.append(q)
        rs.append(np.full(q.size, r))
    if not qs:
        return plans
    q = np.concatenate(qs)
    rq = np.concatenate(rs)
    N = P.N[rq]
    nf = np.minimum(N, np.floor(N * span).astype(np.int64))
    left = _window_starts_batch(x, P, rq, q, nf)
    d1 = x[P.case_at(rq, left)] - q
    d2 = x[P.case_at(rq, left + nf - 1)] - q
    h = np.sqrt(np.maximum(d1 * d1, d2 * d2))  # sqrt of the nf-th smallest squared distance
    cols = {
        "q": q,
        "h": h,
        "lo": np.searchsorted(x, q - h, side="left"),
        "mid": np.searchsorted(x, q, side="left"),
        "hi": np.searchsorted(x, q + h, side="right"),
    }
    bounds = np.searchsorted(rq, np.arange(R + 1))
    for r in np.unique(rq):
        sl = slice(bounds[r], bounds[r + 1])
        plans[r] = {k_: v[sl] for k_, v in cols.items()}
    return plans


def _error_summary(e, c, N) -> dict:
    """Mean, type-7 median and 90th percentile, and maximum of e over the expanded sample (e[j] repeated
    c[j] times, c integer-valued counts, N their sum)."""
    ks, fr = [], []
    for q in (0.5, 0.9):
        pos = (N - 1) * q
        lo = int(np.floor(pos))
        ks += [lo, min(lo + 1, N - 1)]
        fr.append(pos - lo)
    v = order_statistics(e, c, ks + [N - 1])  # N − 1: the maximum comes with the quantiles
    return {
        "eavg": float(_dot(c, e) / N),
        "e50": float(v[0] + fr[0] * (v[1] - v[0])),
        "e90": float(v[2] + fr[1] * (v[3] - v[2])),
        "emax": float(v[4]),
    }


_SELECT_SAMPLE = 1 << 16  # cases in the subsample that brackets each order statistic
_SELECT_PAD = 0.01  # half-width of a bracket, in probability: ~5 standard errors of the subsample's quantile


def order_statistics(e: np.ndarray, c: np.ndarray, ks) -> list[float]:
    """The values at 0-based positions ``ks`` of the expanded sample (e[j] repeated c[j] times, sorted
    ascending), c non-negative integer-valued, without forming it.

    Small samples are expanded and partitioned. Beyond 4 subsamples' worth, each position is bracketed
    by the weighted quantiles ±1% of a systematic subsample (every step-th case); one pass counts the
    mass below the bracket and gathers the cases inside it, which are sorted to read the position
    off their cumulative counts. The bracket is checked to hold the position (otherwise the sample is
    expanded after all), so the value is the same element the expansion gives: exact, not estimated.
    At 10M cases this is a few comparisons and a dot product per bracket instead of an (N,) repeat and
    partition (tests/test_smooth_scale.py compares the two on ties, zero counts and skewed e)."""
    ks = [int(k) for k in ks]
    n = e.size
    # a NaN compares false on both sides of a bracket, so a sample holding one is expanded (NaN sorts last)
    if n <= 4 * _SELECT_SAMPLE or not np.isfinite(e.max(initial=-np.inf)):
        return _expanded_order_statistics(e, c, ks)
    step = -(-n // _SELECT_SAMPLE)
    se, sw = e[::step], c[::step]
    o = np.argsort(se)
    se, scum = se[o], np.cumsum(sw[o])
    N = float(np.sum(c))
    found: list = []  # (mass below, candidate values sorted, their cumulative counts)
    out = []
    for k in ks:
        hit = next((b for b in found if b[0] <= k < b[0] + b[2][-1]), None)
        if hit is None:
            hit = _bracket(e, c, se, scum, (k + 0.5) / N, N)
            if hit is None or not hit[0] <= k < hit[0] + hit[2][-1]:
                return _expanded_order_statistics(e, c, ks)
            found.append(hit)
        below, vals, cum = hit
        out.append(float(vals[np.searchsorted(cum, k - below, side="right")]))
    return out


def _bracket(e, c, se, scum, q, N):
    """(mass of e below a, the values of e in [a, b] sorted, their cumulative counts) for the bracket
    [a, b] of the subsample's weighted quantiles q ∓ pad (open-ended at the extremes); None if empty.
    Ties keep no order: tied values are one value, whichever case they came from."""
    tot = scum[-1]
    lo, hi = q - _SELECT_PAD, q + _SELECT_PAD
    a = se[min(int(np.searchsorted(scum, lo * tot, side="right")), se.size - 1)] if lo > 0 else -np.inf
    b = se[min(int(np.searchsorted(scum, hi * tot, side="left")), se.size - 1)] if hi < 1 else np.inf
    if b == np.inf:
        idx = np.flatnonzero(e >= a)
    else:
        inside = e <= b
        if a > -np.inf:
            lt = e < a
            np.greater(inside, lt, out=inside)  # e <= b and not e < a
        idx = np.flatnonzero(inside)
    if idx.size == 0:
        return None
    vals, w = e[idx], c[idx]
    o = np.argsort(vals)
    cum = np.cumsum(w[o])
    if cum[-1] <= 0:
        return None
    if a == -np.inf:
        below = 0.0
    elif b == np.inf:
        below = N - float(cum[-1])
    else:
        below = float(np.einsum("i,i->", c, lt))  # einsum casts the mask in cache-sized buffers
    return below, vals[o], cum


def _expanded_order_statistics(e, c, ks) -> list[float]:
    rep = np.repeat(e, c.astype(np.int64))
    rep.partition(sorted(set(ks)))  # in place
    return [float(rep[k]) for k in ks]


_HERMITE_RUN = 1 << 15  # cases per pass of the cell polynomial: its two buffers stay in cache


def _hermite_abs_error(x, c, verts, vals, slopes) -> float:
    """Σ c |x − s(x)| for the cubic Hermite interpolant s of ``smooth._hermite`` (a point on a split
    belongs to the lower cell; points outside the vertices use the end cells), evaluated cell by cell
    on the sorted x in Horner form, a cache-sized run of cases at a time (the same operations in the
    same order as whole-cell arrays: the same bits, without a cell-sized temporary per operation)."""
    b = np.searchsorted(x, verts, side="right")
    b[0] = 0
    b[-1] = x.size
    total = 0.0
    err = np.empty(int(np.diff(b).max(initial=0)))  # one cell's errors, summed at once as before
    h = np.empty(min(err.size, _HERMITE_RUN))
    for j in range(verts.size - 1):
        lo, hi = b[j], b[j + 1]
        if hi <= lo:
            continue
        width = verts[j + 1] - verts[j]
        s0, s1 = slopes[j] * width, slopes[j + 1] * width
        dv = vals[j + 1] - vals[j]
        a2, a3 = 3 * dv - 2 * s0 - s1, s0 + s1 - 2 * dv
        for r0 in range(lo, hi, _HERMITE_RUN):
            r1 = min(hi, r0 + _HERMITE_RUN)
            xx, hh, fit = x[r0:r1], h[: r1 - r0], err[r0 - lo : r1 - lo]
            np.subtract(xx, verts[j], out=hh)
            np.divide(hh, width, out=hh)  # h = (x − v_j) / width
            np.multiply(hh, a3, out=fit)  # fit = v + h (s0 + h (a2 + h a3))
            fit += a2
            fit *= hh
            fit += s0
            fit *= hh
            fit += vals[j]
            np.subtract(xx, fit, out=fit)
            np.abs(fit, out=fit)
        total += float(_dot(c[lo:hi], err[: hi - lo]))
    return total


def smooth_errors(
    sc: SortedCases,
    W: np.ndarray,
    *,
    f: float = 2.0 / 3.0,
    span: float = 0.75,
    cell: float = 0.2,
    grid: np.ndarray | None = None,
) -> dict:
    """Eavg, E50, E90, Emax (R's ``lowess(p, y, iter = 0)``) and ICI (R's ``loess(y ~ p)``) of every
    replicate in W (R, n): replicate r repeats case j W[r, j] times. Returns arrays of shape (R,).
    Window sums of all replicates are evaluated together (see the module docstring).

    With ``grid`` (sorted probabilities), also each replicate's two smooths on it: ``lowess_curve`` and
    ``loess_curve`` of shape (R, grid), NaN outside the replicate's own range of x (for the pointwise
    bands of :mod:`validate.metrics.smooth_band`)."""
    W = np.ascontiguousarray(np.atleast_2d(np.asarray(W, dtype=np.float64)))
    R = W.shape[0]
    x, y = sc.x, sc.y
    TM = sc.moments(W)
    out = {k: np.full(R, np.nan) for k in ("eavg", "e50", "e90", "emax", "ici")}
    curves = _GridCurves(x, W, grid)
    P = _BatchPositions(W)
    lplans = _lowess_plans(sc, P, f)
    oplans = _loess_plans(sc, P, W, span, cell)
    # ---- lowess: all fits of all replicates at once
    lrows = [r for r in range(R) if lplans[r] is not None]
    if lrows:
        cat = {
            k: np.concatenate([lplans[r][k] for r in lrows])
            for k in ("fits", "xs", "h", "kl", "mult", "a", "b", "c", "d")
        }
        sizes = [lplans[r]["fits"].size for r in lrows]
        rq = np.repeat(np.asarray(lrows), sizes)
        xs, h = cat["xs"], cat["h"]
        poly = h > 0
        # the partial case at the window's start (its copies before position nleft are outside), the
        # cases within 0.001 h (weight 1), and the tricube ranges on either side
        S, T = _window_sums(
            sc,
            W,
            TM,
            rq,
            xs,
            h,
            [(cat["a"], np.where(poly, cat["b"], cat["a"]), -1), (cat["c"], np.where(poly, cat["d"], cat["c"]), 1)],
            2,
            1,
            _lowess_w,
            extra=[(cat["kl"], cat["kl"] + 1, cat["mult"]), (cat["b"], cat["c"], None)],
        )
        hs = np.where(h > 0, h, 1.0)
        ok = S[:, 0] > 0
        S0 = np.where(ok, S[:, 0], 1.0)
        abar = hs * S[:, 1] / S0  # weighted mean of x − x_s
        var = hs * hs * S[:, 2] / S0 - abar * abar  # weighted variance of x
        rng = np.repeat([lplans[r]["range"] for r in lrows], sizes)
        slope = (h > 0) & (np.sqrt(np.maximum(var, 0.0)) > 0.001 * rng)
        bcoef = np.where(slope, -abar / np.where(slope, var, 1.0), 0.0)
        ys = (T[:, 0] + bcoef * (hs * T[:, 1] - abar * T[:, 0])) / S0
        ys = np.where(ok, ys, y[cat["fits"]])
        bounds = np.r_[0, np.cumsum(sizes)]
        for i, r in enumerate(lrows):
            sl = slice(bounds[i], bounds[i + 1])
            e = np.interp(x, xs[sl], ys[sl])
            np.subtract(x, e, out=e)
            np.abs(e, out=e)
            curves.lowess(r, xs[sl], ys[sl])
            for k, v in _error_summary(e, W[r], int(P.N[r])).items():
                out[k][r] = v
    # ---- loess: all vertices of all replicates at once
    orows = [r for r in range(R) if oplans[r] is not None]
    if orows:
        sizes = [oplans[r]["q"].size for r in orows]
        rq = np.repeat(np.asarray(orows), sizes)
        q = np.concatenate([oplans[r]["q"] for r in orows])
        h = np.concatenate([oplans[r]["h"] for r in orows])
        lo = np.concatenate([oplans[r]["lo"] for r in orows])
        mid = np.concatenate([oplans[r]["mid"] for r in orows])
        hi = np.concatenate([oplans[r]["hi"] for r in orows])
        S, T = _window_sums(sc, W, TM, rq, q, h, [(lo, mid, -1), (mid, hi, 1)], 4, 2, _loess_w)
        A = np.stack([S[:, 0:3], S[:, 1:4], S[:, 2:5]], axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            beta = _solve_local_fits(A, T)
        vals, slopes = beta[:, 0], beta[:, 1] / h
        bounds = np.r_[0, np.cumsum(sizes)]
        for i, r in enumerate(orows):
            sl = slice(bounds[i], bounds[i + 1])
            out["ici"][r] = _hermite_abs_error(x, W[r], q[sl], vals[sl], slopes[sl]) / W[r].sum()
            curves.loess(r, q[sl], vals[sl], slopes[sl])
    _constant_rows(x, y, W, P, lplans, oplans, out, curves)
    out.update(curves.arrays())
    return out


def _solve_local_fits(A: np.ndarray, T: np.ndarray) -> np.ndarray:
    """The local quadratic fits' coefficients, one system per vertex; a singular system by least squares,
    and one that is not finite (a window of saturated, tied predictions) as NaN — that vertex's fit is
    undefined, as R's loess would refuse it — instead of failing the whole set of replicates."""
    try:
        return np.linalg.solve(A, T[:, :, None])[:, :, 0]
    except np.linalg.LinAlgError:
        beta = np.full(T.shape, np.nan)
        for i, (a_, t_) in enumerate(zip(A, T, strict=True)):
            if np.all(np.isfinite(a_)) and np.all(np.isfinite(t_)):
                try:
                    beta[i] = np.linalg.lstsq(a_, t_, rcond=None)[0]
                except np.linalg.LinAlgError:
                    pass
        return beta


def _constant_rows(x, y, W, P, lplans, oplans, out, curves) -> None:
    """Replicates whose smooth is a constant (no plan: one distinct x): the weighted mean of y."""
    for r in range(W.shape[0]):
        mean = _dot(W[r], y) / W[r].sum()
        if lplans[r] is None:
            curves.constant("lowess", r, mean)
            for k, v in _error_summary(np.abs(x - mean), W[r], int(P.N[r])).items():
                out[k][r] = v
        if oplans[r] is None:
            out["ici"][r] = abs(x[W[r] > 0][0] - mean)
            curves.constant("loess", r, mean)


class _GridCurves:
    """Each replicate's lowess and loess smooths on a grid (nothing when ``grid`` is None): the fitted
    points interpolated as the point-estimate code does (lowess linearly between its fits, loess by
    its cubic Hermite cells), NaN outside the replicate's own range of x."""

    def __init__(self, x: np.ndarray, W: np.ndarray, grid: np.ndarray | None):
        self.grid = None if grid is None else np.asarray(grid, dtype=np.float64)
        if self.grid is None:
            return
        R = W.shape[0]
        drawn = W > 0
        first = np.argmax(drawn, axis=1)
        last = x.size - 1 - np.argmax(drawn[:, ::-1], axis=1)
        self.inside = (self.grid[None, :] >= x[first][:, None]) & (self.grid[None, :] <= x[last][:, None])
        self.inside &= drawn.any(axis=1)[:, None]
        self.curves = {k: np.full((R, self.grid.size), np.nan) for k in ("lowess", "loess")}

    def lowess(self, r: int, xs: np.ndarray, ys: np.ndarray) -> None:
        if self.grid is not None:
            self.curves["lowess"][r] = np.interp(self.grid, xs, ys)

    def loess(self, r: int, verts: np.ndarray, vals: np.ndarray, slopes: np.ndarray) -> None:
        if self.grid is not None:
            from validate.metrics.smooth import _hermite

            self.curves["loess"][r] = _hermite(verts, vals, slopes, self.grid)

    def constant(self, name: str, r: int, value: float) -> None:
        if self.grid is not None:
            self.curves[name][r] = value

    def arrays(self) -> dict:
        if self.grid is None:
            return {}
        return {f"{k}_curve": np.where(self.inside, v, np.nan) for k, v in self.curves.items()}
