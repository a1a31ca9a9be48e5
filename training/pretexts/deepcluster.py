"""DeepCluster (Caron et al. 2018), training side.

At the start of every epoch (``begin_epoch``): the features of every training image (the head's
fc7, eval mode, no augmentation) -> PCA to 256 dims with whitening -> rows L2-normalised ->
k-means with a new seed (``training/kmeans.py``, on the training device) -> the assignment becomes
the epoch's pseudo-labels (a buffer of this plug-in: checkpointed, so a resume inside the epoch
does not re-cluster), and the top layer is re-initialised in place (N(0, 0.01), bias 0, as the
authors) with its optimiser state reset by the loop. The epoch's order samples the clusters
uniformly (``epoch_order``: the authors' UnifLabelSampler, here with replacement in every
cluster). Each epoch's NMI of the assignment to the labels and to the previous epoch's assignment
(the paper's two curves) go into the run's history, and so into the model's provenance.
The headline metric, measured on the test split by ``sslzoo evaluate`` too: NMI between the
clusters the trained model predicts (its top layer) and the labels.
"""
from __future__ import annotations

import math
import time

import torch
from torch import nn

from sslzoo.zoo.pretexts import deepcluster

from .. import kmeans
from ._protocol import Batch, Classification, Pretext, Run, register

MAX_CLASSES = 1024  # label values the NMI's contingency table has room for
GALLERY = 8  # training images per cluster shipped for the demo
CLUSTERS_FILE = deepcluster.CLUSTERS_FILE


def nmi_table(table: torch.Tensor) -> float:
    """NMI (arithmetic normalisation) from a contingency table (clusters x classes, counts)."""
    t = table.double()
    n = float(t.sum())
    if n == 0:
        return 0.0
    rows, cols = t.sum(1), t.sum(0)
    nz = t > 0
    mi = float((t[nz] / n * (t[nz].log() + math.log(n) - (rows[:, None] * cols[None, :])[nz].log())).sum())

    def entropy(p: torch.Tensor) -> float:
        p = p[p > 0] / n
        return float(-(p * p.log()).sum())

    h = (entropy(rows) + entropy(cols)) / 2
    return max(0.0, mi) / h if h > 0 else 1.0


