"""Context encoder (Pathak, Krähenbühl, Donahue, Darrell & Efros, "Context Encoders: Feature
Learning by Inpainting", CVPR 2016, arXiv:1604.07379): a region of the image is dropped and the
network paints it back from the context around it.

Implemented as in the paper, sized for the input: the hole is filled with the data set's mean
(0 in normalised units); the encoder is the AlexNet trunk to pool5; a *channel-wise fully
connected* layer (per channel a dense h*w -> h*w map, no parameters across channels) and a 1x1
convolution that mixes the channels join it to an up-convolution decoder (``decoder.UpDecoder``).
Two masks (``mask`` in the model's pretext_args):

- ``central``: the centre square of half the side (48 x 48 at 96 px: a quarter of the area). The
  decoder predicts that square grown by ``overlap`` px on each side (the paper's "slightly larger
  patch that overlaps the context"; 4 px at 128 px, 3 px at 96 px here);
- ``random``: a seeded union of random rectangles (sides 1/8 to 1/4 of the image's) covering
  20-30 % of the area per image (the paper's random regions are PASCAL segment shapes; rectangles
  need no data). The decoder predicts the whole image; the loss sees only the hole (and the
  overlap band around it).

The loss (training side, ``sslzoo.training.pretexts.context_encoder``): L2 on the hole, the
``overlap``-px band of context around it weighted ``overlap_weight`` (10x in the paper), and,
when ``adversarial`` > 0, the paper's adversarial term with that weight (0.001 in the paper) from
a DCGAN-style discriminator that exists only in training. Headline metric: PSNR on the hole in
[0, 1] pixel units, beside the PSNR of filling the hole with the mean.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .decoder import UpDecoder, psnr, to_unit

PRETEXT = "context-encoder"
MASKS = ("central", "random")
HOLE_SHARE = (0.2, 0.3)  # of the image area, random masks
RECT_SIDE = (1 / 8, 1 / 4)  # of the image side: a rectangle adds at most 1/16 of the area
MAX_RECTS = 48  # candidate rectangles per mask (about 9 are used on average)


# --- masks -------------------------------------------------------------------------------------------

def central_box(height: int, width: int) -> tuple[int, int, int, int]:
    """(top, left, h, w) of the central hole: the centre square of half the side."""
    h, w = height // 2, width // 2
    return (height - h) // 2, (width - w) // 2, h, w


def central_mask(height: int, width: int, device=None) -> torch.Tensor:
    """1 x 1 x H x W bool, True in the central hole."""
    top, left, h, w = central_box(height, width)
    mask = torch.zeros(1, 1, height, width, dtype=torch.bool, device=device)
    mask[..., top:top + h, left:left + w] = True
    return mask


def _cell(height: int, width: int) -> int:
    """Side in px of the grid random masks are drawn on: the largest divisor of both sides that is at
    most 1/24 of the shorter one (4 px at 96 px: a 24 x 24 grid), 1 when there is none."""
    g = math.gcd(height, width)
    return max(c for c in range(1, max(1, min(height, width) // 24) + 1) if g % c == 0)


def random_masks(n: int, height: int, width: int, gen: torch.Generator | None = None,
                 share: Sequence[float] = HOLE_SHARE, device=None) -> torch.Tensor:
    """n x 1 x H x W bool: per image a union of random rectangles covering a share of the area in
    ``share`` (lo, hi). Per image a target t ~ U(lo, hi) is drawn and rectangles (sides 1/8 to 1/4
    of the image's) are added in turn while the hole is smaller than t, skipping one that would take
    it over hi; a rectangle adds at most 1/16 of the area, so the hole ends in [lo, hi] (of 100,000
    masks at 96 px, all did). The rectangles lie on a grid of ``_cell`` px (4 px at 96 px), which
    keeps this cheap: batched over the images, one pass over a n x 24 x 24 grid per candidate
    rectangle, never a loop over images. Drawn on the CPU from ``gen``, moved to ``device``."""
    lo, hi = (float(s) for s in share)
    if not 0 < lo <= hi < 1:
        raise ValueError(f"a hole share must be 0 < lo <= hi < 1, got {share}")
    cell = _cell(height, width)
    gh, gw = height // cell, width // cell
    k = MAX_RECTS
    sides = torch.rand(n, k, 2, generator=gen) * (RECT_SIDE[1] - RECT_SIDE[0]) + RECT_SIDE[0]
    hs = (sides[..., 0] * gh).round().long().clamp_(1, gh)  # n x k, in cells
    ws = (sides[..., 1] * gw).round().long().clamp_(1, gw)
    ys = (torch.rand(n, k, generator=gen) * (gh - hs + 1)).long()
    xs = (torch.rand(n, k, generator=gen) * (gw - ws + 1)).long()
    area = gh * gw
    low = (lo + (hi - lo) * torch.rand(n, generator=gen)) * area  # n: the target, in cells
    high = math.floor(hi * area + 1e-9)
    rows, cols = torch.arange(gh), torch.arange(gw)
    in_rows = (rows >= ys[..., None]) & (rows < (ys + hs)[..., None])  # n x k x gh
    in_cols = (cols >= xs[..., None]) & (cols < (xs + ws)[..., None])  # n x k x gw
    mask = torch.zeros(n, gh, gw, dtype=torch.bool)
    covered = torch.zeros(n, dtype=torch.long)
    for i in range(k):  # over candidate rectangles, all images at once
        open_ = covered < low
        if not open_.any():
            break
        rect = in_rows[:, i, :, None] & in_cols[:, i, None, :]
        count = (mask | rect).flatten(1).sum(1)
        take = open_ & (count <= high)
        mask |= rect & take[:, None, None]
        covered = torch.where(take, count, covered)
    if cell > 1:
        mask = mask.repeat_interleave(cell, 1).repeat_interleave(cell, 2)
    mask = mask[:, None]
    return mask.to(device) if device is not None else mask


def make_masks(kind: str, n: int, height: int, width: int, gen: torch.Generator | None = None,
               device=None) -> torch.Tensor:
    """n x 1 x H x W bool holes of ``kind`` (central: the same for all; random: ``random_masks``)."""
    if kind == "central":
        return central_mask(height, width, device).expand(n, 1, height, width)
    if kind == "random":
        return random_masks(n, height, width, gen, device=device)
    raise ValueError(f"unknown mask {kind!r}; known: {', '.join(MASKS)}")


def apply_mask(x: torch.Tensor, mask: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """x with the hole set to ``fill`` (0: the data set's mean in normalised units)."""
    return x.masked_fill(mask, fill)


def band(mask: torch.Tensor, width: int) -> torch.Tensor:
    """The ``width``-px band of context around the hole (within ``width`` px, Chebyshev), bool."""
    if width <= 0:
        return torch.zeros_like(mask)
    grown = mask.clone()  # dilated by a (2 width + 1)-square: shifted ORs along the rows, then the columns
    for dim in (-1, -2):
        source = grown.clone()
        for s in range(1, min(width, mask.shape[dim] - 1) + 1):
            grown.narrow(dim, s, grown.shape[dim] - s).logical_or_(source.narrow(dim, 0, grown.shape[dim] - s))
            grown.narrow(dim, 0, grown.shape[dim] - s).logical_or_(source.narrow(dim, s, grown.shape[dim] - s))
    return grown & ~mask


# --- the head ----------------------------------------------------------------------------------------

class ChannelwiseFC(nn.Module):
    """Per channel a dense h*w -> h*w map (the paper's channel-wise fully connected layer): C x hw x hw
    weights, no connections across channels."""

    def __init__(self, channels: int, size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels, size, size))
        self.bias = nn.Parameter(torch.zeros(channels, size))
        nn.init.uniform_(self.weight, -1 / math.sqrt(size), 1 / math.sqrt(size))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b, c, h, w = z.shape
        y = torch.einsum("bci,cij->bcj", z.reshape(b, c, h * w), self.weight.to(z.dtype)) + self.bias.to(z.dtype)
        return y.reshape(b, c, h, w)


class ContextEncoderHead(nn.Module):
    """pool5 -> channel-wise fc -> 1x1 conv -> up-convolutions -> the predicted region (normalised
    units): B x C x (h + 2 overlap) x (w + 2 overlap) around the central hole, or B x C x H x W
    (random holes). ``region`` says where the prediction lies in the image."""

    def __init__(self, in_shape: Sequence[int], input_size: Sequence[int], mask: str = "random", overlap: int = 3,
                 overlap_weight: float = 10.0, adversarial: float = 0.0, decoder_width: int = 256):
        super().__init__()
        if mask not in MASKS:
            raise ValueError(f"unknown mask {mask!r}; known: {', '.join(MASKS)}")
        c, h, w = (int(s) for s in in_shape)
        self.input_size = tuple(int(s) for s in input_size)
        self.mask, self.overlap = mask, int(overlap)
        self.overlap_weight, self.adversarial = float(overlap_weight), float(adversarial)
        _, H, W = self.input_size
        if mask == "central":
            top, left, hh, ww = central_box(H, W)
            if self.overlap > min(top, left):
                raise ValueError(f"overlap {overlap} px does not fit around the {hh}x{ww} hole of a {H}x{W} input")
            o = self.overlap
            self.region = (top - o, left - o, hh + 2 * o, ww + 2 * o)  # top, left, height, width
        else:
            self.region = (0, 0, H, W)
        self.channel_fc = nn.Sequential(ChannelwiseFC(c, h * w), nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        self.mix = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        self.decoder = UpDecoder((c, h, w), (self.input_size[0], self.region[2], self.region[3]), width=decoder_width)

    def forward(self, trunk: nn.Module, x: torch.Tensor) -> torch.Tensor:
        # x: B x C x H x W with the hole filled -> the region's pixels B x C x rh x rw
        return self.decoder(self.mix(self.channel_fc(trunk(x))))

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """The predicted region of full-size images (... x H x W -> ... x rh x rw)."""
        top, left, rh, rw = self.region
        return x[..., top:top + rh, left:left + rw]


def build_head(trunk: nn.Module, input_size: Sequence[int], mask: str = "random", overlap: int = 3,
               overlap_weight: float = 10.0, adversarial: float = 0.0, decoder_width: int = 256) -> ContextEncoderHead:
    """The head for ``trunk`` at the model's input size (it sees the whole masked image)."""
    from . import trunk_shape

    return ContextEncoderHead(trunk_shape(trunk, input_size), input_size, mask=mask, overlap=overlap,
                              overlap_weight=overlap_weight, adversarial=adversarial, decoder_width=decoder_width)


# --- inference helpers (the demo) ------------------------------------------------------------------

def _head(model) -> ContextEncoderHead:
    head = getattr(model, "head", model)
    if not isinstance(head, ContextEncoderHead):
        raise ValueError(f"expected a context-encoder model, got {getattr(model, 'name', type(model).__name__)}")
    return head


def mask_for(model, n: int = 1, gen: torch.Generator | None = None, device=None) -> torch.Tensor:
    """n x 1 x H x W holes of the kind ``model`` was trained with."""
    head = _head(model)
    _, H, W = head.input_size
    return make_masks(head.mask, n, H, W, gen, device)


def paste(model, x: torch.Tensor, prediction: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The context of x (B x C x H x W) with the hole taken from ``prediction`` (the head's output:
    the region around the central hole, or the whole image); the overlap band keeps the context."""
    head = _head(model)
    if head.region[2:] != tuple(x.shape[-2:]):  # central: the prediction covers the region only
        top, left, rh, rw = head.region
        full = x.clone()
        full[..., top:top + rh, left:left + rw] = prediction.to(x.dtype)
        prediction = full
    return torch.where(mask, prediction.to(x.dtype), x)


@torch.no_grad()
def fill(model, masked: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Normalised masked images (B x C x H x W, hole at the mean) -> the same with the hole painted."""
    return paste(model, masked, model.predict_pretext(masked), mask)


def inpaint(model, x: torch.Tensor, mask: torch.Tensor | None = None, gen: torch.Generator | None = None) -> dict:
    """One image x (normalised C x H x W) -> {"clean", "masked", "filled"} as C x H x W images in [0, 1]
    pixel units, "mask" (H x W bool), and "hole_psnr" / "mean_fill_psnr" (dB, on the hole). ``mask``
    (H x W or 1 x 1 x H x W bool) defaults to one of the model's kind (random: from ``gen``)."""
    head = _head(model)
    _, H, W = head.input_size
    mask = mask_for(model, 1, gen, x.device) if mask is None else mask.reshape(1, 1, H, W).to(x.device)
    masked = apply_mask(x[None], mask)
    filled = fill(model, masked, mask)[0]
    cfg = model.data_config
    clean, shown, out = to_unit(x, cfg), to_unit(masked[0], cfg), to_unit(filled, cfg)
    hole = mask[0].expand_as(clean)
    return {"clean": clean, "masked": shown, "filled": out, "mask": mask[0, 0],
            "hole_psnr": psnr(out, clean, hole), "mean_fill_psnr": psnr(shown, clean, hole)}
