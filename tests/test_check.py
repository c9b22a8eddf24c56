"""`validate check`: every bad input of issue 2 item 6 gets a message naming file, line/row, field and
what was expected, and exit code 2; a good protocol exits 0."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from validate.cli import main
from validate.cohort import band_labels, derive_subgroups, load_cohorts
from validate.errors import InputErrors
from validate.protocol import json_schema, load_protocol

TABULAR = """\
name: toy
version: "1"
task: binary
classes: [absent, present]
positive_class: present
input:
  kind: tabular
  features: [age, chol]
sites:
  - id: dev
    name: Development hospital
    manifest: dev.csv
    role: development
  - id: ext
    manifest: ext.csv
    role: external
attributes: [sex, age]
subgroups:
  - {name: sex, column: sex}
  - {name: age_band, column: age, bands: [40, 60]}
  - {name: sex_x_age, intersection: [sex, age_band]}
gates:
  - metric: auroc
    scope: each_site
    min: 0.7
    on: ci_low
"""

DEV = """\
case_id,patient_id,label,age,chol,sex
d1,p1,present,35,200,F
d2,p2,absent,45,,M
d3,p2,present,61,250,F
d4,p4,0,80,180,M
"""

EXT = """\
case_id,label,age,chol,sex
e1,1,52,210,M
e2,absent,39,220,F
"""


def write_tabular(tmp_path: Path, protocol: str = TABULAR, dev: str = DEV, ext: str = EXT) -> Path:
    (tmp_path / "dev.csv").write_text(dev)
    (tmp_path / "ext.csv").write_text(ext)
    path = tmp_path / "protocol.yaml"
    path.write_text(protocol)
    return path


def run_check(capsys, *paths) -> tuple[int, str]:
    code = main(["check", *map(str, paths)])
    out = capsys.readouterr()
    return code, out.out + out.err


def line_of(text: str, needle: str) -> int:
    for i, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return i
    raise AssertionError(needle)


def test_good_protocol_passes(tmp_path, capsys):
    path = write_tabular(tmp_path)
    code, out = run_check(capsys, path)
    assert code == 0, out
    assert "dev" in out and "n=4" in out and "prevalence 50.0%" in out


def test_unknown_key_names_nearest(tmp_path, capsys):
    text = TABULAR.replace("    role: external", "    rol: external")
    path = write_tabular(tmp_path, text)
    code, out = run_check(capsys, path)
    assert code == 2
    assert f"{path}, line {line_of(text, 'rol: external')}" in out
    assert "sites[1].rol" in out and "unknown key `rol`" in out and "did you mean `role`" in out


def test_wrong_type_and_value(tmp_path, capsys):
    text = TABULAR.replace("    on: ci_low", "    on: lower") + "metrics:\n  n_bootstrap: many\n"
    path = write_tabular(tmp_path, text)
    code, out = run_check(capsys, path)
    assert code == 2
    assert f"line {line_of(text, 'on: lower')}: gates[0].on: invalid value 'lower'" in out
    assert "'estimate', 'ci_low', 'ci_high', 'pi_low' or 'pi_high'" in out
    assert f"line {line_of(text, 'n_bootstrap')}: metrics.n_bootstrap" in out and "integer" in out


def test_yaml_on_key_is_not_a_boolean(tmp_path):
    # YAML 1.1 reads `on` as True; the gate key must survive as the string "on"
    protocol = load_protocol(write_tabular(tmp_path))
    assert protocol.gates[0].on == "ci_low"


def test_missing_manifest_and_image_root(tmp_path, capsys):
    text = TABULAR.replace("manifest: ext.csv", "manifest: missing.csv")
    path = write_tabular(tmp_path, text)
    code, out = run_check(capsys, path)
    assert code == 2
    assert f"{tmp_path / 'missing.csv'}" in out and "manifest not found" in out and "sites[1].manifest" in out

    img = image_protocol(tmp_path, root="no_such_folder")
    code, out = run_check(capsys, img)
    assert code == 2
    assert "image root not found" in out and "sites[0].image_root" in out
    assert f"line {line_of(img.read_text(), 'image_root')}" in out


def test_manifest_without_required_column(tmp_path, capsys):
    path = write_tabular(tmp_path, ext="case_id,label,age,sex\ne1,1,52,M\n")
    code, out = run_check(capsys, path)
    assert code == 2
    assert f"{tmp_path / 'ext.csv'}, line 1: chol: required column `chol` is missing" in out


def test_label_outside_classes(tmp_path, capsys):
    path = write_tabular(tmp_path, ext=EXT + "e3,maybe,50,200,F\n")
    code, out = run_check(capsys, path)
    assert code == 2
    assert f"{tmp_path / 'ext.csv'}, line 4, row 3: label: label 'maybe' is not a declared class" in out
    assert "['absent', 'present']" in out


def test_bad_number_date_and_empty_id_each_name_their_row(tmp_path, capsys):
    ext = "case_id,label,age,chol,sex,acquired_at\ne1,1,52,high,M,2024-01-03\n,absent,39,220,F,last tuesday\n"
    path = write_tabular(tmp_path, ext=ext)
    code, out = run_check(capsys, path)
    assert code == 2
    csv = tmp_path / "ext.csv"
    assert f"{csv}, line 2, row 1: chol: value 'high' is not a number" in out
    assert f"{csv}, line 3, row 2: case_id: empty case_id" in out
    assert f"{csv}, line 3, row 2: acquired_at: date 'last tuesday' is not an ISO date" in out


def test_only_the_first_rows_of_a_bad_column_are_reported(tmp_path, capsys):
    from validate.cohort import ROWS_REPORTED

    rows = "".join(f"e{i},1,52,x{i},M\n" for i in range(ROWS_REPORTED + 5))
    code, out = run_check(capsys, write_tabular(tmp_path, ext="case_id,label,age,chol,sex\n" + rows))
    assert code == 2
    assert out.count("is not a number") == ROWS_REPORTED
    assert f"value 'x{ROWS_REPORTED - 1}'" in out and f"value 'x{ROWS_REPORTED}'" not in out


def test_duplicate_case_id(tmp_path, capsys):
    path = write_tabular(tmp_path, ext=EXT + "e1,0,50,200,F\n")
    code, out = run_check(capsys, path)
    assert code == 2
    assert "line 4, row 3: case_id: duplicate case_id 'e1' (first at row 1)" in out


def test_subgroup_column_absent_at_one_site(tmp_path, capsys):
    path = write_tabular(tmp_path, ext="case_id,label,age,chol\ne1,1,52,210\n")
    code, out = run_check(capsys, path)
    assert code == 2
    assert f"{tmp_path / 'ext.csv'}, line 1: sex: required column `sex` is missing" in out


def test_subgroup_column_empty_at_one_site(tmp_path, capsys):
    path = write_tabular(tmp_path, ext="case_id,label,age,chol,sex\ne1,1,52,210,\ne2,0,40,200,\n")
    code, out = run_check(capsys, path)
    assert code == 2
    assert "subgroup `sex` uses column `sex`, which is empty at site `ext`" in out


def test_empty_site(tmp_path, capsys):
    path = write_tabular(tmp_path, ext="case_id,label,age,chol,sex\n")
    code, out = run_check(capsys, path)
    assert code == 2
    assert "site `ext` has no cases" in out and str(tmp_path / "ext.csv") in out


def test_non_numeric_feature(tmp_path, capsys):
    path = write_tabular(tmp_path, ext=EXT + "e3,0,50,high,F\n")
    code, out = run_check(capsys, path)
    assert code == 2
    assert "line 4, row 3: chol: value 'high' is not a number" in out


def image_protocol(tmp_path: Path, root: str = "images", manifest_rows: list[str] | None = None) -> Path:
    rows = manifest_rows or ["c1,normal,a.png", "c2,pneumonia,sub/b.png"]
    (tmp_path / "images" / "sub").mkdir(parents=True, exist_ok=True)
    for name in ("a.png", "sub/b.png"):
        Image.new("L", (4, 4), 128).save(tmp_path / "images" / name)
    (tmp_path / "img.csv").write_text("case_id,label,image\n" + "\n".join(rows) + "\n")
    text = textwrap.dedent(f"""\
        name: imgs
        task: binary
        classes: [normal, pneumonia]
        input: {{kind: image, size: [28, 28], channels: 1}}
        sites:
          - id: site_a
            manifest: img.csv
            image_root: {root}
            role: development
        """)
    path = tmp_path / "img.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("bad", ["../outside.png", "sub/../../outside.png", "/etc/passwd"])
def test_image_path_escaping_root(tmp_path, capsys, bad):
    (tmp_path / "outside.png").write_bytes(b"x")
    path = image_protocol(tmp_path, manifest_rows=["c1,normal,a.png", f"c2,normal,{bad}"])
    code, out = run_check(capsys, path)
    assert code == 2
    assert f"{tmp_path / 'img.csv'}, line 3, row 2: image: image path '{bad}' points outside the image root" in out


def test_symlink_escaping_root(tmp_path, capsys):
    (tmp_path / "secret.png").write_bytes(b"x")
    path = image_protocol(tmp_path, manifest_rows=["c1,normal,a.png", "c2,normal,link.png"])
    (tmp_path / "images" / "link.png").symlink_to(tmp_path / "secret.png")
    code, out = run_check(capsys, path)
    assert code == 2 and "points outside the image root" in out


def test_image_protocol_ok_and_missing_file_is_a_warning(tmp_path, capsys):
    path = image_protocol(tmp_path, manifest_rows=["c1,normal,a.png", "c2,pneumonia,gone.png"])
    code, out = run_check(capsys, path)
    assert code == 0
    assert "warning:" in out and "row 2 (line 3): image file not found" in out


def test_all_problems_reported_at_once(tmp_path, capsys):
    text = TABULAR.replace("    role: external", "    rol: external")
    path = write_tabular(tmp_path, text)
    (tmp_path / "b").mkdir()
    other = write_tabular(tmp_path / "b", ext=EXT + "e1,0,50,200,F\n")
    code, out = run_check(capsys, path, other)
    assert code == 2
    assert "unknown key `rol`" in out and "duplicate case_id" in out and "2 problem(s) found" in out


def test_intersection_and_gate_scope_references(tmp_path, capsys):
    text = TABULAR.replace("intersection: [sex, age_band]", "intersection: [sex, age_bnd]").replace(
        "scope: each_site", "scope: worst_subgroup:ethnicity"
    )
    path = write_tabular(tmp_path, text)
    code, out = run_check(capsys, path)
    assert code == 2
    assert f"line {line_of(text, 'age_bnd')}: subgroups[2].intersection: intersection names `age_bnd`" in out
    assert f"line {line_of(text, 'ethnicity')}: gates[0].scope: scope names subgroup `ethnicity`" in out


def test_not_yaml_and_not_found(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n  task: [binary\n")
    code, out = run_check(capsys, bad, tmp_path / "nope.yaml")
    assert code == 2
    assert f"{bad}, line" in out and "not valid YAML" in out
    assert f"{tmp_path / 'nope.yaml'}: protocol file not found" in out


def test_no_traceback_from_the_console_script(tmp_path):
    path = write_tabular(tmp_path, ext="case_id,label,age,chol,sex\n")
    proc = subprocess.run([sys.executable, "-m", "validate", "check", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "has no cases" in proc.stderr


def test_subgroups_derived_with_bands_and_intersections(tmp_path):
    protocol = load_protocol(write_tabular(tmp_path))
    cohorts = load_cohorts(protocol)
    dev = cohorts[0].cases
    groups = derive_subgroups(dev, protocol)
    assert list(groups["age_band"]) == ["<40", "40-59", ">=60", ">=60"]
    assert list(groups["sex_x_age"]) == ["F & <40", "M & 40-59", "F & >=60", "M & >=60"]
    # label spellings: class names and indices both map to the positive-class indicator
    assert list(dev["y"]) == [1, 0, 1, 0]
    assert list(dev["patient_id"]) == ["p1", "p2", "p2", "p4"]
    assert list(cohorts[1].cases["patient_id"]) == ["e1", "e2"]  # defaults to case_id
    assert band_labels([45.5]) == ["<45.5", ">=45.5"]


def test_schema_file_is_current(repo):
    committed = json.loads((repo / "protocols" / "schema.json").read_text())
    assert committed == json.loads(json.dumps(json_schema())), "run `make schema` to regenerate protocols/schema.json"


def test_sample_protocols_check_clean(repo, capsys):
    paths = sorted((repo / "protocols").glob("*.yaml"))
    if not paths:
        pytest.skip("no sample protocols yet")
    code, out = run_check(capsys, *paths)
    assert code == 0, out
    assert re.search(r"cleveland\s+development", out) or "development" in out


# ---- issue #12: identifiers and categories read as written; loader bounds ------------------------


def test_patient_ids_are_text_as_written(tmp_path):
    # "007" and "7" are two patients; two 19-digit ids one apart stay two (as floats they are equal)
    dev = (
        "case_id,patient_id,label,age,chol,sex\n"
        "1,007,present,35,200,F\n2,7,absent,45,,M\n3,1234567890123456789,present,61,250,F\n"
        "4,1234567890123456788,0,80,180,M\n5,,1,50,190,F\n6,007,0,52,191,M\n"
    )
    cohorts = load_cohorts(load_protocol(write_tabular(tmp_path, dev=dev)))
    cases = cohorts[0].cases
    assert cases["patient_id"].nunique() == 5
    assert list(cases["patient_id"]) == ["007", "7", "1234567890123456789", "1234567890123456788", "5", "007"]
    assert list(cases["case_id"]) == ["1", "2", "3", "4", "5", "6"]
    assert set(cases["site"]) == {"dev"}


def test_categorical_subgroup_codes_stay_text(tmp_path):
    # a categorical subgroup of digit codes: "007" and "7" are different groups; the banded column stays numeric
    text = TABULAR.replace("attributes: [sex, age]", "attributes: [sex, age, unit]").replace(
        "  - {name: sex, column: sex}\n", "  - {name: sex, column: sex}\n  - {name: unit, column: unit}\n"
    )
    dev = (
        "case_id,patient_id,label,age,chol,sex,unit\n"
        "d1,p1,present,35,200,F,007\nd2,p2,absent,45,,M,7\nd3,p3,present,61,250,F,07\nd4,p4,0,80,180,M,\n"
    )
    ext = "case_id,label,age,chol,sex,unit\ne1,1,52,210,M,7\ne2,absent,39,220,F,7\n"
    protocol = load_protocol(write_tabular(tmp_path, text, dev=dev, ext=ext))
    cases = load_cohorts(protocol)[0].cases
    assert list(cases["unit"][:3]) == ["007", "7", "07"] and cases["unit"].isna().tolist() == [False] * 3 + [True]
    assert cases["age"].dtype == "float64" and list(cases["age"]) == [35.0, 45.0, 61.0, 80.0]
    groups = derive_subgroups(cases, protocol)
    assert list(groups["unit"]) == ["007", "7", "07", "missing"]


def test_duplicate_manifest_header_is_an_error(tmp_path, capsys):
    path = write_tabular(tmp_path, ext="case_id,label,age,chol,sex,label\ne1,1,52,210,M,0\n")
    code, out = run_check(capsys, path)
    assert code == 2
    assert f"{tmp_path / 'ext.csv'}, line 1: label: column `label` appears twice in the header (columns 2 and 6)" in out


def test_duplicate_yaml_keys_name_both_lines(tmp_path):
    text = TABULAR.replace("    min: 0.7\n", "    min: 0.7\n    min: 0.1\n")
    with pytest.raises(InputErrors) as info:
        load_protocol(write_tabular(tmp_path, text))
    (problem,) = info.value.problems
    assert (problem.line, problem.field) == (line_of(text, "min: 0.1"), "min")
    assert (
        problem.message == f"duplicate key `min`: first at line {line_of(text, 'min: 0.7')}, "
        f"again at line {line_of(text, 'min: 0.1')}"
    )


def test_merge_keys_are_not_duplicates(tmp_path):
    text = (
        TABULAR.replace("gates:\n  - metric: auroc", "gates:\n  - &g\n    metric: auroc")
        + "  - <<: *g\n    scope: overall\n    min: 0.6\n"
    )
    protocol = load_protocol(write_tabular(tmp_path, text))
    assert [(g.metric, g.scope, g.min, g.on) for g in protocol.gates] == [
        ("auroc", "each_site", 0.7, "ci_low"),
        ("auroc", "overall", 0.6, "ci_low"),
    ]
    assert protocol.line_of("gates", 1, "scope") == line_of(text, "scope: overall")


@pytest.mark.parametrize("name", ["a", "A-1_b.c", "x" * 100, "chest", "v1.0"])
def test_safe_names_accepted(tmp_path, name):
    assert load_protocol(write_tabular(tmp_path, TABULAR.replace("name: toy", f"name: {name}"))).name == name


def test_preflight_accepts_every_gate_kind(tmp_path):
    # valid gates of every kind the judge knows: plain, dotted, after calibration, subgroup, gap, shift counts
    from validate.preflight import check_protocol_gates

    gates = """\
