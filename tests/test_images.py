"""Image loading against hostile files (FIFOs, sockets, symlinks, files cut short), EXIF orientation,
every PIL mode -> L / RGB, 16-bit ranges, and the bound on resizing a thin image."""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import struct
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sslzoo.zoo import example_images
from sslzoo.zoo._images import ImageError, TooLargeError, convert_mode, iter_images, open_image, read_image
from sslzoo.zoo._transforms import resize_crop


def _noise(size=(64, 48), mode="RGB", seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


def _saved(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _reason(path) -> str:
    with pytest.raises(ImageError) as info:
        open_image(path)
    e = info.value
    assert e.path == str(path) and str(e) == f"{path}: {e.reason}"
    return e.reason


# --------------------------------------------------------------------------- hostile files

@pytest.mark.parametrize("fmt,suffix", [("PNG", ".png"), ("JPEG", ".jpg")])
def test_truncated(tmp_path, fmt, suffix):
    data = _saved(_noise(), fmt)
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: len(data) // 2])
    assert "truncated" in _reason(path)


def test_zero_bytes(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert _reason(path) == "empty file (0 bytes)"


def test_text_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("not a picture\n")
    assert "not an image" in _reason(path)


def test_directory_and_missing(tmp_path):
    assert "directory" in _reason(tmp_path)
    assert _reason(tmp_path / "nope.png") == "no such file"


@contextlib.contextmanager
def _unprivileged():
    """As root (permission bits do not stop root), run the block with the effective uid of
    nobody (real uid stays 0, so it can be restored); otherwise as we are."""
    if os.geteuid() != 0:
        yield
        return
    try:
        os.seteuid(65534)
    except OSError as e:
        pytest.skip(f"running as root and cannot drop to nobody ({e})")
    try:
        yield
    finally:
        os.seteuid(0)


def test_unreadable():
    top = Path(tempfile.mkdtemp(prefix="sslzoo-unreadable-"))  # outside pytest's 0700 tree: nobody must reach it
    try:
        top.chmod(0o755)
        path = top / "secret.png"
        path.write_bytes(_saved(_noise(), "PNG"))
        path.chmod(0)
        with _unprivileged():
            assert _reason(path) == "permission denied (cannot read the file)"
    finally:
        shutil.rmtree(top)


def test_decompression_bomb(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    warn_size, error_size = tmp_path / "warn.png", tmp_path / "error.png"
    warn_size.write_bytes(_saved(Image.new("L", (40, 40)), "PNG"))  # 1600 px: PIL would only warn
    error_size.write_bytes(_saved(Image.new("L", (100, 100)), "PNG"))  # over 2x the limit: PIL raises
    filters = list(warnings.filters)
    assert _reason(warn_size).startswith("too large (1,600 pixels, limit 1,000")
    assert _reason(error_size).startswith("too large (10,000 pixels, limit 1,000")
    assert warnings.filters == filters  # the temporary "error" filter is gone
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    assert open_image(warn_size).size == (40, 40)  # under the limit again: decodes


def test_iter_images_reports_and_goes_on(tmp_path, capsys):
    good = tmp_path / "good.png"
    good.write_bytes(_saved(_noise(), "PNG"))
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    errors = []
    got = list(iter_images([bad, good, tmp_path / "missing.png"], on_error=errors.append))
    assert [p for p, _ in got] == [good] and got[0][1].size == (64, 48)
    assert [e.path for e in errors] == [str(bad), str(tmp_path / "missing.png")]
    assert [p for p, _ in iter_images([bad, good])] == [good]  # default: a warning on stderr
    assert f"{bad}: not an image" in capsys.readouterr().err


def test_exif_orientation_applied(tmp_path):
    # Stored 40 x 20 (W x H): top-left quadrant red, the rest blue. Orientation 6 means "rotate
    # 90 degrees clockwise to display": the red quadrant must end up top-right of a 20 x 40 image.
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 20, 10))
    exif = stored.getexif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    stored.save(path, quality=95, exif=exif)
    img = open_image(path)
    assert img.size == (20, 40)
    a = np.asarray(img).astype(int)
    red, blue = np.array([255, 0, 0]), np.array([0, 0, 255])
    assert np.abs(a[5, 15] - red).max() < 40  # top-right quadrant (row 5, column 15)
    for y, x in [(5, 4), (30, 4), (30, 15)]:  # the other three
        assert np.abs(a[y, x] - blue).max() < 40, (y, x, a[y, x])


def test_examples_decode():
    paths = example_images()
    assert [p.name for p in paths] == ["astronaut.jpg", "chelsea.jpg", "coffee.jpg", "fmnist-0-ankle-boot.png",
                                       "fmnist-1-pullover.png", "fmnist-2-trouser.png", "fmnist-4-shirt.png",
                                       "opencv-board.jpg", "rocket.jpg"]
    assert sum(p.stat().st_size for p in paths) < 200_000
    assert {open_image(p).mode for p in paths} == {"L", "RGB"}


# --------------------------------------------------------------------------- modes

def _palette(transparent: bool) -> Image.Image:
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 0, 0] + [0] * 762)  # index 0 red, 1 black
    img.putdata([0, 1])
    if transparent:
        img.info["transparency"] = 1
    return img


