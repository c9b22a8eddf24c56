"""The exit-code contract at the command line: 3 for a run that could not complete, one line, log file."""
from __future__ import annotations

from pathlib import Path

from tests.adversarial.conftest import Unchanged, run_cli


def _factory_protocol(tmp_path: Path, body: str) -> Path:
    (tmp_path / "site.csv").write_text("case_id,label,x\n" + "".join(f"c{i},{i % 2},{i}\n" for i in range(20)))
    (tmp_path / "evil_factory.py").write_text(body)
    (tmp_path / "weights.pt").write_bytes(b"")
    protocol = tmp_path / "p.yaml"
    protocol.write_text(
        "name: exitcodes\nversion: '1'\ntask: binary\nclasses: [neg, pos]\npositive_class: pos\n"
        "input: {kind: tabular, features: [x]}\n"
        "model: {checkpoint: weights.pt, format: state_dict, factory: 'evil_factory:build'}\n"
        "sites:\n  - {id: a, manifest: site.csv}\n")
    return protocol


def test_sys_exit_in_factory_is_exit_3_not_a_pass(tmp_path):
    protocol = _factory_protocol(tmp_path, "import sys\ndef build():\n    sys.exit(0)\n")
    with Unchanged(tmp_path, allow=["runs", "out", ".cache"]):
        r = run_cli("run", protocol, "--out", tmp_path / "out", "--runs-dir", tmp_path / "runs", cwd=tmp_path)
    assert r.code == 3, r.text
    assert "sys.exit" in r.err
    assert r.err.count("\n") == 1, r.err  # one line
    assert not (tmp_path / "out").exists()
