"""AlexNet trunk, the variant RotNet uses.

Implemented: the Krizhevsky et al. (2012) convolutional stack with widths 64-192-384-256-256
(the single-tower "one weird trick" widths), *BatchNorm after every conv* and no LRN, as in
Gidaris et al., "Unsupervised Representation Learning by Predicting Image Rotations" (ICLR 2018),
gidariss/FeatureLearningRotNet ``architectures/AlexNet.py``. No fully connected layers: the
pretext head owns those and is sized for the input.

    conv1 11x11/4 pad 2 -> BN -> ReLU -> maxpool 3/2
    conv2  5x5/1 pad 2 -> BN -> ReLU -> maxpool 3/2
    conv3  3x3/1 pad 1 -> BN -> ReLU
    conv4  3x3/1 pad 1 -> BN -> ReLU
    conv5  3x3/1 pad 1 -> BN -> ReLU -> maxpool 3/2   (pool5, the trunk's output)

Taps ``conv1..conv5`` are the ReLU outputs, before pooling (RotNet's feature names).
The smallest input is 63 px (pool5 must still see a 3x3 map). The Fashion-MNIST models use
96 px (rotation) and 64-px tiles (jigsaw, relative patch); ImageNet uses 224 px.
"""
from __future__ import annotations

import torch
from torch import nn

from ._frontends import FRONT_END_CHANNELS, trunk_front_end
from ._staged import run_taps

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
MIN_INPUT = 63

# name: (out channels, kernel, stride, padding, maxpool after)
_SPEC = {
    "conv1": (64, 11, 4, 2, True),
    "conv2": (192, 5, 1, 2, True),
    "conv3": (384, 3, 1, 1, False),
    "conv4": (256, 3, 1, 1, False),
    "conv5": (256, 3, 1, 1, True),
}


class _ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, pad: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, pad, bias=False)  # BN follows: no bias
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class AlexNet(nn.Module):
    """RotNet-style AlexNet trunk (BN after every conv). ``forward`` returns pool5 (B x 256 x h x w).

    ``front_end`` says what the convolutions see of the ``in_chans``-channel input (``_frontends``):
    None or ``gray`` / ``rgb`` the input itself, ``sobel`` its Sobel gradients (DeepCluster),
    ``lab_l`` / ``lab_ab`` the L or the ab channels of RGB in [0, 1] (the colour pretexts).
    ``width`` scales every layer's channels (0.5: a half of the split-brain trunk, ``_split``).
    """

    layers = LAYERS

    def __init__(self, in_chans: int = 3, front_end: str | None = None, width: float = 1.0):
        super().__init__()
        self.in_chans = in_chans
        cin = in_chans
        if front_end is not None:
            self.front = trunk_front_end(front_end, in_chans)
            cin = FRONT_END_CHANNELS[front_end]
        for name, (cout, k, s, p, _) in _SPEC.items():
            cout = int(round(cout * width))  # width 0.5: the split-brain halves (32-96-192-128-128)
            self.add_module(name, _ConvBlock(cin, cout, k, s, p))
            cin = cout
        self.pool = nn.MaxPool2d(3, 2)
        self.num_features = cin
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_taps(self, x: torch.Tensor, layers=(), *, pool5: bool = True):
        """Run the trunk keeping the maps named in ``layers``: (taps, pool5 or None).

        With ``pool5=False`` the trunk stops after the deepest requested tap.
        """
        if hasattr(self, "front"):
            x = self.front(x)
        return run_taps(x, layers, pool5, names=LAYERS, stage=self.get_submodule,
                        after=lambda name: self.pool if _SPEC[name][4] else None, min_input=MIN_INPUT, who="AlexNet")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_taps(x)[1]


def alexnet(in_chans: int = 3, front_end: str | None = None, width: float = 1.0) -> AlexNet:
    return AlexNet(in_chans=in_chans, front_end=front_end, width=width)
