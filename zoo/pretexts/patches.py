"""Tile cutting shared by the patch pretexts: Jigsaw (Noroozi & Favaro, ECCV 2016) and Relative
Patch Location (Doersch, Gupta & Efros, ICCV 2015).

Both cut square tiles out of a 3x3 grid laid over the image. ``cut_tiles`` does it for a whole
batch at once with tensor ops (each tile two small batched matmuls over its source window: the
bilinear resize to the grid restricted to that tile), on whatever device the batch is on; no PIL,
no loop over images. Per-tile normalisation, grayscale and a small MLP builder are here too, so the two
pretexts share every piece that is not specific to them.

Geometry (``cell`` and ``tile`` in px of the grid image)
---------------------------------------------------------
The image is resized to ``3 * cell`` px square; tile k (row-major, k = 3 * row + col) is a
``tile``-px crop inside cell k at an offset drawn uniformly from ``0 .. cell - tile`` on each
axis (training), or the centred offset ``(cell - tile) // 2`` (inference). The cell-minus-tile
margin is the *gap*: two neighbouring tiles are ``0 .. 2 * (cell - tile)`` px apart, so their
touching edges rarely line up and low-level continuity (edges, texture runs) does not give the
answer away; the random offset is the *jitter* (the authors' loaders do the same: Noroozi cuts a
random 64 crop in each 85-px cell of a 255-px image; Doersch uses a gap of half a patch plus up to
7 px of jitter).

Sizes for the 28x28 Fashion-MNIST zoo entries: ``tile = 64``, ``cell = 76`` (grid image 228 px).

* AlexNet needs >= 63 px inputs (pool5 must still see a 3x3 conv5 map). A 64-px tile gives a
  1x1x256 pool5; the pretext heads are sized for the tile (``pretext_args["tile"]``, see
  ``PretextModel``), so tiles of 63-94 px all fit; 96-px tiles would cost 2.25x more per tile,
  nine tiles per image, and give a 2x2 pool5 (a different head).
* A 28-px image holds only ~9.3 source px per cell. With 76-px cells a 64-px tile keeps ~7.9 of
  them (84 %), and the margin of 12 px (16 % of the cell; the paper's is 21 px, 25 %) still puts
  0-24 px (mean 12 px, about 1.5 source px) between neighbouring tiles. The paper's 85-px cells
  would keep only 7.0 source px per tile (75 %) of an already tiny garment, and much of the
  Fashion-MNIST frame is blank background already.
* The trunk learns at tile scale: a garment spans the 228-px grid image, a tile a third of it. So
  ``features`` (probe, extract, demo) see the whole image enlarged too, to 160 px
  (``data_config``), as the papers transfer their tile-trained conv layers to whole ~227-px
  images; at 64 px the garment would be 3.6x smaller than anything the trunk saw. 160 rather
  than the grid's 228: on a 20k/5k Fashion-MNIST probe (jigsaw conv2..conv5) it gave the larger
  margins over random init of the same size (+1.44/+1.62/+1.24/+1.54 against +1.06/+1.40/+0.68/
  +1.22 at 228 and +0.60/+1.18/+1.28/+1.08 at 64) at half the cost of 228.
* The loop hands the plug-ins the normalised batch at the source size (``resize_input = False``):
  ``cut_tiles`` resizes each tile's window to the grid itself, one bilinear step, on the device.
"""
from __future__ import annotations

import functools

import torch
from torch import nn

GRID = 3  # a 3x3 grid of cells
NUM_CELLS = GRID * GRID
CELL = 76  # px per grid cell (grid image 228 px)
TILE = 64  # px per tile: AlexNet's smallest workable input, pool5 1x1
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's "L"


def check_geometry(cell: int, tile: int) -> None:
    if not (isinstance(cell, int) and isinstance(tile, int)) or tile < 1 or cell < tile:
        raise ValueError(f"tile cutting needs integers 1 <= tile <= cell, got cell={cell!r}, tile={tile!r}")


VAR_FLOOR = 1e-10  # tiles with a smaller variance (in normalised-input units) are flat: set to 0


