"""Training side of each pretext: turn a batch of images into (inputs, targets) and score outputs.

A plug-in is small: ``make_batch(x, gen)`` on a normalised B x C x H x W float batch (on the
training device), ``loss(outputs, targets)``, ``correct(outputs, targets)``. The loop never
knows which pretext it runs. Inference pieces (rotations, heads) come from ``sslzoo.zoo.pretexts``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from sslzoo.zoo.pretexts import rotation


class Rotation:
    """RotNet: every image in all four rotations in the same batch, 4-way cross-entropy."""

    name = "rotation"
    samples_per_image = 4

    def make_batch(self, x: torch.Tensor, gen: torch.Generator | None = None):
        # x: B x C x H x W -> inputs 4B x C x H x W, targets 4B (0/90/180/270)
        return rotation.rotate_all(x)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), targets)

    def correct(self, logits: torch.Tensor, targets: torch.Tensor) -> int:
        return int((logits.argmax(-1) == targets).sum())


PRETEXTS = {"rotation": Rotation}


def get_pretext(name: str):
    try:
        return PRETEXTS[name]()
    except KeyError:
        raise ValueError(f"no training plug-in for pretext {name!r}; have {sorted(PRETEXTS)}") from None
