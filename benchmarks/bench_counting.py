"""Counting's views for a batch on tensors against per-sample PIL, same images, one run.

    python benchmarks/bench_counting.py [--threads 2] [--device cpu] [--batch 128] [--repeats 7]

Tensor side: the plug-in's real ``make_batch`` (``training/pretexts/counting.py``): uint8 28-px
images -> normalised -> D(x) and the four tiles at 96 px, B x 5 x 1 x 96 x 96, batched matrix
products on the device (``zoo.pretexts.counting.make_views``); in float32, and in bf16 where the
device multiplies bf16 natively (the dtype the training loop asks for there).
Per-sample side, as the authors' data layer and a typical port do it, image by image on the CPU:
PIL resize to 192 px, a resize method drawn, D = resize to 96 px by it, four 96-px crops, each view
to a normalised tensor, stacked; once with torchvision's ``to_tensor`` + ``normalize`` (the usual
port) and once with numpy (a lean loop). Same images, same thread count, best of ``--repeats``,
alternating; only ratios measured in this run are results (target >= 20x against the faster
per-sample way). Also printed: the largest difference between the two sides' views for each
method (pixel units /255; PIL rounds to 8 bits at 192 px and again at 96 px).
"""
from __future__ import annotations

import argparse
import random

import numpy as np
import torch
from PIL import Image

from _timing import best_time

PIL_METHODS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
               "area": Image.Resampling.BOX, "nearest": Image.Resampling.NEAREST}


def pil_views(images: np.ndarray, side: int, mean: float, std: float, methods, rng: random.Random,
              torchvision: bool) -> torch.Tensor:
    """Per sample: B x 28 x 28 uint8 -> B x 5 x 1 x side x side normalised (D, then the tiles row-major)."""
    if torchvision:
        import torchvision.transforms.functional as TF
    out = []
    for img in images:
        big = Image.fromarray(img).resize((2 * side, 2 * side), Image.Resampling.BILINEAR)
        method = methods[rng.randrange(len(methods))]
        views = [big.resize((side, side), PIL_METHODS[method])]
        views += [big.crop((j * side, i * side, (j + 1) * side, (i + 1) * side)) for i in (0, 1) for j in (0, 1)]
        if torchvision:
            out.append(torch.stack([TF.normalize(TF.to_tensor(v), [mean], [std]) for v in views]))
        else:
            arr = np.stack([np.asarray(v, dtype=np.float32) for v in views])[:, None]  # 5 x 1 x side x side
            out.append(torch.from_numpy((arr / 255 - mean) / std))
    return torch.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (both sides)")
    ap.add_argument("--device", default="cpu", help="where the tensor side runs (cpu, cuda)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    if args.batch < 2 or args.repeats < 1 or args.threads < 1:
        ap.error("--batch must be >= 2, --repeats and --threads >= 1")
    torch.set_num_threads(args.threads)

    from sslzoo import zoo
    from sslzoo.training._precision import machine, native_bf16
    from sslzoo.training.pretexts import Batch
    from sslzoo.training.pretexts.counting import Counting
    from sslzoo.zoo.pretexts import counting as ct

    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda asked for, but no CUDA device is available")
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    cfg = dict(zoo.lookup("counting-alexnet")[1].config["data_config"])
    side, mean, std = cfg["input_size"][1], cfg["mean"][0], cfg["std"][0]
    try:
        from sslzoo.training.data import load_fashion_mnist

        images = load_fashion_mnist("train").images[:args.batch]
        what = "Fashion-MNIST training images"
    except Exception:  # noqa: BLE001  (not installed: seeded noise of the same size)
        images = torch.randint(0, 256, (args.batch, 1, 28, 28), dtype=torch.uint8,
                               generator=torch.Generator().manual_seed(0))
        what = "seeded random 28-px images (Fashion-MNIST not installed)"
    on_device = images.to(dev)
    plugin = Counting().train()
    methods = plugin.methods
    print(f"torch {torch.__version__}, {args.threads} threads, tensor side on {dev} ({machine(dev)}); {args.batch} "
          f"{what} -> 5 views of {side} px each; best of {args.repeats}")

    def tensor_side(dtype):
        gen = torch.Generator().manual_seed(0)
        return lambda: plugin.make_batch(Batch.from_uint8(on_device, torch.arange(len(on_device)), cfg), gen, dtype)[0]

    flat = images[:, 0].numpy()
    rng = random.Random(0)
    per_sample = {"torchvision": lambda: pil_views(flat, side, mean, std, methods, rng, True),
                  "numpy": lambda: pil_views(flat, side, mean, std, methods, rng, False)}
    tensor = {"float32": tensor_side(None)}
    if native_bf16(dev):
        tensor["bf16"] = tensor_side(torch.bfloat16)
    for fn in (*per_sample.values(), *tensor.values()):  # warm-up (caches, allocator, kernels)
        fn()
        sync()
    times = {name: float("inf") for name in (*per_sample, *tensor)}
    for _ in range(args.repeats):  # alternate, so both sides see the same machine load
        for name, fn in per_sample.items():
            times[name] = min(times[name], best_time(fn, 1))
        for name, fn in tensor.items():
            times[name] = min(times[name], best_time(fn, 1, sync))

    for name in per_sample:
        print(f"per-sample PIL + {name:<11} {1e3 * times[name]:8.2f} ms")
    for name in tensor:
        print(f"tensors, {name:<18} {1e3 * times[name]:8.2f} ms")
    baseline = min(per_sample, key=times.get)
    for name in tensor:
        ratios = ", ".join(f"{times[p] / times[name]:.1f}x vs PIL + {p}" for p in per_sample)
        print(f"ratio, tensors in {name}: {ratios}  (target >= 20x vs the faster, PIL + {baseline})")

    # same images, same method: how far apart the two sides' views are, in pixel units /255
    x = torch.from_numpy(flat[:8].copy())[:, None]
    for method in methods:
        ours = ct.make_views((x.float() / 255 - mean) / std, (side, side), method)
        theirs = pil_views(flat[:8], side, mean, std, (method,), random.Random(0), False)
        print(f"max |difference| {method:<8}: D {255 * std * float((ours[:, 0] - theirs[:, 0]).abs().max()):.2f}/255, "
              f"tiles {255 * std * float((ours[:, 1:] - theirs[:, 1:]).abs().max()):.2f}/255")


if __name__ == "__main__":
    main()
