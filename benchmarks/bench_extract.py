"""Benchmark of ``sslzoo extract``: is the model the bottleneck, and is memory flat?

(a) Throughput: ``extract`` on N Fashion-MNIST test images written as PNG files (decode, resize,
    normalise, forward, pool, chunk files, final file) against the bare model forward on the same
    images already decoded and normalised, same batch size, in the same process, the two
    interleaved ``--repeats`` times. Target: extract / bare >= 0.9.
(b) Memory: peak RSS of ``python -m sslzoo extract`` on N and on 10N inputs, each in a fresh
    subprocess whose parent reads ``getrusage(RUSAGE_CHILDREN).ru_maxrss``. Target: ratio <= 1.1.

    .venv/bin/python benchmarks/bench_extract.py [--n 2000] [--rss-n 1000] [--threads 1] [--workers 2]
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# Child of part (b): run the command given after it and print its peak RSS in KiB.
_MEASURE = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); "
            "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="rotation-alexnet",
                    help="zoo name or model dir (untrained weights of rotation-alexnet when it has none)")
    ap.add_argument("--n", type=int, default=2000, help="images for the throughput comparison")
    ap.add_argument("--rss-n", type=int, default=1000, help="N for the memory comparison (N and 10N inputs)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved (bare, extract) pairs")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads, 0: torch's default (one per CPU). Default 1: on a shared box "
                         "spinning OpenMP threads that lose their CPU make a forward several times slower")
    ap.add_argument("--workers", type=int, default=None, help="decode threads of extract (default: its own)")
    ap.add_argument("--skip-rss", action="store_true")
    return ap.parse_args()


def _model_dir(name: str, tmp: Path) -> tuple[str, str]:
    """A model the CLI can load: ``name`` itself, or untrained weights saved under ``tmp``."""
    from sslzoo import zoo

    try:
        zoo.resolve(name)
        return name, "pretrained"
    except zoo.ZooError:
        directory = tmp / "model"
        zoo.save_pretrained(zoo.load("rotation-alexnet", pretrained=False), directory, card="benchmark model\n")
        return str(directory), "untrained (no pretrained weights installed)"


def _write_pngs(n: int, directory: Path) -> list[Path]:
    from PIL import Image
    from sslzoo.training.data import load_fashion_mnist

    images = load_fashion_mnist("test").images  # 10000 x 1 x 28 x 28 uint8
    directory.mkdir(parents=True)
    paths = []
    for i in range(n):
        path = directory / f"{i:06d}.png"
        Image.fromarray(images[i % len(images), 0].numpy(), "L").save(path)
        paths.append(path)
    return paths


def _linked(sources: list[Path], n: int, directory: Path) -> Path:
    """``directory`` holding n hard links cycling over ``sources`` (distinct names, cheap)."""
    directory.mkdir(parents=True)
    for i in range(n):
        os.link(sources[i % len(sources)], directory / f"{i:07d}.png")
    return directory


def _cpu() -> float:
    """CPU seconds of this process, all threads."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _available_cores(seconds: float = 1.0) -> float:
    """CPU this process actually gets with one busy thread per CPU (other jobs, cgroups and
    autogroup scheduling share the machine): CPU seconds per wall second."""
    import numpy as np

    a = np.random.default_rng(0).random((1000, 1000))

    def spin():
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            np.sort(a, axis=1)  # releases the GIL

    threads = [threading.Thread(target=spin) for _ in range(os.cpu_count() or 1)]
    t0, c0 = time.perf_counter(), _cpu()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return (_cpu() - c0) / (time.perf_counter() - t0)


def _bare(model, x, batch_size: int) -> tuple[float, float]:
    """(images/s, CPU ms per image) of model forward + global average pool on normalised
    N x C x H x W tensors."""
    import torch

    t0, c0 = time.perf_counter(), _cpu()
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            model.features(x[i:i + batch_size], ("conv5",))["conv5"].mean((2, 3))
    return len(x) / (time.perf_counter() - t0), (_cpu() - c0) / len(x) * 1e3


