"""Hostile output paths: nothing the user owns is deleted, and a run that cannot complete says so.

`validate run --out DIR` used to replace whatever was at DIR (the working folder, a folder of earlier
bundles, a file). Now a bundle may replace only a bundle validate wrote, or an empty folder; anything
else is refused (exit 2) before any scoring. `validate gate --out` and `validate report --out` replace
only files validate wrote. A bundle missing a file its protocol implies is refused, not re-reported
as PASS. A full disk, a read-only folder, or an over-long kept case id is one line and exit 3 (or a
whole bundle), never a traceback, and leaves the user's files as they were.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_run_helpers import GATE_FAIL, GATES_PASS, make_protocol
from tests.adversarial.harness import REPO, Unchanged, run_cli

LOG = "validate-error-*"  # a crash log may be written beside the output (never inside a bundle)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A protocol (gates that pass) and one bundle validate wrote, to copy per test."""
    from validate.cli import main

    folder = tmp_path_factory.mktemp("outsafe")
    protocol = make_protocol(folder, n_bootstrap=0)
    bundle = folder / "made" / "bundle"
    assert main(["run", str(protocol), "--out", str(bundle), "-q"]) == 0
    return {"protocol": protocol, "bundle": bundle, "folder": folder}


def _bundle_copy(workspace, where: Path) -> Path:
    shutil.copytree(workspace["bundle"], where)
    return where


def _user_files(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "thesis.docx").write_bytes(b"years of work")
    (folder / "notes").mkdir()
    (folder / "notes" / "a.txt").write_text("keep me")
    return folder


def _refused(r, path: Path) -> None:
    assert r.code == 2, r.text
    assert str(path.resolve()) in r.err and "--out" in r.err, r.err
    assert r.err.count("\n") == 1, r.err  # one line


# ---- 1. validate run --out replaces only a bundle of ours, or an empty folder -----------------------


def test_run_out_dot_does_not_empty_the_working_folder(workspace, tmp_path):
    cwd = _user_files(tmp_path / "work")
    with Unchanged(tmp_path):
        r = run_cli("run", workspace["protocol"], "--out", ".", cwd=cwd)
    _refused(r, cwd)
    assert "it exists and it is not a results bundle" in r.err


def test_run_out_on_a_folder_of_bundles_keeps_them(workspace, tmp_path):
    runs = tmp_path / "runs"
    for name in ("heart-1", "heart-2"):
        _bundle_copy(workspace, runs / name)
    with Unchanged(tmp_path):
        r = run_cli("run", workspace["protocol"], "--out", runs, cwd=tmp_path)
    _refused(r, runs)


def test_run_out_on_an_unrelated_folder_or_a_file_is_refused(workspace, tmp_path):
    folder = _user_files(tmp_path / "somefolder")
    afile = tmp_path / "afile.txt"
    afile.write_text("not a folder")
    with Unchanged(tmp_path):
        r1 = run_cli("run", workspace["protocol"], "--out", folder, cwd=tmp_path)
        r2 = run_cli("run", workspace["protocol"], "--out", afile, cwd=tmp_path)
        r3 = run_cli("run", workspace["protocol"], "--out", afile / "b", cwd=tmp_path)
    _refused(r1, folder)
    _refused(r2, afile)
    assert "it is a file" in r2.err
    assert r3.code == 2 and f"{afile.resolve()} is a file, not a folder" in r3.err, r3.text


@pytest.mark.parametrize("spoil", ["extra_file", "fake_provenance", "bad_json", "symlink"])
def test_run_out_on_something_that_only_looks_like_a_bundle_is_refused(workspace, tmp_path, spoil):
    target = _bundle_copy(workspace, tmp_path / "b")
    if spoil == "extra_file":  # a bundle the user put a file into: that file would be lost
        (target / "my-notes.txt").write_text("mine")
        expected = "my-notes.txt"
    elif spoil == "fake_provenance":
        (target / "provenance.json").write_text(json.dumps({"written_by": "someone else"}))
        expected = "was not written by validate"
    elif spoil == "bad_json":
        (target / "provenance.json").write_text("{not json")
        expected = "not valid JSON"
    else:
        (target / "link").symlink_to(tmp_path)
        expected = "link"
    with Unchanged(tmp_path):
        r = run_cli("run", workspace["protocol"], "--out", target, cwd=tmp_path)
    _refused(r, target)
    assert expected in r.err, r.err


