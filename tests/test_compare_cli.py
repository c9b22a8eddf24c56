"""Issue #14 at the command line: `validate run --baseline`, comparison gates, `validate gate` on them,
and `validate compare` of two bundles, on the heart sample (new = the shipped checkpoint).

References are independent of the code under test: Δ = 0 exactly for a model against itself (by
definition), scikit-learn's AUROC difference for a deliberately worse model, and the run's own
comparison.json for `validate compare` of the same predictions (a second path to the same numbers).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from tests.adversarial.harness import run_cli

KEY = {"VALIDATE_CASE_ID_KEY": "a shared secret for test_compare_cli"}
NO_KEY = {"VALIDATE_CASE_ID_KEY": ""}  # a random per-run key

GATES = """
gates:
  - {name: auroc-non-inferior, metric: auroc, compare: baseline, scope: overall, min: -0.02, on: ci_low,
     insufficient: fail}
  - {name: auroc-non-inferior-each-site, metric: auroc, compare: baseline, scope: each_site, min: -0.02,
     on: ci_low}
  - {name: brier-non-inferior-sex, metric: brier, compare: baseline, scope: each_subgroup:sex, max: 0.01,
     on: ci_high}
"""


def fast_protocol(repo: Path, folder: Path, name: str, gates: str = GATES) -> Path:
    """A copy of a sample protocol with absolute paths, few replicates, one subgroup, one calibration
    method and the given gates (the science is the sample's; only the run's cost is cut)."""
    text = (repo / "protocols" / f"{name}.yaml").read_text()
    text = text.replace("../sample_sites", str(repo / "sample_sites"))
    text = re.sub(r"n_bootstrap: \d+", "n_bootstrap: 20", text)
    text = re.sub(
        r"\nsubgroups:\n(  .*\n)+",
        "\nsubgroups:\n  - {name: sex, column: %s}\n" % ("sex_label" if name == "heart" else "sex"),
        text,
    )
    text = re.sub(
        r"\ncalibration:\n(  .*\n)+", "\ncalibration:\n  designs: [held-out]\n  methods: [temperature]\n", text
    )
    text = text[: text.index("\ngates:")] + "\n" + gates
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


def worse_predictions(cache: Path, out: Path) -> Path:
    """The shipped model's predictions (the scoring cache's, original ids) made worse: the logit
    shrunk and buried in label-independent noise."""
    frame = pd.read_parquet(cache / "heart" / "predictions.parquet")
    noise = np.random.default_rng(14).normal(0.0, 2.0, len(frame))
    frame["logit"] = 0.1 * frame["logit"] + noise
    frame.to_parquet(out, index=False)
    return out


@pytest.fixture(scope="module")
def runs(repo, tmp_path_factory):
    """Bundles: same (the checkpoint against itself), worse (noised predictions against the checkpoint),
    two bundles of one key for `validate compare` (worse, and the checkpoint), two with random keys."""
    root = tmp_path_factory.mktemp("compare_cli")
    protocol = fast_protocol(repo, root, "heart")
    ckpt = repo / "sample_sites" / "heart" / "model.pt2"
    cache = root / "cache"
    (root / "plain").mkdir()
    plain = fast_protocol(repo, root / "plain", "heart", gates="")  # one model per run: no comparison gate
    out: dict = {"root": root, "protocol": protocol, "cache": cache}
    out["same"] = run_cli("run", protocol, "--baseline", ckpt, "--out", root / "same", "--cache", cache, env=KEY)
    out["worse_file"] = worse_predictions(cache, root / "worse.parquet")
    out["worse"] = run_cli(
        "run",
        protocol,
        "--predictions",
        out["worse_file"],
        "--baseline",
        ckpt,
        "--out",
        root / "worse",
        "--cache",
        cache,
        env=KEY,
    )
    out["keyed_new"] = run_cli(
        "run", plain, "--predictions", out["worse_file"], "--out", root / "keyed_new", "--cache", cache, env=KEY
    )
    out["keyed_base"] = run_cli("run", plain, "--out", root / "keyed_base", "--cache", cache, env=KEY)
    out["random_new"] = run_cli(
        "run", plain, "--predictions", out["worse_file"], "--out", root / "random_new", "--cache", cache, env=NO_KEY
    )
    out["random_base"] = run_cli("run", plain, "--out", root / "random_base", "--cache", cache, env=NO_KEY)
    return out


def blocks(comparison: dict):
    """(where, DELTA_BLOCK) for every block of a comparison.json."""
    yield "overall", comparison["overall"]
    for s, blk in comparison["sites"].items():
        yield f"site {s}", blk
    for attr, groups in comparison["subgroups"].items():
        for g, cell in groups.items():
            yield f"{attr}={g}", cell["overall"]
            for s, blk in cell["sites"].items():
                yield f"{attr}={g} at {s}", blk


def test_same_model_as_its_own_baseline_passes_with_zero_differences(runs):
    res = runs["same"]
    assert res.code == 0, res.text
    bundle = runs["root"] / "same"
    comparison = json.loads((bundle / "comparison.json").read_text())
    assert comparison["matched"]["n"] == 920 and comparison["matched"]["n_new_only"] == 0
    seen = 0
    for where, blk in blocks(comparison):
        for metric, entry in blk["metrics"].items():
            for key in ("delta", "ci_low", "ci_high"):
                if entry[key] is not None:
                    assert entry[key] == 0.0, (where, metric, key, entry)
                    seen += 1
    assert seen > 100
    gates = json.loads((bundle / "gates.json").read_text())
    rows = [r for r in gates["rows"] if r.get("compare") == "baseline"]
    assert {r["gate"] for r in rows} == {"auroc-non-inferior", "auroc-non-inferior-each-site", "brier-non-inferior-sex"}
    judged = [r for r in rows if not r["insufficient"]]
    assert judged and all(r["verdict"] == "pass" and r["estimate"] == 0.0 for r in judged)
    assert all(r["verdict"] != "fail" for r in rows)
    assert all(r["estimate_new"] == r["estimate_baseline"] for r in judged)
    assert "non-inferior (margin 0.02)" in next(r["reason"] for r in judged if r["gate"] == "auroc-non-inferior")
    assert (bundle / "baseline_predictions.parquet").is_file()
    # the summary prints the Δ table
    assert "Comparison with the baseline" in res.out and "Δ auroc" in res.out


def test_worse_model_fails_non_inferiority_with_junit_failure(runs):
    res = runs["worse"]
    assert res.code == 1, res.text
    bundle = runs["root"] / "worse"
    comparison = json.loads((bundle / "comparison.json").read_text())
    # independent reference: scikit-learn's AUROCs of the two predictions files on the same cases
    new = pd.read_parquet(runs["worse_file"])
    base = pd.read_parquet(runs["cache"] / "heart" / "predictions.parquet")
    assert (new["case_id"].to_numpy() == base["case_id"].to_numpy()).all()
    auroc = comparison["overall"]["metrics"]["auroc"]
    assert auroc["new"] == pytest.approx(roc_auc_score(new["y"], new["logit"]), abs=1e-12)
    assert auroc["baseline"] == pytest.approx(roc_auc_score(base["y"], base["logit"]), abs=1e-12)
    assert auroc["delta"] == pytest.approx(
        roc_auc_score(new["y"], new["logit"]) - roc_auc_score(base["y"], base["logit"]), abs=1e-12
    )
    assert auroc["ci_high"] < -0.02  # the whole interval below the margin: inferior
    gates = json.loads((bundle / "gates.json").read_text())
    row = next(r for r in gates["rows"] if r["gate"] == "auroc-non-inferior")
    assert row["verdict"] == "fail" and row["estimate"] == auroc["delta"] and row["ci_low"] == auroc["ci_low"]
    assert row["reason"].endswith(": inferior") and row["margin"] == 0.02
    root = ET.parse(bundle / "junit.xml").getroot()
    failures = [(case.get("name"), f.get("message")) for case in root.iter("testcase") for f in case.findall("failure")]
    assert any("inferior" in msg and "auroc" in name for name, msg in failures), failures


def test_gate_rejudges_comparison_gates_from_the_bundle(runs, tmp_path):
    bundle = runs["root"] / "worse"
    res = run_cli("gate", bundle, "--out", tmp_path / "again")
    assert res.code == 1, res.text
    again = json.loads((tmp_path / "again" / "gates.json").read_text())
    written = json.loads((bundle / "gates.json").read_text())
    assert again["rows"] == written["rows"]


def test_compare_with_a_protocol_without_comparison_gates_is_not_a_pass(runs):
    """`validate compare` is a release gate: with no `compare: baseline` gate it judges nothing, and
    that must not exit 0 (it printed "Verdict: PASS" before)."""
    res = run_cli("compare", runs["root"] / "keyed_new", runs["root"] / "keyed_base")  # their protocol: no gate
    assert res.code == 2, res.text
    assert "declares no comparison gate" in res.err and "compare: baseline" in res.err


def test_compare_pairs_bundles_of_one_key_as_the_run_did(runs, tmp_path):
    assert runs["keyed_new"].code == 0 and runs["keyed_base"].code == 0
    junit = tmp_path / "compare.xml"
    res = run_cli(
        "compare",
        runs["root"] / "keyed_new",
        runs["root"] / "keyed_base",
        "--protocol",
        runs["protocol"],
        "--json",
        "--junit",
        junit,
    )
    assert res.code == 1, res.text
    got = json.loads(res.out)["comparison"]
    ran = json.loads((runs["root"] / "worse" / "comparison.json").read_text())
    assert got["matched"] == ran["matched"]
    pairs = dict(blocks(ran))
    for where, blk in blocks(got):
        ref = pairs[where]
        assert (blk["n"], blk["n_events"], blk["insufficient"]) == (ref["n"], ref["n_events"], ref["insufficient"])
        for metric, entry in blk["metrics"].items():
            # the same predictions on the same cases: the same estimates, and the same DeLong intervals
            for key in ("new", "baseline", "delta"):
                assert entry[key] == ref["metrics"][metric][key], (where, metric, key)
            if metric == "auroc":
                for key in ("ci_low", "ci_high", "p_value"):
                    assert entry[key] == pytest.approx(ref["metrics"][metric][key], abs=1e-12)
    failed = [f.get("message") for f in ET.parse(junit).getroot().iter("failure")]
    assert any("inferior" in m for m in failed)


def test_compare_library_call_matches_the_command(runs):
    import validate

    got = validate.compare_bundles(runs["root"] / "keyed_new", runs["root"] / "keyed_base")
    ran = json.loads((runs["root"] / "worse" / "comparison.json").read_text())
    assert got["overall"]["metrics"]["auroc"]["delta"] == ran["overall"]["metrics"]["auroc"]["delta"]
    assert got["baseline"]["source"] == "model.pt2" and got["new"]["source"] == "worse.parquet"


def test_compare_refuses_bundles_hashed_with_random_keys(runs):
    res = run_cli("compare", runs["root"] / "random_new", runs["root"] / "random_base")
    assert res.code == 2, res.text
    assert "different keys" in res.err and "VALIDATE_CASE_ID_KEY" in res.err


def test_compare_refuses_a_keyed_and_a_random_bundle(runs):
    res = run_cli("compare", runs["root"] / "keyed_new", runs["root"] / "random_base")
    assert res.code == 2, res.text
    assert "VALIDATE_CASE_ID_KEY" in res.err


@pytest.mark.slow
def test_compare_refuses_heart_against_chest(runs, repo, tmp_path):
    chest = fast_protocol(repo, tmp_path, "chest", gates="")
    made = run_cli("run", chest, "--out", tmp_path / "chest", "--cache", runs["cache"], env=KEY)
    assert made.code == 0, made.text
    res = run_cli("compare", runs["root"] / "keyed_new", tmp_path / "chest")
    assert res.code == 2, res.text
    assert "different protocols" in res.err and "heart" in res.err and "chest" in res.err


# ---- the verdict of a comparison gate on hand-made comparison blocks -------------------------------------


def _comparison(lo: float, hi: float, *, insufficient: bool = False, metric: str = "auroc") -> dict:
    block = {
        "n": 100,
        "n_events": 40,
        "insufficient": insufficient,
        "reason": "too few events" if insufficient else None,
        "metrics": {
            metric: {
                "new": 0.8,
                "baseline": 0.8 - (lo + hi) / 2,
                "delta": (lo + hi) / 2,
                "ci_low": lo,
                "ci_high": hi,
                "method": "delong_paired",
                "p_value": 0.5,
            }
        },
        "undefined": {},
    }
    return {"overall": block, "sites": {"a": block}, "subgroups": {}}


@pytest.mark.parametrize(
    "bound,lo,hi,verdict,words",
    [
        ({"min": -0.02, "on": "ci_low"}, 0.01, 0.05, "pass", "superior"),
        ({"min": -0.02, "on": "ci_low"}, -0.01, 0.03, "pass", "non-inferior (margin 0.02)"),
        ({"min": -0.02, "on": "ci_low"}, -0.02, 0.03, "pass", "non-inferior (margin 0.02)"),  # the bound itself
        ({"min": -0.02, "on": "ci_low"}, -0.05, -0.03, "fail", "inferior"),
        ({"min": -0.02, "on": "ci_low"}, -0.05, 0.01, "fail", "non-inferiority not shown (margin 0.02)"),
        ({"max": 0.01, "on": "ci_high", "metric": "brier"}, -0.05, -0.01, "pass", "superior"),
        ({"max": 0.01, "on": "ci_high", "metric": "brier"}, -0.02, 0.005, "pass", "non-inferior (margin 0.01)"),
        ({"max": 0.01, "on": "ci_high", "metric": "brier"}, 0.02, 0.05, "fail", "inferior"),
        (
            {"max": 0.01, "on": "ci_high", "metric": "brier"},
            -0.01,
            0.03,
            "fail",
            "non-inferiority not shown (margin 0.01)",
        ),
    ],
)
def test_comparison_gate_verdict_words(bound, lo, hi, verdict, words):
    from validate.gates import judge_gates

    gate = {"metric": "auroc", "compare": "baseline", "scope": "overall", **bound}
    comparison = _comparison(lo, hi, metric=gate["metric"])
    report = judge_gates([gate], {"overall": {"n": 100}, "sites": {"a": {"n": 100}}}, comparison=comparison)
    (row,) = report.rows
    assert row.verdict == verdict and row.reason.endswith(": " + words), row.reason
    assert (row.ci_low, row.ci_high, row.compare) == (lo, hi, "baseline")
    assert report.exit_code == (1 if verdict == "fail" else 0)


def test_comparison_gate_insufficient_block_follows_the_policy_and_missing_comparison_is_refused():
    from validate.errors import InputError
    from validate.gates import judge_gates

    metrics = {"overall": {"n": 100}, "sites": {"a": {"n": 100}, "b": {"n": 50}}}
    gate = {
        "metric": "auroc",
        "compare": "baseline",
        "scope": "each_site",
        "min": -0.02,
        "on": "ci_low",
        "insufficient": "warn",
    }
    report = judge_gates([gate], metrics, comparison=_comparison(-0.05, -0.03, insufficient=True))
    by_item = {r.item: r for r in report.rows}
    assert by_item["site a"].verdict == "warn" and "too few events" in by_item["site a"].reason
    # a scored site the comparison has no block for was not compared: it fails, whatever the policy
    assert by_item["site b"].verdict == "fail" and "both models" in by_item["site b"].reason
    with pytest.raises(InputError, match="no comparison with a baseline"):
        judge_gates([gate], metrics, comparison=None)


@pytest.mark.parametrize(
    "metric,bound,field,words",
    [
        # lower ECE is better: `min: -0.02` would pass a new model whose ECE is far worse
        ("ece", {"min": -0.02, "on": "ci_low"}, "min", "would pass a worse new model"),
        ("auroc", {"max": 0.02, "on": "ci_high"}, "max", "would pass a worse new model"),
        # the lenient end of the interval shows no non-inferiority
        ("auroc", {"min": -0.02, "on": "ci_high"}, "on", "lenient end"),
        ("brier", {"max": 0.01, "on": "ci_low"}, "on", "lenient end"),
        # slope is best at 1: its difference has no better side
        ("calibration_slope", {"min": -0.1, "on": "ci_low"}, "metric", "no better side"),
    ],
)
def test_comparison_gate_bound_that_could_pass_a_worse_model_is_refused(metric, bound, field, words):
    """Found trying the feature as a user would: `{metric: ece, compare: baseline, min: -0.02}` read as
    "non-inferior" while the new model's ECE was worse (a false PASS). Refused before judging."""
    from validate.errors import InputError
    from validate.gates import judge_gates

    gate = {"metric": metric, "compare": "baseline", "scope": "overall", **bound}
    # Δ far on the bad side: were the gate judged, it would pass
    bad = (0.2, 0.3) if metric in ("ece", "brier") else (-0.3, -0.2)
    with pytest.raises(InputError, match=words) as caught:
        judge_gates(
            [gate], {"overall": {"n": 100}, "sites": {"a": {"n": 100}}}, comparison=_comparison(*bad, metric=metric)
        )
    assert f"gates[0].{field}" in str(caught.value)


