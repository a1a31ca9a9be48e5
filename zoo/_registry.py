"""Registry of zoo entries ``<pretext>-<arch>[.<tag>]``.

Each entry maps tags to a ``Weights`` spec (torchvision style): where the weights live, the
configuration that builds the model, and metadata. ``default_tag`` is what a bare name loads.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from ._errors import ZooError

PACKAGE_WEIGHTS = Path(str(files(__package__) / "weights"))

# Fashion-MNIST 28x28 gray; each entry enlarges it to its own input size (AlexNet needs >= 63 px).
_FMNIST_GRAY = {
    "mean": [0.2860],
    "std": [0.3530],
    "interpolation": "bilinear",
    "crop_pct": 1.0,
    "channels": "L",  # colour input is converted to luminance (ITU-R 601-2, PIL "L")
}
# The patch pretexts' whole-image input: their trunks learn on 64-px tiles of a 228-px grid image,
# so features see the whole image enlarged to 160 px (zoo/pretexts/patches.py says why).
FMNIST_160 = {"input_size": [1, 160, 160], **_FMNIST_GRAY}
# Rotation's input: the whole image enlarged to 96 px. At 64 px (AlexNet's smallest) conv2 sees a
# 7x7 map and pool5 is 1x1; at 96 px conv2 sees 11x11 and conv3..conv5 5x5, so the probe's taps
# keep more of the garment's detail, for about the same CPU step time (128 px costs twice as much).
FMNIST_96 = {"input_size": [1, 96, 96], **_FMNIST_GRAY}


UNTRAINED = "untrained:"


@dataclass(frozen=True)
class Weights:
    tag: str
    # "package:<dir under zoo/weights>", "hf-hub:org/name[@rev]", "store:<name>" (converted authors'
    # checkpoint) or UNTRAINED (defined and trainable, weights not released yet)
    source: str
    config: dict[str, Any]  # architecture, arch_args, pretext, pretext_args, data_config
    sha256: str | None = None  # of model.safetensors, pinned for downloads
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Entry:
    name: str
    weights: dict[str, Weights]
    default_tag: str

    def __post_init__(self):
        assert self.default_tag in self.weights, (self.name, self.default_tag)


_ENTRIES: dict[str, Entry] = {}


def register(name: str, *weights: Weights, default_tag: str | None = None) -> Entry:
    entry = Entry(name, {w.tag: w for w in weights}, default_tag or weights[0].tag)
    _ENTRIES[name] = entry
    return entry


def list_models(pattern: str = "*", *, tags: bool = False) -> list[str]:
    """Registered names matching a glob pattern; with ``tags`` every ``name.tag``."""
    names = [f"{e.name}.{t}" for e in _ENTRIES.values() for t in e.weights] if tags else list(_ENTRIES)
    return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))


def lookup(name: str) -> tuple[Entry, Weights]:
    base, _, tag = name.partition(".")
    entry = _ENTRIES.get(base)
    if entry is None:
        close = [n for n in _ENTRIES if base.split("-")[0] in n]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ZooError(f"unknown model {name!r}{hint} (`sslzoo list` shows them all)")
    tag = tag or entry.default_tag
    if tag not in entry.weights:
        raise ZooError(f"{base} has no tag {tag!r}; tags: {', '.join(entry.weights)}")
    return entry, entry.weights[tag]


def _alexnet(pretext: str, in_chans: int, data_config: dict, **pretext_args) -> dict[str, Any]:
    return {"architecture": "alexnet", "arch_args": {"in_chans": in_chans}, "pretext": pretext,
            "pretext_args": pretext_args, "data_config": data_config}


register(
    "rotation-alexnet",
    Weights("fmnist", "package:rotation-alexnet.fmnist", _alexnet("rotation", 1, FMNIST_96, hidden=512),
            meta={"dataset": "fashion-mnist", "paper": "arXiv:1803.07728"}),
)
# The patch pretexts train on 64-px tiles cut from a 3x3 grid of 76-px cells (zoo/pretexts/patches.py
# says why); the trunk's feature/probe input is the whole image at 160 px.
register(
    "jigsaw-alexnet",
    Weights("fmnist", "package:jigsaw-alexnet.fmnist",
            _alexnet("jigsaw", 1, FMNIST_160, num_permutations=1000, permutation_seed=0, tile_hidden=[1024, 512], hidden=512,
                     cell=76, tile=64),
            meta={"dataset": "fashion-mnist", "paper": "arXiv:1603.09246"}),
)
register(
    "relative-patch-alexnet",
    Weights("fmnist", "package:relative-patch-alexnet.fmnist",
            _alexnet("relative-patch", 1, FMNIST_160, hidden=512, cell=76, tile=64),
            meta={"dataset": "fashion-mnist", "paper": "arXiv:1505.05192"}),
)

# DeepCluster: the BN AlexNet behind a fixed Sobel front end (the authors' model), whole image at 96 px.
register(
    "deepcluster-alexnet",
    Weights("fmnist", "package:deepcluster-alexnet.fmnist", {**_alexnet("deepcluster", 1, FMNIST_96, hidden=512, num_clusters=300),
                                  "arch_args": {"in_chans": 1, "front_end": "sobel"}},
            meta={"dataset": "fashion-mnist", "paper": "arXiv:1807.05520"}),
)

# The reconstruction pretexts: the whole image at 96 px, decoded back from pool5 by up-convolutions
# (zoo/pretexts/decoder.py).
register(
    "denoising-alexnet",
    Weights("fmnist", "package:denoising-alexnet.fmnist", _alexnet("denoising", 1, FMNIST_96, noise="mask", noise_level=0.5, decoder_width=256),
            meta={"dataset": "fashion-mnist", "paper": "Vincent et al., ICML 2008 (doi:10.1145/1390156.1390294)"}),
)
# The context encoder's variants are tags (pretext_args select them), so each can be trained and probed
# by name: fmnist = random holes, L2 (the default); -central: the centre square; -adv: with the paper's
# adversarial term (weight 0.001) from a train-only discriminator. Trained longer side by side, the
# default (random holes, L2) probed best on average over conv1..conv5 and ships; the other tags are
# trainable, their weights not released (UNTRAINED).
register(
    "context-encoder-alexnet",
    *(Weights(tag, "package:context-encoder-alexnet.fmnist" if tag == "fmnist" else UNTRAINED,
              _alexnet("context-encoder", 1, FMNIST_96, mask=mask, overlap=3, overlap_weight=10.0, adversarial=adv,
                       decoder_width=256),
              meta={"dataset": "fashion-mnist", "paper": "arXiv:1604.07379"})
      for tag, mask, adv in (("fmnist", "random", 0.0), ("fmnist-adv", "random", 0.001),
                             ("fmnist-central", "central", 0.0), ("fmnist-central-adv", "central", 0.001))),
)

# Exemplar: 6000 seed images of the training set, each a surrogate class seen under random deformations
# (training/pretexts/exemplar.py says why 6000), whole image at 96 px.
register(
    "exemplar-alexnet",
    Weights("fmnist", "package:exemplar-alexnet.fmnist",
            _alexnet("exemplar", 1, FMNIST_96, num_classes=6000, hidden=512, loss="softmax", deformations=4),
            meta={"dataset": "fashion-mnist", "paper": "arXiv:1406.6909"}),
)

# Counting: D(x) and the 2x2 tiles of the image enlarged to 192 px, each at 96 px, counts of 1000 dims
# (the paper's).
register(
    "counting-alexnet",
    Weights("fmnist", "package:counting-alexnet.fmnist", _alexnet("counting", 1, FMNIST_96, hidden=512, count_dim=1000),
            meta={"dataset": "fashion-mnist", "paper": "arXiv:1708.06734"}),
)

# Multi-task: one trunk, the heads of rotation, relative patch, jigsaw and exemplar as their own models
# have them (same arguments), the four losses summed with weight 1; every task sees the same gray
# Fashion-MNIST images (the paper's harmonisation); the whole image at 96 px for features and probes.
# fmnist-lasso: each head reads a learned sparse combination of conv1..conv5 (zoo/pretexts/multi_task.py);
# trainable, its weights not released (UNTRAINED).
MULTI_TASKS = {
    "rotation": {"hidden": 512},
    "relative-patch": {"hidden": 512, "cell": 76, "tile": 64},
    "jigsaw": {"num_permutations": 1000, "permutation_seed": 0, "tile_hidden": [1024, 512], "hidden": 512, "cell": 76,
               "tile": 64},
    "exemplar": {"num_classes": 6000, "hidden": 512, "loss": "softmax", "deformations": 4},
}
register(
    "multi-task-alexnet",
    *(Weights(tag, "package:multi-task-alexnet.fmnist" if tag == "fmnist" else UNTRAINED,
              _alexnet("multi-task", 1, FMNIST_96, tasks=MULTI_TASKS, weights=None, lasso=lasso),
              meta={"dataset": "fashion-mnist", "paper": "arXiv:1708.07860"})
      for tag, lasso in (("fmnist", False), ("fmnist-lasso", True))),
)

# The colour pretexts learn on natural photos (``--data photos``: crops of the photos installed here)
# and take RGB in [0, 1]; their trunks see L (colorization, the split-brain L half) or ab (the split-brain
# ab half) through their front ends, so they are probed on gray Fashion-MNIST at 96 px like the others.
PHOTOS_96 = {"input_size": [3, 96, 96], "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "interpolation": "bilinear",
             "crop_pct": 1.0, "channels": "RGB"}
register(
    "colorization-alexnet",
    Weights("photos", "package:colorization-alexnet.photos",
            {**_alexnet("colorization", 3, PHOTOS_96, grid=10.0, neighbours=5, sigma=5.0, rebalance=0.5,
                        temperature=0.38, decoder_width=256), "arch_args": {"in_chans": 3, "front_end": "lab_l"}},
            meta={"dataset": "photos", "paper": "arXiv:1603.08511"}),
)
register(
    "split-brain-alexnet",
    Weights("photos", "package:split-brain-alexnet.photos",
            {"architecture": "alexnet_split", "arch_args": {"in_chans": 3}, "pretext": "split-brain",
             "pretext_args": {"l_bins": 50, "grid": 10.0, "neighbours": 5, "sigma": 5.0, "rebalance": 0.5,
                              "temperature": 0.38, "decoder_width": 128}, "data_config": PHOTOS_96},
            meta={"dataset": "photos", "paper": "arXiv:1611.09842"}),
)

# The authors' released checkpoints (zoo/_sources.py): `sslzoo convert SOURCE FILE` stores each under
# its name in the local zoo store, where "store:<name>" sources resolve (zoo.resolve says how to get
# the file until then). Tags are added to existing entries without changing their default tag.
from ._sources import BY_NAME as _CONVERTED  # noqa: E402

for _name, _src in _CONVERTED.items():
    _base, _, _tag = _name.partition(".")
    _w = Weights(_tag, f"store:{_name}", _src.config(),
                 meta={"dataset": _src.dataset, "paper": _src.paper, "convert": _src.id, "url": _src.url})
    if _base in _ENTRIES:
        _ENTRIES[_base] = Entry(_base, {**_ENTRIES[_base].weights, _tag: _w}, _ENTRIES[_base].default_tag)
    else:
        register(_base, _w)
