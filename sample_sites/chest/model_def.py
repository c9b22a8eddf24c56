"""The chest sample model: a small CNN in plain torch.nn (no torchvision).

Input: float32 [N, 1, 28, 28], preprocessed as (pixel / 255 - 0.5) / 0.5.
Output: one logit per image, [N, 1]; sigmoid(logit) = P(pneumonia).
`build_model()` is the factory named in protocols/chest.yaml for loading `model_state.pt`.
"""

from __future__ import annotations

from torch import nn


class ChestCNN(nn.Module):
    """Three 3x3 conv blocks, global average pooling, one linear logit."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 28 -> 14
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 14 -> 7
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(64, 1)

    def forward(self, x):
        # mean over H, W instead of AdaptiveAvgPool2d: exports to a plain reduction
        return self.head(self.features(x).mean(dim=(2, 3)))


def build_model() -> nn.Module:
    """Return an untrained ChestCNN (load `model_state.pt` into it)."""
    return ChestCNN()