@register
class DeepCluster(Classification):
    name = deepcluster.PRETEXT
    # the authors' recipe (SGD lr 0.05, momentum 0.9, weight decay 1e-5); epochs sized for 2 CPUs
    defaults = {**Pretext.defaults, "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-5, "epochs": 20.0,
                "batch_size": 128, "warmup_steps": 100}

    def __init__(self, num_clusters: int = deepcluster.NUM_CLUSTERS, pca_dim: int = kmeans.PCA_DIM,
                 iters: int = 20, feature_batch: int = 512):
        super().__init__()
        self.k, self.pca_dim, self.iters, self.feature_batch = num_clusters, pca_dim, iters, feature_batch
        self.register_buffer("pseudo_labels", torch.empty(0, dtype=torch.long))  # N: this epoch's clusters

    @classmethod
    def from_model(cls, model) -> "DeepCluster":
        return cls(model.head.num_clusters)

    def begin(self, run: Run) -> None:
        n, width = len(run.images), run.model.head.top.in_features
        if n < self.k:
            raise kmeans.ClusteringError(f"deepcluster: {n} training images cannot make {self.k} clusters; "
                                         f"use more images (--limit) or a model with fewer clusters")
        if n < self.pca_dim or width < self.pca_dim:
            raise kmeans.ClusteringError(f"deepcluster: PCA to {self.pca_dim} dims needs at least {self.pca_dim} "
                                         f"images and features; have {n} images of {width} features")

    @torch.no_grad()
    def cluster_features(self, run: Run) -> torch.Tensor:
        """N x hidden features of every training image: eval mode, no augmentation, the model's size."""
        model = run.model
        model.eval()
        feats = []
        for i in range(0, len(run.images), self.feature_batch):
            x = Batch.from_uint8(run.images[i:i + self.feature_batch], torch.arange(0), model.data_config).resized()
            with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.bf16):
                feats.append(model.head.features(model.trunk, x).float())
        return torch.cat(feats)

    def begin_epoch(self, run: Run, epoch: int) -> list[nn.Parameter]:
        t0 = time.perf_counter()
        z, _ = kmeans.pca_whiten(self.cluster_features(run), self.pca_dim)
        result = kmeans.kmeans(kmeans.l2_normalize(z), self.k, iters=self.iters, seed=run.seed * 1_000_003 + epoch)
        previous, self.pseudo_labels = self.pseudo_labels, result.assign.to(self.pseudo_labels.device)
        history = run.history
        history.setdefault("nmi_to_labels", []).append(round(kmeans.nmi(result.assign.cpu(), run.labels), 4))
        if len(previous):
            history.setdefault("nmi_to_previous_epoch", []).append(round(kmeans.nmi(result.assign.cpu(), previous.cpu()), 4))
        history.setdefault("empty_clusters_reseeded", []).append(int(sum(result.reseeded)))
        seconds = time.perf_counter() - t0  # the assignment is on the CPU by now: the GPU's work is done
        run.log(f"epoch {epoch}: {int((result.sizes > 0).sum())} clusters, NMI to the labels "
                f"{history['nmi_to_labels'][-1]:.4f}" + (f", to the previous epoch {history['nmi_to_previous_epoch'][-1]:.4f}"
                                                        if len(previous) else "") + f" (clustering pass {seconds:.1f} s)")
        top = run.model.head.top
        g = torch.Generator().manual_seed(run.seed * 1_000_003 + epoch)
        with torch.no_grad():  # drawn on the CPU from a seeded generator: the same on any device
            top.weight.copy_(torch.randn(top.weight.shape, generator=g) * 0.01)
            top.bias.zero_()
        return [top.weight, top.bias]

    def extras(self, run: Run) -> dict[str, dict[str, torch.Tensor]]:
        """``clusters.safetensors`` for the demo's Clusters tab: each cluster's size in the last
        epoch's assignment and up to ``GALLERY`` of its training images (seeded pick, source size)."""
        labels = self.pseudo_labels.cpu()
        sizes = torch.bincount(labels, minlength=self.k)  # k
        g = torch.Generator().manual_seed(run.seed)
        keys = torch.rand(len(labels), generator=g) + labels.double()  # random order inside each cluster
        order = torch.argsort(keys)  # positions grouped by cluster, shuffled within
        starts = torch.cumsum(sizes, 0) - sizes
        slot = torch.arange(GALLERY)
        take = starts[:, None] + slot  # k x G
        valid = slot[None, :] < sizes[:, None]  # k x G
        index = torch.where(valid, order[take.clamp(max=len(labels) - 1)], -1)  # k x G dataset positions, -1: none
        members = run.images.cpu()[index.clamp(min=0)] * valid[..., None, None, None]  # k x G x C x h x w uint8
        return {CLUSTERS_FILE: {"sizes": sizes, "index": index, "members": members}}

    def epoch_order(self, n: int, epoch: int, gen: torch.Generator) -> torch.Tensor:
        """n dataset positions sampled uniformly over the non-empty clusters (then shuffled): each
        cluster gets ceil(n / clusters) draws, with replacement, whatever its size."""
        labels = self.pseudo_labels.cpu()
        order = torch.argsort(labels, stable=True)  # positions grouped by cluster
        sizes = torch.bincount(labels, minlength=self.k)
        starts = torch.cumsum(sizes, 0) - sizes
        live = (sizes > 0).nonzero().squeeze(1)  # clusters with members
        per = math.ceil(n / len(live))
        draws = (torch.rand(len(live), per, generator=gen) * sizes[live, None]).long()  # clusters x per
        picks = order[(starts[live, None] + draws).flatten()]
        return picks[torch.randperm(len(picks), generator=gen)][:n]

    def make_batch(self, batch: Batch, gen=None, dtype=None):
        # images at the model's size B x C x H x W; targets: this epoch's cluster of each image (B),
        # or, when the headline metric is measured, the images' labels
        x = batch.resized()
        targets = batch.labels if batch.labels is not None else self.pseudo_labels[batch.index]
        return (x if dtype is None else x.to(dtype)), targets

    def metrics(self, logits: torch.Tensor, targets: torch.Tensor) -> dict:
        # the headline: NMI of the predicted clusters to the targets, from one k x classes table
        width = max(self.k, MAX_CLASSES)
        if int(targets.max()) >= width:
            raise ValueError(f"deepcluster metrics: label {int(targets.max())} beyond the {width} the table holds")
        cells = logits.argmax(-1) * width + targets
        table = torch.bincount(cells, minlength=self.k * width).view(self.k, width)
        return {"nmi": (table, len(targets))}

    def summarize(self, sums: dict) -> dict[str, float]:
        return {"nmi": nmi_table(sums["nmi"][0])}
