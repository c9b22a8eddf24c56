"""Progress of `validate run`, `validate metrics` and `validate calibrate` (validate/progress.py).

The reporter is checked on its own (lines, nesting, heartbeat, failures, quiet), then through the
engine hooks (a metrics report counts its blocks, a calibration comparison its designs — counts
derived independently from the data and the settings), then as the user sees it: a `validate run`
transcript captured through a pipe (one line per phase), the same with --quiet (none), and the bar on
a terminal (a pseudo-terminal from python's pty module).
"""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from validate import progress

from test_run_helpers import SITES, make_protocol

ROOT = Path(__file__).resolve().parents[1]
# "metrics: 14 blocks in 8.2 s", "cohort: done in 0.0 s", "scoring: 920 cases in 10.8 s · 4 sites"
LINE = re.compile(r"^(?P<name>[\w -]+): (?P<counts>.*?)(?:done )?in (?P<secs>\d+\.\d) s(?: · (?P<note>.*))?$")


def _lines(text: str) -> dict[str, str]:
    """Phase name -> its summary line, from a transcript."""
    out = {}
    for line in text.splitlines():
        m = LINE.match(line.strip())
        if m:
            out[m["name"]] = line.strip()
    return out


# ---- the reporter ----------------------------------------------------------------------------------


def test_lines_mode_writes_one_summary_line_per_phase_with_its_count():
    out = io.StringIO()
    with progress.reporting(mode="lines", stream=out):
        with progress.phase("metrics", total=3, unit="blocks") as ph:
            for _ in range(3):
                ph.advance()
        with progress.phase("gates"):
            pass
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"metrics: 3 blocks in \d+\.\d s", lines[0])
    assert re.fullmatch(r"gates: done in \d+\.\d s", lines[1])


def test_inner_phases_add_their_counts_to_the_outer_line_and_print_none_of_their_own():
    out = io.StringIO()
    with progress.reporting(mode="lines", stream=out):
        with progress.phase("subgroups"):
            for n in (4, 5):
                with progress.phase("metrics", total=n, unit="blocks") as inner:
                    inner.advance(n)
    assert re.fullmatch(r"subgroups: 9 blocks in \d+\.\d s\n", out.getvalue())


def test_a_begun_phase_left_open_by_an_exception_closes_with_its_outer_phase():
    out = io.StringIO()
    with progress.reporting(mode="lines", stream=out):
        with pytest.raises(RuntimeError):
            with progress.phase("calibration", total=2, unit="designs"):
                blocks = progress.start("held-out", total=4, unit="blocks")
                blocks.advance()
                raise RuntimeError("boom")
        with progress.phase("shift"):
            pass
    lines = out.getvalue().splitlines()
    # a failed phase writes nothing (the command's error is its one line on stderr); the stack is
    # empty again: the next phase is a top-level phase with its own line
    assert len(lines) == 1 and re.fullmatch(r"shift: done in \d+\.\d s", lines[0])


def test_heartbeat_lines_show_a_long_phase_is_alive():
    out = io.StringIO()
    with progress.reporting(mode="lines", stream=out) as installed:
        installed.heartbeat_s = 0.0  # every change is a heartbeat
        with progress.phase("metrics", total=2, unit="blocks") as ph:
            ph.advance(detail="sites/A")
            ph.advance(detail="sites/B")
    text = out.getvalue()
    assert re.search(r"^metrics: 1/2 blocks, sites/A, \d+\.\d s so far$", text, re.M)
    assert re.search(r"^metrics: 2 blocks in \d+\.\d s$", text, re.M)


def test_bar_mode_rewrites_one_line_and_ends_with_the_summary():
    out = io.StringIO()
    with progress.reporting(mode="bar", stream=out):
        with progress.phase("metrics", total=4, unit="blocks") as ph:
            for i in range(4):
                time.sleep(progress.REDRAW_S * 1.1)  # past the redraw throttle: every step drawn
                ph.advance(detail=f"block {i}")
    text = out.getvalue()
    assert "\n" not in text.rstrip("\n")  # one screen line: redrawn with \r, one newline at the end
    assert "\r\x1b[Kmetrics [##########..........] 2/4 blocks · block 1" in text
    assert re.search(r"\r\x1b\[Kmetrics: 4 blocks in \d+\.\d s\n$", text)


