"""The dashboard's data layer (finding runs, confinement, thumbnails) and a small fixture bundle that
the other dashboard tests share.

The fixture is written by hand from the contracts of DESIGN.md (Metrics JSON, Calibration JSON,
gates.json rows) with numbers chosen here; tests compare what the dashboard shows against these
numbers, read back from the fixture's own JSON, never against the dashboard's code.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the dashboard is a folder beside the package, not an installed module
    sys.path.insert(0, str(REPO))

SITES = {"alpha": "development", "beta": "external", "gamma": "external"}


def entry(est, lo, hi, method="bootstrap"):
    return {"estimate": est, "ci_low": lo, "ci_high": hi, "method": method}


def block(n, events, auroc, ece, slope, intercept, brier=0.18, **extra):
    sens = entry(0.70 + 0.001 * n, 0.55, 0.85)
    spec = entry(0.62, 0.48, 0.76)
    b = {
        "n": n,
        "n_events": events,
        "prevalence": events / n,
        "operating_points": [
            {
                "threshold": 0.5,
                "sensitivity": sens,
                "specificity": spec,
                "ppv": entry(0.66, 0.5, 0.8),
                "npv": entry(0.67, 0.5, 0.81),
            }
        ],
        "target_sensitivity": {
            "target": 0.9,
            "threshold": 0.2815,
            "carried": True,
            "sensitivity": entry(0.88, 0.75, 0.97),
            "specificity": entry(0.41, 0.28, 0.55),
            "ppv": entry(0.6, 0.45, 0.73),
            "npv": entry(0.8, 0.6, 0.93),
        },
        "auroc": entry(*auroc, method="delong"),
        "auprc": entry(auroc[0] - 0.05, auroc[1] - 0.05, auroc[2] - 0.05),
        "brier": entry(brier, brier - 0.03, brier + 0.03),
        "ece": entry(*ece),
        "calibration_slope": entry(*slope, method="wald"),
        "calibration_intercept": entry(*intercept, method="wald"),
        "hosmer_lemeshow": {"statistic": 9.2, "df": 8, "p_value": 0.33},
    }
    b.update(extra)
    return b


def metrics_json(shift_auroc=0.0):
    m = _metrics_json(shift_auroc)
    m["sites"]["alpha"]["target_sensitivity"]["carried"] = False  # the development site sets the threshold
    return m


def _metrics_json(shift_auroc):
    s = shift_auroc  # added to AUROC estimates and bounds: the fixture's upper bounds stay below 1 for s <= 0.015
    return {
        "task": "binary",
        "n_bootstrap": 200,
        "ci_level": 0.95,
        "seed": 0,
        "overall": block(
            100, 46, (0.801 + s, 0.712 + s, 0.889 + s), (0.061, 0.032, 0.094), (0.93, 0.61, 1.25), (-0.12, -0.53, 0.29)
        ),
        "sites": {
            "alpha": block(
                40,
                20,
                (0.872 + s, 0.761 + s, 0.983 + s),
                (0.041, 0.018, 0.087),
                (1.02, 0.55, 1.49),
                (0.03, -0.61, 0.67),
            ),
            "beta": block(
                40,
                20,
                (0.743 + s, 0.588 + s, 0.898 + s),
                (0.118, 0.071, 0.171),
                (0.64, 0.21, 1.07),
                (-0.48, -1.14, 0.18),
            ),
            "gamma": block(
                20,
                6,
                (0.690 + s, 0.420 + s, 0.960 + s),
                (0.150, 0.080, 0.260),
                (0.71, -0.20, 1.62),
                (0.21, -0.80, 1.22),
                insufficient=True,
                insufficient_reason="6 events < min_events 10",
            ),
        },
        "subgroups": {
            "sex": {
                "female": block(
                    45, 18, (0.781, 0.640, 0.922), (0.072, 0.040, 0.120), (0.88, 0.40, 1.36), (-0.20, -0.80, 0.40)
                ),
                "male": block(
                    55, 28, (0.815, 0.700, 0.930), (0.055, 0.030, 0.090), (0.97, 0.55, 1.39), (-0.05, -0.60, 0.50)
                ),
            }
        },
    }


def calibration_json():
    m = metrics_json()["sites"]
    return {
        "task": "binary",
        "design": "held-out",
        "fit_on": ["alpha"],
        "methods": {
            "none": {"params": {}, "sites": {"beta": m["beta"], "gamma": m["gamma"]}},
            "temperature": {
                "params": {"task": "binary", "n_classes": 2, "temperature": 1.37},
                "sites": {
                    "beta": block(
                        40, 20, (0.743, 0.588, 0.898), (0.081, 0.050, 0.130), (0.88, 0.30, 1.46), (-0.30, -0.95, 0.35)
                    ),
                    "gamma": block(
                        20,
                        6,
                        (0.690, 0.420, 0.960),
                        (0.120, 0.070, 0.220),
                        (0.97, -0.1, 2.0),
                        (0.1, -0.9, 1.1),
                        insufficient=True,
                        insufficient_reason="6 events < min_events 10",
                    ),
                },
            },
            "platt": {
                "params": {"task": "binary", "n_classes": 2, "slope": 0.81, "intercept": -0.22},
                "sites": {
                    "beta": block(
                        40, 20, (0.743, 0.588, 0.898), (0.064, 0.031, 0.110), (1.01, 0.41, 1.61), (-0.05, -0.70, 0.60)
                    ),
                    "gamma": block(
                        20,
                        6,
                        (0.690, 0.420, 0.960),
                        (0.131, 0.070, 0.240),
                        (1.05, 0.0, 2.1),
                        (0.0, -1.0, 1.0),
                        insufficient=True,
                        insufficient_reason="6 events < min_events 10",
                    ),
                },
            },
        },
        "recommended": "platt",
        "recommendation_note": "intervals of platt and temperature overlap",
        "designs": designs_json(),
    }


def summary(mean, spread=0.02):
    return {"mean": mean, "sd": spread / 2, "q025": mean - spread, "q975": mean + spread, "n": 5}


def design_methods(base, gain):
    """Per-method summaries of the repeated designs: 'none' at ``base``, each method ``gain`` lower."""
    out = {"none": {k: summary(base * f) for k, f in (("ece", 1), ("brier", 2), ("log_loss", 6))}}
    for i, m in enumerate(("temperature", "platt")):
        g = gain * (i + 1)
        out[m] = {k: summary((base - g) * f) for k, f in (("ece", 1), ("brier", 2), ("log_loss", 6))}
        out[m]["beats_none_log_loss"] = 0.6 + 0.2 * i
    return out


def designs_json():
    sizes = {
        str(n): {"n_fit": n, "n_eval": 40 - n, "repeats": 5, "methods": design_methods(0.12, 0.002 * n)}
        for n in (10, 20)
    }
    transfer = {
        m: {
            k: {
                f: {
                    e: round(0.05 + 0.01 * i + 0.02 * j + (0.03 if m == "none" else 0), 4)
                    for j, e in enumerate(SITES)
                    if e != f
                }
                for i, f in enumerate(SITES)
            }
            for k in ("ece", "brier", "log_loss")
        }
        for m in ("none", "temperature", "platt")
    }
    return {
        "local": {
            "fit_fraction": 0.5,
            "repeats": 5,
            "sites": {
                "beta": {"n_fit": 20, "n_eval": 20, "repeats": 5, "methods": design_methods(0.11, 0.02)},
                "gamma": {"skipped": "20 cases: too few to fit on 50% (>= 10) and evaluate on the rest (>= 20)"},
            },
        },
        "sample_size": {"sample_sizes": [10, 20], "repeats": 5, "sites": {"beta": {"n": 40, "sizes": sizes}}},
        "transfer": {
            "layout": "methods[method][metric][fit_site][eval_site]",
            "sites": list(SITES),
            "methods": transfer,
        },
    }


def gates_json():
    rows = []
    for site, verdict, value, reason in [
        ("alpha", "pass", 0.761, "0.761 >= 0.65"),
        ("beta", "fail", 0.588, "0.588 < 0.65"),
        ("gamma", "warn", 0.420, "too little data (6 events < min_events 10)"),
    ]:
        rows.append(
            {
                "gate": "auroc-each-site",
                "metric": "auroc",
                "scope": "each_site",
                "item": f"site {site}",
                "on": "ci_low",
                "direction": "min",
                "threshold": 0.65,
                "verdict": verdict,
                "reason": reason,
                "value": value,
                "estimate": None,
                "ci_low": value,
                "ci_high": None,
                "n": None,
                "n_events": None,
                "site": site,
                "subgroup": None,
                "group": None,
                "calibration": None,
                "insufficient": site == "gamma",
            }
        )
    rows.append(
        {
            "gate": "slope",
            "metric": "calibration_slope",
            "scope": "each_site",
            "item": "site beta",
            "on": "estimate",
            "direction": "min",
            "threshold": 0.5,
            "verdict": "pass",
            "reason": "0.64 >= 0.5",
            "value": 0.64,
            "estimate": 0.64,
            "ci_low": 0.21,
            "ci_high": 1.07,
            "n": 40,
            "n_events": 20,
            "site": "beta",
            "subgroup": None,
            "group": None,
            "calibration": None,
            "insufficient": False,
        }
    )
    return {
        "name": "fixture",
        "verdict": "fail",
        "exit_code": 1,
        "counts": {"pass": 2, "warn": 1, "fail": 1},
        "gates": [],
        "rows": rows,
    }


def subgroups_json():
    m = metrics_json()["subgroups"]["sex"]
    out = {
        "attributes": ["sex"],
        "groups": {"sex": ["female", "male"]},
        "ci_level": 0.95,
        "sites": {},
        "overall": {
            "subgroups": {
                "sex": {
                    g: {"block": m[g], "gap": {"auroc": entry(d, d - 0.1, d + 0.1)}}
                    for g, d in (("female", -0.02), ("male", 0.014))
                }
            }
        },
    }
    for k, site in enumerate(SITES):
        out["sites"][site] = {
            "subgroups": {
                "sex": {
                    "female": {
                        "block": block(
                            18 - 2 * k,
                            8 - k,
                            (0.80 - 0.05 * k, 0.62, 0.95),
                            (0.07, 0.03, 0.12),
                            (0.9, 0.3, 1.5),
                            (0.0, -0.7, 0.7),
                            **({"insufficient": True, "insufficient_reason": "6 events < 10"} if k else {}),
                        ),
                        "gap": {"auroc": entry(-0.03 - 0.01 * k, -0.15, 0.09)},
                    },
                    "male": {
                        "block": block(
                            22 - 2 * k,
                            12 - k,
                            (0.86 - 0.05 * k, 0.71, 0.99),
                            (0.05, 0.02, 0.09),
                            (1.0, 0.4, 1.6),
                            (0.0, -0.6, 0.6),
                        ),
                        "gap": {"auroc": entry(0.02 + 0.01 * k, -0.08, 0.12)},
                    },
                }
            }
        }
    return out


def shift_json():
    def finding(name, effect, p, flagged):
        return {
            "test": "ks",
            "statistic": effect,
            "p_value": p,
            "p_adjusted": min(1.0, 3 * p),
            "effect_name": name,
            "effect": effect,
            "threshold": 0.1,
            "exceeds_threshold": abs(effect) > 0.1,
            "significant": flagged,
            "flagged": flagged,
        }

    def ranking(findings):
        return [
            dict(f, id=f"{g}:{n}", group=g, name=n, material=f["flagged"] and f["exceeds_threshold"], rank=i + 1)
            for i, (g, n, f) in enumerate(findings)
        ]

    beta = [
        ("case_mix", "sex", finding("cramers_v", 0.31, 0.001, True)),
        ("labels", "prevalence", finding("difference", 0.0, 1.0, False)),
    ]
    gamma = [("scores", "p", finding("ks", 0.42, 0.0004, True))]
    return {
        "schema": "validate.shift/1",
        "task": "binary",
        "alpha": 0.05,
        "correction": "holm",
        "ci_level": 0.95,
        "seed": 0,
        "development": {"sites": ["alpha"], "n": 40, "n_events": 20, "prevalence": 0.5},
        "sites": {
            "beta": {
                "n": 40,
                "n_events": 20,
                "flagged": True,
                "material": True,
                "n_tests": 2,
                "ranking": ranking(beta),
            },
            "gamma": {
                "n": 20,
                "n_events": 6,
                "flagged": True,
                "material": True,
                "n_tests": 1,
                "ranking": ranking(gamma),
            },
        },
        "flagged_sites": ["beta", "gamma"],
        "material_sites": ["beta", "gamma"],
        "drift": {
            "freq": "M",
            "time_column": "acquired_at",
            "drift": True,
            "flagged_sites": ["beta"],
            "sites": {"beta": drift_site()},
        },
    }


def drift_site():
    windows = []
    for k in range(6):
        auc = 0.80 if k < 4 else 0.62
        windows.append(
            {
                "window": f"2023-{k + 1:02d}",
                "start": f"2023-{k + 1:02d}-01",
                "end": f"2023-{k + 1:02d}-28",
                "n": 30 + k,
                "n_events": 12,
                "reference": k < 3,
                "insufficient": False,
                "insufficient_reason": None,
                "prevalence": entry(0.4, 0.25, 0.57, "wilson"),
                "mean_score": entry(0.42, 0.38, 0.46),
                "auroc": entry(auc, auc - 0.12, auc + 0.1, "delong"),
                "ece": entry(0.06, 0.03, 0.11),
                "calibration_intercept": entry(0.0, -0.5, 0.5, "wald"),
                "tests": None,
                "cusum": None,
                "flagged": k >= 4,
                "cusum_alarm": k == 5,
            }
        )
    return {
        "freq": "M",
        "detector": "tests",
        "alpha": 0.05,
        "correction": "holm",
        "n_dated": 200,
        "n_undated": 0,
        "reference_windows": ["2023-01", "2023-02", "2023-03"],
        "windows": windows,
        "flagged_windows": ["2023-05", "2023-06"],
        "cusum_alarm_windows": ["2023-06"],
        "first_flagged": "2023-05",
        "drift": True,
    }


def sites_json():
    return {
        "task": "binary",
        "ci_level": 0.95,
        "sites": {
            site: {
                "name": name,
                "role": SITES[site],
                "n": n,
                "patients": n,
                "n_events": ev,
                "prevalence": entry(ev / n, ev / n - 0.1, ev / n + 0.1, "wilson"),
                "make_up": {"sex": {"female": n // 2, "male": n - n // 2}},
                "excluded": {"image file not found": 1} if site == "beta" else {},
                "n_excluded": int(site == "beta"),
            }
            for site, name, n, ev in (
                ("alpha", "Alpha General", 40, 20),
                ("beta", "Beta University Hospital", 40, 20),
                ("gamma", "Gamma Imaging Centre", 20, 6),
            )
        },
    }


def predictions_frame(seed=0, with_images=True):
    rng = np.random.default_rng(seed)
    frames = []
    for site, n, events in (("alpha", 40, 20), ("beta", 40, 20), ("gamma", 20, 6)):
        y = np.r_[np.ones(events, int), np.zeros(n - events, int)]
        logit = rng.normal(0, 1.2, n) + 1.1 * (2 * y - 1)
        df = pd.DataFrame(
            {
                "case_id": [f"{site}-{i:03d}" for i in range(n)],
                "site": site,
                "patient_id": [f"{site}-p{i:03d}" for i in range(n)],
                "y": y,
                "logit": logit,
                "sex": np.where(np.arange(n) % 2 == 0, "female", "male"),
            }
        )
        df["image"] = [f"img_{i:03d}.png" for i in range(n)] if (site == "gamma" and with_images) else None
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    # two planted confident errors with known ranks: a negative scored very high, a positive very low
    out.loc[(out.site == "beta") & (out.case_id == "beta-030"), "logit"] = 4.0  # y = 0
    out.loc[(out.site == "beta") & (out.case_id == "beta-001"), "logit"] = -3.5  # y = 1
    # one gamma error whose recorded image path tries to leave the image root
    out.loc[(out.site == "gamma") & (out.case_id == "gamma-019"), "logit"] = 5.0  # y = 0
    if with_images:
        out.loc[(out.site == "gamma") & (out.case_id == "gamma-019"), "image"] = "../secret.png"
    return out


def curves_json(pred):
    """curves.json as the engine writes it (validate.analysis.sites): the contract the figures read."""
    from validate.analysis.sites import site_curves
    from validate.metrics import MetricSettings

    settings = MetricSettings(n_bootstrap=20, cluster_by=None)
    return site_curves(
        pred.drop(columns=["image"]),
        task="binary",
        names=[],
        settings=settings,
        sites=list(SITES),
        calibration=calibration_json(),
        fit_on=["alpha"],
        groups=pred[["sex"]].astype(str),
    )


def cases_json(pred):
    """cases.json as the engine writes it (validate.analysis.cases): the ranking the Cases page lists."""
    from validate.analysis.cases import cases_file

    return cases_file(
        pred, task="binary", classes=["absent", "present"], thresholds=[0.5], attributes=["sex"], per_site=20
    )


PROTOCOL_YAML = """name: fixture
version: "2.1"
task: binary
classes: [absent, present]
positive_class: present
input: {kind: tabular, features: [x]}
sites:
  - {id: alpha, name: Alpha General, manifest: alpha.csv, role: development}
  - {id: beta, name: Beta University Hospital, manifest: beta.csv, role: external}
  - {id: gamma, name: Gamma Imaging Centre, manifest: gamma.csv, role: external, image_root: IMAGE_ROOT}
