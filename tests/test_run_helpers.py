"""Shared fixtures for the `validate run` / report tests: a small synthetic multi-site predictions file
and its protocol, so every stage after scoring runs from a file in a few seconds.

The data are simulated (documented here): three sites; the development site's logits are calibrated;
``ext_flat`` has over-confident logits (true slope 0.6) and ``ext_small`` is a small site whose female
group has too few cases to judge.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SITES = (
    ("dev", "development", 260, 1.0, 0.0),
    ("ext_flat", "external", 220, 1.0 / 0.6, 0.3),
    ("ext_small", "external", 90, 1.0, -0.2),
)


def synthetic_predictions(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for site, _, n, stretch, shift in SITES:
        sex = rng.choice(["female", "male"], size=n, p=[0.15, 0.85] if site == "ext_small" else [0.45, 0.55])
        age = rng.integers(30, 85, size=n)
        true = rng.normal(-0.2, 1.6, size=n) + 0.3 * (sex == "male") + 0.02 * (age - 55)
        y = (rng.random(n) < 1 / (1 + np.exp(-(true + shift)))).astype(int)
        logit = true * stretch
        for i in range(n):
            rows.append(
                {
                    "case_id": f"MRN{site.upper()}{i:05d}",
                    "site": site,
                    "patient_id": f"PT{site.upper()}{i:05d}",
                    "y": int(y[i]),
                    "logit": float(logit[i]),
                    "sex": sex[i],
                    "age": int(age[i]),
                }
            )
    return pd.DataFrame(rows)


GATES_PASS = """
gates:
  - {name: auroc-overall, metric: auroc, scope: overall, min: 0.6, on: ci_low}
  - {name: ece-sites, metric: ece, scope: each_site, max: 0.5, on: estimate}
  - {name: worst-sex, metric: auroc, scope: worst_subgroup:sex, min: 0.5, insufficient: pass}
"""

GATE_FAIL = """
  - {name: designed-to-fail, metric: auroc, scope: each_site, min: 0.99, on: ci_low}
"""


def protocol_text(
    *, gates: str = GATES_PASS, n_bootstrap: int = 20, keep_case_ids: bool = False, predictions: str = "predictions.csv"
) -> str:
    sites = "\n".join(f"  - {{id: {s}, manifest: {s}.csv, role: {role}}}" for s, role, *_ in SITES)
    return f"""name: synthetic
version: "0.1"
description: simulated three-site binary model for tests
task: binary
classes: [negative, positive]
input: {{kind: tabular, features: [age]}}
model: {{checkpoint: {predictions}, format: predictions}}
sites:
{sites}
attributes: [sex, age]
subgroups:
  - {{name: sex, column: sex}}
  - {{name: age_band, column: age, bands: [50, 70]}}
  - {{name: sex_x_age_band, intersection: [sex, age_band]}}
metrics: {{n_bootstrap: {n_bootstrap}, seed: 0, bins: 10}}
calibration: {{designs: [held-out], methods: [temperature, platt], fit_on: [dev], seed: 0}}
keep_case_ids: {str(keep_case_ids).lower()}
{gates}"""


def make_protocol(folder: Path, name: str = "protocol.yaml", **kw) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    preds = folder / "predictions.csv"
    if not preds.exists():
        synthetic_predictions().to_csv(preds, index=False)
    path = folder / name
    path.write_text(protocol_text(**kw))
    return path


_RUNS: dict = {}


@pytest.fixture(scope="session")
def synthetic_bundle(tmp_path_factory):
    """One run of the synthetic protocol (all gates pass), shared by the run and report tests (imported
    into both modules, so the run is cached here to happen once per session)."""
    if "first" not in _RUNS:
        from validate.cli import main

        folder = tmp_path_factory.mktemp("synthetic")
        proto = make_protocol(folder)
        out = folder / "runs" / "first"
        code = main(["run", str(proto), "--out", str(out), "--quiet"])
        _RUNS["first"] = {"protocol": proto, "bundle": out, "exit_code": code, "folder": folder}
    return _RUNS["first"]
