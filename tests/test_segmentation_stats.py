"""Segmentation statistics (validate.analysis.segmentation): BLOCKs of per-case metric rows, their
patient-clustered bootstrap intervals against a naive loop, the empty policy, and gates judged on
them through gates.py's own path (no false PASS on excluded or missing cases)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from validate.analysis.segmentation import (
    segmentation_block,
    segmentation_cases,
    segmentation_metrics,
    weighted_mean_median,
)
from validate.errors import InputError
from validate.gates import judge_gates
from validate.metrics.bootstrap import bootstrap_weights
from validate.metrics.segmentation import nsd_key
from validate.metrics.settings import MetricSettings
from validate.predictions import cluster_keys

SETTINGS = MetricSettings(n_bootstrap=200, seed=7, min_cases=5)


def seg_frame(n_per_site=12, sites=("dev", "ext"), labels=("head",), seed=0) -> pd.DataFrame:
    """Per-case metric rows of the spec'd shape (one row per case and label)."""
    rng = np.random.default_rng(seed)
    rows = []
    for s_i, site in enumerate(sites):
        for i in range(n_per_site):
            for lab in labels:
                d = float(rng.uniform(0.6, 1.0) - 0.1 * s_i)
                rows.append(
                    dict(
                        site=site,
                        case_id=f"c{i}",
                        patient_id=f"p{i // 3}",
                        label=lab,
                        dice=d,
                        iou=d / (2 - d),
                        hd_mm=float(rng.uniform(1, 6)),
                        hd95_mm=float(rng.uniform(0.5, 4)),
                        assd_mm=float(rng.uniform(0, 1)),
                        nsd_2mm=float(rng.uniform(0.7, 1)),
                        nsd_1p5mm=float(rng.uniform(0.6, 1)),
                        area_ref_mm2=1000.0,
                        area_pred_mm2=1000.0,
                        area_error_mm2=float(rng.normal(0, 30)),
                        ref_empty=0,
                        pred_empty=0,
                        band="low" if i % 2 else "high",
                    )
                )
    return pd.DataFrame(rows)


def naive_mean_median(x, w_row):
    rep = np.repeat(x, w_row.astype(int))
    return rep.mean(), np.median(rep)


def test_weighted_mean_median_equals_repeated_sample():
    rng = np.random.default_rng(3)
    x = rng.normal(size=25)
    x[[4, 9]] = np.nan  # excluded cases carry no weight
    w = rng.integers(0, 4, size=(60, 25)).astype(float)
    mean, median = weighted_mean_median(x, w)
    for r in range(w.shape[0]):
        keep = np.isfinite(x)
        m, md = naive_mean_median(x[keep], w[r, keep])
        assert mean[r] == pytest.approx(m, abs=1e-12)
        assert median[r] == pytest.approx(md, abs=1e-12)


def test_weighted_median_of_no_included_case_is_nan():
    mean, median = weighted_mean_median(np.array([np.nan, 1.0]), np.array([[2.0, 0.0]]))
    assert np.isnan(mean[0]) and np.isnan(median[0])


def test_site_block_interval_equals_naive_patient_clustered_bootstrap():
    frame = seg_frame()
    data = segmentation_cases(frame, ["head"])
    report = segmentation_metrics(data, settings=SETTINGS)
    site = frame[frame["site"] == "ext"].reset_index(drop=True)
    x = site["hd95_mm"].to_numpy()
    clusters = cluster_keys(site, "patient_id")
    w = bootstrap_weights(SETTINGS.n_bootstrap, len(site), clusters=clusters, seed=SETTINGS.seed)
    reps = np.array([naive_mean_median(x, w[r]) for r in range(w.shape[0])])
    blk = report["sites"]["ext"]
    assert blk["n"] == 12 and blk["n_patients"] == 4
    assert blk["hd95_mm"]["estimate"] == pytest.approx(x.mean(), abs=1e-12)
    assert blk["hd95_mm_median"]["estimate"] == pytest.approx(np.median(x), abs=1e-12)
    lo, hi = np.quantile(reps[:, 0], [0.025, 0.975])
    assert (blk["hd95_mm"]["ci_low"], blk["hd95_mm"]["ci_high"]) == pytest.approx((lo, hi), abs=1e-12)
    lo, hi = np.quantile(reps[:, 1], [0.025, 0.975])
    assert (blk["hd95_mm_median"]["ci_low"], blk["hd95_mm_median"]["ci_high"]) == pytest.approx((lo, hi), abs=1e-12)


