"""Hostile protocols and manifests at the command line: `validate check` (and `validate run` where a run
used to start) exits 2 with a message naming the file, the line, the field and, where one is close,
the nearest valid name; and writes nothing.

Issue #12: duplicate keys, gates a run cannot answer, non-finite bounds, nesting and alias bombs,
unsafe names, identifier columns as attributes, duplicate CSV headers; then every bad input of
tests/test_check.py, ported to the command line.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from PIL import Image

from tests.adversarial.harness import Unchanged, run_cli
from tests.test_check import DEV, EXT, write_tabular

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
calibration:
  methods: [temperature, platt]
gates:
  - metric: auroc
    scope: each_site
    min: 0.7
    on: ci_low
"""


def workspace(tmp_path: Path, protocol: str = TABULAR, dev: str = DEV, ext: str = EXT) -> Path:
    """The manifests of tests/test_check.py beside ``protocol`` (this file's default declares calibration)."""
    return write_tabular(tmp_path, protocol, dev, ext)


def line_of(text: str, needle: str, nth: int = 1) -> int:
    seen = 0
    for i, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            seen += 1
            if seen == nth:
                return i
    raise AssertionError(needle)


def check(tmp_path: Path, *paths, timeout: float = 600):
    """`validate check PATHS` in tmp_path; asserts exit 2 and that nothing under tmp_path changed."""
    with Unchanged(tmp_path):
        r = run_cli("check", *paths, cwd=tmp_path, timeout=timeout)
    assert r.code == 2, r.text
    assert "problem(s) found" in r.err
    return r


def check_each(tmp_path: Path, cases: dict, *, dev: str = DEV, ext: str = EXT) -> None:
    """One `validate check` over one protocol per case (each in its own folder): exit 2, nothing changed,
    and for each case its own message (``{P}`` its protocol path, ``{L}`` the line of its needle) and
    no other problem (one problem per case). ``cases``: id -> (protocol text, needle, message)."""
    paths, expected = [], {}
    for cid, (text, needle, message) in cases.items():
        path = workspace(_folder(tmp_path, cid), text, dev=dev, ext=ext)
        paths.append(path)
        expected[cid] = message.replace("{P}", str(path)).replace("{L}", str(line_of(text, needle)))
    r = check(tmp_path, *paths)
    missing = {cid: m for cid, m in expected.items() if m not in r.err}
    assert not missing, (missing, r.err)
    assert f"validate check: {len(cases)} problem(s) found" in r.err, r.err