@functools.lru_cache(maxsize=32)
def _resize_bands_cpu(n: int, size: int, tile: int) -> tuple[torch.Tensor, ...]:
    """Bilinear resize n -> size px (``F.interpolate``, align_corners=False) as a matrix R
    (size x n), cut into its tile-row blocks: for each start s = 0 .. size - tile, the nonzero band
    of R[s:s+tile] (tile x w, w the widest band) and the source index where the band starts.

    Returns (bands S x t x w, first S, sums S x w, grams S x w x w): with B the band of a start,
    ``sums = 1^T B`` and ``grams = B^T B``, what a resized tile's mean and variance need."""
    out = torch.arange(size, dtype=torch.float64)
    src = ((out + 0.5) * (n / size) - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=n - 1)
    i1 = (i0 + 1).clamp(max=n - 1)
    frac = src - i0
    r = torch.zeros(size, n, dtype=torch.float64)
    r[out.long(), i0] += 1 - frac
    r[out.long(), i1] += frac
    starts = torch.arange(size - tile + 1)
    first, last = i0[starts], i1[starts + tile - 1]  # source span of each block
    width = int((last - first).max()) + 1
    first = first.clamp(max=n - width)
    cols = first[:, None] + torch.arange(width)  # S x w
    bands = r[(starts[:, None] + torch.arange(tile))[:, :, None], cols[:, None, :]]  # S x t x w
    sums, grams = bands.sum(1), bands.transpose(1, 2) @ bands  # S x w, S x w x w
    return bands.float(), first, sums.float(), grams.float()


