"""A stand-in for clean-fid's TorchScript Inception with random weights: the same interface (`forward(x,
return_features)` resizing inside, `layers` for pre-resized input), 2048-d features. It checks the plumbing of
images -> features -> statistics -> distance; its distances are never FIDs."""

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class RandomInception(nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.layers = nn.Sequential(
            nn.Conv2d(3, 16, 5, stride=4), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(128, 2048), nn.ReLU(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return self.layers((x - 128.0) / 128.0)


def write(path: Path, seed: int = 0) -> Path:
    torch.jit.script(RandomInception(seed)).save(str(path))
    return path