def test_out_is_checked_before_scoring(tmp_path):
    # scoring this protocol fails (an empty checkpoint; its factory would call sys.exit): a bad --out
    # must be refused first, in seconds, not after the scoring
    (tmp_path / "site.csv").write_text("case_id,label,x\n" + "".join(f"c{i},{i % 2},{i}\n" for i in range(20)))
    (tmp_path / "evil_factory.py").write_text("import sys\ndef build():\n    sys.exit(0)\n")
    (tmp_path / "weights.pt").write_bytes(b"")
    protocol = tmp_path / "p.yaml"
    protocol.write_text(
        "name: early\nversion: '1'\ntask: binary\nclasses: [neg, pos]\npositive_class: pos\n"
        "input: {kind: tabular, features: [x]}\n"
        "model: {checkpoint: weights.pt, format: state_dict, factory: 'evil_factory:build'}\n"
        "sites:\n  - {id: a, manifest: site.csv, role: development}\n"
    )
    folder = _user_files(tmp_path / "somefolder")
    with Unchanged(tmp_path):
        r = run_cli("run", protocol, "--out", folder, cwd=tmp_path)
    _refused(r, folder)


@pytest.mark.slow
def test_run_replaces_its_own_bundle_and_uses_an_empty_folder(workspace, tmp_path):
    target = _bundle_copy(workspace, tmp_path / "runs" / "b")
    before = json.loads((target / "provenance.json").read_text())
    (tmp_path / "runs" / "other.txt").write_text("beside the bundle")
    empty = tmp_path / "runs" / "empty"
    empty.mkdir()
    with Unchanged(tmp_path, allow=["runs/b", "runs/empty", "runs/.cache"]):
        r1 = run_cli("run", workspace["protocol"], "--out", target, "-q", cwd=tmp_path)
        r2 = run_cli("run", workspace["protocol"], "--out", empty, "-q", cwd=tmp_path)
    assert r1.code == 0 and r2.code == 0, r1.text + r2.text
    after = json.loads((target / "provenance.json").read_text())
    assert after["bundle_format"] == "validate-results-bundle/1" and after["started_at"] >= before["started_at"]
    assert (empty / "gates.json").is_file() and (empty / "report.html").is_file()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["b", "empty", "other.txt"]


def test_run_out_inside_a_bundle_is_refused(workspace, tmp_path):
    bundle = _bundle_copy(workspace, tmp_path / "b")
    with Unchanged(tmp_path):
        r = run_cli("run", workspace["protocol"], "--out", bundle / "nested", cwd=tmp_path)
    assert r.code == 2 and "a results bundle" in r.err, r.text


# ---- validate gate --out / validate report --out ------------------------------------------------------


def test_gate_out_does_not_replace_files_it_did_not_write(workspace, tmp_path):
    bundle = _bundle_copy(workspace, tmp_path / "b")
    ci = tmp_path / "ci"
    ci.mkdir()
    (ci / "junit.xml").write_text('<?xml version="1.0"?><testsuites name="pytest"/>')  # another tool's
    afile = tmp_path / "afile.txt"
    afile.write_text("x")
    strict = make_protocol(tmp_path / "p", "strict.yaml", gates=GATES_PASS + GATE_FAIL, n_bootstrap=0)
    other = _bundle_copy(workspace, tmp_path / "other")
    with Unchanged(tmp_path):
        r1 = run_cli("gate", bundle, "--out", ci, cwd=tmp_path)
        r2 = run_cli("gate", bundle, "--out", afile, cwd=tmp_path)
        r3 = run_cli("gate", bundle, "--protocol", strict, "--out", other, cwd=tmp_path)
        r4 = run_cli("gate", bundle, "--protocol", strict, "--out", bundle, cwd=tmp_path)
    assert r1.code == 2 and "junit.xml there was not written by validate" in r1.err, r1.text
    assert r2.code == 2 and "it is a file" in r2.err, r2.text
    assert r3.code == 2 and "another results bundle" in r3.err, r3.text
    assert r4.code == 2 and "no longer match its protocol.yaml" in r4.err, r4.text
    # its own earlier output is refreshed, other files in the folder are left alone
    out = tmp_path / "gates-out"
    out.mkdir()
    (out / "readme.txt").write_text("mine")
    with Unchanged(tmp_path, allow=["gates-out/gates.json", "gates-out/junit.xml", "gates-out/gates.md"]):
        assert run_cli("gate", bundle, "--protocol", strict, "--out", out, "-q", cwd=tmp_path).code == 1
        assert run_cli("gate", bundle, "--out", out, "-q", cwd=tmp_path).code == 0
    assert json.loads((out / "gates.json").read_text())["verdict"] == "pass"


