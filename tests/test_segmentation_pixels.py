"""segmentation.json (validate.analysis.segmentation_pixels, segmentation_run): pixel ECE from case
histograms against the raw pixels, its clustered bootstrap against a naive loop, temperature against
scikit-learn, Bland–Altman against scipy, the paired comparison against a naive loop, the contract,
and the bundle's side files with hashed case ids."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace as NS

import numpy as np
import pandas as pd
import pytest

from validate.analysis.segmentation import paired_comparison, segmentation_cases
from validate.analysis.segmentation_pixels import (
    agreement_one,
    fit_temperature,
    pixel_calibration,
    temperature,
    worst_cases,
)
from validate.analysis.segmentation_run import analyse_segmentation, write_segmentation
from validate.contract import for_writing
from validate.metrics.bootstrap import bootstrap_weights
from validate.metrics.settings import MetricSettings
from validate.predictions import cluster_keys

from test_segmentation_stats import seg_frame

SETTINGS = MetricSettings(n_bootstrap=100, seed=3, min_cases=5)


def raw_pixels(n_cases=9, seed=0):
    """Per case a raw probability map (flattened) and its reference mask."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_cases):
        p = rng.beta(0.5, 0.5, 400)
        p[:5] = 0.0  # 0 goes to bin 0
        p[5:10] = 1.0
        p[10:15] = 0.05  # an edge: (0, 0.05] is bin 0
        y = (rng.random(400) < np.clip(p * 1.2, 0, 1)).astype(int)
        out.append((f"c{i}", f"p{i // 2}", p, y))
    return out


def histogram_rows(cases, site="s"):
    """The scoring's histogram rows, built here independently: bin = ceil(20 p) − 1, 0 in bin 0."""
    rows = []
    for cid, _, p, y in cases:
        b = np.maximum(np.ceil(p * 20).astype(int) - 1, 0)
        for k in np.unique(b):
            m = b == k
            rows.append(
                dict(
                    site=site, case_id=cid, label="head", bin=int(k), n=int(m.sum()), sum_p=p[m].sum(), sum_y=y[m].sum()
                )
            )
    return pd.DataFrame(rows)


def naive_ece(p, y, bins=20):
    total = 0.0
    for k in range(bins):
        lo, hi = k / bins, (k + 1) / bins
        m = (p > lo) & (p <= hi) if k else (p <= hi)
        if m.any():
            total += abs(y[m].sum() - p[m].sum())
    return total / p.size


def test_pixel_ece_is_exact_and_its_interval_is_the_clustered_bootstrap_over_cases():
    cases = raw_pixels()
    hist = histogram_rows(cases)
    table = pd.DataFrame({"site": "s", "case_id": [c[0] for c in cases], "patient_id": [c[1] for c in cases]})
    out = pixel_calibration(hist, table, ["head"], SETTINGS)["sites"]["s"]["head"]
    p = np.concatenate([c[2] for c in cases])
    y = np.concatenate([c[3] for c in cases])
    assert out["ece"]["estimate"] == pytest.approx(naive_ece(p, y), abs=1e-12)
    assert out["n_pixels"] == p.size and out["n_cases"] == len(cases)
    w = bootstrap_weights(
        SETTINGS.n_bootstrap, len(cases), clusters=cluster_keys(table, "patient_id"), seed=SETTINGS.seed
    )
    reps = []
    for r in range(w.shape[0]):
        drawn = [i for i in range(len(cases)) for _ in range(int(w[r, i]))]
        reps.append(
            naive_ece(np.concatenate([cases[i][2] for i in drawn]), np.concatenate([cases[i][3] for i in drawn]))
        )
    lo, hi = np.quantile(reps, [0.025, 0.975])
    assert (out["ece"]["ci_low"], out["ece"]["ci_high"]) == pytest.approx((lo, hi), abs=1e-12)
    b0 = next(r for r in out["reliability"] if r["bin"] == 0)
    m = p <= 0.05
    assert (
        b0["n"] == m.sum()
        and b0["mean_p"] == pytest.approx(p[m].mean())
        and b0["frac_pos"] == pytest.approx(y[m].mean())
    )


def test_no_histograms_says_why():
    out = pixel_calibration(None, pd.DataFrame({"site": ["s"], "case_id": ["c"]}), ["head"], SETTINGS)
    assert out["sites"] == {} and "pixel_histogram" in out["reason"]


