"""Image loading that survives real files.

``open_image(path)`` decodes a file completely or raises ``ImageError`` naming the file and the
problem (missing, a dangling symlink or a symlink loop, a directory, a FIFO / socket / device,
unreadable, empty, not an image, truncated, a decompression bomb), so callers never see a PIL
traceback and never block: only regular files are read (a FIFO is opened non-blocking and
refused). ``read_image(path)`` is the same with a note for files PIL decoded but had to recover
(a file cut after its pixel data, a TIFF whose directory PIL warned about): the image is kept,
the note says why it is suspect. ``convert_mode`` turns any PIL mode into the "L" or "RGB" a
model wants, with alpha composited on white and high-bit-depth images scaled by their nominal
range. ``iter_images`` walks a list of paths, reporting bad files and going on.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import sys
import threading
import warnings
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, NamedTuple

import numpy as np
from PIL import Image, ImageOps, TiffTags, UnidentifiedImageError

try:
    import fcntl
except ImportError:  # Windows: no O_NONBLOCK either
    fcntl = None

# What a directory walk picks up as images (explicitly named files are tried whatever their name).
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                              ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico"})

# warnings.catch_warnings swaps process-global filters; decode threads must take turns (only
# around Image.open, which parses the header; the expensive decode runs outside the lock).
_BOMB_LOCK = threading.Lock()
_WHITE = {"L": 255, "RGB": (255, 255, 255)}
# O_NONBLOCK: opening a FIFO for reading must not wait for a writer (it is refused after fstat).
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
               | getattr(os, "O_BINARY", 0))
_PIL_DIR = os.path.dirname(Image.__file__) + os.sep
# How a format's file ends, when PIL decodes the pixels without reading that far: a file cut in
# its last bytes decodes, but is reported as recovered. (tail bytes to look at, marker)
_TRAILERS = {"PNG": (4096, b"IEND\xaeB`\x82"), "GIF": (1, b";")}


class ImageError(Exception):
    """A file that cannot be used as an image; ``str(e)`` is ``"PATH: reason"``."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class TooLargeError(ValueError):
    """An image that resizing to a model's input would blow up past the pixel limit (an extreme
    aspect ratio: its short side is enlarged to the input size). ``str(e)`` is the reason."""


class ImageRead(NamedTuple):
    image: Image.Image
    recovered: str | None  # None, or why the decoded pixels are suspect (the image is still usable)


