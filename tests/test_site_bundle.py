"""Site bundles (``validate run PROTOCOL --site ID``) and their combination (``validate combine``).

The reference is a central run of the same protocol on the same cases: each site's block, subgroup
analysis, curves and cohort in a site bundle, and in the bundle combined from the site bundles, must be
the central bundle's, number for number (compared as parsed JSON: equal floats, not approximately
equal). The privacy test reads every byte of every file of a site bundle and looks for every case id,
patient id and image name of the site's manifest, raw and hashed with the case-id key.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from validate.bundle import hash_ids, read_bundle
from validate.errors import InputError
from validate.federation import combine_bundles, run_site
from validate.pipeline import run_protocol

REPO = Path(__file__).resolve().parents[1]
HEART_SITES = ("cleveland", "hungary", "switzerland", "va")
KEY = "site-bundle-test-key"

# gates of the test protocol: per site (judged at the site), pooled (nothing to judge in a site or
# combined bundle: must fail even with `insufficient: pass`)
GATES = """
gates:
  - {name: auroc-each-site, metric: auroc, scope: each_site, min: 0.5, on: ci_low, insufficient: warn}
  - {name: auroc-pooled, metric: auroc, scope: overall, min: 0.5, on: estimate, insufficient: pass}
  - {name: auroc-worst-sex, metric: auroc, scope: worst_subgroup:sex, min: 0.5, on: estimate, insufficient: pass}
  - {name: auroc-gap-sex, metric: auroc, scope: subgroup_gap:sex, max: 0.5, on: estimate, insufficient: warn}
  - {name: auroc-next-hospital, metric: auroc, scope: across_sites, min: 0.6, on: pi_low, insufficient: warn}
