"""The exit-code contract at the command line: 3 for a run that could not complete, one line, log file."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.adversarial.harness import Unchanged, run_cli


def _factory_protocol(tmp_path: Path, body: str) -> Path:
    (tmp_path / "site.csv").write_text("case_id,label,x\n" + "".join(f"c{i},{i % 2},{i}\n" for i in range(20)))
    (tmp_path / "evil_factory.py").write_text(body)
    # a real weights-only state dict: the factory is only called once the weights have been read
    torch.save({"w": torch.zeros(1)}, tmp_path / "weights.pt")
    protocol = tmp_path / "p.yaml"
    protocol.write_text(
        "name: exitcodes\nversion: '1'\ntask: binary\nclasses: [neg, pos]\npositive_class: pos\n"
        "input: {kind: tabular, features: [x]}\n"
        "model: {checkpoint: weights.pt, format: state_dict, factory: 'evil_factory:build', factory_path: .}\n"
        "sites:\n  - {id: a, manifest: site.csv, role: development}\n"
    )
    return protocol


def test_sys_exit_in_factory_is_exit_3_not_a_pass(tmp_path):
    protocol = _factory_protocol(tmp_path, "import sys\ndef build():\n    sys.exit(0)\n")
    with Unchanged(tmp_path, allow=["runs", "out", ".cache", "validate-error-*"]):  # exit 3 logs its traceback
        r = run_cli("run", protocol, "--out", tmp_path / "out", "--runs-dir", tmp_path / "runs", cwd=tmp_path)
    assert r.code == 3, r.text
    assert "sys.exit" in r.err
    assert r.err.count("\n") == 1, r.err  # one line
    assert not (tmp_path / "out").exists()
    logs = list(tmp_path.glob("validate-error-*.log"))
    assert len(logs) == 1 and logs[0].name in r.err  # the one line names the log that holds the traceback
