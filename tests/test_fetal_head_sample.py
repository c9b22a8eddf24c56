"""The fetal-head segmentation sample: files, documented shifts, shipped checkpoints, protocol end to end.

Checks are made against independent sources: HC18's own CSV (pixel size, head circumference), the
source images reduced by Pillow's box filter (not make_sites' numpy reshape), an ellipse fitted to
each shipped mask here (second moments, Ramanujan), and Dice/HD95 recomputed here with a naive loop
(brute-force boundary distances, not a distance transform) against the README's table.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_sites" / "fetal_head"
PROTOCOL = REPO / "protocols" / "fetal_head.yaml"
README = SAMPLE / "README.md"
SOURCE = REPO.parent / "shared" / "data" / "hc18_fetal_head"
if not SOURCE.is_dir():  # a worktree under /work/wt/ sits one level deeper than the main checkout
    SOURCE = Path("/work/shared/data/hc18_fetal_head")
needs_source = pytest.mark.skipif(not SOURCE.is_dir(), reason="the HC18 source folder (../shared/data) is absent")
SITE_IDS = ("development", "control", "probe_b", "low_res")
BLOCK = {"development": 4, "control": 4, "probe_b": 4, "low_res": 8}


def _sample_module(name: str):
    """``sample_sites/fetal_head/<name>.py`` imported under a name of its own (the chest, heart and volume
    samples ship modules called ``model_def``, ``make_sites`` and ``train_model`` too); while it runs,
    the sibling names it imports are the fetal-head ones."""
    import importlib.util

    key = f"fetal_head_sample_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, SAMPLE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    siblings = {} if name in _SIBLINGS else {sib: _sample_module(sib) for sib in _SIBLINGS}
    saved = {sib: sys.modules.get(sib) for sib in siblings}
    sys.modules.update(siblings)
    try:
        sys.modules[key] = module
        spec.loader.exec_module(module)
    finally:
        for sib, before in saved.items():
            if before is None:
                sys.modules.pop(sib, None)
            else:
                sys.modules[sib] = before
    return module


_SIBLINGS = ("model_def", "make_sites")


@pytest.fixture(scope="module")
def sites():
    """site id -> (manifest rows, image root), as protocols/fetal_head.yaml names them."""
    proto = yaml.safe_load(PROTOCOL.read_text())
    out = {}
    for s in proto["sites"]:
        with open((PROTOCOL.parent / s["manifest"]).resolve(), newline="") as fh:
            out[s["id"]] = (list(csv.DictReader(fh)), (PROTOCOL.parent / s["image_root"]).resolve())
    return out


def _grey(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "L"
        return np.asarray(im)


def _readme_table(header_start: str) -> list[dict[str, str]]:
    lines = README.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(header_start))
    names = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for ln in lines[start + 2 :]:
        if not ln.startswith("|"):
            break
        rows.append(dict(zip(names, (c.strip().strip("`") for c in ln.strip("|").split("|")), strict=True)))
    return rows


def ellipse_circumference_px(mask: np.ndarray) -> float:
    """Perimeter (pixels) of the ellipse with the mask's second moments: a filled ellipse of semi-axes
    a, b has central moment eigenvalues a^2/4 and b^2/4; Ramanujan's second approximation."""
    ys, xs = np.nonzero(mask)
    lam = np.linalg.eigvalsh(np.cov(np.stack([xs, ys]).astype(float), bias=True))
    a, b = 2.0 * np.sqrt(lam[1]), 2.0 * np.sqrt(lam[0])
    h = ((a - b) / (a + b)) ** 2
    return float(np.pi * (a + b) * (1.0 + 3.0 * h / (10.0 + np.sqrt(4.0 - 3.0 * h))))


