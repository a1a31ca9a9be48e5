"""Split-brain autoencoder (Zhang, Isola & Efros, CVPR 2017), the paper's best "cl,cl" form: on the
split trunk (``sslzoo.zoo._split.SplitAlexNet``) the L half predicts ab over colorization's bins and
the ab half predicts L over ``l_bins`` equal bins of [0, 100] (``_colour.quantize_l``), both as
per-pixel classification at a quarter of the input resolution (``colorization.quarter_decoder``).

The halves are disjoint, so training them on the summed losses is training each on its own (the
paper trains them separately). The head returns {"ab": B x K x H/4 x W/4, "L": B x l_bins x H/4 x W/4}.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._colour import l_centres, lab_to_rgb, rgb_to_lab
from .colorization import TEMPERATURE, ColorizationHead, conv5, model_view, quarter_decoder

PRETEXT = "split-brain"
L_BINS = 50


class SplitBrainHead(ColorizationHead):
    """The L half's conv5 -> ab-bin logits (colorization's head); the ab half's conv5 -> L-bin logits."""

    def __init__(self, l_shape: Sequence[int], ab_shape: Sequence[int], input_size: Sequence[int],
                 l_bins: int = L_BINS, grid: float = 10.0, neighbours: int = 5, sigma: float = 5.0,
                 rebalance: float = 0.5, temperature: float = TEMPERATURE, decoder_width: int = 128):
        super().__init__(l_shape, input_size, grid, neighbours, sigma, rebalance, temperature, decoder_width)
        self.l_bins = int(l_bins)
        self.l_decoder = quarter_decoder(ab_shape, self.input_size, self.l_bins, decoder_width)

    def forward(self, trunk: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        # x: RGB in [0, 1], B x 3 x H x W -> {"ab": B x K x H/4 x W/4, "L": B x l_bins x H/4 x W/4}
        return {"ab": self.decoder(conv5(trunk.l, x)), "L": self.l_decoder(conv5(trunk.ab, x))}


def build_head(trunk: nn.Module, input_size: Sequence[int], l_bins: int = L_BINS, grid: float = 10.0,
               neighbours: int = 5, sigma: float = 5.0, rebalance: float = 0.5, temperature: float = TEMPERATURE,
               decoder_width: int = 128) -> SplitBrainHead:
    """The head for the split trunk at the model's input size, each decoder sized from its half's conv5."""
    from . import trunk_shape

    if not all(hasattr(trunk, h) for h in ("l", "ab")):
        raise ValueError("split-brain needs the split trunk (architecture alexnet_split)")
    return SplitBrainHead(trunk_shape(trunk.l, input_size, "conv5"), trunk_shape(trunk.ab, input_size, "conv5"),
                          input_size, l_bins, grid, neighbours, sigma, rebalance, temperature, decoder_width)


# --- inference helpers (the demo) ------------------------------------------------------------------

@torch.no_grad()
def lightness_from_ab(model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """One image x (RGB in [0, 1], 3 x H x W of any size) -> {"L": the ab half's L (H x W, the mean of its
    distribution over the L bins, enlarged from 1/4 of the model's input), "predicted": that L with x's
    own ab as an RGB image, "chroma": x's ab at L 50 (what the ab half sees), "original": x}."""
    if not isinstance(model.head, SplitBrainHead):
        raise ValueError(f"expected a split-brain model, got {getattr(model, 'name', type(model).__name__)}")
    x = x.float().clamp(0, 1)
    probs = model.predict_pretext(model_view(model, x[None]))["L"].float().softmax(1)  # 1 x l_bins x h x w
    L = torch.einsum("bkhw,k->bhw", probs, l_centres(model.head.l_bins).to(probs.device))[:, None]
    L = F.interpolate(L, size=x.shape[-2:], mode="bilinear", align_corners=False)
    ab = rgb_to_lab(x[None])[:, 1:]
    return {"L": L[0, 0], "predicted": lab_to_rgb(torch.cat([L, ab], 1))[0],
            "chroma": lab_to_rgb(torch.cat([torch.full_like(L, 50.0), ab], 1))[0], "original": x}