def test_the_bar_never_wraps_a_narrow_terminal():
    # a wrapped line cannot be redrawn by a carriage return: the bar is cut to the terminal's width
    reporter = progress.Reporter("bar", io.StringIO())
    reporter.open(progress.Phase(name="subgroups", total=40, unit="blocks", detail="sex_x_age_band/female & >=70"))
    assert len(reporter._bar_text(40)) < 40
    assert reporter._bar_text(200).startswith("subgroups [....................] 0/40 blocks · sex_x_age_band")


def test_quiet_and_library_calls_write_nothing():
    out = io.StringIO()
    with progress.reporting(quiet=True, stream=out):
        with progress.phase("metrics", total=1, unit="blocks") as ph:
            ph.advance()
    assert out.getvalue() == ""
    assert not progress.active() and progress.current().mode == "off"  # outside a command
    assert progress.scoring_bar() is None  # scoring keeps its own default outside a command


def test_mode_follows_the_terminal_and_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    assert progress.choose_mode(stream=io.StringIO()) == "lines"
    assert progress.choose_mode(quiet=True, stream=io.StringIO()) == "off"
    master, slave = pty.openpty()
    try:
        with os.fdopen(slave, "w", closefd=False) as tty:
            assert progress.choose_mode(stream=tty) == "bar"
            monkeypatch.setenv("CI", "true")
            assert progress.choose_mode(stream=tty) == "lines"
    finally:
        os.close(master)
        os.close(slave)


def test_counts_read_as_words():
    assert progress._count(1, "designs") == "1 design"
    assert progress._count(2, "designs") == "2 designs"
    assert progress._count(12345, "cases") == "12,345 cases"


def test_seconds_text():
    assert progress.seconds_text(0.04) == "0.0 s"
    assert progress.seconds_text(12.34) == "12.3 s"
    assert progress.seconds_text(125) == "2 min 05 s"


# ---- the engine's hooks ------------------------------------------------------------------------------


def _square(x):
    return x * x


@pytest.mark.parametrize("workers", [1, 2])
def test_run_blocks_reports_each_block_once_in_this_process(workers):
    from validate.metrics.workers import run_blocks

    seen: list[int] = []
    jobs = [{"x": i} for i in range(5)]
    results = run_blocks(_square, jobs, sizes=[1, 5, 2, 4, 3], workers=workers, on_done=seen.append)
    assert results == [0, 1, 4, 9, 16]
    assert sorted(seen) == [0, 1, 2, 3, 4]


def _table():
    from validate.predictions import table_from_frame

    from test_run_helpers import synthetic_predictions

    return table_from_frame(synthetic_predictions(), task="binary")


def test_metrics_report_counts_its_blocks():
    from validate.metrics import MetricSettings, metrics_report

    table = _table()
    frame = table.frame
    out = io.StringIO()
    with progress.reporting(mode="lines", stream=out):
        metrics_report(table, settings=MetricSettings(n_bootstrap=5), subgroup_columns=["sex"], workers=1)
    # pooled + one per site + one per sex value, counted from the data
    expected = 1 + frame["site"].nunique() + frame["sex"].nunique()
    assert expected == 1 + len(SITES) + 2
    assert re.fullmatch(rf"metrics: {expected} blocks in \d+\.\d s\n", out.getvalue())


def test_calibration_counts_its_designs_and_held_out_blocks():
    from validate.calibrators import compare_calibration
    from validate.metrics import MetricSettings

    out = io.StringIO()
    with progress.reporting(mode="lines", stream=out):
        result = compare_calibration(
            _table(),
            methods=["platt", "temperature"],
            designs=["held-out", "local"],
            fit_on=["dev"],
            metric_settings=MetricSettings(n_bootstrap=5),
            calibration={"repeats": 2},
            smooth_intervals=False,
        )
    assert result["designs_run"] == ["held-out", "local"]
    # held-out: the 2 sites not fitted on + their pooled block, each uncalibrated and with 2 methods
    blocks = (2 + 1) * (1 + 2)
    assert re.fullmatch(rf"calibration: 2 designs, {blocks} blocks in \d+\.\d s\n", out.getvalue())


# ---- as the user sees it ------------------------------------------------------------------------------


def _validate(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "validate", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "CI": "", **(env or {})},
        timeout=600,
    )


RUN_PHASES = ("predictions", "metrics", "calibration", "shift", "subgroups", "curves", "cohort", "gates", "report")


