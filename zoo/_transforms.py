"""The model's own preprocessing, read from its ``data_config`` (timm style)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from ._images import TooLargeError, convert_mode

_INTERP = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
           "nearest": Image.Resampling.NEAREST}


def check_resize(src: tuple[int, int], size: tuple[int, int], crop: tuple[int, int]) -> None:
    """Refuse (``TooLargeError``) a resize of ``src`` to ``size`` (W x H) past PIL's pixel limit
    ``Image.MAX_IMAGE_PIXELS`` (none when it is None): a thin image (1 x 30000 px) would be
    enlarged to 224 x 6,720,000 to fill a 224-px input, gigabytes for a 141-byte file."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit and size[0] * size[1] > limit:
        ratio = max(src) / max(1, min(src))
        raise TooLargeError(
            f"too large once resized: {src[0]} x {src[1]} px (aspect ratio {ratio:,.0f}:1) would be scaled to "
            f"{size[0]:,} x {size[1]:,} ({size[0] * size[1]:,} pixels) to fill the {crop[0]} x {crop[1]} input; "
            f"limit {limit:,} pixels (PIL's Image.MAX_IMAGE_PIXELS)")


def resize_crop(img: Image.Image, data_config: dict[str, Any]) -> Image.Image:
    """Resize the shorter side to size / crop_pct, then centre-crop to the input size.

    Raises ``TooLargeError`` (a ``ValueError``) before allocating when the resized image would
    exceed PIL's pixel limit (see ``check_resize``)."""
    _, h, w = data_config["input_size"]
    crop_pct = float(data_config.get("crop_pct", 1.0))
    interp = _INTERP[data_config.get("interpolation", "bilinear")]
    scale = max(h, w) / crop_pct / min(img.size)
    size = (max(w, round(img.width * scale)), max(h, round(img.height * scale)))
    check_resize(img.size, size, (w, h))
    if img.size != size:
        img = img.resize(size, interp)
    left, top = (img.width - w) // 2, (img.height - h) // 2
    return img.crop((left, top, left + w, top + h)) if img.size != (w, h) else img


def to_uint8_tensor(img: Image.Image, data_config: dict[str, Any]) -> torch.Tensor:
    """PIL image -> C x H x W uint8 tensor in the model's mode and size (no normalisation)."""
    img = resize_crop(convert_mode(img, data_config.get("channels", "RGB")), data_config)
    arr = np.array(img, dtype=np.uint8)  # a writable copy
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(arr))


# PIL's "L" from RGB (ITU-R 601-2 luma), in PIL's own 16-bit fixed point: bit-equal to Image.convert("L").
_LUMA_FIXED = (19595, 38470, 7471)


def convert_channels(x: torch.Tensor, channels: str) -> torch.Tensor:
    """uint8 B x C x H x W (C 1 or 3) -> the model's ``channels`` ("L": 1, "RGB": 3), explicitly:
    L -> RGB repeats the gray plane, RGB -> L is PIL's luma. The tensor twin of ``convert_mode``."""
    want = {"L": 1, "RGB": 3}.get(channels)
    if want is None:
        raise ValueError(f"channels must be 'L' or 'RGB', got {channels!r}")
    c = x.shape[-3]
    if c == want:
        return x
    if (c, want) == (1, 3):
        return x.expand(*x.shape[:-3], 3, *x.shape[-2:]).contiguous()
    if (c, want) == (3, 1):
        if x.dtype != torch.uint8:
            raise ValueError(f"RGB -> L conversion takes uint8 images, got {x.dtype}")
        r, g, b = x.to(torch.int32).unbind(-3)
        luma = (r * _LUMA_FIXED[0] + g * _LUMA_FIXED[1] + b * _LUMA_FIXED[2] + 0x8000) >> 16
        return luma.to(torch.uint8).unsqueeze(-3)
    raise ValueError(f"cannot convert {c}-channel images to {channels}")


def normalize(x: torch.Tensor, data_config: dict[str, Any]) -> torch.Tensor:
    """uint8 (or float in [0, 1]) B x C x H x W -> float normalised with the model's mean/std.
    C must be the model's channel count (``convert_channels`` first): no broadcasting of a gray
    batch over a colour model's mean."""
    if x.shape[-3] != len(data_config["mean"]):
        raise ValueError(f"a {x.shape[-3]}-channel batch for a model that takes {len(data_config['mean'])} "
                         f"channel(s) ({data_config.get('channels', '?')}); convert it with convert_channels first")
    if x.dtype == torch.uint8:
        x = x.float().div_(255)
    mean = torch.tensor(data_config["mean"], device=x.device, dtype=x.dtype).view(-1, 1, 1)
    std = torch.tensor(data_config["std"], device=x.device, dtype=x.dtype).view(-1, 1, 1)
    return (x - mean) / std


def transforms(model_or_config) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> normalised C x H x W float tensor, as the model expects."""
    cfg = getattr(model_or_config, "data_config", model_or_config)
    return lambda img: normalize(to_uint8_tensor(img, cfg), cfg)
