"""Hostile segmentation protocols and checkpoints at the command line (issue #20): exit 2, one located
message, no traceback, nothing written beside the inputs."""

from __future__ import annotations

from pathlib import Path

from tests.adversarial.harness import Unchanged, run_cli
from tests.test_segmentation_scoring import logit_maps, save_model, workspace


def test_classes_refused_for_segmentation(tmp_path: Path):
    protocol = workspace(tmp_path)
    protocol.write_text(protocol.read_text().replace("task: segmentation\n", "task: segmentation\nclasses: [a, b]\n"))
    with Unchanged(tmp_path):
        r = run_cli("check", protocol, cwd=tmp_path)
    assert r.code == 2, r.text
    r.assert_no_traceback()
    assert "`classes` does not apply to a segmentation task" in r.err


def test_model_with_the_wrong_channels_is_bad_input(tmp_path: Path):
    protocol = workspace(tmp_path)
    save_model(tmp_path / "model.pt2", logit_maps(3))  # three maps for one sigmoid label
    r = run_cli("score", protocol, "--out", tmp_path / "scored", "--device", "cpu", cwd=tmp_path)
    assert r.code == 2, r.text
    r.assert_no_traceback()
    assert "[N, 1, H, W]" in r.err and "model.checkpoint" in r.err
