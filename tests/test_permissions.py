"""File modes of what validate writes (validate/bundle.py, validate/io.py).

The decision (README "File permissions"): a bundle's shareable documents (report.html/pdf, the JSON
of aggregates, junit.xml, gates.md, protocol.yaml) follow the user's umask, as any file they create
(``0o666 & ~umask``); what holds a row per case (predictions, baseline predictions, failures,
cases.json, thumbnails/) is owner-only (``0o600`` files, ``0o700`` folders) whatever the umask; the
bundle folder follows the umask (``0o777 & ~umask``), or keeps the mode of the user's own empty
``--out`` folder. Each umask runs in a subprocess (``os.umask`` is process-wide).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from validate.bundle import file_mode, is_private_file

from test_run_helpers import make_protocol

ROOT = Path(__file__).resolve().parents[1]
PRIVATE = {"predictions.parquet", "failures.csv", "cases.json", "baseline_predictions.parquet"}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _under_umask(umask: int, code: str) -> subprocess.CompletedProcess:
    """Run python ``code`` (``validate`` importable) in a subprocess whose umask is ``umask``."""
    script = f"import os, sys\nos.umask({umask:#o})\n" + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ}
    )


@pytest.mark.parametrize(
    "name, private",
    [
        ("report.html", False),
        ("report.pdf", False),
        ("metrics.json", False),
        ("provenance.json", False),
        ("junit.xml", False),
        ("gates.md", False),
        ("protocol.yaml", False),
        ("checklist-tripod-ai.md", False),
        ("predictions.parquet", True),
        ("baseline_predictions.parquet", True),
        ("failures.csv", True),
        ("cases.json", True),  # a JSON file, but one row per case shown on the Cases page
        ("thumbnails/site_a/3f2a.png", True),
        ("thumbnails/site_a/notes.json", True),  # anything under a per-case folder
        ("extra_table.parquet", True),  # a table holds rows: owner-only unless decided otherwise
        ("something.bin", True),  # an unknown kind of file: owner-only
    ],
)
def test_which_bundle_files_are_private(name, private):
    assert is_private_file(name) is private
    assert file_mode(name, umask=0o022) == (0o600 if private else 0o644)
    assert file_mode(name, umask=0o077) == 0o600


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002, 0o027])
def test_bundle_writer_modes_follow_the_umask_for_shared_files_only(tmp_path, umask):
    target = tmp_path / "bundle"
    res = _under_umask(
        umask,
        f"""
        import pandas as pd
        from validate.bundle import BundleWriter
        with BundleWriter({str(target)!r}) as w:
            w.write_text("report.html", "<html></html>")
            w.write_json("gates_extra.json", {{"a": 1}})
            w.write_text("junit.xml", "<testsuites/>")
            w.write_table("predictions.parquet", pd.DataFrame({{"case_id": ["x"], "p": [0.5]}}))
            w.write_table("failures.csv", pd.DataFrame({{"case_id": ["y"], "reason": ["r"]}}))
            w.write_bytes("thumbnails/site_a/abc.png", b"png")
            w.commit()
        """,
    )
    assert res.returncode == 0, res.stderr
    shared = 0o666 & ~umask
    assert _mode(target) == 0o777 & ~umask
    for name in ("report.html", "gates_extra.json", "junit.xml"):
        assert _mode(target / name) == shared, name
    for name in ("predictions.parquet", "failures.csv", "thumbnails/site_a/abc.png"):
        assert _mode(target / name) == 0o600, name
    for folder in ("thumbnails", "thumbnails/site_a"):
        assert _mode(target / folder) == 0o700, folder


def test_a_run_under_umask_027_shares_the_report_and_keeps_case_rows_private(tmp_path):
    proto = make_protocol(tmp_path, n_bootstrap=0)
    out = tmp_path / "runs" / "b"
    res = _under_umask(
        0o027,
        f"""
        from validate.cli import main
        sys.exit(main(["run", {str(proto)!r}, "--out", {str(out)!r}, "--quiet"]))
        """,
    )
    assert res.returncode == 0, res.stderr
    assert _mode(out) == 0o750
    names = sorted(p.name for p in out.iterdir())
    assert {"report.html", "metrics.json", "gates.json", "junit.xml", "provenance.json"} <= set(names)
    assert {"predictions.parquet", "failures.csv", "cases.json"} <= set(names)
    for name in names:
        expected = 0o600 if name in PRIVATE else 0o640
        assert _mode(out / name) == expected, (name, oct(_mode(out / name)))
    # the provenance lists the same files whatever their modes (the report is rendered after it)
    listed = json.loads((out / "provenance.json").read_text())["files"]
    assert set(listed) == set(names) - {"provenance.json", "report.html"}


def test_the_users_empty_out_folder_keeps_its_mode(tmp_path):
    proto = make_protocol(tmp_path, n_bootstrap=0)
    out = tmp_path / "mine"
    out.mkdir()
    out.chmod(0o700)
    res = _under_umask(
        0o022,
        f"""
        from validate.cli import main
        sys.exit(main(["run", {str(proto)!r}, "--out", {str(out)!r}, "--quiet"]))
        """,
    )
    assert res.returncode == 0, res.stderr
    assert _mode(out) == 0o700
    assert _mode(out / "report.html") == 0o644 and _mode(out / "predictions.parquet") == 0o600


def test_a_report_written_elsewhere_is_shareable(tmp_path):
    proto = make_protocol(tmp_path, n_bootstrap=0)
    out = tmp_path / "b"
    report = tmp_path / "elsewhere.html"
    res = _under_umask(
        0o022,
        f"""
        from validate.cli import main
        assert main(["run", {str(proto)!r}, "--out", {str(out)!r}, "--quiet"]) == 0
        sys.exit(main(["report", {str(out)!r}, "--out", {str(report)!r}]))
        """,
    )
    assert res.returncode == 0, res.stderr
    assert _mode(report) == 0o644


def test_atomic_writes_stay_owner_only_unless_a_mode_is_given(tmp_path):
    res = _under_umask(
        0o022,
        f"""
        from pathlib import Path
        from validate.io import atomic_write_text, shared_mode
        atomic_write_text(Path({str(tmp_path / "cache.txt")!r}), "rows")
        atomic_write_text(Path({str(tmp_path / "shared.txt")!r}), "doc", shared_mode())
        print(oct(shared_mode()))
        """,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "0o644"
    assert _mode(tmp_path / "cache.txt") == 0o600  # caches and anything undecided: owner-only
    assert _mode(tmp_path / "shared.txt") == 0o644
