"""Jigsaw puzzles (Noroozi & Favaro, "Unsupervised Learning of Visual Representations by Solving
Jigsaw Puzzles", ECCV 2016, arXiv:1603.09246): the nine tiles of an image are shuffled by one of
P permutations and the network says which.

Implemented as in the paper and its loader (MehdiNoroozi/JigsawPuzzlePytorch): the permutation
set is chosen greedily for maximal average Hamming distance over all 9! permutations (the first
one at random); a tile is a random crop inside its cell (gap + jitter, ``patches``); per-tile
normalisation; 30 % grayscale for colour input (training side). The network is the paper's
context-free network: the same trunk on each of the nine tiles (shared weights, one batch of
B * 9), a per-tile fc (``tile_hidden``: one width, or a list for a deeper per-tile MLP), the nine
outputs concatenated in tile order, a classifier over the P permutations. Sizes are for the input
(the zoo's fmnist weights: pool5 256 -> 1024 -> 512 per tile, 4608 -> 512 -> P) rather than the
paper's ImageNet 1024 / 4096. Not implemented: colour jitter (Fashion-MNIST is gray).

Convention: permutation ``perm`` shuffles tiles so that position i of the puzzle shows the tile of
cell ``perm[i]`` (row-major cells); the target is perm's index in the set.
"""
from __future__ import annotations

import functools
from typing import Sequence, Union

import numpy as np
import torch
from torch import nn

from .patches import CELL, NUM_CELLS, TILE, check_geometry, cut_tiles, grid_image, mlp, tile_features

PRETEXT = "jigsaw"
NUM_PERMUTATIONS = 1000  # the paper's main setting (100 is its cheaper variant)


# --- permutation sets -------------------------------------------------------------------------

def all_permutations(n: int = NUM_CELLS) -> np.ndarray:
    """Every permutation of range(n), built by insertion (not in lexicographic order): n! x n int8."""
    perms = np.zeros((1, 0), dtype=np.int8)
    for k in range(n):  # insert value k at each of the k + 1 positions of every permutation of range(k)
        m = len(perms)
        out = np.empty((m, k + 1, k + 1), dtype=np.int8)
        for j in range(k + 1):
            out[:, j, :j], out[:, j, j], out[:, j, j + 1:] = perms[:, :j], k, perms[:, j:]
        perms = out.reshape(m * (k + 1), k + 1)
    return perms


def _first_set_bit(words: np.ndarray) -> int:
    """Index of the lowest set bit of a little-endian packed bit array (one that has one)."""
    w = int(np.argmax(words != 0))
    word = int(words[w])
    return 64 * w + (word & -word).bit_length() - 1


