"""Pretext protocol v2: what every pretext plugs into (DESIGN.md, "Pretext protocol (v2)").

The loop builds a ``Batch`` for every step and hands it to the plug-in; it never knows which
pretext it runs. A plug-in is an ``nn.Module``: its parameters and buffers are *train-only state*
(a discriminator, DeepCluster's pseudo-labels, a colour prior), checkpointed with the run and never
shipped with the model. Hooks are optional and do nothing by default.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Batch:
    """One step's images, augmented and normalised, at the data set's own size (the patch pretexts
    cut tiles from the source; the others take ``resized()``)."""

    images: torch.Tensor  # B x C x h x w float, normalised, source size
    index: torch.Tensor  # B dataset positions (identity: DeepCluster's pseudo-labels, Exemplar's classes)
    data_config: dict
    unit: torch.Tensor | None = field(default=None, repr=False)  # the same in [0, 1], before normalising
    # B class labels, given only when the headline metric is measured (e.g. DeepCluster's NMI to the
    # labels); a training batch never carries them, so no pretext can learn from them
    labels: torch.Tensor | None = field(default=None, repr=False)
    _resized: torch.Tensor | None = field(default=None, repr=False)

    @classmethod
    def from_uint8(cls, x: torch.Tensor, index: torch.Tensor, data_config: dict,
                   labels: torch.Tensor | None = None) -> "Batch":
        """uint8 B x C x h x w (in the model's channels) -> a Batch."""
        from sslzoo.zoo._transforms import normalize

        unit = x.float().div_(255)
        return cls(normalize(unit, data_config), index, data_config, unit, labels)

    def resized(self) -> torch.Tensor:
        """B x C x H x W at the model's input size (as the data config says; computed once). Resized
        before normalising when the [0, 1] images are at hand, as the features' transforms do."""
        if self._resized is None:
            from sslzoo.zoo._transforms import normalize

            _, h, w = self.data_config["input_size"]
            x = self.images if self.unit is None else self.unit
            if tuple(x.shape[-2:]) != (h, w):
                x = F.interpolate(x, size=(h, w), mode=self.data_config.get("interpolation", "bilinear"),
                                  align_corners=False, antialias=False)
            self._resized = x if self.unit is None else normalize(x, self.data_config)
        return self._resized


@dataclass
class Run:
    """What a hook may use of the run: the model being trained, the training images (uint8, on the
    device), the device and precision, a seeded generator maker and a log."""

    model: nn.Module
    images: torch.Tensor  # N x C x h x w uint8
    labels: torch.Tensor  # N (only for reporting, e.g. DeepCluster's NMI to the labels; never for training)
    device: torch.device
    bf16: bool
    seed: int
    log: Callable[[str], None] = print
    history: dict[str, Any] = field(default_factory=dict)  # per-epoch figures a plug-in records for provenance


class Pretext(nn.Module):
    """Base of every training plug-in. Subclasses set ``name`` and implement ``make_batch`` and
    ``loss``; ``metrics`` returns sums and counts, its first key the headline metric."""

    name: ClassVar[str]
    # Recipe defaults the CLI starts from; --optimizer / --lr / ... override them.
    defaults: ClassVar[dict[str, Any]] = {"data": "fashion-mnist", "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
                                          "epochs": 10.0, "batch_size": 128, "warmup_steps": 100}
    higher_is_better: ClassVar[bool] = True  # of the headline metric

    @classmethod
    def from_model(cls, model) -> "Pretext":
        """The plug-in for ``model`` (reading what it needs from the model's head: permutations, tiles)."""
        return cls()

    def make_batch(self, batch: Batch, gen: torch.Generator, dtype: torch.dtype | None):
        """-> (inputs, targets) on the batch's device; inputs in ``dtype`` (the model's compute dtype)."""
        raise NotImplementedError

    def loss(self, outputs, targets) -> torch.Tensor:
        raise NotImplementedError

    def metrics(self, outputs, targets) -> dict[str, tuple[Any, int]]:
        """name -> (sum, count) over the batch; the first key is the headline metric. A sum may be a
        tensor (e.g. a contingency table) that ``summarize`` turns into the figure."""
        raise NotImplementedError

    def summarize(self, sums: dict[str, tuple[Any, int]]) -> dict[str, float]:
        """Sums over the whole evaluation set -> {name: value} (default: sum / count)."""
        return {name: float(total) / max(1, count) for name, (total, count) in sums.items()}

    def load_train_state(self, state: dict) -> None:
        """Restore a checkpoint's plug-in state. Buffers sized by the data (DeepCluster's N
        pseudo-labels) take the checkpoint's shape; everything else must match exactly."""
        for name, buf in list(self.named_buffers()):
            if name in state and state[name].shape != buf.shape:
                owner, _, attr = name.rpartition(".")
                self.get_submodule(owner)._buffers[attr] = torch.empty(state[name].shape, dtype=buf.dtype,
                                                                       device=buf.device)
        self.load_state_dict(state, strict=True)

    # --- optional hooks ---------------------------------------------------------------------------
    def begin(self, run: Run) -> None:
        """Once, before the first step (and again on resume, before the checkpoint's state is loaded)."""

    def begin_epoch(self, run: Run, epoch: int) -> list[nn.Parameter]:
        """At the start of each epoch (not on a resume inside it). Returns parameters it re-initialised,
        whose optimiser state the loop resets."""
        return []

    def epoch_order(self, n: int, epoch: int, gen: torch.Generator) -> torch.Tensor:
        """The order of the training images in ``epoch`` (default: a random permutation)."""
        return torch.randperm(n, generator=gen)

    def eval_set(self, train, test):
        """The image set the headline metric is measured on (default: the test split)."""
        return test

    def extras(self, run: Run) -> dict[str, dict[str, torch.Tensor]]:
        """Files to ship beside the trained model, for its demo: {file name: tensors} written as
        safetensors into the model directory (DeepCluster: each cluster's size and a few members)."""
        return {}


class Classification(Pretext):
    """Cross-entropy over the pretext's classes; headline metric: accuracy (argmax)."""

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), targets)

    def metrics(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, tuple[float, int]]:
        return {"accuracy": (float((logits.argmax(-1) == targets).sum()), len(targets))}