def _folder(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    return folder


def run(tmp_path: Path, path: Path):
    """`validate run PATH`; exit 2 before anything is scored: no bundle, no cache, nothing changed."""
    with Unchanged(tmp_path):
        r = run_cli("run", path, "--runs-dir", tmp_path / "runs", cwd=tmp_path)
    assert r.code == 2, r.text
    assert not (tmp_path / "runs").exists() and not (tmp_path / ".cache").exists()
    return r


def gate(text: str) -> str:
    """TABULAR with its gate replaced by ``text`` (a YAML gate mapping body, two-space indented)."""
    head = TABULAR[: TABULAR.index("gates:\n")]
    return head + "gates:\n  - " + textwrap.indent(textwrap.dedent(text), "    ").lstrip()


# ---- 1. duplicate keys -----------------------------------------------------------------------------


def test_duplicate_top_level_key(tmp_path):
    text = TABULAR + "gates:\n  - {metric: brier, max: 1.0}\n"
    path = workspace(tmp_path, text)
    r = check(tmp_path, path)
    first, again = line_of(text, "gates:"), line_of(text, "gates:", 2)
    assert f"{path}, line {again}: gates: duplicate key `gates`: first at line {first}, again at line {again}" in r.err


def test_duplicate_key_in_a_gate(tmp_path):
    text = TABULAR.replace("    min: 0.7\n", "    min: 0.7\n    min: 0.1\n")
    path = workspace(tmp_path, text)
    r = check(tmp_path, path)
    first, again = line_of(text, "min: 0.7"), line_of(text, "min: 0.1")
    assert f"{path}, line {again}: min: duplicate key `min`: first at line {first}, again at line {again}" in r.err


def test_duplicate_keys_at_every_level_all_reported(tmp_path):
    text = (
        TABULAR.replace("    role: external\n", "    role: external\n    role: development\n")
        .replace("  kind: tabular\n", "  kind: tabular\n  kind: image\n")
        .replace("{name: sex, column: sex}", "{name: sex, column: sex, name: sex2}")
    )
    path = workspace(tmp_path, text)
    r = check(tmp_path, path)
    assert (
        f"line {line_of(text, 'role: development', 2)}: role: duplicate key `role`: first at line "
        f"{line_of(text, 'role: external')}" in r.err
    )
    assert f"line {line_of(text, 'kind: image')}: kind: duplicate key `kind`" in r.err
    assert f"line {line_of(text, 'sex2')}: name: duplicate key `name`" in r.err
    assert "3 problem(s) found" in r.err


def test_duplicate_key_refused_by_run_too(tmp_path):
    path = workspace(tmp_path, TABULAR.replace("    min: 0.7\n", "    min: 0.7\n    min: 0.1\n"))
    r = run(tmp_path, path)
    assert "duplicate key `min`" in r.err


# ---- 2. gates a run could not answer ---------------------------------------------------------------


def test_misspelt_gate_metric_names_the_nearest(tmp_path):
    text = TABULAR.replace("metric: auroc", "metric: aurc")
    path = workspace(tmp_path, text)
    r = check(tmp_path, path)
    assert (
        f"{path}, line {line_of(text, 'aurc')}: gates[0].metric: gate `aurc each_site min 0.7`: "
        "`aurc` is not a binary metric; did you mean `auroc`?" in r.err
    )
    assert "ok: no problems found" not in r.out


def test_misspelt_gate_metric_refused_by_run_before_scoring(tmp_path):
    path = workspace(tmp_path, TABULAR.replace("metric: auroc", "metric: aurc"))
    r = run(tmp_path, path)
    assert f"{path}, line" in r.err and "did you mean `auroc`?" in r.err


def test_unknown_calibration_method_names_the_nearest(tmp_path):
    text = TABULAR.replace("methods: [temperature, platt]", "methods: [temperature, plat]")
    path = workspace(tmp_path, text)
    r = check(tmp_path, path)
    assert (
        f"{path}, line {line_of(text, 'plat]')}: calibration.methods[1]: unknown calibration method 'plat'; "
        "did you mean 'platt'?" in r.err
    )


def test_calibration_method_for_another_task(tmp_path):
    text = TABULAR.replace("methods: [temperature, platt]", "methods: [temperature, matrix]")
    path = workspace(tmp_path, text)
    r = check(tmp_path, path)
    assert "calibration.methods[1]: calibration method 'matrix' does not apply to a binary task" in r.err


def test_gate_after_a_calibration_not_fitted(tmp_path):
    text = gate("metric: ece\nscope: each_site\nmax: 0.1\ncalibration: isotonic\n")
    path = workspace(tmp_path, text)
    r = check(tmp_path, path)
    assert (
        f"line {line_of(text, 'calibration: isotonic')}: gates[0].calibration: gate is judged after calibration "
        "`isotonic`, which calibration.methods does not fit" in r.err
    )


def test_gate_scope_naming_a_missing_subgroup(tmp_path):
    text = TABULAR.replace("scope: each_site", "scope: worst_subgroup:agee_band")
    path = workspace(tmp_path, text)
    r = check(tmp_path, path)
    assert (
        f"{path}, line {line_of(text, 'agee_band')}: gates[0].scope: scope names subgroup `agee_band`, which is "
        "not declared; did you mean `worst_subgroup:age_band`?" in r.err
    )


def test_gate_scope_of_unknown_kind(tmp_path):
    text = TABULAR.replace("scope: each_site", "scope: every_site")
    path = workspace(tmp_path, text)
    r = check(tmp_path, path)
    assert f"line {line_of(text, 'every_site')}: gates[0].scope: scope must be one of overall, each_site" in r.err


def test_gap_gate_on_a_metric_without_a_gap(tmp_path):
    text = gate("metric: calibration_slope\nscope: subgroup_gap:sex\nmax: 0.2\n")
    path = workspace(tmp_path, text)
    r = check(tmp_path, path)
    assert (
        f"line {line_of(text, 'calibration_slope')}: gates[0].metric: gate `calibration_slope subgroup_gap:sex "
        "max 0.2`: the subgroup analysis has no gap in `calibration_slope` for a binary task" in r.err
    )
    assert "expected one of auroc, auprc, brier" in r.err


def test_gap_gate_metric_misspelt(tmp_path):
    path = workspace(tmp_path, gate("metric: sensitivty\nscope: subgroup_gap:sex\nmax: 0.2\n"))
    r = check(tmp_path, path)
    assert "no gap in `sensitivty` for a binary task; did you mean `sensitivity`?" in r.err


def test_calibrated_gate_on_a_subgroup_scope(tmp_path):
    text = gate("metric: ece\nscope: each_subgroup:sex\nmax: 0.1\ncalibration: platt\n")
    path = workspace(tmp_path, text)
    r = check(tmp_path, path)
    assert (
        f"line {line_of(text, 'each_subgroup')}: gates[0].scope: gate `ece each_subgroup:sex max 0.1`: scope "
        "each_subgroup cannot be judged after calibration" in r.err
    )


def test_shift_count_gate_on_a_subgroup_scope(tmp_path):
    text = gate("metric: drift_windows_flagged\nscope: each_subgroup:sex\nmax: 0\n")
    path = workspace(tmp_path, text)
    r = check(tmp_path, path)
    assert (
        f"line {line_of(text, 'each_subgroup')}: gates[0].scope: gate `drift_windows_flagged each_subgroup:sex "
        "max 0.0`: drift_windows_flagged is counted per site by the shift analysis" in r.err
    )


def test_shift_count_gate_without_a_development_site(tmp_path):
    text = gate("metric: shift_material_findings\nscope: each_site\nmax: 0\n").replace(
        "    role: development\n", "    role: calibration\n"
    )
    path = workspace(tmp_path, text)
    r = check(tmp_path, path)
    assert (
        f"line {line_of(text, 'shift_material_findings')}: gates[0].metric: gate `shift_material_findings "
        "each_site max 0.0`: shift_material_findings needs the shift analysis" in r.err
    )


def test_interval_bound_of_a_metric_without_an_interval(tmp_path):
    text = gate("metric: hosmer_lemeshow.p_value\nscope: each_site\nmin: 0.05\non: ci_low\n")
    path = workspace(tmp_path, text)
    r = check(tmp_path, path)
    assert (
        f"line {line_of(text, 'on: ci_low')}: gates[0].on: gate `hosmer_lemeshow.p_value each_site min 0.05`: "
        "`hosmer_lemeshow.p_value` has no confidence interval (expected on: estimate)" in r.err
    )


# ---- 3. non-finite numbers, bands ------------------------------------------------------------------


def test_non_finite_gate_bounds(tmp_path):
    bounds = {
        "nan": "min: .nan",
        "inf": "min: .inf",
        "minus-inf": "max: -.inf",
        "NaN": "max: .NaN",
        "overflow": "min: 1e999",
    }
    check_each(
        tmp_path,
        {
            cid: (
                TABULAR.replace("min: 0.7", b),
                b,
                f"{{P}}, line {{L}}: gates[0].{b.split(':')[0]}: Input should be a finite number",
            )
            for cid, b in bounds.items()
        },
    )


def test_non_finite_bound_refused_by_run(tmp_path):
    path = workspace(tmp_path, TABULAR.replace("min: 0.7", "min: .nan"))
    r = run(tmp_path, path)
    assert "gates[0].min: Input should be a finite number" in r.err


def test_boolean_gate_bound(tmp_path):
    text = TABULAR.replace("min: 0.7", "min: true")
    path = workspace(tmp_path, text)
    r = check(tmp_path, path)
    assert f"line {line_of(text, 'min: true')}: gates[0].min: a bound is a number, not true" in r.err


def test_bad_bands(tmp_path):
    bands = {
        "nan": ("[.nan]", "subgroups[1].bands[0]: Input should be a finite number"),
        "inf": ("[40, .inf]", "subgroups[1].bands[1]: Input should be a finite number"),
        "decreasing": ("[60, 40]", "subgroups[1]: bands must be one or more strictly increasing cut points"),
        "repeated": ("[40, 40]", "subgroups[1]: bands must be one or more strictly increasing cut points"),
    }
    check_each(
        tmp_path,
        {
            cid: (TABULAR.replace("bands: [40, 60]", f"bands: {b}"), "age_band, column", f"{{P}}, line {{L}}: {m}")
            for cid, (b, m) in bands.items()
        },
    )


# ---- 4. nesting and alias bombs --------------------------------------------------------------------


def test_deep_nesting(tmp_path):
    path = workspace(tmp_path, "name: toy\ndescription: " + "[" * 20000 + "]" * 20000 + "\n")
    r = check(tmp_path, path)
    assert f"{path}, line 2: nested too deeply (more than 50 levels)" in r.err


def test_deep_block_nesting(tmp_path):
    body = "".join("  " * i + f"k{i}:\n" for i in range(300)) + "  " * 300 + "x: 1\n"
    path = workspace(tmp_path, body)
    r = check(tmp_path, path)
    assert f"{path}, line 50: nested too deeply" in r.err


BILLION_LAUGHS = """\
name: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
description: [*i,*i,*i,*i,*i,*i,*i,*i,*i]
"""


def test_alias_bomb(tmp_path):
    path = workspace(tmp_path, BILLION_LAUGHS)
    r = check(tmp_path, path, timeout=60)  # used to run past 60 s
    assert f"{path}, line" in r.err and "aliases expand to more than 100000 values" in r.err


def test_alias_cycle(tmp_path):
    path = workspace(tmp_path, "name: toy\ndescription: &a [1, *a]\n")
    r = check(tmp_path, path)
    assert f"{path}, line 2: an alias refers to a node that contains it (a cycle)" in r.err


def test_aliases_within_bounds_still_work(tmp_path):
    # a shared gate body through an alias and a merge key is a valid protocol
    text = (
        TABULAR.replace("gates:\n  - metric: auroc", "gates:\n  - &g\n    metric: auroc")
        + "  - <<: *g\n    scope: overall\n"
    )
    path = workspace(tmp_path, text)
    with Unchanged(tmp_path):
        r = run_cli("check", path, cwd=tmp_path)
    assert r.code == 0, r.text
    assert "2 gate(s)" in r.out


# ---- 5. names that become folder names ------------------------------------------------------------

# id -> (the name as written in YAML, the string it reads as)
UNSAFE_NAMES = {
    "dotdot": ('".."', ".."),
    "dot": ('"."', "."),
    "slash": ('"a/b"', "a/b"),
    "backslash": ('"a\\\\b"', "a\\b"),
    "hidden": ('".hidden"', ".hidden"),
    "control": ('"a\\x01b"', "a\x01b"),
    "nul": ('"a\\0b"', "a\x00b"),
    "newline": ('"name\\n"', "name\n"),
    "empty": ('""', ""),
    "long": ("x" * 101, "x" * 101),
}


def test_unsafe_protocol_names(tmp_path):
    check_each(
        tmp_path,
        {
            cid: (
                TABULAR.replace("name: toy", f"name: {text}"),
                "name:",
                f"{{P}}, line {{L}}: name: {value!r}"
                " cannot be a protocol name: it becomes a folder or file name (letters, digits, "
                "_ . - only, not starting with a dot, at most 100 characters)",
            )
            for cid, (text, value) in UNSAFE_NAMES.items()
        },
    )


def test_dotdot_protocol_name_refused_by_run(tmp_path):
    path = workspace(tmp_path, TABULAR.replace("name: toy", 'name: ".."'))
    r = run(tmp_path, path)
    assert "'..' cannot be a protocol name" in r.err


def test_unsafe_site_ids(tmp_path):
    ids = {"dotdot": "..", "parent": "../x", "hidden": ".dev"}
    check_each(
        tmp_path,
        {
            cid: (
                TABULAR.replace("id: dev", f'id: "{i}"'),
                "id: ",
                f"{{P}}, line {{L}}: sites[0].id: {i!r} cannot be a site id",
            )
            for cid, i in ids.items()
        },
    )


def test_unsafe_subgroup_name(tmp_path):
    text = TABULAR.replace("{name: sex, column: sex}", '{name: "../sex", column: sex}')
    path = workspace(tmp_path, text)
    r = check(tmp_path, path)
    assert f"line {line_of(text, '../sex')}: subgroups[0].name: '../sex' cannot be a subgroup name" in r.err


# ---- 6. identifier columns as attributes -----------------------------------------------------------


def test_identifier_columns_as_attributes(tmp_path):
    cases = {
        "case-id": ("columns: {case_id: mrn}\n", "attributes: [sex, age, mrn]", "attributes[2]", "mrn"),
        "patient-id": ("", "attributes: [sex, patient_id]", "attributes[1]", "patient_id"),
        "renamed-patient-id": (
            "columns: {patient_id: nhs_number}\n",
            "attributes: [nhs_number, sex, age]",
            "attributes[0]",
            "nhs_number",
        ),
    }
    check_each(
        tmp_path,
        {
            cid: (
                TABULAR.replace("attributes: [sex, age]", ids + attrs),
                "attributes:",
                f"{{P}}, line {{L}}: {field}: `{column}` is the identifier column",
            )
            for cid, (ids, attrs, field, column) in cases.items()
        },
        dev="case_id,mrn,patient_id,nhs_number,label,age,chol,sex\nd1,m1,p1,n1,present,35,200,F\n"
        "d2,m2,p2,n2,absent,45,,M\n",
        ext="case_id,mrn,patient_id,nhs_number,label,age,chol,sex\ne1,m3,p3,n3,1,52,210,M\n"
        "e2,m4,p4,n4,absent,39,220,F\n",
    )


def test_identifier_column_as_subgroup_column(tmp_path):
    text = TABULAR.replace("{name: sex, column: sex}", "{name: sex, column: case_id}")
    path = workspace(tmp_path, text)
    r = check(tmp_path, path)
    assert (
        f"line {line_of(text, 'column: case_id')}: subgroups[0].column: `case_id` is the identifier column "
        "(columns.case_id)" in r.err
    )


def test_identifier_attribute_refused_by_run(tmp_path):
    path = workspace(tmp_path, TABULAR.replace("attributes: [sex, age]", "attributes: [sex, age, patient_id]"))
    r = run(tmp_path, path)
    assert "`patient_id` is the identifier column" in r.err


def test_attributes_overwriting_standard_columns(tmp_path):
    check_each(
        tmp_path,
        {
            attr: (
                TABULAR.replace("attributes: [sex, age]", f"attributes: [sex, age, {attr}]"),
                "attributes:",
                f"{{P}}, line {{L}}: attributes[2]: `{attr}` is the name of a standard case column",
            )
            for attr in ("site", "y")
        },
        dev=DEV.replace("sex\n", "sex,site,y\n").replace(",F\n", ",F,s,1\n").replace(",M\n", ",M,s,0\n"),
        ext=EXT.replace("sex\n", "sex,site,y\n").replace(",F\n", ",F,s,1\n").replace(",M\n", ",M,s,0\n"),
    )


# ---- 7. manifests ----------------------------------------------------------------------------------


def test_duplicate_manifest_header(tmp_path):
    path = workspace(tmp_path, ext="case_id,label,age,chol,sex,label\ne1,1,52,210,M,0\n")
    r = check(tmp_path, path)
    assert (
        f"{tmp_path / 'ext.csv'}, line 1: label: column `label` appears twice in the header (columns 2 and 6)" in r.err
    )


def test_duplicate_manifest_header_after_trimming(tmp_path):
    path = workspace(tmp_path, ext="case_id,label,age,chol,sex, sex\ne1,1,52,210,M,F\n")
    r = check(tmp_path, path)
    assert "sex: column `sex` appears twice in the header (columns 5 and 6)" in r.err


def test_identifiers_read_as_written(tmp_path):
    # "007" and "7" are different patients; 19-digit ids beside a blank stay exact
    dev = (
        "case_id,patient_id,label,age,chol,sex\n"
        "1,007,present,35,200,F\n2,7,absent,45,,M\n3,1234567890123456789,present,61,250,F\n"
        "4,1234567890123456788,0,80,180,M\n5,,1,50,190,F\n"
    )
    path = workspace(tmp_path, dev=dev)
    with Unchanged(tmp_path):
        r = run_cli("check", path, cwd=tmp_path)
    assert r.code == 0, r.text
    assert "n=5      patients=5" in r.out


# ---- 8. every bad input of tests/test_check.py, at the command line --------------------------------


def _image_workspace(tmp_path: Path, root: str = "images", rows=("c1,normal,a.png", "c2,pneumonia,sub/b.png")):
    (tmp_path / "images" / "sub").mkdir(parents=True, exist_ok=True)
    for name in ("a.png", "sub/b.png"):
        Image.new("L", (4, 4), 128).save(tmp_path / "images" / name)
    (tmp_path / "img.csv").write_text("case_id,label,image\n" + "\n".join(rows) + "\n")
    path = tmp_path / "img.yaml"
    path.write_text(
        textwrap.dedent(f"""\
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
    )
    return path


# (id, protocol text edit, dev, ext, expected message parts; "{P}" is the protocol, "{E}" ext.csv,
#  "{L:needle}" the line of needle in the protocol)
PORTED = [
    (
        "unknown-key",
        ("    role: external", "    rol: external"),
        None,
        ["{P}, line {L:rol: external}: sites[1].rol: unknown key `rol`; did you mean `role`?"],
    ),
    (
        "bad-literal",
        ("    on: ci_low", "    on: lower"),
        None,
        [
            "{P}, line {L:on: lower}: gates[0].on: invalid value 'lower'",
            "'estimate', 'ci_low', 'ci_high', 'pi_low' or 'pi_high'",
        ],
    ),
    (
        "bad-type",
        ("calibration:", "metrics:\n  n_bootstrap: many\ncalibration:"),
        None,
        ["{P}, line {L:n_bootstrap}: metrics.n_bootstrap: Input should be a valid integer"],
    ),
    (
        "missing-manifest",
        ("manifest: ext.csv", "manifest: missing.csv"),
        None,
        ["{T}/missing.csv: sites[1].manifest: manifest not found"],
    ),
    (
        "missing-column",
        None,
        "case_id,label,age,sex\ne1,1,52,M\n",
        ["{E}, line 1: chol: required column `chol` is missing"],
    ),
    (
        "label-not-a-class",
        None,
        EXT + "e3,maybe,50,200,F\n",
        ["{E}, line 4, row 3: label: label 'maybe' is not a declared class", "['absent', 'present']"],
    ),
    (
        "duplicate-case-id",
        None,
        EXT + "e1,0,50,200,F\n",
        ["{E}, line 4, row 3: case_id: duplicate case_id 'e1' (first at row 1)"],
    ),
    (
        "subgroup-column-absent",
        None,
        "case_id,label,age,chol\ne1,1,52,210\n",
        ["{E}, line 1: sex: required column `sex` is missing"],
    ),
    (
        "subgroup-column-empty",
        None,
        "case_id,label,age,chol,sex\ne1,1,52,210,\ne2,0,40,200,\n",
        ["{E}, line 1: sex: subgroup `sex` uses column `sex`, which is empty at site `ext`"],
    ),
    ("empty-site", None, "case_id,label,age,chol,sex\n", ["{E}: site `ext` has no cases"]),
    ("non-numeric-feature", None, EXT + "e3,0,50,high,F\n", ["{E}, line 4, row 3: chol: value 'high' is not a number"]),
    (
        "intersection-reference",
        ("intersection: [sex, age_band]", "intersection: [sex, age_bnd]"),
        None,
        ["{P}, line {L:age_bnd}: subgroups[2].intersection: intersection names `age_bnd`"],
    ),
    ("not-yaml", ("sites:", "sites: [oops\n  x:"), None, ["{P}, line", "not valid YAML"]),
    ("not-a-mapping", ("name: toy", "- just\n- a list\nname: toy"), None, ["{P}, line"]),
]


def test_ported_bad_inputs(tmp_path):
    """Every case in one `validate check` (each its own protocol folder): every message, nothing else."""
    paths, expected = [], {}
    for cid, edit, ext, messages in PORTED:
        folder = _folder(tmp_path, cid)
        text = TABULAR.replace(*edit) if edit else TABULAR
        path = workspace(folder, text, ext=ext if ext is not None else EXT)
        paths.append(path)
        for m in messages:
            m = m.replace("{P}", str(path)).replace("{E}", str(folder / "ext.csv")).replace("{T}", str(folder))
            while "{L:" in m:
                start = m.index("{L:")
                end = m.index("}", start)
                m = m[:start] + str(line_of(text, m[start + 3 : end])) + m[end + 1 :]
            expected.setdefault(cid, []).append(m)
    r = check(tmp_path, *paths)
    missing = {cid: [m for m in ms if m not in r.err] for cid, ms in expected.items()}
    assert not any(missing.values()), (missing, r.err)
    assert f"validate check: {len(PORTED)} problem(s) found" in r.err, r.err


def test_ported_protocol_not_found(tmp_path):
    r = check(tmp_path, tmp_path / "nope.yaml")
    assert f"{tmp_path / 'nope.yaml'}: protocol file not found" in r.err


def test_ported_image_root_not_found(tmp_path):
    path = _image_workspace(tmp_path, root="no_such_folder")
    r = check(tmp_path, path)
    assert f"{path}, line {line_of(path.read_text(), 'image_root')}: sites[0].image_root: image root not found" in r.err


def test_ported_image_paths_escaping_root(tmp_path):
    bad = {"parent": "../outside.png", "parent-of-sub": "sub/../../outside.png", "absolute": "/etc/passwd"}
    paths = []
    for cid, rel in bad.items():
        folder = _folder(tmp_path, cid)
        (folder / "outside.png").write_bytes(b"x")
        paths.append(_image_workspace(folder, rows=("c1,normal,a.png", f"c2,normal,{rel}")))
    r = check(tmp_path, *paths)
    for cid, rel in bad.items():
        assert (
            f"{tmp_path / cid / 'img.csv'}, line 3, row 2: image: image path '{rel}' points outside the image "
            "root" in r.err
        )
    assert "validate check: 3 problem(s) found" in r.err


def test_ported_symlink_escaping_root(tmp_path):
    (tmp_path / "secret.png").write_bytes(b"x")
    path = _image_workspace(tmp_path, rows=("c1,normal,a.png", "c2,normal,link.png"))
    (tmp_path / "images" / "link.png").symlink_to(tmp_path / "secret.png")
    r = check(tmp_path, path)
    assert f"{tmp_path / 'img.csv'}, line 3, row 2: image: image path 'link.png' points outside the image root" in r.err


def test_ported_problems_of_two_protocols_reported_at_once(tmp_path):
    path = workspace(tmp_path, TABULAR.replace("    role: external", "    rol: external"))
    (tmp_path / "b").mkdir()
    other = workspace(tmp_path / "b", ext=EXT + "e1,0,50,200,F\n")
    r = check(tmp_path, path, other)
    assert "unknown key `rol`" in r.err and "duplicate case_id" in r.err and "2 problem(s) found" in r.err
