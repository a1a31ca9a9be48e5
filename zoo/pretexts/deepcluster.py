"""DeepCluster (Caron, Bojanowski, Joulin & Douze, "Deep Clustering for Unsupervised Learning of
Visual Features", ECCV 2018, arXiv:1807.05520): the network learns to predict the cluster of each
image, the clusters coming from k-means on its own features, re-done at every epoch.

Model, as the authors' ``models/alexnet.py``: the BN AlexNet behind a fixed Sobel front end (the
trunk's ``front_end="sobel"``), a classifier of two fully connected layers with ReLU (fc6, fc7;
the features that are clustered) and a ``top`` layer over the k clusters, re-initialised at every
epoch by the training side. Widths are for the input (``hidden``, here 512 instead of 4096).
Dropout is left out: the BN trunk and head train without it here, and a deterministic head keeps a
resumed run bit-identical without the global RNG. Clustering and sampling: ``sslzoo.training.pretexts.deepcluster``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

PRETEXT = "deepcluster"
NUM_CLUSTERS = 300  # Fashion-MNIST's k (training/kmeans.py says why)
# shipped beside the weights: "sizes" (k), "index" (k x G training positions, -1: none), "members"
# (k x G x C x h x w uint8 training images of each cluster), for the demo's Clusters tab
CLUSTERS_FILE = "clusters.safetensors"


class DeepClusterHead(nn.Module):
    """pool5 -> fc6 -> ReLU -> fc7 -> ReLU (``features``: what is clustered) -> ``top``: k logits."""

    def __init__(self, num_features: int, hidden: int = 512, num_clusters: int = NUM_CLUSTERS):
        super().__init__()
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(num_features, hidden), nn.ReLU(inplace=True),
                                        nn.Linear(hidden, hidden), nn.ReLU(inplace=True))
        self.top = nn.Linear(hidden, num_clusters)

    @property
    def num_clusters(self) -> int:
        return self.top.out_features

    def features(self, trunk: nn.Module, x: torch.Tensor) -> torch.Tensor:
        # x: B x C x H x W -> B x hidden (fc7 after ReLU, the clustering features)
        return self.classifier(trunk(x))

    def forward(self, trunk: nn.Module, x: torch.Tensor) -> torch.Tensor:
        # x: B x C x H x W -> B x k cluster logits
        return self.top(self.features(trunk, x))


def build_head(trunk: nn.Module, input_size: Sequence[int], hidden: int = 512,
               num_clusters: int = NUM_CLUSTERS) -> DeepClusterHead:
    """The head for ``trunk`` at the model's input size."""
    from . import flat_features

    return DeepClusterHead(flat_features(trunk, input_size), hidden=hidden, num_clusters=num_clusters)


@torch.no_grad()
def cluster_of(model, x: torch.Tensor) -> torch.Tensor:
    """The cluster each normalised image of ``x`` (B x C x H x W) falls in, by the model's top layer: B."""
    return model.predict_pretext(x).argmax(-1)