PRETEXTS: dict[str, type[Pretext]] = {}


def register(cls: type[Pretext]) -> type[Pretext]:
    """Class decorator: make a plug-in known by its ``name`` (the model config's ``pretext``)."""
    PRETEXTS[cls.name] = cls
    return cls


class UntrainableModel(ValueError):
    """A model the loop cannot train: no pretext head, or a pretext without a training plug-in."""


def trainable_models() -> list[str]:
    """Zoo names (``name.tag``) whose configuration has a pretext head and a training plug-in."""
    from sslzoo.zoo._registry import list_models, lookup

    names = []
    for name in list_models(tags=True):
        config = lookup(name)[1].config
        if config.get("pretext_args") is not None and config.get("pretext") in PRETEXTS:
            names.append(name)
    return names


def get_pretext(name: str, model=None) -> Pretext:
    """The training plug-in of pretext ``name``, built from ``model`` (``from_model``) when given.
    A model without a pretext head (a converted trunk saved without it) is refused here, before any
    data is read."""
    what = getattr(model, "name", None) or f"pretext {name!r}"
    if name not in PRETEXTS or (model is not None and model.head is None):
        why = "has no pretext head (a converted trunk saved without it)" if name in PRETEXTS else \
            f"has no training plug-in for pretext {name!r}"
        raise UntrainableModel(f"{what} {why}: it cannot be trained or its pretext evaluated; "
                               f"trainable: {', '.join(trainable_models())}")
    cls = PRETEXTS[name]
    return cls.from_model(model) if model is not None else cls()
