"""The volume sample model: a tiny 3D CNN in plain torch.nn (no MONAI, no torchvision).

Input: float32 [N, 1, 20, 20, 20], the volume in RAS+ axis order (axis 0 towards the patient's right,
1 anterior, 2 superior) at 2 mm isotropic spacing, windowed to HU [-160, 240] (centre 40, width
400) and mapped linearly to [0, 1] (protocols/volume.yaml's input block).
Output: one logit per volume, [N, 1]; sigmoid(logit) = P(lesion).
`build_model()` is the factory named in protocols/volume.yaml for loading `model_state.pt`.
"""

from __future__ import annotations

from torch import nn


class VolumeCNN(nn.Module):
    """Three 3x3x3 conv blocks with batch norm (without it this small net stalled at chance), global
    max pooling (a lesion is a local finding), one linear logit."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(1, 8, 3, padding=1),
            nn.BatchNorm3d(8),
            nn.ReLU(),
            nn.MaxPool3d(2),  # 20 -> 10
            nn.Conv3d(8, 16, 3, padding=1),
            nn.BatchNorm3d(16),
            nn.ReLU(),
            nn.MaxPool3d(2),  # 10 -> 5
            nn.Conv3d(16, 32, 3, padding=1),
            nn.BatchNorm3d(32),
            nn.ReLU(),
        )
        self.head = nn.Linear(32, 1)

    def forward(self, x):
        x = (x - 0.5) / 0.25  # the [0, 1] window centred and spread to about unit scale
        # amax over D, H, W instead of AdaptiveMaxPool3d: exports to a plain reduction
        return self.head(self.features(x).amax(dim=(2, 3, 4)))


def build_model() -> nn.Module:
    """Return an untrained VolumeCNN (load `model_state.pt` into it)."""
    return VolumeCNN()