def throughput(args, model_ref: str, paths: list[Path], tmp: Path) -> float:
    import torch
    from sslzoo import zoo
    from sslzoo.zoo._extract import extract
    from sslzoo.zoo._images import open_image
    from sslzoo.zoo._transforms import normalize, to_uint8_tensor

    model = zoo.load(model_ref)
    cfg = model.data_config
    x = normalize(torch.stack([to_uint8_tensor(open_image(p), cfg) for p in paths]), cfg)  # N x C x H x W
    _bare(model, x[: 2 * args.batch_size], args.batch_size)  # warm-up
    print(f"\n(a) throughput: {len(paths)} PNG files, batch {args.batch_size}, torch threads "
          f"{torch.get_num_threads()}, decode workers {args.workers or 'default'}")
    print(f"{'repeat':>6} | {'bare img/s':>10} | {'extract img/s':>13} | {'ratio':>5} | "
          f"{'CPU ms/img bare':>15} | {'CPU ms/img extract':>18} | {'decode wait':>11}")
    ratios = []
    for r in range(args.repeats):
        bare, bare_cpu = _bare(model, x, args.batch_size)
        c0 = _cpu()
        res = extract(model, paths, batch_size=args.batch_size, out=tmp / "bench.safetensors", workers=args.workers)
        ext_cpu = (_cpu() - c0) / len(paths) * 1e3
        assert res.n_done == len(paths)
        ext = res.n_computed / res.seconds
        ratios.append(ext / bare)
        print(f"{r + 1:>6} | {bare:>10.0f} | {ext:>13.0f} | {ext / bare:>5.2f} | {bare_cpu:>15.3f} | "
              f"{ext_cpu:>18.3f} | {100 * res.decode_wait / res.seconds:>10.1f}%")
    ratio = statistics.median(ratios)
    print(f"median ratio extract / bare: {ratio:.2f} (target >= 0.9) -> {'OK' if ratio >= 0.9 else 'MISSED'}")
    print("decode wait: share of extract's wall time the model loop sat idle waiting for decoded images")
    return ratio


def peak_rss(args, model_ref: str, pngs: list[Path], tmp: Path) -> float:
    sizes = [args.rss_n, 10 * args.rss_n]
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}))
    print(f"\n(b) peak RSS of `python -m sslzoo extract` (fresh subprocess per size, batch {args.batch_size})")
    print(f"{'inputs':>7} | {'peak RSS MiB':>12} | {'seconds':>7}")
    peaks = []
    for n in sizes:
        directory = _linked(pngs, n, tmp / f"rss-{n}")
        cmd = [sys.executable, "-m", "sslzoo", "extract", model_ref, str(directory), "--out", str(tmp / f"rss-{n}.safetensors"),
               "--batch-size", str(args.batch_size), "--no-progress"]
        t0 = time.perf_counter()
        rc, kib = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], env=env, capture_output=True, text=True,
                                 check=True).stdout.split()
        if rc != "0":
            raise SystemExit(f"extract on {n} inputs failed with exit code {rc}")
        peaks.append(int(kib) / 1024)
        print(f"{n:>7} | {peaks[-1]:>12.1f} | {time.perf_counter() - t0:>7.1f}")
    ratio = peaks[1] / peaks[0]
    print(f"ratio 10N / N: {ratio:.3f} (target <= 1.1) -> {'OK' if ratio <= 1.1 else 'MISSED'}")
    return ratio


def main() -> None:
    args = _args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp:
        tmp = Path(tmp)
        model_ref, kind = _model_dir(args.model, tmp)
        pngs = _write_pngs(max(args.n, args.rss_n), tmp / "png")
        print(f"model {model_ref} ({kind}); torch {torch.__version__}")
        print(f"{os.cpu_count()} CPUs; CPU this process gets with all of them busy: {_available_cores():.2f} cores")
        throughput(args, model_ref, pngs[: args.n], tmp)
        if not args.skip_rss:
            peak_rss(args, model_ref, pngs, tmp)


if __name__ == "__main__":
    main()
