"""DeepCluster's k-means side by side: ours (training/kmeans.py) against scikit-learn's KMeans and, when
it imports, faiss-cpu's Clustering (the authors' choice), on the same features, same k, same number of
Lloyd iterations and the same initial centroids (so the inertias are comparable).

    .venv/bin/python benchmarks/bench_kmeans.py --threads 2                 # pixels, k = FMNIST_K
    .venv/bin/python benchmarks/bench_kmeans.py --model rotation-alexnet --threads 2   # conv5 features
    .venv/bin/python benchmarks/bench_kmeans.py --k-sweep 10,50,100,300,500  # NMI to the labels vs k
    python benchmarks/bench_kmeans.py --device cuda --threads 16   # ours on the GPU, the others on 16 cores

Features, as DeepCluster builds them each epoch: Fashion-MNIST's 60k training images, raw pixels (784
dims; or ``--model``'s conv5 taps pooled to the probe grid, through the probe's feature cache),
PCA-whitened to 256 dims and L2-normalised (``pca_whiten`` + ``l2_normalize``; their time is printed
apart, not part of any clustering time).

Each method runs ``--repeat`` times, the methods alternating, and the table shows the fastest run of
each (wall clock, and this process's CPU time: the fairer measure when other jobs share the cores).
Every method gets the same thread count (torch, scikit-learn's OpenMP/BLAS pools via threadpoolctl,
faiss' OpenMP). The methods:

- ours: ``kmeans(x, k, iters, init=...)`` with ``--precision`` (auto = bf16 GEMM where the CPU
  multiplies bf16 natively, float32 re-check of near-ties; the assignment is float32-exact either way)
- ours-fp32: the same in float32 only, to show what bf16 brings;
- sklearn: ``KMeans(n_clusters=k, init=<the same array>, n_init=1, max_iter=iters, tol=0,
  algorithm="lloyd")``, its defaults otherwise (it may stop early if no label changes: ``it`` says);
- faiss: ``faiss.Clustering`` (niter=iters, the same centroids given as its init,
  max_points_per_centroid large so it does not subsample), then ``index.search`` for the final
  assignment, as DeepCluster's code does.

Inertia and NMI are recomputed the same way for all (float64 sum of squared distances of the rows to
their returned centroid; ``nmi`` to the labels and to scikit-learn's assignment). Targets: sklearn /
ours >= 5x (wall), |inertia - sklearn's| <= 1 %.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from sslzoo.training import kmeans as km
from sslzoo.training._precision import PRECISIONS, machine
from sslzoo.training.data import load_fashion_mnist

TARGET_RATIO, TARGET_INERTIA = 5.0, 0.01


def features(args) -> tuple[torch.Tensor, torch.Tensor, str, float]:
    """(N x 256 whitened, L2-normalised features, N labels, description, seconds for PCA + normalise)."""
    train = load_fashion_mnist("train")
    n = args.train_limit or len(train)
    if args.model:
        from sslzoo import zoo
        from sslzoo.training import probe
        from sslzoo.training.data import load_dataset

        with torch.random.fork_rng():
            torch.manual_seed(args.seed)
            model = zoo.load(args.model, pretrained=not args.untrained)
        data = load_dataset("fashion-mnist", "train", data_config=model.data_config).subset(n)
        raw = probe.cached_features(model, data, (args.layer,))[args.layer]  # N x D
        what = f"{model.name}{' (untrained)' if args.untrained else ''} {args.layer} pooled to the probe grid"
        labels = data.labels
    else:
        raw = train.images[:n].reshape(n, -1).float().div_(255)  # N x 784
        what = "raw pixels"
        labels = train.labels[:n]
    t = time.perf_counter()
    z, _ = km.pca_whiten(raw, args.pca_dim)
    z = km.l2_normalize(z)
    return z, labels, f"{what} ({raw.shape[1]} dims) -> PCA-whitened {args.pca_dim} -> L2", time.perf_counter() - t


def inertia64(x: torch.Tensor, centroids: torch.Tensor, assign: torch.Tensor) -> float:
    c = centroids.double()
    return sum(((x[s:s + 8192].double() - c[assign[s:s + 8192]]) ** 2).sum().item() for s in range(0, len(x), 8192))


def run_ours(x, k, iters, init, precision, device="cpu"):
    """Ours on ``device`` (the features and centroids moved there first, untimed by the caller's
    clock only if already there: the copy is part of the time, as it is for DeepCluster's features
    that come off the GPU model)."""
    dev = torch.device(device)
    r = km.kmeans(x.to(dev), k, iters, init=init.to(dev), precision=precision)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return r.centroids.cpu(), r.assign.cpu(), {"it": iters, "reseeded": sum(r.reseeded), "precision": r.stats["precision"],
                                   "rechecked": r.stats["rows_rechecked_fp32"]}


def run_sklearn(x, k, iters, init, threads):
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):
        m = KMeans(n_clusters=k, init=init.numpy(), n_init=1, max_iter=iters, tol=0, algorithm="lloyd").fit(x.numpy())
    return torch.from_numpy(m.cluster_centers_).float(), torch.from_numpy(m.labels_).long(), {"it": int(m.n_iter_)}


def run_faiss(x, k, iters, init, seed):
    import faiss

    xn = x.numpy()
    clus = faiss.Clustering(x.shape[1], k)
    clus.niter, clus.seed, clus.verbose = iters, seed, False
    clus.max_points_per_centroid = 10_000_000  # DeepCluster's setting: no subsampling
    clus.min_points_per_centroid = 1  # only silences a warning on the warm-up slice
    faiss.copy_array_to_vector(np.ascontiguousarray(init.numpy().ravel()), clus.centroids)  # our init
    index = faiss.IndexFlatL2(x.shape[1])
    clus.train(xn, index)
    _, assign = index.search(xn, 1)
    centroids = faiss.vector_to_array(clus.centroids).reshape(k, -1)
    return torch.from_numpy(centroids).float(), torch.from_numpy(assign[:, 0]).long(), {"it": iters}


def timed(fn, *a):
    t, c = time.perf_counter(), time.process_time()
    out = fn(*a)
    return out, time.perf_counter() - t, time.process_time() - c


def compare(args, x, labels) -> None:
    k, iters = args.k, args.iters
    init = km.initial_centroids(x, k, args.seed)  # k x d, shared by every method
    methods = {"ours": lambda: run_ours(x, k, iters, init, args.precision, args.device),
               "ours-fp32": lambda: run_ours(x, k, iters, init, "fp32", args.device),
               "sklearn": lambda: run_sklearn(x, k, iters, init, args.threads)}
    faiss_note = ""
    if not args.no_faiss:
        try:
            import faiss
            faiss.omp_set_num_threads(args.threads)
            methods["faiss"] = lambda: run_faiss(x, k, iters, init, args.seed)
            faiss_note = f", faiss {faiss.__version__}"
        except ImportError:
            faiss_note = ", faiss not installed (pip install faiss-cpu for its column)"
    # warm-up on a slice (library loading, thread pools, kernel selection), not timed
    xs = x[:max(2000, 2 * k)]
    for name, fn in (("ours", lambda: run_ours(xs, k, 1, init, args.precision, args.device)),
                     ("sklearn", lambda: run_sklearn(xs, k, 1, init, args.threads))):
        fn()
    if "faiss" in methods:
        run_faiss(xs, k, 1, init, args.seed)

    import sklearn
    print(f"k = {k}, {iters} Lloyd iterations + the final assignment, same initial centroids (seed {args.seed}); "
          f"{args.repeat} runs each, alternated; torch {torch.__version__}, scikit-learn {sklearn.__version__}"
          f"{faiss_note}; ours on {machine(args.device)}; the others on {machine('cpu')} "
          f"(threads for every method: {args.threads}, os.cpu_count() {os.cpu_count()})")
    runs: dict[str, list] = {m: [] for m in methods}
    for _ in range(args.repeat):
        for name, fn in methods.items():
            (centroids, assign, info), wall, cpu = timed(fn)
            runs[name].append((wall, cpu, centroids, assign, info))
    load = os.getloadavg()
    sk = min(runs["sklearn"], key=lambda r: r[0])
    sk_inertia = inertia64(x, sk[2], sk[3])
    sk_wall, sk_cpu = sk[0], min(r[1] for r in runs["sklearn"])
    header = (f"{'method':10} | {'wall s':>7} {'CPU s':>7} {'runs (wall s)':>22} | {'sk/x wall':>9} {'sk/x CPU':>8} | "
              f"{'inertia':>11} {'vs sk':>8} | {'NMI lab':>7} {'NMI sk':>6} | {'empty':>5} {'it':>3} | notes")
    print(header)
    print("-" * len(header))
    summary = {}
    for name, rs in runs.items():
        best = min(rs, key=lambda r: r[0])
        wall, cpu = best[0], min(r[1] for r in rs)
        centroids, assign, info = best[2], best[3], best[4]
        inertia = inertia64(x, centroids, assign)
        rel = (inertia - sk_inertia) / sk_inertia
        empty = int((torch.bincount(assign, minlength=k) == 0).sum())
        notes = ""
        if "precision" in info:
            notes = f"{info['precision']} GEMM, {info['reseeded']} re-seeded"
            if info["precision"] == "bf16":
                notes += f", near-ties re-checked in fp32: {statistics.mean(info['rechecked']) / len(x):.1%} of rows/pass"
        summary[name] = (sk_wall / wall, sk_cpu / cpu, rel)
        print(f"{name:10} | {wall:7.3f} {cpu:7.3f} {' '.join(f'{r[0]:.2f}' for r in rs):>22} | "
              f"{sk_wall / wall:9.2f} {sk_cpu / cpu:8.2f} | {inertia:11.2f} {rel:+8.4%} | "
              f"{km.nmi(assign, labels):7.4f} {km.nmi(assign, sk[3]):6.4f} | {empty:5d} {info['it']:3d} | {notes}", flush=True)
    print(f"\nload average after the runs {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min) on "
          f"{os.cpu_count()} CPUs: other jobs share these cores when it is above the threads used")
    r_wall, r_cpu, rel = summary["ours"]
    print(f"ours vs scikit-learn: {r_wall:.2f}x wall, {r_cpu:.2f}x CPU (target >= {TARGET_RATIO:.0f}x: "
          f"{'met' if r_wall >= TARGET_RATIO else 'NOT met'}); inertia {rel:+.4%} (target within "
          f"{TARGET_INERTIA:.0%}: {'met' if abs(rel) <= TARGET_INERTIA else 'NOT met'})")
    r_wall32, r_cpu32, _ = summary["ours-fp32"]
    print(f"ours in float32 only vs scikit-learn: {r_wall32:.2f}x wall, {r_cpu32:.2f}x CPU; "
          f"bf16 GEMM + fp32 re-check vs float32: {r_wall / r_wall32:.2f}x wall")
    if "faiss" in summary:
        f_wall, f_cpu, f_rel = summary["faiss"]
        print(f"faiss vs scikit-learn: {f_wall:.2f}x wall, {f_cpu:.2f}x CPU, inertia {f_rel:+.4%}; "
              f"ours vs faiss: {r_wall / f_wall:.2f}x wall, {r_cpu / f_cpu:.2f}x CPU")


def k_sweep(args, x, labels) -> None:
    print(f"ours, {args.iters} iterations, seed {args.seed}, precision {args.precision}, {torch.get_num_threads()} "
          f"thread(s); {machine('cpu')}")
    header = f"{'k':>6} | {'imgs/cluster':>12} | {'NMI labels':>10} | {'inertia':>10} | {'empty':>5} | {'sizes min/med/max':>17} | {'s':>5}"
    print(header)
    print("-" * len(header))
    for k in args.k_sweep:
        (r, wall, _) = timed(km.kmeans, x, k, args.iters, args.seed, None)
        sizes = r.sizes
        print(f"{k:6d} | {len(x) / k:12.0f} | {km.nmi(r.assign, labels):10.4f} | {r.inertia:10.1f} | "
              f"{int((sizes == 0).sum()):5d} | {int(sizes.min()):5d} {int(sizes.median()):5d} {int(sizes.max()):5d} | {wall:5.1f}",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=km.FMNIST_K, help="clusters (default FMNIST_K = %(default)s)")
    ap.add_argument("--iters", type=int, default=20, help="Lloyd iterations (default %(default)s, DeepCluster's)")
    ap.add_argument("--threads", type=int, default=1, help="threads for every method (default 1)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each method, alternated (default %(default)s)")
    ap.add_argument("--precision", choices=PRECISIONS, default="auto", help="ours' GEMM (default auto)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="where ours runs (cpu or cuda); the others run on the CPU")
    ap.add_argument("--pca-dim", type=int, default=km.PCA_DIM)
    ap.add_argument("--train-limit", type=int, default=None, help="first N training images (default all 60000)")
    ap.add_argument("--model", default=None, help="cluster this zoo model's features instead of raw pixels")
    ap.add_argument("--untrained", action="store_true", help="--model's architecture at random init (seed --seed)")
    ap.add_argument("--layer", default="conv5", help="--model's tap (default %(default)s)")
    ap.add_argument("--no-faiss", action="store_true", help="skip faiss even if it imports")
    ap.add_argument("--k-sweep", type=lambda s: [int(v) for v in s.split(",")], default=None,
                    help="comma-separated k values: NMI to the labels of ours for each (instead of the comparison)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x, labels, what, prep_s = features(args)
    print(f"features: {what}: {tuple(x.shape)} in {prep_s:.2f} s (PCA + normalisation, not timed below)")
    if args.k_sweep:
        k_sweep(args, x, labels)
    else:
        compare(args, x, labels)


if __name__ == "__main__":
    main()
