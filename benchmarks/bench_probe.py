"""Linear-probe solvers side by side on the same cached features: the fast L-BFGS, the seed's SGD
protocol and scikit-learn's LogisticRegression (lbfgs, multinomial, same L2 objective).

    .venv/bin/python benchmarks/bench_probe.py                       # untrained rotation-alexnet, full 60k/10k
    .venv/bin/python benchmarks/bench_probe.py rotation-alexnet --threads 2 --pass-dtype fp32
    .venv/bin/python benchmarks/bench_probe.py --pass-dtype fp16-storage --pass-dtype fp32 --pass-dtype bf16
    .venv/bin/python benchmarks/bench_probe.py runs/x/model --train-limit 20000 --sklearn-layer conv2
    .venv/bin/python benchmarks/bench_probe.py --time-passes     # one pass of each mode, random 60000 x 4096

For each tap (conv1..conv5) the solvers fit the same standardised features in the same run; the
script prints each one's test top-1, |fast - seed| and |fast - sklearn| in points, the seconds each
took and the speed ratios seed/fast and sklearn/fast, against the targets (fast >= 30x faster than
the seed's SGD and >= 20x faster than scikit-learn on every tap, |diff| <= 0.5 pt), and the dtype
of the fast solver's passes over the features (``--pass-dtype``: auto = bf16 where the CPU
multiplies bf16 natively, else fp16-storage, see training/_lbfgs.py; repeat it to run several modes
side by side: one row per tap and mode, the seed and scikit-learn columns shared by a tap's rows).

``--time-passes``: no model, no solver; one logits pass (``z @ W^T``) and one gradient pass
(``r @ z``) of each mode in isolation on a random standard-normal ROWS x DIMS matrix (K = 10), their
CPU time (this thread's, the fair measure on shared cores) and wall time, the bytes each reads and
what that makes per second, beside a plain streaming read of the same bytes (``sum``) and, for
fp16-storage, the conversion alone and the float32 products alone on one block kept in cache; plus
two alternatives to the copy into a reused buffer: ``block.float()`` (a fresh buffer per block) and
torch's own float16 products.

scikit-learn minimises the same objective: ``C * sum CE + ||W||^2 / 2`` with C = 1 / (wd * N) is
N * C times ``mean CE + (wd / 2) ||W||^2``, bias not penalised (lbfgs), on the same float32
features (no copy), with its defaults (tol 1e-4 on the largest gradient entry) and the fast
solver's iteration budget (``--sklearn-max-iter``, default LBFGSConfig().max_iter = 100).
It takes minutes per tap at 60k x 4096: ``--sklearn-layer`` runs it on some taps only.

Feature extraction (cached under $SSLZOO_CACHE, see training/probe.py) is not part of any
solver's time. Default: one thread for all solvers (torch and scikit-learn's BLAS / OpenMP pools),
the per-core comparison; the seed's 192-image steps gain little from a second thread, and lose a
lot when another job shares the cores. Defaults take ~4 min for the first feature extraction, then
~1.5 min of SGD and ~3 min of scikit-learn (one thread, 60k x 3072..4096 per tap).
"""
from __future__ import annotations

import argparse
import time
import warnings

import torch

from sslzoo import zoo
from sslzoo.training import probe
from sslzoo.training._lbfgs import PASS_MODES, _PassFeatures, release_workspace, resolved_pass_dtype
from sslzoo.training._precision import machine
from sslzoo.training.data import load_dataset

TARGET_SEED_RATIO, TARGET_SKLEARN_RATIO, TARGET_DIFF_PT = 30.0, 20.0, 0.5


