"""Reporting checklists (TRIPOD+AI, CLAIM 2024, STARD-AI) filled from a results bundle.

The item lists are checked against the published numbering written out by hand here (not read from the
module under test); evidence values against the bundle's JSON files read independently with ``json``;
a bundle without ``shift.json`` must mark the shift items "not in bundle"; ``validate report
--checklist`` never replaces a file it did not write. The sample bundles (heart and chest) are run into
a temporary folder with fewer bootstrap replicates (slow), or taken from ``$VALIDATE_SAMPLE_RUNS``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from validate.bundle import not_our_bundle, read_bundle
from validate.cli import main
from validate.report import checklists
from validate.report.checklist_items import GUIDELINES

from test_run_helpers import synthetic_bundle  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[1]


def _ids(numbers, subs: dict[int, str]) -> list[str]:
    return [f"{n}{s}" for n in numbers for s in (subs.get(n) or [""])]


# the published numbering (TRIPOD+AI: BMJ 2024;385:e078378, table 1; CLAIM 2024: items 1-44; STARD 2015)
TRIPOD_IDS = _ids(
    range(1, 28),
    {3: "abc", 5: "ab", 6: "abc", 8: "abc", 9: "abc", 12: "abcdefg", 18: "abcdef", 20: "abc", 23: "ab", 27: "abc"},
)
CLAIM_IDS = [str(n) for n in range(1, 45)]
STARD_IDS = _ids(range(1, 31), {10: "ab", 12: "ab", 13: "ab", 21: "ab"})


def test_item_tables_follow_the_published_numbering():
    assert [i.id for i in GUIDELINES["tripod-ai"].items] == TRIPOD_IDS
    assert len(TRIPOD_IDS) == 52 and len({re.sub("[a-z]", "", i) for i in TRIPOD_IDS}) == 27
    assert [i.id for i in GUIDELINES["claim"].items] == CLAIM_IDS
    assert [i.id for i in GUIDELINES["stard-ai"].items] == STARD_IDS
    assert "BMJ 2024;385:e078378" in GUIDELINES["tripod-ai"].citation
    assert "Radiol Artif Intell 2024;6(4):e240300" in GUIDELINES["claim"].citation
    assert "Nat Med 2025" in GUIDELINES["stard-ai"].citation
    # what could not be verified is said in every STARD-AI checklist, not hidden
    assert "could not be verified" in GUIDELINES["stard-ai"].note


def test_every_finder_exists_and_the_command_lists_every_guideline():
    from validate.commands.report import CHECKLISTS

    assert tuple(CHECKLISTS) == checklists.NAMES == ("tripod-ai", "claim", "stard-ai")
    for g in GUIDELINES.values():
        for item in g.items:
            assert item.finder is None or item.finder in checklists.FINDERS, (g.key, item.id)
            assert item.author.strip(), (g.key, item.id)  # what the author must add is always said


def _check_rows(bundle, name: str) -> list[checklists.Row]:
    rows = checklists.fill(bundle, name)
    assert len(rows) == len(GUIDELINES[name].items)
    for r in rows:
        assert r.status in ("filled", "partial", "author"), r
        if r.status == "filled":
            assert r.evidence and not r.evidence.startswith("not in bundle"), r
            assert r.author == ""
        elif r.status == "partial":
            assert r.evidence and not r.evidence.startswith("not in bundle"), r
            assert r.author, r
        else:
            assert r.author, r  # marked plainly: what the author must supply
    return rows


def _row(rows, item_id: str) -> checklists.Row:
    return next(r for r in rows if r.item.id == item_id)


def _json(folder: Path, name: str) -> dict:
    return json.loads((folder / name).read_text(encoding="utf-8"))


def _est(entry: dict) -> str:
    return f"{entry['estimate']:.3f}"


def _spot_check(folder: Path, bundle) -> None:
    """Evidence values against the bundle's own JSON, read here with ``json``."""
    sites, prov, metrics = _json(folder, "sites.json"), _json(folder, "provenance.json"), _json(folder, "metrics.json")
    gates = _json(folder, "gates.json")
    tripod = _check_rows(bundle, "tripod-ai")
    flow = _row(tripod, "20a")
    assert flow.status == "filled"
    for s, info in sites["sites"].items():
        assert f"{s}: n={info['n']}, {info['n_events']} with the outcome" in flow.evidence
    assert prov["protocol"]["sha256"] in _row(tripod, "18c").evidence
    assert f"of {len(prov['files'])} bundle file(s)" in _row(tripod, "18c").evidence
    perf = _row(tripod, "23a")
    for s, block in metrics["sites"].items():
        assert f"{s}: AUROC {_est(block['auroc'])}" in perf.evidence
        assert f"n={block['n']} ({block['n_events']} events)" in perf.evidence
    for attr in metrics["subgroups"]:
        assert attr in perf.evidence
    verdict = _row(tripod, "25").evidence
    assert f"verdict {gates['verdict'].upper()}, {len(gates['rows'])} check(s)" in verdict
    assert f"{gates['counts']['fail']} fail" in verdict
    claim = _check_rows(bundle, "claim")
    shift = _json(folder, "shift.json")
    for s in shift["material_sites"]:
        assert f"{s} (n={shift['sites'][s]['n']}): " in _row(tripod, "16").evidence
        assert f"{s} (n={shift['sites'][s]['n']}): {shift['sites'][s]['n_tests']} tests, material shift" in (
            _row(tripod, "16").evidence
        )
    assert "dataset shift per external site (shift.json)" in _row(claim, "30").evidence
    cases = _json(folder, "cases.json")
    for s, v in cases["rankings"][0]["sites"].items():
        assert f"{s} {v['errors']} of {v['cases']}" in _row(claim, "39").evidence
    _check_rows(bundle, "stard-ai")


