"""Training side of each pretext: turn a batch of images into (inputs, targets) and score outputs.

A plug-in is small: ``make_batch(x, gen, dtype)`` on a normalised B x C x H x W float batch (on
the training device; at the model's input size, or at the images' own size when the plug-in sets
``resize_input = False``; ``dtype`` the inputs' dtype, the model's compute dtype, e.g. bf16 under
autocast, None: x's), ``loss(outputs, targets)``, ``correct(outputs, targets)``. The loop never
knows which pretext it runs. Inference pieces (rotations, tile cutting, heads) come from
``sslzoo.zoo.pretexts``. Plug-ins whose batches depend on the model (the jigsaw permutation set,
the tile geometry) are built by ``from_model(model)``, reading them from the model's head.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from sslzoo.zoo.pretexts import jigsaw, patches, relpatch, rotation


class _Classification:
    """Cross-entropy over the pretext's classes; accuracy by argmax."""

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), targets)

    def correct(self, logits: torch.Tensor, targets: torch.Tensor) -> int:
        return int((logits.argmax(-1) == targets).sum())


class Rotation(_Classification):
    """RotNet: every image in all four rotations in the same batch, 4-way cross-entropy."""

    name = "rotation"

    def make_batch(self, x: torch.Tensor, gen: torch.Generator | None = None, dtype: torch.dtype | None = None):
        # x: B x C x H x W -> inputs 4B x C x H x W, targets 4B (0/90/180/270)
        return rotation.rotate_all(x if dtype is None else x.to(dtype))


class Jigsaw(_Classification):
    """Noroozi & Favaro 2016: per image a random permutation of the set, the nine tiles (random
    crops in their cells) shuffled by it, per-tile normalised; target = its index; P-way CE.
    Colour input is made gray for 30 % of the images (the paper's loader)."""

    name = "jigsaw"
    resize_input = False  # cut_tiles resizes each tile's window to the grid: x comes at the source size
    grayscale_p = 0.3

    def __init__(self, permutations: torch.Tensor | None = None, cell: int = patches.CELL, tile: int = patches.TILE):
        perms = jigsaw.permutation_set() if permutations is None else permutations
        self.permutations = perms.detach().long().cpu()  # P x 9, drawn from on the CPU
        self.cell, self.tile = cell, tile

    @classmethod
    def from_model(cls, model) -> "Jigsaw":
        return cls(model.head.permutations, model.head.cell, model.head.tile)

    def make_batch(self, x: torch.Tensor, gen: torch.Generator | None = None, dtype: torch.dtype | None = None):
        # x: B x C x H x W -> inputs B x 9 x C x t x t (position i shows cell perm[i]), targets B (0..P-1)
        index = torch.randint(0, len(self.permutations), (x.shape[0],), generator=gen)  # B
        x = patches.random_grayscale(x, self.grayscale_p, gen)  # per image; no-op for 1 channel
        tiles = patches.cut_tiles(x, cell=self.cell, tile=self.tile, gen=gen, cells=self.permutations[index],
                                  normalize=True, dtype=dtype)  # B x 9 x C x t x t, each tile zero mean, unit std
        return tiles, index.to(x.device)


class RelativePatch(_Classification):
    """Doersch et al. 2015: per image the centre tile and one of its 8 neighbours at random (gap +
    jitter), colour anti-shortcut steps (colour input only) and per-patch normalisation;
    target = the neighbour's position; 8-way CE."""

    name = "relative-patch"
    resize_input = False  # as Jigsaw

    def __init__(self, cell: int = patches.CELL, tile: int = patches.TILE):
        self.cell, self.tile = cell, tile

    @classmethod
    def from_model(cls, model) -> "RelativePatch":
        return cls(model.head.cell, model.head.tile)

    def make_batch(self, x: torch.Tensor, gen: torch.Generator | None = None, dtype: torch.dtype | None = None):
        # x: B x C x H x W -> inputs B x 2 x C x t x t (centre, neighbour), targets B (0..7)
        positions = torch.randint(0, len(relpatch.NEIGHBOURS), (x.shape[0],), generator=gen)  # B
        pairs = relpatch.cut_pairs(x, relpatch.pair_cells(positions), cell=self.cell, tile=self.tile, gen=gen,
                                   dtype=dtype)
        return pairs, positions.to(x.device)


PRETEXTS = {"rotation": Rotation, "jigsaw": Jigsaw, "relative-patch": RelativePatch}


class UntrainableModel(ValueError):
    """A model the loop cannot train: no pretext head, or a pretext without a training plug-in."""


def trainable_models() -> list[str]:
    """Zoo names (``name.tag``) whose configuration has a pretext head and a training plug-in."""
    from sslzoo.zoo._registry import list_models, lookup

    names = []
    for name in list_models(tags=True):
        config = lookup(name)[1].config
        if config.get("pretext_args") is not None and config.get("pretext") in PRETEXTS:
            names.append(name)
    return names


def get_pretext(name: str, model=None):
    """The training plug-in of pretext ``name``; built from ``model`` when it needs the model's
    pretext settings (permutation set, tile geometry), else with its defaults. A model without a
    pretext head (a converted trunk saved without it) is refused here, before any data is read."""
    what = getattr(model, "name", None) or f"pretext {name!r}"
    if name not in PRETEXTS or (model is not None and model.head is None):
        why = "has no pretext head (a converted trunk saved without it)" if name in PRETEXTS else \
            f"has no training plug-in for pretext {name!r}"
        raise UntrainableModel(f"{what} {why}: it cannot be trained or its pretext evaluated; "
                               f"trainable: {', '.join(trainable_models())}")
    cls = PRETEXTS[name]
    return cls.from_model(model) if model is not None and hasattr(cls, "from_model") else cls()
