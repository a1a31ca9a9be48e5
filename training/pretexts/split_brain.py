"""Split-brain autoencoder ("cl,cl"; Zhang, Isola & Efros, CVPR 2017), training side. The split
trunk is ``sslzoo.zoo._split``, the head ``sslzoo.zoo.pretexts.split_brain``.

The L half learns colorization's task exactly as ``colorization`` trains it (same soft targets,
rebalancing prior counted in ``begin``, gray images weighing 0); the ab half classifies each
pixel's L (at 1/4, the same grid) into ``l_bins`` equal bins of [0, 100] with a plain
cross-entropy. Loss: the sum of the two; the halves share no parameter, so each learns only from its
own term. Headline metric: ``ab_accuracy`` of the L half (as colorization's), then ``l_accuracy`` of
the ab half and colorization's other figures.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from sslzoo.zoo import _colour
from sslzoo.zoo.pretexts import split_brain as zs

from ._protocol import Batch, register
from .colorization import ColourTargets, at_quarter


@register
class SplitBrain(ColourTargets):
    name = zs.PRETEXT

    def __init__(self, l_bins: int = zs.L_BINS, **colour):
        super().__init__(**colour)
        self.l_bins = int(l_bins)

    @classmethod
    def from_model(cls, model) -> "SplitBrain":
        h = model.head
        return cls(h.l_bins, grid=h.grid, neighbours=h.neighbours, sigma=h.sigma, rebalance=h.rebalance,
                   temperature=h.temperature)

    def make_batch(self, batch: Batch, gen=None, dtype=None):
        # RGB in [0, 1], B x 3 x H x W -> inputs: the same (each half takes its channels); targets: the
        # ab targets for the L half and "l_class" (B x h x w, the L bin at 1/4) for the ab half
        x = batch.resized()
        t = self.colour_targets(x)
        t["l_class"] = _colour.quantize_l(at_quarter(t.pop("lab")[:, 0]), self.l_bins)
        return (x if dtype is None else x.to(dtype)), t

    def loss(self, outputs: dict, targets: dict) -> torch.Tensor:
        return self.ab_loss(outputs["ab"], targets) + F.cross_entropy(outputs["L"].float(), targets["l_class"])

    def metrics(self, outputs: dict, targets: dict) -> dict[str, tuple[Any, int]]:
        ab = self.ab_metrics(outputs["ab"], targets)
        l_correct = float((outputs["L"].argmax(1) == targets["l_class"]).sum())
        first = next(iter(ab))
        return {first: ab.pop(first), "l_accuracy": (l_correct, targets["l_class"].numel()), **ab}