attributes: [sex]
subgroups:
  - {name: sex, column: sex}
metrics: {thresholds: [0.5], n_bootstrap: 200}
"""


def write_fixture_run(
    folder: Path,
    *,
    image_root: Path | None = None,
    shift: bool = True,
    auroc_shift: float = 0.0,
    seed: int = 0,
    name: str = "fixture",
) -> Path:
    """Write the fixture bundle into ``folder`` (created). ``image_root``: a folder of PNG images
    ``img_000.png``... for site gamma (made here when given)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "provenance.json").write_text(
        json.dumps(
            {
                "protocol": {
                    "name": name,
                    "version": "2.1",
                    "path": str(folder / "protocol.yaml"),
                    "sha256": "ab" * 32,
                },
                "checkpoint": {"path": "model.pt2", "sha256": "cd" * 32, "format": "export"},
                "started_at": "2024-05-01T10:00:00+00:00",
                "finished_at": "2024-05-01T10:01:00+00:00",
                "seeds": {"metrics": 0, "calibration": 0},
                "device": "cpu",
                "software": {"validate": "0.1.0"},
            }
        )
    )
    proto = PROTOCOL_YAML.replace("name: fixture", f"name: {name}")
    proto = proto.replace("IMAGE_ROOT", str(image_root) if image_root else "null")
    (folder / "protocol.yaml").write_text(proto)
    (folder / "metrics.json").write_text(json.dumps(metrics_json(auroc_shift)))
    (folder / "calibration.json").write_text(json.dumps(calibration_json()))
    (folder / "gates.json").write_text(json.dumps(gates_json()))
    (folder / "subgroups.json").write_text(json.dumps(subgroups_json()))
    (folder / "sites.json").write_text(json.dumps(sites_json()))
    if shift:
        (folder / "shift.json").write_text(json.dumps(shift_json()))
    pred = predictions_frame(seed, with_images=image_root is not None)
    pred.to_parquet(folder / "predictions.parquet", index=False)
    (folder / "curves.json").write_text(json.dumps(curves_json(pred)))
    (folder / "cases.json").write_text(json.dumps(cases_json(pred)))
    pd.DataFrame({"site": ["beta"], "case_id": ["beta-404"], "reason": ["image file not found: beta/404.png"]}).to_csv(
        folder / "failures.csv", index=False
    )
    (folder / "report.html").write_text("<html><body><h1>fixture report</h1></body></html>")
    if image_root is not None:
        from PIL import Image

        image_root.mkdir(parents=True, exist_ok=True)
        for i in range(20):
            arr = (np.arange(28 * 28).reshape(28, 28) * (i + 1) % 256).astype(np.uint8)
            Image.fromarray(arr).save(image_root / f"img_{i:03d}.png")
        Image.fromarray(np.full((28, 28), 255, np.uint8)).save(image_root.parent / "secret.png")
    return folder