def test_report_out_does_not_replace_a_file_it_did_not_write(workspace, tmp_path):
    bundle = _bundle_copy(workspace, tmp_path / "b")
    mine = tmp_path / "summary.html"
    mine.write_text("<html>my own page</html>")
    folder = _user_files(tmp_path / "folder")
    other = _bundle_copy(workspace, tmp_path / "other")
    with Unchanged(tmp_path):
        r1 = run_cli("report", bundle, "--out", mine, cwd=tmp_path)
        r2 = run_cli("report", bundle, "--out", folder, cwd=tmp_path)
        r3 = run_cli("report", bundle, "--out", other / "report.html", cwd=tmp_path)
        r4 = run_cli("report", bundle, "--out", bundle / "copy.html", cwd=tmp_path)
    assert r4.code == 2 and "a results bundle" in r4.err, r4.text
    assert r1.code == 2 and "not a report written by validate" in r1.err and str(mine) in r1.err, r1.text
    assert r2.code == 2 and "it is a folder" in r2.err, r2.text
    assert r3.code == 2 and "a results bundle" in r3.err, r3.text
    # a report it wrote before is replaced
    copy = tmp_path / "copy.html"
    shutil.copy(bundle / "report.html", copy)
    with Unchanged(tmp_path, allow=["copy.html"]):
        r = run_cli("report", bundle, "--out", copy, cwd=tmp_path)
    assert r.code == 0, r.text


# ---- 3. a bundle missing a file its protocol implies ----------------------------------------------------


@pytest.mark.parametrize("missing", ["gates.json", "calibration.json", "subgroups.json", "shift.json"])
def test_report_and_gate_refuse_a_bundle_missing_an_implied_file(workspace, tmp_path, missing):
    bundle = _bundle_copy(workspace, tmp_path / "b")
    (bundle / missing).unlink()
    with Unchanged(tmp_path):
        r1 = run_cli("report", bundle, cwd=tmp_path)
        r2 = run_cli("gate", bundle, cwd=tmp_path)
    for r in (r1, r2):
        assert r.code == 2, r.text
        assert f"{missing} is missing" in r.err and str(bundle.resolve()) in r.err, r.err
        assert "PASS" not in r.text


@pytest.mark.slow
def test_report_of_a_bundle_without_gates_json_is_not_a_pass(workspace, tmp_path):
    # the protocol's gates fail; with gates.json lost the report once read "PASS: no gates declared"
    protocol = make_protocol(tmp_path / "p", "fail.yaml", gates=GATES_PASS + GATE_FAIL, n_bootstrap=0)
    bundle = tmp_path / "b"
    r = run_cli("run", protocol, "--out", bundle, "-q", cwd=tmp_path)
    assert r.code == 1, r.text
    (bundle / "gates.json").unlink()
    (bundle / "report.html").unlink()
    with Unchanged(tmp_path):
        r = run_cli("report", bundle, cwd=tmp_path)
    assert r.code == 2 and "gates.json is missing, but its protocol.yaml declares gates" in r.err, r.text


# ---- 4. could not complete: one line, exit 3, the user's files untouched -------------------------------


