"""Reliability per subgroup, computed at run time into ``curves.json`` (``subgroups``) and only read by
the dashboard (issue #13, item 4).

References are independent of the code under test: group membership is re-derived here from the raw
manifest columns, bins are numpy's equal-width right-closed binning (as ECE), the interval per bin is
statsmodels' Wilson interval, and calibrated probabilities are the Platt formula written out here.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, softmax
from statsmodels.stats.proportion import proportion_confint

from validate.errors import InputError

from test_dashboard_data import write_fixture_run
from test_run_helpers import synthetic_bundle  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[1]
BINS = 15


def naive_bins(y, p, bins: int = BINS, level: float = 0.95) -> dict:
    """Equal-width bins of (0, 1], right-closed (bin b holds b/bins < p <= (b+1)/bins; p = 0 in the
    first), with a Wilson interval on each non-empty bin's observed rate."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    idx = np.clip(np.ceil(p * bins).astype(int) - 1, 0, bins - 1)
    count = np.array([(idx == b).sum() for b in range(bins)])
    events = np.array([y[idx == b].sum() for b in range(bins)])
    out = {
        "count": count.tolist(),
        "events": events.astype(int).tolist(),
        "mean_predicted": [],
        "observed": [],
        "observed_low": [],
        "observed_high": [],
    }
    for b in range(bins):
        if count[b] == 0:
            for k in ("mean_predicted", "observed", "observed_low", "observed_high"):
                out[k].append(None)
            continue
        lo, hi = proportion_confint(events[b], count[b], alpha=1 - level, method="wilson")
        out["mean_predicted"].append(p[idx == b].mean())
        out["observed"].append(events[b] / count[b])
        out["observed_low"].append(lo)
        out["observed_high"].append(hi)
    return out


def assert_bins_equal(stored: dict, want: dict) -> None:
    assert stored["count"] == want["count"] and stored["events"] == want["events"]
    assert stored["edges"] == pytest.approx(np.linspace(0, 1, BINS + 1).tolist())
    for k in ("mean_predicted", "observed", "observed_low", "observed_high"):
        for got, exp in zip(stored[k], want[k], strict=True):
            assert (got is None) == (exp is None), k
            if exp is not None:
                assert got == pytest.approx(exp, abs=1e-12), k


# ---- the engine: curves.json holds every group's diagram -------------------------------------------


@pytest.fixture(scope="module")
def heart(tmp_path_factory):
    """The heart sample scored by the engine, its subgroup columns, and curves.json with a Platt method
    evaluated at hungary and va (fitted parameters chosen here, so the calibrated bins can be checked)."""
    from validate.analysis.sites import site_curves
    from validate.cohort import derive_subgroups
    from validate.metrics import MetricSettings
    from validate.pipeline import load_predictions
    from validate.predictions import table_from_frame
    from validate.protocol import load_protocol

    protocol = load_protocol(REPO / "protocols" / "heart.yaml")
    loaded = load_predictions(protocol, scoring_dir=tmp_path_factory.mktemp("heart-scoring"), device="cpu")
    table = table_from_frame(loaded["frame"], task="binary")
    groups = derive_subgroups(table.frame, protocol)
    calibration = {
        "methods": {
            "platt": {
                "params": {"intercept": -0.3, "slope": 0.8},
                "sites": {"hungary": {"n": 1}, "va": {"n": 1}, "cleveland": {"n": 1}},
            }
        }
    }
    settings = MetricSettings(bins=BINS, n_bootstrap=0, cluster_by=None)
    curves = site_curves(
        table,
        task="binary",
        names=[],
        settings=settings,
        sites=[s.id for s in protocol.sites],
        calibration=calibration,
        fit_on=["cleveland"],
        groups=groups,
    )
    manifests = pd.concat(
        [
            pd.read_csv(REPO / "sample_sites" / "heart" / f"{s}.csv", dtype={"case_id": str}).assign(site=s)
            for s in ("cleveland", "hungary", "switzerland", "va")
        ]
    )
    return {"frame": table.frame, "curves": curves, "manifests": manifests.set_index("case_id")}


