"""Linear probe on a frozen tap: pool to a fixed grid -> flatten -> standardise -> linear.

The pooling and the grid rule live here so the probe trainer (training/) and the demo's
classifier read features the same way.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

TARGET_DIMS = 4096  # "a few thousand dimensions" per tap, as in the RotNet/DeepCluster probes


def probe_grid(channels: int, height: int, width: int, target: int = TARGET_DIMS) -> tuple[int, int]:
    """Largest square grid g <= the map such that channels * g * g <= target (at least 1x1)."""
    g = max(1, int(math.isqrt(max(1, target // channels))))
    return min(g, height), min(g, width)


def pool_features(fmap: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """B x C x H x W map -> B x (C * gh * gw) average-pooled, flattened features."""
    return F.adaptive_avg_pool2d(fmap, grid).flatten(1)


class LinearProbe(nn.Module):
    """Pool a tap to ``grid``, standardise with stored statistics, linear classifier."""

    def __init__(self, channels: int, grid: tuple[int, int], num_classes: int):
        super().__init__()
        dims = channels * grid[0] * grid[1]
        self.grid = tuple(grid)
        self.register_buffer("mean", torch.zeros(dims))
        self.register_buffer("std", torch.ones(dims))
        self.linear = nn.Linear(dims, num_classes)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.pooled_logits(pool_features(fmap, self.grid))

    def pooled_logits(self, pooled: torch.Tensor) -> torch.Tensor:
        """Class logits from already pooled features (B x D): standardise, then the linear layer."""
        return self.linear((pooled - self.mean) / self.std)