gates:
  - {metric: auroc, scope: each_site, min: 0.7, on: ci_low}
  - {metric: hosmer_lemeshow.p_value, scope: overall, min: 0.05}
  - {metric: target_sensitivity.specificity, scope: each_site, min: 0.3, on: ci_low}
  - {metric: ece, scope: each_site, max: 0.1, calibration: temperature}
  - {metric: ece, scope: overall, max: 0.1, calibration: none, on: ci_high}
  - {metric: auroc, scope: worst_subgroup:age_band, min: 0.6}
  - {metric: brier, scope: each_subgroup:sex_x_age, max: 0.3, on: ci_high}
  - {metric: sensitivity, scope: subgroup_gap:sex, max: 0.2, on: ci_high}
  - {metric: drift_windows_flagged, scope: each_site, max: 0}
  - {metric: shift_material_findings, scope: overall, max: 3}
"""
    protocol = load_protocol(write_tabular(tmp_path, TABULAR[: TABULAR.index("gates:")] + gates))
    check_protocol_gates(protocol)
    assert len(protocol.gates) == 10


def test_duplicate_keys_compared_as_read(tmp_path):
    # `~` and `null` are the same key once read, as are 16 and 0x10: the later one would silently win
    path = tmp_path / "p.yaml"
    path.write_text("name: toy\n~: 1\nnull: 2\n16: a\n0x10: b\n")
    with pytest.raises(InputErrors) as info:
        load_protocol(path)
    assert [(p.line, p.message) for p in info.value.problems] == [
        (3, "duplicate key `null`: first at line 2, again at line 3"),
        (5, "duplicate key `0x10`: first at line 4, again at line 5"),
    ]