def _heart_cases(heart, site=None):
    """(label, logit, manifest row) of every scored heart case, optionally of one site."""
    f = heart["frame"]
    if site is not None:
        f = f[f["site"] == site]
    m = heart["manifests"].loc[f["case_id"].astype(str)]
    return f["y"].to_numpy(float), f["logit"].to_numpy(float), m


def test_stored_heart_group_diagram_equals_an_independent_recomputation(heart):
    """hungary, women aged 45-54 (an intersection cell) and age band 55-64, re-derived from the manifest's
    raw age and sex_label columns; as shipped and after Platt."""
    y, z, m = _heart_cases(heart, "hungary")
    women_45_54 = ((m["sex_label"] == "female") & (m["age"] >= 45) & (m["age"] < 55)).to_numpy()
    age_55_64 = ((m["age"] >= 55) & (m["age"] < 65)).to_numpy()
    level = heart["curves"]["subgroups"]["sites"]["hungary"]
    for stored, mask in (
        (level["sex_x_age_band"]["female & 45-54"], women_45_54),
        (level["age_band"]["55-64"], age_55_64),
    ):
        assert set(stored) == {"none", "platt"}
        for method, p in (("none", expit(z[mask])), ("platt", expit(0.8 * z[mask] - 0.3))):
            assert stored[method]["n"] == mask.sum() and stored[method]["n_events"] == y[mask].sum()
            assert_bins_equal(stored[method]["reliability"], naive_bins(y[mask], p))


def test_every_declared_group_is_stored_per_site_and_pooled(heart):
    curves = heart["curves"]["subgroups"]
    assert curves["attributes"] == ["sex", "age_band", "sex_x_age_band"]
    assert curves["groups"]["age_band"] == ["<45", "45-54", "55-64", ">=65"]
    y, z, m = _heart_cases(heart)
    # pooled: only as shipped; every group with cases, with its size
    men = (m["sex_label"] == "male").to_numpy()
    assert set(curves["overall"]["sex"]["male"]) == {"none"}
    assert curves["overall"]["sex"]["male"]["none"]["n"] == men.sum()
    assert_bins_equal(curves["overall"]["sex"]["male"]["none"]["reliability"], naive_bins(y[men], expit(z[men])))
    # a method is stored where it was evaluated, never at a site it was fitted on
    assert set(curves["sites"]["cleveland"]["sex"]["female"]) == {"none"}
    assert set(curves["sites"]["switzerland"]["sex"]["male"]) == {"none"}
    assert set(curves["sites"]["va"]["sex"]["male"]) == {"none", "platt"}
    # a group with cases, however few, has its diagram; a group without cases has none
    for site in ("cleveland", "hungary", "switzerland", "va"):
        _, _, ms = _heart_cases(heart, site)
        counts = pd.Series(
            [
                f"{s} & {b}"
                for s, b in zip(
                    ms["sex_label"],
                    pd.cut(
                        ms["age"], [-np.inf, 45, 55, 65, np.inf], right=False, labels=["<45", "45-54", "55-64", ">=65"]
                    ),
                    strict=True,
                )
            ]
        )
        counts = counts.value_counts()
        stored = curves["sites"][site]["sex_x_age_band"]
        assert {g: c["none"]["n"] for g, c in stored.items()} == counts.to_dict()


