"""Metric blocks on a Dask cluster (a local multi-process one here) give the report of one machine:
bit for bit that of the local worker processes (BLAS on one thread in both), to rounding that of one
process; an unreachable scheduler is exit 3 in one line, a malformed address exit 2."""

from __future__ import annotations

import json
import socket

import numpy as np
import pandas as pd
import pytest
from distributed import Client, LocalCluster

from validate.cli import main
from validate.errors import InputError, RunIncomplete
from validate.metrics import MetricSettings, cluster as cluster_mod, metrics_report
from validate.metrics.workers import choose_workers, run_blocks


@pytest.fixture(scope="module")
def dask_cluster():
    with LocalCluster(
        processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None, silence_logs=50
    ) as cluster:
        yield cluster


def _frame(n=1500, seed=3):
    rng = np.random.default_rng(seed)
    site = rng.choice(["a", "b", "c"], n)
    z = rng.normal(-0.5, 1.3, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(0.9 * z + (site == "b") * 0.5)))).astype(int)
    return pd.DataFrame(
        {
            "case_id": [f"c{i}" for i in range(n)],
            "site": site,
            "y": y,
            "logit": z,
            "sex": rng.choice(["F", "M"], n),
            "patient_id": [f"p{i // 2}" for i in range(n)],
        }
    )


def _block_tasks(cluster, state: str = "memory") -> int:
    """Block tasks the cluster's scheduler has seen reach ``state`` (its prefix counts every entry into
    a state): ``memory`` = finished, ``erred`` = raised."""
    prefix = cluster.scheduler.task_prefixes.get(cluster_mod.TASK_PREFIX)
    return 0 if prefix is None else prefix.state_counts[state]


def _flatten(obj, prefix=""):
    if isinstance(obj, dict):
        return {k2: v2 for k, v in obj.items() for k2, v2 in _flatten(v, f"{prefix}/{k}").items()}
    if isinstance(obj, list):
        return {k2: v2 for i, v in enumerate(obj) for k2, v2 in _flatten(v, f"{prefix}[{i}]").items()}
    return {prefix: obj}


def _assert_close(got: dict, want: dict) -> None:
    flat_got, flat_want = _flatten(got), _flatten(want)
    assert flat_got.keys() == flat_want.keys()
    for k, v in flat_want.items():
        if isinstance(v, float) and not np.isnan(v):
            assert flat_got[k] == pytest.approx(v, rel=1e-11, abs=1e-13), k
        else:
            assert flat_got[k] == v or (v != v and flat_got[k] != flat_got[k]), k


def test_cluster_report_equals_the_local_reports(dask_cluster):
    df = _frame(n=1200)  # >= 1000 pooled cases: the smoothers' moment engine runs on the workers too
    settings = MetricSettings(n_bootstrap=30, seed=11)
    kwargs = dict(settings=settings, subgroup_columns=["sex"], development_site="a")
    before = _block_tasks(dask_cluster)
    with cluster_mod.session(dask_cluster.scheduler_address) as client:
        on_cluster = metrics_report(df, **kwargs)
        assert cluster_mod.active_client() is client
    assert cluster_mod.active_client() is None
    # overall + 3 sites + 2 sex groups, each one task on the cluster
    assert _block_tasks(dask_cluster) - before == 6
    local_pool = metrics_report(df, workers=2, **kwargs)
    assert json.dumps(on_cluster, sort_keys=True) == json.dumps(local_pool, sort_keys=True)
    _assert_close(on_cluster, metrics_report(df, workers=1, **kwargs))
    assert list(on_cluster["sites"]) == list(local_pool["sites"]) and sorted(on_cluster["sites"]) == ["a", "b", "c"]
    assert list(on_cluster["subgroups"]["sex"]) == ["F", "M"] and on_cluster["overall"]["ece"]["ci_low"] is not None


def test_cli_metrics_json_equals_the_single_machine_json(dask_cluster, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(cluster_mod.SCHEDULER_ENV, raising=False)
    preds = tmp_path / "pred.csv"
    _frame(n=600, seed=5).to_csv(preds, index=False)
    common = ["metrics", str(preds), "--bootstrap", "30", "--seed", "4", "--json"]
    assert main([*common, str(tmp_path / "one.json"), "--workers", "1"]) == 0
    before = _block_tasks(dask_cluster)
    assert main([*common, str(tmp_path / "flag.json"), "--scheduler", dask_cluster.scheduler_address]) == 0
    assert _block_tasks(dask_cluster) - before == 4  # overall + 3 sites
    monkeypatch.setenv(cluster_mod.SCHEDULER_ENV, dask_cluster.scheduler_address)
    assert main([*common, str(tmp_path / "env.json")]) == 0
    assert _block_tasks(dask_cluster) - before == 8
    # an explicit --workers keeps the work on this machine whatever the environment says
    assert main([*common, str(tmp_path / "local.json"), "--workers", "1"]) == 0
    assert _block_tasks(dask_cluster) - before == 8
    capsys.readouterr()
    flag, env = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("flag", "env"))
    assert flag == env and flag["n_bootstrap"] == 30 and set(flag["sites"]) == {"a", "b", "c"}
    _assert_close(flag, json.loads((tmp_path / "one.json").read_text()))
    assert (tmp_path / "local.json").read_bytes() == (tmp_path / "one.json").read_bytes()