def test_overall_block_is_stratified_by_site_and_holds_every_metric():
    frame = seg_frame()
    data = segmentation_cases(frame, ["head"])
    report = segmentation_metrics(data, settings=SETTINGS, subgroup_columns=["band"])
    x = frame["dice"].to_numpy()
    clusters = cluster_keys(frame, "patient_id")
    w = bootstrap_weights(SETTINGS.n_bootstrap, len(frame), clusters=clusters, strata=frame["site"], seed=SETTINGS.seed)
    reps = (w @ x) / w.sum(axis=1)
    lo, hi = np.quantile(reps, [0.025, 0.975])
    ov = report["overall"]
    assert (ov["dice"]["ci_low"], ov["dice"]["ci_high"]) == pytest.approx((lo, hi), abs=1e-12)
    for m in ("dice", "iou", "nsd_1p5mm", "nsd_2mm", "hd_mm", "hd95_mm", "assd_mm", "area_abs_error_mm2"):
        assert ov[m]["estimate"] is not None and ov[f"{m}_median"]["estimate"] is not None
    # |area error| derived from the signed error column
    assert ov["area_abs_error_mm2"]["estimate"] == pytest.approx(frame["area_error_mm2"].abs().mean(), abs=1e-9)
    assert set(report["subgroups"]["band"]) == {"low", "high"}
    assert report["subgroups"]["band"]["low"]["n"] == 12
    assert report["task"] == "segmentation" and report["seed"] == 7


def test_nsd_key_names_tolerances_as_the_spec():
    assert nsd_key(2.0) == "nsd_2mm" and nsd_key(1.5) == "nsd_1p5mm"


def test_several_labels_give_label_blocks_and_macro_means():
    frame = seg_frame(labels=("head", "brain"))
    data = segmentation_cases(frame, ["head", "brain"])
    blk = segmentation_metrics(data, settings=SETTINGS)["sites"]["dev"]
    dev = frame[frame["site"] == "dev"]
    per = {lab: dev.loc[dev["label"] == lab, "dice"].mean() for lab in ("head", "brain")}
    assert blk["labels"]["head"]["dice"]["estimate"] == pytest.approx(per["head"], abs=1e-12)
    assert blk["dice"]["estimate"] == pytest.approx((per["head"] + per["brain"]) / 2, abs=1e-12)
    assert blk["n"] == 12  # cases, not case-label rows


def _excluded_frame() -> pd.DataFrame:
    frame = seg_frame()
    ext = frame["site"] == "ext"
    for col in ("dice", "iou", "hd_mm", "hd95_mm", "assd_mm", "nsd_2mm", "nsd_1p5mm"):
        frame.loc[ext, col] = np.nan
    frame.loc[ext, ["ref_empty", "pred_empty"]] = 1
    frame.loc[ext, "area_error_mm2"] = np.nan
    return frame


def test_every_case_excluded_is_undefined_and_insufficient():
    data = segmentation_cases(_excluded_frame(), ["head"])
    report = segmentation_metrics(data, settings=SETTINGS, exclude_policy=True)
    ext = report["sites"]["ext"]
    assert ext["n"] == 12 and ext["n_excluded"] == 12
    assert ext["dice"]["estimate"] is None and "dice" in ext["undefined"]
    assert ext["insufficient"] is True
    assert report["sites"]["dev"]["n_excluded"] == 0


@pytest.mark.parametrize("policy", ["warn", "fail"])
def test_gate_on_every_case_excluded_never_passes(policy):
    data = segmentation_cases(_excluded_frame(), ["head"])
    metrics = segmentation_metrics(data, settings=SETTINGS, exclude_policy=True)
    gates = [
        {"metric": "dice", "scope": "each_site", "min": 0.1, "on": "ci_low", "insufficient": policy},
        {"metric": "hd95_mm", "scope": "each_site", "max": 100.0, "insufficient": policy},
    ]
    report = judge_gates(gates, metrics)
    ext = [r for r in report.rows if r.site == "ext"]
    assert len(ext) == 2 and all(r.verdict == policy for r in ext)
    dev = [r for r in report.rows if r.site == "dev"]
    assert all(r.verdict == "pass" for r in dev)
    assert report.exit_code == (1 if policy == "fail" else 0)


def test_gate_on_a_missed_structure_fails():
    """One empty mask (Metrics Reloaded: Dice 0, distances the image diagonal) stays in the mean."""
    frame = seg_frame()
    ext = frame.index[frame["site"] == "ext"]
    frame.loc[ext[:4], ["dice", "iou", "nsd_2mm", "nsd_1p5mm"]] = 0.0
    frame.loc[ext[:4], ["hd_mm", "hd95_mm", "assd_mm"]] = 250.0
    frame.loc[ext[:4], "pred_empty"] = 1
    metrics = segmentation_metrics(segmentation_cases(frame, ["head"]), settings=SETTINGS)
    report = judge_gates([{"metric": "hd95_mm", "scope": "each_site", "max": 10.0}], metrics)
    verdicts = {r.site: r.verdict for r in report.rows}
    assert verdicts == {"dev": "pass", "ext": "fail"} and report.exit_code == 1