def test_committed_sample_stays_small():
    files = [p for p in SAMPLE.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert sum(p.stat().st_size for p in files) <= 8 * 1024**2


def test_manifests_hold_the_documented_columns_and_strata(sites):
    assert set(sites) == set(SITE_IDS)
    table = {r["site"]: r for r in _readme_table("| site | cases |")}
    seen_patients: set[str] = set()
    for sid, (rows, root) in sites.items():
        assert list(rows[0])[:8] == [
            "case_id", "patient_id", "image", "mask", "pixel_size_mm", "hc_quartile", "pixel_size_band",
            "head_circumference_mm",
        ]  # fmt: skip
        assert len(rows) == int(table[sid]["cases"]) == 40
        # ten subjects of each HC quartile per site; one image per subject, no subject at two sites
        assert sorted(r["hc_quartile"] for r in rows) == sorted(["Q1", "Q2", "Q3", "Q4"] * 10)
        patients = {r["patient_id"] for r in rows}
        assert len(patients) == len(rows) and not patients & seen_patients
        seen_patients |= patients
        for r in rows:
            assert (root / r["image"]).is_file() and (root / r["mask"]).is_file()
            src = float(r["source_pixel_size_mm"])
            band = "fine" if src < 0.11 else "medium" if src < 0.15 else "coarse"
            assert r["pixel_size_band"] == band


@needs_source
def test_pixel_size_and_circumference_are_hc18s_own(sites):
    """pixel_size_mm = block x HC18's CSV pixel size; head_circumference_mm = HC18's CSV value; no
    training subject (the 140 of the 300 not at a site) is at a site."""
    with open(SOURCE / "hc18_training_set_pixel_size_and_HC.csv", newline="") as fh:
        csv_rows = {r["filename"]: r for r in csv.DictReader(fh)}
    with open(SOURCE / "metadata.csv", newline="") as fh:
        subset = {Path(r["image"]).name for r in csv.DictReader(fh)}
    used = set()
    for sid, (rows, _root) in sites.items():
        for r in rows:
            orig = csv_rows[r["source_image"]]
            assert float(r["pixel_size_mm"]) == pytest.approx(BLOCK[sid] * float(orig["pixel size(mm)"]), rel=1e-8)
            assert float(r["head_circumference_mm"]) == pytest.approx(float(orig["head circumference (mm)"]))
            assert r["patient_id"] == f"hc18-{int(r['source_image'].split('_')[0]):03d}"
            used.add(r["source_image"])
    assert len(used) == 160 and used <= subset and len(subset - used) == 140


def test_masks_reproduce_the_reference_head_circumference(sites):
    """An ellipse fitted to each shipped mask, times the shipped pixel size, gives HC18's head
    circumference: the masks and the pixel sizes were downsized consistently."""
    for sid, (rows, root) in sites.items():
        errors = []
        for r in rows:
            mask = _grey(root / r["mask"])
            assert set(np.unique(mask)) <= {0, 255}
            hc = ellipse_circumference_px(mask > 0) * float(r["pixel_size_mm"])
            errors.append(hc / float(r["head_circumference_mm"]) - 1.0)
        assert np.median(np.abs(errors)) < 0.015, sid
        assert np.max(np.abs(errors)) < (0.05 if sid == "low_res" else 0.03), sid


@needs_source
def test_unshifted_sites_are_the_source_box_averaged(sites):
    """development/control/low_res pixels = Pillow's box reduction of the cropped source image (to one
    grey level: Pillow rounds halves up, make_sites to even); masks = the source mask's area fraction
    >= 1/2 per shipped pixel."""
    for sid in ("development", "control", "low_res"):
        rows, root = sites[sid]
        k = BLOCK[sid]
        for r in rows[:8]:
            with Image.open(SOURCE / "images" / r["source_image"]) as im:
                src = im.convert("L")
                w, h = (src.width // k) * k, (src.height // k) * k
                expected = np.asarray(src.crop((0, 0, w, h)).reduce(k), dtype=int)
            got = _grey(root / r["image"]).astype(int)
            assert got.shape == expected.shape and np.abs(got - expected).max() <= 1
            stem = r["source_image"].removesuffix(".png")
            with Image.open(SOURCE / "masks" / f"{stem}_mask.png") as im:
                frac = np.asarray(im.convert("L").crop((0, 0, w, h)).point(lambda v: 255 if v else 0).reduce(k)) / 255
            mask = _grey(root / r["mask"]) > 0
            # Pillow's 8-bit box mean rounds; only pixels within rounding of exactly 1/2 may differ
            undecided = np.abs(frac - 0.5) < 1 / 255
            assert np.array_equal(mask[~undecided], frac[~undecided] >= 0.5)


@needs_source
def test_probe_b_applies_the_documented_curve_and_speckle(sites):
    """Mean grey level = the documented tone curve of the box-averaged source (speckle has mean 1), and
    the speckle adds pixel-to-pixel variation: the residual v' / curve(v) has SD near that of 4-look
    speckle smoothed by a Gaussian of sigma 0.7 px (about 0.5 x 0.36)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    smoothed = gaussian_filter(rng.gamma(4.0, 0.25, size=(400, 400)), 0.7)
    speckle_sd = smoothed.std()
    rows, root = sites["probe_b"]
    for r in rows[:8]:
        with Image.open(SOURCE / "images" / r["source_image"]) as im:
            src = im.convert("L")
            w, h = (src.width // 4) * 4, (src.height // 4) * 4
            base = np.asarray(src.crop((0, 0, w, h)).reduce(4), dtype=float)
        curve = 255.0 * np.clip(1.4 * base / 255.0, 0, 1) ** 0.65
        got = _grey(root / r["image"]).astype(float)
        inside = (curve > 40) & (curve < 150)  # away from 0 and from clipping at 255
        ratio = got[inside] / curve[inside]
        assert ratio.mean() == pytest.approx(1.0, abs=0.03)
        assert ratio.std() == pytest.approx(speckle_sd, rel=0.15)


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4-neighbour outside the mask (outside the image counts as outside)."""
    p = np.pad(mask, 1)
    inner = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return mask & ~inner


def _hd95_brute_force(pred: np.ndarray, ref: np.ndarray, spacing: float) -> float:
    """Max of the two directed 95th percentiles (numpy linear) of nearest boundary distances, by an
    all-pairs distance matrix (no distance transform)."""
    if not pred.any() or not ref.any():
        return 0.0 if pred.any() == ref.any() else float(np.hypot(*pred.shape) * spacing)
    from scipy.spatial.distance import cdist

    d = cdist(np.argwhere(_boundary(pred)), np.argwhere(_boundary(ref))) * spacing
    return float(max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95)))


