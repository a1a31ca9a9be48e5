"""Colour on tensors: sRGB <-> CIE Lab (D65) and the colour targets of the colour pretexts, batched on any device.

The colour pretexts (colorization, split-brain) and the trunk front ends ``lab_l`` / ``lab_ab``
use it. Formulas: IEC 61966-2-1 sRGB transfer curve, the sRGB -> XYZ matrix for D65, and CIE
1976 L*a*b* with the D65 white (0.95047, 1, 1.08883), as scikit-image's ``rgb2lab`` uses them
(it rounds CIE's constants to 0.008856 and 7.787; we keep the exact, continuous ones: the two
differ by < 2e-4 in L, a, b).

Colorization (Zhang, Isola & Efros 2016) classifies each pixel's ab into bins on a 10-unit grid
(``ab_bins``), with soft targets (``soft_encode``: Gaussian weights over the 5 nearest bins), a loss
re-weighted towards rare colours (``ab_prior`` -> ``rebalance_weights``), and reads a colour back
from the predicted distribution with the annealed mean (``annealed_mean``). Split-brain's ab -> L
half classifies L into equal bins (``quantize_l`` / ``l_centres``).

Piecewise curves are written as clamp-and-add (both pieces meet where they switch), not with
``torch.where``, which is several times slower on CPU; no per-image loops, no numpy.
"""
from __future__ import annotations

import functools
import math
from typing import Iterable

import torch

# sRGB (linear) -> XYZ, D65 (IEC 61966-2-1)
_RGB_TO_XYZ = ((0.412453, 0.357580, 0.180423),
               (0.212671, 0.715160, 0.072169),
               (0.019334, 0.119193, 0.950227))
_XYZ_TO_RGB = torch.linalg.inv(torch.tensor(_RGB_TO_XYZ, dtype=torch.float64)).tolist()
_WHITE = (0.95047, 1.0, 1.08883)
_DELTA = 6.0 / 29.0
_EPS = _DELTA ** 3  # CIE's linear-segment threshold
_SLOPE = 1.0 / (3 * _DELTA ** 2)  # slope of CIE's linear segment (skimage: 7.787)
# f = (fx, fy, fz) -> (L, a, b) = _F_TO_LAB @ f + (-16, 0, 0)
_F_TO_LAB = ((0.0, 116.0, 0.0), (500.0, -500.0, 0.0), (0.0, 200.0, -200.0))
_SRGB_KNEE, _LINEAR_KNEE = 0.04045, 0.0031308  # where the sRGB curve switches, encoded / linear
_L_MAX = 100.0


def _pos_pow(x: torch.Tensor, p: float) -> torch.Tensor:
    """x ** p for x > 0 as exp(p log x): on the CPU torch's float-exponent ``pow`` takes ~2.5x as long
    as ``log`` + ``exp`` together (measured on 64k float32 values, 1 thread); within 1e-6 relative."""
    return torch.exp(torch.log(x) * p)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


def _const(values, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device)


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] (clipped) -> linear light, same shape (the pieces meet at 0.04045 to 2e-9)."""
    x = x.clamp(0, 1)
    return ((x.clamp_min(_SRGB_KNEE) + 0.055) / 1.055) ** 2.4 + (x.clamp_max(_SRGB_KNEE) - _SRGB_KNEE) / 12.92


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """Linear light -> sRGB in [0, 1], clipped afterwards as scikit-image's ``xyz2rgb`` does."""
    curve = 1.055 * x.clamp_min(_LINEAR_KNEE) ** (1 / 2.4) - 0.055 + 12.92 * (x.clamp_max(_LINEAR_KNEE) - _LINEAR_KNEE)
    return curve.clamp(0, 1)


def _lab_f(t: torch.Tensor) -> torch.Tensor:
    """CIE's f: cube root above (6/29)^3, the tangent line below (continuous, so clamp-and-add is exact)."""
    return t.clamp_min(_EPS) ** (1.0 / 3.0) + (t.clamp_max(_EPS) - _EPS) * _SLOPE


def _lab_f_inverse(f: torch.Tensor) -> torch.Tensor:
    return f.clamp_min(_DELTA) ** 3 + (f.clamp_max(_DELTA) - _DELTA) / _SLOPE


_CPU_CHUNK = 1 << 16  # pixels per step on the CPU: each temporary stays in L2, ~3x faster than whole batches


