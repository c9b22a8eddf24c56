"""The pipeline as a library call: ``validate.run_protocol`` (and its stages) from a notebook gives the
same bundle as ``validate run``, prints nothing, and its results are readable as objects."""

from __future__ import annotations

import json

import pytest

import validate
from validate.io import to_json_text

from test_run_helpers import synthetic_bundle  # noqa: F401 (fixture)

DETERMINISTIC = ("metrics.json", "calibration.json", "gates.json", "subgroups.json", "curves.json", "sites.json")


def test_every_public_name_resolves_to_its_module():
    import importlib

    for name in validate.__all__:
        if name == "__version__":
            continue
        module = importlib.import_module(validate._EXPORTS[name])
        assert getattr(validate, name) is getattr(module, name), name
    assert set(validate.__all__) == {"__version__", *validate._EXPORTS}
    from validate.pipeline import run_protocol

    assert validate.run_protocol is run_protocol
    with pytest.raises(AttributeError, match="no attribute 'run_protocl'"):
        validate.run_protocl  # noqa: B018 - a typo is an AttributeError, not a silent None


def test_run_protocol_as_a_library_call_matches_the_command(synthetic_bundle, capsys):
    cli_bundle = synthetic_bundle["bundle"]
    out = synthetic_bundle["folder"] / "runs" / "library"
    capsys.readouterr()
    result = validate.run_protocol(synthetic_bundle["protocol"], out=out)
    assert capsys.readouterr().out == ""  # printing is the command's job
    assert result.bundle.resolve() == out.resolve()
    assert result.exit_code == 0 and result.gates.verdict == "pass"
    on_disk = json.loads((cli_bundle / "metrics.json").read_text())
    assert result.metrics["overall"]["auroc"]["estimate"] == on_disk["overall"]["auroc"]["estimate"]
    assert result.summary.splitlines()[-1] == "Verdict: PASS (exit 0)"
    for name in DETERMINISTIC:
        assert (cli_bundle / name).read_bytes() == (out / name).read_bytes(), name


def test_stages_one_by_one_from_a_predictions_file(synthetic_bundle):
    protocol = validate.load_protocol(synthetic_bundle["protocol"])
    loaded = validate.load_predictions(
        protocol,
        predictions=synthetic_bundle["folder"] / "predictions.csv",
        scoring_dir=synthetic_bundle["folder"] / "unused",
    )
    assert loaded["checkpoint"] is None and len(loaded["predictions_source"]["sha256"]) == 64
    parts = validate.analyse(protocol, loaded["frame"], loaded["failures"])
    on_disk = (synthetic_bundle["bundle"] / "gates.json").read_text()
    from validate.contract import for_writing

    assert to_json_text(for_writing("gates.json", parts["gates"].to_json())) == on_disk
    bundle, again = validate.regate(synthetic_bundle["bundle"])
    assert to_json_text(for_writing("gates.json", again.to_json())) == on_disk
    assert bundle.path.resolve() == synthetic_bundle["bundle"].resolve()
