"""Train the heart sample model on Cleveland and ship it as model.pt2 and model_state.pt.

The whole Cleveland site (303 patients) is the development set: the model's encoding
statistics (means, standard deviations, frequencies) and its weights are all estimated
on it, and Hungary, Switzerland and VA Long Beach are never seen. The fit is an
L2-penalised logistic regression, minimising

    mean binary cross-entropy + (lambda / 2) * ||w||^2,   lambda = 1 / n,  bias not penalised,

which is scikit-learn's ``LogisticRegression(C=1.0)`` on the same encoded columns (its
objective C * sum(loss) + ||w||^2 / 2, divided by C * n). It is solved to convergence in
float64 with full-batch L-BFGS from zero, so the result does not depend on a seed or on
the order of rows; the seeds, deterministic algorithms and single thread are there so that
nothing else can introduce run-to-run noise.

Writes (next to this script unless --out is given):
  model_state.pt  state dict for ``model_def.build_model()``
  model.pt2       the same model as a ``torch.export`` program, dynamic batch dimension

and prints the apparent (Cleveland) AUROC and accuracy at p >= 0.5, and both at each external site.

    .venv/bin/python sample_sites/heart/train_model.py [--manifests DIR] [--out DIR] [--no-export]
"""
from __future__ import annotations

import argparse
import importlib.util
import random
from pathlib import Path

import numpy as np
import pandas as pd
import torch

HERE = Path(__file__).resolve().parent


def _model_def():
    # by file path, under its own name: no sys.path change, no clash with another sample's model_def
    spec = importlib.util.spec_from_file_location("heart_model_def", HERE / "model_def.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_md = _model_def()
BINARY, CATEGORICAL, CONTINUOUS, FEATURES = _md.BINARY, _md.CATEGORICAL, _md.CONTINUOUS, _md.FEATURES
ZERO_IS_MISSING, HeartModel, build_model = _md.ZERO_IS_MISSING, _md.HeartModel, _md.build_model

SITES = ["cleveland", "hungary", "switzerland", "va"]
DEVELOPMENT = "cleveland"


def make_deterministic(seed: int = 0) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)


def load_site(manifests: Path, site: str) -> tuple[torch.Tensor, np.ndarray]:
    """Features ``[N, 13]`` float32 (NaN = missing) and labels 0/1 of one manifest."""
    frame = pd.read_csv(manifests / f"{site}.csv")
    x = torch.tensor(frame[FEATURES].to_numpy(dtype=np.float32))
    return x, frame["label"].to_numpy(dtype=np.int64)


def fit_encoding(model: HeartModel, x: torch.Tensor) -> None:
    """Set the model's encoding buffers from the development features (observed values only)."""
    x = x.double()
    for name in ZERO_IS_MISSING:
        col = x[:, FEATURES.index(name)]
        col[col == 0] = torch.nan
    with torch.no_grad():
        cont = x[:, [FEATURES.index(n) for n in CONTINUOUS]]
        mean = torch.nanmean(cont, dim=0)
        var = torch.nanmean((cont - mean) ** 2, dim=0)  # ddof = 0
        model.continuous_mean.copy_(mean)
        model.continuous_std.copy_(var.sqrt())
        model.binary_mean.copy_(torch.nanmean(x[:, [FEATURES.index(n) for n in BINARY]], dim=0))
        for name, codes in CATEGORICAL.items():
            col = x[:, FEATURES.index(name)]
            onehot = (col.unsqueeze(1) == torch.tensor(codes, dtype=x.dtype)).double()
            known = onehot.sum(dim=1) > 0
            getattr(model, f"{name}_freq").copy_(onehot[known].mean(dim=0))


def fit_weights(model: HeartModel, x: torch.Tensor, y: np.ndarray) -> None:
    """Penalised maximum likelihood for the linear layer (float64, L-BFGS to convergence)."""
    work = model.double()
    with torch.no_grad():
        encoded = work.encode(x.double())
    target = torch.tensor(y, dtype=torch.float64)
    lam = 1.0 / len(target)
    params = list(work.linear.parameters())
    optimiser = torch.optim.LBFGS(params, lr=1.0, max_iter=1000, tolerance_grad=1e-12,
                                  tolerance_change=1e-15, history_size=50, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        logit = work.linear(encoded).squeeze(1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, target)
        loss = loss + 0.5 * lam * work.linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    model.float()


def train(manifests: Path) -> HeartModel:
    x, y = load_site(manifests, DEVELOPMENT)
    model = build_model()
    fit_encoding(model, x)
    fit_weights(model, x, y)
    return model.eval()


def export(model: HeartModel, example: torch.Tensor, path: Path) -> None:
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model, (example,), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, str(path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifests", type=Path, default=HERE, help="folder holding the site manifests")
    parser.add_argument("--out", type=Path, default=HERE, help="where to write model_state.pt and model.pt2")
    parser.add_argument("--no-export", action="store_true", help="write model_state.pt only")
    args = parser.parse_args(argv)
    make_deterministic(0)
    from sklearn.metrics import roc_auc_score

    model = train(args.manifests)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out / "model_state.pt")
    if not args.no_export:
        example, _ = load_site(args.manifests, "hungary")  # has missing cells in most columns
        export(model, example[:8], args.out / "model.pt2")

    with torch.no_grad():
        for site in SITES:
            x, y = load_site(args.manifests, site)
            logit = model(x).squeeze(1).numpy()
            p = 1.0 / (1.0 + np.exp(-logit))
            role = "apparent" if site == DEVELOPMENT else "external"
            print(f"{site:12s} {role:8s} n={len(y):3d} events={int(y.sum()):3d} "
                  f"prevalence={y.mean():.3f} mean_p={p.mean():.3f} AUROC={roc_auc_score(y, logit):.3f} "
                  f"accuracy@0.5={np.mean((p >= 0.5) == (y == 1)):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