def test_comparison_gate_on_the_estimate_claims_no_non_inferiority():
    from validate.gates import judge_gates

    gate = {"metric": "auroc", "compare": "baseline", "scope": "overall", "min": -0.02, "on": "estimate"}
    # estimate -0.01 within the margin, but the interval reaches -0.05: not shown non-inferior
    report = judge_gates(
        [gate], {"overall": {"n": 100}, "sites": {"a": {"n": 100}}}, comparison=_comparison(-0.05, 0.03)
    )
    (row,) = report.rows
    assert row.verdict == "pass"
    assert "not a non-inferiority test" in row.reason and "non-inferior (" not in row.reason


def test_comparison_subgroup_group_without_compared_cases_fails_rather_than_vanishes():
    """metrics.json has sex=female, the comparison only sex=male (no female case scored by both
    models): the female row fails; before, it was silently absent and the gate passed."""
    from validate.gates import judge_gates

    comparison = _comparison(0.01, 0.05)
    comparison["subgroups"] = {"sex": {"male": {"overall": comparison["overall"], "sites": {}}}}
    metrics = {
        "overall": {"n": 100},
        "sites": {"a": {"n": 100}},
        "subgroups": {"sex": {"female": {"n": 40}, "male": {"n": 60}}},
    }
    gate = {"metric": "auroc", "compare": "baseline", "scope": "each_subgroup:sex", "min": -0.02, "on": "ci_low"}
    report = judge_gates([gate], metrics, comparison=comparison)
    by_item = {r.item: r for r in report.rows}
    assert by_item["sex=male"].verdict == "pass"
    assert by_item["sex=female"].verdict == "fail" and "both models" in by_item["sex=female"].reason
    assert report.exit_code == 1
