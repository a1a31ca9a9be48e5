"""The ``photos`` data set (training/photos.py): real image files written by PIL into a temp
folder, the real rules, split, crops and cache; and the default set where its packages are installed."""
from __future__ import annotations

import colorsys
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from sslzoo.training import photos
from sslzoo.training.data import DataError, load_dataset

SMALL = photos.PhotoParams(size=32, crops_per_photo=4, test_share=0.25, seed=0)
N_PHOTOS = 10


def _photo(seed: int, w: int, h: int) -> Image.Image:
    """A colourful textured image: a smooth field of colours around one hue (a hue per seed,
    so different photos have different colour histograms) plus pixel noise."""
    rng = np.random.default_rng(seed)
    small = rng.random((5, 7, 3))
    hue0 = seed / N_PHOTOS
    rgb = np.array([[colorsys.hsv_to_rgb((hue0 + 0.06 * p[0]) % 1.0, 0.55 + 0.4 * p[1], 0.45 + 0.5 * p[2])
                     for p in row] for row in small])
    field = Image.fromarray((rgb * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC)
    noisy = np.asarray(field, dtype=np.float32) + rng.normal(0, 8, (h, w, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _png_header_only(path: Path, w: int, h: int) -> None:
    """A PNG whose header claims w x h RGB pixels, with one row of pixel data: only its header is
    ever read."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(bytes(1 + 3 * w))))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    (root / "sub" / "deeper").mkdir(parents=True)
    for i in range(N_PHOTOS):
        img = _photo(i, 160 + 8 * i, 130 + 5 * i)
        where = root / ("sub/deeper" if i % 3 == 0 else "sub" if i % 3 == 1 else ".")
        img.save(where / f"p{i}.{'jpg' if i % 2 else 'png'}", quality=92)
    _photo(0, 220, 170).save(root / "sub" / "p0-resaved.jpg", quality=80)  # the same photo, resized: near-duplicate
    gray = Image.fromarray(np.random.default_rng(1).integers(0, 255, (140, 180), dtype=np.uint8)).convert("RGB")
    gray.save(root / "gray.jpg", quality=92)
    flat = Image.new("RGB", (200, 150), (230, 40, 40))
    flat.paste((40, 60, 220), (50, 40, 150, 110))
    flat.save(root / "logo.png")
    _photo(11, 60, 24).save(root / "tiny.png")
    buf = io.BytesIO()
    _photo(12, 200, 150).save(buf, "JPEG", quality=95)
    (root / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "notes.jpg").write_text("not an image, just text with a .jpg name\n")
    _png_header_only(root / "huge.png", 10_000, 9_000)  # 90 megapixels by its header
    (root / "readme.txt").write_text("ignored: not an image extension\n")
    return root


@pytest.fixture(scope="module")
def built(folder, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    lines: list[str] = []
    out = photos.photo_set(folder, SMALL, cache_dir=cache, log=lines.append)
    return out, photos.manifest(out), lines, cache


def test_rules_name_bad_files_and_exclude_gray_flat_small_huge(built, folder):
    out, m, lines, _ = built
    skipped = [ln for ln in lines if "skipped" in ln]
    assert len(skipped) == 2, lines  # one line per bad file, naming it and the problem
    assert any(str(folder / "notes.jpg") in ln and "not an image" in ln for ln in skipped)
    assert any(str(folder / "cut.jpg") in ln and "truncated" in ln for ln in skipped)
    rules = {Path(e["path"]).name: e["rule"] for e in m["excluded"]}
    assert rules == {"notes.jpg": "bad file", "cut.jpg": "bad file", "gray.jpg": "near-gray", "logo.png": "flat",
                     "tiny.png": "too small", "huge.png": "huge"}
    gray = next(e for e in m["excluded"] if e["rule"] == "near-gray")
    assert gray["mean_chroma"] < photos.NEAR_GRAY_CHROMA
    kept = sorted(Path(p["path"]).name for p in m["photos"])
    assert kept == sorted([f"p{i}.{'jpg' if i % 2 else 'png'}" for i in range(N_PHOTOS)] + ["p0-resaved.jpg"])
    assert "readme.txt" not in str(m)
    assert all(p["package"] is None and p["licence"].startswith("unknown") for p in m["photos"])
    assert m["counts"]["excluded"] == {"bad file": 2, "near-gray": 1, "flat": 1, "too small": 1, "huge": 1}


def test_split_is_by_photo_and_keeps_near_duplicates_together(built):
    out, m, _, _ = built
    split = {p["path"]: p["split"] for p in m["photos"]}
    assert set(split.values()) == {"train", "test"}
    assert len(split) == len(m["photos"])  # each photo once, so in one half
    by_name = {Path(p["path"]).name: p for p in m["photos"]}
    assert by_name["p0.png"]["group"] == by_name["p0-resaved.jpg"]["group"]
    assert by_name["p0.png"]["split"] == by_name["p0-resaved.jpg"]["split"]
    assert len({p["group"] for p in m["photos"]}) == N_PHOTOS  # the other photos are told apart
    n_test = sum(s == "test" for s in split.values())
    assert 1 <= n_test <= round(SMALL.test_share * len(split))
    with safe_open(str(out / photos.CROPS_FILE), "pt") as f:
        for half in ("train", "test"):
            idx = f.get_tensor(f"{half}_photo")
            assert {m["photos"][i]["split"] for i in idx.tolist()} == {half}  # every crop from its half's photos
            mine = [i for i, p in enumerate(m["photos"]) if p["split"] == half]
            assert sorted(set(idx.tolist())) == mine and len(idx) == SMALL.crops_per_photo * len(mine)
            assert sorted(idx[: len(mine)].tolist()) == mine  # interleaved: the first crops cover every photo


def test_crops_are_uint8_squares_of_the_photos(built):
    out, m, _, _ = built
    n_train = sum(p["split"] == "train" for p in m["photos"])
    with safe_open(str(out / photos.CROPS_FILE), "pt") as f:
        train = f.get_tensor("train")
    assert train.dtype == torch.uint8 and tuple(train.shape) == (n_train * SMALL.crops_per_photo, 3, 32, 32)
    assert train.float().std() > 10  # real image content, not a constant
    assert m["counts"]["train_crops"] == len(train)


def test_load_returns_an_unlabelled_image_set_and_reuses_the_cache(folder, tmp_path):
    lines: list[str] = []
    kw = dict(params=SMALL, cache_dir=tmp_path, log=lines.append)
    train = photos.load_photos("train", folder, **kw)
    assert train.name == f"photos:{folder.resolve()}/train"
    assert train.images.dtype == torch.uint8 and train.images.shape[1:] == (3, 32, 32)
    assert torch.equal(train.labels, torch.zeros(len(train), dtype=torch.int64)) and train.classes == ["unlabelled"]
    crops = next(tmp_path.glob("*/" + photos.CROPS_FILE))
    stamp = (crops.stat().st_mtime_ns, crops.stat().st_ino)
    built_lines = [ln for ln in lines if "cutting crops" in ln]
    assert len(built_lines) == 1
    test = photos.load_photos("test", folder, **kw)  # the other half: the same build, no new one
    again = photos.load_photos("train", folder, **kw)
    assert torch.equal(again.images, train.images) and len(test) > 0
    assert [ln for ln in lines if "cutting crops" in ln] == built_lines
    assert (crops.stat().st_mtime_ns, crops.stat().st_ino) == stamp
    gray = photos.load_photos("test", folder, data_config={"channels": "L"}, **kw)
    assert gray.images.shape[1] == 1 and len(gray) == len(test)

    more = photos.PhotoParams(**{**SMALL.__dict__, "crops_per_photo": 5})  # new parameters: a new build
    bigger = photos.load_photos("train", folder, params=more, cache_dir=tmp_path, log=lines.append)
    assert len([ln for ln in lines if "cutting crops" in ln]) == 2
    assert len(bigger) == len(train) // 4 * 5
    assert not crops.exists()  # the older build of the same sources went
    assert len(list(tmp_path.glob("*/" + photos.CROPS_FILE))) == 1


def test_dispatch_through_load_dataset(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("SSLZOO_DATA", str(tmp_path / "data"))
    train = load_dataset(f"photos:{folder}", "train", data_config={"channels": "RGB"})
    assert train.images.shape[1:] == (3, 128, 128) and train.name.endswith("/train")
    assert list((tmp_path / "data" / "photos").glob("*/manifest.json"))  # under $SSLZOO_DATA/photos
    with pytest.raises(DataError, match="not a directory"):
        load_dataset(f"photos:{tmp_path / 'missing'}", "train")
    with pytest.raises(DataError, match="photos or photos:PATH"):
        load_dataset("photoz", "train")


def test_a_folder_without_usable_photos_is_one_clear_error(tmp_path):
    (tmp_path / "bad.jpg").write_text("text")
    Image.new("RGB", (200, 200), (128, 128, 128)).save(tmp_path / "gray.png")
    with pytest.raises(DataError) as e:
        photos.photo_set(tmp_path, SMALL, cache_dir=tmp_path / "cache", log=lambda s: None)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path) in msg and "no usable photos" in msg and "near-gray: 1" in msg
    only = tmp_path / "one"
    only.mkdir()
    _photo(3, 200, 160).save(only / "a.png")
    with pytest.raises(DataError, match="cannot be split into train and test"):
        photos.photo_set(only, SMALL, cache_dir=tmp_path / "cache", log=lambda s: None)


def test_default_set(tmp_path):
    """The installed packages' photos: every one with its package and licence, the art and the
    duplicates left out by rule, no photo in both halves."""
    sources = photos.default_sources()
    if not sources:
        pytest.skip("none of the default photo sources is installed (scikit-image, or apt-get install "
                    + " ".join(p for p, _ in photos.DEBIAN_SOURCES) + ")")
    assert all(s.package and s.licence for s in sources)
    params = photos.PhotoParams(size=32, crops_per_photo=1)
    tensors, m = photos.build(sources, params, name="photos", use_deny=True, log=lambda s: None)
    assert m["counts"]["photos"] >= 2 and m["counts"]["test_photos"] >= 1
    assert len({p["path"] for p in m["photos"]}) == m["counts"]["photos"]
    assert tensors["train"].shape[1:] == (3, 32, 32) and tensors["train"].dtype == torch.uint8
    for p in m["photos"]:
        assert p["mean_chroma"] >= photos.NEAR_GRAY_CHROMA and p["flat_share"] <= photos.FLAT_SHARE
        assert p["licence"] and p["licence_from"]
    rules = {e["path"]: e["rule"] for e in m["excluded"]}
    by_package = {s.package for s in sources}
    if "plasma-workspace-wallpapers" in by_package:  # KDE ships each wallpaper once, as links per resolution
        assert rules.get("/usr/share/wallpapers/Autumn/contents/images/1920x1080.jpg") == "duplicate"
        assert any(p["path"].startswith("/usr/share/wallpapers/Path/") for p in m["photos"])
    if "mate-backgrounds" in by_package:
        assert rules.get("/usr/share/backgrounds/mate/abstract/Gulp.png") == "deny-list"
        assert sum("/mate/nature/" in p["path"] for p in m["photos"]) >= 10
    if "scikit-image" in by_package:
        names = {Path(p["path"]).name for p in m["photos"] if p["package"] == "scikit-image"}
        assert {"astronaut.png", "chelsea.png", "coffee.png"} <= names
        assert "camera.png" not in names  # gray
    pairs = {}
    for p in m["photos"]:
        pairs.setdefault(p["group"], set()).add(p["split"])
    assert all(len(s) == 1 for s in pairs.values())