def test_multiclass_groups_use_the_top_label_view():
    from validate.analysis.sites import subgroup_reliability
    from validate.metrics import MetricSettings
    from validate.predictions import table_from_frame

    rng = np.random.default_rng(3)
    n = 300
    logits = rng.normal(0, 1.5, (n, 3))
    y = rng.integers(0, 3, n)
    frame = pd.DataFrame(
        {
            "case_id": [f"c{i}" for i in range(n)],
            "site": np.where(np.arange(n) < 200, "a", "b"),
            "y": np.array(["cat", "dog", "eel"])[y],
            **{f"logit_{c}": logits[:, k] for k, c in enumerate(["cat", "dog", "eel"])},
        }
    )
    table = table_from_frame(frame, task="multiclass", class_names=["cat", "dog", "eel"])
    groups = pd.DataFrame({"g": np.where(np.arange(n) % 3 == 0, "x", "z")})
    out = subgroup_reliability(
        table,
        groups,
        settings=MetricSettings(bins=BINS),
        sites=["a", "b"],
        calibration={"methods": {"platt": {"params": {"intercept": 0, "slope": 1}, "sites": {"a": {}}}}},
    )
    P = softmax(logits, axis=1)
    mask = (frame["site"] == "a").to_numpy() & (groups["g"] == "x").to_numpy()
    correct = (P.argmax(axis=1) == y).astype(float)
    cell = out["sites"]["a"]["g"]["x"]
    assert set(cell) == {"none"}  # calibration methods are binary only
    assert cell["none"]["n_events"] == correct[mask].sum()
    assert_bins_equal(cell["none"]["reliability"], naive_bins(correct[mask], P[mask].max(axis=1)))


def test_the_run_stores_subgroup_reliability_for_every_protocol_subgroup(synthetic_bundle):  # noqa: F811
    """`validate run` on the synthetic protocol: every non-empty cell of subgroups.json has its diagram,
    and one intersection cell after Platt equals a recomputation from the bundle's predictions and the
    fitted parameters in its calibration.json."""
    bundle = synthetic_bundle["bundle"]
    curves = json.loads((bundle / "curves.json").read_text())
    sub = json.loads((bundle / "subgroups.json").read_text())
    platt = json.loads((bundle / "calibration.json").read_text())["methods"]["platt"]["params"]
    assert curves["subgroups"]["attributes"] == sub["attributes"] == ["sex", "age_band", "sex_x_age_band"]
    assert curves["subgroups"]["groups"] == sub["groups"]
    for site, level in [*sub["sites"].items(), ("overall", sub["overall"])]:
        stored = curves["subgroups"]["overall"] if site == "overall" else curves["subgroups"]["sites"][site]
        for attr, cells in level["subgroups"].items():
            assert {g: c["none"]["n"] for g, c in stored[attr].items()} == {
                g: c["block"]["n"] for g, c in cells.items() if c["block"]["n"]
            }
    pred = pd.read_parquet(bundle / "predictions.parquet")
    part = pred[(pred["site"] == "ext_flat") & (pred["sex"] == "female") & (pred["age"] >= 50) & (pred["age"] < 70)]
    y, z = part["y"].to_numpy(float), part["logit"].to_numpy(float)
    cell = curves["subgroups"]["sites"]["ext_flat"]["sex_x_age_band"]["female & 50-69"]
    assert set(cell) == {"none", "platt", "temperature"}
    want = naive_bins(y, expit(platt["slope"] * z + platt["intercept"]), bins=10)
    assert cell["platt"]["n"] == len(part)
    assert cell["platt"]["reliability"]["count"] == want["count"]
    for k in ("mean_predicted", "observed", "observed_low", "observed_high"):
        got = [np.nan if v is None else v for v in cell["platt"]["reliability"][k]]
        assert got == pytest.approx([np.nan if v is None else v for v in want[k]], abs=1e-12, nan_ok=True), k


# ---- the dashboard reads, never computes ------------------------------------------------------------


@pytest.fixture
def dashboard_run(tmp_path):
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from dashboard.data import load_run

    folder = write_fixture_run(tmp_path / "runs" / "fixture")
    return load_run(folder, tmp_path / "runs"), folder


def _line(fig) -> dict:
    return next(t for t in fig.to_plotly_json()["data"] if t.get("mode") == "lines+markers")


