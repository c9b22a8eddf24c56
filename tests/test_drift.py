"""Temporal drift: per-window metrics against independent references, detection, false alarms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.special import expit, logit
from sklearn.metrics import roc_auc_score
from statsmodels.stats.proportion import proportion_confint

from validate.analysis.drift import parse_dates, temporal_drift, window_metrics
from validate.errors import InputError
from validate.metrics import MetricSettings

FAST = MetricSettings(n_bootstrap=0)


def _stream(rng, *, months=12, per_month=60, drift_from=None, drift_logit=0.0, year=2023):
    """A calibrated binary model over ``months`` months; from month ``drift_from`` on, the model's logits
    are offset by ``drift_logit`` (scores and calibration drift, labels do not)."""
    n = months * per_month
    month = np.repeat(np.arange(1, months + 1), per_month)
    day = rng.integers(1, 29, n)
    dates = pd.Series([f"{year}-{m:02d}-{d:02d}" for m, d in zip(month, day, strict=True)])
    true_logit = rng.normal(-0.4, 1.5, n)
    y = (rng.uniform(size=n) < expit(true_logit)).astype(float)
    offset = np.where((drift_from is not None) & (month >= (drift_from or 99)), drift_logit, 0.0)
    return y, expit(true_logit + offset), dates


def test_parse_dates_and_bad_date():
    d = parse_dates(pd.Series(["2024-01-03", "", None, "2024-02-29T10:00:00"]))
    assert d.isna().tolist() == [False, True, True, False]
    with pytest.raises(InputError) as err:
        parse_dates(pd.Series(["2024-01-03", "03/01/2024"]), column="acquired_at")
    assert err.value.row == 2 and err.value.field == "acquired_at"
    assert "ISO" in err.value.expected
    # a UTC offset is dropped: the window is the local date on which the case was acquired
    local = parse_dates(pd.Series(["2024-01-31T23:30:00-05:00", "2024-02-01T00:10:00+01:00", "2024-02-02"]))
    assert [str(t.to_period("M")) for t in local] == ["2024-01", "2024-02", "2024-02"]


def test_window_metrics_match_references():
    rng = np.random.default_rng(1)
    y, p, dates = _stream(rng, months=4, per_month=80)
    res = temporal_drift(y, p, dates, settings=MetricSettings(n_bootstrap=200, seed=3))
    months = dates.str[:7].to_numpy()
    assert [w["window"] for w in res["windows"]] == ["2023-01", "2023-02", "2023-03", "2023-04"]
    for w in res["windows"]:
        m = months == w["window"]
        assert w["n"] == m.sum() and w["n_events"] == y[m].sum()
        assert w["auroc"]["estimate"] == pytest.approx(roc_auc_score(y[m], p[m]), abs=1e-12)
        lo, hi = proportion_confint(int(y[m].sum()), int(m.sum()), method="wilson")
        assert (w["prevalence"]["ci_low"], w["prevalence"]["ci_high"]) == pytest.approx((lo, hi), abs=1e-12)
        assert w["mean_score"]["estimate"] == pytest.approx(p[m].mean())
        assert w["mean_score"]["ci_low"] < p[m].mean() < w["mean_score"]["ci_high"]
        assert w["ece"]["ci_low"] <= w["ece"]["ci_high"]
        import statsmodels.api as sm

        glm = sm.GLM(y[m], np.ones((m.sum(), 1)), family=sm.families.Binomial(), offset=logit(p[m])).fit(tol=1e-12)
        assert w["calibration_intercept"]["estimate"] == pytest.approx(glm.params[0], abs=1e-7)
        assert w["start"] == w["window"] + "-01"


def test_injected_drift_flagged_early_windows_not():
    rng = np.random.default_rng(2)
    y, p, dates = _stream(rng, drift_from=7, drift_logit=1.2)
    res = temporal_drift(y, p, dates, settings=FAST)
    assert res["drift"]
    assert res["reference_windows"] == ["2023-01", "2023-02", "2023-03"]
    assert res["flagged_windows"] and all(w >= "2023-07" for w in res["flagged_windows"])
    assert res["first_flagged"] >= "2023-07"
    assert all(w >= "2023-07" for w in res["cusum_alarm_windows"])
    assert res["cusum_alarm_windows"]


def test_no_drift_not_flagged():
    rng = np.random.default_rng(3)
    y, p, dates = _stream(rng)
    res = temporal_drift(y, p, dates, settings=FAST, detector="either")
    assert not res["drift"] and res["flagged_windows"] == [] and res["cusum_alarm_windows"] == []


def test_cusum_by_hand():
    rng = np.random.default_rng(4)
    y, p, dates = _stream(rng, months=8, per_month=40, drift_from=5, drift_logit=0.5)
    res = temporal_drift(y, p, dates, settings=FAST, reference_windows=2)
    month = dates.str[:7].to_numpy()
    ref = np.isin(month, ["2023-01", "2023-02"])
    mu, sd = p[ref].mean(), p[ref].std(ddof=1)
    up = lo = 0.0
    for w in res["windows"][2:]:
        m = month == w["window"]
        z = (p[m].mean() - mu) / (sd * np.sqrt(1 / m.sum() + 1 / ref.sum()))
        up, lo = max(0.0, up + z - 0.5), max(0.0, lo - z - 0.5)
        assert w["cusum"]["score"]["z"] == pytest.approx(z)
        assert w["cusum"]["score"]["upper"] == pytest.approx(up)
        assert w["cusum"]["score"]["lower"] == pytest.approx(lo)
        assert w["cusum"]["score"]["alarm"] == (up > 5 or lo > 5)


def test_window_tests_against_scipy_and_holm():
    rng = np.random.default_rng(5)
    y, p, dates = _stream(rng, months=5, per_month=50)
    res = temporal_drift(y, p, dates, settings=FAST, reference_windows=1)
    month = dates.str[:7].to_numpy()
    ref = month == "2023-01"
    w = res["windows"][3]
    m = month == w["window"]
    assert w["tests"]["score"]["p_value"] == pytest.approx(stats.ks_2samp(p[m], p[ref]).pvalue)
    t = stats.ttest_ind(y[m] - p[m], y[ref] - p[ref], equal_var=False)
    assert w["tests"]["calibration"]["statistic"] == pytest.approx(t.statistic)
    assert w["tests"]["calibration"]["p_value"] == pytest.approx(t.pvalue)
    from statsmodels.stats.multitest import multipletests

    fam = [t for w in res["windows"] if w["tests"] for t in w["tests"].values() if t["p_value"] is not None]
    assert len(fam) == 16
    assert np.allclose([t["p_adjusted"] for t in fam], multipletests([t["p_value"] for t in fam], method="holm")[1])


def test_false_alarm_rate_of_drift_flag():
    """Streams without drift: the share with any flagged window stays inside the binomial 99% band
    around alpha or below it (Holm over all windows' tests controls the family-wise error rate)."""
    rng = np.random.default_rng(6)
    reps, alpha = 100, 0.05
    alarms = 0
    for _ in range(reps):
        y, p, dates = _stream(rng, months=6, per_month=40)
        alarms += temporal_drift(y, p, dates, settings=FAST, alpha=alpha, tests=("score", "calibration"))["drift"]
    assert alarms <= stats.binom.ppf(0.995, reps, alpha)


def test_gaps_undated_and_single_window():
    y = np.array([0, 1, 0, 1, 1, 0, 1, 0], float)
    p = np.linspace(0.1, 0.9, 8)
    dates = pd.Series(["2024-01-05", "2024-01-20", None, "2024-03-02", "2024-03-09", "2024-03-30", "", "2024-01-09"])
    res = temporal_drift(y, p, dates, settings=FAST, reference_windows=1)
    assert res["n_undated"] == 2 and res["n_dated"] == 6
    assert [w["window"] for w in res["windows"]] == ["2024-01", "2024-02", "2024-03"]
    feb = res["windows"][1]
    assert feb["n"] == 0 and feb["auroc"]["estimate"] is None and feb["tests"] is None
    assert res["windows"][2]["insufficient"]
    one = temporal_drift(y[:2], p[:2], dates[:2], settings=FAST)
    assert not one["drift"] and "single window" in one["reason"]


def test_clustered_bootstrap_is_deterministic():
    rng = np.random.default_rng(7)
    y, p, dates = _stream(rng, months=3, per_month=40)
    clusters = np.repeat(np.arange(60), 2)
    s = MetricSettings(n_bootstrap=100, seed=1)
    a = temporal_drift(y, p, dates, settings=s, clusters=clusters)
    b = temporal_drift(y, p, dates, settings=s, clusters=clusters)
    assert a == b


def test_weekly_windows():
    rng = np.random.default_rng(8)
    y, p, dates = _stream(rng, months=2, per_month=50)
    res = temporal_drift(y, p, dates, freq="W", settings=FAST)
    assert sum(w["n"] for w in res["windows"]) == 100
    with pytest.raises(InputError):
        temporal_drift(y, p, dates, freq="fortnight", settings=FAST)


def test_window_metrics_single_class():
    out = window_metrics(np.zeros(5), np.full(5, 0.2), settings=FAST)
    assert out["auroc"]["estimate"] is None and out["auroc"]["reason"]
    assert out["prevalence"]["estimate"] == 0.0


def test_shift_report_drift_section():
    from validate.analysis.shift import shift_report

    rng = np.random.default_rng(9)
    y, p, dates = _stream(rng, drift_from=7, drift_logit=1.2)
    y0, p0, _ = _stream(rng, months=4, per_month=50)
    table = pd.DataFrame(
        {
            "site": ["dev"] * y0.size + ["later"] * y.size,
            "y": np.r_[y0, y],
            "p": np.r_[p0, p],
            "acquired_at": [None] * y0.size + dates.tolist(),
        }
    )
    rep = shift_report(table, dev_sites="dev", external_sites="later", attributes=None, metric_settings=FAST)
    assert list(rep["drift"]["sites"]) == ["later"]
    assert rep["drift"]["drift"] and rep["drift"]["flagged_sites"] == ["later"]
    from validate.io import to_json_text

    to_json_text(rep)
