"""Rotation prediction (RotNet; Gidaris, Singh & Komodakis, ICLR 2018).

The image is turned by 0/90/180/270 degrees and the network says which. All four turns of a
batch are made at once with ``torch.rot90`` on the whole tensor (device-agnostic, no PIL).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

PRETEXT = "rotation"
ANGLES = (0, 90, 180, 270)  # class k = counter-clockwise turn by k * 90 degrees


def rotate_all(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image in all four rotations, rotation-major.

    x: B x C x H x W (H == W) -> inputs 4B x C x H x W, targets 4B (0..3):
    rows [0, B) are unturned, [B, 2B) turned 90 degrees CCW, and so on.
    """
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rotation needs square images, got {tuple(x.shape[-2:])}")
    b = x.shape[0]
    inputs = torch.cat([torch.rot90(x, k, dims=(-2, -1)) for k in range(len(ANGLES))])
    targets = torch.arange(len(ANGLES), device=x.device).repeat_interleave(b)
    return inputs, targets


def rotate(x: torch.Tensor, k: int | torch.Tensor) -> torch.Tensor:
    """Turn images CCW by k * 90 degrees; k an int or a per-image B tensor."""
    if isinstance(k, int):
        return torch.rot90(x, k % 4, dims=(-2, -1))
    k = k.to(x.device) % len(ANGLES)
    out = torch.empty_like(x)
    for turn in range(len(ANGLES)):  # one rot90 per angle over the images that need it, not per image
        pick = k == turn
        if pick.any():
            out[pick] = torch.rot90(x[pick], turn, dims=(-2, -1))
    return out


def upright(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Undo the rotation the model predicts: image turned by -argmax * 90 degrees."""
    return rotate(x, -logits.argmax(-1))


class RotationHead(nn.Module):
    """pool5 -> MLP -> 4 rotation logits. RotNet's ImageNet head is 4096-4096-4; this one is
    sized for the input (``hidden``), keeping small-input models a few MB."""

    def __init__(self, num_features: int, hidden: int = 512, num_classes: int = len(ANGLES)):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Flatten(),
            nn.Linear(num_features, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, trunk: nn.Module, x: torch.Tensor) -> torch.Tensor:
        # x: B x C x H x W -> logits B x 4 (0/90/180/270)
        return self.mlp(trunk(x))


def build_head(trunk: nn.Module, input_size: Sequence[int], hidden: int = 512, num_classes: int = len(ANGLES)) -> RotationHead:
    """The head for ``trunk`` at the model's input size: it sees the whole (turned) image's pool5."""
    from . import flat_features

    return RotationHead(flat_features(trunk, input_size), hidden=hidden, num_classes=num_classes)
