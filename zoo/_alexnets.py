"""The AlexNet variants of the authors' released checkpoints, each exactly as its source defines it.

Every variant: five conv stages, taps ``conv1..conv5`` = the ReLU outputs (before pooling, the
feature names the sources use), max-pool 3/2 after conv1, conv2 and conv5 (``forward`` -> pool5).

| architecture | source | widths | conv1 | groups (conv2/4/5) | norm | input front end |
|---|---|---|---|---|---|---|
| ``alexnet_rotnet`` | gidariss/FeatureLearningRotNet ``architectures/AlexNet.py``; VISSL ``alexnet_rotnet`` | 64-192-384-256-256 | 11/4 pad 2 | 1 | conv(+bias) -> BN | RGB |
| ``alexnet_deepcluster`` | facebookresearch/deepcluster ``models/alexnet.py`` (sobel, bn); VISSL ``alexnet_deepcluster`` | 96-256-384-384-256 | 11/4 pad 2 | 1 | conv(+bias) -> BN | Sobel (2 ch) |
| ``alexnet_jigsaw_caffe`` | VISSL ``alexnet_jigsaw`` (Goyal et al. 2019 Caffe2 jigsaw, converted) | 96-256-384-384-256 | 11/2 pad 0 | 2 | conv1-2: LRN after pool; conv3-5: BN | RGB |
| ``alexnet_colorization_caffe`` | VISSL ``alexnet_colorization`` (Goyal et al. 2019 Caffe2 colorization) | 96-256-384-384-256 | 11/4 pad 0, 1 ch | 2 | BN | Lab L - 50 |
| ``alexnet_jigsaw_bbrattoli`` | bbrattoli/JigsawPuzzlePytorch ``JigsawNetwork.py`` | 96-256-384-384-256 | 11/2 pad 0 | 2 | conv1-2: LRN after pool; no BN | per-tile norm |

LRN everywhere: size 5, alpha 1e-4, beta 0.75, k 1, i.e. x / (1 + 1e-4 * mean of x^2 over 5
neighbouring channels, zero-padded)^0.75 (bbrattoli's AvgPool3d form == nn.LocalResponseNorm).
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ._frontends import FRONT_END_CHANNELS, front_end
from ._staged import StagedTrunk, conv_bn_relu

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
POOLED = ("conv1", "conv2", "conv5")


@dataclass(frozen=True)
class Variant:
    widths: tuple[int, ...]
    conv1: tuple[int, int]  # stride, padding (kernel 11)
    groups: tuple[int, ...]
    bn: tuple[bool, ...]
    lrn: tuple[bool, ...]  # LRN after the pool of conv1 / conv2
    front_end: str
    doc: str


VARIANTS = {
    "alexnet_rotnet": Variant((64, 192, 384, 256, 256), (4, 2), (1,) * 5, (True,) * 5, (False,) * 5, "rgb",
                              "RotNet AlexNet (gidariss/FeatureLearningRotNet)"),
    "alexnet_deepcluster": Variant((96, 256, 384, 384, 256), (4, 2), (1,) * 5, (True,) * 5, (False,) * 5, "sobel",
                                   "DeepCluster AlexNet with Sobel front end (facebookresearch/deepcluster)"),
    "alexnet_jigsaw_caffe": Variant((96, 256, 384, 384, 256), (2, 0), (1, 2, 1, 2, 2),
                                    (False, False, True, True, True), (True, True, False, False, False), "rgb",
                                    "Caffe2 jigsaw AlexNet of Goyal et al. 2019 as VISSL defines it"),
    "alexnet_colorization_caffe": Variant((96, 256, 384, 384, 256), (4, 0), (1, 2, 1, 2, 2), (True,) * 5,
                                          (False,) * 5, "lab_l",
                                          "Caffe2 colorization AlexNet of Goyal et al. 2019 as VISSL defines it"),
    "alexnet_jigsaw_bbrattoli": Variant((96, 256, 384, 384, 256), (2, 0), (1, 2, 1, 2, 2), (False,) * 5,
                                        (True, True, False, False, False), "tile_norm",
                                        "Jigsaw context-free network trunk (bbrattoli/JigsawPuzzlePytorch)"),
}

_KERNELS = (11, 5, 3, 3, 3)
_PADS = (None, 2, 1, 1, 1)  # conv1's comes from the variant


def _min_input(stride: int, pad: int) -> int:
    """Smallest square input for which pool5 still sees a 3x3 map (its kernel)."""
    for s in range(11, 1024):
        n = (s + 2 * pad - 11) // stride + 1
        n = (n - 3) // 2 + 1  # pool1
        n = (n - 3) // 2 + 1  # pool2 (conv2..5 keep the size)
        if n >= 3:
            return s
    raise AssertionError("unreachable")


class AlexNetVariant(StagedTrunk):
    """One of ``VARIANTS``: an authors' AlexNet, stage by stage. ``forward`` returns pool5."""

    def __init__(self, variant: str):
        if variant not in VARIANTS:
            raise ValueError(f"unknown AlexNet variant {variant!r}; known: {sorted(VARIANTS)}")
        v = VARIANTS[variant]
        cin = FRONT_END_CHANNELS[v.front_end]
        stages, after = {}, {}
        for i, name in enumerate(LAYERS):
            stride, pad = v.conv1 if i == 0 else (1, _PADS[i])
            stages[name] = conv_bn_relu(cin, v.widths[i], _KERNELS[i], stride, pad, groups=v.groups[i], bn=v.bn[i])
            cin = v.widths[i]
            if name in POOLED:
                pool = [nn.MaxPool2d(3, 2)] + ([nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)] if v.lrn[i] else [])
                after[name] = nn.Sequential(*pool)
        super().__init__(front_end(v.front_end), stages, after)
        self.variant = variant
        self.in_chans = 3
        self.num_features = cin
        self.min_input = _min_input(*v.conv1)


def _builder(variant: str):
    def build(in_chans: int = 3) -> AlexNetVariant:
        if in_chans != 3:
            raise ValueError(f"{variant} takes RGB input (in_chans 3); its front end makes what conv1 needs")
        return AlexNetVariant(variant)
    build.__name__ = variant
    build.__doc__ = VARIANTS[variant].doc
    return build


BUILDERS = {name: _builder(name) for name in VARIANTS}
