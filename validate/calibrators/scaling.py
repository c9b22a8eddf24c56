"""Parametric calibrators: temperature, vector and matrix scaling, Platt scaling, beta calibration.

All are maximum-likelihood fits (minimum mean negative log-likelihood) on the fitting cases' logits.
Solvers: a bounded scalar solver for the temperature, Newton's method for the two- and three-parameter
logistic maps, L-BFGS-B with analytic gradients for vector and matrix scaling.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from validate.calibrators.base import (
    CalibrationFitError,
    Calibrator,
    as_float_list,
    check_separable_binary,
    log_sigmoid,
    sigmoid,
    softmax,
)

# log T is searched in [-7, 7]: T from 0.0009 to 1100, far beyond any real network's miscalibration; an
# optimum on the bound means the likelihood has no interior optimum (separable or uninformative data).
_LOG_T_BOUND = 7.0


class TemperatureScaling(Calibrator):
    """Temperature scaling (Guo, Pleiss, Sun & Weinberger, "On Calibration of Modern Neural Networks",
    ICML 2017): ``p = softmax(z / T)`` (multiclass) or ``p = sigmoid(z / T)`` (binary), one parameter
    T > 0 chosen to minimise the mean negative log-likelihood of the fitting cases.

    The solver is bounded to log T in [-7, 7], so T > 0 always: the NLL is convex in b = 1/T, so its
    minimum is the one root of its derivative, found by a bracketed (safeguarded) Newton iteration.
    ``temperature`` is T itself (scikit-learn and netcal store 1/T). T > 1 softens over-confident
    predictions; T < 1 sharpens. Argmax and ranking are unchanged. If the optimum lies on the bound the
    fitting cases are perfectly classified (T -> 0) or carry no signal (T -> infinity):
    :class:`CalibrationFitError`.
    """

    name = "temperature"
    tasks = ("binary", "multiclass")

    def __init__(self) -> None:
        super().__init__()
        self.temperature: float | None = None

    def _fit(self, z: np.ndarray, y: np.ndarray) -> None:
        if z.ndim == 1:
            check_separable_binary(z, y, self.name)
            yf = y.astype(np.float64)
            z2 = z * z

            def slope(b: float) -> tuple[float, float]:  # dNLL/db, d2NLL/db2 at b = 1/T
                q = sigmoid(z * b)
                return float(np.mean((q - yf) * z)), float(np.mean(q * (1.0 - q) * z2))
        else:
            if np.all(z.argmax(axis=1) == y):
                raise CalibrationFitError(
                    "temperature: the fitting cases are perfectly classified, so the likelihood keeps rising as T -> 0",
                    expected="fitting cases with some errors (use more cases)",
                )
            # softmax is shift-invariant per row: with zc <= 0 (row max 0) exp never overflows
            zc = z - z.max(axis=1, keepdims=True)
            zc2 = zc * zc
            mean_zy = float(np.mean(zc[np.arange(len(y)), y]))
            buf = np.empty_like(zc)

            def slope(b: float) -> tuple[float, float]:  # mean(E[zc] - zc_y), mean(Var[zc]) under softmax(b zc)
                np.multiply(zc, b, out=buf)
                np.exp(buf, out=buf)
                tot = buf.sum(axis=1)
                m1 = np.einsum("ij,ij->i", buf, zc) / tot
                m2 = np.einsum("ij,ij->i", buf, zc2) / tot
                return float(np.mean(m1)) - mean_zy, float(np.mean(m2 - m1 * m1))

        self.temperature = 1.0 / _convex_root(slope, np.exp(-_LOG_T_BOUND), np.exp(_LOG_T_BOUND))

    def _predict(self, z: np.ndarray) -> np.ndarray:
        s = z / self.temperature
        return sigmoid(s) if z.ndim == 1 else softmax(s)

    def _params(self) -> dict:
        return {"temperature": self.temperature}

    def _load(self, params: dict) -> None:
        t = float(params["temperature"])
        if not np.isfinite(t) or t <= 0:
            raise ValueError(f"temperature must be a positive number, got {t}")
        self.temperature = t


def _convex_root(slope, b_min: float, b_max: float) -> float:
    """The minimiser b = 1/T of a mean NLL that is convex in b, on [b_min, b_max]: the root of its
    increasing derivative ``slope(b) -> (dNLL/db, d2NLL/db2)``, by Newton's method on log b kept inside
    a bracket that shrinks with every evaluation (bisection in log b whenever Newton would leave it).
    Converges quadratically, ~6-10 passes over the data. A root beyond a bound means there is no finite
    optimum: :class:`CalibrationFitError`."""
    lo, hi = np.log(b_min), np.log(b_max)
    lo_known = hi_known = False
    u = 0.0  # T = 1
    for _ in range(200):
        b = float(np.exp(u))
        g, gp = slope(b)
        if g == 0:
            return b
        if g > 0:
            hi, hi_known = u, True
        else:
            lo, lo_known = u, True
        nxt = u - g / (gp * b) if gp > 0 else (hi if g < 0 else lo)
        if abs(nxt - u) <= 1e-10:  # converged (checked first: at the root, rounding may put nxt on u)
            return float(np.exp(nxt))
        if not lo < nxt < hi:
            heading_up = g < 0
            if (heading_up and not hi_known) or (not heading_up and not lo_known):
                edge = hi if heading_up else lo
                ge, _ = slope(float(np.exp(edge)))
                if (heading_up and ge <= 0) or (not heading_up and ge >= 0):
                    why = (
                        "the fitting cases are (nearly) perfectly classified, so the likelihood keeps rising as T -> 0"
                        if heading_up
                        else "the scores carry no signal about the outcome (T -> infinity)"
                    )
                    raise CalibrationFitError(
                        f"temperature: no finite optimum in T = e^-7 .. e^7: {why}",
                        expected="fitting cases with some errors and some signal",
                    )
                if heading_up:
                    hi_known = True
                else:
                    lo_known = True
            if not lo < nxt < hi:
                nxt = 0.5 * (lo + hi)
        if abs(nxt - u) <= 1e-10:
            return float(np.exp(nxt))
        u = nxt
    return float(np.exp(u))


def _multinomial_nll_grad(zt: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean negative log-likelihood of softmax(zt) and its gradient with respect to zt."""
    n = len(y)
    m = zt.max(axis=1, keepdims=True)
    e = np.exp(zt - m)
    s = e.sum(axis=1, keepdims=True)
    rows = np.arange(n)
    nll = float(np.mean(np.log(s[:, 0]) + m[:, 0] - zt[rows, y]))
    g = e / s
    g[rows, y] -= 1.0
    g /= n
    return nll, g


