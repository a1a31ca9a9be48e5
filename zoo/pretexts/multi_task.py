"""Multi-task self-supervision (Doersch & Zisserman, "Multi-task Self-Supervised Visual Learning",
ICCV 2017): one trunk, one head per pretext task, the losses summed with weights.

Here the trunk is the zoo's AlexNet and the tasks are any of the zoo's pretexts that train on the
same data (the default model: rotation, relative patch, jigsaw and exemplar on Fashion-MNIST).
The paper's *harmonisation* (every task gets alike input) holds by construction: every task sees
the same gray images, the patch tasks their tiles, the whole-image tasks the image at the model's
input size. ``pretext_args``: ``tasks`` {task: that task's own head arguments}, ``weights``
{task: loss weight} (default 1 each) and ``lasso``.

``lasso`` (the paper's sparse combination of the trunk's blocks per task): each task's head reads
not pool5 but a learned combination ``sum_i alpha_i P_i(conv_i)`` (``TapMix``): conv1..conv4
projected to pool5's channels by a 1x1 convolution and max-pooled to pool5's grid, conv5 as pool5
itself; ``alpha`` starts at (0, 0, 0, 0, 1) (the plain model) and an L1 penalty on it (added by the
training plug-in) makes the choice sparse.

``MultiTaskHead.forward(trunk, inputs)`` takes {task: that task's input} and returns {task:
outputs}. ``PretextModel.for_pretext(task)`` gives a view of the model with that task's head, so
every single-task helper and demo tab works on it unchanged.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

PRETEXT = "multi-task"
LASSO_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")


class TapMix(nn.Module):
    """One task's learned combination of the trunk's taps, shaped like pool5 (see the module doc)."""

    def __init__(self, trunk: nn.Module, input_size: Sequence[int]):
        super().__init__()
        from . import trunk_shape

        out_c = trunk_shape(trunk, input_size)[0]
        self.proj = nn.ModuleDict({name: nn.Conv2d(trunk_shape(trunk, input_size, name)[0], out_c, 1, bias=False)
                                   for name in LASSO_LAYERS[:-1]})
        self.alpha = nn.Parameter(torch.tensor([0.0] * (len(LASSO_LAYERS) - 1) + [1.0]))

    def forward(self, trunk: nn.Module, x: torch.Tensor) -> torch.Tensor:
        taps, pool5 = trunk.forward_taps(x, LASSO_LAYERS[:-1])  # conv1..conv4 maps, pool5 B x C x h x w
        out = self.alpha[-1] * pool5
        for i, name in enumerate(LASSO_LAYERS[:-1]):
            out = out + self.alpha[i] * F.adaptive_max_pool2d(self.proj[name](taps[name]), pool5.shape[-2:])
        return out

    def penalty(self) -> torch.Tensor:
        return self.alpha.abs().sum()


class _Mixed:
    """The trunk as one task's head sees it under ``lasso``: calling it gives that task's mix."""

    def __init__(self, trunk: nn.Module, mix: TapMix):
        self.trunk, self.mix = trunk, mix

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(self.trunk, x)

    def forward_taps(self, *args, **kwargs):
        return self.trunk.forward_taps(*args, **kwargs)


class MultiTaskHead(nn.Module):
    """{task: head} on one trunk; ``pretexts`` lists the tasks, in the configuration's order."""

    def __init__(self, heads: Mapping[str, nn.Module], weights: Mapping[str, float], mixers: Mapping[str, TapMix] | None,
                 task_args: Mapping[str, Mapping] | None = None):
        super().__init__()
        self.heads = nn.ModuleDict(heads)
        self.pretexts = tuple(heads)
        self.weights = {t: float(weights.get(t, 1.0)) for t in self.pretexts}
        self.mixers = nn.ModuleDict(mixers) if mixers else None
        self.task_args = {t: dict((task_args or {}).get(t) or {}) for t in self.pretexts}  # each head's build arguments

    def for_task(self, task: str) -> tuple["TaskHead", dict]:
        """Task ``task``'s head standing alone and the arguments it was built with (its ``pretext_args``):
        what ``PretextModel.for_pretext`` puts in a view of the model that answers that task only."""
        return TaskHead(self, task), dict(self.task_args[task])

    def task_trunk(self, trunk: nn.Module, task: str):
        """What task ``task``'s head calls as its trunk: the trunk itself, or its lasso mix."""
        return trunk if self.mixers is None else _Mixed(trunk, self.mixers[task])

    def forward(self, trunk: nn.Module, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # inputs {task: that task's input (B x C x H x W, B x 9 x C x t x t, ...)} -> {task: its outputs}
        unknown = set(inputs) - set(self.pretexts)
        if unknown:
            raise ValueError(f"no head for task(s) {sorted(unknown)}; this model's tasks: {', '.join(self.pretexts)}")
        return {t: self.heads[t](self.task_trunk(trunk, t), x) for t, x in inputs.items()}


class TaskHead(nn.Module):
    """One task's head of a multi-task model standing alone (``PretextModel.for_pretext``): it owns
    nothing new, it routes through the lasso mix when there is one, and reads as the task's head
    (``cell``, ``permutations``, ... come from the task's own head)."""

    def __init__(self, parent: MultiTaskHead, task: str):
        super().__init__()
        self.inner = parent.heads[task]
        self.mix = parent.mixers[task] if parent.mixers is not None else None

    def forward(self, trunk: nn.Module, x):
        return self.inner(trunk if self.mix is None else _Mixed(trunk, self.mix), x)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("inner"), name)


def build_head(trunk: nn.Module, input_size: Sequence[int], tasks: Mapping[str, Mapping] | None = None,
               weights: Mapping[str, float] | None = None, lasso: bool = False) -> MultiTaskHead:
    """{task: head args} -> the heads on ``trunk`` at the model's input size (each sizes itself)."""
    from . import HEADS, build_head as build

    if not tasks:
        raise ValueError("a multi-task model needs at least one task in pretext_args.tasks")
    bad = [t for t in tasks if t == PRETEXT or t not in HEADS]
    if bad:
        raise ValueError(f"unknown task(s) {bad}; known: {sorted(set(HEADS) - {PRETEXT})}")
    stray = sorted(set(weights or {}) - set(tasks))
    if stray:
        raise ValueError(f"loss weights for task(s) {stray} the model does not have ({', '.join(tasks)})")
    heads = {t: build(t, trunk, input_size, **dict(args or {})) for t, args in tasks.items()}
    mixers = {t: TapMix(trunk, input_size) for t in tasks} if lasso else None
    return MultiTaskHead(heads, dict(weights or {}), mixers, tasks)