def _by_pixel_chunks(fn, x: torch.Tensor) -> torch.Tensor:
    """Apply ``fn`` (B x 3 x N -> B x 3 x N, per pixel) to B x 3 x H x W: on the CPU, ~64k pixels at a
    time (whole images, or pieces of one), so the elementwise passes run in cache instead of memory."""
    flat = x.flatten(2)  # B x 3 x N
    B, _, N = flat.shape
    if x.device.type != "cpu" or B * N <= _CPU_CHUNK:
        return fn(flat).view(x.shape)
    out = torch.empty(flat.shape, dtype=_compute_dtype(x), device=x.device)
    if N >= _CPU_CHUNK:
        for b in range(B):
            for s in range(0, N, _CPU_CHUNK):
                out[b:b + 1, :, s:s + _CPU_CHUNK] = fn(flat[b:b + 1, :, s:s + _CPU_CHUNK])
    else:
        step = _CPU_CHUNK // N
        for b in range(0, B, step):
            out[b:b + step] = fn(flat[b:b + step])
    return out.view(x.shape)


def _rgb_to_lab(x: torch.Tensor) -> torch.Tensor:
    """B x 3 x N sRGB -> B x 3 x N Lab: ``srgb_to_linear``, the XYZ matrix, CIE's f and the Lab matrix,
    every scale and offset folded into four 3 x 3 batched matmuls (seven elementwise passes, not ~20)."""
    xc = x.to(_compute_dtype(x))
    B = xc.shape[0]
    to_xyz = _const(_RGB_TO_XYZ, xc) / _const(_WHITE, xc)[:, None]  # linear RGB -> white-normalised XYZ
    # linear = (clamp(x, knee, 1) + 0.055)^2.4 / 1.055^2.4 + (clamp(x, 0, knee) - knee) / 12.92
    curve = _pos_pow(xc.clamp(_SRGB_KNEE, 1) + 0.055, 2.4)  # B x 3 x N
    toe = xc.clamp(0, _SRGB_KNEE)
    xyz = torch.baddbmm((to_xyz.sum(1) * (-_SRGB_KNEE / 12.92))[:, None], (to_xyz / 1.055 ** 2.4).expand(B, 3, 3), curve)
    xyz = xyz + torch.bmm((to_xyz / 12.92).expand(B, 3, 3), toe)  # B x 3 x N
    # Lab = F @ f(xyz) + (-16, 0, 0), f(t) = clamp(t, eps)^(1/3) + (min(t, eps) - eps) * slope
    f_to_lab = _const(_F_TO_LAB, xc)
    offset = f_to_lab.sum(1) * (-_EPS * _SLOPE) + _const((-16.0, 0.0, 0.0), xc)
    lab = torch.baddbmm(offset[:, None], f_to_lab.expand(B, 3, 3), _pos_pow(xyz.clamp_min(_EPS), 1.0 / 3.0))
    return lab.baddbmm_((f_to_lab * _SLOPE).expand(B, 3, 3), xyz.clamp_max(_EPS))


def rgb_to_lab(x: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1], B x 3 x H x W -> Lab, B x 3 x H x W (L in [0, 100], a/b roughly [-110, 110])."""
    lab = _by_pixel_chunks(_rgb_to_lab, x)
    return lab.to(x.dtype) if x.is_floating_point() else lab


def _lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    lc = lab.to(_compute_dtype(lab))  # B x 3 x N
    L, a, b = lc.unbind(1)
    fy = (L + 16.0) / 116.0
    f = torch.stack([fy + a / 500.0, fy, (fy - b / 200.0).clamp_min(0)], 1)  # B x 3 x N
    xyz = _lab_f_inverse(f) * _const(_WHITE, lc)[:, None]
    return linear_to_srgb(torch.matmul(_const(_XYZ_TO_RGB, lc), xyz))


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Lab, B x 3 x H x W -> sRGB in [0, 1] (clipped), B x 3 x H x W: the inverse of ``rgb_to_lab``.

    Like scikit-image's ``lab2rgb``, a negative Z (b far above what L allows) is clipped to 0 first.
    """
    rgb = _by_pixel_chunks(_lab_to_rgb, lab)
    return rgb.to(lab.dtype) if lab.is_floating_point() else rgb


# ---------------------------------------------------------------- ab bins (colorization's classes)

