"""The results bundle: atomic assembly, reading back, pseudonymised identifiers, provenance."""

from __future__ import annotations

import hashlib
import hmac
import json

import pandas as pd
import pytest

from validate.bundle import (
    BUNDLE_FORMAT,
    BundleWriter,
    case_id_key,
    default_bundle_dir,
    hash_ids,
    json_bytes,
    make_provenance,
    pseudonymise,
    read_bundle,
    software_versions,
)
from validate.errors import InputError

from test_run_helpers import synthetic_bundle  # noqa: F401 (fixture)


def minimal_metrics(n: int) -> dict:
    """The smallest metrics.json its contract (validate.metrics/1) accepts: one site of ``n`` cases."""
    return {
        "task": "binary",
        "n_bootstrap": 0,
        "ci_level": 0.95,
        "seed": 0,
        "overall": {"n": n},
        "sites": {"s": {"n": n}},
        "subgroups": {},
    }


MINIMAL_PROVENANCE = {
    "protocol": {"name": "t", "version": "1", "sha256": None},
    "checkpoint": None,
    "started_at": "x",
    "finished_at": "y",
    "device": "cpu",
    "seeds": {},
    "software": {},
}


def write_minimal(target, metrics=None):
    with BundleWriter(target) as w:
        w.write_json("metrics.json", metrics or minimal_metrics(3))
        w.write_json("provenance.json", {**MINIMAL_PROVENANCE, "bundle_format": BUNDLE_FORMAT})
        w.write_text("protocol.yaml", "name: t\n")
        w.write_table("predictions.parquet", pd.DataFrame({"case_id": ["a"], "y": [1], "p": [0.3]}))
        w.commit()
    return target


def test_commit_moves_a_complete_folder_into_place(tmp_path):
    target = tmp_path / "runs" / "b1"
    write_minimal(target)
    b = read_bundle(target)
    assert b.metrics["overall"]["n"] == 3 and b.provenance["started_at"] == "x"
    assert b.predictions["p"].tolist() == [0.3]
    assert b.calibration is None and b.shift is None and b.curves is None
    assert len(b.failures) == 0
    # nothing left behind but the bundle
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["b1"]
    # the bytes are the engine's dict plus the contract id, nothing re-serialised
    assert (target / "metrics.json").read_bytes() == json_bytes({**minimal_metrics(3), "schema": "validate.metrics/1"})


