"""The bundle contract (validate/contract.py): every bundle JSON is typed and versioned, the engine's
own bundles satisfy it, and a bundle that breaks it is refused loudly — by `validate report` (exit 2,
naming the file and the key path) and by the dashboard's loader — instead of showing "no data".

The JSON Schemas in schemas/bundle/ are checked with the `jsonschema` package, a validator independent
of the pydantic models they are generated from.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from validate import contract
from validate.bundle import BundleWriter, read_bundle
from validate.errors import InputError

from test_run_helpers import synthetic_bundle  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO / "schemas" / "bundle"
# files of every bundle (comparison.json is written only with a baseline: tests/test_comparison.py;
# segmentation.json for segmentation tasks: tests/test_segmentation_pixels.py)
FILES = [n for n in contract.MODELS if n not in contract.BASELINE_FILES + contract.SEGMENTATION_FILES]

# per file: a key path the engine always writes and a reader needs ("*" = the first key of a map)
REQUIRED_KEYS = {
    "metrics.json": ("sites", "*", "n"),
    "calibration.json": ("methods", "none", "sites"),
    "curves.json": ("sites", "*", "reliability", "observed"),
    "subgroups.json": ("overall", "subgroups", "sex", "female", "block"),
    "sites.json": ("sites", "*", "role"),
    "shift.json": ("sites", "*", "ranking"),
    "gates.json": ("rows", 0, "verdict"),
    "cases.json": ("rankings", 0, "sites"),
    "provenance.json": ("protocol", "sha256"),
    "fairness.json": ("overall", "attributes", "sex", "thresholds"),
}


def _resolve(data, path):
    """The parent container of ``path`` in ``data`` and the concrete last key (``*`` resolved)."""
    keys = []
    node = data
    for k in path:
        k = next(iter(node)) if k == "*" else k
        keys.append(k)
        parent, node = node, node[k]
    return parent, keys


def mutate(bundle: Path, name: str, how: str) -> str:
    """Remove (``how="missing"``) or rename (``how="renamed"``) the file's required key; returns its
    key path as the error names it (``a.b[0].c``)."""
    file = bundle / name
    data = json.loads(file.read_text())
    parent, keys = _resolve(data, REQUIRED_KEYS[name])
    value = parent.pop(keys[-1])
    if how == "renamed":
        parent[f"{keys[-1]}_renamed"] = value
    file.write_text(json.dumps(data))
    path = ""
    for k in keys:
        path += f"[{k}]" if isinstance(k, int) else (f".{k}" if path else k)
    return path


@pytest.fixture
def bundle_copy(synthetic_bundle, tmp_path):  # noqa: F811 (fixture)
    target = tmp_path / "runs" / "copy"
    shutil.copytree(synthetic_bundle["bundle"], target)
    return target


# ---- the engine writes the contract -----------------------------------------------------------------


def test_schema_files_are_current():
    committed = {p.name: json.loads(p.read_text()) for p in sorted(SCHEMAS.glob("*.schema.json"))}
    generated = json.loads(json.dumps(contract.json_schemas()))
    assert committed == generated, "run `make schema` to regenerate schemas/bundle/"


@pytest.mark.parametrize("name", FILES)
def test_engine_bundle_carries_its_schema_id_and_satisfies_the_json_schema(synthetic_bundle, name):  # noqa: F811
    import jsonschema

    data = json.loads((synthetic_bundle["bundle"] / name).read_text())
    model = contract.MODELS[name]
    assert data["schema"] == f"validate.{model.NAME}/1"
    schema = json.loads((SCHEMAS / f"{model.NAME}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(data)
    parsed = contract.parse(name, data)
    assert isinstance(parsed, model)


def test_typed_bundle_reads_attributes_equal_to_the_json(synthetic_bundle):  # noqa: F811
    b = read_bundle(synthetic_bundle["bundle"])
    raw = json.loads((b.path / "metrics.json").read_text())
    typed = b.typed.metrics
    assert list(typed.sites) == list(raw["sites"])
    for site, block in raw["sites"].items():
        assert typed.sites[site].n == block["n"]
        assert typed.sites[site].metric("auroc") == block["auroc"]
    gates = json.loads((b.path / "gates.json").read_text())
    assert [r.verdict for r in b.typed.gates.rows] == [r["verdict"] for r in gates["rows"]]
    assert b.typed.gates.counts.pass_ == gates["counts"]["pass"]


def test_writer_refuses_content_that_breaks_the_contract(tmp_path):
    target = tmp_path / "b"
    with pytest.raises(contract.ContractViolation, match=r"metrics\.json.*sites"):
        with BundleWriter(target) as w:
            w.write_json(
                "metrics.json", {"task": "binary", "n_bootstrap": 0, "ci_level": 0.95, "seed": 0, "overall": {"n": 1}}
            )
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_a_wrong_shape_from_the_engine_is_an_internal_error(synthetic_bundle, tmp_path, monkeypatch, capsys):  # noqa: F811
    from validate.cli import main
    from validate.gates import GateReport

    monkeypatch.chdir(tmp_path)
    real = GateReport.to_json
    monkeypatch.setattr(GateReport, "to_json", lambda self: {k: v for k, v in real(self).items() if k != "rows"})
    out = tmp_path / "out"
    out.mkdir()
    assert main(["gate", str(synthetic_bundle["bundle"]), "--out", str(out), "--quiet"]) == 3
    err = capsys.readouterr().err
    assert "gates.json" in err and "rows" in err
    assert not (out / "gates.json").exists()


# ---- a broken bundle is refused, naming file and key --------------------------------------------------


@pytest.mark.parametrize("how", ["missing", "renamed"])
@pytest.mark.parametrize("name", FILES)
def test_report_refuses_a_missing_or_renamed_key(bundle_copy, name, how, capsys):
    from validate.cli import main

    key = mutate(bundle_copy, name, how)
    before = (bundle_copy / "report.html").read_bytes()
    assert main(["report", str(bundle_copy)]) == 2
    err = capsys.readouterr().err
    assert str(bundle_copy / name) in err and key in err, err
    assert "required key missing" in err
    assert (bundle_copy / "report.html").read_bytes() == before


@pytest.mark.parametrize("name", FILES)
def test_dashboard_loader_refuses_a_renamed_key(bundle_copy, name):
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from dashboard.data import load_run

    key = mutate(bundle_copy, name, "renamed")
    with pytest.raises(InputError) as exc:
        run = load_run(bundle_copy, bundle_copy.parent)
        # provenance is read on demand by some pages; every part must fail on first touch
        for part in (
            "provenance",
            "metrics",
            "calibration",
            "gates",
            "subgroups",
            "curves",
            "shift",
            "cohorts",
            "cases",
        ):
            getattr(run, part)
    assert str(bundle_copy / name) in str(exc.value) and key in str(exc.value)


def test_a_newer_version_is_refused_with_file_and_version(bundle_copy, capsys):
    from validate.cli import main

    file = bundle_copy / "metrics.json"
    data = json.loads(file.read_text())
    data["schema"] = "validate.metrics/2"
    file.write_text(json.dumps(data))
    assert main(["report", str(bundle_copy)]) == 2
    err = capsys.readouterr().err
    assert str(file) in err and "validate.metrics/2" in err and "newer" in err


@pytest.mark.parametrize("sid", ["validate.gates/1", "metrics-1", 1])
def test_an_unknown_schema_id_is_refused(bundle_copy, sid):
    file = bundle_copy / "metrics.json"
    data = json.loads(file.read_text())
    data["schema"] = sid
    file.write_text(json.dumps(data))
    with pytest.raises(InputError, match="unknown bundle schema") as exc:
        read_bundle(bundle_copy)
    assert exc.value.file == str(file) and exc.value.field == "schema"


def test_version_0_bundles_without_schema_fields_are_read(bundle_copy, capsys):
    """Bundles written before the contract was versioned (no ``schema`` field) are read as version 1."""
    from validate.cli import main

    for name in FILES:
        file = bundle_copy / name
        data = json.loads(file.read_text())
        data.pop("schema", None)
        file.write_text(json.dumps(data))
    assert main(["report", str(bundle_copy)]) == 0
    assert read_bundle(bundle_copy).typed.metrics.schema_id is None


def test_analyses_that_did_not_run_read_as_not_computed(tmp_path):
    assert not contract.parse("calibration.json", {}).computed
    shift = contract.parse("shift.json", {"schema": "validate.shift/1", "reason": "no pair"})
    assert not shift.computed and shift.reason == "no pair"
    with pytest.raises(InputError, match="required key missing"):
        contract.parse("metrics.json", {})


# ---- the sample protocols' bundles ----------------------------------------------------------------------


def _sample_bundles() -> list[Path]:
    """Bundles of protocols/heart.yaml, chest.yaml and volume.yaml: ``$VALIDATE_SAMPLE_RUNS`` (e.g. the runs/ folder of
    `make demo`), else the repository's runs/."""
    root = Path(os.environ.get("VALIDATE_SAMPLE_RUNS") or REPO / "runs")
    found = sorted(p.parent for p in root.glob("*/metrics.json")) if root.is_dir() else []
    return [p for p in found if p.name.startswith(("heart", "chest", "volume"))]


@pytest.mark.skipif(not _sample_bundles(), reason="no sample bundles: run `make demo` or set VALIDATE_SAMPLE_RUNS")
@pytest.mark.parametrize("bundle", _sample_bundles(), ids=lambda p: p.name)
def test_every_model_validates_the_sample_bundles(bundle):
    import jsonschema

    b = read_bundle(bundle)
    for name, model in contract.MODELS.items():
        if not (bundle / name).exists():
            continue
        data = json.loads((bundle / name).read_text())
        assert isinstance(b.model(name), (model, contract.NotComputed))
        schema = json.loads((SCHEMAS / f"{model.NAME}.schema.json").read_text())
        jsonschema.Draft202012Validator(schema).validate(data)