def _mount_tmpfs(where: Path, size: str, read_only: bool = False) -> None:
    """A small tmpfs at ``where`` (root only: a full disk and a read-only folder that bind root too)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small or read-only tmpfs (root ignores chmod)")
    where.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")


def _unmount(where: Path) -> None:
    subprocess.run(["umount", str(where)], capture_output=True)


def _hidden(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_full_disk_is_one_line_exit_3_and_leaves_no_staging(workspace, tmp_path):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "200k")
    try:
        (disk / "keep.txt").write_text("the user's file")
        with Unchanged(tmp_path, allow=[f"disk/{LOG}"]):
            r = run_cli("run", workspace["protocol"], "--out", disk / "b", cwd=tmp_path)
        assert r.code == 3, r.text
        assert "no space left on the device" in r.err and str(disk) in r.err, r.err
        # the phases that finished before the disk filled are logged (progress); the error is one line
        assert r.err.endswith("\n") and len(r.error_lines) == 1, r.err
        assert r.err.splitlines()[-1].startswith("validate run: could not complete: "), r.err
        assert not (disk / "b").exists() and _hidden(disk) == []  # the staging folder is gone
    finally:
        _unmount(disk)


@pytest.mark.slow
def test_full_disk_while_replacing_keeps_the_earlier_bundle_whole(workspace, tmp_path):
    disk = tmp_path / "disk"
    size = sum(f.stat().st_size for f in workspace["bundle"].iterdir())
    _mount_tmpfs(disk, f"{int(size * 1.5) // 1024}k")  # room for one bundle, not two
    try:
        bundle = _bundle_copy(workspace, disk / "b")
        with Unchanged(tmp_path, allow=[f"disk/{LOG}"]):
            r = run_cli("run", workspace["protocol"], "--out", bundle, cwd=tmp_path)
        assert r.code == 3 and "no space left on the device" in r.err, r.text
        assert _hidden(disk) == []
    finally:
        _unmount(disk)


def test_read_only_output_folder_is_one_line_exit_3(workspace, tmp_path):
    ro = tmp_path / "ro"
    _mount_tmpfs(ro, "100k", read_only=True)
    try:
        with Unchanged(tmp_path, allow=[LOG]):
            r1 = run_cli("run", workspace["protocol"], "--out", ro / "b", cwd=tmp_path)
            r2 = run_cli("run", workspace["protocol"], "--out", ro / "deeper" / "b", cwd=tmp_path)
            r3 = run_cli("gate", workspace["bundle"], "--out", ro, cwd=tmp_path)
        for r in (r1, r2, r3):
            assert r.code == 3, r.text
            assert "read-only file system" in r.err and r.err.count("\n") == 1, r.err
        assert "choose a folder you can write to with --out" in r1.err
    finally:
        _unmount(ro)


def _long_id_image_protocol(folder: Path, id_length: int) -> Path:
    import numpy as np
    import pandas as pd
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for site, _role in (("a", "development"), ("b", "external")):
        (folder / f"img_{site}").mkdir(parents=True)
        manifest = []
        for i in range(30):
            case = "X" * id_length + f"{site}{i}"
            Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(folder / f"img_{site}" / f"{i}.png")
            y = int(rng.random() < 0.5)
            manifest.append({"case_id": case, "label": ["neg", "pos"][y], "image": f"{i}.png"})
            rows.append({"case_id": case, "site": site, "y": y, "logit": float(rng.normal(0, 2))})
        pd.DataFrame(manifest).to_csv(folder / f"{site}.csv", index=False)
    pd.DataFrame(rows).to_csv(folder / "predictions.csv", index=False)
    protocol = folder / "p.yaml"
    protocol.write_text(
        "name: longids\nversion: '1'\ntask: binary\nclasses: [neg, pos]\n"
        "input: {kind: image, size: [16, 16], channels: 1, scale: 255.0, mean: [0.5], std: [0.5]}\n"
        "model: {checkpoint: predictions.csv, format: predictions}\n"
        "sites:\n  - {id: a, manifest: a.csv, image_root: img_a, role: development}\n"
        "  - {id: b, manifest: b.csv, image_root: img_b, role: external}\n"
        "metrics: {n_bootstrap: 0, seed: 0, bins: 5, thresholds: [0.5]}\n"
        "calibration: {designs: [held-out], methods: [temperature], fit_on: [a], seed: 0}\n"
        "keep_case_ids: true\n"
    )
    return protocol


@pytest.mark.slow
def test_over_long_kept_case_ids_give_a_whole_bundle(tmp_path):
    # a 300-character id made a thumbnail file name longer than the file system allows: exit 3
    protocol = _long_id_image_protocol(tmp_path / "p", 300)
    with Unchanged(tmp_path, allow=["runs"]):
        r = run_cli("run", protocol, "--out", tmp_path / "runs" / "b", "-q", cwd=tmp_path)
    assert r.code in (0, 1), r.text
    bundle = tmp_path / "runs" / "b"
    import pandas as pd

    stored = pd.read_parquet(bundle / "predictions.parquet")
    assert stored["case_id"].str.len().min() >= 300  # kept as they are
    # too long to be a file name: the thumbnail is named by the id's hash (validate.thumbnails.thumbnail_name)
    import hashlib

    names = {p.stem for p in (bundle / "thumbnails").rglob("*.png")}
    assert names and all(n.startswith("id-") and len(n) == 43 for n in names), names
    hashed = {"id-" + hashlib.sha256(c.encode()).hexdigest()[:40] for c in stored["case_id"]}
    assert names <= hashed
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["b"]


def test_crash_log_never_goes_inside_a_bundle(workspace, tmp_path):
    from argparse import Namespace

    from validate.cli import write_crash_log

    bundle = _bundle_copy(workspace, tmp_path / "b")
    args = Namespace(command="report", out=str(bundle / "report.html"), runs_dir=str(bundle), cache=None)
    with Unchanged(bundle):
        log = write_crash_log(args, "trace")
    try:
        assert log is not None and bundle not in log.parents
    finally:
        log.unlink()


# ---- 2. what a killed run leaves is removed by the next, and never shown --------------------------------

WRITER = """
import sys, time
from validate.bundle import BundleWriter
w = BundleWriter(sys.argv[1])
w.write_json("metrics.json", {"task": "binary", "n_bootstrap": 0, "ci_level": 0.95, "seed": 0, "overall": {"n": 1},
                              "sites": {}, "subgroups": {}})
