"""Comparison designs and the calibrate / apply-calibration commands, on simulated sites with known
miscalibration and on the real heart sample sites scored by the shipped model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss

from validate.calibrators import compare_calibration, get_calibrator
from validate.calibrators.designs import stratified_subset
from validate.cli import main
from validate.errors import InputError
from validate.io import to_json_text
from validate.predictions import read_predictions, table_from_frame

REPO = Path(__file__).resolve().parents[1]
HEART = REPO / "sample_sites" / "heart"
QUICK = {"repeats": 3, "sample_sizes": [25, 50, 400], "seed": 0}


def binary_sites(seed=0, temperature=2.5, sizes=None):
    """Sites whose model logit is `temperature` times the true logit (over-confident everywhere)."""
    rng = np.random.default_rng(seed)
    sizes = sizes or {"dev": 600, "ext_a": 400, "ext_b": 300}
    frames = []
    for site, n in sizes.items():
        z = rng.normal(0.3, 1.5, n)
        y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
        frames.append(
            pd.DataFrame({"case_id": [f"{site}-{i}" for i in range(n)], "site": site, "y": y, "logit": temperature * z})
        )
    return pd.concat(frames, ignore_index=True)


def test_held_out_recovers_temperature_and_improves_external_sites():
    table = table_from_frame(binary_sites())
    res = compare_calibration(
        table, methods=["temperature", "platt", "isotonic"], fit_on=["dev"], n_bootstrap=40, smooth_intervals=False
    )
    # the DESIGN.md contract
    assert res["task"] == "binary" and res["design"] == "held-out" and res["fit_on"] == ["dev"]
    assert set(res["methods"]) == {"none", "temperature", "platt", "isotonic"}
    assert res["methods"]["none"]["params"] == {}
    assert res["methods"]["temperature"]["params"]["temperature"] == pytest.approx(2.5, rel=0.15)  # T, not 1/T
    assert set(res["methods"]["temperature"]["sites"]) == {"ext_a", "ext_b"}  # fit cases never evaluated
    to_json_text(res)  # finite numbers only
    for site in ("ext_a", "ext_b"):
        none = res["methods"]["none"]["sites"][site]
        temp = res["methods"]["temperature"]["sites"][site]
        assert temp["n"] == none["n"]
        assert temp["ece"]["estimate"] < none["ece"]["estimate"]
        change = res["methods"]["temperature"]["change_vs_none"][site]
        assert change["log_loss"]["ci_high"] < 0  # a clear improvement, paired on the same cases
        assert change["brier"]["estimate"] == pytest.approx(temp["brier"]["estimate"] - none["brier"]["estimate"])
    assert res["recommended"] in ("temperature", "platt")
    assert res["recommendation"]["mean_rank"]["none"] > res["recommendation"]["mean_rank"][res["recommended"]]


def test_held_out_blocks_match_sklearn_on_the_calibrated_predictions():
    frame = binary_sites(seed=1)
    table = table_from_frame(frame)
    res = compare_calibration(table, methods=["temperature"], fit_on=["dev"], n_bootstrap=0, smooth_intervals=False)
    T = res["methods"]["temperature"]["params"]["temperature"]
    ext = frame[frame.site == "ext_a"]
    p = 1 / (1 + np.exp(-ext.logit.to_numpy() / T))
    assert res["methods"]["temperature"]["sites"]["ext_a"]["brier"]["estimate"] == pytest.approx(
        brier_score_loss(ext.y, p), rel=1e-12
    )


def test_fit_fraction_evaluates_the_rest_of_the_fit_site():
    table = table_from_frame(binary_sites(seed=2))
    res = compare_calibration(
        table,
        methods=["temperature"],
        fit_on=["dev"],
        n_bootstrap=0,
        calibration={"fit_fraction": 0.6},
        smooth_intervals=False,
    )
    assert res["held_out"]["n_fit"] == 360
    assert res["methods"]["temperature"]["sites"]["dev"]["n"] == 240
    assert res["held_out"]["evaluated"]["dev"].startswith("held-out part")
    assert "dev" not in res["recommendation"]["sites"]  # recommendation judged on external sites


def test_repeated_designs_shapes_fallbacks_and_determinism():
    frame = binary_sites(seed=3, sizes={"dev": 300, "ext": 200, "tiny": 40})
    # at `tiny` the score separates the outcomes perfectly: Platt has no finite fit there
    tiny = frame.site == "tiny"
    frame.loc[tiny, "y"] = (frame.loc[tiny, "logit"] > 0).astype(int)
    table = table_from_frame(frame)
    kw = dict(
        methods=["temperature", "platt"],
        fit_on=["dev"],
        n_bootstrap=0,
        smooth_intervals=False,
        designs=["held-out", "local", "transfer", "sample-size"],
        calibration=QUICK,
    )
    res = compare_calibration(table, **kw)
    assert res == compare_calibration(table, **kw)  # seeded
    local = res["designs"]["local"]["sites"]
    assert local["ext"]["n_fit"] == 100 and local["ext"]["n_eval"] == 100
    assert local["ext"]["methods"]["temperature"]["ece"]["n"] == 3
    assert local["tiny"]["methods"]["platt"]["fallbacks"]["count"] == 3
    assert "separated" in local["tiny"]["methods"]["platt"]["fallbacks"]["first_reason"]
    # a fallback repeat is the uncalibrated prediction: no change against none
    assert local["tiny"]["methods"]["platt"]["change_vs_none"]["log_loss"]["mean"] == 0
    sizes = res["designs"]["sample_size"]["sites"]["ext"]
    assert set(sizes["sizes"]) == {"25", "50"} and "400" in sizes["skipped"]
    assert sizes["sizes"]["25"]["n_eval"] == 175
    for stats in sizes["sizes"]["50"]["methods"]["temperature"].values():
        if isinstance(stats, dict) and "mean" in stats:
            assert stats["n"] == 3
    transfer = res["designs"]["transfer"]["methods"]["temperature"]["ece"]
    assert set(transfer) == {"dev", "ext", "tiny"} and set(transfer["dev"]) == {"ext", "tiny"}
    held = compare_calibration(table, methods=["temperature"], fit_on=["dev"], n_bootstrap=0, smooth_intervals=False)
    assert transfer["dev"]["ext"] == pytest.approx(held["methods"]["temperature"]["sites"]["ext"]["ece"]["estimate"])
    to_json_text(res)


def test_failed_held_out_fit_is_reported_not_recommended():
    frame = binary_sites(seed=4)
    frame.loc[frame.site == "dev", "y"] = 1  # one class only at the fitting site
    res = compare_calibration(
        table_from_frame(frame), methods=["temperature"], fit_on=["dev"], n_bootstrap=0, smooth_intervals=False
    )
    assert res["methods"]["temperature"]["params"] is None
    assert "both outcomes" in res["methods"]["temperature"]["error"]
    assert res["recommended"] == "none"


def test_multiclass_from_probabilities_and_class_changes():
    rng = np.random.default_rng(5)
    frames = []
    for site, n in {"dev": 900, "ext": 600}.items():
        z = rng.normal(0, 2, (n, 3))
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        y = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
        q = np.exp(2.0 * z) / np.exp(2.0 * z).sum(axis=1, keepdims=True)  # over-confident, given as p_<class>
        frames.append(pd.DataFrame({"site": site, "y": y, "p_a": q[:, 0], "p_b": q[:, 1], "p_c": q[:, 2]}))
    table = table_from_frame(pd.concat(frames, ignore_index=True))
    res = compare_calibration(
        table, methods=["temperature", "isotonic"], fit_on=["dev"], n_bootstrap=0, smooth_intervals=False
    )
    assert res["classes"] == ["a", "b", "c"]
    assert res["methods"]["temperature"]["params"]["temperature"] == pytest.approx(2.0, rel=0.1)
    changed = res["methods"]["isotonic"]["predicted_class_changed"]["ext"]
    assert 0 <= changed < 0.2
    assert (
        res["methods"]["temperature"]["sites"]["ext"]["ece"]["estimate"]
        < res["methods"]["none"]["sites"]["ext"]["ece"]["estimate"]
    )


def test_multilabel_each_label_on_its_own():
    rng = np.random.default_rng(6)
    n = 800
    z = rng.normal(0, 1.5, (n, 2))
    y = (rng.random((n, 2)) < 1 / (1 + np.exp(-z))).astype(int)
    frame = pd.DataFrame(
        {
            "site": np.where(np.arange(n) < 500, "dev", "ext"),
            "y_a": y[:, 0],
            "y_b": y[:, 1],
            "logit_a": 3 * z[:, 0],
            "logit_b": 0.5 * z[:, 1],
        }
    )
    res = compare_calibration(
        table_from_frame(frame), methods=["temperature"], fit_on=["dev"], n_bootstrap=0, smooth_intervals=False
    )
    temps = [lab["temperature"] for lab in res["methods"]["temperature"]["params"]["labels"]]
    assert temps[0] == pytest.approx(3.0, rel=0.25) and temps[1] == pytest.approx(0.5, rel=0.25)
    to_json_text(res)


def test_bad_requests_are_input_errors():
    table = table_from_frame(binary_sites(seed=7))
    with pytest.raises(InputError, match="did you mean 'dev'"):
        compare_calibration(table, methods=["temperature"], fit_on=["deev"])
    with pytest.raises(InputError, match="does not apply to a binary task"):
        compare_calibration(table, methods=["matrix"], fit_on=["dev"])
    with pytest.raises(InputError, match="did you mean 'sample-size'"):
        compare_calibration(table, methods=["temperature"], fit_on=["dev"], designs=["sample_size"])
    with pytest.raises(InputError, match="no cases left to evaluate"):
        compare_calibration(table, methods=["temperature"], fit_on=["dev", "ext_a", "ext_b"], n_bootstrap=0)


def test_stratified_subset_keeps_both_outcomes():
    y = np.r_[np.ones(3, int), np.zeros(197, int)]
    rng = np.random.default_rng(0)
    for size in (10, 25, 100):
        idx = stratified_subset(y, size, rng)
        assert idx.size == size and np.unique(idx).size == size
        assert y[idx].sum() >= 1 and (1 - y[idx]).sum() >= 1


# ---- the command line, on the real heart sites ----------------------------------------------------
@pytest.fixture(scope="module")
def heart_predictions(tmp_path_factory):
    """The shipped heart model scored on the four UCI hospitals' manifests."""
    import torch

    spec = importlib.util.spec_from_file_location("heart_model_def_cal", HEART / "model_def.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.build_model()
    model.load_state_dict(torch.load(HEART / "model_state.pt"))
    model.eval()
    frames = []
    for site in ("cleveland", "hungary", "switzerland", "va"):
        df = pd.read_csv(HEART / f"{site}.csv")
        with torch.no_grad():
            z = model(torch.tensor(df[mod.FEATURES].to_numpy(dtype=np.float32))).numpy()[:, 0]
        frames.append(
            pd.DataFrame(
                {
                    "case_id": df.case_id,
                    "site": site,
                    "patient_id": df.patient_id,
                    "y": df.label,
                    "logit": z.astype(np.float64),
                    "sex": df.sex_label,
                }
            )
        )
    path = tmp_path_factory.mktemp("heart") / "predictions.csv"
    pd.concat(frames).to_csv(path, index=False)
    return path


def test_calibrate_heart_protocol_all_designs(heart_predictions, tmp_path, capsys):
    out = tmp_path / "calibration.json"
    rc = main(
        [
            "calibrate",
            str(heart_predictions),
            "--protocol",
            str(REPO / "protocols" / "heart.yaml"),
            "--bootstrap",
            "20",
            "--repeats",
            "2",
            "--sample-sizes",
            "25,50,110",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["fit_on"] == ["cleveland"] and doc["design"] == "held-out"
    assert set(doc["methods"]) == {"none", "temperature", "platt", "isotonic", "beta"}
    assert set(doc["methods"]["none"]["sites"]) == {"hungary", "switzerland", "va"}
    assert set(doc["designs"]) == {"local", "transfer", "sample_size"}
    swiss = doc["designs"]["sample_size"]["sites"]["switzerland"]  # 123 cases: 110 leaves too few
    assert set(swiss["sizes"]) == {"25", "50"} and "110" in swiss["skipped"]
    assert doc["methods"]["none"]["sites"]["switzerland"]["insufficient"] is True  # 8 non-events
    assert "recommended:" in capsys.readouterr().out


def test_apply_calibration_reproduces_the_fitted_map(heart_predictions, tmp_path):
    cal = tmp_path / "cal.json"
    assert (
        main(
            [
                "calibrate",
                str(heart_predictions),
                "--fit-on",
                "cleveland",
                "--methods",
                "temperature,isotonic",
                "--bootstrap",
                "0",
                "--json",
                str(cal),
            ]
        )
        == 0
    )
    doc = json.loads(cal.read_text())
    out = tmp_path / "calibrated.parquet"
    assert (
        main(
            [
                "apply-calibration",
                str(heart_predictions),
                "--calibration",
                str(cal),
                "--method",
                "temperature",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    src = pd.read_csv(heart_predictions)
    got = read_predictions(out)
    T = doc["methods"]["temperature"]["params"]["temperature"]
    np.testing.assert_allclose(got.prob(), 1 / (1 + np.exp(-src.logit.to_numpy() / T)), rtol=1e-12)
    assert list(got.frame["sex"]) == list(src["sex"])
    va = (got.frame.site == "va").to_numpy()
    assert brier_score_loss(got.y()[va], got.prob()[va]) == pytest.approx(
        doc["methods"]["temperature"]["sites"]["va"]["brier"]["estimate"], rel=1e-10
    )
    iso = get_calibrator("isotonic", "binary").fit(src.logit[src.site == "cleveland"], src.y[src.site == "cleveland"])
    out2 = tmp_path / "iso.csv"
    assert (
        main(
            [
                "apply-calibration",
                str(heart_predictions),
                "--calibration",
                str(cal),
                "--method",
                "isotonic",
                "--out",
                str(out2),
            ]
        )
        == 0
    )
    np.testing.assert_allclose(pd.read_csv(out2).p, iso.predict_proba(src.logit), atol=1e-12)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--fit-on", "clevelnd"], "did you mean 'cleveland'"),
        (["--fit-on", "cleveland", "--methods", "temprature"], "did you mean 'temperature'"),
        (["--fit-on", "cleveland", "--methods", "vector"], "does not apply to a binary task"),
        (["--fit-on", "cleveland", "--design", "held_out"], "did you mean 'held-out'"),
        ([], "--fit-on"),
        (["--fit-on", "cleveland", "--fit-fraction", "1.5"], "outside (0, 1]"),
    ],
)
def test_calibrate_bad_input_exits_2(heart_predictions, capsys, argv, message):
    assert main(["calibrate", str(heart_predictions), *argv]) == 2
    assert message in capsys.readouterr().err


def test_apply_calibration_bad_input_exits_2(heart_predictions, tmp_path, capsys):
    cal = tmp_path / "cal.json"
    assert (
        main(
            [
                "calibrate",
                str(heart_predictions),
                "--fit-on",
                "cleveland",
                "--methods",
                "platt",
                "--bootstrap",
                "0",
                "--json",
                str(cal),
            ]
        )
        == 0
    )
    capsys.readouterr()
    out = str(tmp_path / "o.csv")
    assert (
        main(["apply-calibration", str(heart_predictions), "--calibration", str(cal), "--method", "plat", "--out", out])
        == 2
    )
    assert "did you mean 'platt'" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert (
        main(
            ["apply-calibration", str(heart_predictions), "--calibration", str(bad), "--method", "platt", "--out", out]
        )
        == 2
    )
    assert "not valid JSON" in capsys.readouterr().err
    assert (
        main(
            [
                "apply-calibration",
                str(heart_predictions),
                "--calibration",
                str(tmp_path / "missing.json"),
                "--method",
                "platt",
                "--out",
                out,
            ]
        )
        == 2
    )
    assert "not found" in capsys.readouterr().err
