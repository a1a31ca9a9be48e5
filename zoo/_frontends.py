"""Input front ends some authors' trunks build into the network (so ``data_config`` stays plain RGB).

- ``Sobel``: DeepCluster (Caron et al., ECCV 2018; facebookresearch/deepcluster ``models/alexnet.py``):
  a fixed 1x1 conv averaging R, G, B into one gray channel, then a fixed 3x3 conv with the
  horizontal and vertical Sobel kernels (padding 1) -> 2 channels. It runs on the *normalised*
  RGB input. Its weights are stored (the authors' checkpoint carries them as ``sobel.0/1``).
- ``LabLightness``: the colorization trunks of VISSL / Goyal et al. 2019 see only the L channel
  of CIE Lab, shifted to [-50, 50] (VISSL ``ImgPil2LabTensor``: OpenCV 8-bit L * 100/255 - 50).
  Here: sRGB in [0, 1] -> linear RGB -> Y (D65) -> L* = 116 f(Y) - 16, minus 50, computed in
  float (OpenCV's 8-bit path rounds L to steps of 100/255 ~ 0.39).
- ``SobelGray`` / ``LabChroma``: the zoo AlexNet's Sobel on a gray model (no RGB average) and the
  (a*, b*) / 110 channels of a colour model (split-brain's chroma half), ``zoo/_colour.py``.
- ``TileNorm``: bbrattoli/JigsawPuzzlePytorch normalises every tile by its own per-channel mean
  and (unbiased) std, a std of 0 counting as 1 (``Dataset/JigsawImageLoader.py``).
"""
from __future__ import annotations

import torch
from torch import nn

SOBEL_X = ((1.0, 0.0, -1.0), (2.0, 0.0, -2.0), (1.0, 0.0, -1.0))
SOBEL_Y = ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0))


class Sobel(nn.Sequential):
    """RGB (normalised) -> gray (mean of the channels) -> [Sobel x, Sobel y]: B x 2 x H x W."""

    def __init__(self):
        gray = nn.Conv2d(3, 1, kernel_size=1)
        sobel = nn.Conv2d(1, 2, kernel_size=3, padding=1)
        with torch.no_grad():
            gray.weight.fill_(1.0 / 3.0)
            gray.bias.zero_()
            sobel.weight.copy_(torch.tensor([SOBEL_X, SOBEL_Y]).unsqueeze(1))
            sobel.bias.zero_()
        super().__init__(gray, sobel)
        for p in self.parameters():
            p.requires_grad_(False)


def srgb_to_lightness(x: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1], B x 3 x H x W -> CIE L* in [0, 100], B x 1 x H x W (D65 white)."""
    x = x.clamp(0, 1)
    linear = torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
    y = 0.212671 * linear[:, 0:1] + 0.715160 * linear[:, 1:2] + 0.072169 * linear[:, 2:3]
    eps = (6.0 / 29.0) ** 3
    f = torch.where(y > eps, y.clamp_min(eps) ** (1.0 / 3.0), y / (3 * (6.0 / 29.0) ** 2) + 4.0 / 29.0)
    return 116.0 * f - 16.0


class LabLightness(nn.Module):
    """RGB in [0, 1] -> L* - 50 (one channel in [-50, 50]), the colorization trunks' input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return srgb_to_lightness(x) - 50.0


class TileNorm(nn.Module):
    """Per-image, per-channel standardisation (mean 0, unbiased std 1; a zero std counts as 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)
        mean = flat.mean(-1)[..., None, None]
        std = flat.std(-1)
        std = torch.where(std == 0, torch.ones_like(std), std)[..., None, None]
        return (x - mean) / std


class SobelGray(nn.Conv2d):
    """One gray channel -> [Sobel x, Sobel y]: B x 2 x H x W (DeepCluster's Sobel without the RGB average)."""

    def __init__(self):
        super().__init__(1, 2, kernel_size=3, padding=1)
        with torch.no_grad():
            self.weight.copy_(torch.tensor([SOBEL_X, SOBEL_Y]).unsqueeze(1))
            self.bias.zero_()
        for p in self.parameters():
            p.requires_grad_(False)


class LabChroma(nn.Module):
    """RGB in [0, 1] -> (a*, b*) / 110: two channels in about [-1, 1] (split-brain's ab half).

    A gray pixel (R = G = B) converts to |a|, |b| up to ~0.005, not 0: the sRGB matrix's rows sum to
    a white a hair off D65's (scikit-image's conversion does the same), so its "chroma" is a smooth
    function of L. A network and a standardising linear probe read L back from it, so values below
    ``FLOOR`` (0.01 Lab units: far below any colour an 8-bit image can hold) are set to exactly 0."""

    FLOOR = 0.01

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from ._colour import rgb_to_lab

        ab = rgb_to_lab(x)[:, 1:]
        return ab.masked_fill(ab.abs() < self.FLOOR, 0.0) / 110.0


FRONT_ENDS = {"rgb": nn.Identity, "gray": nn.Identity, "sobel": Sobel, "lab_l": LabLightness, "lab_ab": LabChroma,
              "tile_norm": TileNorm}
FRONT_END_CHANNELS = {"rgb": 3, "gray": 1, "sobel": 2, "lab_l": 1, "lab_ab": 2, "tile_norm": 3}
# the input channels each front end takes (the model's data_config): Lab front ends want RGB in [0, 1]
FRONT_END_INPUTS = {"rgb": (3,), "gray": (1,), "sobel": (1, 3), "lab_l": (3,), "lab_ab": (3,), "tile_norm": (3,)}


def trunk_front_end(name: str, in_chans: int) -> nn.Module:
    """The front end ``name`` for a model taking ``in_chans`` channels (Sobel on gray input: no RGB average)."""
    if name not in FRONT_ENDS:
        raise ValueError(f"unknown front end {name!r}; known: {sorted(FRONT_ENDS)}")
    if in_chans not in FRONT_END_INPUTS[name]:
        raise ValueError(f"front end {name!r} takes {' or '.join(map(str, FRONT_END_INPUTS[name]))}-channel input, "
                         f"not {in_chans}")
    return SobelGray() if (name, in_chans) == ("sobel", 1) else FRONT_ENDS[name]()


def front_end(name: str) -> nn.Module:
    if name not in FRONT_ENDS:
        raise ValueError(f"unknown front end {name!r}; known: {sorted(FRONT_ENDS)}")
    return FRONT_ENDS[name]()