@pytest.fixture
def fixture_runs(tmp_path):
    runs = tmp_path / "runs"
    write_fixture_run(runs / "fixture-v1", image_root=tmp_path / "images" / "gamma")
    return runs


# ---- tests of the data layer ---------------------------------------------------------------------


def test_discover_runs_lists_bundles_and_skips_staging_and_plain_folders(tmp_path):
    from dashboard.data import discover_runs

    runs = tmp_path / "runs"
    write_fixture_run(runs / "a")
    (runs / "b").mkdir()
    (runs / "b" / "metrics.json").write_text("{}")
    (runs / ".c.partial-1234").mkdir()
    (runs / ".c.partial-1234" / "metrics.json").write_text("{}")
    (runs / "notes").mkdir()
    assert sorted(p.name for p in discover_runs(runs)) == ["a", "b"]
    # a bundle folder given directly is one run
    assert [p.name for p in discover_runs(runs / "a")] == ["a"]
    assert discover_runs(tmp_path / "missing") == []


def test_runs_dir_comes_from_streamlit_arguments_then_environment():
    from dashboard.data import runs_dir_from_argv

    assert runs_dir_from_argv(["/x/dashboard/app.py", "/data/runs"], {}) == Path("/data/runs")
    assert runs_dir_from_argv(["pytest", "tests"], {"VALIDATE_DASHBOARD_RUNS": "/r"}) == Path("/r")
    assert runs_dir_from_argv(["pytest"], {}) == Path("runs")