@functools.lru_cache(maxsize=32)
def _resize_bands(n: int, size: int, tile: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """``_resize_bands_cpu``'s tables on ``device``, kept there: a GPU batch does not copy them again."""
    return tuple(t.to(device) for t in _resize_bands_cpu(n, size, tile))


def cut_tiles(x: torch.Tensor, *, cell: int = CELL, tile: int = TILE, gen: torch.Generator | None = None,
              cells: torch.Tensor | None = None, normalize: bool = False,
              dtype: torch.dtype | None = None) -> torch.Tensor:
    """Cut ``tile``-px tiles from the 3x3 grid of ``cell``-px cells laid over each image.

    x: B x C x H x W (any H, W: resized to the 3 * cell px grid image, bilinear).
    cells: B x K long, the cell (0..8, row-major) each output tile is cut from, per image: the
    order of the output. None: all nine cells in row-major order (K = 9).
    gen: draws each tile's jitter (offset 0 .. cell - tile per axis, on the CPU, so a run is
    reproducible on any device); None: the deterministic centre crop.
    normalize: return ``normalize_tiles`` of the tiles, computed without a second pass.
    dtype: of the tiles (default x's): the model's compute dtype, e.g. bf16 under autocast, so the
    pass that writes the tiles writes half the bytes and the model does not cast them again.
    Returns B x K x C x tile x tile on x's device.

    An input already at the grid size is indexed directly (a strided view, exact copies). Any other
    size is never resized as a whole: bilinear resizing is separable, ``grid = R_y @ x @ R_x^T``,
    so each tile is ``R_y[top:top+t] @ x @ R_x[left:left+t]^T``, and those row blocks of R are bands
    only ~t * H / (3 cell) + 2 source px wide. Each tile is then two small matmuls over its source
    window (batched over all tiles), the same numbers as ``F.interpolate`` to the grid and cropping
    (to float rounding) at ~1/4 of the work and memory traffic.
    """
    check_geometry(cell, tile)
    if x.dim() != 4:
        raise ValueError(f"cut_tiles expects a B x C x H x W batch, got shape {tuple(x.shape)}")
    b, device = x.shape[0], x.device
    if cells is None:
        cells = torch.arange(NUM_CELLS, device=device).expand(b, NUM_CELLS)
    cells = cells.to(device)
    if cells.dim() != 2 or cells.shape[0] != b:
        raise ValueError(f"cells must be B x K = {b} x K, got shape {tuple(cells.shape)}")
    k = cells.shape[1]
    size = GRID * cell
    if gen is None:
        offsets = torch.full((b, k, 2), (cell - tile) // 2, dtype=torch.long)
    else:
        offsets = torch.randint(0, cell - tile + 1, (b, k, 2), generator=gen)  # B x K x (dy, dx)
    offsets = offsets.to(device)
    top = torch.div(cells, GRID, rounding_mode="floor") * cell + offsets[..., 0]  # B x K, in grid px
    left = cells % GRID * cell + offsets[..., 1]  # B x K
    rows = torch.arange(b, device=device)[:, None]  # B x 1
    if tuple(x.shape[-2:]) == (size, size):
        # every tile-px window of the grid image as a view: B x C x n x n x tile x tile (no copy)
        tiles = x.unfold(2, tile, 1).unfold(3, tile, 1)[rows, :, top, left]  # B x K x C x tile x tile
        tiles = normalize_tiles(tiles) if normalize else tiles
        return tiles if dtype is None else tiles.to(dtype)
    ry, y0, sy, gy = _resize_bands(x.shape[-2], size, tile, device)  # S x t x wy, S, S x wy, S x wy x wy
    rx, x0, sx, gx = _resize_bands(x.shape[-1], size, tile, device)  # (S = size - t + 1 starts)
    wy, wx = ry.shape[-1], rx.shape[-1]
    c = x.shape[1]

    def per_tile(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:  # S x ... -> BKC x ...
        return table[index][:, :, None].expand(b, k, c, *table.shape[1:]).reshape(-1, *table.shape[1:])

    src = x.float().unfold(2, wy, 1).unfold(3, wx, 1)[rows, :, y0[top], x0[left]]  # B x K x C x wy x wx windows
    src = src.reshape(-1, wy, wx)  # BKC x wy x wx
    if normalize:
        # Normalised on the window, before resizing: rows of R sum to 1, so a constant subtracted
        # from the window comes out subtracted from every tile pixel, and a scale of the window
        # scales the tile. The tile's mean and variance come from the band tables, wy x wx work:
        #   sum(tile) = sy^T W sx,  ||tile||^2 = ||Ry W Rx^T||^2 = <Gy W, W Gx>  (Gy = Ry^T Ry, ...).
        # Windows are centred first (no cancellation in the variance).
        src = src - src.mean((-2, -1), keepdim=True)
        n = tile * tile
        mean = torch.einsum("ni,nij,nj->n", per_tile(sy, top), src, per_tile(sx, left)).view(-1, 1, 1) / n
        sq = (torch.bmm(per_tile(gy, top), src) * torch.bmm(src, per_tile(gx, left))).sum((-2, -1), keepdim=True)
        src = src.sub_(mean).mul_(_inv_std(sq / n - mean.square(), VAR_FLOOR))  # BKC x wy x wx
    m = torch.bmm(src, per_tile(rx.transpose(-1, -2), left))  # BKC x wy x t: columns resized
    # rows resized: the one pass that writes the tiles, in the dtype asked for (bf16: half the
    # bytes, and the bf16 bmm is ~2.5x faster here than fp32's). Flat bmm batches: ~2x faster on
    # CPU than a broadcasting 5-D matmul.
    dtype = x.dtype if dtype is None else dtype
    return torch.bmm(per_tile(ry.to(dtype), top), m.to(dtype)).view(b, k, c, tile, tile)


def _inv_std(var: torch.Tensor, floor: float) -> torch.Tensor:
    """1 / std, and 0 for a flat tile (var <= floor): its centred pixels, rounding residue of
    subtracting the mean, must come out exactly 0 rather than be blown up or kept."""
    return torch.where(var > floor, var.clamp_min(floor).rsqrt(), torch.zeros_like(var))


def normalize_tiles(tiles: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Each tile to zero mean and unit std per channel (the authors' per-tile/per-patch
    normalisation, which takes away brightness and contrast cues). A flat tile (std < eps, e.g.
    blank background) becomes all zeros instead of being blown up.

    tiles: ... x C x h x w -> same shape.
    """
    # two passes (mean, then the norm of the centred tile): ~8x faster on CPU than torch.var_mean
    centred = tiles - tiles.mean(dim=(-2, -1), keepdim=True)  # ... x C x h x w
    var = torch.linalg.vector_norm(centred, dim=(-2, -1), keepdim=True).square_() / (tiles.shape[-2] * tiles.shape[-1])
    inv_std = _inv_std(var, eps * eps)  # ... x C x 1 x 1
    return centred.mul_(inv_std)


def grayscale(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Luminance copied into every channel, where ``mask`` (x.shape[:-3], bool) says; all if None.

    x: ... x C x H x W. One channel: returned as is (already gray). On normalised input the result
    is luminance up to a per-channel affine map, which per-tile normalisation removes.
    """
    c = x.shape[-3]
    if c == 1:
        return x
    if c != 3:
        raise ValueError(f"grayscale needs 1 or 3 channels, got {c}")
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(3, 1, 1)
    gray = (x * w).sum(-3, keepdim=True).expand_as(x)  # ... x 3 x H x W
    if mask is None:
        return gray.contiguous()
    return torch.where(mask.to(x.device)[..., None, None, None], gray, x)


def random_grayscale(x: torch.Tensor, p: float, gen: torch.Generator | None = None) -> torch.Tensor:
    """Turn each item of x (... x C x H x W; one draw per item of the leading dims) gray with
    probability p. A no-op for 1-channel input (Fashion-MNIST), and then no random number is drawn."""
    if x.shape[-3] == 1 or p <= 0:
        return x
    return grayscale(x, torch.rand(x.shape[:-3], generator=gen) < p)


def tile_features(trunk: nn.Module, tiles: torch.Tensor, num_features: int) -> torch.Tensor:
    """The shared trunk on every tile as one batch (shared weights, one BN batch).

    tiles: B x K x C x t x t -> pool5 features B x K x num_features.
    """
    if tiles.dim() != 5:
        raise ValueError(f"expected tiles B x K x C x t x t, got shape {tuple(tiles.shape)}")
    b, k = tiles.shape[:2]
    x = tiles.flatten(0, 1)  # B*K x C x t x t
    if x.is_cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    feats = trunk(x).flatten(1)  # B*K x F
    if feats.shape[1] != num_features:
        raise ValueError(f"{tiles.shape[-1]}-px tiles give {feats.shape[1]} pool5 features, but the head was sized for "
                         f"{num_features} (its tile size); use tiles whose pool5 matches the head's tile size "
                         f"(for 64-px tiles: 63-94 px)")
    return feats.view(b, k, -1)


def mlp(*sizes: int, last_activation: bool = False) -> nn.Sequential:
    """Linear (no bias) -> BN -> ReLU per hidden size, then a plain Linear to the last size
    (or a Linear -> BN -> ReLU block there too if ``last_activation``)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i < len(sizes) - 2 or last_activation:
            layers += [nn.Linear(a, b, bias=False), nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
        else:
            layers.append(nn.Linear(a, b))
    return nn.Sequential(*layers)


def grid_image(tiles: torch.Tensor, gap: int = 0, fill: float = 0.0) -> torch.Tensor:
    """Nine tiles (9 x C x t x t, row-major) laid out as one 3x3 image for display:
    C x (3t + 2 gap) x (3t + 2 gap), with ``fill`` between the tiles."""
    if tiles.dim() != 4 or tiles.shape[0] != NUM_CELLS:
        raise ValueError(f"grid_image expects 9 x C x t x t tiles, got shape {tuple(tiles.shape)}")
    _, c, h, w = tiles.shape
    out = tiles.new_full((c, GRID * h + (GRID - 1) * gap, GRID * w + (GRID - 1) * gap), fill)
    for k, t in enumerate(tiles):  # nine tiles, once per displayed image
        r, col = divmod(k, GRID)
        out[:, r * (h + gap):r * (h + gap) + h, col * (w + gap):col * (w + gap) + w] = t
    return out