class VectorScaling(Calibrator):
    """Vector scaling (Guo et al., ICML 2017): ``p = softmax(w * z + b)`` with one weight and one
    bias per class, maximum likelihood by L-BFGS-B from the temperature-scaled map (w = 1/T, b = 0).
    The weights are bounded below by 0
    so that no class's evidence is reversed (with real networks the bound is never active).
    Multiclass only."""

    name = "vector"
    tasks = ("multiclass",)

    def __init__(self) -> None:
        super().__init__()
        self.weights: np.ndarray | None = None
        self.bias: np.ndarray | None = None

    def _fit(self, z: np.ndarray, y: np.ndarray) -> None:
        k = z.shape[1]

        def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w, b = theta[:k], theta[k:]
            nll, g = _multinomial_nll_grad(z * w + b, y)
            return nll, np.concatenate([(g * z).sum(axis=0), g.sum(axis=0)])

        x0 = np.concatenate([np.full(k, 1.0 / _warm_temperature(z, y)), np.zeros(k)])
        res = minimize(
            fun,
            x0,
            jac=True,
            method="L-BFGS-B",
            bounds=[(0.0, None)] * k + [(None, None)] * k,
            options={"maxiter": 1000, "gtol": 1e-8},
        )
        _check_converged(res, self.name)
        self.weights, self.bias = res.x[:k].copy(), res.x[k:].copy()

    def _predict(self, z: np.ndarray) -> np.ndarray:
        return softmax(z * self.weights + self.bias)

    def _params(self) -> dict:
        return {"weights": as_float_list(self.weights), "bias": as_float_list(self.bias)}

    def _load(self, params: dict) -> None:
        self.weights = _vector(params["weights"], self.n_classes, "weights")
        self.bias = _vector(params["bias"], self.n_classes, "bias")