def test_load_run_refuses_a_folder_outside_runs_dir(tmp_path):
    from dashboard.data import load_run
    from validate.errors import InputError

    write_fixture_run(tmp_path / "elsewhere" / "b")
    (tmp_path / "runs").mkdir()
    with pytest.raises(InputError, match="only opens bundles inside its runs folder"):
        load_run(tmp_path / "elsewhere" / "b", tmp_path / "runs")


def test_thumbnails_come_only_from_the_bundle_or_the_sites_image_root(tmp_path, fixture_runs):
    from dashboard.data import load_run, thumbnail

    run = load_run(fixture_runs / "fixture-v1", fixture_runs)
    png = thumbnail(run, "gamma", "gamma-000", "img_000.png")
    assert png is not None and png[:8] == b"\x89PNG\r\n\x1a\n"
    # ../secret.png exists but lies outside gamma's image root: refused
    assert (tmp_path / "images" / "secret.png").exists()
    assert thumbnail(run, "gamma", "gamma-019", "../secret.png") is None
    assert thumbnail(run, "gamma", "x", str(tmp_path / "images" / "secret.png")) is None
    # a site without an image root has no thumbnails
    assert thumbnail(run, "beta", "beta-001", "img_000.png") is None


def test_bundle_identity_changes_when_metrics_change(tmp_path):
    from dashboard.data import bundle_identity

    b = write_fixture_run(tmp_path / "b")
    before = bundle_identity(b)
    (b / "metrics.json").write_text(json.dumps(metrics_json(0.01)) + " ")
    assert bundle_identity(b) != before