def test_run_transcript_has_a_line_per_phase_and_quiet_has_none(tmp_path):
    proto = make_protocol(tmp_path, n_bootstrap=10)
    res = _validate(["run", str(proto), "--out", str(tmp_path / "bundle")])
    assert res.returncode == 0, res.stderr
    lines = _lines(res.stderr)
    assert set(RUN_PHASES) <= set(lines), res.stderr
    n = sum(n for _, _, n, *_ in SITES)
    assert lines["predictions"].startswith(f"predictions: {n} cases in ")
    assert lines["predictions"].endswith("· read from predictions.csv")
    # pooled + 3 sites + sex (2) + age_band (3: <50, 50-69, >=70) + sex x age_band (6 cells, every one
    # holding cases in the simulated data)
    assert lines["metrics"].startswith("metrics: 15 blocks in ")
    assert lines["calibration"].startswith("calibration: 1 design, 9 blocks in ")
    assert "Traceback" not in res.stderr
    assert "Verdict: PASS" in res.stdout

    quiet = _validate(["run", str(proto), "--out", str(tmp_path / "bundle"), "--quiet"])
    assert quiet.returncode == 0
    assert quiet.stderr == ""
    assert quiet.stdout.strip().startswith("Verdict: PASS")


def test_run_transcript_in_ci_is_lines_even_on_a_terminal(tmp_path):
    proto = make_protocol(tmp_path, n_bootstrap=5)
    text = _on_terminal(["run", str(proto), "--out", str(tmp_path / "b")], env={"CI": "true"})
    assert "\r" not in text.replace("\r\n", "\n")  # no bar: a CI log gets plain lines
    assert set(RUN_PHASES) <= set(_lines(text.replace("\r\n", "\n")))


def _on_terminal(args: list[str], env: dict | None = None, timeout: float = 600) -> str:
    """What `validate ARGS` writes to a terminal (stdout and stderr on one pseudo-terminal)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "validate", *args],
        cwd=ROOT,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**os.environ, "CI": "", "COLUMNS": "120", **(env or {})},
    )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the terminal closed: the process has ended
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        proc.wait(timeout=60)
        os.close(master)
    return b"".join(chunks).decode("utf-8", "replace")


def test_metrics_shows_a_bar_on_a_terminal(tmp_path):
    from test_run_helpers import synthetic_predictions

    preds = tmp_path / "p.csv"
    frame = synthetic_predictions()
    frame.to_csv(preds, index=False)
    text = _on_terminal(["metrics", str(preds), "--bootstrap", "50", "--workers", "1"])
    # the bar is redrawn in place (carriage return, erase line) and ends as the summary line
    assert "\r\x1b[Kmetrics [" in text, text
    blocks = 1 + frame["site"].nunique()
    assert re.search(rf"\r\x1b\[Kmetrics: {blocks} blocks in \d+\.\d s", text), text
    quiet = _on_terminal(["metrics", str(preds), "--bootstrap", "50", "--quiet"])
    assert "metrics [" not in quiet and "blocks in" not in quiet
    assert "auroc" in quiet  # the result itself still prints


def test_calibrate_reports_designs_and_quiet_silences_it(tmp_path):
    from test_run_helpers import synthetic_predictions

    preds = tmp_path / "p.csv"
    synthetic_predictions().to_csv(preds, index=False)
    args = ["calibrate", str(preds), "--fit-on", "dev", "--methods", "platt", "--bootstrap", "5"]
    res = _validate(args)
    assert res.returncode == 0, res.stderr
    assert re.search(r"^calibration: 1 design, 6 blocks in \d+\.\d s$", res.stderr, re.M), res.stderr
    quiet = _validate([*args, "--quiet"])
    assert quiet.returncode == 0 and "calibration:" not in quiet.stderr


@pytest.mark.slow
def test_scoring_run_transcript_names_scoring_with_its_cases(repo, tmp_path):
    text = (repo / "protocols" / "heart.yaml").read_text().replace("../sample_sites", str(repo / "sample_sites"))
    text = re.sub(r"n_bootstrap: \d+", "n_bootstrap: 10", text)
    text = re.sub(r"repeats: \d+", "repeats: 2", text)
    proto = tmp_path / "heart.yaml"
    proto.write_text(text)
    res = _validate(["run", str(proto), "--out", str(tmp_path / "b"), "--cache", str(tmp_path / "cache")])
    assert res.returncode in (0, 1), res.stderr
    lines = _lines(res.stderr)
    cases = sum(len(pd.read_csv(m)) for m in sorted((repo / "sample_sites" / "heart").glob("*.csv")))
    assert cases and lines["scoring"].startswith(f"scoring: {cases:,} cases in "), (cases, res.stderr)
    assert np.all([name in lines for name in RUN_PHASES if name != "predictions"]), res.stderr
