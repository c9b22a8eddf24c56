"""Train the heart sample models on Cleveland: model.pt2 (v1) and model_v2.pt2 (v2), each with its state dict.

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

Two variants share the model (``model_def.HeartModel``), its 13 inputs and its encoding, and
differ only in which encoded columns the fit may use:

  v1  all 22 encoded columns (the model ``protocols/heart.yaml`` validates);
  v2  without ``ca`` (vessels coloured by fluoroscopy) and ``thal`` (thallium scan): their
      weights are exactly 0. Both are mostly missing outside Cleveland (ca in 291 of 294
      Hungarian, 118 of 123 Swiss and 198 of 200 VA rows), where v1 can only impute them,
      so v2 is the candidate "built on what the other hospitals measure"
      (``protocols/heart-compare.yaml`` compares it with v1).

v2's fit is the same penalised likelihood restricted to the kept columns (lambda = 1 / n as
for v1), i.e. scikit-learn's ``LogisticRegression(C=1.0)`` on those 18 columns.

Writes (next to this script unless --out is given), for each variant:
  v1: model_state.pt     state dict for ``model_def.build_model()``
      model.pt2          the same model as a ``torch.export`` program, dynamic batch dimension
  v2: model_v2_state.pt, model_v2.pt2 (likewise)

and prints the apparent (Cleveland) AUROC and accuracy at p >= 0.5, and both at each external site.

    .venv/bin/python sample_sites/heart/train_model.py [--variant v1|v2|all] [--manifests DIR] [--out DIR] [--no-export]
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
ENCODED_FEATURES = _md.ENCODED_FEATURES

SITES = ["cleveland", "hungary", "switzerland", "va"]
DEVELOPMENT = "cleveland"

# variant -> (state dict file, torch.export file, input features the fit leaves out)
VARIANTS = {
    "v1": ("model_state.pt", "model.pt2", ()),
    "v2": ("model_v2_state.pt", "model_v2.pt2", ("ca", "thal")),
}


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


def kept_columns(excluded: tuple[str, ...] = ()) -> list[int]:
    """Indices of the encoded columns whose input feature is not in ``excluded``."""
    unknown = set(excluded) - set(FEATURES)
    if unknown:
        raise ValueError(f"not a model input: {sorted(unknown)}")
    return [i for i, name in enumerate(ENCODED_FEATURES) if name not in excluded]


def fit_weights(model: HeartModel, x: torch.Tensor, y: np.ndarray, excluded: tuple[str, ...] = ()) -> None:
    """Penalised maximum likelihood for the linear layer (float64, L-BFGS to convergence).

    Only the columns of features not in ``excluded`` enter the fit; the others' weights are set to
    exactly 0 (rather than fitting all columns with a mask, which could leave -0.0 or rounding dust).
    """
    work = model.double()
    keep = kept_columns(excluded)
    with torch.no_grad():
        encoded = work.encode(x.double())[:, keep]
    target = torch.tensor(y, dtype=torch.float64)
    lam = 1.0 / len(target)
    linear = torch.nn.Linear(len(keep), 1, dtype=torch.float64)
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    params = list(linear.parameters())
    optimiser = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=1000,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        history_size=50,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimiser.zero_grad()
        logit = linear(encoded).squeeze(1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, target)
        loss = loss + 0.5 * lam * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    with torch.no_grad():
        work.linear.weight.zero_()
        work.linear.weight[:, keep] = linear.weight
        work.linear.bias.copy_(linear.bias)
    model.float()


def train(manifests: Path, variant: str = "v1") -> HeartModel:
    """Fit one variant (``VARIANTS``) on the development site: encoding, then weights."""
    excluded = VARIANTS[variant][2]
    x, y = load_site(manifests, DEVELOPMENT)
    model = build_model()
    fit_encoding(model, x)
    fit_weights(model, x, y, excluded)
    return model.eval()


def export(model: HeartModel, example: torch.Tensor, path: Path) -> None:
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model, (example,), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, str(path))


def print_discrimination(model: HeartModel, manifests: Path) -> None:
    """Per site: n, events, prevalence, mean predicted probability, AUROC, accuracy at p >= 0.5."""
    from sklearn.metrics import roc_auc_score

    with torch.no_grad():
        for site in SITES:
            x, y = load_site(manifests, site)
            logit = model(x).squeeze(1).numpy()
            p = 1.0 / (1.0 + np.exp(-logit))
            role = "apparent" if site == DEVELOPMENT else "external"
            print(
                f"{site:12s} {role:8s} n={len(y):3d} events={int(y.sum()):3d} "
                f"prevalence={y.mean():.3f} mean_p={p.mean():.3f} AUROC={roc_auc_score(y, logit):.3f} "
                f"accuracy@0.5={np.mean((p >= 0.5) == (y == 1)):.3f}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=[*VARIANTS, "all"], default="all", help="which model(s) to train")
    parser.add_argument("--manifests", type=Path, default=HERE, help="folder holding the site manifests")
    parser.add_argument("--out", type=Path, default=HERE, help="where to write the checkpoints")
    parser.add_argument("--no-export", action="store_true", help="write the state dicts only")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for variant in VARIANTS if args.variant == "all" else [args.variant]:
        make_deterministic(0)
        state_file, export_file, excluded = VARIANTS[variant]
        model = train(args.manifests, variant)
        torch.save(model.state_dict(), args.out / state_file)
        if not args.no_export:
            example, _ = load_site(args.manifests, "hungary")  # has missing cells in most columns
            export(model, example[:8], args.out / export_file)
        print(f"{variant}: {export_file}, without {', '.join(excluded)}" if excluded else f"{variant}: {export_file}")
        print_discrimination(model, args.manifests)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