def _wide(values, mode) -> Image.Image:
    """One-row image of a high-bit-depth mode from exact values."""
    dtype = {"I;16": "<u2", "I;16B": ">u2", "I": "<i4", "F": "<f4"}[mode]
    raw = np.array([values], dtype=dtype)
    return Image.frombuffer(mode, (len(values), 1), raw.tobytes(), "raw", mode, 0, 1)


# mode -> (image, expected "L" row, expected "RGB" row); RGB given only where it is not gray
MODES = {
    "1": (Image.frombytes("1", (2, 1), bytes([0b01000000])), [0, 255], None),
    "L": (Image.fromarray(np.array([[0, 200]], np.uint8)), [0, 200], None),
    "LA": (Image.fromarray(np.array([[[0, 0], [0, 255], [100, 128]]], np.uint8), "LA"), [255, 0, 177], None),
    "P": (_palette(False), [76, 0], [[255, 0, 0], [0, 0, 0]]),
    "P+transparency": (_palette(True), [76, 255], [[255, 0, 0], [255, 255, 255]]),
    "RGB": (Image.fromarray(np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8)), [76, 29], [[255, 0, 0], [0, 0, 255]]),
    "RGBA": (Image.fromarray(np.array([[[255, 0, 0, 255], [0, 0, 0, 0]]], np.uint8), "RGBA"), [76, 255],
             [[255, 0, 0], [255, 255, 255]]),
    "CMYK": (Image.fromarray(np.array([[[0, 0, 0, 0], [255, 0, 0, 0]]], np.uint8), "CMYK"), [255, 179],
             [[255, 255, 255], [0, 255, 255]]),
    "I;16": (_wide([0, 32768, 65535], "I;16"), [0, 128, 255], None),
    "I;16B": (_wide([0, 32768, 65535], "I;16B"), [0, 128, 255], None),
    "I": (_wide([-1000, 0, 1000], "I"), [0, 128, 255], None),
    "I constant": (_wide([70000, 70000], "I"), [0, 0], None),
    "F": (_wide([0.5, 0.75, 1.0, float("nan")], "F"), [0, 128, 255, 0], None),
    "F constant": (_wide([3.5, 3.5], "F"), [0, 0], None),
}


@pytest.mark.parametrize("case", list(MODES))
def test_convert_mode(case):
    img, want_l, want_rgb = MODES[case]
    assert img.mode == case.split()[0].split("+")[0]
    got_l = convert_mode(img, "L")
    assert got_l.mode == "L" and np.asarray(got_l)[0].tolist() == pytest.approx(want_l, abs=1)
    got_rgb = convert_mode(img, "RGB")
    want_rgb = want_rgb or [[v, v, v] for v in want_l]
    assert got_rgb.mode == "RGB" and np.asarray(got_rgb)[0].astype(int).ravel().tolist() == \
        pytest.approx(np.ravel(want_rgb).tolist(), abs=1)


