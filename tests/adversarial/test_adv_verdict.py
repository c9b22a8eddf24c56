"""No false PASS from a vanished site: a declared site without a single scored case fails the run.

Each test runs the real command line on a three-site protocol in which one declared site loses
every case — all its images unreadable, every model output NaN, or no row in a predictions file — and
asserts exit 1, a ``gates.json`` row that names the site as failed with a reason, a JUnit ``<failure>``
for it, the same verdict from ``validate gate BUNDLE``, and that nothing outside the bundle changed.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import torch
import yaml

from tests.adversarial.harness import Unchanged, run_cli

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
from test_run_helpers import make_protocol, synthetic_predictions  # noqa: E402
from test_scoring_support import chest_like_images, image_input, tiny_model, write_factory, write_png_site  # noqa: E402

GATES = [
    {"name": "auroc-per-site", "metric": "auroc", "scope": "each_site", "min": 0.0, "insufficient": "pass"},
    {"name": "auroc-overall", "metric": "auroc", "scope": "overall", "min": 0.0, "insufficient": "pass"},
]


def _protocol(path: Path, *, sites: list[dict], input: dict, model: dict) -> Path:
    """Lenient gates (min 0, insufficient: pass): only a vanished site can fail this protocol."""
    doc = {
        "name": "vanish",
        "task": "binary",
        "classes": ["neg", "pos"],
        "input": input,
        "model": model,
        "sites": sites,
        "attributes": ["sex"],
        "metrics": {"n_bootstrap": 0, "min_cases": 1, "min_events": 1},
        "calibration": {"methods": []},
        "gates": GATES,
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _failed_rows(bundle: Path, site: str) -> dict:
    gates = json.loads((bundle / "gates.json").read_text())
    assert gates["verdict"] == "fail" and gates["exit_code"] == 1
    return {r["gate"]: r for r in gates["rows"] if r["site"] == site and r["verdict"] == "fail"}


def _assert_vanished(bundle: Path, site: str, reason_part: str) -> None:
    failed = _failed_rows(bundle, site)
    assert set(failed) >= {"sites scored", "auroc-per-site"}, failed
    for row in failed.values():
        assert f"no scored case at declared site {site}" in row["reason"] and reason_part in row["reason"]
        assert row["n"] == 0
    root = ET.fromstring((bundle / "junit.xml").read_bytes())
    names = [c.get("name") for c in root.iter("testcase") if c.find("failure") is not None]
    assert f"site {site}: scored cases >= 1" in names and f"site {site}: auroc estimate >= 0" in names, names
    assert int(root.get("failures")) == len(names) >= 2
    md = (bundle / "gates.md").read_text()
    assert "❌" in md and f"| site {site.replace('_', chr(92) + '_')} |" in md  # Markdown-escaped underscores
    # the overall gate passes on the site that is left, but says what it pooled without
    overall = [r for r in json.loads((bundle / "gates.json").read_text())["rows"] if r["gate"] == "auroc-overall"]
    assert overall[0]["verdict"] == "pass" and f"without declared site(s) {site}" in overall[0]["reason"]


def _regate_fails(bundle: Path, site: str, cwd: Path) -> None:
    out = cwd / "regate"
    with Unchanged(cwd, allow=["regate"]):
        r = run_cli("gate", bundle, "--out", out, cwd=cwd)
    assert r.code == 1, r.text
    from validate.escape import markdown_text  # `validate gate` prints the Markdown comment

    assert "Verdict: FAIL (exit 1)" in r.out and markdown_text(f"no scored case at declared site {site}") in r.out
    assert json.loads((out / "gates.json").read_text()) == json.loads((bundle / "gates.json").read_text())


def test_site_whose_every_image_is_unreadable_fails_the_run(tmp_path):
    images = chest_like_images(24)
    write_png_site(tmp_path / "data", "a", images)
    write_png_site(tmp_path / "data", "b", images[:10])
    write_png_site(tmp_path / "data", "c", images[::-1])
    for png in (tmp_path / "data" / "b").glob("*.png"):
        png.write_bytes(b"not an image at all")
    write_factory(tmp_path / "code")
    torch.save(tiny_model().state_dict(), tmp_path / "model_state.pt")
    model = {
        "checkpoint": "model_state.pt",
        "format": "state_dict",
        "factory": "tiny_def:build_model",
        "factory_path": "code",
    }
    sites = [
        {"id": "a", "manifest": "data/a.csv", "image_root": "data/a", "role": "development"},
        {"id": "b", "manifest": "data/b.csv", "image_root": "data/b", "role": "external"},
        {"id": "c", "manifest": "data/c.csv", "image_root": "data/c", "role": "external"},
    ]
    protocol = _protocol(tmp_path / "p.yaml", sites=sites, input=image_input(16), model=model)
    with Unchanged(tmp_path, allow=["out", ".cache"]):
        r = run_cli("run", protocol, "--out", tmp_path / "out", cwd=tmp_path)
    assert r.code == 1, r.text
    assert "b " in r.out and "[no scored case]" in r.out and "Verdict: FAIL (exit 1)" in r.out
    _assert_vanished(tmp_path / "out", "b", "10 case(s) excluded")
    _regate_fails(tmp_path / "out", "b", tmp_path)


def test_site_whose_every_model_output_is_nan_fails_the_run(tmp_path):
    # the tiny tabular model returns NaN when the first feature is below -1 (log of a negative number)
    write_factory(tmp_path / "code")
    torch.save(tiny_model("build_tabular").state_dict(), tmp_path / "tab.pt")
    rng = np.random.default_rng(0)
    for site, sign in (("a", 1.0), ("b", -1.0), ("c", 1.0)):
        rows = ["case_id,label,f0,f1,f2,sex"]
        for i in range(30):
            f0 = sign * (2.0 + rng.random())
            rows.append(f"{site}{i},{i % 2},{f0:.3f},{rng.normal():.3f},{rng.normal():.3f},{'FM'[i % 2]}")
        (tmp_path / f"{site}.csv").write_text("\n".join(rows) + "\n")
    sites = [{"id": s, "manifest": f"{s}.csv", "role": "external" if s != "a" else "development"} for s in "abc"]
    model = {
        "checkpoint": "tab.pt",
        "format": "state_dict",
        "factory": "tiny_def:build_tabular",
        "factory_path": "code",
    }
    protocol = _protocol(
        tmp_path / "p.yaml", sites=sites, input={"kind": "tabular", "features": ["f0", "f1", "f2"]}, model=model
    )
    with Unchanged(tmp_path, allow=["out", ".cache"]):
        r = run_cli("run", protocol, "--out", tmp_path / "out", cwd=tmp_path)
    assert r.code == 1, r.text
    _assert_vanished(tmp_path / "out", "b", "model output is NaN or Inf (30)")
    _regate_fails(tmp_path / "out", "b", tmp_path)


def test_predictions_without_a_declared_site_fail_the_run(tmp_path):
    protocol = make_protocol(
        tmp_path,
        gates="""
