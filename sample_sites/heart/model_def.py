"""The heart sample model: penalised logistic regression with its own missing-value handling.

Input: float32 tensor ``[N, 13]``, columns in the order of ``FEATURES`` (the UCI names),
NaN for a missing value. Output: one logit per case, shape ``[N, 1]`` (positive class:
heart disease present, ``num > 0``).

Everything the model needs to turn raw UCI values into its inputs lives inside it, as
buffers estimated on the Cleveland development site, so a scorer only has to hand over
the manifest columns as they are:

1. Values coded as 0 where 0 is impossible are missing: ``chol == 0`` (all Swiss rows,
   49 VA rows) and ``trestbps == 0`` (one VA row).
2. Encoding (22 columns): the continuous features ``age trestbps chol thalach oldpeak ca``
   standardised with Cleveland's mean and standard deviation (ddof = 0, observed values);
   the binary features ``sex fbs exang`` as 0/1; the categorical features ``cp restecg
   slope thal`` one-hot over their documented codes (heart-disease.names).
3. Missing value (or a code outside the documented ones): replaced by the Cleveland mean
   of its encoded column(s), i.e. 0 for a standardised feature, the Cleveland proportion
   for a binary feature and the Cleveland category frequencies for a one-hot group. For a
   linear model this means a missing feature adds its Cleveland-average contribution to the
   logit. No missing-indicator columns: Cleveland has only 6 missing cells (ca 4, thal 2),
   too few to learn what missingness means, while at the external sites ca, thal and slope
   are mostly missing, so an indicator's weight would shift whole sites on 6 cases' say.

``build_model()`` returns the untrained module (buffers neutral); load ``model_state.pt``
into it to get the shipped model. ``train_model.py`` fits it.
"""

from __future__ import annotations

import torch
from torch import nn

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
CONTINUOUS = ["age", "trestbps", "chol", "thalach", "oldpeak", "ca"]
BINARY = ["sex", "fbs", "exang"]
# documented codes of each categorical feature (heart-disease.names)
CATEGORICAL = {
    "cp": [1.0, 2.0, 3.0, 4.0],  # typical angina, atypical angina, non-anginal pain, asymptomatic
    "restecg": [0.0, 1.0, 2.0],  # normal, ST-T abnormality, left ventricular hypertrophy
    "slope": [1.0, 2.0, 3.0],  # upsloping, flat, downsloping
    "thal": [3.0, 6.0, 7.0],  # normal, fixed defect, reversible defect
}
ZERO_IS_MISSING = ["trestbps", "chol"]
N_ENCODED = len(CONTINUOUS) + len(BINARY) + sum(len(v) for v in CATEGORICAL.values())


# the input feature behind each of the N_ENCODED columns of ``HeartModel.encode``, in order
ENCODED_FEATURES = CONTINUOUS + BINARY + [name for name, codes in CATEGORICAL.items() for _ in codes]


def _index(names: list[str]) -> torch.Tensor:
    return torch.tensor([FEATURES.index(n) for n in names], dtype=torch.long)


class HeartModel(nn.Module):
    """Logistic regression over the encoding described in the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        zero_missing = torch.zeros(len(FEATURES), dtype=torch.bool)
        zero_missing[_index(ZERO_IS_MISSING)] = True
        self.register_buffer("zero_is_missing", zero_missing)
        self.register_buffer("continuous_index", _index(CONTINUOUS))
        self.register_buffer("continuous_mean", torch.zeros(len(CONTINUOUS)))
        self.register_buffer("continuous_std", torch.ones(len(CONTINUOUS)))
        self.register_buffer("binary_index", _index(BINARY))
        self.register_buffer("binary_mean", torch.zeros(len(BINARY)))
        for name, codes in CATEGORICAL.items():
            self.register_buffer(f"{name}_codes", torch.tensor(codes))
            self.register_buffer(f"{name}_freq", torch.full((len(codes),), 1.0 / len(codes)))
        self.linear = nn.Linear(N_ENCODED, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Raw ``[N, 13]`` features (NaN = missing) -> encoded ``[N, 22]`` without NaN."""
        x = torch.where(self.zero_is_missing & (x == 0), torch.nan, x)
        z = (x[:, self.continuous_index] - self.continuous_mean) / self.continuous_std
        z = torch.where(torch.isnan(z), torch.zeros_like(z), z)
        b = x[:, self.binary_index]
        b = torch.where(torch.isnan(b), self.binary_mean.expand_as(b), b)
        parts = [z, b]
        for name in CATEGORICAL:
            codes = getattr(self, f"{name}_codes")
            freq = getattr(self, f"{name}_freq")
            column = x[:, FEATURES.index(name)].unsqueeze(1)
            onehot = (column == codes).to(x.dtype)  # NaN matches no code
            known = onehot.sum(dim=1, keepdim=True) > 0
            parts.append(torch.where(known, onehot, freq.expand_as(onehot)))
        return torch.cat(parts, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.encode(x))


def build_model() -> HeartModel:
    """Factory for the state-dict checkpoint: ``load_state_dict(torch.load('model_state.pt'))``."""
    return HeartModel()
