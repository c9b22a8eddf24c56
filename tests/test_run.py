"""`validate run` / `gate` / `report` end to end from a predictions file: exit codes, JUnit, the bundle's
contents, pseudonymised identifiers, re-entry without re-scoring, and byte-identical reruns."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest

from validate.cli import main

from test_run_helpers import GATE_FAIL, GATES_PASS, make_protocol, synthetic_bundle  # noqa: F401 (fixture)

DESIGN_FILES = (
    "provenance.json",
    "protocol.yaml",
    "predictions.parquet",
    "metrics.json",
    "calibration.json",
    "shift.json",
    "gates.json",
    "report.html",
    "junit.xml",
    "failures.csv",
)
DETERMINISTIC = ("metrics.json", "calibration.json", "gates.json", "subgroups.json", "curves.json", "sites.json")


def test_run_writes_a_complete_bundle(synthetic_bundle):
    out = synthetic_bundle["bundle"]
    assert synthetic_bundle["exit_code"] == 0
    for name in DESIGN_FILES + ("subgroups.json", "curves.json", "sites.json", "gates.md"):
        assert (out / name).is_file(), name
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".first")]  # no staging left behind
    prov = json.loads((out / "provenance.json").read_text())
    assert len(prov["protocol"]["sha256"]) == 64 and len(prov["predictions_source"]["sha256"]) == 64
    assert prov["seeds"] == {"metrics": 0, "calibration": 0} and prov["started_at"] <= prov["finished_at"]
    for pkg in ("python", "numpy", "scipy", "scikit-learn", "pandas", "plotly", "torch", "validate"):
        assert prov["software"][pkg]
    assert set(prov["files"]) >= {"metrics.json", "gates.json", "predictions.parquet"}
    gates = json.loads((out / "gates.json").read_text())
    assert gates["verdict"] == "pass" and gates["counts"]["fail"] == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["sites"]) == {"dev", "ext_flat", "ext_small"}
    assert set(metrics["subgroups"]) == {"sex", "age_band", "sex_x_age_band"}


def test_case_ids_are_hashed_and_absent_from_results(synthetic_bundle):
    out = synthetic_bundle["bundle"]
    original = pd.read_csv(synthetic_bundle["folder"] / "predictions.csv")
    stored = pd.read_parquet(out / "predictions.parquet")
    assert len(stored) == len(original)
    assert not set(stored["case_id"]) & set(original["case_id"])
    assert not set(stored["patient_id"]) & set(original["patient_id"])
    assert stored["case_id"].str.fullmatch(r"[0-9a-f]{20}").all()
    for name in DETERMINISTIC + ("provenance.json", "junit.xml", "gates.md", "report.html"):
        text = (out / name).read_text()
        assert "MRN" not in text and "PTDEV" not in text, name


def test_gate_designed_to_fail_exits_1_with_a_junit_failure(synthetic_bundle, tmp_path, capsys):
    strict = make_protocol(synthetic_bundle["folder"], "strict.yaml", gates=GATES_PASS + GATE_FAIL)
    code = main(["gate", str(synthetic_bundle["bundle"]), "--protocol", str(strict), "--out", str(tmp_path)])
    assert code == 1
    root = ET.fromstring((tmp_path / "junit.xml").read_bytes())
    cases = root.findall(".//testcase")
    failed = [c for c in cases if c.find("failure") is not None]
    assert root.get("failures") == str(len(failed)) and len(failed) >= 1
    assert all(c.get("classname") == "gates.designed-to-fail" for c in failed)
    assert "FAIL" in (tmp_path / "gates.md").read_text()
    assert "Verdict: FAIL (exit 1)" in capsys.readouterr().out
    # the bundle itself is untouched by judging another protocol
    assert json.loads((synthetic_bundle["bundle"] / "gates.json").read_text())["verdict"] == "pass"


@pytest.mark.parametrize("policy,code,tag", [("fail", 1, "failure"), ("warn", 0, "skipped"), ("pass", 0, None)])
def test_gate_on_an_insufficient_subgroup_follows_its_policy(synthetic_bundle, tmp_path, policy, code, tag):
    # ext_small has ~14 women: fewer than 30 cases, so its female block is insufficient
    gates = f"""
gates:
  - {{name: small, metric: auroc, scope: subgroup_gap:sex, max: 0.9, on: estimate, insufficient: {policy}}}
