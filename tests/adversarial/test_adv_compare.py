"""Hostile comparison requests (issue #14): exit 2 before anything is scored, a message naming the
protocol line, the gate and how to fix it, and nothing written."""

from __future__ import annotations

from tests.adversarial.harness import Unchanged, run_cli
from tests.adversarial.test_adv_protocol import TABULAR, line_of, workspace

COMPARE_GATE = """\
  - name: auroc-non-inferior
    metric: auroc
    compare: baseline
    scope: each_site
    min: -0.02
    on: ci_low
"""


def test_comparison_gate_without_baseline_is_refused_before_scoring(tmp_path):
    text = TABULAR + COMPARE_GATE
    proto = workspace(tmp_path, text)
    with Unchanged(tmp_path):
        res = run_cli("run", proto, "--out", tmp_path / "out", "--cache", tmp_path / "cache")
    assert res.code == 2, res.text
    assert f"line {line_of(text, 'compare: baseline')}" in res.err
    assert "auroc-non-inferior" in res.err and "--baseline" in res.err and "model.baseline" in res.err


def test_missing_baseline_file_is_refused_before_scoring(tmp_path):
    proto = workspace(tmp_path, TABULAR + COMPARE_GATE)
    with Unchanged(tmp_path):
        res = run_cli("run", proto, "--baseline", tmp_path / "old.pt2", "--out", tmp_path / "out")
    assert res.code == 2, res.text
    assert "baseline file not found" in res.err and "old.pt2" in res.err


def test_model_baseline_without_checkpoint_is_refused_before_scoring(tmp_path):
    text = TABULAR.replace("input:\n", "model:\n  checkpoint: new.pt2\n  baseline:\n    format: export\ninput:\n")
    proto = workspace(tmp_path, text + COMPARE_GATE)
    with Unchanged(tmp_path):
        res = run_cli("run", proto, "--out", tmp_path / "out")
    assert res.code == 2, res.text
    assert "model.baseline names no checkpoint" in res.err


def test_comparison_gate_with_unknown_metric_names_the_nearest(tmp_path):
    text = TABULAR + COMPARE_GATE.replace("metric: auroc", "metric: aurc")
    proto = workspace(tmp_path, text)
    with Unchanged(tmp_path):
        res = run_cli("run", proto, "--baseline", proto, "--out", tmp_path / "out")
    assert res.code == 2, res.text
    assert "no difference in `aurc`" in res.err and "did you mean `auroc`" in res.err


def test_comparison_gate_scope_without_a_comparison_block(tmp_path):
    text = TABULAR + COMPARE_GATE.replace("scope: each_site", "scope: worst_subgroup:sex")
    proto = workspace(tmp_path, text)
    with Unchanged(tmp_path):
        res = run_cli("check", proto)
    assert res.code == 2, res.text
    assert f"line {line_of(text, 'name: auroc-non-inferior')}" in res.err
    assert "overall, each_site or each_subgroup" in res.err


def test_comparison_of_a_multiclass_task_is_refused(tmp_path):
    text = (
        TABULAR.replace("task: binary", "task: multiclass")
        .replace("classes: [absent, present]", "classes: [a, b, c]")
        .replace("positive_class: present\n", "")
        .replace("  methods: [temperature, platt]", "  methods: []")
    )
    text = text[: text.index("gates:")] + "gates:\n" + COMPARE_GATE
    proto = workspace(tmp_path, text)
    with Unchanged(tmp_path):
        res = run_cli("run", proto, "--baseline", proto, "--out", tmp_path / "out")
    assert res.code == 2, res.text
    assert "paired comparison supports binary tasks" in res.err


def test_comparison_gate_bound_on_the_wrong_side_is_refused_by_check(tmp_path):
    """`min` on Δ ECE (lower is better) would pass a worse model and read "non-inferior": exit 2,
    naming the line of the bound and what to write instead."""
    gate = COMPARE_GATE.replace("metric: auroc", "metric: ece")
    text = TABULAR + gate
    proto = workspace(tmp_path, text)
    with Unchanged(tmp_path):
        res = run_cli("check", proto)
    assert res.code == 2, res.text
    assert f"line {line_of(text, 'min: -0.02')}" in res.err
    assert "would pass a worse new model" in res.err and "max" in res.err