def test_temperature_is_the_maximum_likelihood_one():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(5)
    z = rng.normal(0, 4, 3000)
    y = (rng.random(z.size) < 1 / (1 + np.exp(-z / 2.5))).astype(int)
    fit = LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-12, max_iter=1000).fit(z[:, None], y)
    assert fit_temperature(z, y) == pytest.approx(1 / fit.coef_[0, 0], rel=1e-5)


def test_temperature_fitted_on_the_fit_sites_only():
    rng = np.random.default_rng(6)
    rows = []
    for site, scale in (("dev", 2.0), ("ext", 0.5)):
        z = rng.normal(0, 4, 2000)
        y = (rng.random(z.size) < 1 / (1 + np.exp(-z / scale))).astype(np.int8)
        rows.append(
            pd.DataFrame({"site": site, "case_id": "c", "label": "head", "logit": z.astype(np.float32), "y": y})
        )
    sample = pd.concat(rows)
    out = temperature(sample, ["dev"], ["head"])
    dev = sample[sample["site"] == "dev"]
    assert out["temperature"] == pytest.approx(fit_temperature(dev["logit"], dev["y"]), rel=1e-12)
    assert out["temperature"] == pytest.approx(2.0, rel=0.15)
    assert out["sites"]["dev"]["head"]["ece_after"] < out["sites"]["dev"]["head"]["ece_before"]
    assert temperature(sample, ["nowhere"], ["head"]) is None


def test_area_agreement_is_bland_altman_and_least_squares():
    from scipy.stats import linregress

    rng = np.random.default_rng(2)
    ref = rng.uniform(500, 2000, 40)
    pred = 0.9 * ref + 30 + rng.normal(0, 20, 40)
    exp = 1.05 * ref - 10 + rng.normal(0, 5, 40)
    out = agreement_one(ref, pred, exp)
    d = pred - ref
    assert out["mean_difference"] == pytest.approx(d.mean(), abs=1e-9)
    assert out["loa_low"] == pytest.approx(d.mean() - 1.96 * d.std(ddof=1), abs=1e-9)
    assert out["loa_high"] == pytest.approx(d.mean() + 1.96 * d.std(ddof=1), abs=1e-9)
    fit = linregress(ref, pred)
    assert (out["slope"], out["intercept"]) == pytest.approx((fit.slope, fit.intercept), abs=1e-9)
    fit = linregress(ref, exp)
    assert (out["expected_vs_true"]["slope"], out["expected_vs_true"]["intercept"]) == pytest.approx(
        (fit.slope, fit.intercept), abs=1e-9
    )


def test_worst_cases_are_the_lowest_dice_of_each_site_and_label_excluded_left_out():
    frame = seg_frame(labels=("head", "brain"))
    frame.loc[0, "dice"] = np.nan  # an excluded case is not a "worst" case
    out = worst_cases(frame, 3)
    for site in ("dev", "ext"):
        expected = []
        for label in ("brain", "head"):
            sub = frame[(frame["site"] == site) & (frame["label"] == label) & frame["dice"].notna()]
            expected += [(label, c) for c in sub.nsmallest(3, "dice")["case_id"]]
        assert [(c["label"], c["case_id"]) for c in out[site]] == expected
        assert all(np.isfinite(c["dice"]) for c in out[site])


def test_paired_comparison_equals_a_naive_paired_bootstrap():
    new = seg_frame(seed=1)
    base = seg_frame(seed=2).sample(frac=1.0, random_state=0)  # another row order: matched by ids
    out = paired_comparison(segmentation_cases(new, ["head"]), segmentation_cases(base, ["head"]), settings=SETTINGS)
    ext_new = new[new["site"] == "ext"].reset_index(drop=True)
    ext_base = base[base["site"] == "ext"].set_index("case_id").loc[ext_new["case_id"]]
    d = ext_new["hd95_mm"].to_numpy() - ext_base["hd95_mm"].to_numpy()
    w = bootstrap_weights(
        SETTINGS.n_bootstrap, len(d), clusters=cluster_keys(ext_new, "patient_id"), seed=SETTINGS.seed
    )
    reps = [np.repeat(d, w[r].astype(int)).mean() for r in range(w.shape[0])]
    e = out["sites"]["ext"]["hd95_mm"]
    assert e["estimate"] == pytest.approx(d.mean(), abs=1e-12)
    assert (e["ci_low"], e["ci_high"]) == pytest.approx(tuple(np.quantile(reps, [0.025, 0.975])), abs=1e-12)
    assert out["sites"]["ext"]["n_matched"] == 12 and out["n_unmatched"] == 0