def _predict(program, images: list[np.ndarray]) -> list[np.ndarray]:
    """Predicted masks (p >= 0.5, as the protocol's threshold) at each image's own size."""
    import torch

    def model_input(image: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(image.astype(np.float32))[None, None]
        x = torch.nn.functional.interpolate(t, size=(64, 96), mode="bilinear", align_corners=False, antialias=True)
        return (x[0] / 255.0 - 0.5) / 0.5

    with torch.no_grad():
        logits = program(torch.stack([model_input(im) for im in images]))
    masks = []
    for logit, image in zip(logits, images, strict=True):
        up = torch.nn.functional.interpolate(logit[None], size=image.shape, mode="bilinear", align_corners=False)
        masks.append(up[0, 0].numpy() >= 0.0)
    return masks


@pytest.fixture(scope="module")
def programs():
    """The three shipped torch.export programs, loaded once (loading is the slow part)."""
    import torch

    return {name: torch.export.load(SAMPLE / f"{name}.pt2").module() for name in ("model", "baseline", "degraded")}


def test_checkpoints_load_and_agree_with_the_state_dict(programs):
    import torch

    x = torch.randn(3, 1, 64, 96, generator=torch.Generator().manual_seed(0))
    model = _sample_module("model_def").build_model()
    model.load_state_dict(torch.load(SAMPLE / "model_state.pt", weights_only=True))
    model.eval()
    outputs = {}
    for name, program in programs.items():
        with torch.no_grad():
            outputs[name] = program(x)
        assert outputs[name].shape == (3, 1, 64, 96)
    with torch.no_grad():
        assert torch.allclose(model(x), outputs["model"], atol=1e-4)
    assert not torch.allclose(outputs["model"], outputs["baseline"], atol=1e-2)
    # README: the degraded checkpoint is the model with every logit lowered by 5
    assert torch.allclose(outputs["degraded"], outputs["model"] - 5.0, atol=1e-4)


def test_readme_dice_and_hd95_table_is_what_the_checkpoints_do(sites, programs):
    """The README's per-site table, recomputed with the exported programs and a naive Dice/HD95."""
    table = {(r["checkpoint"], r["site"]): r for r in _readme_table("| checkpoint | site |")}
    dice_by = {}
    for name, program in programs.items():
        for sid, (rows, root) in sites.items():
            dice, hd95 = [], []
            preds = _predict(program, [_grey(root / r["image"]) for r in rows])
            for r, pred in zip(rows, preds, strict=True):
                ref = _grey(root / r["mask"]) > 0
                assert pred.shape == ref.shape
                dice.append(2.0 * np.sum(pred & ref) / (pred.sum() + ref.sum()))
                hd95.append(_hd95_brute_force(pred, ref, float(r["pixel_size_mm"])))
            doc = table[(name, sid)]
            assert int(doc["n"]) == len(rows)
            assert float(doc["Dice mean"]) == pytest.approx(np.mean(dice), abs=5e-4)
            assert float(doc["Dice median"]) == pytest.approx(np.median(dice), abs=5e-4)
            assert float(doc["HD95 mm mean"]) == pytest.approx(np.mean(hd95), abs=5e-3)
            assert float(doc["HD95 mm median"]) == pytest.approx(np.median(hd95), abs=5e-3)
            dice_by[(name, sid)] = np.mean(dice)
    # the degraded checkpoint is worse than the model at every site (what the gate test relies on)
    assert all(dice_by[("degraded", s)] < dice_by[("model", s)] - 0.05 for s in SITE_IDS)


@needs_source
@pytest.mark.slow
def test_make_sites_rewrites_identical_files(tmp_path):
    make_sites = _sample_module("make_sites")
    assert make_sites.main(["--source", str(SOURCE), "--out", str(tmp_path)]) == 0
    shipped = sorted(p.relative_to(SAMPLE) for s in SITE_IDS for p in (SAMPLE / s).rglob("*.png"))
    written = sorted(p.relative_to(tmp_path) for s in SITE_IDS for p in (tmp_path / s).rglob("*.png"))
    assert shipped == written and len(shipped) == 320
    for rel in shipped + [Path(f"{s}.csv") for s in SITE_IDS]:
        assert (tmp_path / rel).read_bytes() == (SAMPLE / rel).read_bytes(), rel


# ---- end to end: these need the segmentation task in the protocol (slice segscore) and its analyses
# (slice segstats); until both are merged the protocol does not load and the tests skip.


def _segmentation_supported() -> bool:
    from validate.protocol import load_protocol

    try:
        load_protocol(PROTOCOL)
    except Exception:  # noqa: BLE001 - any refusal means the task is not there yet
        return False
    return True


needs_segmentation = pytest.mark.skipif(
    not _segmentation_supported(), reason="waits for task: segmentation (slices segscore + segstats)"
)


def _run(tmp: Path, *extra: str) -> tuple[subprocess.CompletedProcess, Path]:
    text = PROTOCOL.read_text().replace("../sample_sites", str(REPO / "sample_sites"))
    text = re.sub(r"n_bootstrap: \d+", "n_bootstrap: 200", text)
    protocol = tmp / "fetal_head.yaml"
    protocol.write_text(text)
    runs = tmp / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "validate", "run", str(protocol), "--runs-dir", str(runs), *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    bundles = [p for p in runs.iterdir() if not p.name.startswith(".")] if runs.is_dir() else []
    assert len(bundles) == 1, (proc.stdout, proc.stderr)
    return proc, bundles[0]


@needs_segmentation
@pytest.mark.slow
def test_degraded_checkpoint_fails_the_dice_gate(tmp_path):
    proc, bundle = _run(tmp_path, "--checkpoint", str(SAMPLE / "degraded.pt2"))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    gates = json.loads((bundle / "gates.json").read_text())
    assert gates["verdict"] == "fail"
    failed = {(r["gate"], r.get("site") or r["item"]) for r in gates["rows"] if r["verdict"] == "fail"}
    assert {("dice-each-site", s) for s in SITE_IDS} <= failed, failed


@needs_segmentation
@pytest.mark.slow
def test_shipped_model_runs_end_to_end_with_the_readme_dice(tmp_path, sites):
    """The suite's per-site mean Dice equals the README's (computed by the independent path above)."""
    proc, bundle = _run(tmp_path)
    assert proc.returncode in (0, 1), proc.stderr
    assert "Traceback" not in proc.stderr
    metrics = json.loads((bundle / "metrics.json").read_text())
    table = {r["site"]: r for r in _readme_table("| checkpoint | site |") if r["checkpoint"] == "model"}
    for sid in SITE_IDS:
        block = metrics["sites"][sid]
        assert block["n"] == 40
        assert block["dice"]["estimate"] == pytest.approx(float(table[sid]["Dice mean"]), abs=5e-4)
        assert block["hd95_mm"]["estimate"] == pytest.approx(float(table[sid]["HD95 mm mean"]), abs=5e-3)


def test_demo_includes_the_fetal_head_protocol():
    from validate.commands.demo import SAMPLES

    assert "fetal_head" in SAMPLES and PROTOCOL.is_file()
