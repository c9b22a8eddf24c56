"""The fetal-head sample model: a small 2D U-Net in plain torch.nn (no MONAI, no torchvision).

Input: float32 [N, 1, 64, 96], the grey ultrasound image resized (bilinear, antialiased) to 64 x 96
pixels and normalised as (pixel / 255 - 0.5) / 0.5 (protocols/fetal_head.yaml's input block).
Output: one logit map per label, [N, 1, 64, 96] (label `head`, sigmoid activation); the suite
upsamples it to the reference mask's native size before thresholding at 0.5.
`build_model()` is the factory named in protocols/fetal_head.yaml for loading `model_state.pt`.
"""

from __future__ import annotations

import torch
from torch import nn


def _block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3 convolutions with batch norm and ReLU (the U-Net's unit, Ronneberger et al. 2015)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    )


class FetalHeadUNet(nn.Module):
    """A three-level U-Net: encoder 8-16-32 channels, bottleneck 64 at 1/8 resolution, a decoder that
    upsamples bilinearly and concatenates the encoder's features at each level (skip connections),
    and a 1x1 convolution to one logit per pixel. Input height and width must be multiples of 8."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        w = width
        self.enc1, self.enc2, self.enc3 = _block(1, w), _block(w, 2 * w), _block(2 * w, 4 * w)
        self.bottleneck = _block(4 * w, 8 * w)
        self.dec3, self.dec2, self.dec1 = _block(12 * w, 4 * w), _block(6 * w, 2 * w), _block(3 * w, w)
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.head = nn.Conv2d(w, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        e3 = self.enc3(self.pool(e2))
        b = self.bottleneck(self.pool(e3))
        d3 = self.dec3(torch.cat([self.up(b), e3], dim=1))
        d2 = self.dec2(torch.cat([self.up(d3), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up(d2), e1], dim=1))
        return self.head(d1)


def build_model() -> nn.Module:
    """Return an untrained FetalHeadUNet (load `model_state.pt` into it)."""
    return FetalHeadUNet()
