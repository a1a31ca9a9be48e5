"""Batched, device-agnostic augmentation and preprocessing for in-memory uint8 image sets."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from sslzoo.zoo._transforms import normalize


def random_crop_flip(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Random translation by up to ``pad`` px (zero padding) and random horizontal flip, per image.

    x: B x C x H x W (any dtype) -> same shape. Offsets drawn from ``gen`` on the CPU, so a
    run is reproducible on any device.
    """
    b, c, h, w = x.shape
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
    xp = F.pad(x, (pad, pad, pad, pad))
    rows = oy[:, None] + torch.arange(h, device=x.device)  # B x H
    cols = ox[:, None] + torch.arange(w, device=x.device)  # B x W
    cols = torch.where(flip[:, None], cols.flip(-1), cols)
    bi = torch.arange(b, device=x.device)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # B x H x W x C
    return out.permute(0, 3, 1, 2).contiguous()


def random_zoom_out(x: torch.Tensor, max_pad: int, gen: torch.Generator) -> torch.Tensor:
    """A zero (black) border of p px on every side, p uniform in 0 .. ``max_pad`` and drawn once per
    batch (one size keeps the batch one tensor): what the pretext then resizes shows the object at
    h / (h + 2p) of its frame, a scale jitter. Zero suits Fashion-MNIST's black background.

    x: B x C x h x w -> B x C x (h + 2p) x (w + 2p). ``max_pad`` 0: x itself, and no draw from gen.
    """
    if max_pad <= 0:
        return x
    p = int(torch.randint(0, max_pad + 1, (1,), generator=gen))
    return F.pad(x, (p, p, p, p)) if p else x


def to_model_input(x: torch.Tensor, data_config: dict, resize: bool = True) -> torch.Tensor:
    """uint8 B x C x h x w -> normalised float B x C x H x W at the model's input size
    (``resize=False``: normalised at the source size h x w)."""
    _, h, w = data_config["input_size"]
    x = x.float().div_(255)
    if resize and tuple(x.shape[-2:]) != (h, w):
        x = F.interpolate(x, size=(h, w), mode=data_config.get("interpolation", "bilinear"),
                          align_corners=False, antialias=False)
    return normalize(x, data_config)