@functools.lru_cache(maxsize=8)
def _greedy_set(size: int, seed: int) -> np.ndarray:
    """Greedy maximal-average-Hamming selection (the paper's algorithm), exact and fast.

    Candidates are all 9! permutations in a seeded random order (so the first pick and the
    tie-breaks are random but reproducible). Each step picks the first unchosen candidate with
    the largest summed Hamming distance to the chosen ones, i.e. the fewest matches
    sum_i K[i, c_i] (K[i, v] counts chosen permutations with value v at position i).

    Rather than rescoring all 362880 candidates per step it keeps the *frontier*, the unchosen
    candidates at the current minimum score, as a packed bit set: a pick adds >= 1 match exactly
    to the candidates sharing a position with it, so it clears those bits (9 precomputed masks,
    one OR and one AND over 45 KB) and the others keep the minimum. Only an empty frontier needs
    a rescore, and with K uniform (every 9 picks, in practice) all unchosen candidates tie, so no
    scoring is needed at all.
    """
    n = 362880
    cand = all_permutations()[np.random.default_rng(seed).permutation(n)]  # N x 9 int8
    values = np.arange(NUM_CELLS, dtype=np.int8)
    # has[i, v]: bit set of the candidates with value v at position i (9 x 9 x N/64 words)
    has = np.packbits(cand.T[:, None, :] == values[None, :, None], axis=-1, bitorder="little").view("<u8")
    free = np.packbits(np.ones(n, dtype=bool), bitorder="little").view("<u8")  # unchosen candidates
    counts = np.zeros((NUM_CELLS, NUM_CELLS), dtype=np.int64)  # K
    positions = np.arange(NUM_CELLS)
    picks: list[int] = []
    frontier = free.copy()  # K = 0: every candidate ties
    while len(picks) < size:
        if not frontier.any():  # rescore
            if counts.min() == counts.max():
                frontier = free.copy()
            else:
                score = counts[positions[:, None], cand.T].sum(0)  # N
                free_mask = np.unpackbits(free.view(np.uint8), bitorder="little").astype(bool)
                best = score[free_mask].min()
                frontier = np.packbits(free_mask & (score == best), bitorder="little").view("<u8")
        j = _first_set_bit(frontier)
        picks.append(j)
        p = cand[j]
        free[j // 64] &= ~np.uint64(1 << (j % 64))
        counts[positions, p] += 1
        frontier &= ~np.bitwise_or.reduce(has[positions, p], axis=0)  # drop all sharing a position (j too)
    return cand[picks]


def permutation_set(size: int = NUM_PERMUTATIONS, seed: int = 0) -> torch.Tensor:
    """``size`` permutations of the nine tiles chosen greedily for maximal average Hamming
    distance (Noroozi & Favaro's "maximal" set), reproducible from ``seed``: size x 9 int64."""
    if not 1 <= size <= 362880:
        raise ValueError(f"a permutation set of the 9 tiles has 1 to 9! = 362880 members, not {size}")
    return torch.from_numpy(_greedy_set(int(size), int(seed)).astype(np.int64))


def hamming_stats(perms: torch.Tensor | np.ndarray) -> tuple[int, float]:
    """(minimum, mean) Hamming distance over all pairs of a permutation set (P x 9, P >= 2)."""
    p = torch.as_tensor(np.asarray(perms)).long()
    if p.dim() != 2 or len(p) < 2:
        raise ValueError(f"need a P x n set with P >= 2, got shape {tuple(p.shape)}")
    d = torch.zeros(len(p), len(p), dtype=torch.int64)
    for i in range(p.shape[1]):  # n positions, each a P x P comparison
        d += p[:, None, i] != p[None, :, i]
    iu = torch.triu_indices(len(p), len(p), 1)
    pairs = d[iu[0], iu[1]]
    return int(pairs.min()), float(pairs.double().mean())


# --- the head ------------------------------------------------------------------------------------

class JigsawHead(nn.Module):
    """Context-free network top: trunk on each of the 9 tiles -> per-tile fc -> concat -> P logits.

    The permutation set is the buffer ``permutations`` (P x 9), saved with the weights, so a
    loaded model reads its predictions out against the set it was trained with.
    ``cell``/``tile`` are the tile geometry of its training (see ``patches``). ``tile_hidden`` is
    the width of the per-tile fc6 (the paper's one layer) or a list of widths for a deeper per-tile
    MLP; the last width is what each tile contributes to the concatenation.
    """

    def __init__(self, num_features: int, num_permutations: int = NUM_PERMUTATIONS, permutation_seed: int = 0,
                 tile_hidden: int | Sequence[int] = 512, hidden: int = 512, cell: int = CELL, tile: int = TILE):
        super().__init__()
        check_geometry(cell, tile)
        self.num_features, self.cell, self.tile = num_features, cell, tile
        self.register_buffer("permutations", permutation_set(num_permutations, permutation_seed))
        widths = [tile_hidden] if isinstance(tile_hidden, int) else [int(w) for w in tile_hidden]
        if not widths or min(widths) < 1:
            raise ValueError(f"tile_hidden must be a width or a list of widths >= 1, got {tile_hidden!r}")
        self.fc6 = mlp(num_features, *widths, last_activation=True)  # per tile, shared: F -> widths[-1]
        self.classifier = mlp(NUM_CELLS * widths[-1], hidden, num_permutations)

    @property
    def num_permutations(self) -> int:
        return len(self.permutations)

    def forward(self, trunk: nn.Module, x: torch.Tensor) -> torch.Tensor:
        # x: B x 9 x C x t x t (shuffled, per-tile normalised) -> B x P logits
        if x.dim() != 5 or x.shape[1] != NUM_CELLS:
            raise ValueError(f"jigsaw input must be B x 9 x C x t x t tiles (make_puzzle), got shape {tuple(x.shape)}")
        b = x.shape[0]
        feats = tile_features(trunk, x, self.num_features)  # B x 9 x F
        per_tile = self.fc6(feats.flatten(0, 1))  # B*9 x tile_hidden
        return self.classifier(per_tile.view(b, -1))  # B x (9 * tile_hidden) -> B x P


def build_head(trunk: nn.Module, input_size: Sequence[int], num_permutations: int = NUM_PERMUTATIONS,
               permutation_seed: int = 0, tile_hidden: int | Sequence[int] = 512, hidden: int = 512, cell: int = CELL,
               tile: int = TILE) -> JigsawHead:
    """The head for ``trunk``: it sees one ``tile`` x ``tile`` tile at a time (in the model's channels);
    the features and probes take the whole image at ``input_size``."""
    from . import flat_features

    return JigsawHead(flat_features(trunk, (input_size[0], tile, tile)), num_permutations=num_permutations,
                      permutation_seed=permutation_seed, tile_hidden=tile_hidden, hidden=hidden, cell=cell, tile=tile)


# --- inference helpers (the demo) --------------------------------------------------------------

PermSource = Union[nn.Module, torch.Tensor, None]


def _head_of(source: PermSource) -> JigsawHead | None:
    head = getattr(source, "head", source)
    return head if isinstance(head, JigsawHead) else None


def permutations_of(source: PermSource) -> torch.Tensor:
    """The P x 9 permutation set of a jigsaw model, its head, or a set given as a tensor."""
    head = _head_of(source)
    if head is not None:
        return head.permutations
    if isinstance(source, torch.Tensor) and source.dim() == 2 and source.shape[1] == NUM_CELLS:
        return source
    raise ValueError("expected a jigsaw model, a JigsawHead or a P x 9 permutation tensor, "
                     f"got {type(source).__name__}")


def make_puzzle(image: torch.Tensor, perm_index: int | None = None, source: PermSource = None, *,
                gen: torch.Generator | None = None, normalize: bool = True) -> tuple[torch.Tensor, int]:
    """A jigsaw puzzle from one image: (tiles 9 x C x t x t shuffled, perm_index).

    image: C x H x W (the model's normalised input, e.g. ``zoo.transforms(m)(pil)``).
    perm_index: which permutation of the set; None draws one (from ``gen``).
    source: the model (or head, or a P x 9 set; then the default 76/64 geometry).
    Tiles are centre crops of their cells; ``normalize`` applies the per-tile normalisation the
    model was trained with (turn it off for display, and normalise before predicting).
    """
    perms = permutations_of(source)
    head = _head_of(source)
    cell, tile = (head.cell, head.tile) if head is not None else (CELL, TILE)
    if image.dim() != 3:
        raise ValueError(f"make_puzzle expects one C x H x W image, got shape {tuple(image.shape)}")
    if perm_index is None:
        perm_index = int(torch.randint(0, len(perms), (1,), generator=gen))
    if not 0 <= perm_index < len(perms):
        raise ValueError(f"perm_index {perm_index} out of range for a set of {len(perms)} permutations")
    cells = perms[perm_index].to(image.device)[None]  # 1 x 9: position i shows cell perm[i]
    tiles = cut_tiles(image[None], cell=cell, tile=tile, cells=cells, normalize=normalize)[0]  # 9 x C x t x t
    return tiles, perm_index


def predicted_permutation(logits: torch.Tensor, source: PermSource) -> torch.Tensor:
    """The permutation(s) the model names: logits ... x P -> ... x 9."""
    perms = permutations_of(source)
    return perms.to(logits.device)[logits.argmax(-1)]


def reassemble(tiles: torch.Tensor, perm) -> torch.Tensor:
    """Undo a shuffle: tiles ... x 9 x C x t x t shuffled by perm (... x 9) -> tiles in cell order."""
    perm = torch.as_tensor(perm, device=tiles.device).long()
    if perm.shape[-1] != NUM_CELLS or tiles.shape[-4] != NUM_CELLS:
        raise ValueError(f"need ... x 9 tiles and a 9-long permutation, "
                         f"got {tuple(tiles.shape)} and {tuple(perm.shape)}")
    inverse = torch.argsort(perm, dim=-1)  # cell j sits at position inverse[j]
    index = inverse.expand(*tiles.shape[:-4], NUM_CELLS)
    return torch.take_along_dim(tiles, index[..., None, None, None], dim=-4)


def puzzle_image(tiles: torch.Tensor, gap: int = 4, fill: float | None = None) -> torch.Tensor:
    """The 3x3 puzzle (9 x C x t x t, in the order given) as one C x H x W image for display;
    ``fill`` between the tiles defaults to the tiles' maximum (white lines)."""
    return grid_image(tiles, gap, float(tiles.max()) if fill is None else fill)
