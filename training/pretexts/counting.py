"""Counting (Noroozi, Pirsiavash & Favaro, ICCV 2017, arXiv:1708.06734), training side. The views
(D(x) and the four tiles, ``make_views``), the head phi and ``squared_distances`` are in
``sslzoo.zoo.pretexts.counting``.

Per step: the batch's [0, 1] source images, normalised, -> their five views at the model's size,
D's resize method drawn from the step's generator (one method for the whole batch, a new one every
step). The loss per image x, with y the previous image of the batch (phi(D y) is phi(D x) rolled
by one: no extra forward), is the paper's

    |phi(D x) - sum_j phi(T_j x)|^2 + max(0, M - |phi(D y) - sum_j phi(T_j x)|^2),   M = 10,

squared L2 over the *whole* count vector, averaged over the batch. A public TensorFlow port
(clvrai's) applies the hinge to each dimension, sum_k max(0, M - (phi_k(D y) - sum_j phi_k(T_j x))^2),
which asks every one of the K counts to differ by sqrt(M) rather than the vector: a known bug, not
the paper's loss (the tests check this one is over the whole vector).

Metrics (on the test split): ``counting_accuracy``, the share of images whose counts are closer to
the sum of their own tiles' counts than another image's counts are, |phi(Dx) - sum phi(Tx)| <
|phi(Dy) - sum phi(Tx)| (ties, e.g. all counts dead, are failures); ``active_dims``, how many of
the K count dimensions are ever positive over the set (the paper found ~30 of 1000 stay alive: a
dead ReLU never counts anything); ``count_distance`` and ``other_distance``, the mean of those two
distances.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from sslzoo.zoo._transforms import normalize
from sslzoo.zoo.pretexts import counting

from ._protocol import Batch, Pretext, register


@register
class Counting(Pretext):
    name = counting.PRETEXT
    # The paper's optimiser and learning rate: SGD, lr 1e-4 (here Nesterov, momentum 0.9, after a warm-up).
    # At init |phi(Dx) - sum phi(Tx)|^2 is ~450 (the tiles' counts sum to ~2.3x the whole's, in norm). Measured
    # on Fashion-MNIST, no warm-up, 15 steps: lr 1e-3 shrinks every count at once and most count dimensions die
    # (~45 of 1000 alive in a batch; 1e-2: 10), the loss stuck at the margin; 1e-4 takes the loss from ~450 to
    # ~9 with ~920 alive. Batch 64 (x 5 views: 320 96-px images a step, about rotation's 4 x 128). Measured on
    # this shared 2-CPU machine, 1 thread, bf16 autocast: ~0.75 s/step at batch 64, so 5 epochs (4685 steps)
    # take ~1 h here.
    defaults = {**Pretext.defaults, "optimizer": "sgd", "lr": 1e-4, "momentum": 0.9, "weight_decay": 5e-4,
                "epochs": 5.0, "batch_size": 64, "warmup_steps": 100}

    def __init__(self, margin: float = counting.MARGIN, methods: tuple[str, ...] = tuple(counting.METHODS)):
        super().__init__()
        for method in methods:
            counting.check_method(method)
        if not methods:
            raise ValueError("counting needs at least one resize method for D")
        self.margin, self.methods = float(margin), tuple(methods)

    def make_batch(self, batch: Batch, gen=None, dtype=None):
        # source images B x C x h x w -> inputs: views B x 5 x C x H x W (in dtype); targets: the index
        # of D's resize method in ``methods`` (0-d; the loss needs no target: the batch is its own)
        if self.training and len(batch.images) < 2:
            raise ValueError("counting contrasts each image with another one of its batch: use a batch of at least "
                             "2 images (--batch-size)")
        cfg = batch.data_config
        x = batch.images if batch.unit is None else normalize(batch.unit, cfg)  # B x C x h x w, normalised
        pick = int(torch.randint(len(self.methods), (1,), generator=gen))
        views = counting.make_views(x, cfg["input_size"][1:], self.methods[pick], cfg.get("interpolation", "bilinear"),
                                    dtype=dtype)
        return views, torch.tensor(pick)

    def loss(self, counts: torch.Tensor, targets=None) -> torch.Tensor:
        # counts: B x 5 x K -> mean over the batch of |Dx - sum Tx|^2 + max(0, M - |Dy - sum Tx|^2)
        own, other = counting.squared_distances(counts)  # B, B: squared L2 over the whole vector
        return (own + F.relu(self.margin - other)).mean()

    def metrics(self, counts: torch.Tensor, targets=None) -> dict[str, tuple[Any, int]]:
        own, other = counting.squared_distances(counts)
        b = len(counts)
        n = b if b >= 2 else 0  # a batch of one has no other image to contrast with
        closer = float((own < other).sum()) if n else 0.0
        active = (counts.detach() > 0).flatten(0, 1).any(0).long()  # K: 1 where some view of some image counts
        return {"counting_accuracy": (closer, n),
                "active_dims": (active, 1),
                "count_distance": (float(own.sqrt().sum()), b),
                "other_distance": (float(other.sqrt().sum()) if n else 0.0, n)}

    def summarize(self, sums: dict[str, tuple[Any, int]]) -> dict[str, float]:
        out = {}
        for name, (total, count) in sums.items():
            out[name] = float((torch.as_tensor(total) > 0).sum()) if name == "active_dims" else float(total) / max(1, count)
        return out
