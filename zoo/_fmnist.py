"""Fashion-MNIST's *test* split read inside the zoo, for what the demo shows of it (Retrieval).

Why here and not ``training.data``: the demo imports the zoo only (DESIGN.md), and the zoo never
imports ``training``. This reads the same files ``training.data.load_fashion_mnist`` finds (with this module's reader): the IDX
files (gzipped or not, flat or in torchvision's ``ROOT/FashionMNIST/raw``) in
/usr/share/datasets/fashion-mnist (Debian ``dataset-fashion-mnist``) or ``$SSLZOO_DATA`` (default
``~/.cache/sslzoo/data``, where ``sslzoo train`` downloads them when online). It never downloads.
"""
from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ._errors import ZooError

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
SYSTEM_ROOT = Path("/usr/share/datasets/fashion-mnist")
_TEST_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclass(frozen=True, eq=False)
class Gallery:
    """Labelled images to search: Fashion-MNIST's test split or its first ``limit`` images."""

    images: torch.Tensor  # N x 1 x 28 x 28 uint8, as stored
    labels: torch.Tensor  # N int64
    classes: tuple[str, ...]
    name: str  # "fashion-mnist/test" or "fashion-mnist/test[:500]"
    sha256: str  # of the images' and labels' bytes: what an index of them is keyed by

    def __len__(self) -> int:
        return len(self.labels)


def default_roots() -> list[Path]:
    """Where the files are looked for, in order (``training.data``'s roots)."""
    data = os.environ.get("SSLZOO_DATA") or Path.home() / ".cache" / "sslzoo" / "data"
    return [SYSTEM_ROOT, Path(data).expanduser()]


def find_idx(root: Path, stem: str) -> Path | None:
    """``stem`` or ``stem.gz`` under ``root``, flat or in torchvision's layout; None when absent."""
    for d in (root, root / "FashionMNIST" / "raw", root / "raw"):
        for name in (stem, stem + ".gz"):
            if (d / name).is_file():
                return d / name
    return None


def read_idx(path: Path, gzipped: bool | None = None, error: type[Exception] = ZooError) -> np.ndarray:
    """An IDX file of unsigned bytes (the MNIST format), gzipped or not (None: by the .gz suffix);
    ``error`` (ZooError; the training side's DataError) naming the file and the problem."""
    path = Path(path)
    opener = gzip.open if (path.suffix == ".gz" if gzipped is None else gzipped) else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise error(f"{path}: cannot read ({e})") from None
    if len(data) < 4 or data[:3] != b"\0\0\x08":
        raise error(f"{path}: not an IDX file of unsigned bytes (bad magic {data[:4].hex()})")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(data[3]))
    header = 4 + 4 * len(shape)
    if len(data) != header + int(np.prod(shape)):
        raise error(f"{path}: size {len(data)} does not match its header {shape} (truncated?)")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def load_test(limit: int | None = None, root: str | Path | None = None) -> Gallery:
    """Fashion-MNIST's 10,000 test images (the first ``limit``) with their labels; ZooError with
    what to install when the files are not on this machine."""
    if limit is not None and limit < 1:
        raise ZooError(f"limit must be at least 1, got {limit}")
    roots = [Path(root)] if root else default_roots()
    for r in roots:
        img, lbl = find_idx(r, _TEST_FILES[0]), find_idx(r, _TEST_FILES[1])
        if img and lbl:
            break
    else:
        raise ZooError(f"Fashion-MNIST's test files are not under {' or '.join(map(str, roots))}; install them "
                       f"with `apt-get install dataset-fashion-mnist` (or put {_TEST_FILES[0]}[.gz] and "
                       f"{_TEST_FILES[1]}[.gz] in $SSLZOO_DATA)")
    images, labels = read_idx(img), read_idx(lbl)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ZooError(f"{img}, {lbl}: shapes {images.shape} and {labels.shape} do not form an image set")
    name = "fashion-mnist/test"
    if limit is not None and limit < len(labels):
        images, labels, name = images[:limit], labels[:limit], f"{name}[:{limit}]"
    digest = hashlib.sha256(images.tobytes())
    digest.update(labels.tobytes())
    return Gallery(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)),
                   CLASSES, name, digest.hexdigest())
