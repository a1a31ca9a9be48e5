"""``PretextModel``: a trunk with taps, a pretext head, optional linear-probe heads, and its data config."""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ._alexnet import alexnet
from ._alexnets import BUILDERS as _AUTHORS_ALEXNETS
from ._nin import nin
from ._probe_head import LinearProbe
from ._resnet import resnet50
from ._split import alexnet_split
from .pretexts import build_head

# architecture name -> builder(**arch_args) -> trunk with .layers, .forward_taps, .num_features
ARCHITECTURES = {"alexnet": alexnet, "alexnet_split": alexnet_split}
ARCHITECTURES.update(_AUTHORS_ALEXNETS, nin=nin, resnet50=resnet50)  # the converted authors' trunks (zoo/_convert.py)


class PretextModel(nn.Module):
    """A pretext-trained backbone as the zoo hands it out.

    ``features(x, layers)`` gives unpooled B x C x H x W maps at the named taps;
    ``predict_pretext(x)`` the pretext's outputs (rotation: B x 4 logits);
    ``classify(x, layer)`` the stored linear probe's class logits, if the model has probes.
    """

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = config
        arch = config["architecture"]
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {arch!r}; known: {sorted(ARCHITECTURES)}")
        self.trunk = ARCHITECTURES[arch](**config.get("arch_args", {}))
        self.pretext: str = config["pretext"]
        self.pretexts: tuple[str, ...] = (self.pretext,)  # what predict_pretext can answer (a composite head: several)
        self.layers: tuple[str, ...] = tuple(self.trunk.layers)
        self.data_config: dict[str, Any] = dict(config["data_config"])
        c, h, w = self.data_config["input_size"]
        in_chans = config.get("arch_args", {}).get("in_chans", 3)
        if c != in_chans:
            raise ValueError(f"data_config.input_size has {c} channel(s) but the trunk takes {in_chans}")
        pretext_args = config.get("pretext_args", {})
        self.head: nn.Module | None = None  # pretext_args None: a converted trunk without its pretext head
        if pretext_args is not None:
            self.head = build_head(self.pretext, self.trunk, (c, h, w), **pretext_args)  # sized from the trunk
            self.pretexts = tuple(getattr(self.head, "pretexts", self.pretexts))  # a multi-task head: its tasks
        self.probes = nn.ModuleDict()
        probe_cfg = config.get("probe") or {}
        for layer, spec in probe_cfg.get("heads", {}).items():
            self.probes[layer] = LinearProbe(spec["channels"], tuple(spec["grid"]), len(probe_cfg["classes"]))

    @property
    def name(self) -> str:
        return self.config.get("name", f"{self.pretext}-{self.config['architecture']}")

    @property
    def classes(self) -> list[str]:
        return list((self.config.get("probe") or {}).get("classes", []))

    def features(self, x: torch.Tensor, layers=("conv5",)) -> dict[str, torch.Tensor]:
        layers = (layers,) if isinstance(layers, str) else tuple(layers)
        return self.trunk.forward_taps(x, layers, pool5=False)[0]

    def predict_pretext(self, x: torch.Tensor) -> torch.Tensor:
        if self.head is None:
            raise ValueError(f"{self.name} has no pretext head (the converted checkpoint's head was not kept); "
                             "use features()")
        return self.head(self.trunk, x)

    forward = predict_pretext

    def for_pretext(self, pretext: str) -> "PretextModel":
        """This model as a ``pretext`` model: itself, or for a multi-task model a view sharing its
        trunk, probes and data config whose head is that task's (``predict_pretext`` answers that task
        only), so every single-task helper and demo tab takes it as it is."""
        if pretext not in self.pretexts:
            raise ValueError(f"{self.name} cannot predict {pretext!r}; it predicts {', '.join(self.pretexts)}")
        for_task = getattr(self.head, "for_task", None)  # a composite head (multi-task) answers a task by a view
        if for_task is None:  # its own head answers every pretext it lists
            return self
        head, args = for_task(pretext)
        view = copy.copy(self)  # a new module object: its own registries, the same submodules
        view.__dict__.update(_modules=dict(self._modules), _parameters=dict(self._parameters),
                             _buffers=dict(self._buffers))
        view.config = {**self.config, "pretext": pretext, "pretext_args": args, "view_of": self.name}
        view.pretext, view.pretexts = pretext, (pretext,)
        view.head = head
        return view

    def classify(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        """Linear-probe class logits (B x num_classes) from the probe head stored for ``layer``."""
        if layer not in self.probes:
            have = sorted(self.probes) or "none"
            raise ValueError(f"{self.name} has no probe head for {layer!r} (probe heads: {have}); run `sslzoo probe` first")
        return self.probes[layer](self.features(x, (layer,))[layer])
