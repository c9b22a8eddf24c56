"""Shift and drift on the embedded sample sites (real data; the chest sites' shifts are simulated and
documented in sample_sites/chest/make_sites.py and its README).

Predictions come from a bare forward pass of the shipped models (no `validate score` needed): the
models rebuilt by their factories from the shipped state dicts (the chest CNN's penultimate-layer
embedding is then available too). Per-case image statistics are computed here the way the
scorer is asked to (see validate/analysis/shift.py: img_* columns on pixel / 255, before resizing).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest

from validate.analysis.shift import shift_report
from validate.metrics import MetricSettings

torch = pytest.importorskip("torch")

HEART_FEATURES = [
    "age",
    "sex",
    "cp",
    "trestbps",
    "chol",
    "fbs",
    "restecg",
    "thalach",
    "exang",
    "oldpeak",
    "slope",
    "ca",
    "thal",
]
CHEST_SITES = ["development", "control", "vendor_b", "noisy_blur", "low_res", "drift_site", "low_prevalence"]
SETTINGS = MetricSettings(n_bootstrap=100)


@pytest.fixture(scope="module")
def heart_table(repo) -> pd.DataFrame:
    folder = repo / "sample_sites" / "heart"
    model = _state_dict_model(folder)
    parts = []
    for site in ["cleveland", "hungary", "switzerland", "va"]:
        df = pd.read_csv(folder / f"{site}.csv")
        with torch.no_grad():
            z = model(torch.tensor(df[HEART_FEATURES].to_numpy(np.float32)))[:, 0].numpy().astype(float)
        parts.append(df.assign(site=site, y=df["label"].astype(int), logit=z))
    return pd.concat(parts, ignore_index=True)


def _state_dict_model(folder):
    """The shipped model, rebuilt by its factory from the shipped state dict (faster than torch.export.load)."""
    spec = importlib.util.spec_from_file_location(f"{folder.name}_model_def", folder / "model_def.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    net = mod.build_model()
    net.load_state_dict(torch.load(folder / "model_state.pt", weights_only=True))
    return net.eval()


def _read(path) -> np.ndarray:
    if path.suffix == ".dcm":
        import pydicom

        return pydicom.dcmread(path).pixel_array.astype(np.float32)
    from PIL import Image

    return np.asarray(Image.open(path).convert("L"), dtype=np.float32)


@pytest.fixture(scope="module")
def chest_table(repo) -> pd.DataFrame:
    folder = repo / "sample_sites" / "chest"
    if not (folder / "model_state.pt").exists():
        pytest.skip("chest sample site not built")
    net = _state_dict_model(folder)
    parts = []
    for site in CHEST_SITES:
        df = pd.read_csv(folder / f"{site}.csv")
        imgs = [_read(folder / site / "images" / f) for f in df["image"]]
        a = np.stack(imgs) / 255.0  # all 28 x 28
        x = torch.tensor((a - 0.5) / 0.5, dtype=torch.float32)[:, None]
        with torch.no_grad():
            emb = net.features(x).mean(dim=(2, 3))
            z = net.head(emb)[:, 0].numpy().astype(float)
        flat = a.reshape(len(a), -1)
        q = np.percentile(flat, [1, 5, 50, 95, 99], axis=1)
        cols = {
            "site": site,
            "y": (df["label"] == "pneumonia").astype(int),
            "logit": z,
            "img_mean": flat.mean(axis=1),
            "img_std": flat.std(axis=1),
            "img_p01": q[0],
            "img_p05": q[1],
            "img_p50": q[2],
            "img_p95": q[3],
            "img_p99": q[4],
            "img_height": [i.shape[0] for i in imgs],
            "img_width": [i.shape[1] for i in imgs],
        }
        hist = np.stack([np.histogram(r, bins=16, range=(0.0, 1.0))[0] for r in flat])
        cols.update({f"img_hist_{j:02d}": hist[:, j] for j in range(16)})
        cols.update({f"emb_{j}": e for j, e in enumerate(emb.numpy().T)})
        parts.append(df.assign(**cols))
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def chest_report(chest_table) -> dict:
    return shift_report(
        chest_table,
        dev_sites="development",
        external_sites=CHEST_SITES[1:],
        attributes=["sex", "age"],
        metric_settings=SETTINGS,
        n_permutations=200,
    )


def test_heart_external_sites_flagged(heart_table):
    rep = shift_report(
        heart_table,
        dev_sites="cleveland",
        external_sites=["hungary", "switzerland", "va"],
        attributes=["sex_label", "age"],
        features=HEART_FEATURES,
        metric_settings=SETTINGS,
    )
    assert rep["flagged_sites"] == ["hungary", "switzerland", "va"]
    sites = rep["sites"]
    # Switzerland: 93.5% disease against Cleveland's 45.9% (SOURCES.md)
    assert sites["switzerland"]["labels"]["prevalence"]["flagged"]
    assert sites["switzerland"]["labels"]["prevalence"]["effect"] == pytest.approx(115 / 123 - 139 / 303)
    # ca is recorded for nearly every Cleveland patient and almost never elsewhere
    for s in ("hungary", "switzerland", "va"):
        assert sites[s]["missingness"]["ca"]["flagged"] and sites[s]["missingness"]["ca"]["effect"] > 0.9
    assert rep["drift"]["drift"] is False and rep["drift"]["reason"]


def test_chest_control_not_flagged_shifted_sites_flagged(chest_report):
    assert "control" not in chest_report["flagged_sites"]
    assert chest_report["flagged_sites"] == CHEST_SITES[2:]
    sites = chest_report["sites"]
    assert sites["vendor_b"]["equipment"]["manufacturer"]["flagged"]
    assert sites["vendor_b"]["images"]["intensity"]["img_mean"]["flagged"]  # the vendor's gamma curve
    assert sites["low_prevalence"]["labels"]["prevalence"]["flagged"]
    assert sites["noisy_blur"]["scores"]["p"]["flagged"]
    assert not sites["control"]["embedding"]["flagged"]
    assert sites["control"]["images"]["histogram"]["total_variation"] < 0.05


def test_chest_drift_site_late_windows_flagged_early_not(chest_report):
    drift = chest_report["drift"]
    assert drift["flagged_sites"] == ["drift_site"]
    site = drift["sites"]["drift_site"]
    assert site["drift"]
    # make_sites.py: months 1-6 of 2024 unchanged, contrast falls and noise rises from month 7
    assert site["flagged_windows"] and all(w >= "2024-07" for w in site["flagged_windows"])
    assert all(w >= "2024-07" for w in site["cusum_alarm_windows"])
    early = [w for w in site["windows"] if w["window"] <= "2024-06"]
    assert len(early) == 6 and not any(w["flagged"] or w["cusum_alarm"] for w in early)