def test_sixteen_bit_png_round_trip(tmp_path):
    path = tmp_path / "deep.png"
    _wide([0, 65535, 257 * 100], "I;16").save(path)
    assert np.asarray(convert_mode(open_image(path), "L"))[0].tolist() == [0, 255, 100]


# --------------------------------------------------------------------------- files that are not regular files

def _in_thread(fn, timeout=10.0):
    """``fn()``'s result or exception, or "blocked" if it has not returned within ``timeout``."""
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001
            box["value"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    return box.get("value", "blocked")


def test_fifo_is_refused_without_blocking(tmp_path):
    """Opening a FIFO for reading waits for a writer forever: it must be refused, not opened."""
    fifo = tmp_path / "f.png"
    os.mkfifo(fifo)
    t0 = time.perf_counter()
    got = _in_thread(lambda: open_image(fifo))
    try:
        assert got != "blocked", "open_image blocked on a FIFO"
        assert isinstance(got, ImageError) and got.reason == "is a FIFO (named pipe), not a regular file (not read)"
        assert time.perf_counter() - t0 < 5
    finally:
        if got == "blocked":  # let the stuck reader go: a writer that closes at once gives it EOF
            os.close(os.open(fifo, os.O_RDWR))


def test_socket_device_and_symlinks(tmp_path):
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tmp_path / "s.png"))
        assert _reason(tmp_path / "s.png") == "is a socket, not a regular file (not read)"
    finally:
        sock.close()
    if os.path.exists("/dev/zero"):
        assert _in_thread(lambda: _reason("/dev/zero")) == "is a character device, not a regular file (not read)"
    os.symlink("nowhere.png", tmp_path / "dangling.png")
    assert _reason(tmp_path / "dangling.png") == "dangling symlink (points to 'nowhere.png', which does not exist)"
    os.symlink("loop.png", tmp_path / "loop.png")
    assert "symlink loop" in _reason(tmp_path / "loop.png")
    good = tmp_path / "good.png"
    good.write_bytes(_saved(_noise(), "PNG"))
    os.symlink("good.png", tmp_path / "link.png")  # a symlink to a regular file is fine
    assert open_image(tmp_path / "link.png").size == (64, 48)


# --------------------------------------------------------------------------- recovered files

def _tiff_directory_last(pixels: np.ndarray) -> bytes:
    """An uncompressed 8-bit gray TIFF with its directory after the pixels (as many writers
    place it): cutting the file's last bytes damages the directory, not the strip."""
    h, w = pixels.shape
    data = pixels.astype(np.uint8).tobytes()
    pad = len(data) & 1
    entries = [(256, 3, w), (257, 3, h), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 8), (277, 3, 1),
               (278, 3, h), (279, 4, len(data))]  # width, height, bits, no compression, gray, strip offset/rows/bytes
    out = b"II*\0" + struct.pack("<I", 8 + len(data) + pad) + data + b"\0" * pad + struct.pack("<H", len(entries))
    for tag, typ, value in entries:
        value = struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, typ, 1) + value
    return out + struct.pack("<I", 0)  # no next directory


def _read_quietly(path):
    """read_image, asserting that no warning escapes to the caller (PIL's are the file's note)."""
    with warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")
        got = read_image(path)
    assert [str(w.message) for w in leaked] == []
    return got


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_cut_in_last_bytes_is_recovered(tmp_path, fmt):
    img = _noise(mode="L")
    data = _saved(img, fmt)
    whole, cut = tmp_path / f"whole.{fmt.lower()}", tmp_path / f"cut.{fmt.lower()}"
    whole.write_bytes(data)
    cut.write_bytes(data[:-12 if fmt == "PNG" else -1])  # PNG: no IEND chunk; GIF: no trailer byte
    assert _read_quietly(whole).recovered is None
    got = _read_quietly(cut)
    assert got.recovered == f"the file ends before its {fmt} end marker (cut short?); its pixels decoded, kept"
    assert np.array_equal(np.asarray(got.image.convert("L")), np.asarray(open_image(whole).convert("L")))
    assert open_image(cut).size == img.size  # open_image keeps it, as before


