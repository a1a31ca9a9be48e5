"""Counting (Noroozi, Pirsiavash & Favaro, "Representation Learning by Learning to Count",
ICCV 2017, arXiv:1708.06734): a feature vector phi that *counts* visual primitives, so that the
counts of an image equal the sum of the counts of its four tiles.

Implemented from the paper's text (no code of the authors is used; none was released):

- an image x is taken at twice the model's input side (the source enlarged once, e.g. 28 -> 192
  px for the 96-px model); its views, all at the model's input size, are D(x), x downsampled by
  2, and T_1..T_4(x), its 2 x 2 tiles (row-major: top-left, top-right, bottom-left, bottom-right);
- the resize method of D is drawn per training step from ``METHODS`` (bilinear / bicubic,
  antialiased, area, nearest), as the paper draws it so that the network cannot tell D from a
  tile by the traces of one fixed downsampling;
- phi = trunk (conv1..pool5) -> MLP -> ``count_dim`` counts (the paper: fc 4096 -> 4096 -> 1000)
  ending in a ReLU (counts are >= 0); here the hidden width is sized for the input (``hidden``);
- phi(D(y)) of another image y, the loss's contrast, is phi(D(x)) of the batch rolled by one
  image (``squared_distances``): no extra forward.

Not implemented: the paper's 67 % grayscale and per-image normalisation (Fashion-MNIST is gray;
the views are normalised with the data config, as the features and probes see images).

How the views are made (``make_views``): every resize here is linear, one matrix per axis
(``resize_matrix``, read off ``F.interpolate`` itself), so enlarging then cutting a tile is one
band of the enlargement's rows, and enlarging then downsampling is the product S @ E. Each view is
A @ x @ B^T on the *source* image (28 px), two small matrix products per view for the whole batch,
with only the band of source rows / columns a view touches (a tile sees half the source); the
normalisation is done on the source too (the matrices' rows sum to 1). On 1 thread of this shared
2-CPU machine the five 96-px views of 128 images took ~1.4 ms in bf16 (the loop's dtype where the
CPU has native bf16) and ~4.5 ms in float32 (benchmarks/bench_counting.py). ``reference_views`` is the direct way
(``F.interpolate`` to 2H, slice, ``F.interpolate`` down); the tests hold the two together.

The training side (loss, metrics) is ``sslzoo.training.pretexts.counting``.
"""
from __future__ import annotations

import functools
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

PRETEXT = "counting"
NUM_VIEWS = 5  # D(x), then the four tiles T_1..T_4
VIEW_NAMES = ("whole, downsampled", "top-left tile", "top-right tile", "bottom-left tile", "bottom-right tile")
MARGIN = 10.0  # M of the contrastive term (the paper's)
COUNT_DIM = 1000  # the paper's
# D's resize methods, drawn per step, as F.interpolate arguments. nearest is "nearest-exact" (each
# output pixel takes the source pixel at its centre, as PIL's NEAREST); area is the 2 x 2 box mean.
METHODS = {
    "bilinear": {"mode": "bilinear", "align_corners": False, "antialias": True},
    "bicubic": {"mode": "bicubic", "align_corners": False, "antialias": True},
    "area": {"mode": "area"},
    "nearest": {"mode": "nearest-exact"},
}
# The enlargement to 2H uses the data config's interpolation (antialiased only when it shrinks).
_ENLARGE = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest"}


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown resize method {method!r}; known: {', '.join(METHODS)}")


def _interpolate_args(method: str, n: int, m: int) -> dict:
    """F.interpolate's arguments for resizing n -> m px by ``method`` (a METHODS key)."""
    check_method(method)
    args = dict(METHODS[method])
    if "antialias" in args:
        args["antialias"] = m < n  # antialiasing only matters (and only applies) when shrinking
    return args


@functools.lru_cache(maxsize=64)
def resize_matrix(n: int, m: int, method: str) -> torch.Tensor:
    """m x n float64 (CPU): the 1-D resize n -> m px that ``F.interpolate`` applies along each axis
    by ``method`` (a METHODS key): column k is the response to a unit impulse at source pixel k,
    read off F.interpolate itself, so a resize of an image X is ``M_h @ X @ M_w^T``."""
    args = _interpolate_args(method, n, m)
    impulses = torch.eye(n, dtype=torch.float64).view(n, 1, 1, n)  # n images of 1 x n: one impulse each
    return F.interpolate(impulses, size=(1, m), **args).view(n, m).T.contiguous()