"""
    proto = make_protocol(synthetic_bundle["folder"], f"policy_{policy}.yaml", gates=gates)
    assert (
        main(["gate", str(synthetic_bundle["bundle"]), "--protocol", str(proto), "--out", str(tmp_path), "-q"]) == code
    )
    rows = json.loads((tmp_path / "gates.json").read_text())["rows"]
    small = [r for r in rows if r["site"] == "ext_small" and r["group"] == "female"]
    assert small and small[0]["insufficient"] and small[0]["verdict"] == policy
    case = next(
        c
        for c in ET.fromstring((tmp_path / "junit.xml").read_bytes()).iter("testcase")
        if "ext_small" in c.get("name") and "female" in c.get("name")
    )
    if tag:
        assert case.find(tag) is not None
    else:
        assert case.find("failure") is None and case.find("skipped") is None


def test_run_with_failing_gate_exits_1_and_keeps_ids_when_asked(tmp_path):
    proto = make_protocol(tmp_path, gates=GATES_PASS + GATE_FAIL, n_bootstrap=0, keep_case_ids=True)
    assert main(["run", str(proto), "--out", str(tmp_path / "b"), "-q"]) == 1
    root = ET.fromstring((tmp_path / "b" / "junit.xml").read_bytes())
    assert int(root.get("failures")) >= 1
    stored = pd.read_parquet(tmp_path / "b" / "predictions.parquet")
    assert stored["case_id"].str.startswith("MRN").all()


def test_same_run_twice_is_byte_identical(synthetic_bundle):
    out2 = synthetic_bundle["folder"] / "runs" / "second"
    assert main(["run", str(synthetic_bundle["protocol"]), "--out", str(out2), "-q"]) == 0
    for name in DETERMINISTIC:
        assert (synthetic_bundle["bundle"] / name).read_bytes() == (out2 / name).read_bytes(), name


def test_regate_own_protocol_and_rerender_report(synthetic_bundle, capsys):
    out = synthetic_bundle["bundle"]
    before = (out / "gates.json").read_bytes()
    assert main(["gate", str(out)]) == 0
    assert (out / "gates.json").read_bytes() == before
    assert "Release gates: **PASS**" in capsys.readouterr().out
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.html").stat().st_size > 1_000_000


def test_bad_input_exits_2_with_a_located_message(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "protocol file not found" in capsys.readouterr().err
    bad_gate = "\ngates:\n  - {name: typo, metric: aurco, scope: overall, min: 0.5}\n"
    proto = make_protocol(tmp_path, "typo.yaml", gates=bad_gate, n_bootstrap=0)
    assert main(["run", str(proto), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "typo.yaml" in err and "gates[0].metric" in err and "did you mean `auroc`" in err
    assert not (tmp_path / "b").exists()
    assert main(["gate", str(tmp_path / "nope")]) == 2
    assert "bundle folder not found" in capsys.readouterr().err
    proto = make_protocol(tmp_path, "plain.yaml", n_bootstrap=0)  # the typo is now refused before any input is read
    stray = pd.read_csv(tmp_path / "predictions.csv")
    stray.loc[0, "site"] = "elsewhere"
    stray.to_csv(tmp_path / "stray.csv", index=False)
    # (a protocol whose gates are fine: the gate typo above is refused by the pre-run gate check, before this)
    fine = make_protocol(tmp_path, "fine.yaml", n_bootstrap=0)
    assert main(["run", str(fine), "--predictions", str(tmp_path / "stray.csv"), "--out", str(tmp_path / "c")]) == 2
    assert "elsewhere" in capsys.readouterr().err


def _sample_protocol(repo, tmp_path, name: str, n_bootstrap: int = 30) -> Path:
    """A copy of a sample protocol with absolute paths and fewer bootstrap replicates (the demo itself
    uses the protocol's own values)."""
    import re as _re

    text = (repo / "protocols" / f"{name}.yaml").read_text()
    text = text.replace("../sample_sites", str(repo / "sample_sites"))
    text = _re.sub(r"n_bootstrap: \d+", f"n_bootstrap: {n_bootstrap}", text)
    text = _re.sub(r"repeats: \d+", "repeats: 3", text)
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


@pytest.mark.slow
def test_demo_runs_the_sample_protocols_end_to_end(repo, tmp_path, capsys):
    samples = ("heart", "heart-compare", "chest", "volume", "fetal_head")
    protocols = tmp_path / "protocols"
    protocols.mkdir()
    for name in samples:
        _sample_protocol(repo, protocols, name)
    runs = tmp_path / "runs"
    code = main(["demo", "--protocols-dir", str(protocols), "--runs-dir", str(runs)])
    bundles = {
        json.loads((p / "provenance.json").read_text())["protocol"]["name"]: p
        for p in runs.iterdir()
        if not p.name.startswith(".")
    }
    assert sorted(bundles) == sorted(samples)
    codes = []
    for name, out in bundles.items():
        gates = json.loads((out / "gates.json").read_text())
        codes.append(gates["exit_code"])
        assert gates["exit_code"] == (1 if gates["verdict"] == "fail" else 0)
        for f in DESIGN_FILES + ("subgroups.json", "curves.json", "sites.json"):
            assert (out / f).is_file(), f
        proto = protocols / f"{name}.yaml"
        metrics = json.loads((out / "metrics.json").read_text())
        declared = [
            ln.split("id: ")[1].strip() for ln in proto.read_text().splitlines() if ln.strip().startswith("- id:")
        ]
        assert set(metrics["sites"]) == set(declared)
        prov = json.loads((out / "provenance.json").read_text())
        assert len(prov["checkpoint"]["sha256"]) == 64 and prov["device"]
        assert "Release gates: " + gates["verdict"].upper() in (out / "report.html").read_text()
        # only the comparison protocol has a baseline, hence a comparison
        assert (out / "comparison.json").is_file() == (name == "heart-compare"), name
    comparison = json.loads((bundles["heart-compare"] / "comparison.json").read_text())
    assert comparison["new"]["source"] == "model_v2.pt2" and comparison["baseline"]["source"] == "model.pt2"
    # every case of the four heart sites scored by both models
    assert comparison["matched"]["n"] == 920 and set(comparison["sites"]) == {
        "cleveland",
        "hungary",
        "switzerland",
        "va",
    }
    compared = [
        r
        for r in json.loads((bundles["heart-compare"] / "gates.json").read_text())["rows"]
        if r.get("compare") == "baseline"
    ]
    assert {r["gate"] for r in compared} == {
        "auroc-non-inferior-each-site",
        "ece-not-worse-overall",
        "brier-not-worse-each-sex",
    }
    assert code == max(codes)  # the demo's exit code is the worst of its runs
    printed = capsys.readouterr().out
    assert printed.count("Report: ") == len(samples)
