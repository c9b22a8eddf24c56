"""shift_report: injected shifts are flagged, exchangeable sites are not, false alarms stay at alpha."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.special import expit

from validate.analysis.shift import shift_report
from validate.errors import InputError
from validate.io import to_json_text


def _site(
    name: str,
    n: int,
    rng,
    *,
    age_shift=0.0,
    prevalence=0.4,
    missing_rate=0.05,
    contrast=1.0,
    manufacturer=("GE", "Siemens"),
    emb_shift=0.0,
    size=28,
) -> pd.DataFrame:
    """Cases of one simulated site: a calibrated logistic world, y drawn first (so prevalence can move
    without the class-conditional distributions moving: pure prior shift)."""
    y = (rng.uniform(size=n) < prevalence).astype(int)
    marker = rng.normal(np.where(y == 1, 0.8, -0.8), 1.0)
    # a model calibrated at prevalence 0.4: logit = log LR + logit(0.4); the log LR of N(±0.8, 1) is 1.6 x
    logit = 1.6 * marker + np.log(0.4 / 0.6)
    age = rng.normal(60 + age_shift, 12, n).round()
    sex = rng.choice(["F", "M"], n)
    chol = rng.normal(240, 40, n)
    chol[rng.uniform(size=n) < missing_rate] = np.nan
    img_mean = rng.normal(0.45, 0.05, n)
    img_std = rng.normal(0.2, 0.03, n) * contrast
    frame = pd.DataFrame(
        {
            "case_id": [f"{name}-{i}" for i in range(n)],
            "site": name,
            "patient_id": [f"{name}-{i}" for i in range(n)],
            "y": y,
            "logit": logit,
            "age": age,
            "sex": sex,
            "chol": chol,
            "img_mean": img_mean,
            "img_std": img_std,
            "img_height": size,
            "img_width": size,
            "manufacturer": rng.choice(list(manufacturer), n),
        }
    )
    emb = rng.normal(emb_shift, 1.0, (n, 4))
    for j in range(4):
        frame[f"emb_{j}"] = emb[:, j]
    return frame


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    rng = np.random.default_rng(2024)
    parts = [
        _site("dev", 600, rng),
        _site("same", 300, rng),
        _site("older", 300, rng, age_shift=8.0),
        _site("prevalent", 300, rng, prevalence=0.7),
        _site("gaps", 300, rng, missing_rate=0.4),
        _site("scanner", 300, rng, contrast=0.6, manufacturer=("Philips",), emb_shift=0.5, size=32),
    ]
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def report(table) -> dict:
    return shift_report(
        table,
        dev_sites="dev",
        external_sites=["same", "older", "prevalent", "gaps", "scanner"],
        attributes=["age", "sex"],
        features=["chol"],
        n_permutations=200,
    )


def _top(site: dict) -> str:
    return site["ranking"][0]["id"]


def test_json_ready_and_deterministic(table, report):
    text = to_json_text(report)  # raises on NaN/inf or unserialisable values
    again = shift_report(
        table,
        dev_sites="dev",
        external_sites=["same", "older", "prevalent", "gaps", "scanner"],
        attributes=["age", "sex"],
        features=["chol"],
        n_permutations=200,
    )
    assert to_json_text(again) == text
    assert json.loads(text)["schema"] == "validate.shift/1"


def test_columns_discovered(report):
    cols = report["columns"]
    assert cols["attributes"] == {"age": "numeric", "sex": "categorical"}
    assert cols["image_stats"] == ["img_mean", "img_std"]
    assert cols["image_size"] is True and cols["equipment"] == ["manufacturer"] and cols["embedding"] == 4


def test_unshifted_site_not_flagged(report):
    site = report["sites"]["same"]
    assert not site["flagged"], site["ranking"][:3]
    assert "same" not in report["flagged_sites"]


@pytest.mark.parametrize(
    "name,top", [("older", "case_mix:age"), ("prevalent", "labels:prevalence"), ("gaps", "missingness:chol")]
)
def test_injected_shift_flagged_and_ranked_first(report, name, top):
    site = report["sites"][name]
    assert site["flagged"] and site["material"]
    assert _top(site) == top
    assert name in report["flagged_sites"]


def test_image_shift(report):
    site = report["sites"]["scanner"]
    assert site["flagged"]
    assert site["images"]["intensity"]["img_std"]["flagged"]
    assert not site["images"]["intensity"]["img_mean"]["flagged"]
    assert site["images"]["size"]["flagged"]
    assert site["equipment"]["manufacturer"]["flagged"]
    assert site["embedding"]["flagged"]
    assert not report["sites"]["same"]["embedding"]["flagged"]


def test_values_match_independent_references(table, report):
    dev, ext = table[table.site == "dev"], table[table.site == "older"]
    site = report["sites"]["older"]
    p_dev, p_ext = expit(dev["logit"]), expit(ext["logit"])
    ks = stats.ks_2samp(p_ext, p_dev)
    assert site["scores"]["p"]["statistic"] == pytest.approx(ks.statistic)
    assert site["scores"]["p"]["p_value"] == pytest.approx(ks.pvalue)
    assert site["scores"]["p"]["wasserstein"] == pytest.approx(stats.wasserstein_distance(p_ext, p_dev))
    a, b = ext["age"].to_numpy(), dev["age"].to_numpy()
    smd = (a.mean() - b.mean()) / np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    assert site["case_mix"]["age"]["effect"] == pytest.approx(smd)
    chi2, p, _, _ = stats.chi2_contingency(
        pd.crosstab(pd.concat([ext, dev]).site, pd.concat([ext, dev]).sex), correction=False
    )
    assert site["case_mix"]["sex"]["statistic"] == pytest.approx(chi2)
    assert site["case_mix"]["sex"]["p_value"] == pytest.approx(p)
    prev = site["labels"]["prevalence"]
    assert prev["effect"] == pytest.approx(ext.y.mean() - dev.y.mean())


def test_holm_family_and_ranking(report):
    site = report["sites"]["older"]
    rows = site["ranking"]
    tested = [r for r in rows if r["p_value"] is not None]
    assert site["n_tests"] == len(tested)
    from statsmodels.stats.multitest import multipletests

    ref = multipletests([r["p_value"] for r in tested], method="holm")[1]
    assert np.allclose([r["p_adjusted"] for r in tested], ref)
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    flags = [r["flagged"] for r in rows]
    assert flags == sorted(flags, reverse=True)  # flagged findings come first


def test_prior_shift_section(report):
    ps = report["sites"]["prevalent"]["prior_shift"]
    assert ps["old_prior"] == pytest.approx(report["development"]["prevalence"])
    assert ps["plain"]["estimate"] > 0.5
    assert ps["explained"] > 0.8  # a pure prior shift: the prevalence explains calibration-in-the-large
    assert abs(ps["em"]["prior"] - ps["site_prevalence"]) < 0.06


def _null_pair(rng, n_dev: int, n_site: int) -> pd.DataFrame:
    """A development site and a site drawn from the same distribution, as plain numpy columns."""
    n = n_dev + n_site
    y = (rng.uniform(size=n) < 0.4).astype(int)
    chol = rng.normal(240, 40, n)
    chol[rng.uniform(size=n) < 0.05] = np.nan
    return pd.DataFrame(
        {
            "site": np.r_[np.full(n_dev, "dev"), np.full(n_site, "null")],
            "y": y,
            "logit": 1.6 * rng.normal(np.where(y == 1, 0.8, -0.8), 1.0) + np.log(0.4 / 0.6),
            "age": rng.normal(60, 12, n).round(),
            "sex": rng.choice(np.array(["F", "M"]), n),
            "chol": chol,
        }
    )


def test_false_alarm_rate_near_alpha():
    """200 replicates, each a fresh development site and a site drawn from the same distribution
    (prevalence, case mix, scores, missingness): the share of sites flagged stays inside the binomial
    99% band around alpha (Holm controls the family-wise error rate of each site's five tests)."""
    rng = np.random.default_rng(99)
    reps, alpha = 200, 0.05
    flagged = 0
    for _ in range(reps):
        rep = shift_report(
            _null_pair(rng, 300, 150),
            dev_sites="dev",
            external_sites="null",
            attributes=["age", "sex"],
            features=["chol"],
            alpha=alpha,
        )
        assert rep["sites"]["null"]["n_tests"] == 5
        flagged += bool(rep["flagged_sites"])
    lo, hi = stats.binom.ppf([0.005, 0.995], reps, alpha)
    assert lo <= flagged <= hi, flagged


def test_bh_correction_option(table):
    rep = shift_report(
        table, dev_sites="dev", external_sites=["older"], attributes=["age"], correction="bh", n_permutations=50
    )
    rows = rep["sites"]["older"]["ranking"]
    assert rep["correction"] == "bh"
    assert all(r["p_adjusted"] is None or r["p_adjusted"] <= 1 for r in rows)


def test_untestable_findings_carry_reasons(table):
    t = table.copy()
    t["complete"] = 1.0
    rep = shift_report(
        t, dev_sites="dev", external_sites=["same"], attributes=None, features=["complete"], n_permutations=50
    )
    miss = rep["sites"]["same"]["missingness"]["complete"]
    assert miss["p_value"] is None and miss["reason"] == "no missing values at either site"
    assert rep["sites"]["same"]["ranking"][-1]["reason"]


def test_equipment_not_recorded_at_development(table):
    t = table.copy()
    t.loc[t.site == "dev", "manufacturer"] = None
    rep = shift_report(t, dev_sites="dev", external_sites=["scanner"], attributes=None, n_permutations=50)
    eq = rep["sites"]["scanner"]["equipment"]["manufacturer"]
    assert eq["p_value"] is None and eq["reason"] == "not recorded at the development site"


def test_probability_column_instead_of_logit(table):
    t = table.drop(columns="logit").assign(p=expit(table["logit"]))
    rep = shift_report(t, dev_sites="dev", external_sites=["prevalent"], attributes=None, n_permutations=50)
    assert rep["sites"]["prevalent"]["labels"]["prevalence"]["flagged"]


def test_bad_input_messages(table):
    with pytest.raises(InputError, match="has no cases"):
        shift_report(table, dev_sites="nowhere", external_sites=["same"], attributes=None)
    with pytest.raises(InputError) as err:
        shift_report(table, dev_sites="dev", external_sites=["same"], attributes=["height"])
    assert err.value.field == "height"
    with pytest.raises(InputError, match="both development and external"):
        shift_report(table, dev_sites="dev", external_sites=["dev"], attributes=None)
    bad = table.copy()
    bad.loc[3, "logit"] = np.nan
    with pytest.raises(InputError) as err:
        shift_report(bad, dev_sites="dev", external_sites=["same"], attributes=None)
    assert err.value.field == "logit" and err.value.row == 4
    with pytest.raises(InputError, match="feature not in"):
        shift_report(table, dev_sites="dev", external_sites=["same"], attributes=None, features=["bmi"])


def test_multiclass_class_mix_scores_and_em():
    rng = np.random.default_rng(31)
    means = np.array([-2.0, 0.0, 2.0])

    def site(name, prior, n):
        y = rng.choice(3, n, p=prior)
        x = rng.normal(means[y], 1.0)
        logits = -0.5 * (x[:, None] - means[None, :]) ** 2  # calibrated at equal priors
        return pd.DataFrame(
            {"site": name, "y": y, **{f"logit_{c}": logits[:, j] for j, c in enumerate(["a", "b", "c"])}}
        )

    table = pd.concat(
        [site("dev", [1 / 3] * 3, 3000), site("same", [1 / 3] * 3, 1500), site("skewed", [0.6, 0.3, 0.1], 1500)],
        ignore_index=True,
    )
    rep = shift_report(table, dev_sites="dev", external_sites=["same", "skewed"], attributes=None)
    assert rep["task"] == "multiclass"
    skewed = rep["sites"]["skewed"]
    assert skewed["labels"]["class_mix"]["flagged"] and set(skewed["scores"]) == {"a", "b", "c"}
    assert np.allclose(skewed["prior_shift"]["em"]["prior"], [0.6, 0.3, 0.1], atol=0.04)
    assert not rep["sites"]["same"]["flagged"]


def test_multilabel_per_label_prevalence():
    rng = np.random.default_rng(32)

    def site(name, prev, n):
        ys = {f"y_{lab}": (rng.uniform(size=n) < p).astype(int) for lab, p in prev.items()}
        logits = {f"logit_{lab}": rng.normal(0, 1, n) + 2 * ys[f"y_{lab}"] - 1 for lab in prev}
        return pd.DataFrame({"site": name, **ys, **logits})

    table = pd.concat(
        [site("dev", {"edema": 0.3, "nodule": 0.2}, 1000), site("ext", {"edema": 0.6, "nodule": 0.2}, 600)],
        ignore_index=True,
    )
    rep = shift_report(table, dev_sites="dev", external_sites="ext", attributes=None)
    assert rep["task"] == "multilabel"
    labels = rep["sites"]["ext"]["labels"]
    assert labels["edema"]["flagged"] and not labels["nodule"]["flagged"]
    assert set(rep["sites"]["ext"]["prior_shift"]) == {"edema", "nodule"}
    to_json_text(rep)


def test_bad_rows_named_by_table_row(table):
    bad = table.copy()
    row = int(np.flatnonzero(bad.site == "older")[5])
    bad.loc[row, "y"] = 2
    with pytest.raises(InputError) as err:
        shift_report(bad, dev_sites="dev", external_sites=["older"], attributes=None)
    assert err.value.row == row + 1 and err.value.field == "y" and err.value.expected == "0 or 1"
