"""The heart sample sites: manifests against the raw UCI files, the shipped models against references.

References are independent of the code under test: the raw files are re-read here with pandas,
the counts and prevalences are the ones SOURCES.md states, and the model is checked against
scikit-learn's LogisticRegression fitted on an encoding re-implemented here from model_def's
documentation. The second model (v2, ``model_v2.pt2``: the same regression without ``ca`` and
``thal``) is checked the same way, on that encoding without those columns.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

HEART = Path(__file__).resolve().parents[1] / "sample_sites" / "heart"
FEATURES = [
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
# site id -> (UCI file stem, rows, prevalence in %), as ../shared/data/SOURCES.md states them
SOURCES = {
    "cleveland": ("cleveland", 303, 45.9),
    "hungary": ("hungarian", 294, 36.1),
    "switzerland": ("switzerland", 123, 93.5),
    "va": ("va", 200, 74.5),
}
# shipped model -> (state dict, torch.export program), as sample_sites/heart/README.md lists them
CHECKPOINTS = {"v1": ("model_state.pt", "model.pt2"), "v2": ("model_v2_state.pt", "model_v2.pt2")}
V2_LEFT_OUT = ("ca", "thal")


def _raw(shared_data: Path, site: str) -> pd.DataFrame:
    stem = SOURCES[site][0]
    return pd.read_csv(
        shared_data / "uci_heart" / f"processed.{stem}.data", header=None, names=FEATURES + ["num"], na_values="?"
    )


def _manifest(site: str) -> pd.DataFrame:
    return pd.read_csv(HEART / f"{site}.csv", dtype={"case_id": str, "patient_id": str, "sex_label": str})


def _load_module(name: str):
    spec = importlib.util.spec_from_file_location(f"heart_{name}", HEART / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load_program(variant: str):
    return torch.export.load(str(HEART / CHECKPOINTS[variant][1]))


def _load_state_model(variant: str):
    model_def = _load_module("model_def")
    model = model_def.build_model()
    model.load_state_dict(torch.load(HEART / CHECKPOINTS[variant][0], weights_only=True))
    return model.eval()


@pytest.fixture(scope="module")
def program():
    return _load_program("v1")


@pytest.fixture(scope="module")
def program_v2():
    return _load_program("v2")


def _x(frame: pd.DataFrame) -> torch.Tensor:
    return torch.tensor(frame[FEATURES].to_numpy(dtype=np.float32))


# ---- manifests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("site", SOURCES)
def test_manifest_matches_source_row_for_row(shared_data, site):
    raw, manifest = _raw(shared_data, site), _manifest(site)
    assert len(manifest) == len(raw)
    assert list(manifest.columns) == ["case_id", "patient_id", "label"] + FEATURES + ["sex_label"]
    expected_ids = [f"{site}-{i:04d}" for i in range(1, len(raw) + 1)]
    assert manifest["case_id"].tolist() == expected_ids
    assert manifest["patient_id"].tolist() == expected_ids
    np.testing.assert_array_equal(manifest["label"].to_numpy(), (raw["num"] > 0).astype(int).to_numpy())
    # same values and the same missing cells ('?' -> empty); assert_array_equal treats NaN == NaN
    np.testing.assert_array_equal(manifest[FEATURES].to_numpy(float), raw[FEATURES].to_numpy(float))
    np.testing.assert_array_equal(manifest[FEATURES].isna().to_numpy(), raw[FEATURES].isna().to_numpy())
    assert manifest["sex_label"].tolist() == ["male" if s == 1 else "female" for s in raw["sex"]]


def test_missing_coded_as_zero_is_kept(shared_data):
    # SOURCES.md: chol == 0 means missing, in all Swiss rows and 49 VA rows; the manifest keeps the 0
    assert (_manifest("switzerland")["chol"] == 0).all()
    assert (_manifest("va")["chol"] == 0).sum() == 49


@pytest.mark.parametrize("site", SOURCES)
def test_counts_and_prevalence_as_sources_md_states(site):
    _, rows, prevalence = SOURCES[site]
    manifest = _manifest(site)
    assert len(manifest) == rows
    assert round(100 * manifest["label"].mean(), 1) == prevalence


def test_make_manifests_reproduces_committed_files(shared_data, tmp_path):
    make = _load_module("make_manifests")
    assert make.main(["--data", str(shared_data), "--out", str(tmp_path)]) == 0
    for site in SOURCES:
        assert (tmp_path / f"{site}.csv").read_bytes() == (HEART / f"{site}.csv").read_bytes(), site


# ---- model -------------------------------------------------------------------------------------


def test_export_gives_finite_logits_on_missing_values(program):
    module = program.module()
    for site in SOURCES:
        frame = _manifest(site)
        x = _x(frame)
        has_missing = torch.isnan(x).any(dim=1) | (x[:, FEATURES.index("chol")] == 0)
        with torch.no_grad():
            out = module(x)
        assert out.shape == (len(frame), 1)
        assert torch.isfinite(out).all(), site
        if site != "cleveland":
            assert has_missing.sum() > 0
    with torch.no_grad():
        one = module(torch.full((1, 13), float("nan")))  # batch of one, everything missing
    assert one.shape == (1, 1) and torch.isfinite(one).all()


@pytest.mark.parametrize("variant", CHECKPOINTS)
def test_state_dict_and_factory_match_export(variant):
    x = torch.cat([_x(_manifest(site)) for site in SOURCES])
    with torch.no_grad():
        exported = _load_program(variant).module()(x)
        eager = _load_state_model(variant)(x)
    torch.testing.assert_close(eager, exported, atol=1e-6, rtol=0)


def _reference_encoding(frame: pd.DataFrame, dev: pd.DataFrame, without: tuple[str, ...] = ()) -> np.ndarray:
    """model_def's documented encoding, re-implemented with pandas from its description, leaving out
    the columns of the features in ``without``."""

    def clean(f):
        f = f[FEATURES].astype(float).copy()
        f.loc[f["chol"] == 0, "chol"] = np.nan
        f.loc[f["trestbps"] == 0, "trestbps"] = np.nan
        return f

    f, d = clean(frame), clean(dev)
    cols = []
    for name in ["age", "trestbps", "chol", "thalach", "oldpeak", "ca"]:
        if name not in without:
            cols.append(((f[name] - d[name].mean()) / d[name].std(ddof=0)).fillna(0.0))
    for name in ["sex", "fbs", "exang"]:
        cols.append(f[name].fillna(d[name].mean()))
    for name, codes in {"cp": [1, 2, 3, 4], "restecg": [0, 1, 2], "slope": [1, 2, 3], "thal": [3, 6, 7]}.items():
        if name in without:
            continue
        known_dev = d[name].isin(codes)
        known = f[name].isin(codes)
        for code in codes:
            freq = (d.loc[known_dev, name] == code).mean()
            cols.append((f[name] == code).astype(float).where(known, freq))
    return np.column_stack(cols)


def test_model_is_the_documented_penalised_logistic_regression(shared_data, program):
    # the whole pipeline (missing handling, encoding, fit) against sklearn on an independent encoding
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    dev = _raw(shared_data, "cleveland")
    reference = LogisticRegression(C=1.0, tol=1e-10, max_iter=10000)
    reference.fit(_reference_encoding(dev, dev), (dev["num"] > 0).astype(int))
    for site in SOURCES:
        raw = _raw(shared_data, site)
        expected = reference.decision_function(_reference_encoding(raw, dev))
        with torch.no_grad():
            got = program.module()(_x(raw)).squeeze(1).double().numpy()
        np.testing.assert_allclose(got, expected, atol=2e-4, rtol=0, err_msg=site)
        if site != "cleveland":
            # external discrimination sensible for this cohort, not degenerate
            assert 0.65 < roc_auc_score(raw["num"] > 0, got) < 0.95, site


def test_v2_is_the_same_regression_without_ca_and_thal(shared_data, program_v2):
    # v2 against sklearn fitted on the independent encoding without ca and thal (18 columns)
    from sklearn.linear_model import LogisticRegression

    dev = _raw(shared_data, "cleveland")
    reference = LogisticRegression(C=1.0, tol=1e-10, max_iter=10000)
    reference.fit(_reference_encoding(dev, dev, V2_LEFT_OUT), (dev["num"] > 0).astype(int))
    assert reference.coef_.shape == (1, 18)
    for site in SOURCES:
        raw = _raw(shared_data, site)
        expected = reference.decision_function(_reference_encoding(raw, dev, V2_LEFT_OUT))
        with torch.no_grad():
            got = program_v2.module()(_x(raw)).squeeze(1).double().numpy()
        np.testing.assert_allclose(got, expected, atol=2e-4, rtol=0, err_msg=site)


def test_v2_ignores_ca_and_thal_and_differs_from_v1(program, program_v2):
    # same 13 inputs; scrambling ca and thal (or blanking them) leaves v2's logits bit for bit
    x = torch.cat([_x(_manifest(site)) for site in SOURCES])
    scrambled = x.clone()
    for name, value in zip(V2_LEFT_OUT, (3.0, 7.0), strict=True):
        scrambled[:, FEATURES.index(name)] = value
    blanked = x.clone()
    blanked[:, [FEATURES.index(n) for n in V2_LEFT_OUT]] = float("nan")
    with torch.no_grad():
        v2 = program_v2.module()(x)
        assert torch.equal(program_v2.module()(scrambled), v2)
        assert torch.equal(program_v2.module()(blanked), v2)
        assert not torch.equal(program.module()(scrambled), program.module()(x))  # v1 does use them
        assert (v2 - program.module()(x)).abs().max() > 0.1


@pytest.mark.parametrize("variant", CHECKPOINTS)
def test_training_reproduces_committed_weights(variant):
    # the fit itself, in this process (it needs no seed: full-batch L-BFGS from zero on fixed rows)
    train_model = _load_module("train_model")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the script runs it
    try:
        fresh = train_model.train(HEART, variant).state_dict()
    finally:
        torch.set_num_threads(threads)
    committed = _load_state_model(variant).state_dict()
    assert fresh.keys() == committed.keys()
    for key in committed:
        assert torch.equal(fresh[key], committed[key]), key


@pytest.mark.slow
def test_training_script_is_deterministic(tmp_path):
    # the committed script end to end in a fresh process, both models (imports dominate: ~10-30 s)
    result = subprocess.run(
        [sys.executable, str(HEART / "train_model.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("AUROC=") == 4 * len(CHECKPOINTS)
    x = torch.cat([_x(_manifest(site)) for site in SOURCES])
    for variant, (state_file, export_file) in CHECKPOINTS.items():
        assert (tmp_path / state_file).read_bytes() == (HEART / state_file).read_bytes(), variant
        with torch.no_grad():
            fresh = torch.export.load(str(tmp_path / export_file)).module()(x)
            assert torch.equal(fresh, _load_program(variant).module()(x)), variant


@pytest.mark.parametrize("variant", CHECKPOINTS)
def test_checkpoints_are_small(variant):
    state_file, export_file = CHECKPOINTS[variant]
    assert (HEART / state_file).stat().st_size < 20_000
    assert (HEART / export_file).stat().st_size < 200_000
