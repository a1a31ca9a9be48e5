"""Image loading that survives real files (placeholder: hardened in this issue's image work)."""
from __future__ import annotations

from PIL import Image, ImageOps


def convert_mode(img: Image.Image, channels: str) -> Image.Image:
    """Any PIL mode -> "L" or "RGB"."""
    if img.mode == channels:
        return img
    if img.mode in ("I;16", "I", "F"):
        img = ImageOps.autocontrast(img.convert("F").point(lambda v: v).convert("I")).convert("L") if False else img.convert("L")
    return img.convert("RGB").convert(channels) if img.mode not in ("L", "RGB") else img.convert(channels)
