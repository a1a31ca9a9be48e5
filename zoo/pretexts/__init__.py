"""Inference side of each pretext: its head module and the input transforms the demo also needs.

One module per pretext (``zoo/pretexts/<name>.py``) defines ``PRETEXT`` (its name) and
``build_head(trunk, input_size, **pretext_args)``: the head *sizes itself* from the trunk it will
sit on (``trunk_shape``), so no caller passes feature counts around. A head is an ``nn.Module``
whose ``forward(trunk, x)`` applies the shared trunk to the pretext's input structure (one image,
nine tiles, a pair, ...) and returns the pretext outputs. The training side (sampling, targets,
loss, hooks) lives in ``sslzoo.training.pretexts``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from . import (colorization, context_encoder, counting, deepcluster, denoising, exemplar, jigsaw, multi_task, relpatch,
               rotation, split_brain)

_MODULES = (rotation, jigsaw, relpatch, deepcluster, denoising, context_encoder, colorization, split_brain, exemplar,
            counting, multi_task)  # multi_task composes the others' heads

# pretext name -> build_head(trunk, input_size, **pretext_args) -> head module
HEADS: dict[str, Callable[..., nn.Module]] = {m.PRETEXT: m.build_head for m in _MODULES}


@torch.no_grad()
def trunk_shape(trunk: nn.Module, size: Sequence[int], layer: str | None = None) -> tuple[int, int, int]:
    """(C, h, w) of the trunk's pool5 (``layer`` None) or of a tap, for a blank input of ``size``
    (C x H x W): what a head is sized from. Measured by one forward of a zero image in eval mode
    (BN with a batch of one), on the trunk's device (meta: shapes only); the trunk's train/eval
    mode is left as it was."""
    c, h, w = (int(s) for s in size)
    device = next((p.device for p in trunk.parameters()), torch.device("cpu"))
    was_training = trunk.training
    trunk.eval()
    try:
        x = torch.zeros(1, c, h, w, device=device)
        out = trunk.forward_taps(x, (layer,), pool5=False)[0][layer] if layer else trunk(x)
    finally:
        trunk.train(was_training)
    return tuple(out.shape[1:])


def build_head(pretext: str, trunk: nn.Module, input_size: Sequence[int], **pretext_args) -> nn.Module:
    """The pretext head of ``pretext`` for ``trunk`` at ``input_size`` (the model's C x H x W)."""
    try:
        builder = HEADS[pretext]
    except KeyError:
        raise ValueError(f"unknown pretext {pretext!r}; known: {sorted(HEADS)}") from None
    return builder(trunk, tuple(input_size), **pretext_args)


def flat_features(trunk: nn.Module, size: Sequence[int]) -> int:
    """Number of pool5 features the trunk gives for one input of ``size`` (C x H x W), flattened."""
    c, h, w = trunk_shape(trunk, size)
    return c * h * w
