"""Network-in-Network trunk of RotNet's CIFAR-10 experiments (Gidaris et al., ICLR 2018;
gidariss/FeatureLearningRotNet ``architectures/NetworkInNetwork.py``, config
``CIFAR10_RotNet_NIN4blocks``: ``num_stages=4``, ``use_avg_on_conv3=False``).

Each block is three conv(no bias) -> BN -> ReLU units; padding (k - 1) // 2 (the Python 2 integer
division the original ran with). Taps ``conv1..conv4`` are the *block* outputs, pooling included,
as RotNet names its features:

    conv1: 5x5 192 -> 1x1 160 -> 1x1 96 -> max-pool 3/2 pad 1     (32 px -> 16)
    conv2: 5x5 192 -> 1x1 192 -> 1x1 192 -> avg-pool 3/2 pad 1    (16 -> 8)
    conv3: 3x3 192 -> 1x1 192 -> 1x1 192
    conv4: 3x3 192 -> 1x1 192 -> 1x1 192 (and further blocks like it)

The rotation classifier (global average pool -> linear 192 -> 4) is not part of the trunk.
"""
from __future__ import annotations

from torch import nn

from ._frontends import front_end
from ._staged import StagedTrunk, conv_bn_relu

WIDE, MID, NARROW = 192, 160, 96


def _units(cin: int, spec) -> list[nn.Module]:
    units = []
    for cout, k in spec:
        units.append(conv_bn_relu(cin, cout, k, 1, (k - 1) // 2, bias=False))
        cin = cout
    return units


class NIN(StagedTrunk):
    """RotNet's NIN with ``num_blocks`` blocks (>= 3; 4 for the released CIFAR-10 model)."""

    def __init__(self, num_blocks: int = 4, in_chans: int = 3, avg_on_conv3: bool = False):
        if num_blocks < 3:
            raise ValueError(f"NIN needs at least 3 blocks, got {num_blocks}")
        stages = {
            "conv1": nn.Sequential(*_units(in_chans, [(WIDE, 5), (MID, 1), (NARROW, 1)]), nn.MaxPool2d(3, 2, 1)),
            "conv2": nn.Sequential(*_units(NARROW, [(WIDE, 5), (WIDE, 1), (WIDE, 1)]), nn.AvgPool2d(3, 2, 1)),
        }
        for b in range(3, num_blocks + 1):
            tail = [nn.AvgPool2d(3, 2, 1)] if b == 3 and avg_on_conv3 and num_blocks > 3 else []
            stages[f"conv{b}"] = nn.Sequential(*_units(WIDE, [(WIDE, 3), (WIDE, 1), (WIDE, 1)]), *tail)
        super().__init__(front_end("rgb"), stages)
        self.in_chans = in_chans
        self.num_features = WIDE
        self.min_input = 8


def nin(num_blocks: int = 4, in_chans: int = 3, avg_on_conv3: bool = False) -> NIN:
    return NIN(num_blocks, in_chans, avg_on_conv3)
