"""Hostile site bundles given to ``validate combine``, and hostile ``validate run --site`` calls.

Every refusal is exit 2 with a message naming the bundle and what is wrong, nothing written: bundles of
another protocol or checkpoint, two bundles of one site, a central bundle passed as a site bundle, a
file changed after the site wrote it, a threshold carried from another development bundle, an unknown
site id. A combined bundle never lands on the user's files.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from validate.federation import run_site
from validate.pipeline import run_protocol

from tests.adversarial.harness import Unchanged, run_cli

REPO = Path(__file__).resolve().parents[2]
GATES = "gates:\n  - {name: auroc-each-site, metric: auroc, scope: each_site, min: 0.5, on: ci_low}\n"


def _protocol(folder: Path, *, version: str = "1.0") -> Path:
    """protocols/heart.yaml made small: 20 replicates, no subgroups, no calibration comparison."""
    text = (REPO / "protocols" / "heart.yaml").read_text()
    text = text.replace("../sample_sites", str(REPO / "sample_sites")).replace("n_bootstrap: 1000", "n_bootstrap: 20")
    text = text.replace('version: "1.0"', f'version: "{version}"')
    for section in ("calibration", "subgroups"):
        text = re.sub(rf"\n{section}:\n(  .*\n|\s*#.*\n|\n)*", "\n", text)
    text = text[: text.index("\ngates:")] + "\n" + GATES
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "heart.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("advsite")
    proto = _protocol(root / "a")
    other = _protocol(root / "b", version="1.1")
    cache = root / "cache"
    dev = run_site(proto, out=root / "cleveland", cache_dir=cache, site="cleveland").bundle
    out = {"root": root, "protocol": proto, "cleveland": dev}
    out["hungary"] = run_site(
        proto, out=root / "hungary", cache_dir=cache, site="hungary", development_bundle=dev
    ).bundle
    other_dev = run_site(other, out=root / "b_cleveland", cache_dir=cache, site="cleveland").bundle
    out["other_protocol"] = run_site(
        other, out=root / "b_hungary", cache_dir=cache, site="hungary", development_bundle=other_dev
    ).bundle
    out["other_checkpoint"] = run_site(
        proto,
        out=root / "v2_cleveland",
        cache_dir=cache,
        site="cleveland",
        checkpoint=REPO / "sample_sites" / "heart" / "model_v2.pt2",
    ).bundle
    out["central"] = run_protocol(proto, out=root / "central", cache_dir=cache).bundle
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_bundles_of_another_protocol_are_refused(bundles, tmp_path):
    with Unchanged(tmp_path):
        r = run_cli("combine", bundles["cleveland"], bundles["other_protocol"], "--out", tmp_path / "c")
    assert r.code == 2, r.text
    assert "another protocol" in r.err and "b_hungary" in r.err


def test_bundles_of_another_checkpoint_are_refused(bundles, tmp_path):
    with Unchanged(tmp_path):
        r = run_cli("combine", bundles["hungary"], bundles["other_checkpoint"], "--out", tmp_path / "c")
    assert r.code == 2, r.text
    assert "another checkpoint" in r.err


def test_two_bundles_of_one_site_are_refused(bundles, tmp_path):
    twin = _copy(bundles["cleveland"], tmp_path / "twin")
    with Unchanged(tmp_path):
        r = run_cli("combine", bundles["cleveland"], twin, "--out", tmp_path / "c")
    assert r.code == 2, r.text
    assert "site cleveland is given twice" in r.err


def test_a_central_bundle_is_not_a_site_bundle(bundles, tmp_path):
    with Unchanged(tmp_path):
        r = run_cli("combine", bundles["cleveland"], bundles["central"], "--out", tmp_path / "c")
    assert r.code == 2, r.text
    assert "a central bundle, not a site bundle" in r.err


def test_a_combined_bundle_is_not_a_site_bundle(bundles, tmp_path):
    r = run_cli("combine", bundles["cleveland"], bundles["hungary"], "--out", tmp_path / "c")
    assert r.code in (0, 1), r.text
    assert "Combined 2 site bundle(s): cleveland (n=303), hungary (n=294)" in r.out
    with Unchanged(tmp_path):
        r2 = run_cli("combine", tmp_path / "c", "--out", tmp_path / "d")
    assert r2.code == 2 and "a combined bundle, not a site bundle" in r2.err


def test_a_tampered_metrics_file_is_refused(bundles, tmp_path):
    forged = _copy(bundles["hungary"], tmp_path / "forged")
    metrics = json.loads((forged / "metrics.json").read_text())
    metrics["sites"]["hungary"]["auroc"]["ci_low"] = 0.99  # a site that "passes" after the fact
    (forged / "metrics.json").write_text(json.dumps(metrics))
    with Unchanged(tmp_path):
        r = run_cli("combine", bundles["cleveland"], forged, "--out", tmp_path / "c")
    assert r.code == 2, r.text
    assert "metrics.json is not the file the site's run wrote" in r.err


def test_a_provenance_naming_another_site_is_refused(bundles, tmp_path):
    forged = _copy(bundles["hungary"], tmp_path / "forged")
    prov = json.loads((forged / "provenance.json").read_text())
    prov["site"] = "va"
    (forged / "provenance.json").write_text(json.dumps(prov))
    with Unchanged(tmp_path):
        r = run_cli("combine", bundles["cleveland"], forged, "--out", tmp_path / "c")
    assert r.code == 2, r.text
    assert "provenance names site 'va'" in r.err


def test_a_threshold_carried_from_another_development_bundle_is_refused(bundles, tmp_path):
    # a second cleveland bundle of the same protocol: same numbers, but not the one hungary carried
    rerun = run_site(
        bundles["protocol"], out=tmp_path / "dev2", cache_dir=bundles["root"] / "cache", site="cleveland"
    ).bundle
    with Unchanged(tmp_path):
        r = run_cli("combine", rerun, bundles["hungary"], "--out", tmp_path / "c")
    assert r.code == 2, r.text
    assert "carried the target-sensitivity threshold of another bundle" in r.err


def test_a_central_bundle_cannot_lend_its_threshold(bundles, tmp_path):
    with Unchanged(tmp_path):
        r = run_cli(
            "run", bundles["protocol"], "--site", "va", "--development-bundle", bundles["central"],
            "--out", tmp_path / "va",
        )  # fmt: skip
    assert r.code == 2, r.text
    assert "not a site bundle" in r.err


def test_an_unknown_site_is_refused(bundles, tmp_path):
    with Unchanged(tmp_path):
        r = run_cli("run", bundles["protocol"], "--site", "nowhere", "--out", tmp_path / "x")
    assert r.code == 2, r.text
    assert "'nowhere' is not a site of the protocol" in r.err and "cleveland" in r.err


def test_combine_never_writes_over_the_users_files(bundles, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with Unchanged(tmp_path):
        r = run_cli("combine", bundles["cleveland"], bundles["hungary"], "--out", mine)
    assert r.code == 2, r.text
