"""`validate dashboard`: the streamlit command it starts, and its input errors."""

from __future__ import annotations

from validate.cli import main


def test_dashboard_binds_to_localhost_headless_without_usage_statistics(tmp_path, capsys):
    assert main(["dashboard", str(tmp_path), "--port", "8765", "--print-command"]) == 0
    cmd = capsys.readouterr().out.split()
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4].endswith("dashboard/app.py")
    opts = dict(zip(cmd[5 : cmd.index("--") : 2], cmd[6 : cmd.index("--") : 2], strict=True))
    assert opts["--server.address"] == "127.0.0.1"
    assert opts["--server.port"] == "8765"
    assert opts["--server.headless"] == "true"
    assert opts["--browser.gatherUsageStats"] == "false"
    assert cmd[cmd.index("--") + 1] == str(tmp_path.resolve())


def test_dashboard_host_can_be_chosen(tmp_path, capsys):
    assert main(["dashboard", str(tmp_path), "--host", "0.0.0.0", "--print-command"]) == 0
    assert "--server.address 0.0.0.0" in capsys.readouterr().out


def test_missing_runs_folder_is_bad_input(tmp_path, capsys):
    assert main(["dashboard", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "runs folder not found" in err and "Traceback" not in err


def test_port_out_of_range_is_bad_input(tmp_path, capsys):
    assert main(["dashboard", str(tmp_path), "--port", "70000"]) == 2
    assert "--port" in capsys.readouterr().err
