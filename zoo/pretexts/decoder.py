"""What the reconstruction pretexts share (denoising autoencoder, context encoder): an
up-convolution decoder from the trunk's pool5 back to pixels, and PSNR.

``UpDecoder`` maps pool5 (C x h x w, from ``trunk_shape``) to ``out_channels`` x H x W (the whole
image, or a hole region) and sizes itself from the two shapes: a stride-1 transposed convolution
first takes h x w to a base size bh x bw, then n transposed convolutions (4x4, stride 2, DCGAN /
the context encoder's up-convolutions) double it, each but the last followed by BatchNorm and
ReLU; the last gives the pixels (linear: the model's normalised units), so no wide map is ever
made at full resolution (at 96 px a 32-channel one there tripled the step time). n is the most doublings
that do not overshoot (n = floor(log2(H / h))), the base is ceil(H / 2^n), and what overshoots
(H not a multiple of 2^n) is cropped at the centre: at 96 px AlexNet's pool5 is 2 x 2, so the
whole image is 2 -> 3 -> 6 -> 12 -> 24 -> 48 -> 96 and the 54-px region of the central hole
(48 + 2 x 3 overlap) is 2 -> 4 -> ... -> 64, cropped to 54. Widths start at ``width`` and halve
per doubling down to ``min_width``.

PSNR is in [0, 1] pixel units (``to_unit`` undoes the data config's normalisation); a set's
figure is computed from its *pooled* squared error (``squared_error`` sums, ``psnr_from_mse``),
not as a mean of per-image PSNRs.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

MIN_WIDTH = 16
MAX_PSNR = 100.0  # dB, for an error of (almost) zero: keeps the recorded figure a finite number


def plan(in_hw: Sequence[int], out_hw: Sequence[int]) -> tuple[int, int, int]:
    """(n doublings, base h, base w) that take a h x w map to at least H x W (see the module doc)."""
    (h, w), (H, W) = (int(s) for s in in_hw), (int(s) for s in out_hw)
    if H < h or W < w:
        raise ValueError(f"the decoder cannot shrink: target {H}x{W} is smaller than the trunk's {h}x{w} output")
    n = max(0, int(math.floor(math.log2(min(H / h, W / w)))))
    return n, -(-H // 2**n), -(-W // 2**n)


class UpDecoder(nn.Module):
    """pool5 B x C x h x w -> B x out_channels x H x W (normalised units)."""

    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int], width: int = 256, min_width: int = MIN_WIDTH):
        super().__init__()
        c, h, w = (int(s) for s in in_shape)
        self.out_shape = tuple(int(s) for s in out_shape)
        out_c, H, W = self.out_shape
        n, bh, bw = plan((h, w), (H, W))
        self.stem = nn.Sequential(nn.ConvTranspose2d(c, width, (bh - h + 1, bw - w + 1), bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        cin = width
        for _ in range(n - 1):
            cout = max(min(min_width, cin), cin // 2)
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            cin = cout
        self.up = nn.Sequential(*layers)
        # the last doubling gives the pixels (DCGAN's generator, the context encoder's decoder): no
        # wide map at full resolution, where it would cost most of the step
        self.out = nn.ConvTranspose2d(cin, out_c, 4, 2, 1) if n else nn.Conv2d(cin, out_c, 3, padding=1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        nn.init.normal_(self.out.weight, 0.0, 0.02)  # the first output is about the mean (0), DCGAN's scale
        nn.init.zeros_(self.out.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        y = self.out(self.up(self.stem(z)))
        _, H, W = self.out_shape
        top, left = (y.shape[-2] - H) // 2, (y.shape[-1] - W) // 2
        return y[..., top:top + H, left:left + W]  # the centre (a view; all of it when the plan fits exactly)


# --- pixels and PSNR ------------------------------------------------------------------------------

def to_unit(x: torch.Tensor, data_config: dict, clamp: bool = True) -> torch.Tensor:
    """Normalised ... x C x H x W -> [0, 1] pixel units (float32), clamped to [0, 1] unless ``clamp``
    is False: what an image shows."""
    mean = torch.tensor(data_config["mean"], dtype=torch.float32, device=x.device).view(-1, 1, 1)
    std = torch.tensor(data_config["std"], dtype=torch.float32, device=x.device).view(-1, 1, 1)
    y = x.float() * std + mean
    return y.clamp_(0, 1) if clamp else y


def squared_error(a: torch.Tensor, b: torch.Tensor, where: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """(sum of squared differences, number of values) over all elements, or over those ``where``
    (a bool mask broadcastable to ``a``) says: the sums a set's PSNR is pooled from."""
    d = (a.float() - b.float()).square()
    if where is None:
        return d.sum(), d.numel()
    where = where.expand_as(d)
    return d[where].sum(), int(where.sum())


def psnr_from_mse(mse: float, data_range: float = 1.0) -> float:
    """10 log10(range^2 / MSE) in dB, at most ``MAX_PSNR``."""
    mse = float(mse)
    if mse <= data_range**2 * 10 ** (-MAX_PSNR / 10):
        return MAX_PSNR
    return 10 * math.log10(data_range**2 / mse)


def psnr(a: torch.Tensor, b: torch.Tensor, where: torch.Tensor | None = None, data_range: float = 1.0) -> float:
    """PSNR (dB) between two images or batches in [0, 1] pixel units, over all pixels or those ``where``
    says, from the pooled squared error."""
    total, count = squared_error(a, b, where)
    return psnr_from_mse(float(total) / max(1, count), data_range)
