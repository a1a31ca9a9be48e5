"""Image loading against hostile files, EXIF orientation, and every PIL mode -> L / RGB."""
from __future__ import annotations

import io
import os
import warnings

import numpy as np
import pytest
from PIL import Image

from sslzoo.zoo import example_images
from sslzoo.zoo._images import ImageError, convert_mode, iter_images, open_image


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


def test_unreadable(tmp_path):
    path = tmp_path / "secret.png"
    path.write_bytes(_saved(_noise(), "PNG"))
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as a user who can read mode-000 files (root)")
        assert "permission denied" in _reason(path)
    finally:
        path.chmod(0o644)


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
    assert len(paths) == 8 and sum(p.stat().st_size for p in paths) < 200_000
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