def test_synthetic_bundle_every_item_filled_or_marked_and_values_match(synthetic_bundle):
    folder = synthetic_bundle["bundle"]
    bundle = read_bundle(folder)
    _spot_check(folder, bundle)
    tripod = checklists.fill(bundle, "tripod-ai")
    shift = _json(folder, "shift.json")
    text = _row(tripod, "20c").evidence
    assert _row(tripod, "20c").status == "filled"
    for s, info in shift["sites"].items():
        word = "material shift" if info["material"] else "flagged" if info["flagged"] else "no flagged difference"
        assert f"{s} (n={info['n']}): {info['n_tests']} tests, {word}" in text
    # items nothing in a bundle can answer stay the author's
    for item_id in ("1", "17", "18a", "19"):
        assert _row(tripod, item_id).status == "author" and _row(tripod, item_id).evidence == ""


def _copy(folder: Path, tmp_path: Path, name: str = "copy") -> Path:
    target = tmp_path / name
    shutil.copytree(folder, target)
    return target


def _edit_protocol(folder: Path, edit) -> None:
    import yaml

    path = folder / "protocol.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")


def _all_external(data: dict) -> None:
    for site in data["sites"]:
        site["role"] = "external"


def test_without_shift_json_the_shift_items_say_not_in_bundle(synthetic_bundle, tmp_path):
    # a protocol without a development site has no shift analysis: its bundle has no shift.json
    folder = _copy(synthetic_bundle["bundle"], tmp_path)
    _edit_protocol(folder, _all_external)
    (folder / "shift.json").unlink()
    bundle = read_bundle(folder)
    tripod = _check_rows(bundle, "tripod-ai")
    for item_id in ("16", "20c", "5b"):
        row = _row(tripod, item_id)
        assert row.status == "author", row
        assert row.evidence.startswith("not in bundle: shift.json is absent"), row
    claim = _check_rows(bundle, "claim")
    assert _row(claim, "13").evidence.startswith("not in bundle: shift.json is absent")
    assert "shift" not in _row(claim, "30").evidence  # robustness no longer cites a shift analysis
    # and nothing else claims shift.json as its source
    assert all("shift.json" not in r.sources or r.status == "author" for r in tripod if r.item.finder == "shift")


def test_failures_and_missing_recalibration_are_reported_as_the_files_say(synthetic_bundle, tmp_path):
    folder = _copy(synthetic_bundle["bundle"], tmp_path)
    (folder / "failures.csv").write_text(
        "site,case_id,reason\next_flat,a,unreadable image: truncated\next_flat,b,unreadable image: bad header\n"
        "dev,c,model returned NaN\n"
    )
    _edit_protocol(folder, lambda data: data.pop("calibration"))  # no calibration section: no calibration.json
    (folder / "calibration.json").unlink()
    bundle = read_bundle(folder)
    tripod = _check_rows(bundle, "tripod-ai")
    text = _row(tripod, "27a").evidence
    assert "3 case(s) could not be read or scored" in text
    assert "ext_flat: unreadable image (2)" in text and "dev: model returned NaN (1)" in text
    assert "3 case(s)" in _row(tripod, "11").evidence
    for item_id in ("12f", "24"):
        row = _row(tripod, item_id)
        assert row.status == "author" and row.evidence.startswith("not in bundle: calibration.json is absent")


def test_without_failures_csv_no_item_claims_every_case_was_scored(synthetic_bundle, tmp_path):
    # a site or combined bundle holds no failures.csv: "no case failed" would be a claim it cannot make
    folder = _copy(synthetic_bundle["bundle"], tmp_path)
    (folder / "failures.csv").unlink()
    bundle = read_bundle(folder)
    tripod = _check_rows(bundle, "tripod-ai")
    row = _row(tripod, "27a")
    assert row.status == "author" and row.evidence.startswith("not in bundle: failures.csv is absent")
    assert _row(_check_rows(bundle, "stard-ai"), "15").status == "author"
    for r in tripod:
        assert "no case failed" not in r.evidence, r
    assert "failures.csv is not in this bundle" in _row(tripod, "11").evidence


def _markdown_rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if line.startswith("| ") and len(cells) == 6 and cells[0] not in ("Item",) and not cells[0].startswith("---"):
            rows[cells[0]] = cells
    return rows


