"""DeepCluster's clusters against plain k-means, NMI to the Fashion-MNIST labels, in one run.

    python benchmarks/bench_deepcluster_nmi.py [MODEL_OR_DIR] [--device cuda] [--seeds 3]

Each row clusters the 60k training images the way DeepCluster's epoch start does (features ->
PCA-whitened to 256 dims -> rows L2-normalised -> k-means, same k and iterations, the same seeds
for every row) and reports the NMI of the assignment to the labels (mean and spread over seeds):

- raw pixels: the 784 pixel values;
- random init: the same architecture untrained (seeded), its fc7 features as DeepCluster takes them
  (eval mode, no augmentation; ``DeepCluster.cluster_features``);
- trained: MODEL's fc7 features, the same way (what its next epoch would cluster);
- trained, top layer: the clusters MODEL itself predicts (argmax of its top layer; no k-means):
  the model's headline metric, on the training split.

The issue's target: the trained rows above both the raw-pixel and the random-init rows.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from sslzoo import zoo
from sslzoo.training import kmeans as km
from sslzoo.training._precision import machine, use_bf16
from sslzoo.training.data import load_dataset
from sslzoo.training.loop import pretext_metrics
from sslzoo.training.pretexts import Run, get_pretext


def nmis(x: torch.Tensor, labels: torch.Tensor, k: int, seeds: list[int]) -> list[float]:
    z = km.l2_normalize(km.pca_whiten(x, km.PCA_DIM)[0])
    return [km.nmi(km.kmeans(z, k, 20, seed=s).assign.cpu(), labels) for s in seeds]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="deepcluster-alexnet", help="trained DeepCluster model (name or dir)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seeds", type=int, default=3, help="k-means seeds per row (default %(default)s)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    bf16 = use_bf16("auto", device)
    trained = zoo.load(args.model, device=device).eval()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        random = zoo.create(trained.name).to(device).eval()
    data = load_dataset("fashion-mnist", "train", data_config=trained.data_config)
    images, labels = data.images.to(device), data.labels
    pretext = get_pretext(trained.pretext, trained)
    k, seeds = pretext.k, list(range(args.seeds))
    print(f"{len(images)} training images, k = {k}, 20 Lloyd iterations, seeds {seeds}; {machine(device)}")
    print(f"{'features':34s} | {'NMI to labels (mean)':>20s} | {'min':>6s} {'max':>6s} | {'s':>6s}")
    rows = {}

    def row(name: str, values: list[float], t0: float) -> None:
        rows[name] = statistics.mean(values)
        print(f"{name:34s} | {rows[name]:20.4f} | {min(values):6.4f} {max(values):6.4f} | {time.perf_counter() - t0:6.1f}",
              flush=True)

    t0 = time.perf_counter()
    row("raw pixels (784)", nmis(images.reshape(len(images), -1).float().div_(255), labels, k, seeds), t0)
    for name, model in (("random init, fc7", random), (f"{trained.name} fc7", trained)):
        t0 = time.perf_counter()
        run = Run(model, images, labels, device, bf16, seed=0, log=lambda line: None)
        row(name, nmis(pretext.cluster_features(run), labels, k, seeds), t0)
    t0 = time.perf_counter()  # the headline metric (NMI of its own clusters), as train / evaluate measure it
    row(f"{trained.name} top layer (argmax)", [pretext_metrics(trained, pretext, data, device, bf16=bf16)["nmi"]], t0)
    best_baseline = max(rows["raw pixels (784)"], rows["random init, fc7"])
    ours = max(rows[f"{trained.name} fc7"], rows[f"{trained.name} top layer (argmax)"])
    print(f"trained vs the better baseline: {ours:.4f} vs {best_baseline:.4f} "
          f"({'above both' if ours > best_baseline else 'NOT above both'})")


if __name__ == "__main__":
    main()