def test_mover_difference_reduces_to_the_sum_of_variances_for_symmetric_intervals():
    from scipy.stats import norm

    from dashboard.compare import mover_difference

    z = norm.ppf(0.975)
    a, se_a, b, se_b = 0.80, 0.03, 0.75, 0.04
    d, lo, hi = mover_difference((a, a - z * se_a, a + z * se_a), (b, b - z * se_b, b + z * se_b))
    half = z * math.hypot(se_a, se_b)
    assert d == pytest.approx(0.05)
    assert lo == pytest.approx(0.05 - half) and hi == pytest.approx(0.05 + half)
    # asymmetric: each side uses the matching half-widths (Zou & Donner 2008, eq. for theta1 - theta2)
    d, lo, hi = mover_difference((0.9, 0.8, 0.95), (0.7, 0.6, 0.85))
    assert lo == pytest.approx(0.2 - math.sqrt(0.1**2 + 0.15**2))
    assert hi == pytest.approx(0.2 + math.sqrt(0.05**2 + 0.1**2))
    assert mover_difference((0.9, None, None), (0.7, 0.6, 0.8)) == (pytest.approx(0.2), None, None)
    assert mover_difference((None, None, None), (0.7, 0.6, 0.8)) == (None, None, None)


def test_thumbnails_stored_in_the_bundle_are_used_first(tmp_path):
    from PIL import Image

    from dashboard.data import has_thumbnails, load_run, thumbnail

    runs = tmp_path / "runs"
    b = write_fixture_run(runs / "b")  # no image root: predictions record no image path
    (b / "thumbnails" / "beta").mkdir(parents=True)
    stored = np.random.default_rng(1).integers(0, 256, (28, 28), dtype=np.uint8)
    Image.fromarray(stored).save(b / "thumbnails" / "beta" / "beta-030.png")
    run = load_run(b, runs)
    assert has_thumbnails(run, "beta") and not has_thumbnails(run, "alpha")
    png = thumbnail(run, "beta", "beta-030", None)
    # a small picture is enlarged by a whole factor (128 // 28 = 4), nearest neighbour: every value kept
    shown = np.asarray(Image.open(__import__("io").BytesIO(png)))
    assert shown.shape == (112, 112)
    np.testing.assert_array_equal(shown, np.kron(stored, np.ones((4, 4), np.uint8)))
    # an identifier cannot walk out of the site's thumbnail folder, even to another file of the bundle
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(b / "secret.png")
    assert thumbnail(run, "beta", "../../secret", None) is None
    assert thumbnail(run, "beta", "beta-001", None) is None
