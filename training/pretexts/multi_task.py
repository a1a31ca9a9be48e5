"""Multi-task self-supervision (Doersch & Zisserman 2017), training side: the plug-ins of the
model's tasks, each built from the model's view for its task (``PretextModel.for_pretext``), run
side by side on the same batch of source images.

``make_batch`` asks every task for its (inputs, targets) from the one ``Batch`` (each draws from the
step's generator in turn: deterministic); the model answers {task: outputs}; the loss is
``sum_t w_t loss_t`` (+ ``LASSO_PENALTY`` x the L1 norm of the lasso weights when the model has them).
The hooks (``begin``, ``begin_epoch``) run every task's; the order of the images is the default
random one (a task's own order, e.g. Exemplar's seeds only, would starve the others).

Metrics: every task's own, prefixed ``<task>/``. The headline ``mean_accuracy`` is the mean of the
tasks' accuracies on the held-out split. A task whose targets are the *training* images themselves
(Exemplar: a class per training seed) has no held-out form; in evaluation it is left out (its
accuracy is the training loop's, on training batches).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sslzoo.zoo.pretexts import multi_task as zm

from ._protocol import Batch, Pretext, Run, get_pretext, register

LASSO_PENALTY = 1e-3
TRAIN_ONLY = ("exemplar",)  # tasks whose classes are training images: not measured on the held-out split
SEP = "/"


@register
class MultiTask(Pretext):
    name = zm.PRETEXT
    defaults = {**Pretext.defaults, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
                "epochs": 10.0, "batch_size": 128, "warmup_steps": 100}

    def __init__(self, tasks: dict[str, Pretext], weights: dict[str, float], lasso: nn.ModuleDict | None = None):
        super().__init__()
        self.tasks = nn.ModuleDict(tasks)  # their train-only state (Exemplar's seeds, ...) is checkpointed with the run
        self.weights = {t: float(weights.get(t, 1.0)) for t in tasks}
        self._lasso = [lasso] if lasso is not None else []  # the model's, not ours: kept out of our state

    @classmethod
    def from_model(cls, model) -> "MultiTask":
        head = model.head
        tasks = {t: get_pretext(t, model.for_pretext(t)) for t in head.pretexts}
        return cls(tasks, head.weights, head.mixers)

    def _active(self) -> list[str]:
        return [t for t in self.tasks if self.training or t not in TRAIN_ONLY]

    def make_batch(self, batch: Batch, gen=None, dtype=None):
        # one Batch -> {task: inputs}, {task: targets}
        inputs, targets = {}, {}
        for t in self._active():
            inputs[t], targets[t] = self.tasks[t].make_batch(batch, gen, dtype)
        return inputs, targets

    def loss(self, outputs: dict, targets: dict) -> torch.Tensor:
        total = sum(self.weights[t] * self.tasks[t].loss(outputs[t], targets[t]) for t in targets)
        if self._lasso:
            total = total + LASSO_PENALTY * sum(m.penalty() for m in self._lasso[0].values())
        return total

    def metrics(self, outputs: dict, targets: dict) -> dict[str, tuple[Any, int]]:
        out: dict[str, tuple[Any, int]] = {"mean_accuracy": (0.0, 1)}  # the headline, filled in by summarize
        for t in targets:
            out.update({f"{t}{SEP}{k}": v for k, v in self.tasks[t].metrics(outputs[t], targets[t]).items()})
        return out

    def summarize(self, sums: dict[str, tuple[Any, int]]) -> dict[str, float]:
        out = {"mean_accuracy": 0.0}
        for t, plug in self.tasks.items():
            mine = {k.split(SEP, 1)[1]: v for k, v in sums.items() if k.startswith(t + SEP)}
            if mine:
                out.update({f"{t}{SEP}{k}": v for k, v in plug.summarize(mine).items()})
        accs = [v for k, v in out.items() if k.endswith(SEP + "accuracy")]
        out["mean_accuracy"] = sum(accs) / len(accs) if accs else 0.0
        return out

    def begin(self, run: Run) -> None:
        for plug in self.tasks.values():
            plug.begin(run)

    def begin_epoch(self, run: Run, epoch: int) -> list[nn.Parameter]:
        return [p for plug in self.tasks.values() for p in plug.begin_epoch(run, epoch)]
