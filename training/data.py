"""Datasets held as uint8 tensors in memory (N x C x H x W) with integer labels.

``fashion-mnist``: the four IDX files from /usr/share/datasets/fashion-mnist (Debian package
``dataset-fashion-mnist``), a ``--data-root`` holding them (gzipped or not, flat or in
torchvision's ROOT/FashionMNIST/raw), or, when online, a download of the four .gz files from
``$SSLZOO_FMNIST_URL`` (default: the dataset's own mirror) into ``--data-root`` or
``~/.cache/sslzoo/data`` (``$SSLZOO_DATA``).
``imagefolder:PATH``: PATH/<class>/<image>, decoded once with the zoo's image loader.
"""
from __future__ import annotations

import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sslzoo.zoo import _fmnist
from sslzoo.zoo._hub import atomic_write
from sslzoo.zoo._transforms import convert_channels

FMNIST_CLASSES = list(_fmnist.CLASSES)
FMNIST_SYSTEM_ROOT = _fmnist.SYSTEM_ROOT
_FMNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                 "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
FMNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"  # Zalando's mirror


class DataError(Exception):
    """A dataset that cannot be read; the message names the file and the problem."""


@dataclass
class ImageSet:
    images: torch.Tensor  # N x C x H x W uint8
    labels: torch.Tensor  # N int64
    classes: list[str]
    name: str

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: int | None) -> "ImageSet":
        if n is None or n >= len(self):
            return self
        return ImageSet(self.images[:n], self.labels[:n], self.classes, f"{self.name}[:{n}]")


def read_idx(path: Path, gzipped: bool | None = None) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not (None: by the .gz suffix); DataError if bad."""
    return _fmnist.read_idx(path, gzipped, error=DataError)


_find = _fmnist.find_idx


def default_data_dir() -> Path:
    return Path(os.environ.get("SSLZOO_DATA") or Path.home() / ".cache" / "sslzoo" / "data").expanduser()


def download_fashion_mnist(split: str, root: Path, base_url: str | None = None) -> None:
    """Fetch ``split``'s two .gz files into ``root``, each written atomically and checked as IDX
    first: an interrupted or wrong download leaves nothing that looks complete."""
    base = (base_url or os.environ.get("SSLZOO_FMNIST_URL") or FMNIST_URL).rstrip("/") + "/"
    root.mkdir(parents=True, exist_ok=True)
    for stem in _FMNIST_FILES[split]:
        dest = root / f"{stem}.gz"
        if dest.is_file():
            continue
        atomic_write(dest, lambda tmp: _fetch_idx_gz(base + dest.name, Path(tmp)))


def _fetch_idx_gz(url: str, path: Path) -> None:
    """Download ``url`` into ``path`` and check that it is a gzipped IDX file (DataError if not)."""
    with urllib.request.urlopen(url, timeout=60) as r, open(path, "wb") as f:
        while chunk := r.read(1 << 20):
            f.write(chunk)
    read_idx(path, gzipped=True)


def load_fashion_mnist(split: str = "train", root: str | Path | None = None, channels: str = "L") -> ImageSet:
    """Fashion-MNIST's ``split`` as N x C x 28 x 28 uint8, C from ``channels`` (the data config's:
    "L" as stored, "RGB" the gray plane repeated, for a colour model)."""
    roots = [Path(root)] if root else [FMNIST_SYSTEM_ROOT, default_data_dir()]
    img_stem, lbl_stem = _FMNIST_FILES[split]
    for r in roots:
        img, lbl = _find(r, img_stem), _find(r, lbl_stem)
        if img and lbl:
            break
    else:
        r = roots[-1]
        try:
            download_fashion_mnist(split, r)
        except (OSError, DataError) as e:  # OSError includes urllib's URLError
            raise DataError(
                f"Fashion-MNIST {split} files not found under {' or '.join(map(str, roots))} and the download "
                f"into {r} failed ({e}). Install them with `apt-get install dataset-fashion-mnist` or pass "
                f"--data-root DIR holding {img_stem}[.gz] and {lbl_stem}[.gz].") from None
        img, lbl = _find(r, img_stem), _find(r, lbl_stem)
    images, labels = read_idx(img), read_idx(lbl)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{img}, {lbl}: shapes {images.shape} and {labels.shape} do not form an image set")
    gray = torch.from_numpy(images.copy()).unsqueeze(1)  # N x 1 x 28 x 28
    return ImageSet(convert_channels(gray, channels), torch.from_numpy(labels.astype(np.int64)),
                    list(FMNIST_CLASSES), f"fashion-mnist/{split}")


def load_imagefolder(path: str | Path, data_config: dict) -> ImageSet:
    """PATH/<class>/<image files>, each decoded and resized to the model's input (uint8)."""
    from sslzoo.zoo._images import iter_images
    from sslzoo.zoo._transforms import to_uint8_tensor

    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory (imagefolder:PATH wants PATH/<class>/<images>)")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise DataError(f"{root}: no class sub-directories")
    images, labels = [], []
    for idx, cls in enumerate(classes):
        files = sorted(p for p in (root / cls).rglob("*") if p.is_file())
        for _, img in iter_images(files):
            images.append(to_uint8_tensor(img, data_config))
            labels.append(idx)
    if not images:
        raise DataError(f"{root}: no readable images")
    return ImageSet(torch.stack(images), torch.tensor(labels), classes, f"imagefolder:{root}")


HOLDOUT_SHARE, HOLDOUT_SEED = 0.1, 0  # imagefolder:PATH without PATH/test


def holdout_split(data: ImageSet, split: str, share: float = HOLDOUT_SHARE, seed: int = HOLDOUT_SEED) -> ImageSet:
    """A seeded random ``share`` of a folder's images held out as its test split (the rest: train),
    the same on every call; the name says so, so provenance never calls training images a test set."""
    n_test = max(1, round(share * len(data)))
    if len(data) - n_test < 1:
        raise DataError(f"{data.name}: {len(data)} image(s) cannot be split into train and held-out test; "
                        "add images or give PATH/train and PATH/test")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    idx = order[:n_test] if split == "test" else order[n_test:]
    idx = idx.sort().values  # folder order within each part
    held = f"held-out {round(100 * share)}% (seed {seed})"
    part = held if split == "test" else f"all but the {held}"
    return ImageSet(data.images[idx], data.labels[idx], data.classes, f"{data.name} [{split}: {part}]")


def load_dataset(spec: str, split: str = "train", *, root: str | Path | None = None,
                 data_config: dict | None = None) -> ImageSet:
    """``fashion-mnist`` or ``imagefolder:PATH``: PATH/train and PATH/test when PATH/test exists,
    else PATH itself split by ``holdout_split``. Images come in the data config's channels."""
    channels = (data_config or {}).get("channels", "L" if spec in ("fashion-mnist", "fmnist") else "RGB")
    if spec in ("fashion-mnist", "fmnist"):
        return load_fashion_mnist(split, root, channels)
    if spec.startswith("imagefolder:"):
        path = Path(spec[len("imagefolder:"):])
        if (path / "test").is_dir():
            return load_imagefolder(path / split, data_config or {})
        train = path / "train" if (path / "train").is_dir() else path
        return holdout_split(load_imagefolder(train, data_config or {}), split)
    if spec == "photos" or spec.startswith("photos:"):  # unlabelled colour photos' crops (training/photos.py)
        from .photos import load_photos
        return load_photos(split, spec[len("photos:"):] or None, data_config=data_config)
    raise DataError(f"unknown dataset {spec!r}: use fashion-mnist, imagefolder:PATH, photos or photos:PATH")
