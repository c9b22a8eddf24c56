"""Paired model-vs-model comparison (validate/analysis/comparison.py) and its comparison.json contract.

References are independent of the code under test: each bootstrap Δ interval is recomputed by a naive
loop over the same replicate weights with scikit-learn (brier_score_loss, log_loss, average_precision_score
with sample_weight), statsmodels GLMs with frequency weights (calibration intercept and slope) and
hand-written binned errors and operating points; AUROC against scikit-learn here and against
pROC::roc.test in tests/test_metrics_r.py. The second model is an honest second scorer: a logistic
regression on a feature subset fitted with scikit-learn on Cleveland.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from validate import contract
from validate.analysis.comparison import BINARY_ONLY, compare, match_cases
from validate.errors import InputError
from validate.metrics.bootstrap import bootstrap_weights
from validate.metrics.settings import MetricSettings
from validate.predictions import PredictionsTable, cluster_keys, table_from_frame

from test_run_helpers import synthetic_bundle  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[1]
HEART = REPO / "sample_sites" / "heart"
HEART_SITES = ("cleveland", "hungary", "switzerland", "va")
SUBSET = ["age", "sex", "trestbps", "thalach", "exang", "oldpeak"]
N_BOOT = 200


# ---- the two heart models ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def heart_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(new, baseline) predictions frames on the four UCI hospitals: new = the shipped heart model
    (logits), baseline = scikit-learn's LogisticRegression (C = 0.1) on six features standardised and
    mean-imputed with Cleveland's values, fitted on Cleveland (its decision function as logits)."""
    import torch
    from sklearn.linear_model import LogisticRegression

    spec = importlib.util.spec_from_file_location("heart_model_def_cmp", HEART / "model_def.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    net = mod.build_model()
    net.load_state_dict(torch.load(HEART / "model_state.pt", weights_only=True))
    net.eval()
    raw = {s: pd.read_csv(HEART / f"{s}.csv", dtype={"case_id": str, "patient_id": str}) for s in HEART_SITES}
    dev = raw["cleveland"][SUBSET].astype(float)
    mean, std = dev.mean(), dev.std(ddof=0)

    def encode(df):
        return ((df[SUBSET].astype(float) - mean) / std).fillna(0.0).to_numpy()

    second = LogisticRegression(C=0.1, tol=1e-10, max_iter=10000).fit(encode(raw["cleveland"]), raw["cleveland"].label)
    new, base = [], []
    for s, df in raw.items():
        with torch.no_grad():
            z = net(torch.tensor(df[mod.FEATURES].to_numpy(dtype=np.float32))).numpy()[:, 0].astype(np.float64)
        ids = {"case_id": df.case_id, "site": s, "patient_id": df.patient_id, "y": df.label}
        new.append(pd.DataFrame({**ids, "logit": z, "sex": df.sex_label}))
        base.append(pd.DataFrame({**ids, "logit": second.decision_function(encode(df))}))
    return pd.concat(new, ignore_index=True), pd.concat(base, ignore_index=True)


def heart_pair() -> tuple[PredictionsTable, PredictionsTable]:
    new, base = heart_frames()
    return table_from_frame(new.copy()), table_from_frame(base.copy())


@functools.lru_cache(maxsize=4)
def heart_comparison(n_boot: int = N_BOOT) -> dict:
    new, base = heart_pair()
    return compare(
        new,
        base,
        settings=MetricSettings(n_bootstrap=n_boot),
        subgroups={"sex": new.frame["sex"]},
        new_label="heart model",
        baseline_label="six-feature LR",
    )


def _entries(out: dict):
    """(where, metric, entry) of every Δ entry in a comparison, operating points included."""
    blocks = [("overall", out["overall"])] + [(f"site {s}", b) for s, b in out["sites"].items()]
    for attr, cells in out["subgroups"].items():
        for g, cell in cells.items():
            blocks.append((f"{attr}={g}", cell["overall"]))
            blocks += [(f"{attr}={g} at {s}", b) for s, b in cell["sites"].items()]
    for where, b in blocks:
        for m, e in b["metrics"].items():
            yield where, m, e
        for op in b.get("operating_points", []):
            for m, e in op["metrics"].items():
                yield f"{where} @ {op['threshold']}", m, e


# ---- identical models -------------------------------------------------------------------------------


def test_same_predictions_as_both_models_give_exactly_zero():
    new, _ = heart_pair()
    out = compare(new, new, settings=MetricSettings(n_bootstrap=N_BOOT), subgroups={"sex": new.frame["sex"]})
    seen = set()
    for where, m, e in _entries(out):
        seen.add(m)
        assert e["delta"] == 0.0, (where, m)
        if e["ci_low"] is None:
            # the smoothed errors' intervals are opt-in (one smoother fit per replicate)
            assert m in ("eavg", "e50", "e90", "emax", "ici") and "note" in e, (where, m)
        else:
            assert (e["ci_low"], e["ci_high"]) == (0.0, 0.0), (where, m, e)
        assert e["p_value"] in (None, 1.0), (where, m)
    assert {"auroc", "auprc", "brier", "ece", "calibration_slope", "sensitivity"} <= seen


def test_same_predictions_smoothed_errors_with_intervals_are_zero_too():
    new, _ = heart_pair()
    va = new.site("va")
    out = compare(va, va, settings=MetricSettings(n_bootstrap=20), smooth_intervals=True)
    for m in ("eavg", "e50", "e90", "emax", "ici"):
        e = out["overall"]["metrics"][m]
        assert (e["delta"], e["ci_low"], e["ci_high"]) == (0.0, 0.0, 0.0), m


# ---- the bootstrap Δ intervals against a naive loop ---------------------------------------------------


def _bins(p: np.ndarray, bins: int = 15) -> np.ndarray:
    """Equal-width bins, right-closed (a, b], 0 in the first."""
    return np.searchsorted(np.linspace(0, 1, bins + 1)[1:-1], p, side="left")


def _naive_metrics(y: np.ndarray, p: np.ndarray, z: np.ndarray, w: np.ndarray) -> dict[str, float]:
    """Every bootstrap-compared metric of one replicate (frequency weights w), written independently."""
    import statsmodels.api as sm
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss

    from validate.metrics.calibration import ece_adaptive

    out = {}
    keep = w > 0
    yk, pk, zk, wk = y[keep], p[keep], z[keep], w[keep]
    out["brier"] = brier_score_loss(yk, pk, sample_weight=wk)
    prev = np.sum(wk * yk) / wk.sum()
    out["scaled_brier"] = 1 - out["brier"] / (prev * (1 - prev)) if 0 < prev < 1 else np.nan
    out["log_loss"] = log_loss(yk, np.clip(pk, 1e-15, 1 - 1e-15), sample_weight=wk, labels=[0, 1])
    out["auprc"] = average_precision_score(yk, zk, sample_weight=wk) if yk.any() else np.nan
    b = _bins(pk)
    gaps = np.array([abs(np.sum(wk[b == i] * (yk[b == i] - pk[b == i]))) for i in range(15)])
    counts = np.array([np.sum(wk[b == i]) for i in range(15)])
    out["ece"] = gaps.sum() / wk.sum()
    out["mce"] = max(gaps[i] / counts[i] for i in range(15) if counts[i] > 0)
    # adaptive ECE on the resampled cases themselves (each case repeated as often as it was drawn)
    rep = np.repeat(np.arange(yk.size), wk.astype(int))
    out["ece_adaptive"] = ece_adaptive(yk[rep], pk[rep])
    call = pk >= 0.5
    tp, fn = np.sum(wk * (yk == 1) * call), np.sum(wk * (yk == 1) * ~call)
    fp, tn = np.sum(wk * (yk == 0) * call), np.sum(wk * (yk == 0) * ~call)
    with np.errstate(invalid="ignore", divide="ignore"):
        out.update(sensitivity=tp / (tp + fn), specificity=tn / (tn + fp), ppv=tp / (tp + fp), npv=tn / (tn + fn))
    if 0 < prev < 1:
        fam = sm.families.Binomial()
        out["calibration_intercept"] = (
            sm.GLM(yk, np.ones((yk.size, 1)), family=fam, offset=zk, freq_weights=wk).fit(tol=1e-14).params[0]
        )
        out["calibration_slope"] = sm.GLM(yk, sm.add_constant(zk), family=fam, freq_weights=wk).fit(tol=1e-14).params[1]
    return out


CASES = {
    "heart overall (stratified by site)": ("heart", None),
    "heart site va": ("heart", "va"),
    "clustered synthetic (patients with several cases)": ("clustered", None),
}


def _clustered_pair() -> tuple[PredictionsTable, PredictionsTable]:
    """Two correlated models on 400 cases of 130 patients at two sites."""
    rng = np.random.default_rng(7)
    n = 400
    patient = rng.integers(0, 130, n)
    frailty = rng.normal(0, 1, 130)[patient]
    y = (rng.random(n) < 1 / (1 + np.exp(-(frailty - 0.3)))).astype(int)
    z1 = frailty + rng.normal(0, 0.7, n)
    z2 = 0.6 * z1 + rng.normal(0, 0.6, n) + 0.2
    ids = {
        "case_id": [f"c{i}" for i in range(n)],
        "site": np.where(np.arange(n) < 250, "a", "b"),
        "patient_id": [f"p{k}" for k in patient],
        "y": y,
    }
    return table_from_frame(pd.DataFrame({**ids, "logit": z1})), table_from_frame(pd.DataFrame({**ids, "logit": z2}))


@pytest.mark.parametrize("case", CASES)
def test_bootstrap_delta_intervals_equal_a_naive_loop_over_the_same_weights(case):
    data, site = CASES[case]
    new, base = heart_pair() if data == "heart" else _clustered_pair()
    settings = MetricSettings(n_bootstrap=N_BOOT)
    if site is not None:
        new, base = new.site(site), base.site(site)
    out = compare(new, base, settings=settings)
    block = out["sites"][site] if site is not None else out["overall"]
    # the metrics blocks' resampling: patient clusters where a patient repeats, sites as strata when pooled
    keys = cluster_keys(new.frame, "patient_id")
    clusters = keys if pd.Series(keys).duplicated().any() else None
    strata = new.site_ids if site is None else None
    weights = bootstrap_weights(N_BOOT, len(new), clusters=clusters, strata=strata, seed=settings.seed)
    y = new.y()
    reps = {}
    for w in weights:
        a = _naive_metrics(y, new.prob(), new.logit(), w)
        b = _naive_metrics(y, base.prob(), base.logit(), w)
        for m in a:
            reps.setdefault(m, []).append(a[m] - b[m])
    assert set(reps) <= set(block["metrics"])
    for m, d in reps.items():
        d = np.asarray(d, dtype=float)
        lo, hi = np.quantile(d[np.isfinite(d)], [0.025, 0.975])
        e = block["metrics"][m]
        assert e["method"] == "bootstrap_paired" and e["p_value"] is None
        # closed forms to 1e-12; the iterative logistic fits (two different solvers) to 1e-8
        tol = 1e-8 if m.startswith("calibration_") else 1e-12
        assert e["ci_low"] == pytest.approx(lo, abs=tol), m
        assert e["ci_high"] == pytest.approx(hi, abs=tol), m
        point_a = _naive_metrics(y, new.prob(), new.logit(), np.ones(len(y)))[m]
        point_b = _naive_metrics(y, base.prob(), base.logit(), np.ones(len(y)))[m]
        assert e["new"] == pytest.approx(point_a, abs=tol) and e["baseline"] == pytest.approx(point_b, abs=tol), m
        assert e["delta"] == pytest.approx(point_a - point_b, abs=2 * tol), m


def test_auroc_delta_is_the_paired_delong_on_the_logits():
    from sklearn.metrics import roc_auc_score

    new, base = heart_pair()
    out = heart_comparison()
    for site in HEART_SITES:
        e = out["sites"][site]["metrics"]["auroc"]
        mask = new.site_ids == site
        assert e["method"] == "delong_paired"
        assert e["new"] == pytest.approx(roc_auc_score(new.y()[mask], new.logit()[mask]), abs=1e-12)
        assert e["baseline"] == pytest.approx(roc_auc_score(base.y()[mask], base.logit()[mask]), abs=1e-12)
        assert e["ci_low"] < e["delta"] < e["ci_high"] and 0 <= e["p_value"] <= 1


def test_block_estimates_equal_the_metrics_blocks():
    """Each model's side of a Δ is the estimate its own metrics.json block reports."""
    from validate.metrics import metrics_report

    new, base = heart_pair()
    out = heart_comparison()
    settings = MetricSettings(n_bootstrap=0)
    for side, table in (("new", new), ("baseline", base)):
        rep = metrics_report(table, settings=settings, smooth_intervals=False)
        for where, block in [("overall", out["overall"])] + list(out["sites"].items()):
            ref = rep["overall"] if where == "overall" else rep["sites"][where]
            for m, e in block["metrics"].items():
                assert e[side] == pytest.approx(ref[m]["estimate"], rel=1e-12, abs=1e-15), (side, where, m)


# ---- paired versus independent intervals -----------------------------------------------------------------


def _mover(d1: dict, d2: dict) -> tuple[float, float]:
    """MOVER interval of θ1 − θ2 from two independent intervals (Newcombe 1998; Zou & Donner 2008)."""
    t1, l1, u1 = d1["estimate"], d1["ci_low"], d1["ci_high"]
    t2, l2, u2 = d2["estimate"], d2["ci_low"], d2["ci_high"]
    diff = t1 - t2
    return diff - np.hypot(t1 - l1, u2 - t2), diff + np.hypot(u1 - t1, t2 - l2)


def test_paired_interval_is_narrower_than_mover_on_correlated_models():
    from validate.metrics.blocks import binary_block

    new, base = heart_pair()
    out = heart_comparison()
    settings = MetricSettings(n_bootstrap=N_BOOT)
    blocks = [
        binary_block(t.y(), t.prob(), settings=settings, strata=t.site_ids, logits=t.logit(), smooth_intervals=False)
        for t in (new, base)
    ]
    for m in ("auroc", "auprc", "brier", "log_loss"):
        lo, hi = _mover(blocks[0][m], blocks[1][m])
        e = out["overall"]["metrics"][m]
        assert e["ci_high"] - e["ci_low"] < hi - lo, m


# ---- blocks, subgroups, insufficiency ---------------------------------------------------------------------


def test_blocks_cover_sites_subgroups_and_intersections_and_mark_insufficient_ones():
    out = heart_comparison()
    assert out["matched"] == {
        "n": 920,
        "n_new_only": 0,
        "n_baseline_only": 0,
        "sites": {"cleveland": 303, "hungary": 294, "switzerland": 123, "va": 200},
    }
    assert list(out["sites"]) == list(HEART_SITES)
    assert set(out["subgroups"]["sex"]) == {"female", "male"}
    female = out["subgroups"]["sex"]["female"]
    assert female["overall"]["n"] == sum(b["n"] for b in female["sites"].values())
    # Switzerland: 115 events, 8 non-events < min_events 10 — kept and marked
    swiss = out["sites"]["switzerland"]
    assert swiss["insufficient"] and "8 non-events < min_events 10" in swiss["reason"]
    assert swiss["metrics"]["auroc"]["delta"] is not None
    assert out["level"] == 0.95 and out["n_boot"] == N_BOOT and out["seed"] == 0
    assert out["new"]["label"] == "heart model" and out["baseline"]["label"] == "six-feature LR"


def test_one_class_block_lists_undefined_metrics_with_the_reason():
    new, base = heart_pair()
    # Swiss women: every one of them has the disease in this cohort? Build a block that surely has one class
    keep = (new.site_ids == "switzerland") & (new.y() == 1)
    out = compare(new.subset(keep), base.subset(keep), settings=MetricSettings(n_bootstrap=20))
    block = out["overall"]
    assert "auroc" not in block["metrics"] and "only one class present (no non-events)" in block["undefined"]["auroc"]
    assert "specificity" in block["undefined"]
    assert block["metrics"]["brier"]["delta"] is not None
    json.dumps(out, allow_nan=False)  # undefined numbers are null, never NaN


# ---- matching ---------------------------------------------------------------------------------------------


def test_partial_overlap_is_matched_and_counted():
    new_f, base_f = heart_frames()
    base_f = base_f.drop(index=range(10)).copy()  # ten Cleveland cases the baseline did not score
    extra = base_f.iloc[:3].assign(case_id=["x1", "x2", "x3"], patient_id=["x1", "x2", "x3"])
    base_f = pd.concat([extra, base_f.iloc[::-1]], ignore_index=True)  # in another order, with extras
    new, base = table_from_frame(new_f.copy()), table_from_frame(base_f)
    a, b, matched = match_cases(new, base)
    assert matched["n"] == 910 and matched["n_new_only"] == 10 and matched["n_baseline_only"] == 3
    assert matched["sites"]["cleveland"] == 293
    assert list(a.case_ids) == list(b.case_ids) and list(a.site_ids) == list(b.site_ids)
    assert np.array_equal(a.y(), b.y())
    out = compare(new, base, settings=MetricSettings(n_bootstrap=0), subgroups={"sex": new.frame["sex"]})
    assert out["overall"]["n"] == 910 and out["matched"] == matched
    assert sum(c["overall"]["n"] for c in out["subgroups"]["sex"].values()) == 910


def test_mismatched_labels_are_bad_input_naming_site_and_case():
    new_f, base_f = heart_frames()
    base_f = base_f.copy()
    i = int(np.flatnonzero(base_f.site == "hungary")[5])
    base_f.loc[i, "y"] = 1 - base_f.loc[i, "y"]
    with pytest.raises(InputError) as exc:
        match_cases(table_from_frame(new_f.copy()), table_from_frame(base_f))
    msg = str(exc.value)
    assert "'hungary'" in msg and repr(base_f.loc[i, "case_id"]) in msg and exc.value.field == "y"


def test_no_common_case_is_bad_input():
    new_f, base_f = heart_frames()
    base_f = base_f.assign(site="elsewhere")
    with pytest.raises(InputError, match="no case is in both predictions"):
        match_cases(table_from_frame(new_f.copy()), table_from_frame(base_f))


def test_multiclass_is_refused():
    rng = np.random.default_rng(0)
    P = rng.dirichlet([1, 1, 1], 50)
    frame = pd.DataFrame({"y": rng.integers(0, 3, 50), **{f"p_{k}": P[:, i] for i, k in enumerate("abc")}})
    table = table_from_frame(frame)
    assert table.task == "multiclass"
    with pytest.raises(InputError, match=BINARY_ONLY):
        compare(table, table, settings=MetricSettings(n_bootstrap=0))


# ---- the calibration replicates at unit weights ---------------------------------------------------------


def test_recalibration_replicates_at_unit_weights_are_the_wald_fits():
    from validate.analysis.comparison import _recalibration_replicates
    from validate.metrics.calibration import calibration_intercept, calibration_slope

    new, _ = heart_pair()
    y, z = new.y(), new.logit()
    ones = np.ones((1, y.size))
    assert _recalibration_replicates(y, z, ones, slope=False)[0] == pytest.approx(
        calibration_intercept(y, logits=z)["estimate"], abs=1e-12
    )
    assert _recalibration_replicates(y, z, ones, slope=True)[0] == pytest.approx(
        calibration_slope(y, logits=z)["estimate"], abs=1e-12
    )
    # one class drawn: no finite maximum, NaN (left out of the interval)
    w = (y == 1).astype(float)[None, :]
    assert np.isnan(_recalibration_replicates(y, z, w, slope=True)[0])


# ---- comparison.json contract ---------------------------------------------------------------------------


def test_comparison_satisfies_its_contract_and_json_schema():
    import jsonschema

    data = json.loads(json.dumps(contract.for_writing("comparison.json", heart_comparison()), allow_nan=False))
    assert data["schema"] == "validate.comparison/1"
    schema = json.loads((REPO / "schemas" / "bundle" / "comparison.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(data)
    parsed = contract.parse("comparison.json", data)
    assert isinstance(parsed, contract.ComparisonFile)
    assert parsed.sites["va"].metric("auroc").delta == data["sites"]["va"]["metrics"]["auroc"]["delta"]
    assert parsed.subgroups["sex"]["male"].sites["va"].n == data["subgroups"]["sex"]["male"]["sites"]["va"]["n"]


@pytest.mark.parametrize("path", [("overall",), ("sites", "va", "metrics"), ("overall", "metrics", "auroc", "method")])
def test_a_renamed_key_of_comparison_json_is_refused_naming_it(path):
    data = json.loads(json.dumps(heart_comparison()))
    node = data
    for k in path[:-1]:
        node = node[k]
    node[f"{path[-1]}_renamed"] = node.pop(path[-1])
    with pytest.raises(InputError, match="required key missing") as exc:
        contract.parse("comparison.json", data, file="comparison.json")
    assert exc.value.field == ".".join(path)


def test_writer_refuses_a_delta_method_outside_the_contract():
    data = json.loads(json.dumps(heart_comparison()))
    data["overall"]["metrics"]["brier"]["method"] = "mover"
    with pytest.raises(contract.ContractViolation, match="comparison.json"):
        contract.for_writing("comparison.json", data)


def test_read_bundle_reads_comparison_json_only_when_present(synthetic_bundle, tmp_path):  # noqa: F811
    from validate.bundle import read_bundle

    assert read_bundle(synthetic_bundle["bundle"]).typed.comparison is None
    target = tmp_path / "with_baseline"
    shutil.copytree(synthetic_bundle["bundle"], target)
    data = contract.for_writing("comparison.json", heart_comparison())
    (target / "comparison.json").write_text(json.dumps(data))
    typed = read_bundle(target).typed.comparison
    assert typed.overall.metric("brier").delta == data["overall"]["metrics"]["brier"]["delta"]
    data["schema"] = "validate.comparison/2"
    (target / "comparison.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="newer"):
        read_bundle(target)
