"""The results bundle: atomic assembly, reading back, pseudonymised identifiers, provenance."""
from __future__ import annotations

import hashlib
import hmac
import json

import pandas as pd
import pytest

from validate.bundle import (BundleWriter, case_id_key, default_bundle_dir, hash_ids, json_bytes, make_provenance,
                             pseudonymise, read_bundle, software_versions)
from validate.errors import InputError


def minimal_metrics(n: int) -> dict:
    """The smallest metrics.json its contract (validate.metrics/1) accepts: one site of ``n`` cases."""
    return {"task": "binary", "n_bootstrap": 0, "ci_level": 0.95, "seed": 0, "overall": {"n": n},
            "sites": {"s": {"n": n}}, "subgroups": {}}


MINIMAL_PROVENANCE = {"protocol": {"name": "t", "version": "1", "sha256": None}, "checkpoint": None,
                      "started_at": "x", "finished_at": "y", "device": "cpu", "seeds": {}, "software": {}}


def write_minimal(target, metrics=None):
    with BundleWriter(target) as w:
        w.write_json("metrics.json", metrics or minimal_metrics(3))
        w.write_json("provenance.json", MINIMAL_PROVENANCE)
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
        read_bundle(tmp_path / "bad").metrics


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

    protocol = SimpleNamespace(name="heart", version="1.0", path=tmp_path / "p.yaml", sha256="ab" * 32,
                               metrics=SimpleNamespace(seed=3, n_bootstrap=50), calibration=SimpleNamespace(seed=4))
    prov = make_provenance(protocol=protocol, started_at="2024-01-01T00:00:00", finished_at="2024-01-01T00:01:00",
                           checkpoint={"path": "m.pt2", "sha256": "cd" * 32}, device="cpu", case_ids="kept")
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
