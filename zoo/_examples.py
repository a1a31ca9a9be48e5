"""Example images shipped in the package (``zoo/examples/``), for demos, docs and tests.

* ``fmnist-<index>-<class>.png``: the first Fashion-MNIST *test* images of four different classes
  (28x28 gray, written losslessly from the IDX file; the index is the test-set position).
* ``astronaut.jpg``, ``coffee.jpg``, ``chelsea.jpg``, ``rocket.jpg``: scikit-image's sample photos
  (``skimage.data``; public domain / CC0), long side resized to 256 px (Lanczos), JPEG quality 90.
  They are among the training photos of the ``photos`` data set (``training/photos.py``).
* ``opencv-board.jpg``: OpenCV's sample ``board.jpg`` (Debian ``opencv-doc``, examples/data;
  BSD-3-Clause; copyright 2000-2022 Intel Corporation per Debian's copyright file), resized the same
  way: a photo of the ``photos`` set's *test* split, which the colour models never trained on.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from ._images import IMAGE_EXTENSIONS

EXAMPLES_DIR = Path(str(files(__package__) / "examples"))


def example_images() -> list[Path]:
    """Paths of the shipped example images, sorted by name."""
    return sorted(p for p in EXAMPLES_DIR.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
