"""Denoising autoencoder (Vincent, Larochelle, Bengio & Manzagol, "Extracting and Composing Robust
Features with Denoising Autoencoders", ICML 2008): the image is corrupted and the network restores
the *clean* image from it.

Here the encoder is the zoo's AlexNet trunk (to pool5) and the decoder an up-convolution stack back
to the model's input (``decoder.UpDecoder``). Two corruptions (``noise`` in the model's
pretext_args, with ``noise_level``):

- ``mask``: each pixel (all its channels) is set to the data set's mean (0 in normalised units)
  with probability ``noise_level``: Vincent et al.'s masking noise, and the split-brain paper's
  "drop 50 %" denoising baseline at ``noise_level`` 0.5 (the zoo's setting);
- ``gaussian``: additive Gaussian noise of standard deviation ``noise_level`` in [0, 1] pixel
  units (``noise_level / std`` in normalised units), per value, not clipped.

The noise is drawn at the model's input size (the pixels the trunk sees), on the CPU from a
seeded generator and then moved, so a run is the same on any device. Headline metric: PSNR of
the restored image against the clean one in [0, 1] pixel units (``decoder.psnr``), beside the
PSNR of the corrupted input. The training side is ``sslzoo.training.pretexts.denoising``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .decoder import UpDecoder, psnr, to_unit

PRETEXT = "denoising"
NOISES = ("mask", "gaussian")


def check_noise(noise: str, level: float) -> None:
    if noise not in NOISES:
        raise ValueError(f"unknown noise {noise!r}; known: {', '.join(NOISES)}")
    if not 0.0 <= float(level) <= 1.0:
        raise ValueError(f"noise_level must be in 0..1 (a drop probability or a sigma in [0, 1] pixel units), got {level}")


def corrupt(x: torch.Tensor, noise: str = "mask", level: float = 0.5, gen: torch.Generator | None = None,
            std: Sequence[float] | float = 1.0) -> torch.Tensor:
    """Corrupted copy of normalised images x (B x C x H x W, or C x H x W), same dtype and device.

    mask: each pixel set to the mean (0) with probability ``level``; gaussian: + N(0, level^2) in
    [0, 1] pixel units, i.e. ``level / std`` per channel in normalised units (``std``: the data
    config's). The noise comes from ``gen`` (a CPU generator; None: torch's global one), drawn on
    the CPU and moved to x's device."""
    check_noise(noise, level)
    if x.dim() == 3:
        return corrupt(x[None], noise, level, gen, std)[0]
    b, c, h, w = x.shape
    if noise == "mask":
        keep = torch.rand(b, 1, h, w, generator=gen) >= level  # B x 1 x H x W: one draw per pixel
        return x * keep.to(x.device, x.dtype)
    sigma = float(level) / torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1)  # C x 1 x 1, normalised units
    noise_values = torch.randn(b, c, h, w, generator=gen) * sigma
    return (x.float() + noise_values.to(x.device)).to(x.dtype)


class DenoisingHead(nn.Module):
    """pool5 -> up-convolutions -> the restored image (B x C x H x W, normalised units). The
    corruption the model was trained with is part of its configuration (``noise``, ``noise_level``)."""

    def __init__(self, in_shape: Sequence[int], input_size: Sequence[int], noise: str = "mask", noise_level: float = 0.5,
                 decoder_width: int = 256):
        super().__init__()
        check_noise(noise, noise_level)
        self.noise, self.noise_level = noise, float(noise_level)
        self.input_size = tuple(int(s) for s in input_size)
        self.decoder = UpDecoder(in_shape, self.input_size, width=decoder_width)

    def forward(self, trunk: nn.Module, x: torch.Tensor) -> torch.Tensor:
        # x: corrupted B x C x H x W -> restored B x C x H x W
        return self.decoder(trunk(x))


def build_head(trunk: nn.Module, input_size: Sequence[int], noise: str = "mask", noise_level: float = 0.5,
               decoder_width: int = 256) -> DenoisingHead:
    """The head for ``trunk`` at the model's input size: it decodes pool5 back to the whole input."""
    from . import trunk_shape

    return DenoisingHead(trunk_shape(trunk, input_size), input_size, noise=noise, noise_level=noise_level,
                         decoder_width=decoder_width)


# --- inference helpers (the demo) ------------------------------------------------------------------

def _head(model) -> DenoisingHead:
    head = getattr(model, "head", None)
    if not isinstance(head, DenoisingHead):
        raise ValueError(f"expected a denoising model, got {getattr(model, 'name', type(model).__name__)}")
    return head


def corrupt_for(model, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """x (normalised, e.g. ``zoo.transforms(model)(pil)``) corrupted as ``model`` was trained."""
    head = _head(model)
    return corrupt(x, head.noise, head.noise_level, gen, model.data_config["std"])


@torch.no_grad()
def restore(model, noisy: torch.Tensor) -> torch.Tensor:
    """The model's restoration of corrupted images (normalised, C x H x W or B x C x H x W)."""
    _head(model)
    one = noisy.dim() == 3
    out = model.predict_pretext(noisy[None] if one else noisy)
    return out[0] if one else out


def corrupt_and_restore(model, x: torch.Tensor, gen: torch.Generator | None = None) -> dict:
    """One image x (normalised C x H x W) -> {"clean", "corrupted", "restored"} as C x H x W images in
    [0, 1] pixel units, and "input_psnr" / "psnr" (dB) of the corrupted and the restored image."""
    noisy = corrupt_for(model, x, gen)
    restored = restore(model, noisy)
    cfg = model.data_config
    clean, shown, out = to_unit(x, cfg), to_unit(noisy, cfg), to_unit(restored, cfg)
    return {"clean": clean, "corrupted": shown, "restored": out, "input_psnr": psnr(shown, clean),
            "psnr": psnr(out, clean)}
