"""Hostile images at the command line: what fails says why without leaking where the images live,
long kept case ids never crash a run, and a tampered cache is never trusted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from PIL import Image

from tests.adversarial.harness import Unchanged, run_cli
from tests.test_scoring_support import tiny_model, write_factory

PATIENT_FOLDER = "DOE_JOHN_19700101"  # a per-patient folder inside the image root
ABOVE_FOLDER = "DOE_JANE_19800101"  # a folder above the image root, named in the protocol itself


def _image_protocol(tmp_path: Path, images_parent: Path, n: int = 24, extra: dict | None = None, sub: str = "") -> Path:
    """Two PNG sites (16x16 grey) under ``images_parent`` (images in the folder ``sub`` of each root),
    the tiny CNN as a state dict, a protocol in ``tmp_path`` naming them."""
    rng = np.random.default_rng(11)
    sites = []
    for site, role in (("a", "development"), ("b", "external")):
        root = images_parent / site
        (root / sub).mkdir(parents=True)
        rows = ["case_id,patient_id,label,image"]
        for i in range(n):
            name = f"{sub}/{site}{i:03d}.png" if sub else f"{site}{i:03d}.png"
            Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(root / name)
            rows.append(f"{site}{i:03d},p{site}{i},{i % 2},{name}")
        (tmp_path / f"{site}.csv").write_text("\n".join(rows) + "\n")
        sites.append({"id": site, "manifest": f"{site}.csv", "image_root": str(root), "role": role})
    write_factory(tmp_path / "code")
    torch.save(tiny_model().state_dict(), tmp_path / "model_state.pt")
    doc = {
        "name": "adv-images",
        "version": "1",
        "task": "binary",
        "classes": ["neg", "pos"],
        "input": {"kind": "image", "size": [16, 16], "channels": 1, "scale": 255.0, "mean": [0.5], "std": [0.5]},
        "model": {
            "checkpoint": "model_state.pt",
            "format": "state_dict",
            "factory": "tiny_def:build_model",
            "factory_path": "code",
        },
        "sites": sites,
        "metrics": {"n_bootstrap": 10, "seed": 0, "bins": 5},
        "calibration": {"designs": ["held-out"], "methods": ["temperature"], "fit_on": ["a"], "seed": 0},
    }
    doc.update(extra or {})
    protocol = tmp_path / "p.yaml"
    protocol.write_text(yaml.safe_dump(doc, sort_keys=False))
    return protocol


def _texts(folder: Path):
    for f in folder.rglob("*"):
        if f.is_file():
            yield f, f.read_bytes()


def test_failure_reasons_hold_no_path_and_no_patient_folder(tmp_path):
    """Regression: failures.csv copied exception text quoting absolute image paths into the bundle."""
    parent = tmp_path / ABOVE_FOLDER / "images"
    protocol = _image_protocol(tmp_path, parent, sub=PATIENT_FOLDER)
    folder = parent / "a" / PATIENT_FOLDER
    good = (folder / "a001.png").read_bytes()
    (folder / "a001.png").write_bytes(good[: len(good) // 2])  # truncated image
    (folder / "a002.png").unlink()
    (folder / "a002.png").mkdir()  # a folder where an image should be
    with Unchanged(tmp_path, allow=["runs", "out", "score", ".cache"]):
        scored = run_cli("score", protocol, "--out", tmp_path / "score", cwd=tmp_path)
        r = run_cli("run", protocol, "--out", tmp_path / "out", "--runs-dir", tmp_path / "runs", cwd=tmp_path)
    assert scored.code == 0, scored.text
    assert r.code in (0, 1), r.text
    for text in (scored.text, r.text):
        assert PATIENT_FOLDER not in text and ABOVE_FOLDER not in text
    for out in (tmp_path / "score", tmp_path / "out", tmp_path / ".cache" / "adv-images"):
        fails = pd.read_csv(out / "failures.csv")
        assert len(fails) == 2 and set(fails["stage"]) == {"read"}
        assert fails["reason"].str.contains("truncated").any()
        assert fails["reason"].str.contains("Is a directory").any()
        assert not fails["reason"].str.contains("/").any(), fails["reason"].tolist()  # no path at all
        for f, data in _texts(out):
            assert PATIENT_FOLDER.encode() not in data, f
            if f.name not in ("protocol.yaml", "report.html"):  # these two show the protocol as written
                assert ABOVE_FOLDER.encode() not in data, f
    for shard in (tmp_path / "score" / "cache").rglob("shard-*.npz"):
        with np.load(shard) as z:  # the cache keeps the same scrubbed reasons
            assert not any(PATIENT_FOLDER in str(r) or "/" in str(r) for r in z["fail_reason"])


def test_a_tampered_score_shard_is_scored_again_at_the_command_line(tmp_path):
    protocol = _image_protocol(tmp_path, tmp_path / "images")
    first = run_cli("score", protocol, "--out", tmp_path / "score", "--hash-inputs", cwd=tmp_path)
    assert first.code == 0, first.text
    want = pd.read_parquet(tmp_path / "score" / "predictions.parquet")
    shard = next((tmp_path / "score" / "cache" / "a").rglob("shard-000000-*.npz"))
    with np.load(shard) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["logits"] = arrays["logits"] + 7.0
    with open(shard, "wb") as fh:
        np.savez(fh, **arrays)
    with Unchanged(
        tmp_path, allow=["score/cache", "score/predictions.parquet", "score/failures.csv", "score/scoring.json"]
    ):
        again = run_cli("score", protocol, "--out", tmp_path / "score", "--hash-inputs", cwd=tmp_path)
    assert again.code == 0, again.text
    assert "warning: cached scores a/" in again.err and "does not match its checksum" in again.err
    assert "24 from cache" in again.out  # site b's shard only
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "score" / "predictions.parquet"), want)


def test_kept_case_ids_of_300_characters_score_and_run(tmp_path):
    """Regression: over-long kept case ids crashed a run with a traceback."""
    protocol = _image_protocol(tmp_path, tmp_path / "images", extra={"keep_case_ids": True})
    for site in ("a", "b"):
        manifest = tmp_path / f"{site}.csv"
        df = pd.read_csv(manifest, dtype=str)
        df["case_id"] = ["C" * 290 + f"{i:010d}" for i in range(len(df))]
        df.to_csv(manifest, index=False)
    with Unchanged(tmp_path, allow=["runs", "out", ".cache"]):
        r = run_cli("run", protocol, "--out", tmp_path / "out", "--runs-dir", tmp_path / "runs", cwd=tmp_path)
    assert r.code in (0, 1), r.text
    names = [p.name for p in (tmp_path / "out" / "thumbnails").rglob("*.png")]
    assert names and all(n.startswith("id-") and len(n) == 47 for n in names)
    ids = set(pd.read_parquet(tmp_path / "out" / "predictions.parquet")["case_id"])
    assert len(ids) == 24 and all(len(i) == 300 for i in ids)  # the same ids at both sites
