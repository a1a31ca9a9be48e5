"""Colour on tensors: sRGB <-> CIE Lab (D65), batched on any device.

The colour pretexts (colorization, split-brain) and the trunk front ends ``lab_l`` / ``lab_ab``
use it. Formulas: IEC 61966-2-1 sRGB transfer curve, the sRGB -> XYZ matrix for D65, and CIE
1976 L*a*b* with the D65 white (0.95047, 1, 1.08883), as scikit-image's ``rgb2lab`` uses them.
"""
from __future__ import annotations

import torch

# sRGB (linear) -> XYZ, D65 (IEC 61966-2-1)
_RGB_TO_XYZ = ((0.412453, 0.357580, 0.180423),
               (0.212671, 0.715160, 0.072169),
               (0.019334, 0.119193, 0.950227))
_WHITE = (0.95047, 1.0, 1.08883)
_EPS = (6.0 / 29.0) ** 3  # CIE's linear-segment threshold


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0, 1)
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def rgb_to_lab(x: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1], B x 3 x H x W -> Lab, B x 3 x H x W (L in [0, 100], a/b roughly [-110, 110])."""
    linear = srgb_to_linear(x)
    m = torch.tensor(_RGB_TO_XYZ, dtype=x.dtype, device=x.device)
    xyz = torch.einsum("ij,bjhw->bihw", m, linear)  # B x 3 x H x W
    xyz = xyz / torch.tensor(_WHITE, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    f = torch.where(xyz > _EPS, xyz.clamp_min(_EPS) ** (1.0 / 3.0), xyz / (3 * (6.0 / 29.0) ** 2) + 4.0 / 29.0)
    fx, fy, fz = f.unbind(1)
    return torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], 1)