def _band(mat: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """(the nonzero band of a resize matrix's columns, first column, end): the source pixels it reads."""
    used = (mat != 0).any(0).nonzero().squeeze(1)
    lo, hi = int(used.min()), int(used.max()) + 1
    return mat[:, lo:hi].contiguous(), lo, hi


@functools.lru_cache(maxsize=64)
def _plan(h: int, w: int, size_h: int, size_w: int, enlarge: str, method: str):
    """Per axis, the three row blocks of the views as banded float64 matrices: (D = S @ E, first
    half of E, second half of E), E the enlargement to twice the side, S D's downsampling by 2."""
    axes = []
    for n, side in ((h, size_h), (w, size_w)):
        e = resize_matrix(n, 2 * side, enlarge)  # 2H x n
        s = resize_matrix(2 * side, side, method)  # H x 2H
        axes.append(tuple(_band(m) for m in (s @ e, e[:side], e[side:])))
    return tuple(axes)


_ON_DEVICE: dict = {}


def _matrices(h, w, size_h, size_w, enlarge, method, device, dtype):
    key = (h, w, size_h, size_w, enlarge, method, str(device), dtype)
    if key not in _ON_DEVICE:
        if len(_ON_DEVICE) > 256:
            _ON_DEVICE.clear()
        _ON_DEVICE[key] = tuple(tuple((m.to(device, dtype), lo, hi) for m, lo, hi in axis)
                                for axis in _plan(h, w, size_h, size_w, enlarge, method))
    return _ON_DEVICE[key]


# view v = rows block r and columns block c of (D, first half, second half): D, then the tiles row-major
_VIEW_BLOCKS = ((0, 0), (1, 1), (1, 2), (2, 1), (2, 2))


def make_views(x: torch.Tensor, size: Sequence[int], method: str = "bilinear", enlarge: str = "bilinear",
               dtype: torch.dtype | None = None) -> torch.Tensor:
    """The counting views of a batch, on its device, batched (no loop over images).

    x: B x C x h x w images (normalised, or in [0, 1]: every resize is linear with rows summing to
    1, so normalising before or after is the same); size: the model's input (H, W).
    Each image is enlarged to 2H x 2W by ``enlarge`` (the data config's interpolation); view 0 is
    that downsampled by 2 by ``method`` (a METHODS key), views 1..4 are its 2 x 2 tiles, row-major.
    -> B x 5 x C x H x W in ``dtype`` (default x's), stored view-major (the transpose of a
    5 x B x C x H x W tensor), so the head stacks it for the trunk without a copy.
    """
    check_method(method)
    if enlarge not in _ENLARGE:
        raise ValueError(f"unknown interpolation {enlarge!r} for the enlargement; known: {', '.join(_ENLARGE)}")
    if x.dim() != 4:
        raise ValueError(f"counting views need B x C x h x w images, got shape {tuple(x.shape)}")
    size_h, size_w = (int(s) for s in size)
    b, c, h, w = x.shape
    dtype = dtype or (x.dtype if x.is_floating_point() else torch.float32)
    rows, cols = _matrices(h, w, size_h, size_w, _ENLARGE[enlarge], method, x.device, dtype)
    x = x.to(dtype)
    out = torch.empty(NUM_VIEWS, b, c, size_h, size_w, dtype=dtype, device=x.device)  # 5 x B x C x H x W
    partial = {}
    for v, (r, k) in enumerate(_VIEW_BLOCKS):
        if r not in partial:
            a, lo, hi = rows[r]
            partial[r] = torch.matmul(a, x[:, :, lo:hi])  # H x band @ B x C x band x w -> B x C x H x w
        m, lo, hi = cols[k]
        torch.matmul(partial[r][..., lo:hi], m.T, out=out[v])  # B x C x H x band @ band x W -> B x C x H x W
    return out.transpose(0, 1)  # B x 5 x C x H x W


def reference_views(x: torch.Tensor, size: Sequence[int], method: str = "bilinear",
                    enlarge: str = "bilinear") -> torch.Tensor:
    """The same views the direct way (what ``make_views`` computes, for the tests): F.interpolate
    to 2H x 2W, slice the tiles, F.interpolate the whole down by ``method``. -> B x 5 x C x H x W."""
    size_h, size_w = (int(s) for s in size)
    args = _interpolate_args(_ENLARGE[enlarge], max(x.shape[-2:]), 2 * min(size_h, size_w))
    big = F.interpolate(x, size=(2 * size_h, 2 * size_w), **args)  # B x C x 2H x 2W
    down = F.interpolate(big, size=(size_h, size_w), **_interpolate_args(method, 2 * size_h, size_h))
    tiles = [big[..., i * size_h:(i + 1) * size_h, j * size_w:(j + 1) * size_w] for i in (0, 1) for j in (0, 1)]
    return torch.stack([down, *tiles], 1)


# --- the head ------------------------------------------------------------------------------------

class CountingHead(nn.Module):
    """phi: pool5 -> Linear/BN/ReLU -> Linear/BN/ReLU -> Linear -> ReLU, ``count_dim`` counts.

    ``forward(trunk, views)`` runs the trunk once on all views stacked (5B images, one BN batch:
    the wholes and the tiles share the statistics) and returns every view's counts, B x 5 x K."""

    def __init__(self, num_features: int, hidden: int = 512, count_dim: int = COUNT_DIM):
        super().__init__()
        if hidden < 1 or count_dim < 1:
            raise ValueError(f"hidden and count_dim must be >= 1, got {hidden} and {count_dim}")
        self.num_features, self.count_dim = num_features, count_dim
        self.phi = nn.Sequential(
            nn.Flatten(),
            nn.Linear(num_features, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, count_dim), nn.ReLU(inplace=True),  # counts are >= 0
        )

    def forward(self, trunk: nn.Module, views: torch.Tensor) -> torch.Tensor:
        # views: B x 5 x C x H x W (make_views) -> counts B x 5 x K
        if views.dim() != 5 or views.shape[1] != NUM_VIEWS:
            raise ValueError(f"counting input must be B x 5 x C x H x W views (make_views), got shape {tuple(views.shape)}")
        b = views.shape[0]
        x = views.transpose(0, 1).reshape(NUM_VIEWS * b, *views.shape[2:])  # 5B x C x H x W, view-major (no copy from make_views)
        if x.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        counts = self.phi(trunk(x))  # 5B x K
        return counts.view(NUM_VIEWS, b, -1).transpose(0, 1)  # B x 5 x K


def build_head(trunk: nn.Module, input_size: Sequence[int], hidden: int = 512, count_dim: int = COUNT_DIM) -> CountingHead:
    """The head for ``trunk``: every view is at the model's input size, so pool5 is the whole image's."""
    from . import flat_features

    return CountingHead(flat_features(trunk, input_size), hidden=hidden, count_dim=count_dim)


# --- the counts, and what the loss and the demo read from them ---------------------------------------

def split_counts(phi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """B x 5 x K counts -> (phi(D x) B x K, sum_j phi(T_j x) B x K, phi(D y) B x K), y the previous
    image of the batch (rolled by one; with one image, y is x itself)."""
    whole, tile_sum = phi[:, 0], phi[:, 1:].sum(1)
    return whole, tile_sum, whole.roll(1, 0)


def squared_distances(phi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(|phi(Dx) - sum_j phi(T_j x)|^2, |phi(Dy) - sum_j phi(T_j x)|^2), squared L2 over the whole
    count vector, B each (float32)."""
    whole, tile_sum, other = split_counts(phi.float())
    return (whole - tile_sum).square().sum(-1), (other - tile_sum).square().sum(-1)


# --- inference helpers (the demo) --------------------------------------------------------------

def _head(model) -> CountingHead:
    head = getattr(model, "head", None)
    if not isinstance(head, CountingHead):
        raise ValueError(f"expected a counting model, got {getattr(model, 'name', type(model).__name__)}")
    return head


def source_config(model) -> dict:
    """The model's data config with its input at twice the side: what an upload is read at
    (``zoo._transforms.to_uint8_tensor``) before its views are cut."""
    c, h, w = model.data_config["input_size"]
    return dict(model.data_config, input_size=[c, 2 * h, 2 * w])


def views_for(model, x: torch.Tensor, method: str = "bilinear") -> torch.Tensor:
    """Normalised images (C x h x w or B x C x h x w, any size; e.g. read at ``source_config``)
    -> the model's views, B x 5 x C x H x W (B = 1 for one image)."""
    _head(model)
    cfg = model.data_config
    x = x[None] if x.dim() == 3 else x
    return make_views(x.float(), cfg["input_size"][1:], method, cfg.get("interpolation", "bilinear"))


@torch.no_grad()
def count(model, views: torch.Tensor) -> dict[str, torch.Tensor]:
    """Views (B x 5 x C x H x W) -> {"whole": phi(D x) B x K, "tiles": B x 4 x K, "tile_sum": their
    sum B x K, "distance": |phi(D x) - sum_j phi(T_j x)| B}: the model's counts (eval mode)."""
    _head(model)
    phi = model.predict_pretext(views).float()  # B x 5 x K
    whole, tile_sum, _ = split_counts(phi)
    return {"whole": whole, "tiles": phi[:, 1:], "tile_sum": tile_sum, "distance": (whole - tile_sum).norm(dim=-1)}
