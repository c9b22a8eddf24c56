"""score_protocol and `validate score` end to end on sites made in tmp_path: logits equal a bare
forward pass, bad cases become failures while the site goes on, the cache resumes, --strict is fatal."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from validate.cli import main
from validate.errors import InputError
from validate.scoring import score_protocol

from test_scoring_support import (
    TINY_DEF,
    chest_like_images,
    image_input,
    png_protocol,
    png_protocol_with_bad_cases,
    reference_inputs,
    tiny_model,
    write_factory,
    write_png_site,
    write_protocol,
)

REPO = Path(__file__).resolve().parents[1]


def test_logits_equal_a_bare_forward_pass_and_bad_cases_are_failures(tmp_path):
    images = chest_like_images(40)
    protocol = png_protocol_with_bad_cases(tmp_path, images)  # case 3 not an image, case 7 truncated DICOM

    result = score_protocol(protocol, out_dir=tmp_path / "out", batch_size=8, shard_size=16)
    assert result.counts["cases"] == 40 and result.counts["failed"] == 2 and result.counts["scored"] == 38
    fails = pd.read_csv(tmp_path / "out" / "failures.csv")
    assert list(fails.columns) == ["site", "case_id", "reason", "stage"]
    assert fails["case_id"].tolist() == ["a-0003", "a-0007"]
    assert "not an image" in fails["reason"][0] and "DICOM" in fails["reason"][1]

    pred = pd.read_parquet(tmp_path / "out" / "predictions.parquet")
    from validate.scoring.inputs import IMAGE_STAT_COLUMNS  # per-case shift inputs: tests/test_scoring_image_stats.py

    assert list(pred.columns) == ["case_id", "site", "patient_id", "y", "logit", "sex", *IMAGE_STAT_COLUMNS]
    keep = [i for i in range(40) if i not in (3, 7)]
    assert pred["case_id"].tolist() == [f"a-{i:04d}" for i in keep]
    assert pred["y"].tolist() == [i % 2 for i in keep]
    with torch.inference_mode():
        bare = tiny_model()(reference_inputs(images[keep]))[:, 0].numpy()
    assert np.abs(pred["logit"].to_numpy() - bare).max() <= 1e-5
    assert result.checkpoint_format == "state_dict" and result.device == "cpu"


def test_rerun_uses_the_cache_and_a_changed_image_rescores_only_its_shard(tmp_path):
    images = chest_like_images(48, seed=1)
    protocol = png_protocol(tmp_path, images)
    out = tmp_path / "out"
    first = score_protocol(protocol, out_dir=out, batch_size=8, shard_size=16)
    shards = sorted((out / "cache").rglob("shard-*.npz"))
    assert len(shards) == 3 and first.counts["cached"] == 0
    stamps = {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in shards}

    again = score_protocol(protocol, out_dir=out, batch_size=8, shard_size=16)
    assert again.counts["cached"] == 48
    pd.testing.assert_frame_equal(first.predictions, again.predictions)
    assert {
        p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in sorted((out / "cache").rglob("shard-*.npz"))
    } == stamps

    new = images.copy()
    new[20] = 255 - new[20]
    Image.fromarray(new[20]).save(tmp_path / "data" / "a" / "a-0020.png")
    third = score_protocol(protocol, out_dir=out, batch_size=8, shard_size=16)
    assert third.counts["cached"] == 32  # shards 0 and 2 reused, shard 1 (cases 16..31) rescored
    with torch.inference_mode():
        want = tiny_model()(reference_inputs(new[20:21]))[0, 0].item()
    assert abs(third.predictions["logit"][20] - want) <= 1e-5


def test_nan_outputs_are_failures_and_strict_is_fatal(tmp_path, capsys):
    write_factory(tmp_path / "code")
    state = tmp_path / "tab.pt"
    torch.save(tiny_model("build_tabular").state_dict(), state)
    rows = ["case_id,label,f0,f1,f2,sex", "c1,pos,0.5,1,2,F", "c2,neg,-3,1,2,M", "c3,1,,1,2,F", "c4,0,1,x,2,M"]
    (tmp_path / "site.csv").write_text("\n".join(rows) + "\n")
    protocol = write_protocol(
        tmp_path / "p.yaml",
        sites=[{"id": "s", "manifest": "site.csv", "role": "development"}],
        input={"kind": "tabular", "features": ["f0", "f1", "f2"]},
        model={
            "checkpoint": "tab.pt",
            "format": "state_dict",
            "factory": "tiny_def:build_tabular",
            "factory_path": "code",
        },
    )
    # a non-numeric feature is a manifest error (the cohort checks it): remove that row first
    (tmp_path / "site.csv").write_text("\n".join(rows[:-1]) + "\n")
    result = score_protocol(protocol, out_dir=tmp_path / "out")
    assert result.failures.to_dict("records") == [
        {"site": "s", "case_id": "c2", "reason": "model output is NaN or Inf", "stage": "score"}
    ]
    assert result.predictions["case_id"].tolist() == ["c1", "c3"]
    x = torch.tensor([[0.5, 1, 2], [float("nan"), 1, 2]])
    with torch.inference_mode():
        want = tiny_model("build_tabular")(x)[:, 0].numpy()
    assert np.abs(result.predictions["logit"].to_numpy() - want).max() <= 1e-6

    with pytest.raises(InputError, match="--strict"):
        score_protocol(protocol, out_dir=tmp_path / "strict", strict=True)
    assert (tmp_path / "strict" / "failures.csv").exists()
    assert not (tmp_path / "strict" / "predictions.parquet").exists()
    code = main(["score", str(protocol), "--out", str(tmp_path / "cli"), "--strict"])
    assert code == 2
    err = capsys.readouterr().err
    assert "1 case(s) could not be scored" in err and "c2" in err and "Traceback" not in err


def test_multiclass_probabilities_become_log_probabilities(tmp_path):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)
    write_png_site(tmp_path / "data", "m", images, labels=[i % 3 for i in range(12)])
    code = tmp_path / "code"
    write_factory(code)
    (code / "soft_def.py").write_text(
        TINY_DEF + "\n\ndef build_soft():\n    return torch.nn.Sequential(build_model3(), torch.nn.Softmax(dim=1))\n"
    )
    torch.manual_seed(0)
    ns: dict = {}
    exec((code / "soft_def.py").read_text(), ns)  # noqa: S102 - the test's own model
    model = ns["build_soft"]().eval()
    torch.save(model.state_dict(), tmp_path / "soft.pt")
    spec = image_input(16, channels=3)
    protocol = write_protocol(
        tmp_path / "p.yaml",
        task="multiclass",
        classes=["a", "b", "c"],
        sites=[{"id": "m", "manifest": "data/m.csv", "image_root": "data/m", "role": "development"}],
        input=spec,
        model={
            "checkpoint": "soft.pt",
            "factory": "soft_def:build_soft",
            "factory_path": "code",
            "output": "probabilities",
        },
    )
    result = score_protocol(protocol, out_dir=tmp_path / "out", batch_size=5)
    assert [c for c in result.predictions.columns if c.startswith("logit")] == ["logit_a", "logit_b", "logit_c"]
    x = torch.from_numpy(((images.astype(np.float32) / 255 - 0.5) / 0.5).transpose(0, 3, 1, 2).copy())
    with torch.inference_mode():
        want = np.log(np.clip(model(x).numpy().astype(np.float64), 1e-15, 1.0))
    got = result.predictions[["logit_a", "logit_b", "logit_c"]].to_numpy()
    assert np.abs(got - want).max() <= 1e-5
    assert result.predictions["y"].tolist() == [i % 3 for i in range(12)]


def test_model_output_of_the_wrong_width_is_bad_input(tmp_path):
    images = chest_like_images(4)
    write_factory(tmp_path / "code")
    (tmp_path / "code" / "wide_def.py").write_text(TINY_DEF + "\n\ndef build_wide():\n    return TinyCNN(outputs=5)\n")
    ns: dict = {}
    exec((tmp_path / "code" / "wide_def.py").read_text(), ns)  # noqa: S102
    torch.save(ns["build_wide"]().state_dict(), tmp_path / "wide.pt")
    protocol = png_protocol(
        tmp_path, images, model={"checkpoint": "wide.pt", "factory": "wide_def:build_wide", "factory_path": "code"}
    )
    with pytest.raises(InputError, match=r"returns 5 value\(s\) per case"):
        score_protocol(protocol, out_dir=tmp_path / "out")


def test_predictions_file_skips_scoring(tmp_path):
    images = chest_like_images(4)
    protocol = png_protocol(tmp_path, images)
    made = pd.DataFrame({"case_id": ["a-0000"], "site": ["a"], "patient_id": ["p0"], "y": [1], "logit": [0.3]})
    made.to_parquet(tmp_path / "elsewhere.parquet")
    result = score_protocol(protocol, checkpoint=tmp_path / "elsewhere.parquet", out_dir=tmp_path / "out")
    assert result.checkpoint_format == "predictions" and result.device == "none"
    assert pd.read_parquet(tmp_path / "out" / "predictions.parquet")["logit"].tolist() == [0.3]


def test_cli_uses_the_protocols_checkpoint_and_flags(tmp_path, capsys):
    images = chest_like_images(10)
    protocol = png_protocol(tmp_path, images)
    shutil.move(tmp_path / "model_state.pt", tmp_path / "code" / "w.pt")
    text = protocol.read_text().replace(str(tmp_path / "model_state.pt"), "code/w.pt")
    protocol.write_text(text)  # relative to the protocol file, not to the working directory
    code = main(
        [
            "score",
            str(protocol),
            "--out",
            str(tmp_path / "o"),
            "--device",
            "cpu",
            "--batch-size",
            "3",
            "--workers",
            "0",
            "--amp",
            "none",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "10/10 scored" in out and "state_dict" in out
    assert (
        main(["score", str(protocol), "--out", str(tmp_path / "o"), "--device", "cuda:7"]) == 2
        or torch.cuda.device_count() > 7
    )
    assert main(["score", str(protocol), "--out", str(tmp_path / "o"), "--checkpoint", str(tmp_path / "none.pt2")]) == 2
    err = capsys.readouterr().err
    assert "checkpoint file not found" in err


def test_bf16_autocast_runs_on_cpu(tmp_path):
    images = chest_like_images(6)
    protocol = png_protocol(tmp_path, images)
    result = score_protocol(protocol, out_dir=tmp_path / "out", amp="bf16")
    with torch.inference_mode():
        bare = tiny_model()(reference_inputs(images))[:, 0].numpy()
    # bf16 keeps 8 bits of mantissa: close, not equal
    assert np.abs(result.predictions["logit"].to_numpy() - bare).max() < 0.1


SLOW_DEF = (
    TINY_DEF
    + """

