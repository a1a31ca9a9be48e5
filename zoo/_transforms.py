"""The model's own preprocessing, read from its ``data_config`` (timm style)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from ._images import convert_mode

_INTERP = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
           "nearest": Image.Resampling.NEAREST}


def resize_crop(img: Image.Image, data_config: dict[str, Any]) -> Image.Image:
    """Resize the shorter side to size / crop_pct, then centre-crop to the input size."""
    _, h, w = data_config["input_size"]
    crop_pct = float(data_config.get("crop_pct", 1.0))
    interp = _INTERP[data_config.get("interpolation", "bilinear")]
    scale = max(h, w) / crop_pct / min(img.size)
    size = (max(w, round(img.width * scale)), max(h, round(img.height * scale)))
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


def normalize(x: torch.Tensor, data_config: dict[str, Any]) -> torch.Tensor:
    """uint8 (or float in [0, 1]) B x C x H x W -> float normalised with the model's mean/std."""
    if x.dtype == torch.uint8:
        x = x.float().div_(255)
    mean = torch.tensor(data_config["mean"], device=x.device, dtype=x.dtype).view(-1, 1, 1)
    std = torch.tensor(data_config["std"], device=x.device, dtype=x.dtype).view(-1, 1, 1)
    return (x - mean) / std


def transforms(model_or_config) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> normalised C x H x W float tensor, as the model expects."""
    cfg = getattr(model_or_config, "data_config", model_or_config)
    return lambda img: normalize(to_uint8_tensor(img, cfg), cfg)