w.write_json("provenance.json", {"protocol": {"name": "t", "version": "1", "sha256": None}, "checkpoint": None,
                                 "started_at": "x", "finished_at": "y", "device": "cpu", "seeds": {}, "software": {},
                                 "bundle_format": "validate-results-bundle/1"})
print(w.staging, flush=True)
time.sleep(120)
"""


@pytest.mark.slow
def test_killed_runs_staging_is_removed_by_the_next_run_and_never_listed(workspace, tmp_path):
    from dashboard.data import discover_runs

    runs = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(runs / "killed")],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        staging = Path(proc.stdout.readline().strip())
        assert staging.is_dir() and staging.parent == runs.resolve()
        assert discover_runs(runs) == []  # a staging folder is not a bundle to show
        # a staging folder whose writer still runs is left alone by another run into the same parent
        r = run_cli("run", workspace["protocol"], "--out", runs / "live", "-q", cwd=tmp_path)
        assert r.code == 0 and staging.is_dir(), r.text
    finally:
        proc.kill()  # kill -9: no clean-up of its own
        proc.wait()
    assert staging.is_dir() and not (runs / "killed").exists()
    # hidden folders that only look like ours are never touched
    lookalike = runs / ".mine.partial-0123abcd"
    lookalike.mkdir()
    (lookalike / "data.csv").write_text("user data")
    with Unchanged(tmp_path, allow=["runs/next", "runs/.cache", f"runs/{staging.name}"]):
        r = run_cli("run", workspace["protocol"], "--out", runs / "next", "-q", cwd=tmp_path)
    assert r.code == 0, r.text
    assert not staging.exists()
    assert sorted(p.name for p in discover_runs(runs)) == ["live", "next"]