def protocol(**seg):
    return NS(
        task="segmentation",
        labels=["head"],
        segmentation=NS(empty={"both": "perfect", "one": "worst"}, threshold=0.5, worst_cases=2, **seg),
        metrics={"n_bootstrap": 50, "min_cases": 5},
        sites=[NS(id="dev", role="development", display_name="Dev"), NS(id="ext", role="external", display_name="Ext")],
        subgroups=[],
        gates=[{"metric": "hd95_mm", "scope": "each_site", "max": 10.0}],
        calibration_fit_sites=["dev"],
        path="p.yaml",
        name="seg",
        line_of=lambda *a: None,
    )


def side_tables(frame):
    cases = raw_pixels(n_cases=12)
    hist = pd.concat([histogram_rows(cases, site) for site in ("dev", "ext")])
    sample = pd.DataFrame(
        {
            "site": "dev",
            "case_id": "c0",
            "label": "head",
            "logit": np.linspace(-5, 5, 50).astype(np.float32),
            "y": np.int8(1),
        }
    )
    sample.loc[:20, "y"] = 0
    return {"pixel_histogram.parquet": hist, "pixel_sample.parquet": sample}


def test_analysis_parts_keep_the_contract_and_side_files_enter_the_bundle_hashed(tmp_path):
    from validate.bundle import BundleWriter, hash_ids

    frame = seg_frame().assign(area_expected_mm2=lambda f: f["area_ref_mm2"] + 3.0)
    side = side_tables(frame)
    parts = analyse_segmentation(protocol(), frame, None, side=side, baseline_frame=frame)
    for name, key in (("metrics.json", "metrics"), ("sites.json", "sites"), ("subgroups.json", "subgroups")):
        for_writing(name, parts[key])
    for_writing("segmentation.json", parts["segmentation"])
    assert parts["gates"].exit_code == 0
    assert parts["segmentation"]["comparison"]["overall"]["dice"]["estimate"] == 0.0
    parts["side"] = side
    key = b"k" * 32
    with BundleWriter(tmp_path / "bundle") as w:
        write_segmentation(w, parts, lambda c: hash_ids([c], key)[0], key)
        staged = w.staging
        seg = json.loads((staged / "segmentation.json").read_text())
        assert seg["schema"] == "validate.segmentation/1"
        worst = seg["worst_cases"]["dev"][0]["case_id"]
        assert worst == hash_ids([parts["segmentation"]["worst_cases"]["dev"][0]["case_id"]], key)[0]
        hist = pd.read_parquet(staged / "pixel_histogram.parquet")
        assert set(hist["case_id"]) == set(hash_ids([f"c{i}" for i in range(12)], key))
        assert (staged / "pixel_sample.parquet").exists()


def test_a_damaged_side_file_is_bad_input(tmp_path):
    from validate.analysis.segmentation_run import read_side_files
    from validate.errors import InputError

    (tmp_path / "pixel_sample.parquet").write_text("not parquet")
    with pytest.raises(InputError, match="pixel_sample.parquet"):
        read_side_files(tmp_path)
    assert read_side_files(None) == {}


def test_undeclared_site_is_bad_input():
    from validate.errors import InputError

    frame = seg_frame(sites=("dev", "elsewhere"))
    with pytest.raises(InputError, match="elsewhere"):
        analyse_segmentation(protocol(), frame, None)


def test_segmentation_json_satisfies_its_committed_json_schema():
    import jsonschema

    frame = seg_frame().assign(area_expected_mm2=lambda f: f["area_ref_mm2"] + 3.0)
    parts = analyse_segmentation(protocol(), frame, None, side=side_tables(frame), baseline_frame=frame)
    data = json.loads(json.dumps(for_writing("segmentation.json", parts["segmentation"])))
    schema = json.loads((Path(__file__).parents[1] / "schemas/bundle/segmentation.schema.json").read_text())
    jsonschema.validate(data, schema)
    for name, key in (("metrics.json", "metrics"), ("sites.json", "sites")):
        data = json.loads(json.dumps(for_writing(name, parts[key])))
        schema = json.loads(
            (Path(__file__).parents[1] / f"schemas/bundle/{name.split('.')[0]}.schema.json").read_text()
        )
        jsonschema.validate(data, schema)