def test_an_existing_client_is_used_and_left_open(dask_cluster):
    df = _frame(n=400)
    settings = MetricSettings(n_bootstrap=20, seed=2)
    before = _block_tasks(dask_cluster)
    with Client(dask_cluster.scheduler_address, set_as_default=False) as client:
        with cluster_mod.session(client) as used:
            assert used is client
            report = metrics_report(df, settings=settings)
        assert client.status == "running"
    assert _block_tasks(dask_cluster) - before == 4  # overall + 3 sites
    assert json.dumps(report, sort_keys=True) == json.dumps(
        metrics_report(df, settings=settings, workers=3), sort_keys=True
    )


def test_an_error_of_a_block_reaches_the_caller_as_it_is(dask_cluster):
    jobs = [{"workers": 0, "sizes": [1], "n_bootstrap": 1}, {"workers": 1, "sizes": [1], "n_bootstrap": 1}]
    before = _block_tasks(dask_cluster, "erred")
    with cluster_mod.session(dask_cluster.scheduler_address):
        with pytest.raises(InputError, match="workers is 0"):
            run_blocks(choose_workers, jobs, [1, 1], 1)
    assert _block_tasks(dask_cluster, "erred") - before == 1  # raised on a worker, re-raised here


def test_a_worker_with_other_code_fails_the_run(dask_cluster, monkeypatch):
    monkeypatch.setattr(cluster_mod, "fingerprint", lambda: "0" * 64)  # the client's view differs from the workers'
    with cluster_mod.session(dask_cluster.scheduler_address):
        with pytest.raises(cluster_mod.WorkerMismatch, match="other validate code"):
            run_blocks(choose_workers, [{"workers": 1, "sizes": [1], "n_bootstrap": 1}], [1], 1)


def test_fingerprint_follows_the_sources():
    with pytest.raises(cluster_mod.WorkerMismatch):
        cluster_mod.evaluate(choose_workers, {"workers": 1, "sizes": [1], "n_bootstrap": 1}, "0" * 64)
    assert (
        cluster_mod.evaluate(
            choose_workers, {"workers": 2, "sizes": [1, 1], "n_bootstrap": 1}, cluster_mod.fingerprint()
        )
        == 2
    )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("via", ["flag", "env"])
def test_unreachable_scheduler_is_exit_3_in_one_line(tmp_path, monkeypatch, capsys, via):
    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT", "1s")
    import dask

    dask.config.refresh()
    preds = tmp_path / "pred.csv"
    _frame(n=200).to_csv(preds, index=False)
    address = f"tcp://127.0.0.1:{_closed_port()}"
    argv = ["metrics", str(preds), "--bootstrap", "10", "--json", str(tmp_path / "m.json")]
    if via == "flag":
        monkeypatch.delenv(cluster_mod.SCHEDULER_ENV, raising=False)
        argv += ["--scheduler", address]
    else:
        monkeypatch.setenv(cluster_mod.SCHEDULER_ENV, address)
    try:
        assert main(argv) == 3
    finally:
        monkeypatch.undo()
        dask.config.refresh()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("validate metrics:")]
    assert len(lines) == 1 and "Traceback" not in err
    assert f"could not reach the Dask scheduler at {address}" in lines[0]
    assert ("--scheduler" if via == "flag" else "VALIDATE_SCHEDULER") in lines[0]
    assert not (tmp_path / "m.json").exists()


def test_run_stops_before_anything_when_the_scheduler_is_unreachable(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT", "1s")
    import dask

    dask.config.refresh()
    address = f"tcp://127.0.0.1:{_closed_port()}"
    try:
        # the protocol does not exist: a run that read it before connecting would say so (exit 2)
        argv = ["run", str(tmp_path / "absent.yaml"), "--out", str(tmp_path / "out"), "--scheduler", address]
        assert main(argv) == 3
    finally:
        monkeypatch.undo()
        dask.config.refresh()
    err = capsys.readouterr().err
    assert f"validate run: could not complete: could not reach the Dask scheduler at {address}" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_bad_scheduler_flags_are_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(cluster_mod.SCHEDULER_ENV, raising=False)
    preds = tmp_path / "pred.csv"
    _frame(n=200).to_csv(preds, index=False)
    base = ["metrics", str(preds), "--bootstrap", "10"]
    assert main([*base, "--scheduler", "nosuchproto://x:1"]) == 2
    assert "--scheduler: 'nosuchproto://x:1' is not a Dask scheduler address" in capsys.readouterr().err
    assert main([*base, "--scheduler", "tcp://127.0.0.1:1", "--workers", "2"]) == 2
    assert "--workers and --scheduler" in capsys.readouterr().err


def test_scheduler_address_precedence():
    env = {cluster_mod.SCHEDULER_ENV: " tcp://e:1 "}
    assert cluster_mod.scheduler_address("tcp://f:2", env) == "tcp://f:2"
    assert cluster_mod.scheduler_address(None, env) == "tcp://e:1"
    assert cluster_mod.scheduler_address(None, {}) is None
    assert cluster_mod.scheduler_address(None, {cluster_mod.SCHEDULER_ENV: "  "}) is None


def test_without_dask_the_scheduler_is_exit_3(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(RunIncomplete, match="Dask is not installed"):
        cluster_mod.connect("tcp://127.0.0.1:8786")


def test_a_scheduler_without_workers_is_exit_3_not_a_hang(monkeypatch):
    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT", "1s")
    import dask

    dask.config.refresh()
    try:
        with LocalCluster(n_workers=0, processes=False, dashboard_address=":0", silence_logs=50) as empty:
            with pytest.raises(RunIncomplete, match="has no worker"):
                cluster_mod.connect(empty.scheduler_address)
    finally:
        monkeypatch.undo()
        dask.config.refresh()