@pytest.mark.parametrize("site,method", [("beta", "none"), ("beta", "platt"), ("overall", "none")])
def test_dashboard_subgroup_figure_is_the_stored_diagram(dashboard_run, site, method):
    from dashboard import figures

    run, folder = dashboard_run
    stored = json.loads((folder / "curves.json").read_text())["subgroups"]
    cell = (stored["overall"] if site == "overall" else stored["sites"][site])["sex"]["female"][method]
    rel = cell["reliability"]
    fig = figures.reliability(run, site, method, ("sex", "female"))
    keep = [i for i, c in enumerate(rel["count"]) if c]
    line = _line(fig)
    assert list(line["x"]) == [rel["mean_predicted"][i] for i in keep]
    assert list(line["y"]) == [rel["observed"][i] for i in keep]
    band = next(t for t in fig.to_plotly_json()["data"] if t.get("fill") == "toself")
    assert list(band["y"]) == [rel["observed_high"][i] for i in keep] + [rel["observed_low"][i] for i in keep][::-1]
    bars = [t for t in fig.to_plotly_json()["data"] if t.get("type") == "bar"]
    assert sum(sum(b["y"]) for b in bars) == cell["n"]
    assert f"n={cell['n']}" in fig.layout.title.text and "female" in fig.layout.title.text


def test_dashboard_offers_exactly_the_stored_groups(dashboard_run):
    from dashboard import figures

    run, folder = dashboard_run
    stored = json.loads((folder / "curves.json").read_text())["subgroups"]
    options = figures.reliability_options(run)
    assert options.groups_for("beta", "platt") == [None, ("sex", "female"), ("sex", "male")]
    assert options.groups_for("alpha", "none") == [None, ("sex", "female"), ("sex", "male")]
    assert "platt" not in options.methods_for("alpha")  # fitted there: not evaluated, nothing stored
    assert set(stored["sites"]["beta"]["sex"]["female"]) == set(options.methods_for("beta"))


def test_dashboard_without_stored_subgroup_diagrams_offers_none_and_computes_nothing(dashboard_run):
    """A bundle written before curves.json held subgroups (still contract version 1): no group filter,
    even though predictions.parquet is there to compute from."""
    from dashboard import figures
    from dashboard.data import load_run

    _, folder = dashboard_run
    file = folder / "curves.json"
    data = json.loads(file.read_text())
    data.pop("subgroups")
    file.write_text(json.dumps(data))
    run = load_run(folder, folder.parent)
    assert run.has_predictions
    assert figures.reliability_options(run).groups_for("beta", "none") == [None]
    assert figures.reliability(run, "beta", "none", ("sex", "female")) is None


def test_dashboard_figures_imports_no_engine_module():
    import ast

    tree = ast.parse((REPO / "dashboard" / "figures.py").read_text())
    names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    assert not {m for m in names if m.startswith(("validate.analysis", "validate.predictions", "validate.cohort"))}
    assert "SimpleNamespace" not in (REPO / "dashboard" / "figures.py").read_text()


@pytest.mark.parametrize("how", ["renamed", "missing"])
def test_dashboard_loader_refuses_a_renamed_group_diagram_key(dashboard_run, tmp_path, how):
    from dashboard.data import load_run

    _, folder = dashboard_run
    copy = tmp_path / "runs" / "broken"
    shutil.copytree(folder, copy)
    file = copy / "curves.json"
    data = json.loads(file.read_text())
    cell = data["subgroups"]["sites"]["beta"]["sex"]["female"]["platt"]
    value = cell.pop("reliability")
    if how == "renamed":
        cell["reliability_bins"] = value
    file.write_text(json.dumps(data))
    with pytest.raises(InputError) as exc:
        load_run(copy, copy.parent)
    assert str(file) in str(exc.value) and "subgroups.sites.beta.sex.female.platt.reliability" in str(exc.value)
    assert "required key missing" in str(exc.value)