def fit_sklearn(z: torch.Tensor, y: torch.Tensor, weight_decay: float, max_iter: int, threads: int) -> probe.Fit:
    """scikit-learn's LogisticRegression on the probe's objective (see the module docstring)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    x, labels = z.numpy(), y.numpy()  # float32, shares z's memory
    clf = LogisticRegression(C=1.0 / (weight_decay * len(x)), solver="lbfgs", max_iter=max_iter)
    with threadpool_limits(limits=threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # iterations == max_iter says it in the table
        start, cpu_start = time.perf_counter(), time.process_time()
        clf.fit(x, labels)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    assert list(clf.classes_) == list(range(clf.coef_.shape[0])), clf.classes_
    w = torch.from_numpy(clf.coef_).float().contiguous()  # K x D
    b = torch.from_numpy(clf.intercept_).float()
    return probe.Fit(w, b, "sklearn", probe.objective(z, y, w, b, weight_decay), seconds, cpu,
                     int(clf.n_iter_.max()), {"pass_dtype": str(x.dtype)})


def _timed(fn, reps: int) -> tuple[float, float, float]:
    """(min CPU s, median CPU s, min wall s) of ``fn()`` over ``reps`` runs after one warm-up run."""
    fn()
    cpu, wall = [], []
    for _ in range(reps):
        t, c = time.perf_counter(), time.thread_time()
        fn()
        cpu.append(time.thread_time() - c)
        wall.append(time.perf_counter() - t)
    return min(cpu), sorted(cpu)[len(cpu) // 2], min(wall)


def time_passes(rows: int, dims: int, modes: list[str], block_rows: list[int], reps: int, seed: int) -> None:
    """One pass of each mode in isolation (see the module docstring, ``--time-passes``)."""
    import torch.nn.functional as F
    k = 10
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(rows, dims, generator=g)  # standard normal: standardised features' scale
    w = torch.randn(k, dims, generator=g) / dims ** 0.5
    b = torch.zeros(k)
    r = torch.softmax(torch.randn(k, rows, generator=g), 0).sub_(torch.eye(k)[:, torch.arange(rows) % k]).div_(rows)
    print(f"one pass over a {rows} x {dims} float32 matrix, K = {k}, {torch.get_num_threads()} thread(s), "
          f"{reps} timed runs after a warm-up (CPU: this thread's time; min / median), torch {torch.__version__}, "
          f"{machine('cpu')}\n")
    head = f"{'what':54} {'reads MB':>8} | {'CPU min ms':>10} {'CPU med':>8} {'wall min':>8} | {'GB/s':>5}"
    print(head)
    print("-" * len(head))

    def row(what: str, nbytes: float, fn, n_reps: int = reps) -> float:
        cmin, cmed, wmin = _timed(fn, n_reps)
        rate = f"{nbytes / cmin / 1e9:5.1f}" if nbytes else f"{'-':>5}"
        print(f"{what:54} {nbytes / 1e6:8.0f} | {1e3 * cmin:10.1f} {1e3 * cmed:8.1f} {1e3 * wmin:8.1f} | {rate}",
              flush=True)
        return cmin

    per_iter = {}
    row("stream read (sum) float32", 4 * z.numel(), lambda: z.sum())
    z16 = z.half()
    row("stream read (sum) float16", 2 * z.numel(), lambda: z16.sum())
    del z16
    for mode in modes:
        blocks = block_rows if mode == "fp16-storage" else [None]
        for m in blocks:
            release_workspace()
            t = time.thread_time()
            feats = _PassFeatures(z, mode, m or 1)
            setup = time.thread_time() - t
            nbytes = feats.rows.numel() * feats.rows.element_size()
            label = mode + (f", block {m} rows ({m * dims * 4 / 2 ** 20:.1f} MiB)" if m else "")
            print(f"{label}: copy into the pass buffer {1e3 * setup:.0f} ms CPU (first use, page faults included)")
            lg = row("  logits pass  linear(W, z)", nbytes, lambda: feats.logits(w, b))
            gr = row("  gradient pass  r @ z", nbytes, lambda: feats.residual_grad(r))
            per_iter[label] = lg + gr
            if feats.block is not None:
                row("  conversion alone (copy_ per block)", nbytes, lambda: [None for _ in feats._blocks()])
                blk = feats.block.normal_()
                nb = -(-rows // len(blk))
                row("  float32 products alone, one block in cache: logits", 0,
                    lambda: [F.linear(w, blk) for _ in range(nb)])
                out = torch.zeros(k, dims)
                row("  float32 products alone, one block in cache: grad", 0,
                    lambda: [out.addmm_(r[:, :len(blk)], blk) for _ in range(nb)])
                if m == block_rows[0]:  # the alternative: a fresh float32 block per step (.float())
                    z16, mm = feats.rows, len(blk)

                    def logits_float():
                        out = torch.empty(k, rows)
                        for i in range(0, rows, mm):
                            out[:, i:i + mm] = F.linear(w, z16[i:i + mm].float())
                        return out

                    def grad_float():
                        out = torch.zeros(k, dims)
                        for i in range(0, rows, mm):
                            out.addmm_(r[:, i:i + mm], z16[i:i + mm].float())
                        return out
                    row("  alternative .float() per block: logits", nbytes, logits_float)
                    row("  alternative .float() per block: grad", nbytes, grad_float)
                    row("  alternative torch float16 linear(W16, z16)", nbytes,
                        lambda: F.linear(w.half(), z16).float())
                    sub = z16[:rows // 10]  # emulated float16 mm: seconds per pass, timed on a tenth
                    c = row("  alternative torch float16 mm(r16, z16), N/10 rows", nbytes / 10,
                            lambda: torch.mm(r[:, :len(sub)].half(), sub), n_reps=1)
                    print(f"    (x10 for the whole pass: {1e4 * c:.0f} ms CPU)")
            del feats
    release_workspace()
    print("\nper L-BFGS iteration (logits + gradient pass, CPU min):")
    base = per_iter.get("fp32")
    for label, t in per_iter.items():
        print(f"  {label:52} {1e3 * t:7.1f} ms" + (f"  ({base / t:.2f}x fp32's speed)" if base else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default=None,
                    help="zoo name or model directory (default: rotation-alexnet, untrained)")
    ap.add_argument("--untrained", action="store_true", help="random init of MODEL's architecture (torch seed --seed)")
    ap.add_argument("--train-limit", type=int, default=None, help="first N training images (default: all 60000)")
    ap.add_argument("--test-limit", type=int, default=None, help="first N test images (default: all 10000)")
    ap.add_argument("--layer", action="append", default=None, help="tap(s) to run (default: all)")
    ap.add_argument("--sklearn-layer", action="append", default=None,
                    help="tap(s) scikit-learn also fits (default: every tap run; 'none' for none)")
    ap.add_argument("--sklearn-max-iter", type=int, default=probe.LBFGSConfig().max_iter,
                    help="scikit-learn's iteration budget (default: the fast solver's, %(default)s)")
    ap.add_argument("--pass-dtype", choices=PASS_MODES, action="append", default=None,
                    help="the fast solver's passes over the features (default auto: bf16 where native, else "
                         "fp16-storage); repeat to run several modes side by side")
    ap.add_argument("--time-passes", action="store_true",
                    help="time one pass of each mode on a random matrix instead (no model, no solver)")
    ap.add_argument("--pass-rows", type=int, default=60000, help="--time-passes: rows (default 60000)")
    ap.add_argument("--pass-dims", type=int, default=4096, help="--time-passes: columns (default 4096)")
    ap.add_argument("--block-rows", type=int, action="append", default=None,
                    help="--time-passes: fp16-storage block sizes (default the solver's, 128, and 256, 512, 1024)")
    ap.add_argument("--pass-reps", type=int, default=7, help="--time-passes: timed runs per pass (default 7)")
    ap.add_argument("--threads", type=int, default=1, help="threads for every solver (default 1)")
    ap.add_argument("--cache-dir", default=None, help="feature cache (default $SSLZOO_CACHE or ~/.cache/sslzoo/features)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    modes = list(dict.fromkeys(args.pass_dtype or ["auto"]))
    if args.time_passes:
        torch.set_num_threads(args.threads)
        timed = list(dict.fromkeys(resolved_pass_dtype(m, "cpu") for m in (args.pass_dtype or
                                                                           ["fp32", "bf16", "fp16-storage"])))
        default_block = probe.LBFGSConfig().block_rows
        time_passes(args.pass_rows, args.pass_dims, timed,
                    args.block_rows or [default_block] + [m for m in (128, 256, 512, 1024) if m != default_block],
                    args.pass_reps, args.seed)
        return

    name = args.model or "rotation-alexnet"
    untrained = args.untrained or args.model is None
    with torch.random.fork_rng():
        torch.manual_seed(args.seed)
        model = zoo.load(name, pretrained=not untrained)
    train = load_dataset("fashion-mnist", "train").subset(args.train_limit)
    test = load_dataset("fashion-mnist", "test").subset(args.test_limit)
    layers = tuple(args.layer or model.layers)
    sk_layers = set(layers if args.sklearn_layer is None else
                    [k for k in args.sklearn_layer if k != "none"])
    unknown = sk_layers - set(layers)
    if unknown:
        ap.error(f"--sklearn-layer {', '.join(sorted(unknown))}: not among the taps run ({', '.join(layers)})")
    wd = probe.LBFGSConfig().weight_decay
    assert wd == probe.SGDProtocol().weight_decay

    t = time.perf_counter()
    xs_train = probe.cached_features(model, train, layers, cache_dir=args.cache_dir)
    xs_test = probe.cached_features(model, test, layers, cache_dir=args.cache_dir)
    feature_s = time.perf_counter() - t
    torch.set_num_threads(args.threads)
    import sklearn
    print(f"model {model.name}{' (untrained, seed %d)' % args.seed if untrained else ''}; "
          f"{len(train)} train / {len(test)} test images; features {feature_s:.1f} s "
          f"({probe.STATS['cache_hits']} cached, {probe.STATS['extracted_images']} images extracted); "
          f"torch {torch.__version__}, scikit-learn {sklearn.__version__}, {torch.get_num_threads()} thread(s); "
          f"{machine('cpu')}")

    def fast(z, mode):
        return probe.fit("fast", z, train.labels, len(train.classes), seed=args.seed, pass_dtype=mode)

    # One-time cost of a process's first fast fit per mode (with bf16 / fp16-storage passes their 0.5 GB
    # buffer, shared by the two and reused by every later tap: on a machine whose page cache fills
    # memory, first touching it means evicting cache), shown apart and added to that mode's totals.
    z0 = probe.standardise_(xs_train[layers[0]].clone(), *probe.standardiser(xs_train[layers[0]]))
    used, one_time, one_time_cpu = {}, {}, {}
    for mode in modes:
        first = fast(z0, mode)
        second = fast(z0, mode)
        used[mode] = first.info["pass_dtype"]
        one_time[mode] = max(0.0, first.seconds - second.seconds)
        one_time_cpu[mode] = max(0.0, first.cpu_seconds - second.cpu_seconds)
        print(f"fast solver --pass-dtype {mode}: passes in {used[mode]}; on {layers[0]}: first fit in this "
              f"process {first.seconds:.2f} s, second {second.seconds:.2f} s; the one-time {one_time[mode]:.2f} s "
              f"is added to its totals below")
    del z0
    print()

    header = (f"{'layer':6} {'dims':>5} {'pass':>12} | {'seed':>6} {'fast':>6} {'sklearn':>7} | {'|f-s|':>5} {'|f-sk|':>6} | "
              f"{'seed s':>7} {'fast s':>6} {'skl s':>7} | {'s/f':>5} {'sk/f':>5} | {'s/f cpu':>7} {'sk/f cpu':>8} | "
              f"{'seed obj':>8} {'fast obj':>8} {'skl obj':>8} | {'f it':>4} {'sk it':>5}")
    print("top-1 (%) per solver, |fast - other| (pt), fit seconds (wall), speed ratios other/fast (wall, CPU), "
          "objectives, iterations (L-BFGS); one row per tap and fast-solver pass mode (the seed and "
          "scikit-learn columns are the same fits on each of a tap's rows)")
    print(header)
    print("-" * len(header))
    wall = {"seed": 0.0, "sklearn": 0.0, **{("fast", m): 0.0 for m in modes}, **{("fast@sklearn", m): 0.0 for m in modes}}
    cpu = dict(wall)
    diffs = {m: {"seed": [], "sklearn": []} for m in modes}
    sk_ratios = {m: [] for m in modes}
    sk_cpu_ratios = {m: [] for m in modes}
    sk_capped = False
    for layer in layers:
        x_train, x_test = xs_train.pop(layer), xs_test.pop(layer)
        mean, std = probe.standardiser(x_train)
        z = probe.standardise_(x_train, mean, std)
        channels, grid = probe.layer_grid(model, layer)
        fits = {"seed": probe.fit("seed", z, train.labels, len(train.classes), seed=args.seed)}
        for mode in modes:
            fits[("fast", mode)] = fast(z, mode)
        if layer in sk_layers:
            fits["sklearn"] = fit_sklearn(z, train.labels, wd, args.sklearn_max_iter, args.threads)
        acc = {}
        for solver, fitted in fits.items():
            head = probe.make_head(fitted, mean, std, channels, grid)  # float32: the solvers as fitted
            acc[solver] = 100 * probe.head_accuracy(head, x_test, test.labels)
            wall[solver] += fitted.seconds
            cpu[solver] += fitted.cpu_seconds
        s, k = fits["seed"], fits.get("sklearn")
        for mode in modes:
            f = fits[("fast", mode)]
            diffs[mode]["seed"].append(abs(acc[("fast", mode)] - acc["seed"]))
            row_sk = {"acc": "", "diff": "", "s": "", "r": "", "rc": "", "obj": "", "it": ""}
            if k is not None:
                diffs[mode]["sklearn"].append(abs(acc[("fast", mode)] - acc["sklearn"]))
                sk_ratios[mode].append(k.seconds / f.seconds)
                sk_cpu_ratios[mode].append(k.cpu_seconds / f.cpu_seconds)
                wall[("fast@sklearn", mode)] += f.seconds
                cpu[("fast@sklearn", mode)] += f.cpu_seconds
                sk_capped |= k.iterations >= args.sklearn_max_iter
                row_sk = {"acc": f"{acc['sklearn']:.2f}", "diff": f"{diffs[mode]['sklearn'][-1]:.2f}",
                          "s": f"{k.seconds:.2f}", "r": f"{k.seconds / f.seconds:.1f}",
                          "rc": f"{k.cpu_seconds / f.cpu_seconds:.1f}", "obj": f"{k.objective:.4f}",
                          "it": f"{k.iterations}{'*' if k.iterations >= args.sklearn_max_iter else ''}"}
            print(f"{layer:6} {z.shape[1]:5d} {f.info['pass_dtype']:>12} | {acc['seed']:6.2f} {acc[('fast', mode)]:6.2f} "
                  f"{row_sk['acc']:>7} | {diffs[mode]['seed'][-1]:5.2f} {row_sk['diff']:>6} | "
                  f"{s.seconds:7.2f} {f.seconds:6.2f} {row_sk['s']:>7} | {s.seconds / f.seconds:5.1f} {row_sk['r']:>5} | "
                  f"{s.cpu_seconds / f.cpu_seconds:7.1f} {row_sk['rc']:>8} | "
                  f"{s.objective:8.4f} {f.objective:8.4f} {row_sk['obj']:>8} | {f.iterations:4d} {row_sk['it']:>5}",
                  flush=True)
        del x_train, x_test, z

    if sk_capped:
        print(f"* scikit-learn stopped at --sklearn-max-iter {args.sklearn_max_iter} before its tolerance")
    sk = [k for k in layers if k in sk_layers]
    print(f"\ntotal over {', '.join(layers)}: seed SGD {wall['seed']:.1f} s wall / {cpu['seed']:.1f} s CPU" +
          (f"; scikit-learn on {', '.join(sk)}: {wall['sklearn']:.1f} s wall / {cpu['sklearn']:.1f} s CPU" if sk else ""))
    for mode in modes:
        fw, fc = wall[("fast", mode)] + one_time[mode], cpu[("fast", mode)] + one_time_cpu[mode]
        print(f"\n--pass-dtype {mode} ({used[mode]} passes): fast L-BFGS {fw:.1f} s wall / {fc:.1f} s CPU")
        for what, r in (("wall-clock", wall["seed"] / fw), ("CPU-time", cpu["seed"] / fc)):
            print(f"  fast vs seed {what} speed ratio {r:.1f}x (target >= {TARGET_SEED_RATIO:.0f}x: "
                  f"{'met' if r >= TARGET_SEED_RATIO else 'NOT met'})")
        dmax = max(diffs[mode]["seed"])
        print(f"  fast vs seed max |top-1 difference| {dmax:.2f} pt (target <= {TARGET_DIFF_PT} pt: "
              f"{'met' if dmax <= TARGET_DIFF_PT else 'NOT met'})")
        if sk_ratios[mode]:
            first_in = layers[0] in sk_layers
            total_f = wall[("fast@sklearn", mode)] + (one_time[mode] if first_in else 0.0)
            print(f"  scikit-learn {wall['sklearn']:.1f} s wall against fast {total_f:.1f} s over {', '.join(sk)} "
                  f"({wall['sklearn'] / total_f:.1f}x, one-time cost included)")
            for what, rs in (("wall-clock", sk_ratios[mode]), ("CPU-time", sk_cpu_ratios[mode])):
                print(f"  fast vs scikit-learn {what} speed ratio per tap: {', '.join(f'{x:.1f}' for x in rs)}; "
                      f"min {min(rs):.1f}x, median {sorted(rs)[len(rs) // 2]:.1f}x (target >= "
                      f"{TARGET_SKLEARN_RATIO:.0f}x on every tap: {'met' if min(rs) >= TARGET_SKLEARN_RATIO else 'NOT met'})")
            dmax = max(diffs[mode]["sklearn"])
            print(f"  fast vs scikit-learn max |top-1 difference| {dmax:.2f} pt (target <= {TARGET_DIFF_PT} pt: "
                  f"{'met' if dmax <= TARGET_DIFF_PT else 'NOT met'})")


if __name__ == "__main__":
    main()
