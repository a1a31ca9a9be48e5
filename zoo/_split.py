"""``SplitAlexNet``: the split-brain autoencoder's trunk (Zhang, Isola & Efros, "Split-Brain
Autoencoders: Unsupervised Learning by Cross-Channel Prediction", CVPR 2017).

Two disjoint half-width AlexNets (``_alexnet.AlexNet`` with ``width`` 0.5: 32-96-192-128-128, BN
after every conv) on disjoint channels of the same RGB input: the ``l`` half sees CIE L - 50
(front end ``lab_l``), the ``ab`` half sees (a*, b*) / 110 (``lab_ab``). A tap ``convN`` is the two
halves' ``convN`` concatenated on channels (L half first), so the whole trunk has AlexNet's widths
64-192-384-256-256; the taps ``l_convN`` / ``ab_convN`` are one half alone (the probe measures what
each half contributes: on gray input the ab half sees zero chroma everywhere).

The model takes RGB in [0, 1]; ``forward`` returns pool5 of both halves concatenated.
"""
from __future__ import annotations

import torch
from torch import nn

from ._alexnet import LAYERS, AlexNet

HALVES = ("l", "ab")
_FRONT = {"l": "lab_l", "ab": "lab_ab"}


class SplitAlexNet(nn.Module):
    layers = LAYERS + tuple(f"{h}_{name}" for h in HALVES for name in LAYERS)

    def __init__(self, in_chans: int = 3):
        super().__init__()
        if in_chans != 3:
            raise ValueError("the split-brain trunk takes RGB input (in_chans 3): its halves see L and ab")
        self.in_chans = 3
        self.l = AlexNet(3, front_end=_FRONT["l"], width=0.5)
        self.ab = AlexNet(3, front_end=_FRONT["ab"], width=0.5)
        self.num_features = self.l.num_features + self.ab.num_features

    def half(self, name: str) -> AlexNet:
        return {"l": self.l, "ab": self.ab}[name]

    def forward_taps(self, x: torch.Tensor, layers=(), *, pool5: bool = True):
        """(taps, pool5 or None) as every trunk gives them; with ``pool5=False`` each half stops after
        the deepest tap asked of it (a half nobody asked for does not run)."""
        unknown = set(layers) - set(self.layers)
        if unknown:
            raise ValueError(f"unknown layer(s) {sorted(unknown)}; SplitAlexNet taps are {self.layers}")
        wanted = {h: [n for n in LAYERS if n in layers or f"{h}_{n}" in layers] for h in HALVES}
        out, ends = {}, {}
        for h in HALVES:
            if pool5 or wanted[h]:
                out[h], ends[h] = self.half(h).forward_taps(x, wanted[h], pool5=pool5)
        taps = {}
        for name in layers:
            if name in LAYERS:
                taps[name] = torch.cat([out["l"][name], out["ab"][name]], dim=1)
            else:
                h, _, base = name.partition("_")
                taps[name] = out[h][base]
        return taps, (torch.cat([ends["l"], ends["ab"]], dim=1) if pool5 else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_taps(x)[1]


def alexnet_split(in_chans: int = 3) -> SplitAlexNet:
    return SplitAlexNet(in_chans)
