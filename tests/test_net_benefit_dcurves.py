"""Net benefit against Python ``dcurves`` (Sjoberg, Vickers et al.; the reference implementation of
decision curve analysis) on the four heart sites, over the protocol's threshold grid: the model's net
benefit, treat-all's, and net interventions avoided, equal to 1e-9.

``dcurves`` pins pandas below 3, so it never enters the project's environment: the test makes a separate
virtual environment (``~/.cache/validate-reference/dcurves``, or ``VALIDATE_REFERENCE_DIR``) with
``python -m venv`` + ``pip install dcurves`` and runs a small script there on a CSV of (site, y, p). The
probabilities are the shipped heart model's (torch.export program) on the committed manifests; both
sides read the same p, so the comparison is of the net-benefit arithmetic and the treat = p >= t rule.
Marked slow (making the environment downloads packages). When it cannot be made the test skips, unless
``CI`` or ``VALIDATE_REQUIRE_DCURVES=1`` is set, where it fails (as the R tests do)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from validate.metrics import MetricSettings, binary_block

REPO = Path(__file__).resolve().parents[1]
HEART = REPO / "sample_sites" / "heart"
SITES = ("cleveland", "hungary", "switzerland", "va")
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
DECISION_THRESHOLDS = (0.1, 0.2, 0.3)  # protocols/heart.yaml

REFERENCE_SCRIPT = r"""
import json, sys
import numpy as np
import pandas as pd
from dcurves import dca

frame = pd.read_csv(sys.argv[1])
grid = json.loads(sys.argv[2])
out = {}
for site, part in frame.groupby("site"):
    res = dca(data=part[["y", "p"]].reset_index(drop=True), outcome="y", modelnames=["p"], thresholds=grid)
    rows = []
    for rec in res.to_dict(orient="records"):
        rows.append({k: (float(v) if isinstance(v, (int, float, np.floating, np.integer)) else str(v))
                     for k, v in rec.items()})
    out[site] = rows
json.dump(out, sys.stdout)
"""


def _must_have_reference() -> bool:
    return bool(os.environ.get("CI")) or os.environ.get("VALIDATE_REQUIRE_DCURVES") == "1"


def _reference_python() -> Path:
    """The reference environment's interpreter, made on first use; skip (fail under CI) if it cannot be."""
    root = Path(os.environ.get("VALIDATE_REFERENCE_DIR", Path.home() / ".cache" / "validate-reference"))
    env = root / "dcurves"
    python = env / "bin" / "python"
    check = [str(python), "-c", "import dcurves"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    try:
        env.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(env)], check=True, capture_output=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "dcurves"], check=True, capture_output=True, timeout=1200
        )
        subprocess.run(check, check=True, capture_output=True)
    except (subprocess.SubprocessError, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        message = f"cannot make the dcurves reference environment at {env}: {exc} {detail[-500:]!r}"
        if _must_have_reference():
            pytest.fail(message)
        pytest.skip(message)
    return python


def _heart_cases() -> pd.DataFrame:
    """(site, y, p) of every heart case: the shipped torch.export model on the committed manifests."""
    import torch
    from scipy.special import expit

    program = torch.export.load(str(HEART / "model.pt2")).module()
    parts = []
    for site in SITES:
        m = pd.read_csv(HEART / f"{site}.csv")
        with torch.no_grad():
            logits = program(torch.tensor(m[FEATURES].to_numpy(dtype=np.float32))).numpy().reshape(-1)
        y = (m["label"].astype(str).isin(["1", "present"])).astype(int)
        parts.append(pd.DataFrame({"site": site, "y": y, "p": expit(logits.astype(np.float64))}))
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    python = _reference_python()
    cases = _heart_cases()
    path = tmp_path_factory.mktemp("dcurves") / "cases.csv"
    # the repr of a float64 round-trips exactly through CSV
    cases.to_csv(path, index=False, float_format="%.17g")
    cases = pd.read_csv(path)
    grid = list(MetricSettings.from_protocol(None, {}).decision_grid)
    result = subprocess.run(
        [str(python), "-c", REFERENCE_SCRIPT, str(path), json.dumps(grid)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return cases, grid, json.loads(result.stdout)


def _rows(reference_rows: list[dict], model: str) -> dict[float, dict]:
    return {round(r["threshold"], 10): r for r in reference_rows if r["model"] == model}


@pytest.mark.slow
@pytest.mark.parametrize("site", SITES)
def test_decision_curve_equals_dcurves(reference, site):
    from validate.analysis.decision import decision_curve

    cases, grid, ref = reference
    part = cases[cases["site"] == site]
    settings = MetricSettings.from_protocol({"n_bootstrap": 0}, {})
    curve = decision_curve(part["y"].to_numpy(float), part["p"].to_numpy(float), grid, settings=settings)
    model, treat_all, none = (_rows(ref[site], name) for name in ("p", "all", "none"))
    assert len(model) == len(grid)
    for j, t in enumerate(grid):
        assert curve["net_benefit"][j] == pytest.approx(model[t]["net_benefit"], abs=1e-9), t
        assert curve["treat_all"][j] == pytest.approx(treat_all[t]["net_benefit"], abs=1e-9), t
        assert none[t]["net_benefit"] == 0.0
    assert curve["prevalence"] == pytest.approx(model[grid[0]]["prevalence"], abs=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("site", SITES)
def test_block_decision_items_equal_dcurves(reference, site):
    cases, grid, ref = reference
    part = cases[cases["site"] == site]
    settings = MetricSettings.from_protocol({"n_bootstrap": 0}, {"thresholds": list(DECISION_THRESHOLDS)})
    block = binary_block(part["y"].to_numpy(float), part["p"].to_numpy(float), settings=settings)
    model, treat_all = _rows(ref[site], "p"), _rows(ref[site], "all")
    for item in block["decision"]:
        t = item["threshold"]
        assert item["net_benefit"]["estimate"] == pytest.approx(model[t]["net_benefit"], abs=1e-9)
        assert item["net_benefit_treat_all"]["estimate"] == pytest.approx(treat_all[t]["net_benefit"], abs=1e-9)
        avoided = model[t].get("net_intervention_avoided")
        if avoided is not None:  # dcurves gives it per 1 patient (net reduction in interventions)
            assert item["interventions_avoided"]["estimate"] / 100 == pytest.approx(avoided, abs=1e-9)