@functools.lru_cache(maxsize=None)
def _ab_bins(grid: float) -> torch.Tensor:
    # float32 is enough: every hit cell is hit > 1e-3 inside it and every other cell is missed by > 1e-3
    # (checked in float64 at grid 10), far above float32's ~1e-5 error in a and b
    levels = torch.arange(256, dtype=torch.float32) / 255  # 8-bit sRGB levels
    to_xyz = torch.tensor(_RGB_TO_XYZ) / torch.tensor(_WHITE)[:, None]
    part = to_xyz[:, None, :] * srgb_to_linear(levels)[None, :, None]  # 3 (XYZ) x 256 (level) x 3 (R, G, B)
    gb = part[:, :, None, 1] + part[:, None, :, 2]  # 3 x 256 (G) x 256 (B): XYZ of G + B
    span = math.ceil(130.0 / grid) + 1  # |a|, |b| < 130 for any sRGB colour
    hit = torch.zeros(2 * span + 1, 2 * span + 1, dtype=torch.bool)
    for r in range(0, 256, 32):  # 32 R levels at a time: 3 x 32 x 256 x 256 floats
        f = _lab_f(part[:, r:r + 32, 0, None, None] + gb[:, None])  # 3 x 32 x 256 x 256
        ia = torch.round(500.0 * (f[0] - f[1]) / grid).long() + span
        ib = torch.round(200.0 * (f[1] - f[2]) / grid).long() + span
        hit[ia, ib] = True
    ia, ib = hit.nonzero().unbind(1)
    return (torch.stack([ia, ib], 1) - span).to(torch.float32) * grid  # K x 2, a-major order


def ab_bins(grid: float = 10) -> torch.Tensor:
    """The in-gamut ab bin centres on a ``grid``-unit lattice, K x 2 (a, b), sorted by a then b (CPU, float32).

    Rule: a lattice point (a, b) = grid * (i, j) is a bin iff its cell [a - grid/2, a + grid/2) x
    [b - grid/2, b + grid/2) holds the ab of at least one of the 256^3 8-bit sRGB colours (all L), i.e.
    the bins are the cells a histogram of 8-bit images can hit, so every such pixel's nearest lattice
    point is a bin. At grid 10 this gives K = 261 (the authors' pts_in_hull.npy has 313: it reaches
    beyond the sRGB gamut). Computed once per grid (16.7M colours: under a second on 2 CPU threads).
    """
    with torch.device("cpu"):  # also when a model is sized on the meta device (zoo's config check)
        return _ab_bins(float(grid)).clone()


# ---------------------------------------------------------------- soft encoding (k nearest bins)

_PIXEL_CHUNK = 1 << 16  # pixels per step of the candidate search: a few MB of temporaries


def _candidate_table(bins: torch.Tensor, k: int, lo: torch.Tensor, cell: float, n: tuple[int, int]) -> torch.Tensor:
    """For each square cell of a grid over the ab plane, the bins that can be among the k nearest to a
    point in it (exact: a bin is kept iff its distance to the cell is <= the k-th smallest distance to
    the cell's farthest point), ordered by distance to the cell, padded with K (no bin): n_a x n_b x M.
    """
    edges = [lo[d] + cell * torch.arange(n[d] + 1, dtype=bins.dtype) for d in range(2)]
    near, far = [], []
    for d in range(2):
        start, end = edges[d][:-1, None], edges[d][1:, None]  # n_d x 1
        c = bins[None, :, d]  # 1 x K
        near.append((start - c).clamp_min(0) + (c - end).clamp_min(0))  # n_d x K: distance to the interval
        far.append(torch.maximum((c - start).abs(), (c - end).abs()))
    near2 = near[0][:, None] ** 2 + near[1][None] ** 2  # n_a x n_b x K
    far2 = far[0][:, None] ** 2 + far[1][None] ** 2
    keep = near2 <= far2.kthvalue(k, dim=-1, keepdim=True).values
    m = int(keep.sum(-1).max())
    order = torch.where(keep, near2, torch.full_like(near2, float("inf"))).topk(m, dim=-1, largest=False).indices
    return torch.where(keep.gather(-1, order), order, torch.full_like(order, bins.shape[0]))


@functools.lru_cache(maxsize=16)
def _knn_index(flat_bins: tuple[float, ...], k: int) -> tuple[torch.Tensor, float, tuple[int, int], torch.Tensor,
                                                               torch.Tensor, torch.Tensor]:
    """The search structure for one bin set: (lo, cell, (n_a, n_b), candidates cells x M, their a and
    their b, cells x M each), a grid of cells a quarter of the bin spacing wide, one spacing beyond the bins.
    """
    bins = torch.tensor(flat_bins, dtype=torch.float64).view(-1, 2)  # K x 2
    K = bins.shape[0]
    gaps = torch.cdist(bins, bins).fill_diagonal_(float("inf")).min(1).values  # each bin's nearest other bin
    spacing = float(gaps.median()) if K > 1 else 1.0
    lo, hi = bins.min(0).values - spacing, bins.max(0).values + spacing
    cell = max(spacing / 4, float((hi - lo).max()) / 256)  # at most 256 x 256 cells
    n = (int((hi[0] - lo[0]) / cell) + 1, int((hi[1] - lo[1]) / cell) + 1)
    table = _candidate_table(bins, k, lo, cell, n).flatten(0, 1)  # cells x M
    coords = torch.cat([bins, bins.new_full((1, 2), 1e6)])[table]  # cells x M x 2: the padding never wins
    return lo, cell, n, table, coords[..., 0].contiguous(), coords[..., 1].contiguous()