def test_pipeline_analyse_takes_the_segmentation_branch():
    from validate.pipeline import analyse

    frame = seg_frame().assign(area_expected_mm2=lambda f: f["area_ref_mm2"])
    parts = analyse(protocol(), frame, None, side=side_tables(frame))
    assert parts["metrics"]["task"] == "segmentation" and parts["segmentation"]["labels"] == ["head"]
    assert parts["calibration"] is None and parts["comparison"] is None
    assert for_writing("shift.json", parts["shift"])["reason"].startswith("the shift analysis compares")
    assert [r.verdict for r in parts["gates"].rows if r.metric == "hd95_mm"] == ["pass", "pass"]


@pytest.mark.parametrize(
    ("shift", "verdict"),
    [(0.0, "pass"), (0.3, "fail")],
)
def test_comparison_gate_judges_the_paired_difference(shift, verdict, tmp_path):
    """The new model minus a baseline better by ``shift`` Dice at site ext: a non-inferiority gate
    (margin 0.02 on ci_low) fails when the new model is worse, passes when they are equal; regate reads
    the comparison back from segmentation.json."""
    frame = seg_frame()
    base = frame.copy()
    base.loc[base["site"] == "ext", "dice"] += shift
    proto = protocol()
    proto.gates = [{"metric": "dice", "scope": "each_site", "min": -0.02, "on": "ci_low", "compare": "baseline"}]
    parts = analyse_segmentation(proto, frame, None, baseline_frame=base)
    rows = {r.site: r for r in parts["gates"].rows if r.metric == "dice"}
    assert rows["dev"].verdict == "pass" and rows["ext"].verdict == verdict
    assert rows["ext"].estimate == pytest.approx(-shift, abs=1e-12)
    ext = frame[frame["site"] == "ext"]["dice"]
    assert rows["ext"].estimate_new == pytest.approx(ext.mean()) and rows["ext"].estimate_baseline == pytest.approx(
        ext.mean() + shift
    )
    from validate.analysis.segmentation import gate_comparison
    from validate.gates import judge_gates

    again = judge_gates(proto.gates, parts["metrics"], comparison=gate_comparison(parts["segmentation"]["comparison"]))
    assert [r.verdict for r in again.rows] == [r.verdict for r in parts["gates"].rows if not r.builtin]


def test_comparison_gate_on_a_site_without_matched_cases_fails():
    frame = seg_frame()
    base = frame[frame["site"] == "dev"]
    proto = protocol()
    proto.gates = [{"metric": "hd95_mm", "scope": "each_site", "max": 0.5, "on": "ci_high", "compare": "baseline"}]
    parts = analyse_segmentation(proto, frame, None, baseline_frame=base)
    rows = {r.site: r.verdict for r in parts["gates"].rows if r.metric == "hd95_mm"}
    assert rows == {"dev": "pass", "ext": "fail"}


def test_run_summary_of_a_segmentation_run_counts_patients():
    from validate.summary import summarise

    proto = protocol()
    proto.version, proto.site = "1", lambda s: next(x for x in proto.sites if x.id == s)
    parts = analyse_segmentation(proto, seg_frame(), None)
    text = summarise(proto, parts, {"failures": pd.DataFrame(), "device": "cpu"}, Path("b"), seconds=1.0)
    row = next(line for line in text.splitlines() if line.strip().startswith("ext"))
    assert " pts " in text and row.split()[2:4] == ["12", "4"]


def test_a_separable_pixel_sample_has_no_temperature_not_a_bound():
    # every sampled pixel on the right side of 0: the likelihood keeps rising as T -> 0; a bounded search
    # would report its bound as if it were a fitted temperature
    import pandas as pd

    from validate.analysis.segmentation_pixels import temperature

    z = np.array([-4.0, -3.0, -2.0, 2.0, 3.0, 4.0] * 20)
    sample = pd.DataFrame(
        {"site": "dev", "case_id": "c1", "label": "head", "logit": z.astype(np.float32), "y": (z > 0).astype(np.int8)}
    )
    assert temperature(sample, ["dev"], ["head"]) is None