gates:
  - {name: auroc-per-site, metric: auroc, scope: each_site, min: 0.0, insufficient: pass}
  - {name: auroc-overall, metric: auroc, scope: overall, min: 0.0, insufficient: pass}
  - {name: gap-sex, metric: auroc, scope: subgroup_gap:sex, max: 1.0, insufficient: pass}
""",
        n_bootstrap=0,
    )
    frame = synthetic_predictions()
    frame[frame["site"] != "ext_small"].to_csv(tmp_path / "partial.csv", index=False)
    with Unchanged(tmp_path, allow=["out"]):
        r = run_cli("run", protocol, "--predictions", tmp_path / "partial.csv", "--out", tmp_path / "out", cwd=tmp_path)
    assert r.code == 1, r.text
    assert "2 of 3 site(s)" in r.out and "ext_small" in r.out
    _assert_vanished(tmp_path / "out", "ext_small", "the predictions hold none")
    gap = _failed_rows(tmp_path / "out", "ext_small")["gap-sex"]
    assert gap["item"] == "site ext_small: sex (|gap|)"
    _regate_fails(tmp_path / "out", "ext_small", tmp_path)


def test_predictions_with_a_site_of_nan_scores_are_never_a_pass(tmp_path):
    protocol = make_protocol(tmp_path, gates=GATES_LENIENT, n_bootstrap=0)
    frame = synthetic_predictions()
    frame.loc[frame["site"] == "ext_small", "logit"] = np.nan
    frame.to_csv(tmp_path / "nan.csv", index=False)
    with Unchanged(tmp_path):
        r = run_cli("run", protocol, "--predictions", tmp_path / "nan.csv", "--out", tmp_path / "out", cwd=tmp_path)
    assert r.code == 2, r.text
    assert "nan.csv" in r.err and "logit" in r.err and "missing value" in r.err
    assert not (tmp_path / "out").exists()


GATES_LENIENT = """
gates:
  - {name: auroc-per-site, metric: auroc, scope: each_site, min: 0.0, insufficient: pass}
"""
