"""Jigsaw (Noroozi & Favaro 2016), training side: per image a random permutation of the set, the
nine tiles (random crops in their cells) shuffled by it, per-tile normalised; target = its index;
P-way cross-entropy. Colour input is made gray for 30 % of the images (the paper's loader).
Tiles, permutation set and head: ``sslzoo.zoo.pretexts.jigsaw`` / ``patches``."""
from __future__ import annotations

import torch

from sslzoo.zoo.pretexts import jigsaw, patches

from ._protocol import Batch, Classification, register


@register
class Jigsaw(Classification):
    name = jigsaw.PRETEXT
    grayscale_p = 0.3

    def __init__(self, permutations: torch.Tensor | None = None, cell: int = patches.CELL, tile: int = patches.TILE):
        super().__init__()
        perms = jigsaw.permutation_set() if permutations is None else permutations
        self.permutations = perms.detach().long().cpu()  # P x 9, drawn from on the CPU (not state: the model has it)
        self.cell, self.tile = cell, tile

    @classmethod
    def from_model(cls, model) -> "Jigsaw":
        return cls(model.head.permutations, model.head.cell, model.head.tile)

    def make_batch(self, batch: Batch, gen=None, dtype=None):
        # source-size images B x C x h x w -> inputs B x 9 x C x t x t (position i shows cell perm[i]),
        # targets B (0..P-1); cut_tiles resizes each tile's window to the grid in one step
        x = batch.images
        index = torch.randint(0, len(self.permutations), (x.shape[0],), generator=gen)  # B
        x = patches.random_grayscale(x, self.grayscale_p, gen)  # per image; no-op for 1 channel
        tiles = patches.cut_tiles(x, cell=self.cell, tile=self.tile, gen=gen, cells=self.permutations[index],
                                  normalize=True, dtype=dtype)  # B x 9 x C x t x t, each tile zero mean, unit std
        return tiles, index.to(x.device)