def describe_file_type(mode: int) -> str | None:
    """What a non-regular file is ("a FIFO (named pipe)", ...); None for a regular file."""
    for test, what in ((stat.S_ISREG, None), (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return what
    return "not a regular file"


def _not_regular(path: str, mode: int) -> ImageError:
    what = describe_file_type(mode)
    if what == "a directory":
        return ImageError(path, "is a directory, not an image file")
    return ImageError(path, f"is {what}, not a regular file (not read)")


def _missing(path: str) -> ImageError:
    """FileNotFoundError: a dangling symlink, or nothing there."""
    try:
        target = os.readlink(path)
    except OSError:
        return ImageError(path, "no such file")
    return ImageError(path, f"dangling symlink (points to {target!r}, which does not exist)")


def _open_regular(path: str) -> BinaryIO:
    """Open ``path`` for reading if it is a regular file; never blocks (FIFO), never reads a
    device. Raises ``ImageError``."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise _missing(path) from None
    except IsADirectoryError:
        raise ImageError(path, "is a directory, not an image file") from None
    except PermissionError:
        raise ImageError(path, "permission denied (cannot read the file)") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ImageError(path, "symlink loop (too many levels of symbolic links)") from None
        try:
            mode = os.stat(path).st_mode  # ENXIO: a socket; EOPNOTSUPP, ...
        except OSError:
            mode = stat.S_IFREG
        if not stat.S_ISREG(mode):
            raise _not_regular(path, mode) from None
        raise ImageError(path, f"cannot open ({e.strerror or e})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(path, mode)
        if fcntl is not None:
            fcntl.fcntl(fd, fcntl.F_SETFL, 0)  # blocking reads again (a FUSE file system may honour O_NONBLOCK)
        return open(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def _pil_warnings(noted: list[str]) -> Iterator[None]:
    """Run the block with PIL's warnings recorded (each time, not once per process) into
    ``noted`` and ``DecompressionBombWarning`` raised. catch_warnings swaps process-global state,
    so threads take turns (``_BOMB_LOCK``): only cheap header/metadata parsing runs inside.
    Other warnings caught in the window (another thread's) are shown as they would have been."""
    with _BOMB_LOCK:
        with warnings.catch_warnings(record=True) as caught:
            warnings.filterwarnings("always", module=r"PIL(\.|$)")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
        for w in caught:
            if os.path.abspath(w.filename).startswith(_PIL_DIR):
                noted.append(str(w.message))
            else:
                warnings.showwarning(w.message, w.category, w.filename, w.lineno, w.file, w.line)


def _parse_exif(img: Image.Image) -> None:
    """Parse (and cache) the EXIF block and its sub-directories, as TIFF's ``load`` and
    ``exif_transpose`` would; a broken block must not lose a decodable image."""
    try:
        exif = img.getexif()
        for key in TiffTags.TAGS_V2_GROUPS:
            if key in exif:
                exif.get_ifd(key)
    except Exception:  # noqa: BLE001
        pass


def _cut_short(f: BinaryIO, fmt: str | None) -> str | None:
    """For formats whose decoder stops before the file's end marker: the note when it is missing."""
    if fmt not in _TRAILERS:
        return None
    span, marker = _TRAILERS[fmt]
    fd = f.fileno()
    start = max(0, os.fstat(fd).st_size - span)
    if hasattr(os, "pread"):
        tail = os.pread(fd, span, start)  # one call, no buffer
    else:
        f.seek(start)
        tail = f.read(span)
    if fmt == "GIF":
        tail = tail.rstrip(b"\0")[-1:]  # some writers pad after the trailer
    if marker in tail:
        return None
    return f"the file ends before its {fmt} end marker (cut short?); its pixels decoded, kept"


def _too_large(e: Exception) -> str:
    pixels = re.search(r"\((\d+) pixels\)", str(e))
    count = f"{int(pixels.group(1)):,} pixels" if pixels else "pixel count unknown"
    return (f"too large ({count}, limit {Image.MAX_IMAGE_PIXELS:,}; "
            "PIL's decompression-bomb guard, Image.MAX_IMAGE_PIXELS)")


def open_image(path: str | Path) -> Image.Image:
    """Decode ``path`` fully (``img.load()``) with its EXIF orientation applied.

    Raises ``ImageError`` for every way a file can fail; keeps PIL's decompression-bomb limit.
    Files PIL recovered are returned like any other (``read_image`` says which).
    """
    return read_image(path).image


def read_image(path: str | Path) -> ImageRead:
    """``open_image`` plus ``recovered``: None, or why the decoded image is suspect although PIL
    decoded it: PIL warned while reading its header/directory (e.g. a TIFF whose directory is cut:
    "Truncated File Read"), or the file lacks its end marker (a PNG without IEND, a GIF without
    its trailer: cut in its last bytes). Warnings PIL gives during the pixel decode itself, and
    the C libraries' own messages (libtiff, libjpeg), are not seen.
    """
    path = os.fspath(path)  # a str: no pathlib objects on the per-image hot path
    f = _open_regular(path)
    noted: list[str] = []  # PIL's warnings about this file
    with f:
        try:
            with _pil_warnings(noted):
                img = Image.open(f)  # parses the header (a TIFF's directory); the decode is outside the lock
                if img.format == "TIFF":
                    _parse_exif(img)  # TIFF's load() reads it: parsed here, under the lock, it is cached
            img.load()
            recovered = _cut_short(f, img.format)
            if "exif" in img.info or "Raw profile type exif" in img.info:  # else nothing to parse
                with _pil_warnings(noted):
                    _parse_exif(img)  # cached for exif_transpose: its warnings are this file's
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
    if noted:
        warned = f"PIL warned while reading it ({'; '.join(m.strip() for m in dict.fromkeys(noted))}); decoded, kept"
        recovered = f"{recovered}; {warned}" if recovered else warned
    try:
        ImageOps.exif_transpose(img, in_place=True)  # in place: no copy of the usual upright image
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose a decodable image
        pass
    return ImageRead(img, recovered)


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """LA / RGBA (any alpha mode) -> L / RGB composited on white."""
    if img.mode not in ("LA", "RGBA"):
        img = img.convert("LA" if img.mode in ("La",) else "RGBA")
    base = img.mode[:-1]  # "L" or "RGB"
    out = Image.new(base, img.size, _WHITE[base])
    out.paste(img.convert(base), mask=img.getchannel("A"))
    return out


def nominal_range(img: Image.Image) -> tuple[float, float] | None:
    """The range a high-bit-depth image's values are measured against, where the file says it.

    I;16 (any byte order: 16-bit PNG, TIFF, ...): 0..65535. "I" read from a PGM/PPM: PIL has
    already scaled the file's maxval to 65535 (a maxval-1000 PGM's 1000 reads as 65535), so
    0..65535 too; "I" from a PNG (older Pillow's 16-bit gray): 0..65535. Otherwise (32-bit
    TIFF, FITS, arrays, "F"): None, no nominal range.
    """
    if img.mode.startswith("I;16") or (img.mode == "I" and img.format in ("PPM", "PNG")):
        return 0.0, 65535.0
    return None


def _scale_to_l(img: Image.Image) -> Image.Image:
    """16-bit / 32-bit integer / float single-channel image -> "L" by its real range.

    Where the file gives a nominal range (``nominal_range``: 16-bit PNG / TIFF, 16-bit PGM of
    any maxval) it maps that range to 0..255, so a near-black 16-bit image stays near black;
    otherwise (I and F without one) the image's own finite min..max (a constant image gives 0;
    NaN -> min, +-inf -> max/min).
    """
    arr = np.asarray(img).astype(np.float64)  # H x W
    nominal = nominal_range(img)
    if nominal is not None:
        lo, hi = nominal
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
    are scaled to 0..255 by their nominal range, else their own (see ``_scale_to_l``); 1, P, CMYK,
    YCbCr, ... use PIL's conversions.
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
