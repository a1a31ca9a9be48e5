"""ResNet-50 trunk as VISSL builds it (facebookresearch/vissl ``vissl/models/trunks/resnext.py``):
torchvision's layout and ``Bottleneck`` (stride on the 3x3 conv, "v1.5"; same module names, so
torchvision/VISSL state dicts load as they are), BN eps 1e-5, with
VISSL's two options the classic-pretext checkpoints use:

- ``front_end``: ``"rgb"`` (3-channel conv1) or ``"lab_l"`` (colorization: conv1 takes one
  channel, the L of Lab minus 50, computed here from RGB in [0, 1]; see ``_frontends``);
- ``layer4_stride``: 2 (torchvision) or 1 (VISSL's colorization ResNet-50, ``LAYER4_STRIDE: 1``).

Taps (VISSL's evaluation names): ``conv1`` (after conv1 -> BN -> ReLU, before the max-pool),
``res2..res5`` (torchvision ``layer1..layer4``). ``forward`` returns res5 (not pooled).
"""
from __future__ import annotations

import torch
from torch import nn

from ._frontends import FRONT_END_CHANNELS, front_end
from ._staged import StagedTrunk, conv_bn_relu

DEPTHS = {50: (3, 4, 6, 3)}


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride here: ResNet v1.5) -> 1x1 (x4 channels), BN after each, identity or
    ``downsample`` shortcut added before the last ReLU; torchvision's module names."""
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


def _layer(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    out = planes * Bottleneck.expansion
    down = None
    if stride != 1 or inplanes != out:
        down = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))
    mods = [Bottleneck(inplanes, planes, stride, down)]
    mods += [Bottleneck(out, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*mods)


class ResNet(StagedTrunk):
    def __init__(self, depth: int = 50, front: str = "rgb", layer4_stride: int = 2):
        if depth not in DEPTHS:
            raise ValueError(f"ResNet depth {depth} not supported; known: {sorted(DEPTHS)}")
        if layer4_stride not in (1, 2):
            raise ValueError(f"layer4_stride must be 1 or 2, got {layer4_stride}")
        n = DEPTHS[depth]
        stages = {"conv1": conv_bn_relu(FRONT_END_CHANNELS[front], 64, 7, 2, 3, bias=False)}
        inplanes = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), n)):
            stride = 1 if i == 0 else (layer4_stride if i == 3 else 2)
            stages[f"res{i + 2}"] = _layer(inplanes, planes, blocks, stride)
            inplanes = stages[f"res{i + 2}"][-1].conv3.out_channels  # planes * Bottleneck.expansion
        super().__init__(front_end(front), stages, {"conv1": nn.MaxPool2d(3, 2, 1)})
        self.in_chans = 3
        self.num_features = inplanes
        self.min_input = 32


def resnet50(front_end: str = "rgb", layer4_stride: int = 2, in_chans: int = 3) -> ResNet:
    if in_chans != 3:
        raise ValueError("resnet50 takes RGB input (in_chans 3); front_end 'lab_l' makes the L channel itself")
    return ResNet(50, front_end, layer4_stride)