import os, time

class SlowCNN(TinyCNN):
    def forward(self, x):
        time.sleep(float(os.environ.get("SCORING_TEST_SLEEP", "0")))
        return super().forward(x)

def build_slow():
    torch.manual_seed(0)
    return SlowCNN()
"""
)


def test_resume_after_sigkill_does_not_rescore_finished_shards(tmp_path):
    images = chest_like_images(64, seed=5)
    write_factory(tmp_path / "code")
    (tmp_path / "code" / "slow_def.py").write_text(SLOW_DEF)
    torch.save(tiny_model().state_dict(), tmp_path / "slow.pt")
    protocol = png_protocol(
        tmp_path, images, model={"checkpoint": "slow.pt", "factory": "slow_def:build_slow", "factory_path": "code"}
    )
    out = tmp_path / "out"
    env = dict(os.environ, SCORING_TEST_SLEEP="0.15", PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "validate",
            "score",
            str(protocol),
            "--out",
            str(out),
            "--batch-size",
            "4",
            "--shard-size",
            "8",
            "--workers",
            "0",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if len(list(out.rglob("shard-*.npz"))) >= 2:
                break
            if proc.poll() is not None:
                pytest.fail(f"scorer ended before it could be killed: {proc.stderr.read().decode()}")
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = sorted(out.rglob("shard-*.npz"))
    assert 2 <= len(done) < 8, "the kill must land mid-site"
    assert not (out / "predictions.parquet").exists()
    stamps = {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in done}

    resumed = score_protocol(protocol, out_dir=out, batch_size=4, shard_size=8)
    assert resumed.counts["cached"] == 8 * len(done)
    assert {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in done} == stamps
    fresh = score_protocol(protocol, out_dir=tmp_path / "fresh", batch_size=4, shard_size=8)
    pd.testing.assert_frame_equal(resumed.predictions, fresh.predictions)
    assert len(list(out.rglob("shard-*.npz"))) == 8


@pytest.mark.slow
def test_torchrun_two_processes_give_the_same_predictions(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed beside this python")
    images = chest_like_images(40, seed=7)
    protocol = png_protocol(tmp_path, images)
    single = score_protocol(protocol, out_dir=tmp_path / "one", batch_size=4, shard_size=8)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    run = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "validate",
            "score",
            str(protocol),
            "--out",
            str(tmp_path / "two"),
            "--device",
            "cpu",
            "--batch-size",
            "4",
            "--shard-size",
            "8",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    two = pd.read_parquet(tmp_path / "two" / "predictions.parquet")
    pd.testing.assert_frame_equal(single.predictions.reset_index(drop=True), two, check_exact=True)
    shards = sorted((tmp_path / "two" / "cache").rglob("shard-*.npz"))
    assert len(shards) == 5
    assert run.stdout.count("total: 40/40 scored") == 1  # rank 0 alone reports and writes


def test_multilabel_tabular_gives_a_logit_per_label(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "ml_def.py").write_text(
        "import torch\n\ndef build():\n    torch.manual_seed(0)\n    return torch.nn.Linear(2, 2)\n"
    )
    torch.manual_seed(1)
    model = torch.nn.Linear(2, 2)
    torch.save(model.state_dict(), tmp_path / "ml.pt")
    rows = ["case_id,y_edema,y_effusion,a,b,sex", "c1,1,0,0.5,1,F", "c2,0,1,-1,2,M", "c3,1,1,,3,F"]
    (tmp_path / "s.csv").write_text("\n".join(rows) + "\n")
    protocol = write_protocol(
        tmp_path / "p.yaml",
        task="multilabel",
        labels=["edema", "effusion"],
        sites=[{"id": "s", "manifest": "s.csv", "role": "development"}],
        input={"kind": "tabular", "features": ["a", "b"]},
        model={"checkpoint": "ml.pt", "factory": "ml_def:build", "factory_path": "code"},
    )
    result = score_protocol(protocol, out_dir=tmp_path / "out")
    pred = pd.read_parquet(tmp_path / "out" / "predictions.parquet")
    assert list(pred.columns) == [
        "case_id",
        "site",
        "patient_id",
        "y_edema",
        "y_effusion",
        "logit_edema",
        "logit_effusion",
        "sex",
        "a",
        "b",
    ]  # features carried for the shift analysis
    assert pred["y_effusion"].tolist() == [0, 1]
    # the NaN feature reaches the model as NaN (its output is then NaN: a failure, not a silent 0)
    with torch.inference_mode():
        want = model(torch.tensor([[0.5, 1.0], [-1.0, 2.0]])).numpy()
    assert np.abs(pred[["logit_edema", "logit_effusion"]].to_numpy()[:2] - want).max() <= 1e-6
    assert result.failures["case_id"].tolist() == ["c3"] and len(pred) == 2


def test_a_sixteen_bit_image_under_scale_255_is_a_counted_failure(tmp_path):
    """Regression: a 16-bit PNG under `scale: 255` gave a logit in the thousands and was counted as scored."""
    images = chest_like_images(20, seed=4)
    protocol = png_protocol(tmp_path, images)
    deep = images[5].astype(np.uint16) * 257  # the same picture at 16 bits: 0..65535
    Image.fromarray(deep).save(tmp_path / "data" / "a" / "a-0005.png")
    result = score_protocol(protocol, out_dir=tmp_path / "out", batch_size=8, shard_size=16)
    assert result.counts["failed"] == 1 and result.counts["scored"] == 19
    assert result.counts["sites"]["a"]["failed"] == 1
    fails = pd.read_csv(tmp_path / "out" / "failures.csv")
    assert fails["case_id"].tolist() == ["a-0005"] and fails["stage"].tolist() == ["preprocess"]
    assert f"pixel values up to {deep.max()} exceed input.scale 255" in fails["reason"][0]
    assert "a-0005" not in set(result.predictions["case_id"])
    keep = [i for i in range(20) if i != 5]
    with torch.inference_mode():
        bare = tiny_model()(reference_inputs(images[keep]))[:, 0].numpy()
    assert np.abs(result.predictions["logit"].to_numpy() - bare).max() <= 1e-5
