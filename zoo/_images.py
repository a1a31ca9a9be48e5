"""Image loading that survives real files.

``open_image(path)`` decodes a file completely or raises ``ImageError`` naming the file and the
problem (missing, a directory, unreadable, empty, not an image, truncated, a decompression bomb),
so callers never see a PIL traceback. ``convert_mode`` turns any PIL mode into the "L" or "RGB"
a model wants, with alpha composited on white and high-bit-depth images scaled by their real
range. ``iter_images`` walks a list of paths, reporting bad files and going on.
"""
from __future__ import annotations

import os
import re
import sys
import threading
import warnings
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# What a directory walk picks up as images (explicitly named files are tried whatever their name).
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                              ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico"})

# warnings.catch_warnings swaps process-global filters; decode threads must take turns (only
# around Image.open, which parses the header; the expensive decode runs outside the lock).
_BOMB_LOCK = threading.Lock()
_WHITE = {"L": 255, "RGB": (255, 255, 255)}


class ImageError(Exception):
    """A file that cannot be used as an image; ``str(e)`` is ``"PATH: reason"``."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def _too_large(e: Exception) -> str:
    pixels = re.search(r"\((\d+) pixels\)", str(e))
    count = f"{int(pixels.group(1)):,} pixels" if pixels else "pixel count unknown"
    return (f"too large ({count}, limit {Image.MAX_IMAGE_PIXELS:,}; "
            "PIL's decompression-bomb guard, Image.MAX_IMAGE_PIXELS)")


def open_image(path: str | Path) -> Image.Image:
    """Decode ``path`` fully (``img.load()``) with its EXIF orientation applied.

    Raises ``ImageError`` for every way a file can fail; keeps PIL's decompression-bomb limit.
    """
    path = os.fspath(path)  # a str: no pathlib objects on the per-image hot path
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise ImageError(path, "no such file") from None
    except IsADirectoryError:
        raise ImageError(path, "is a directory, not an image file") from None
    except PermissionError:
        raise ImageError(path, "permission denied (cannot read the file)") from None
    except OSError as e:
        raise ImageError(path, f"cannot open ({e.strerror or e})") from None
    with f:
        try:
            with _BOMB_LOCK, warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(f)
            img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageError(path, _too_large(e)) from None
        except UnidentifiedImageError:
            empty = f.seek(0, 2) == 0
            raise ImageError(path, "empty file (0 bytes)" if empty else "not an image (unrecognised format)") from None
        except MemoryError:
            raise ImageError(path, "too large to decode (out of memory)") from None
        except IsADirectoryError:  # some platforms only fail on the first read
            raise ImageError(path, "is a directory, not an image file") from None
        except OSError as e:  # PIL's "image file is truncated", "broken data stream", read errors
            raise ImageError(path, f"truncated or corrupt ({e})") from None
        except Exception as e:  # noqa: BLE001 - plugins raise SyntaxError, ValueError, struct.error...
            raise ImageError(path, f"corrupt image ({type(e).__name__}: {e})") from None
    try:
        ImageOps.exif_transpose(img, in_place=True)  # in place: no copy of the usual upright image
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose a decodable image
        pass
    return img


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """LA / RGBA (any alpha mode) -> L / RGB composited on white."""
    if img.mode not in ("LA", "RGBA"):
        img = img.convert("LA" if img.mode in ("La",) else "RGBA")
    base = img.mode[:-1]  # "L" or "RGB"
    out = Image.new(base, img.size, _WHITE[base])
    out.paste(img.convert(base), mask=img.getchannel("A"))
    return out


def _scale_to_l(img: Image.Image) -> Image.Image:
    """16-bit / 32-bit integer / float single-channel image -> "L" by its real range.

    I;16 (any byte order) maps 0..65535 -> 0..255; I and F map the image's own finite min..max
    (a constant image gives 0; NaN -> min, +-inf -> max/min).
    """
    arr = np.asarray(img).astype(np.float64)  # H x W
    if img.mode.startswith("I;16"):
        lo, hi = 0.0, 65535.0
    else:
        finite = arr[np.isfinite(arr)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        arr = np.nan_to_num(arr, nan=lo, posinf=hi, neginf=lo)
    if hi <= lo:
        return Image.new("L", img.size, 0)
    scaled = np.clip((arr - lo) * (255.0 / (hi - lo)), 0, 255)
    return Image.fromarray(np.rint(scaled).astype(np.uint8), "L")


def convert_mode(img: Image.Image, channels: str) -> Image.Image:
    """Any PIL mode -> ``channels`` ("L" or "RGB").

    Alpha (LA, La, PA, RGBA, RGBa, P with transparency) is composited on white; I;16, I and F
    are scaled to 0..255 (see ``_scale_to_l``); 1, P, CMYK, YCbCr, ... use PIL's conversions.
    """
    if channels not in _WHITE:
        raise ValueError(f"channels must be 'L' or 'RGB', got {channels!r}")
    if img.mode == channels:
        return img
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        img = _flatten_alpha(img)
    elif img.mode.startswith("I") or img.mode == "F":
        img = _scale_to_l(img)
    elif img.mode not in ("L", "RGB"):
        img = img.convert("L" if img.mode == "1" else "RGB")  # 1, CMYK, YCbCr, HSV, RGBX, ...
    return img if img.mode == channels else img.convert(channels)


def warn_skipped(e: ImageError) -> None:
    """Default ``on_error``: one line on stderr."""
    print(f"warning: skipped {e}", file=sys.stderr)


def iter_images(paths: Iterable[str | Path],
                on_error: Callable[[ImageError], None] | None = None) -> Iterator[tuple[Path, Image.Image]]:
    """Yield ``(path, image)`` for each file that decodes; call ``on_error(ImageError)`` for the
    others (default: a warning on stderr) and go on."""
    report = on_error or warn_skipped
    for p in paths:
        try:
            img = open_image(p)
        except ImageError as e:
            report(e)
            continue
        yield Path(p), img