class MatrixScaling(Calibrator):
    """Matrix scaling with ODIR regularisation (Kull, Perello-Nieto, Kängsepp, Silva Filho, Song &
    Flach, "Beyond temperature scaling: Obtaining well-calibrated multiclass probabilities with
    Dirichlet calibration", NeurIPS 2019): ``p = softmax(W z + b)`` minimising

        mean NLL + lambda / (K (K - 1)) * sum_{i != j} W_ij^2 + mu / K * sum_j b_j^2

    (Off-Diagonal and Intercept Regularisation: the diagonal is free, so strong regularisation shrinks
    towards vector scaling without intercept). Given log-probabilities as logits this is Kull et al.'s
    Dirichlet calibration. L-BFGS-B from the temperature-scaled map (W = I/T, b = 0). Defaults
    lambda = mu = 1e-2; the paper selects
    them by cross-validation, which is left to the caller (pass ``odir_lambda``/``odir_mu``).
    Multiclass only."""

    name = "matrix"
    tasks = ("multiclass",)

    def __init__(self, odir_lambda: float = 1e-2, odir_mu: float = 1e-2) -> None:
        super().__init__()
        self.odir_lambda = float(odir_lambda)
        self.odir_mu = float(odir_mu)
        self.matrix: np.ndarray | None = None
        self.bias: np.ndarray | None = None

    def _fit(self, z: np.ndarray, y: np.ndarray) -> None:
        k = z.shape[1]
        off = ~np.eye(k, dtype=bool)
        lam = self.odir_lambda / (k * (k - 1))
        mu = self.odir_mu / k

        def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w = theta[: k * k].reshape(k, k)
            b = theta[k * k :]
            nll, g = _multinomial_nll_grad(z @ w.T + b, y)
            w_off = np.where(off, w, 0.0)
            loss = nll + lam * float((w_off**2).sum()) + mu * float(b @ b)
            gw = g.T @ z + 2.0 * lam * w_off
            gb = g.sum(axis=0) + 2.0 * mu * b
            return loss, np.concatenate([gw.ravel(), gb])

        x0 = np.concatenate([np.eye(k).ravel() / _warm_temperature(z, y), np.zeros(k)])
        res = minimize(fun, x0, jac=True, method="L-BFGS-B", options={"maxiter": 2000, "gtol": 1e-7})
        _check_converged(res, self.name)
        self.matrix = res.x[: k * k].reshape(k, k).copy()
        self.bias = res.x[k * k :].copy()

    def _predict(self, z: np.ndarray) -> np.ndarray:
        return softmax(z @ self.matrix.T + self.bias)

    def _params(self) -> dict:
        return {
            "matrix": self.matrix.tolist(),
            "bias": as_float_list(self.bias),
            "odir_lambda": self.odir_lambda,
            "odir_mu": self.odir_mu,
        }

    def _load(self, params: dict) -> None:
        k = self.n_classes
        m = np.asarray(params["matrix"], dtype=np.float64)
        if m.shape != (k, k) or not np.all(np.isfinite(m)):
            raise ValueError(f"matrix must be a finite {k}x{k} array")
        self.matrix = m
        self.bias = _vector(params["bias"], k, "bias")
        self.odir_lambda = float(params.get("odir_lambda", 1e-2))
        self.odir_mu = float(params.get("odir_mu", 1e-2))


def _warm_temperature(z: np.ndarray, y: np.ndarray) -> float:
    """Start vector/matrix scaling at the temperature-scaled map: most of the fit is the common scale,
    and L-BFGS needs far fewer steps from there (T = 1 if temperature has no finite optimum)."""
    try:
        cal = TemperatureScaling()
        cal._fit(z, y)
        return float(cal.temperature)
    except CalibrationFitError:
        return 1.0


def _check_converged(res, name: str) -> None:
    if not np.all(np.isfinite(res.x)) or not np.isfinite(res.fun):
        raise CalibrationFitError(f"{name}: the fit diverged (non-finite parameters)")
    if np.max(np.abs(res.x)) > 1e4:
        raise CalibrationFitError(
            f"{name}: the fitted parameters diverge (|param| > 1e4): the fitting cases are (nearly) separable",
            expected="more fitting cases, or a method with fewer parameters (temperature)",
        )


