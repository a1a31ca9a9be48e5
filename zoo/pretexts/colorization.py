"""Colorization (Zhang, Isola & Efros, "Colorful Image Colorization", ECCV 2016): from the L channel
of CIE Lab the network predicts, per pixel at a quarter of the input resolution, a distribution over
the in-gamut ab bins of a 10-unit grid (``sslzoo.zoo._colour.ab_bins``: 261 here, the authors' 313
reach beyond sRGB); a colour is read back with the annealed mean (T 0.38).

The model takes RGB in [0, 1]; its trunk's ``lab_l`` front end gives the convolutions L - 50 only,
so a gray image is seen exactly as its colour original. The head decodes the trunk's conv5 map
(unpooled: 5 x 5 at 96 px) with up-convolutions (``decoder.UpDecoder``) to K logits at H/4 x W/4
(the authors' AlexNet colorizer also predicts at 1/4 and compares against ab subsampled by 4).

The split-brain autoencoder's L -> ab half uses the same bins, head and read-out
(``split_brain``). The training side (soft targets, class rebalancing, metrics) is
``sslzoo.training.pretexts.colorization``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._colour import ab_bins, annealed_mean, lab_to_rgb, rgb_to_lab
from .decoder import UpDecoder

PRETEXT = "colorization"
STRIDE = 4  # predictions at 1/4 of the input resolution
TEMPERATURE = 0.38  # the paper's annealed mean


def quarter_decoder(in_shape: Sequence[int], input_size: Sequence[int], classes: int, width: int) -> UpDecoder:
    """conv5 (C x h x w) -> ``classes`` logits at (H / 4) x (W / 4): the colour heads' decoder."""
    _, H, W = (int(s) for s in input_size)
    return UpDecoder(in_shape, (classes, H // STRIDE, W // STRIDE), width=width)


def conv5(trunk: nn.Module, x: torch.Tensor, layer: str = "conv5") -> torch.Tensor:
    """The trunk's unpooled conv5 map (or another tap), stopping there."""
    return trunk.forward_taps(x, (layer,), pool5=False)[0][layer]


class ColorizationHead(nn.Module):
    """conv5 -> up-convolutions -> B x K x H/4 x W/4 logits over the ab bins. The colour recipe
    (grid, soft-encoding neighbours and sigma, rebalancing lambda, temperature) is part of the
    configuration; the bins are rebuilt from ``grid`` (a buffer, not stored with the weights)."""

    def __init__(self, in_shape: Sequence[int], input_size: Sequence[int], grid: float = 10.0, neighbours: int = 5,
                 sigma: float = 5.0, rebalance: float = 0.5, temperature: float = TEMPERATURE,
                 decoder_width: int = 256):
        super().__init__()
        self.input_size = tuple(int(s) for s in input_size)
        if self.input_size[0] != 3:
            raise ValueError(f"colorization takes RGB input (3 channels), the model's input is {self.input_size}")
        self.grid, self.neighbours, self.sigma = float(grid), int(neighbours), float(sigma)
        self.rebalance, self.temperature = float(rebalance), float(temperature)
        self.register_buffer("bins", ab_bins(self.grid), persistent=False)  # K x 2
        self.decoder = quarter_decoder(in_shape, self.input_size, len(self.bins), decoder_width)

    def forward(self, trunk: nn.Module, x: torch.Tensor) -> torch.Tensor:
        # x: RGB in [0, 1], B x 3 x H x W -> logits B x K x H/4 x W/4
        return self.decoder(conv5(trunk, x))


def build_head(trunk: nn.Module, input_size: Sequence[int], grid: float = 10.0, neighbours: int = 5,
               sigma: float = 5.0, rebalance: float = 0.5, temperature: float = TEMPERATURE,
               decoder_width: int = 256) -> ColorizationHead:
    """The head for ``trunk`` at the model's input size, sized from its conv5 map."""
    from . import trunk_shape

    return ColorizationHead(trunk_shape(trunk, input_size, "conv5"), input_size, grid, neighbours, sigma, rebalance,
                            temperature, decoder_width)


# --- inference helpers (the demo) ------------------------------------------------------------------

def ab_logits(model, x: torch.Tensor) -> torch.Tensor:
    """B x K x H/4 x W/4 ab-bin logits of a colorization or split-brain model for RGB x in [0, 1]."""
    out = model.predict_pretext(x)
    if isinstance(out, dict):  # split-brain: its L -> ab half
        out = out["ab"]
    if out.dim() != 4 or out.shape[1] != len(model.head.bins):
        raise ValueError(f"expected a colorization or split-brain model, got {getattr(model, 'name', type(model).__name__)}")
    return out


def model_view(model, x: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1], B x 3 x H x W of any size -> the model's input size (bilinear, antialiased)."""
    _, h, w = model.data_config["input_size"]
    if tuple(x.shape[-2:]) == (h, w):
        return x
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)


@torch.no_grad()
def colorize(model, x: torch.Tensor, temperature: float | None = None) -> dict[str, torch.Tensor]:
    """One image x (RGB in [0, 1], 3 x H x W of any size; a gray one has R = G = B) -> {"gray": its L as an
    RGB image, "colorized": the model's colouring of that L, "original": x, "ab": the predicted ab
    (2 x H x W)}, all at x's size. The model sees x at its input size; the ab it predicts at 1/4 of that
    is enlarged (bilinear) and put with x's own L, as the paper does. ``temperature``: the annealed
    mean's (default: the model's, 0.38; towards 0 the mode, 1 the mean)."""
    head = model.head
    T = head.temperature if temperature is None else float(temperature)
    if not T > 0:
        raise ValueError(f"temperature must be > 0, got {T}")
    x = x.float().clamp(0, 1)
    probs = ab_logits(model, model_view(model, x[None])).float().softmax(1)  # 1 x K x h x w
    ab = annealed_mean(probs, head.bins.float(), T)  # 1 x 2 x h x w
    ab = F.interpolate(ab, size=x.shape[-2:], mode="bilinear", align_corners=False)
    L = rgb_to_lab(x[None])[:, :1]
    gray = lab_to_rgb(torch.cat([L, torch.zeros_like(ab)], 1))[0]
    colorized = lab_to_rgb(torch.cat([L, ab], 1))[0]
    return {"gray": gray, "colorized": colorized, "original": x, "ab": ab[0]}