def soft_encode_knn(ab: torch.Tensor, bins: torch.Tensor, k: int = 5, sigma: float = 5.0
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """ab, B x 2 x H x W -> (index, weight), each B x k x H x W: each pixel's k nearest bins, nearest first,
    and their Gaussian weights exp(-d^2 / 2 sigma^2) normalised to sum 1 (the compact form of ``soft_encode``:
    a cross-entropy needs only these, K / k times less memory than the dense targets).

    Exact k-nearest search without a pixels x K distance matrix: a cached table of the candidate bins of
    each small ab cell (``_candidate_table``, ~7 of them on average for colorization's bins), distances
    to those only, in chunks of pixels; pixels beyond the table (far outside the bins) are searched by brute force.
    """
    B, _, H, W = ab.shape
    K = bins.shape[0]
    if not 1 <= k <= K:
        raise ValueError(f"k={k} needs 1 <= k <= {K} bins")
    dtype = _compute_dtype(ab)
    lo, cell, n, table, cand_a, cand_b = _knn_index(tuple(bins.detach().double().flatten().tolist()), k)
    M = table.shape[1]
    table = table.to(ab.device)
    cand_a, cand_b = cand_a.to(device=ab.device, dtype=dtype), cand_b.to(device=ab.device, dtype=dtype)
    lo = lo.to(device=ab.device, dtype=dtype)
    points = ab.detach().to(dtype).permute(0, 2, 3, 1).reshape(-1, 2)  # P x 2, pixel order b, h, w
    index = torch.empty(points.shape[0], k, dtype=torch.long, device=ab.device)
    d2k = torch.empty(points.shape[0], k, dtype=dtype, device=ab.device)
    outside = []
    for s in range(0, points.shape[0], _PIXEL_CHUNK):
        p = points[s:s + _PIXEL_CHUNK]  # P' x 2
        ij = ((p - lo) / cell).floor_()
        out = ~((ij[:, 0] >= 0) & (ij[:, 0] < n[0]) & (ij[:, 1] >= 0) & (ij[:, 1] < n[1]))  # NaN: out too
        ij.nan_to_num_(0)
        ij[:, 0].clamp_(0, n[0] - 1)
        ij[:, 1].clamp_(0, n[1] - 1)
        rows = ij[:, 0].long() * n[1] + ij[:, 1].long()  # P': the cell of each pixel
        d2 = cand_a.index_select(0, rows).sub_(p[:, :1]).square_()  # P' x M
        d2 += cand_b.index_select(0, rows).sub_(p[:, 1:]).square_()
        d2k[s:s + _PIXEL_CHUNK], j = d2.topk(k, dim=1, largest=False)  # sorted: nearest first
        index[s:s + _PIXEL_CHUNK] = table.take(rows[:, None] * M + j)
        outside.append(out)
    far = torch.cat(outside).nonzero().squeeze(1) if outside else index.new_zeros(0)
    if len(far):  # beyond the table: the candidates may not hold the k nearest, so all bins
        d2k[far], index[far] = torch.cdist(points[far], bins.to(device=ab.device, dtype=dtype)).square_().topk(
            k, dim=1, largest=False)
    weight = (d2k - d2k[:, :1]).div_(-2 * sigma ** 2).exp_()  # the nearest weighs 1 before normalising
    weight /= weight.sum(1, keepdim=True)
    shape = (B, H, W, k)
    return (index.view(shape).permute(0, 3, 1, 2).contiguous(),
            weight.view(shape).permute(0, 3, 1, 2).to(ab.dtype if ab.is_floating_point() else dtype).contiguous())


def soft_encode(ab: torch.Tensor, bins: torch.Tensor, k: int = 5, sigma: float = 5.0) -> torch.Tensor:
    """ab, B x 2 x H x W -> soft targets, B x K x H x W: Gaussian weights (sigma) over each pixel's k
    nearest bins, summing to 1 (colorization's target; the paper: k = 5, sigma = 5).
    """
    return densify(*soft_encode_knn(ab, bins, k, sigma), bins.shape[0])


def densify(index: torch.Tensor, weight: torch.Tensor, K: int) -> torch.Tensor:
    """(index, weight), B x k x H x W, from ``soft_encode_knn`` -> dense targets, B x K x H x W."""
    B, _, H, W = index.shape
    return weight.new_zeros(B, K, H, W).scatter_(1, index, weight)


def nearest_bin(ab: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """ab, B x 2 x H x W -> index of the nearest bin, B x H x W (hard assignment)."""
    return soft_encode_knn(ab, bins, k=1)[0][:, 0]


# ---------------------------------------------------------------- reading a colour back

def annealed_mean(probs: torch.Tensor, bins: torch.Tensor, T: float = 0.38) -> torch.Tensor:
    """Probabilities over the bins, B x K x H x W -> ab, B x 2 x H x W: the mean of p^(1/T) re-normalised.

    T = 1 is the plain mean (desaturated), T -> 0 the mode (vivid but patchy); the paper's 0.38 sits
    between. Computed as a softmax of log(p) / T (stable for small T).
    """
    dtype = _compute_dtype(probs)
    logp = probs.to(dtype).clamp_min(torch.finfo(dtype).tiny).log()
    q = torch.softmax(logp / T, dim=1)  # B x K x H x W
    ab = torch.einsum("bkhw,kc->bchw", q, bins.to(device=probs.device, dtype=dtype))
    return ab.to(probs.dtype if probs.is_floating_point() else dtype)


# ---------------------------------------------------------------- class rebalancing

def ab_prior(ab: torch.Tensor | Iterable[torch.Tensor], bins: torch.Tensor) -> torch.Tensor:
    """How many pixels fall nearest each bin, K (int64): the empirical prior, built once from a tensor
    B x 2 x H x W or an iterable of them (e.g. the ab of each training batch).
    """
    batches = [ab] if isinstance(ab, torch.Tensor) else ab
    counts = None
    for batch in batches:
        c = torch.bincount(nearest_bin(batch, bins).flatten(), minlength=bins.shape[0])
        counts = c if counts is None else counts + c.to(counts.device)
    return counts if counts is not None else torch.zeros(bins.shape[0], dtype=torch.long)


def smooth_prior(prior: torch.Tensor, bins: torch.Tensor, sigma: float = 5.0) -> torch.Tensor:
    """A prior over the K bins (counts or probabilities) -> probabilities smoothed by a Gaussian (sigma)
    over the ab plane, K (float64, on the CPU).

    Each bin's mass is spread over the bins by exp(-d^2 / 2 sigma^2) normalised over the bins, so no mass
    leaks out of the gamut and bins on its edge are not thinned.
    """
    centres = bins.detach().to("cpu", torch.float64)  # K is small: CPU float64 on every device
    p = prior.detach().to("cpu", torch.float64)
    p = p / p.sum()
    spread = torch.exp(torch.cdist(centres, centres) ** 2 / (-2 * sigma ** 2))  # K (to) x K (from)
    spread = spread / spread.sum(0, keepdim=True)
    return spread @ p


def rebalance_weights(prior: torch.Tensor, lam: float = 0.5, sigma: float = 5.0,
                      bins: torch.Tensor | None = None) -> torch.Tensor:
    """Per-bin loss weights, K: w ~ ((1 - lam) p~ + lam / K)^-1 with p~ the smoothed prior
    (``smooth_prior``), scaled so E_p~[w] = 1: rare colours weigh more, the loss's scale is kept.

    ``prior``: counts or probabilities over ``bins`` (default ``ab_bins()``), e.g. from ``ab_prior``.
    """
    bins = ab_bins() if bins is None else bins
    if prior.shape != (bins.shape[0],):
        raise ValueError(f"prior has shape {tuple(prior.shape)}, the bins {bins.shape[0]}")
    p = smooth_prior(prior, bins, sigma)
    w = 1.0 / ((1 - lam) * p + lam / p.shape[0])
    w = w / (p * w).sum()
    return w.to(device=prior.device, dtype=prior.dtype if prior.is_floating_point() else torch.float32)


# ---------------------------------------------------------------- L classes (split-brain's ab -> L)

def quantize_l(L: torch.Tensor, bins: int = 50) -> torch.Tensor:
    """L in [0, 100], any shape -> class index in [0, bins - 1] (int64), ``bins`` equal-width bins
    (split-brain's ab -> L half classifies L; values outside [0, 100] go to the end bins).
    """
    return (L * (bins / _L_MAX)).floor().clamp_(0, bins - 1).long()


def l_centres(bins: int = 50) -> torch.Tensor:
    """The centre L of each ``quantize_l`` bin, ``bins`` (float32): class index -> L."""
    return (torch.arange(bins, dtype=torch.float32) + 0.5) * (_L_MAX / bins)