def test_tiff_with_damaged_directory_is_recovered(tmp_path):
    pixels = (np.arange(64).reshape(8, 8) * 3).astype(np.uint8)
    data = _tiff_directory_last(pixels)
    whole = tmp_path / "whole.tif"
    whole.write_bytes(data)
    assert _read_quietly(whole).recovered is None
    for cut in (2, 12):  # the next-directory pointer; the strip-byte-count entry
        path = tmp_path / f"cut{cut}.tif"
        path.write_bytes(data[:-cut])
        got = _read_quietly(path)
        assert got.recovered.startswith("PIL warned while reading it (Corrupt EXIF data.")
        assert np.array_equal(np.asarray(got.image), pixels)


# --------------------------------------------------------------------------- 16-bit PGM

def _pgm(values, maxval: int) -> bytes:
    raw = np.array([values], dtype=">u2" if maxval > 255 else "u1")
    return b"P5\n%d 1\n%d\n" % (len(values), maxval) + raw.tobytes()


@pytest.mark.parametrize("maxval", [65535, 1000])
def test_sixteen_bit_pgm_scaled_by_maxval(tmp_path, maxval):
    """A near-black 16-bit PGM stays near black: scaled by the file's maxval, not stretched to
    its own min..max."""
    path = tmp_path / "dark.pgm"
    dark = [0, maxval // 100, maxval // 50]  # 0, 1 %, 2 % of the range
    path.write_bytes(_pgm(dark + [maxval], maxval))
    assert np.asarray(convert_mode(open_image(path), "L"))[0].tolist() == pytest.approx([0, 3, 5, 255], abs=1)
    path.write_bytes(_pgm(dark, maxval))  # no bright pixel at all
    assert np.asarray(convert_mode(open_image(path), "L"))[0].tolist() == pytest.approx([0, 3, 5], abs=1)


def test_sixteen_bit_png_dark_stays_dark(tmp_path):
    path = tmp_path / "dark.png"
    _wide([0, 655, 1310], "I;16").save(path)
    assert np.asarray(convert_mode(open_image(path), "L"))[0].tolist() == pytest.approx([0, 3, 5], abs=1)


# --------------------------------------------------------------------------- resize bound

def test_thin_image_refused_before_resizing():
    """A 1 x 30000 image (141 bytes as PNG) passes PIL's pixel limit, but filling a 224 x 224
    input enlarges it to 224 x 6,720,000 (4.5 GB as RGB): refused before allocating, quickly."""
    cfg = {"input_size": (3, 224, 224), "interpolation": "bilinear", "crop_pct": 1.0}
    for size in [(1, 30000), (220000, 1)]:
        t0 = time.perf_counter()
        with pytest.raises(TooLargeError, match=r"too large once resized: .* limit 89,478,485 pixels") as info:
            resize_crop(Image.new("RGB", size), cfg)
        assert time.perf_counter() - t0 < 0.5
        assert isinstance(info.value, ValueError)
    assert resize_crop(Image.new("RGB", (10, 300)), cfg).size == (224, 224)  # 224 x 6720: fine


def test_resize_bound_follows_pil_limit(monkeypatch):
    cfg = {"input_size": (1, 96, 96)}
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)
    with pytest.raises(TooLargeError, match=r"1 x 20 px \(aspect ratio 20:1\) would be scaled to 96 x 1,920 "
                                            r"\(184,320 pixels\) to fill the 96 x 96 input; limit 100,000"):
        resize_crop(Image.new("L", (1, 20)), cfg)
    assert resize_crop(Image.new("L", (1, 10)), cfg).size == (96, 96)  # 96 x 960 = 92,160 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # PIL's guard off: so is this one
    assert resize_crop(Image.new("L", (1, 20)), cfg).size == (96, 96)
