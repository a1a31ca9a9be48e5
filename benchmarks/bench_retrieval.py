"""Retrieval precision@k on the Fashion-MNIST test split: each shipped model's taps against the same
architecture randomly initialised and against raw pixels, measured in one run, one table.

    .venv/bin/python benchmarks/bench_retrieval.py --out retrieval.json          # every shipped model, 10,000 queries
    .venv/bin/python benchmarks/bench_retrieval.py --models rotation-alexnet --limit 2000 --out r.json
    .venv/bin/python benchmarks/bench_retrieval.py --device cuda --out retrieval.json

Precision@k (default k = 8, the demo's Retrieval tab): each test image queries the other N - 1
(itself left out) by cosine similarity of its global-average-pooled tap (``zoo._retrieval``, the
tab's own index), and scores the share of its k nearest with its label; the mean over the N
queries is the figure. Rows:

- trained: the zoo entry's shipped weights (zoo/weights), every tap; the table shows the best tap
  and all of them;
- random init: the same architecture and input (``zoo.create``, torch seed 0), every tap, its best;
- raw pixels: the image at the model's input, area-averaged to at most 32 x 32 (``PIXELS``).

Indexes come from the retrieval cache (``$SSLZOO_RETRIEVAL_CACHE``, or ``--cache-dir``) when they
are there; "build s" says how long the indexes this run had to compute took ("cached": none).
The per-tap figures, the build times and the machine go to ``--out`` (JSON, written atomically).
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from sslzoo import zoo
from sslzoo.training._precision import machine
from sslzoo.zoo import _retrieval as rt
from sslzoo.zoo._extract import _device
from sslzoo.zoo._fmnist import load_test
from sslzoo.zoo._hub import atomic_write_text
from sslzoo.zoo._registry import lookup


def shipped() -> list[str]:
    """Zoo entries whose default weights ship inside the package (zoo/weights)."""
    return [n for n in zoo.list_models() if lookup(n)[1].source.startswith("package:")]


def measure(m, which: str, wanted, gallery, k: int, cache_dir, device) -> tuple[dict[str, float], float]:
    """({tap: precision@k}, seconds spent building indexes) of model ``m`` (``which``: trained,
    random init) at the taps ``wanted``."""
    out, built = {}, 0.0
    for tap in wanted:
        idx = rt.index(m, tap, gallery, cache_dir=cache_dir, device=device)
        built += idx.seconds if idx.source == "built" else 0.0
        out[tap] = float(rt.precision_at_k(idx, k, device=device).mean())
        print(f"  {m.name:32s} {which:11s} {tap:7s} P@{k} {100 * out[tap]:5.1f} %  ({idx.source}, {idx.seconds:.1f} s)",
              flush=True)
    return out, built


def best(scores: dict[str, float]) -> tuple[str, float]:
    return max(scores.items(), key=lambda kv: kv[1])


def table(results: dict, k: int) -> str:
    """The markdown table: one row per model."""
    pct = lambda p: f"{100 * p:.1f}"  # noqa: E731
    secs = lambda s: f"{s:.1f}" if s else "cached"  # noqa: E731
    head = (f"| model | input | trained P@{k} by tap (conv1 … last) | best tap | trained | random init (its best tap) "
            f"| raw pixels | trained − random | trained − pixels | build s (trained / random / pixels) |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for name, r in results.items():
        tap, p = best(r["trained"])
        rtap, rp = best(r["random_init"])
        c, h, w = r["input"]
        b = r["build_seconds"]
        lines.append(f"| {name} | {h} px, {c} ch | {' / '.join(pct(v) for v in r['trained'].values())} | {tap} | "
                     f"**{pct(p)}** | {pct(rp)} ({rtap}) | {pct(r['pixels'])} | {100 * (p - rp):+.1f} | "
                     f"{100 * (p - r['pixels']):+.1f} | "
                     f"{secs(b['trained'])} / {secs(b['random_init'])} / {secs(b['pixels'])} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=None,
                    help="comma-separated zoo names or model dirs (default: every shipped model)")
    ap.add_argument("--limit", type=int, default=None, help="first N test images (default: all 10,000)")
    ap.add_argument("--k", type=int, default=8, help="neighbours scored per query (default %(default)s)")
    ap.add_argument("--device", default="cpu", help="where indexes are built and searched (default cpu)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default %(default)s)")
    ap.add_argument("--cache-dir", default=None, help="retrieval cache (default $SSLZOO_RETRIEVAL_CACHE or "
                                                      "~/.cache/sslzoo/retrieval)")
    ap.add_argument("--out", required=True, help="JSON file for the per-tap figures")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    _device(args.device)  # ZooError now, not a CUDA traceback later
    if args.k < 1:
        raise zoo.ZooError(f"--k must be at least 1, got {args.k}")
    names = [n.strip() for n in args.models.split(",") if n.strip()] if args.models else shipped()
    gallery = load_test(args.limit)
    t0 = time.perf_counter()
    print(f"{len(gallery):,} queries ({gallery.name}), each against the other {len(gallery) - 1:,}; k = {args.k}; "
          f"{args.threads} thread(s), {machine(torch.device(args.device))}, torch {torch.__version__}", flush=True)
    results = {}
    for name in names:
        trained = zoo.load(name, device=args.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            random = zoo.create(trained.name).to(args.device).eval()
        per_tap, b_trained = measure(trained, "trained", trained.layers, gallery, args.k, args.cache_dir, args.device)
        per_tap_random, b_random = measure(random, "random init", random.layers, gallery, args.k, args.cache_dir,
                                           args.device)
        pixels, b_pixels = measure(trained, "-", [rt.PIXELS], gallery, args.k, args.cache_dir, args.device)
        results[name] = {"model": trained.name, "input": list(trained.data_config["input_size"]), "trained": per_tap,
                         "random_init": per_tap_random, "pixels": pixels[rt.PIXELS], "best_tap": best(per_tap)[0],
                         "build_seconds": {"trained": b_trained, "random_init": b_random, "pixels": b_pixels}}
        rt.clear_memory()  # bounded memory across models: their indexes are on disk
    seconds = time.perf_counter() - t0
    print()
    print(table(results, args.k))
    print(f"\n{seconds:.0f} s in all")
    report = {"k": args.k, "gallery": gallery.name, "queries": len(gallery), "threads": args.threads,
              "device": args.device, "machine": machine(torch.device(args.device)), "torch": torch.__version__,
              "seconds": round(seconds, 1), "random_init": "zoo.create, torch.manual_seed(0)",
              "pixels": f"model input area-averaged to <= {rt.PIXEL_GRID} px a side", "models": results}
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"per-tap figures: {args.out}")


if __name__ == "__main__":
    try:
        main()
    except zoo.ZooError as e:  # unknown model, no Fashion-MNIST, bad --limit / --k / --device: one line
        raise SystemExit(f"error: {e}") from None