"""


def _heart_protocol(folder: Path) -> Path:
    """protocols/heart.yaml with absolute paths, 60 bootstrap replicates, no calibration comparison (it
    needs the fit site's cases) and the gates above."""
    text = (REPO / "protocols" / "heart.yaml").read_text()
    text = text.replace("../sample_sites", str(REPO / "sample_sites")).replace("n_bootstrap: 1000", "n_bootstrap: 60")
    text = re.sub(r"\ncalibration:\n(  .*\n|\s*#.*\n|\n)*", "\n", text)
    text = text[: text.index("\ngates:")] + GATES
    path = folder / "heart.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def heart(tmp_path_factory, monkeypatch_module):
    """The central bundle, the four site bundles and their combination, of one protocol."""
    monkeypatch_module.setenv("VALIDATE_CASE_ID_KEY", KEY)
    root = tmp_path_factory.mktemp("sitebundle")
    protocol = _heart_protocol(root)
    cache = root / "cache"
    central = run_protocol(protocol, out=root / "central", cache_dir=cache)
    sites = {"cleveland": run_site(protocol, out=root / "s_cleveland", cache_dir=cache, site="cleveland")}
    for s in HEART_SITES[1:]:
        sites[s] = run_site(
            protocol, out=root / f"s_{s}", cache_dir=cache, site=s, development_bundle=root / "s_cleveland"
        )
    combined, gates, _ = combine_bundles([sites[s].bundle for s in reversed(HEART_SITES)], out=root / "combined")
    return {
        "protocol": protocol,
        "root": root,
        "central": read_bundle(central.bundle),
        "sites": {s: read_bundle(r.bundle) for s, r in sites.items()},
        "combined": read_bundle(combined),
        "combined_gates": gates,
    }


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _no_schema(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "schema"}


def test_site_bundle_blocks_equal_the_central_run(heart):
    central = heart["central"]
    for s, bundle in heart["sites"].items():
        assert list(bundle.metrics["sites"]) == [s]
        assert bundle.metrics["sites"][s] == central.metrics["sites"][s], s
        assert bundle.subgroups["sites"][s] == central.subgroups["sites"][s], s
        assert bundle.curves["sites"][s] == central.curves["sites"][s], s
        decision = bundle.curves["decision"]["blocks"]
        assert decision["sites"][s] == central.curves["decision"]["blocks"]["sites"][s], s
        assert decision["overall"]["not_computed"] is True, s  # not the site's curve passed off as pooled
        assert bundle.sites["sites"][s] == central.sites["sites"][s], s
    # the carried threshold: the development site's own, at every other site
    dev_t = central.metrics["sites"]["cleveland"]["target_sensitivity"]["threshold"]
    for s in HEART_SITES[1:]:
        ts = heart["sites"][s].metrics["sites"][s]["target_sensitivity"]
        assert ts["carried"] is True and ts["threshold"] == dev_t


def test_combined_bundle_equals_the_central_run_per_site(heart):
    central, combined = heart["central"], heart["combined"]
    assert list(combined.metrics["sites"]) == list(HEART_SITES)  # protocol order, whatever the order given
    assert combined.metrics["sites"] == central.metrics["sites"]
    assert combined.subgroups["sites"] == central.subgroups["sites"]
    assert combined.subgroups["groups"] == central.subgroups["groups"]
    assert combined.curves["sites"] == central.curves["sites"]
    # the decision curve of each site at its own prevalence (heart.yaml declares decision thresholds)
    assert combined.curves["decision"]["blocks"]["sites"] == central.curves["decision"]["blocks"]["sites"]
    assert combined.curves["decision"]["thresholds"] == central.curves["decision"]["thresholds"]
    assert combined.curves["decision"]["blocks"]["overall"]["not_computed"] is True
    # per-site subgroup reliability as shipped ("none"); the central run adds calibrated methods there
    for s in HEART_SITES:
        for attr, cells in combined.curves["subgroups"]["sites"][s].items():
            for g, methods in cells.items():
                assert methods["none"] == central.curves["subgroups"]["sites"][s][attr][g]["none"]
    assert combined.sites["sites"] == central.sites["sites"]
    for key in ("task", "n_bootstrap", "ci_level", "seed"):
        assert combined.metrics[key] == central.metrics[key]
    # the synthesis across the external sites, from the site blocks alone: the central run's
    assert central.metrics["synthesis"]["metrics"]["auroc"]["k"] == 3
    assert combined.metrics["synthesis"] == central.metrics["synthesis"]


def test_per_site_gate_rows_equal_the_central_run(heart):
    def rows(bundle, gate):
        return [_no_schema(r) for r in bundle.gates["rows"] if r["gate"] == gate]

    central, combined = heart["central"], heart["combined"]
    for gate in ("auroc-each-site", "auroc-gap-sex", "auroc-next-hospital", "sites scored"):
        assert rows(combined, gate) == rows(central, gate), gate


def test_pooled_gates_fail_in_site_and_combined_bundles(heart):
    """`insufficient: pass` must not turn a gate with nothing to judge into a PASS."""
    combined = heart["combined"]
    for gate in ("auroc-pooled", "auroc-worst-sex"):
        (row,) = [r for r in combined.gates["rows"] if r["gate"] == gate]
        assert row["verdict"] == "fail"
        assert "no pooled patient-level block in a combined bundle" in row["reason"]
        for s, bundle in heart["sites"].items():
            (row,) = [r for r in bundle.gates["rows"] if r["gate"] == gate]
            assert row["verdict"] == "fail", s
    assert combined.gates["verdict"] == "fail" and heart["combined_gates"].exit_code == 1
    # a site bundle has no synthesis: its across_sites gate fails too (combine judges it)
    for s, bundle in heart["sites"].items():
        (row,) = [r for r in bundle.gates["rows"] if r["gate"] == "auroc-next-hospital"]
        assert row["verdict"] == "fail" and "validate combine" in row["reason"], s


def test_absent_pooled_blocks_say_why(heart):
    for bundle in [heart["combined"], *heart["sites"].values()]:
        for part in (bundle.metrics, bundle.curves):
            assert part["overall"]["not_computed"] is True
            assert "stay" in part["overall"]["reason"] or "stayed" in part["overall"]["reason"]
        assert bundle.typed.calibration.reason and bundle.typed.shift.reason
    assert heart["combined"].provenance["bundle_kind"] == "combined"
    assert [c["site"] for c in heart["combined"].provenance["combined_from"]] == list(reversed(HEART_SITES))
    assert heart["central"].provenance.get("bundle_kind") is None  # central bundles are unchanged


def test_report_of_a_combined_bundle_says_why_pooled_blocks_are_absent(heart):
    html = (heart["combined"].path / "report.html").read_text()
    assert "combined from site bundles" in html
    assert "not computed" in html
    site_html = (heart["sites"]["va"].path / "report.html").read_text()
    assert "site bundle of va" in site_html


def _manifest_identifiers(manifest: Path) -> set[str]:
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    values = set(frame["case_id"]) | set(frame["patient_id"])
    if "image" in frame:
        values |= {v for v in frame["image"] if v}
    values = {v for v in values if v}
    return values | {h for h in hash_ids(sorted(values), KEY.encode()) if h}


def _all_bytes(folder: Path) -> bytes:
    return b"\n".join(f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file())


def test_site_bundle_holds_no_case_identifier(heart):
    for s, bundle in heart["sites"].items():
        names = {f.name for f in bundle.path.iterdir()}
        assert not names & {"predictions.parquet", "failures.csv", "cases.json", "thumbnails"}, names
        data = _all_bytes(bundle.path)
        ids = _manifest_identifiers(REPO / "sample_sites" / "heart" / f"{s}.csv")
        assert len(ids) > 100
        leaked = sorted(v for v in ids if v.encode() in data)
        assert leaked == [], f"{s}: {leaked[:5]}"
    # the same search finds them in the central bundle: the search itself works
    central = _all_bytes(heart["central"].path)
    assert any(h.encode() in central for h in _manifest_identifiers(REPO / "sample_sites" / "heart" / "va.csv"))


def test_combined_bundle_holds_no_case_identifier(heart):
    data = _all_bytes(heart["combined"].path)
    for s in HEART_SITES:
        ids = _manifest_identifiers(REPO / "sample_sites" / "heart" / f"{s}.csv")
        assert not [v for v in ids if v.encode() in data], s


def test_site_bundle_of_an_image_site_holds_no_image_path(tmp_path, monkeypatch):
    """chest: image names carry the case id; none of ids, patient ids, image names, raw or hashed."""
    monkeypatch.setenv("VALIDATE_CASE_ID_KEY", KEY)
    text = (REPO / "protocols" / "chest.yaml").read_text()
    text = text.replace("../sample_sites", str(REPO / "sample_sites")).replace("n_bootstrap: 1000", "n_bootstrap: 30")
    text = re.sub(r"\ncalibration:\n(  .*\n|\s*#.*\n|\n)*", "\n", text)
    protocol = tmp_path / "chest.yaml"
    protocol.write_text(text)
    result = run_site(protocol, out=tmp_path / "s_dev", cache_dir=tmp_path / "cache", site="development")
    data = _all_bytes(result.bundle)
    ids = _manifest_identifiers(REPO / "sample_sites" / "chest" / "development.csv")
    assert any(v.endswith(".png") for v in ids)
    assert not [v for v in ids if v.encode() in data]
    assert "images/" not in data.decode("utf-8", "replace").replace("image_root", "")
    assert not (result.bundle / "thumbnails").exists()


def test_a_non_development_site_needs_the_development_bundle(heart, tmp_path):
    with pytest.raises(InputError, match="--development-bundle"):
        run_site(heart["protocol"], out=tmp_path / "s_va", site="va")
    assert not (tmp_path / "s_va").exists()  # refused before anything was scored or written


def test_regate_of_a_combined_bundle_judges_the_same_rows(heart):
    from validate.pipeline import regate

    _, report = regate(heart["combined"].path)
    assert json.loads(json.dumps(report.to_json()))["rows"] == [_no_schema(r) for r in heart["combined"].gates["rows"]]


@pytest.mark.parametrize("run", ["combined", "s_va"])
def test_every_dashboard_page_opens_a_site_or_combined_bundle(heart, run, monkeypatch):
    """No page crashes on a bundle without pooled blocks, and each says why they are absent."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("VALIDATE_DASHBOARD_RUNS", str(heart["root"]))
    pages = sorted(p.name for p in (REPO / "dashboard" / "views").glob("*.py"))
    for page in pages:
        at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=120)
        at.session_state["run"] = run
        at.switch_page(f"views/{page}")
        at.run()
        assert not at.exception, (page, [e.message for e in at.exception])
        if page in ("overview.py", "discrimination.py", "calibration.py", "subgroups.py"):
            notes = " ".join(str(i.value) for i in at.info)
            assert "no pooled 'all sites' block" in notes, page