def test_report_command_writes_markdown_and_the_report_section(synthetic_bundle, tmp_path, capsys):
    folder = _copy(synthetic_bundle["bundle"], tmp_path)
    code = main(["report", str(folder), "--checklist", "tripod-ai", "--checklist", "claim", "--checklist", "claim"])
    assert code == 0
    for name, ids in (("tripod-ai", TRIPOD_IDS), ("claim", CLAIM_IDS)):
        text = (folder / f"checklist-{name}.md").read_text(encoding="utf-8")
        assert text.startswith(checklists.MARKER)
        rows = _markdown_rows(text)
        assert list(rows) == ids
        assert all(r[3] in ("filled", "partial", "author") for r in rows.values())
    assert not (folder / "checklist-stard-ai.md").exists()
    html = (folder / "report.html").read_text(encoding="utf-8")
    assert '<section id="checklists">' in html and "10. Reporting checklists" in html
    assert 'id="checklist-tripod-ai"' in html and 'id="checklist-claim"' in html
    assert html.count('<table class="checklist">') == 2
    # the bundle is still a bundle (a later run may replace it), and a second call refreshes its own files
    assert not_our_bundle(folder) is None
    assert main(["report", str(folder), "--checklist", "claim"]) == 0
    # without --checklist the report has no such section
    assert main(["report", str(folder)]) == 0
    assert '<section id="checklists">' not in (folder / "report.html").read_text(encoding="utf-8")


def test_report_command_never_replaces_a_users_file(synthetic_bundle, tmp_path, capsys):
    folder = _copy(synthetic_bundle["bundle"], tmp_path)
    out = tmp_path / "mine"
    out.mkdir()
    mine = out / "checklist-claim.md"
    mine.write_text("my own notes\n")
    code = main(["report", str(folder), "--checklist", "claim", "--checklist-out", str(out)])
    assert code == 2
    assert mine.read_text() == "my own notes\n"
    err = capsys.readouterr().err
    assert "checklist-claim.md" in err and "not a checklist written by validate" in err
    # a folder inside another results bundle is refused
    other = _copy(synthetic_bundle["bundle"], tmp_path, "other")
    assert main(["report", str(folder), "--checklist", "claim", "--checklist-out", str(other / "sub")]) == 2
    assert not (other / "sub").exists()
    # --checklist-out alone is an error, not silently ignored
    assert main(["report", str(folder), "--checklist-out", str(out)]) == 2
    # a new folder is created and filled
    assert main(["report", str(folder), "--checklist", "stard-ai", "--checklist-out", str(tmp_path / "new")]) == 0
    assert (tmp_path / "new" / "checklist-stard-ai.md").read_text().startswith(checklists.MARKER)


def test_unknown_checklist_is_bad_input(synthetic_bundle, tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "validate", "report", str(synthetic_bundle["bundle"]), "--checklist", "consort"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr and "tripod-ai" in proc.stderr and "Traceback" not in proc.stderr


# ---- the sample bundles --------------------------------------------------------------------------------


def _sample_run(name: str, tmp_path_factory) -> Path:
    root = os.environ.get("VALIDATE_SAMPLE_RUNS")
    if root:
        found = sorted(p.parent for p in Path(root).glob(f"{name}*/metrics.json"))
        if found:
            return found[0]
    folder = tmp_path_factory.mktemp(f"sample-{name}")
    text = (REPO / "protocols" / f"{name}.yaml").read_text(encoding="utf-8")
    text = text.replace("../sample_sites/", f"{REPO / 'sample_sites'}/")
    text = re.sub(r"n_bootstrap: \d+", "n_bootstrap: 50", text)
    proto = folder / f"{name}.yaml"
    proto.write_text(text, encoding="utf-8")
    out = folder / name
    code = main(["run", str(proto), "--out", str(out), "--cache", str(folder / ".cache"), "--quiet"])
    assert code in (0, 1)  # the sample protocols fail a gate on purpose
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["heart", "chest"])
def test_sample_bundles_every_item_filled_or_marked(name, tmp_path_factory):
    folder = _sample_run(name, tmp_path_factory)
    bundle = read_bundle(folder)
    _spot_check(folder, bundle)
    for g in checklists.NAMES:
        text = checklists.checklist_markdown(bundle, g)
        assert list(_markdown_rows(text)) == [i.id for i in GUIDELINES[g].items]
    tripod = checklists.fill(bundle, "tripod-ai")
    if name == "heart":
        # the synthesis across the external sites is the heterogeneity evidence (12d, 23b)
        syn = _json(folder, "metrics.json")["synthesis"]["metrics"]["auroc"]
        assert _row(tripod, "23b").status == "filled"
        assert f"AUROC pooled {_est(syn)}" in _row(tripod, "23b").evidence
        assert f"tau²={syn['tau2']:.3f}" in _row(tripod, "23b").evidence
    else:
        # chest is an imaging protocol: CLAIM's acquisition item cites the equipment columns shift.json tested
        equipment = _json(folder, "shift.json")["columns"]["equipment"]
        claim = checklists.fill(bundle, "claim")
        assert equipment and all(e in _row(claim, "13").evidence.replace("\\_", "_") for e in equipment)