def test_a_failed_run_leaves_the_previous_bundle_whole(tmp_path):
    target = tmp_path / "b"
    write_minimal(target, minimal_metrics(1))
    with pytest.raises(RuntimeError):
        with BundleWriter(target) as w:
            w.write_json("metrics.json", minimal_metrics(2))
            raise RuntimeError("killed")
    assert read_bundle(target).metrics["overall"]["n"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["b"]
    # a successful rerun replaces it
    write_minimal(target, minimal_metrics(5))
    assert read_bundle(target).metrics["overall"]["n"] == 5
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_uncommitted_writer_is_discarded(tmp_path):
    with BundleWriter(tmp_path / "b") as w:
        w.write_json("metrics.json", minimal_metrics(1))
    assert list(tmp_path.iterdir()) == []


def test_read_bundle_names_what_is_missing(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_bundle(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "metrics.json").write_text("{}")
    with pytest.raises(InputError, match="provenance.json") as exc:
        read_bundle(tmp_path / "half")
    assert str(tmp_path / "half") in str(exc.value)
    (tmp_path / "bad").mkdir()
    for f in ("provenance.json", "protocol.yaml"):
        (tmp_path / "bad" / f).write_text("{}")
    (tmp_path / "bad" / "metrics.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        _ = read_bundle(tmp_path / "bad").metrics


def test_ids_are_keyed_hashes(monkeypatch):
    key = b"k" * 32
    expected = hmac.new(key, b"MRN-0042", hashlib.sha256).hexdigest()[:20]  # the documented construction
    assert hash_ids(["MRN-0042", None], key) == [expected, None]
    table = pd.DataFrame({"case_id": ["a", "b", "c"], "patient_id": ["p1", "p1", "p2"], "site": ["s"] * 3})
    out = pseudonymise(table, key)
    assert not set(out["case_id"]) & set(table["case_id"])
    assert out["patient_id"][0] == out["patient_id"][1] != out["patient_id"][2]  # clusters kept
    assert out["site"].tolist() == ["s"] * 3 and table["case_id"][0] == "a"  # input untouched
    monkeypatch.setenv("VALIDATE_CASE_ID_KEY", "site secret")
    k1, how = case_id_key()
    assert k1 == b"site secret" and "VALIDATE_CASE_ID_KEY" in how
    monkeypatch.delenv("VALIDATE_CASE_ID_KEY")
    assert case_id_key()[0] != case_id_key()[0]


def test_provenance_records_versions_and_hashes(tmp_path):
    from types import SimpleNamespace

    protocol = SimpleNamespace(
        name="heart",
        version="1.0",
        path=tmp_path / "p.yaml",
        sha256="ab" * 32,
        metrics=SimpleNamespace(seed=3, n_bootstrap=50),
        calibration=SimpleNamespace(seed=4),
    )
    prov = make_provenance(
        protocol=protocol,
        started_at="2024-01-01T00:00:00",
        finished_at="2024-01-01T00:01:00",
        checkpoint={"path": "m.pt2", "sha256": "cd" * 32},
        device="cpu",
        case_ids="kept",
    )
    assert prov["protocol"]["sha256"] == "ab" * 32 and prov["checkpoint"]["sha256"] == "cd" * 32
    assert prov["seeds"] == {"metrics": 3, "calibration": 4} and prov["device"] == "cpu"
    sw = software_versions()
    for name in ("python", "torch", "numpy", "scipy", "scikit-learn", "pandas", "plotly", "validate"):
        assert sw[name], name
    json.dumps(prov)


def test_default_bundle_dir_never_collides(tmp_path):
    import datetime as dt

    when = dt.datetime(2024, 5, 6, 7, 8, 9)
    a = default_bundle_dir(tmp_path, "heart", when)
    assert a.name == "heart-20240506-070809"
    a.mkdir()
    assert default_bundle_dir(tmp_path, "heart", when).name == "heart-20240506-070809-2"


# ---- what a run may replace (issue #12: nothing the user owns is deleted) ---------------------------


def test_target_rules(tmp_path):
    from validate.bundle import target_problem

    assert target_problem(tmp_path / "new") is None
    (tmp_path / "empty").mkdir()
    assert target_problem(tmp_path / "empty") is None
    ours = write_minimal(tmp_path / "ours")
    assert target_problem(ours) is None
    (tmp_path / "file.txt").write_text("x")
    assert "it is a file" in target_problem(tmp_path / "file.txt")
    assert "is a file, not a folder" in target_problem(tmp_path / "file.txt" / "b")
    assert "is a results bundle" in target_problem(ours / "nested")
    (ours / "notes.txt").write_text("mine")
    assert "notes.txt" in target_problem(ours)
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "provenance.json").write_text('{"validate_version": "1"}')  # keys of ours missing
    assert "not written by validate" in target_problem(tmp_path / "fake")
    # a bundle of an earlier version (no marker, but its provenance keys) may be replaced
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "provenance.json").write_text(json.dumps({"validate_version": "0.1", "software": {}, "files": {}}))
    (legacy / "metrics.json").write_text("{}")
    (legacy / ".gates.json.ab12cd_x.tmp").write_text("")  # a killed write's temporary file
    (legacy / "thumbnails" / "site").mkdir(parents=True)
    (legacy / "thumbnails" / "site" / "c1.png").write_bytes(b"png")
    assert target_problem(legacy) is None
    (legacy / "thumbnails" / "site" / "c1.jpg").write_bytes(b"jpg")
    assert "thumbnails/site/c1.jpg" in target_problem(legacy)


def test_commit_checks_the_target_again(tmp_path):
    target = tmp_path / "b"
    with pytest.raises(InputError, match="not a results bundle.*changed while the run was working"):
        with BundleWriter(target) as w:
            w.write_json("metrics.json", minimal_metrics(1))
            target.mkdir()  # meanwhile (a run takes long) the user put a file there
            (target / "notes.txt").write_text("mine")
            w.commit()
    assert [p.name for p in tmp_path.iterdir()] == ["b"] and (target / "notes.txt").read_text() == "mine"


def test_commit_puts_the_earlier_bundle_back_when_the_rename_fails(tmp_path, monkeypatch):
    import os

    target = write_minimal(tmp_path / "b", minimal_metrics(1))
    real = os.replace
    calls = []

    def failing(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the staging folder onto the target
            raise OSError(28, "No space left on device")
        return real(src, dst)

    from validate.errors import RunIncomplete

    with pytest.raises(RunIncomplete, match="no space left"):
        with BundleWriter(target) as w:
            w.write_json("metrics.json", minimal_metrics(2))
            monkeypatch.setattr(os, "replace", failing)
            w.commit()
    monkeypatch.undo()
    assert read_bundle(target).metrics["overall"]["n"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_abandoned_staging_is_removed_only_when_ours_and_unlocked(tmp_path):
    from validate.bundle import STAGING_MARKER

    live = BundleWriter(tmp_path / "live")  # a run still writing: its marker is locked
    dead = tmp_path / ".killed.partial-0123abcd"  # a killed run's: marker present, nobody holds it
    dead.mkdir()
    (dead / STAGING_MARKER).write_text('{"validate_staging": 1}')
    (dead / "metrics.json").write_text("{}")
    user = tmp_path / ".mine.partial-89abcdef"  # the pattern, but not ours
    user.mkdir()
    (user / "data.csv").write_text("x")
    odd = tmp_path / ".odd.partial-fedcba98"  # our marker, but holding a file a bundle does not
    odd.mkdir()
    (odd / STAGING_MARKER).write_text('{"validate_staging": 1}')
    (odd / "data.csv").write_text("x")
    aside = write_minimal(tmp_path / "kept")  # a replaced bundle whose removal was cut short
    aside.rename(tmp_path / ".kept.old-00112233")
    write_minimal(tmp_path / "kept")
    with BundleWriter(tmp_path / "next") as w:
        w.write_json("metrics.json", minimal_metrics(1))
        w.abort()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["kept", live.staging.name, user.name, odd.name]), names
    live.abort()


def test_read_bundle_refuses_a_bundle_missing_a_file_its_protocol_implies(tmp_path):
    from validate.bundle import implied_files

    text = (
        "name: t\nsites:\n  - {id: a, role: development}\n  - {id: b}\n"
        "subgroups: [{name: sex, column: sex}]\ncalibration: {methods: [platt]}\n"
        "gates:\n  - {name: g, metric: auroc, scope: overall, min: 0.5}\n"
    )
    assert set(implied_files(text)) == {"gates.json", "calibration.json", "subgroups.json", "shift.json"}
    assert implied_files("name: t\nsites:\n  - {id: a}\n") == {}
    assert set(implied_files("name: t\ntask: segmentation\nsites:\n  - {id: a}\n")) == {"segmentation.json"}
    target = write_minimal(tmp_path / "b")
    (target / "protocol.yaml").write_text(text)
    for name in ("calibration.json", "subgroups.json", "shift.json"):
        (target / name).write_text("{}")
    with pytest.raises(InputError, match="gates.json is missing, but its protocol.yaml declares gates"):
        read_bundle(target)
    from validate.bundle import Bundle
    from validate.report import render_report

    with pytest.raises(InputError, match="gates.json is missing"):
        render_report(Bundle(path=target))
    (target / "gates.json").write_text('{"verdict": "fail", "rows": [], "counts": {}, "exit_code": 1}')
    assert Bundle(path=target).missing_implied_files() == {}


def test_written_by_validate_judges_by_content(tmp_path, synthetic_bundle):
    from validate.bundle import written_by_validate

    for name in ("gates.json", "junit.xml", "gates.md", "report.html"):
        assert written_by_validate(synthetic_bundle["bundle"] / name), name
        (tmp_path / name).write_text('{"verdict": "pass"}' if name.endswith(".json") else "<html>mine</html>")
        assert not written_by_validate(tmp_path / name), name
    assert not written_by_validate(tmp_path / "missing.json")
