"""Linear-probe solvers side by side: the seed's SGD protocol vs the fast L-BFGS, on the same cached features.

    .venv/bin/python benchmarks/bench_probe.py                       # untrained rotation-alexnet, full 60k/10k
    .venv/bin/python benchmarks/bench_probe.py runs/x/model --train-limit 20000 --threads 2

For each tap (conv1..conv5) both solvers fit the same standardised features in the same run; the
script prints each one's test top-1, the largest |difference| in points, the seconds each took
over all taps and the speed ratio, against the targets (fast >= 30x faster, |diff| <= 0.5 pt).
Feature extraction (cached under $SSLZOO_CACHE, see training/probe.py) is not part of either
solver's time. Default: one thread for both solvers, the per-core comparison; the seed's
192-image steps gain little from a second thread, and lose a lot when another job shares the
cores. Defaults take ~4 min for the first feature extraction plus ~4 min of SGD on 2 cores.
"""
from __future__ import annotations

import argparse
import time

import torch

from sslzoo import zoo
from sslzoo.training import probe
from sslzoo.training.data import load_dataset

TARGET_RATIO, TARGET_DIFF_PT = 30.0, 0.5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default=None,
                    help="zoo name or model directory (default: rotation-alexnet, untrained)")
    ap.add_argument("--untrained", action="store_true", help="random init of MODEL's architecture (torch seed --seed)")
    ap.add_argument("--train-limit", type=int, default=None, help="first N training images (default: all 60000)")
    ap.add_argument("--test-limit", type=int, default=None, help="first N test images (default: all 10000)")
    ap.add_argument("--layer", action="append", default=None, help="tap(s) to run (default: all)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both solvers (default 1)")
    ap.add_argument("--cache-dir", default=None, help="feature cache (default $SSLZOO_CACHE or ~/.cache/sslzoo/features)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    name = args.model or "rotation-alexnet"
    untrained = args.untrained or args.model is None
    with torch.random.fork_rng():
        torch.manual_seed(args.seed)
        model = zoo.load(name, pretrained=not untrained)
    train = load_dataset("fashion-mnist", "train").subset(args.train_limit)
    test = load_dataset("fashion-mnist", "test").subset(args.test_limit)
    layers = tuple(args.layer or model.layers)

    t = time.perf_counter()
    xs_train = probe.cached_features(model, train, layers, cache_dir=args.cache_dir)
    xs_test = probe.cached_features(model, test, layers, cache_dir=args.cache_dir)
    feature_s = time.perf_counter() - t
    torch.set_num_threads(args.threads)
    print(f"model {model.name}{' (untrained, seed %d)' % args.seed if untrained else ''}; "
          f"{len(train)} train / {len(test)} test images; features {feature_s:.1f} s "
          f"({probe.STATS['cache_hits']} cached, {probe.STATS['extracted_images']} images extracted); "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)\n")

    # One-time cost of a process's first fast fit (its 0.5 GB bf16 buffer, reused by every later tap:
    # on a machine whose page cache fills memory, first touching it means evicting cache), shown apart.
    z0 = probe.standardise_(xs_train[layers[0]].clone(), *probe.standardiser(xs_train[layers[0]]))
    cold = probe.fit("fast", z0, train.labels, len(train.classes), seed=args.seed).seconds
    warm = probe.fit("fast", z0, train.labels, len(train.classes), seed=args.seed).seconds
    del z0
    print(f"fast solver on {layers[0]}: first fit in this process {cold:.2f} s, second {warm:.2f} s; "
          f"the one-time {cold - warm:.2f} s is added to the fast total below\n")

    header = (f"{'layer':6} {'dims':>5} | {'seed top-1':>10} {'fast top-1':>10} {'|diff|':>7} | "
              f"{'seed s':>7} {'fast s':>7} {'ratio':>6} | {'seed cpu':>8} {'fast cpu':>8} {'ratio':>6} | "
              f"{'seed obj':>8} {'fast obj':>8} {'fast it':>7}")
    print(header)
    print("-" * len(header))
    totals = {"seed": 0.0, "fast": 0.0}
    cpu = {"seed": 0.0, "fast": 0.0}
    diffs = []
    for layer in layers:
        x_train, x_test = xs_train.pop(layer), xs_test.pop(layer)
        mean, std = probe.standardiser(x_train)
        z = probe.standardise_(x_train, mean, std)
        channels, grid = probe.layer_grid(model, layer)
        fits, acc = {}, {}
        for solver in ("seed", "fast"):
            fits[solver] = probe.fit(solver, z, train.labels, len(train.classes), seed=args.seed)
            head = probe.make_head(fits[solver], mean, std, channels, grid)  # float32: the solvers as fitted
            acc[solver] = 100 * probe.head_accuracy(head, x_test, test.labels)
            totals[solver] += fits[solver].seconds
            cpu[solver] += fits[solver].cpu_seconds
        diff = abs(acc["seed"] - acc["fast"])
        diffs.append(diff)
        print(f"{layer:6} {z.shape[1]:5d} | {acc['seed']:10.2f} {acc['fast']:10.2f} {diff:7.2f} | "
              f"{fits['seed'].seconds:7.2f} {fits['fast'].seconds:7.2f} {fits['seed'].seconds / fits['fast'].seconds:6.1f} | "
              f"{fits['seed'].cpu_seconds:8.2f} {fits['fast'].cpu_seconds:8.2f} "
              f"{fits['seed'].cpu_seconds / fits['fast'].cpu_seconds:6.1f} | "
              f"{fits['seed'].objective:8.4f} {fits['fast'].objective:8.4f} {fits['fast'].iterations:7d}", flush=True)
        del x_train, x_test, z

    totals["fast"] += max(0.0, cold - warm)
    cpu["fast"] += max(0.0, cold - warm)
    ratio, cpu_ratio = totals["seed"] / totals["fast"], cpu["seed"] / cpu["fast"]
    print(f"\ntotal over {', '.join(layers)}: seed SGD {totals['seed']:.1f} s wall / {cpu['seed']:.1f} s CPU, "
          f"fast L-BFGS {totals['fast']:.1f} s wall / {cpu['fast']:.1f} s CPU")
    for what, r in (("wall-clock", ratio), ("CPU-time", cpu_ratio)):
        print(f"{what} speed ratio {r:.1f}x (target >= {TARGET_RATIO:.0f}x: {'met' if r >= TARGET_RATIO else 'NOT met'})")
    print(f"max |top-1 difference| {max(diffs):.2f} pt (target <= {TARGET_DIFF_PT} pt: "
          f"{'met' if max(diffs) <= TARGET_DIFF_PT else 'NOT met'})")


if __name__ == "__main__":
    main()
