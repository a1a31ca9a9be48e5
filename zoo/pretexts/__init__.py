"""Inference side of each pretext: its head module and the input transforms the demo also needs.

A head is an ``nn.Module`` whose ``forward(trunk, x)`` applies the shared trunk to the pretext's
input structure (one image, nine tiles, a pair, ...) and returns the pretext outputs.
The training side (sampling, loss) lives in ``sslzoo.training.pretexts``.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from . import jigsaw, relpatch, rotation

# pretext name -> builder(num_features: int, **pretext_args) -> head module
HEADS: dict[str, Callable[..., nn.Module]] = {
    "rotation": rotation.RotationHead,
    "jigsaw": jigsaw.JigsawHead,
    "relative-patch": relpatch.RelativePatchHead,
}


def build_head(pretext: str, num_features: int, **pretext_args) -> nn.Module:
    try:
        builder = HEADS[pretext]
    except KeyError:
        raise ValueError(f"unknown pretext {pretext!r}; known: {sorted(HEADS)}") from None
    return builder(num_features, **pretext_args)
