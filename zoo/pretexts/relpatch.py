"""Relative patch location (Doersch, Gupta & Efros, "Unsupervised Visual Representation Learning
by Context Prediction", ICCV 2015, arXiv:1505.05192): given the centre patch of a 3x3 grid and
one of its eight neighbours, say where the neighbour is.

Implemented: pairs are cut by the same function as the jigsaw tiles (``patches.cut_tiles``: a
gap between cells, random jitter inside each cell), the centre cell and one neighbour chosen at
random per image; per-patch normalisation; against the chromatic-aberration shortcut, colour
patches are, at random per patch, either made gray or have two of their three channels dropped
and replaced by faint Gaussian noise (1/100 of the patch's std, the paper's colour dropping).
For 1-channel input (Fashion-MNIST) there is no colour to exploit and the colour step is a
no-op. Network: the same trunk on both patches (shared weights), the two pool5 vectors
concatenated -> MLP -> 8 logits (the paper puts a per-patch fc6 before the concatenation and
is sized for 96-px ImageNet patches). Not implemented: the paper's random patch downsampling.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .patches import CELL, TILE, check_geometry, cut_tiles, grayscale, mlp, normalize_tiles, tile_features

CENTRE = 4  # row-major cell index of the middle of the 3x3 grid
PRETEXT = "relative-patch"
NEIGHBOURS = (0, 1, 2, 3, 5, 6, 7, 8)  # class k = the neighbour in cell NEIGHBOURS[k]
POSITIONS = ("top-left", "top", "top-right", "left", "right", "bottom-left", "bottom", "bottom-right")
COLOUR_P = 0.66  # share of colour patches that get grayscale or channel dropping (half each)
NOISE_STD = 0.01  # dropped channels: noise at 1/100 of the (normalised, unit) patch std


def pair_cells(positions: torch.Tensor) -> torch.Tensor:
    """positions B (0..7) -> the B x 2 cells to cut: (centre, the neighbour at that position)."""
    neighbour = torch.tensor(NEIGHBOURS, device=positions.device)[positions]
    return torch.stack([torch.full_like(neighbour, CENTRE), neighbour], dim=1)


def drop_colour_channels(x: torch.Tensor, mask: torch.Tensor, gen: torch.Generator | None = None,
                         noise_std: float = NOISE_STD) -> torch.Tensor:
    """Where ``mask`` (x.shape[:-3]) is set, keep one random channel of three and replace the two
    others with Gaussian noise of std ``noise_std``. x: ... x 3 x H x W."""
    keep = torch.randint(0, 3, x.shape[:-3], generator=gen).to(x.device)  # ...
    noise = (torch.randn(x.shape, generator=gen) * noise_std).to(x.device, x.dtype)
    dropped = mask.to(x.device)[..., None] & (torch.arange(3, device=x.device) != keep[..., None])  # ... x 3
    return torch.where(dropped[..., None, None], noise, x)


def _colour_steps(channels: int, gen: torch.Generator | None, colour_p: float) -> bool:
    """Whether the colour anti-shortcut steps apply: training (a generator), colour input, p > 0."""
    return gen is not None and channels != 1 and colour_p > 0


def prepare_pairs(pairs: torch.Tensor, gen: torch.Generator | None = None, colour_p: float = COLOUR_P) -> torch.Tensor:
    """Anti-shortcut steps and per-patch normalisation: pairs B x 2 x C x t x t -> same shape.

    With ``gen`` and 3 channels, each patch is made gray (p = colour_p / 2) or has two channels
    dropped to noise (p = colour_p / 2). Without ``gen`` (inference) or with one channel only
    the normalisation is applied.
    """
    if not _colour_steps(pairs.shape[-3], gen, colour_p):
        return normalize_tiles(pairs)
    u = torch.rand(pairs.shape[:-3], generator=gen)  # B x 2
    pairs = normalize_tiles(grayscale(pairs, u < colour_p / 2))
    return drop_colour_channels(pairs, (u >= colour_p / 2) & (u < colour_p), gen)


def cut_pairs(x: torch.Tensor, cells: torch.Tensor, *, cell: int = CELL, tile: int = TILE,
              gen: torch.Generator | None = None, colour_p: float = COLOUR_P,
              dtype: torch.dtype | None = None) -> torch.Tensor:
    """Cut (centre, neighbour) pairs from a batch and prepare them as ``prepare_pairs`` does:
    x B x C x H x W, cells B x 2 (``pair_cells``) -> B x 2 x C x t x t, in ``dtype`` (None: x's).
    Without colour steps (gray input, inference) the per-patch normalisation is done while
    cutting (one pass)."""
    if not _colour_steps(x.shape[1], gen, colour_p):
        return cut_tiles(x, cell=cell, tile=tile, gen=gen, cells=cells, normalize=True, dtype=dtype)
    pairs = prepare_pairs(cut_tiles(x, cell=cell, tile=tile, gen=gen, cells=cells), gen, colour_p)
    return pairs if dtype is None else pairs.to(dtype)


class RelativePatchHead(nn.Module):
    """Shared trunk on (centre, neighbour) -> concatenated pool5 -> MLP -> 8 position logits."""

    def __init__(self, num_features: int, hidden: int = 512, cell: int = CELL, tile: int = TILE):
        super().__init__()
        check_geometry(cell, tile)
        self.num_features, self.cell, self.tile = num_features, cell, tile
        self.mlp = mlp(2 * num_features, hidden, hidden, len(NEIGHBOURS))

    def forward(self, trunk: nn.Module, x: torch.Tensor) -> torch.Tensor:
        # x: B x 2 x C x t x t (centre first, per-patch normalised) -> B x 8 logits
        if x.dim() != 5 or x.shape[1] != 2:
            raise ValueError(f"relative-patch input must be B x 2 x C x t x t pairs (centre, neighbour), "
                             f"got shape {tuple(x.shape)}")
        feats = tile_features(trunk, x, self.num_features)  # B x 2 x F
        return self.mlp(feats.flatten(1))  # B x 2F -> B x 8


def build_head(trunk: nn.Module, input_size: Sequence[int], hidden: int = 512, cell: int = CELL,
               tile: int = TILE) -> RelativePatchHead:
    """The head for ``trunk``: it sees two ``tile`` x ``tile`` patches (in the model's channels)."""
    from . import flat_features

    return RelativePatchHead(flat_features(trunk, (input_size[0], tile, tile)), hidden=hidden, cell=cell, tile=tile)


def make_pair(image: torch.Tensor, position: int | None = None, model: nn.Module | None = None, *,
              gen: torch.Generator | None = None, normalize: bool = True) -> tuple[torch.Tensor, int]:
    """(centre, neighbour) from one C x H x W image: (pair 2 x C x t x t, position 0..7).

    position None draws one (from ``gen``); centre crops of the cells, in the model's geometry
    (default 76/64); ``normalize`` applies the per-patch normalisation (off for display).
    """
    head = getattr(model, "head", model)
    cell, tile = (head.cell, head.tile) if isinstance(head, RelativePatchHead) else (CELL, TILE)
    if image.dim() != 3:
        raise ValueError(f"make_pair expects one C x H x W image, got shape {tuple(image.shape)}")
    if position is None:
        position = int(torch.randint(0, len(NEIGHBOURS), (1,), generator=gen))
    if not 0 <= position < len(NEIGHBOURS):
        raise ValueError(f"position must be 0..7 ({', '.join(POSITIONS)}), got {position}")
    cells = pair_cells(torch.tensor([position], device=image.device))  # 1 x 2
    pair = cut_tiles(image[None], cell=cell, tile=tile, cells=cells, normalize=normalize)[0]  # 2 x C x t x t
    return pair, position
