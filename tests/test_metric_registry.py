"""The metric registry is the one place a metric is declared: every key of a real metrics BLOCK is
registered (and every registered metric appears), intervals and directions agree with what the blocks,
gates and subgroup analysis do, and a metric added to the registry shows up in the block, the gaps,
the report, the dashboard and the command-line tables without touching them."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from validate.metrics import MetricSettings, metrics_report, registry
from validate.metrics.ece_interval import METHODS as ECE_INTERVAL_METHODS
from validate.metrics.registry import Metric

REPO = Path(__file__).resolve().parents[1]
SETTINGS = MetricSettings(n_bootstrap=20, seed=1, thresholds=(0.5,), target_sensitivity=0.9, min_events=1, min_cases=1)


def _frame(task: str, n: int = 160) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    df = pd.DataFrame(
        {
            "case_id": [f"c{i}" for i in range(n)],
            "site": np.repeat(["a", "b"], n // 2),
            "sex": rng.choice(["F", "M"], n),
        }
    )
    if task == "binary":
        df["p"] = rng.beta(2, 3, n)
        df["y"] = (rng.random(n) < df["p"]).astype(int)
    elif task == "multiclass":
        P = rng.dirichlet([2, 2, 2], n)
        for k, name in enumerate("xyz"):
            df[f"p_{name}"] = P[:, k]
        df["y"] = [rng.choice(3, p=row) for row in P]
    else:
        for name in ("u", "v"):
            df[f"p_{name}"] = rng.beta(2, 3, n)
            df[f"y_{name}"] = (rng.random(n) < df[f"p_{name}"]).astype(int)
    return df


# segmentation BLOCKs summarise per-case metric rows (tests/test_segmentation_stats.py checks their keys)
@pytest.fixture(scope="module", params=[t for t in registry.TASKS if t != "segmentation"])
def report(request):
    task = request.param
    rep = metrics_report(
        _frame(task),
        task=task,
        settings=SETTINGS,
        subgroup_columns=["sex"],
        development_site="a" if task == "binary" else None,
    )
    return task, rep


def _blocks(rep: dict) -> list[dict]:
    return [rep["overall"], *rep["sites"].values(), *(b for g in rep["subgroups"].values() for b in g.values())]


def test_block_keys_and_registry_are_the_same_set(report):
    task, rep = report
    # the net-benefit family lives in the block's decision items (tests/test_net_benefit.py)
    registered = {m.name for m in registry.metrics_for(task) if not m.at_decision}
    for block in _blocks(rep):
        metric_keys = set(block) - set(registry.BLOCK_FIELDS[task])
        assert metric_keys == registered, (task, metric_keys ^ registered)
    nested = {"multiclass": "classes", "multilabel": "labels"}.get(task)
    if nested:  # per-class and per-label blocks are binary blocks; multilabel "macro" uses binary names
        for sub in rep["overall"][nested].values():
            binary = {m.name for m in registry.metrics_for("binary") if not m.at_decision}
            assert set(sub) - set(registry.BLOCK_FIELDS["binary"]) == binary
    if task == "multilabel":
        assert set(rep["overall"]["macro"]) <= {m.name for m in registry.metrics_for("binary")}
        assert all(f"{m}_macro" in registered for m in rep["overall"]["macro"])


def test_interval_methods_are_the_declared_ones(report):
    task, rep = report
    for m in registry.metrics_for(task):
        if m.at_decision:  # under "decision", at each decision threshold (tests/test_net_benefit.py)
            continue
        entry = rep["overall"][m.name]
        if task == "binary" and m.name in ECE_INTERVAL_METHODS:  # bootstrap replicates, another construction
            assert m.interval == "bootstrap" and entry["method"] == ECE_INTERVAL_METHODS[m.name], m.name
        elif m.interval in ("delong", "wald", "bootstrap"):
            assert entry["method"] == m.interval, m.name
        elif m.interval == "test":
            assert {"statistic", "p_value"} <= set(entry), m.name
        else:
            assert not isinstance(entry, dict), m.name


def test_presentation_lists_name_registered_metrics_of_their_task():
    for task in registry.TASKS:
        block_names = {m.name for m in registry.metrics_for(task)}
        for lst in registry.LISTS:
            names = registry.names(lst, task)
            assert len(set(names)) == len(names), (task, lst)
            assert set(names) <= block_names, (task, lst)
    # the ranking and gap metrics need a weighted function, the binary bootstrap ones a kernel
    for m in registry.metrics_for("binary"):
        if "subgroup_gaps" in m.shown or "calibration_ranking" in m.shown:
            assert m.weighted is not None, m.name
        if m.interval in ("bootstrap", "delong"):
            assert m.replicate is not None or m.weighted is not None, m.name
    assert registry.names("calibration_ranking", "multiclass") == registry.names("calibration_ranking", "binary")


def test_a_name_declared_for_several_tasks_has_one_label_and_direction():
    seen: dict[str, Metric] = {}
    for m in registry.METRICS:
        first = seen.setdefault(m.name, m)
        assert (m.label, m.direction, m.target) == (first.label, first.direction, first.target), m.name
    # the labels the charts and the dashboard disagreed on: the registry's (rms::val.prob's names)
    from dashboard import tables
    from validate import charts

    for name, text in (("eavg", "Eavg"), ("emax", "Emax"), ("e90", "E90")):
        assert charts.metric_label(name) == tables.label(name) == text


def _subgroup_metrics(metric: str, values: dict[str, float]) -> dict:
    def blk(v):
        return {"n": 100, "n_events": 40, metric: {"estimate": v, "ci_low": v, "ci_high": v, "method": "bootstrap"}}

    return {
        "task": "binary",
        "overall": blk(0.5),
        "sites": {"a": blk(0.5)},
        "subgroups": {"g": {k: blk(v) for k, v in values.items()}},
    }


@pytest.mark.parametrize(
    "metric", [m.name for m in registry.METRICS if m.direction in ("higher", "lower") and m.in_block]
)
def test_direction_agrees_with_subgroup_worst_and_gates(metric):
    """The group the subgroup analysis calls worst is the one a natural gate (min where higher is better,
    max where lower is better) judges in its worst_subgroup scope."""
    from validate.analysis.subgroups import worst_groups
    from validate.gates import judge_gates

    values = {"g1": 0.30, "g2": 0.55, "g3": 0.80}
    m = registry.get(metric)
    expected = "g1" if m.direction == "higher" else "g3"
    data = _subgroup_metrics(metric, values)
    worst = worst_groups(data["subgroups"]["g"], [metric])
    assert worst[metric]["group"] == expected
    bound = {"min": 0.0} if m.direction == "higher" else {"max": 1.0}
    report = judge_gates([{"metric": metric, "scope": "worst_subgroup:g", **bound}], data)
    assert report.rows[0].group == expected


def test_targets_agree_with_subgroup_worst_and_the_sample_gates():
    from validate.analysis.subgroups import worst_groups

    for m in (x for x in registry.METRICS if x.direction == "target"):
        values = {"g1": m.target - 0.1, "g2": m.target + 0.3, "g3": m.target}
        assert worst_groups(_subgroup_metrics(m.name, values)["subgroups"]["g"], [m.name])[m.name]["group"] == "g2"
    # every gate of the sample protocols bounds its metric on the side the registry calls worse
    for name in ("heart", "chest"):
        proto = yaml.safe_load((REPO / "protocols" / f"{name}.yaml").read_text())
        for gate in proto.get("gates") or []:
            m = registry.get(gate["metric"].split(".")[0], proto["task"])
            if m is None or m.direction is None:
                continue
            if "min" in gate:
                assert m.direction == "higher" or (m.direction == "target" and m.target >= gate["min"]), gate
            else:
                assert m.direction == "lower" or (m.direction == "target" and m.target <= gate["max"]), gate


def test_gate_metric_names_are_checked_against_the_registry():
    assert registry.check_gate_metric("auroc", "binary") is None
    assert registry.check_gate_metric("hosmer_lemeshow.p_value", "binary") is None
    assert registry.check_gate_metric("macro.auroc", "multilabel") is None
    assert registry.check_gate_metric("classes.x.auroc", "multiclass") is None
    assert "did you mean `auroc`" in registry.check_gate_metric("aurco", "binary")
    assert "not a binary metric" in registry.check_gate_metric("accuracy", "binary")


# ---- a new metric: one registry entry, and everything iterates over it --------------------------------


def _mean_p_kernel(draw):
    return draw.ws @ draw.cases.p / draw.total


def _mean_p_weighted(cases, w):
    w = cases.ones(w)
    return w @ cases.p / w.sum(axis=1)


FAKE = Metric(
    "mean_p",
    "Mean probability",
    ("binary",),
    "mean predicted probability",
    direction="lower",
    replicate=_mean_p_kernel,
    weighted=_mean_p_weighted,
    shown=dict(
        cli=9, run_summary=9, overview=9, report_calibration=9, report_subgroups=9, subgroup_gaps=99, subgroup_worst=99
    ),
)


@pytest.fixture()
def fake_metric(monkeypatch):
    monkeypatch.setattr(registry, "METRICS", registry.METRICS + (FAKE,))
    return FAKE


def test_a_registered_metric_appears_in_blocks_gaps_and_tables(fake_metric):
    from dashboard import tables
    from validate.analysis.subgroups import paired_gaps
    from validate.commands.metrics import format_table
    from validate.report import render

    df = _frame("binary")
    p = df["p"].to_numpy()
    rep = metrics_report(df, task="binary", settings=SETTINGS, subgroup_columns=["sex"])
    # the block: estimate is the plain mean (numpy as the reference), with a bootstrap interval
    entry = rep["overall"]["mean_p"]
    assert entry["method"] == "bootstrap" and entry["estimate"] == pytest.approx(p.mean(), rel=1e-12)
    assert entry["ci_low"] < entry["estimate"] < entry["ci_high"]
    assert rep["sites"]["a"]["mean_p"]["estimate"] == pytest.approx(p[df["site"] == "a"].mean(), rel=1e-12)
    # the subgroup gap: mean over the group minus mean over all
    female = (df["sex"] == "F").to_numpy()
    gaps = paired_gaps(df["y"].to_numpy(), p, {"F": female}, settings=SETTINGS, metrics=("mean_p",))
    assert gaps["F"]["mean_p"]["estimate"] == pytest.approx(p[female].mean() - p.mean(), rel=1e-9)
    # `validate metrics` table
    assert "mean_p" in format_table(rep).splitlines()[0]
    # the report's calibration table
    from validate.contract import parse

    bundle = SimpleNamespace(
        metrics=rep, curves={}, sites={}, typed=SimpleNamespace(metrics=parse("metrics.json", rep), sites=None)
    )  # the typed view
    html = render._calibration(bundle, render._Figures())
    assert "Mean probability" in html and render.esc(render.entry_text(entry)) in html
    # the dashboard's Overview
    run = SimpleNamespace(
        metrics=rep, task="binary", gates={}, protocol={}, cohorts={}, site_name=lambda s: "", site_role=lambda s: ""
    )
    display, data, _ = tables.site_table(run)
    assert "Mean probability" in display.columns and data["mean_p"].iloc[-1] == pytest.approx(p.mean())


def test_without_a_kernel_the_weighted_function_gives_the_block_entry(monkeypatch):
    """A new metric needs only its weighted function: the blocks fall back to it."""
    bare = Metric(
        "mean_p",
        "Mean probability",
        ("binary",),
        "mean predicted probability",
        direction="lower",
        weighted=_mean_p_weighted,
    )
    monkeypatch.setattr(registry, "METRICS", registry.METRICS + (bare,))
    df = _frame("binary")
    rep = metrics_report(df, task="binary", settings=SETTINGS)
    entry = rep["overall"]["mean_p"]
    assert entry["method"] == "bootstrap" and entry["estimate"] == pytest.approx(df["p"].mean(), rel=1e-12)
    assert entry["ci_low"] < entry["estimate"] < entry["ci_high"]
