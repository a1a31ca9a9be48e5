"""``StagedTrunk``: the trunk contract (``layers``, ``forward_taps``, ``forward``) for networks
made of named stages, used by the converted architectures (``_alexnets``, ``_nin``, ``_resnet``).

    x -> stem (input front end) -> stage 1 -> [tap] -> after 1 -> stage 2 -> [tap] -> after 2 ...

A tap is a stage's output; ``after`` holds what runs between taps (pooling, LRN). ``forward``
returns the last stage's output passed through its ``after`` (AlexNet: pool5).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
from torch import nn


class StagedTrunk(nn.Module):
    layers: tuple[str, ...] = ()
    min_input: int = 1

    def __init__(self, stem: nn.Module, stages: dict[str, nn.Module], after: dict[str, nn.Module] | None = None):
        super().__init__()
        self.layers = tuple(stages)
        self.stem = stem
        self.blocks = nn.ModuleDict(stages)
        after = after or {}
        self.after = nn.ModuleDict({k: after.get(k) or nn.Identity() for k in stages})

    def forward_taps(self, x: torch.Tensor, layers=(), *, pool5: bool = True):
        """Run the trunk keeping the maps named in ``layers``: (taps, final output or None).

        With ``pool5=False`` the trunk stops after the deepest requested tap.
        """
        return run_taps(x, layers, pool5, names=self.layers, stage=self.blocks.__getitem__,
                        after=self.after.__getitem__, min_input=self.min_input, who=type(self).__name__,
                        stem=self.stem)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_taps(x)[1]


def run_taps(x: torch.Tensor, layers, pool5: bool, *, names: tuple[str, ...], stage: Callable[[str], nn.Module],
             after: Callable[[str], nn.Module | None], min_input: int, who: str,
             stem: nn.Module | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """The trunk contract's ``forward_taps`` for any network of named stages (this module's
    ``StagedTrunk`` and ``_alexnet.AlexNet``): check the input size and tap names, run
    [stem ->] stage -> [tap] -> after ... and return (taps, final output); with ``pool5=False``
    stop after the deepest requested tap and return (taps, None)."""
    if min(x.shape[-2:]) < min_input:
        raise ValueError(f"{who} needs inputs of at least {min_input}x{min_input} px, got {tuple(x.shape[-2:])}")
    unknown = set(layers) - set(names)
    if unknown:
        raise ValueError(f"unknown layer(s) {sorted(unknown)}; {who} taps are {names}")
    last = names[-1] if pool5 or not layers else max(layers, key=names.index)
    taps: dict[str, torch.Tensor] = {}
    if stem is not None:
        x = stem(x)
    for name in names:
        x = stage(name)(x)
        if name in layers:
            taps[name] = x
        if name == last and not pool5:
            return taps, None
        then = after(name)
        if then is not None:
            x = then(x)
    return taps, x


def conv_bn_relu(cin: int, cout: int, k: int, stride: int = 1, pad: int = 0, *, groups: int = 1,
                 bias: bool = True, bn: bool = True) -> nn.Sequential:
    """conv -> [BatchNorm] -> ReLU, as ``nn.Sequential`` with children ``conv``, ``bn``, ``relu``."""
    mods = OrderedDict(conv=nn.Conv2d(cin, cout, k, stride, pad, groups=groups, bias=bias))
    if bn:
        mods["bn"] = nn.BatchNorm2d(cout)
    mods["relu"] = nn.ReLU(inplace=True)
    return nn.Sequential(mods)