def _vector(values, k: int, what: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.shape != (k,) or not np.all(np.isfinite(v)):
        raise ValueError(f"{what} must be {k} finite numbers")
    return v


def fit_logistic(x: np.ndarray, y: np.ndarray, max_iter: int = 100) -> np.ndarray:
    """Unpenalised logistic regression of 0/1 ``y`` on the columns of ``x`` plus an intercept (last
    coefficient), by Newton's method with step halving. Returns the coefficients."""
    n, d = x.shape
    X = np.hstack([x, np.ones((n, 1))])
    yf = y.astype(np.float64)
    beta = np.zeros(d + 1)
    beta[-1] = np.log(yf.mean() / (1 - yf.mean()))

    def nll(b: np.ndarray) -> float:
        eta = X @ b
        return float(np.mean(np.logaddexp(0.0, eta) - yf * eta))

    f = nll(beta)
    for _ in range(max_iter):
        p = sigmoid(X @ beta)
        grad = X.T @ (p - yf) / n
        hess = (X * (p * (1 - p))[:, None]).T @ X / n
        try:
            step = np.linalg.solve(hess + 1e-12 * np.eye(d + 1), grad)
        except np.linalg.LinAlgError:
            raise CalibrationFitError("logistic fit: the score features are collinear") from None
        t = 1.0
        while True:
            cand = beta - t * step
            fc = nll(cand)
            if fc <= f + 1e-4 * t * float(grad @ -step) or t < 1e-10:
                break
            t *= 0.5
        beta, f_old, f = cand, f, fc
        if np.max(np.abs(grad)) < 1e-12 or abs(f_old - f) < 1e-15:
            break
    if not np.all(np.isfinite(beta)):
        raise CalibrationFitError("logistic fit diverged")
    return beta


class PlattScaling(Calibrator):
    """Platt scaling (Platt, "Probabilistic outputs for support vector machines", 1999), here on the
    model's logit: ``p = sigmoid(a z + b)``, unpenalised maximum likelihood (Newton's method), with the
    0/1 labels as targets (the same fit as logistic regression on z; Platt's smoothed targets are not
    used). A fitted slope a <= 0 would reverse the model's ranking: :class:`CalibrationFitError`, as
    for perfectly separated fitting cases (no finite maximum). Binary only."""

    name = "platt"
    tasks = ("binary",)

    def __init__(self) -> None:
        super().__init__()
        self.slope: float | None = None
        self.intercept: float | None = None

    def _fit(self, z: np.ndarray, y: np.ndarray) -> None:
        check_separable_binary(z, y, self.name)
        a, b = fit_logistic(z[:, None], y)
        if a <= 0:
            raise CalibrationFitError(
                f"platt: the fitted slope is {a:.3g}: higher scores go with fewer events among the fitting "
                "cases; refusing to reverse the model's ranking",
                expected="a positive association",
            )
        self.slope, self.intercept = float(a), float(b)

    def _predict(self, z: np.ndarray) -> np.ndarray:
        return sigmoid(self.slope * z + self.intercept)

    def _params(self) -> dict:
        return {"slope": self.slope, "intercept": self.intercept}

    def _load(self, params: dict) -> None:
        self.slope, self.intercept = float(params["slope"]), float(params["intercept"])


class BetaCalibration(Calibrator):
    """Beta calibration (Kull, Silva Filho & Flach, "Beta calibration: a well-founded and easily
    implemented improvement on logistic calibration for binary classifiers", AISTATS 2017), the
    three-parameter map ``logit(p) = a ln s - b ln(1 - s) + c`` with s = sigmoid(z), fitted as a logistic
    regression on the features (ln s, -ln(1 - s)). As in the authors' ``betacal`` package, a and b are
    kept >= 0 (monotone map): if the full fit gives a < 0 the model is refitted with a = 0, else if
    b < 0 with b = 0; a remaining negative coefficient would reverse the ranking and raises
    :class:`CalibrationFitError`. Binary only."""

    name = "beta"
    tasks = ("binary",)

    def __init__(self) -> None:
        super().__init__()
        self.a = self.b = self.c = None

    def _fit(self, z: np.ndarray, y: np.ndarray) -> None:
        check_separable_binary(z, y, self.name)
        feats = _beta_features(z)
        a, b, c = fit_logistic(feats, y)
        if a < 0:
            b, c = fit_logistic(feats[:, 1:], y)
            a = 0.0
        elif b < 0:
            a, c = fit_logistic(feats[:, :1], y)
            b = 0.0
        if a < 0 or b < 0 or (a == 0 and b == 0):
            raise CalibrationFitError(
                "beta: the fitted map decreases with the score: higher scores go with fewer events among the "
                "fitting cases; refusing to reverse the model's ranking",
                expected="a positive association",
            )
        self.a, self.b, self.c = float(a), float(b), float(c)

    def _predict(self, z: np.ndarray) -> np.ndarray:
        f = _beta_features(z)
        return sigmoid(self.a * f[:, 0] + self.b * f[:, 1] + self.c)

    def _params(self) -> dict:
        return {"a": self.a, "b": self.b, "c": self.c}

    def _load(self, params: dict) -> None:
        self.a, self.b, self.c = float(params["a"]), float(params["b"]), float(params["c"])


def _beta_features(z: np.ndarray) -> np.ndarray:
    """(ln s, -ln(1 - s)) for s = sigmoid(z), computed from z without rounding s to 0 or 1."""
    return np.column_stack([log_sigmoid(z), -log_sigmoid(-z)])
