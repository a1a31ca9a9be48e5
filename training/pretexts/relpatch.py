"""Relative patch location (Doersch et al. 2015), training side: per image the centre tile and one
of its 8 neighbours at random (gap + jitter), colour anti-shortcut steps (colour input only) and
per-patch normalisation; target = the neighbour's position; 8-way cross-entropy.
Pairs and head: ``sslzoo.zoo.pretexts.relpatch`` / ``patches``."""
from __future__ import annotations

import torch

from sslzoo.zoo.pretexts import patches, relpatch

from ._protocol import Batch, Classification, register


@register
class RelativePatch(Classification):
    name = relpatch.PRETEXT

    def __init__(self, cell: int = patches.CELL, tile: int = patches.TILE):
        super().__init__()
        self.cell, self.tile = cell, tile

    @classmethod
    def from_model(cls, model) -> "RelativePatch":
        return cls(model.head.cell, model.head.tile)

    def make_batch(self, batch: Batch, gen=None, dtype=None):
        # source-size images B x C x h x w -> inputs B x 2 x C x t x t (centre, neighbour), targets B (0..7)
        x = batch.images
        positions = torch.randint(0, len(relpatch.NEIGHBOURS), (x.shape[0],), generator=gen)  # B
        pairs = relpatch.cut_pairs(x, relpatch.pair_cells(positions), cell=self.cell, tile=self.tile, gen=gen,
                                   dtype=dtype)
        return pairs, positions.to(x.device)