def test_gate_judges_each_site_dice_on_its_ci_low():
    metrics = segmentation_metrics(segmentation_cases(seg_frame(), ["head"]), settings=SETTINGS)
    lo = metrics["sites"]["ext"]["dice"]["ci_low"]
    report = judge_gates([{"metric": "dice", "scope": "each_site", "min": lo + 1e-6, "on": "ci_low"}], metrics)
    assert {r.site: r.verdict for r in report.rows}["ext"] == "fail"
    report = judge_gates([{"metric": "dice", "scope": "each_site", "min": lo - 1e-6, "on": "ci_low"}], metrics)
    assert {r.site: r.verdict for r in report.rows}["ext"] == "pass"


def test_too_few_cases_is_insufficient():
    frame = seg_frame(n_per_site=3)
    metrics = segmentation_metrics(segmentation_cases(frame, ["head"]), settings=SETTINGS)
    assert metrics["sites"]["dev"]["insufficient"] is True
    report = judge_gates([{"metric": "dice", "scope": "each_site", "min": 0.0, "insufficient": "fail"}], metrics)
    assert all(r.verdict == "fail" for r in report.rows)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_metric_outside_the_empty_policy_is_bad_input(value):
    frame = seg_frame()
    frame.loc[5, "hd95_mm"] = value
    with pytest.raises(InputError) as exc:
        segmentation_cases(frame, ["head"], file="p.parquet")
    assert exc.value.field == "hd95_mm" and exc.value.row == 6


def test_missing_label_row_and_undeclared_label_are_bad_input():
    frame = seg_frame(labels=("head", "brain"))
    with pytest.raises(InputError, match="no row for label"):
        segmentation_cases(frame.drop(index=3), ["head", "brain"])
    with pytest.raises(InputError, match="does not declare"):
        segmentation_cases(frame, ["head"])
    with pytest.raises(InputError, match="twice"):
        segmentation_cases(pd.concat([frame, frame.iloc[:1]]), ["head", "brain"])


def test_block_without_bootstrap_has_no_interval():
    values = np.linspace(0.5, 1, 10).reshape(10, 1, 1)
    blk = segmentation_block(values, ["dice"], ["head"], settings=MetricSettings(n_bootstrap=0, min_cases=1))
    assert blk["dice"]["estimate"] == pytest.approx(0.75) and blk["dice"]["ci_low"] is None


def test_block_keys_are_the_registered_segmentation_metrics():
    from validate.metrics import registry

    frame = seg_frame().assign(hc_error_mm=1.0)
    blk = segmentation_metrics(segmentation_cases(frame, ["head"]), settings=SETTINGS, exclude_policy=True)["overall"]
    keys = set(blk) - set(registry.BLOCK_FIELDS["segmentation"])
    assert all(registry.get(k, "segmentation") is not None for k in keys), keys
    expected = {m.name for m in registry.metrics_for("segmentation")} - {
        "nsd",
        "nsd_median",
        "volume_abs_error_mm3",
        "volume_abs_error_mm3_median",
    }
    nsd = {"nsd_1p5mm", "nsd_1p5mm_median", "nsd_2mm", "nsd_2mm_median"}
    assert keys == expected | nsd
    assert registry.label("nsd_1p5mm") == "NSD 1.5 mm" and registry.get("nsd_2mm_median").direction == "higher"


def test_validate_metrics_table_of_a_segmentation_report():
    from validate.commands.metrics import _segmentation_report, format_table

    frame = seg_frame()
    report = _segmentation_report(frame, None, SETTINGS, None, [])
    text = format_table(report)
    assert "patients" in text and "dice" in text and "hd95_mm" in text
    dev = frame[frame["site"] == "dev"]
    row = next(line for line in text.splitlines() if line.startswith("site dev"))
    assert f"{dev['dice'].mean():.3f}" in row and "patient-clustered bootstrap" in text


def test_excluded_cases_are_counted_even_when_the_protocol_says_perfect():
    """A table made under both: exclude, read with a protocol that says perfect, still shows them."""
    data = segmentation_cases(_excluded_frame(), ["head"])
    report = segmentation_metrics(data, settings=SETTINGS, exclude_policy=False)
    assert report["sites"]["ext"]["n_excluded"] == 12 and report["overall"]["n_excluded"] == 12
