"""Patch pretexts: batch construction images/s, batched tensor ops vs per-sample PIL (target >= 20x).

All sides start from the same uint8 28x28 Fashion-MNIST images and end with the pretext's
(inputs, targets) tensors, built the same way:
  tensor:  the loop's ``pretext_input`` (normalise; the patch plug-ins take the 28-px source) + the
           plug-in's ``make_batch`` (per tile two small batched matmuls = the bilinear resize to the
           228-px grid restricted to the tile, per-tile normalisation from the factors, all batched),
           tiles made in the dtype training computes in on this device (``--precision auto``: bf16
           where the CPU/GPU has it, as ``sslzoo train`` does, else fp32);
  fp32:    the same, tiles in float32 (what the per-sample loaders make), shown so the ratio is not
           only the dtype's;
  authors: the authors' loaders as written (bbrattoli/JigsawPuzzlePytorch's JigsawImageLoader),
           image by image: PIL resize to the 228-px grid, per tile a PIL crop of its cell, torchvision
           RandomCrop(tile), ToTensor, the tile's mean/std, transforms.Normalize; shuffle (jigsaw)
           or pick the neighbour (relative patch); torch.stack. (No colour jitter: gray input.)
  lean:    the same cuts per sample with PIL crops and numpy normalisation instead of torchvision
           transforms (faster than the authors' code; shown so the ratio is not only against it).
All sides resize once, 28 -> 228 bilinear. Timed in the same run, alternating, best of --repeats. Small tensor ops are erratic when the
machine is busy, so it runs with --threads 1 by default (the same for both sides).

    python benchmarks/bench_patches.py [--batch-size 128] [--repeats 7] [--threads 1] [--device cpu]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from sslzoo import zoo
from sslzoo.training.data import load_fashion_mnist
from sslzoo.training.loop import _use_bf16, input_dtype
from sslzoo.training.pretexts import Batch, get_pretext
from sslzoo.zoo.pretexts import relpatch
from sslzoo.zoo.pretexts.patches import CELL, TILE


def _pil_tile(grid: Image.Image, cell: int, rng: np.random.Generator) -> np.ndarray:
    """One jittered tile of grid cell ``cell``, normalised per channel in numpy: C x t x t float32."""
    r, c = divmod(cell, 3)
    dy, dx = rng.integers(0, CELL - TILE + 1, 2)
    top, left = r * CELL + dy, c * CELL + dx
    arr = np.asarray(grid.crop((left, top, left + TILE, top + TILE)), dtype=np.float32) / 255
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    mean, std = arr.mean(axis=(1, 2), keepdims=True), arr.std(axis=(1, 2), keepdims=True)
    std[std == 0] = 1
    return (arr - mean) / std


def _authors_tile(grid: Image.Image, cell: int, crop: T.RandomCrop) -> torch.Tensor:
    """One tile the way JigsawImageLoader makes it: cell crop -> RandomCrop -> ToTensor -> Normalize(mean, std)."""
    r, c = divmod(cell, 3)
    tile = T.functional.to_tensor(crop(grid.crop((c * CELL, r * CELL, (c + 1) * CELL, (r + 1) * CELL))))
    m, s = tile.mean().item(), tile.std().item()
    return T.Normalize(mean=[m] * tile.shape[0], std=[s if s > 0 else 1.0] * tile.shape[0])(tile)


def authors_jigsaw(images: np.ndarray, perms: np.ndarray, rng: np.random.Generator):
    """Jigsaw batch with the authors' per-sample, per-tile torchvision loader: (N x 9 x 1 x t x t, N)."""
    crop, xs, ys = T.RandomCrop(TILE), [], []
    for img in images:
        grid = Image.fromarray(img).resize((3 * CELL, 3 * CELL), Image.Resampling.BILINEAR)
        tiles = [_authors_tile(grid, k, crop) for k in range(9)]
        index = int(rng.integers(len(perms)))
        xs.append(torch.stack([tiles[k] for k in perms[index]]))
        ys.append(index)
    return torch.stack(xs), torch.tensor(ys)


def authors_relpatch(images: np.ndarray, rng: np.random.Generator):
    """Relative-patch batch, each patch made as ``_authors_tile``: (N x 2 x 1 x t x t, N)."""
    crop, xs, ys = T.RandomCrop(TILE), [], []
    for img in images:
        grid = Image.fromarray(img).resize((3 * CELL, 3 * CELL), Image.Resampling.BILINEAR)
        pos = int(rng.integers(8))
        xs.append(torch.stack([_authors_tile(grid, relpatch.CENTRE, crop),
                               _authors_tile(grid, relpatch.NEIGHBOURS[pos], crop)]))
        ys.append(pos)
    return torch.stack(xs), torch.tensor(ys)


def pil_jigsaw(images: np.ndarray, perms: np.ndarray, rng: np.random.Generator):
    """Per-sample jigsaw batch: images N x 28 x 28 uint8 -> (N x 9 x 1 x t x t, N)."""
    xs, ys = [], []
    for img in images:
        grid = Image.fromarray(img).resize((3 * CELL, 3 * CELL), Image.Resampling.BILINEAR)
        tiles = [_pil_tile(grid, k, rng) for k in range(9)]
        index = int(rng.integers(len(perms)))
        xs.append(np.stack([tiles[k] for k in perms[index]]))  # position i shows cell perm[i]
        ys.append(index)
    return torch.from_numpy(np.stack(xs)), torch.tensor(ys)


def pil_relpatch(images: np.ndarray, rng: np.random.Generator):
    """Per-sample relative-patch batch: images N x 28 x 28 uint8 -> (N x 2 x 1 x t x t, N)."""
    xs, ys = [], []
    for img in images:
        grid = Image.fromarray(img).resize((3 * CELL, 3 * CELL), Image.Resampling.BILINEAR)
        pos = int(rng.integers(8))
        xs.append(np.stack([_pil_tile(grid, relpatch.CENTRE, rng), _pil_tile(grid, relpatch.NEIGHBOURS[pos], rng)]))
        ys.append(pos)
    return torch.from_numpy(np.stack(xs)), torch.tensor(ys)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: leave torch's default)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    images = load_fashion_mnist("train").images[:args.batch_size]  # B x 1 x 28 x 28 uint8
    images_dev, images_np = images.to(device), images[:, 0].numpy()
    dtype = input_dtype(_use_bf16("auto", device)) or torch.float32
    print(f"device {device}, {torch.get_num_threads()} torch thread(s), batch {args.batch_size} Fashion-MNIST images, "
          f"tiles {TILE} px in {CELL}-px cells, tensor tiles in {str(dtype).removeprefix('torch.')} "
          f"(training's dtype here), best of {args.repeats}")
    print(f"{'':16s}{'tensor ms':>10s}{'img/s':>8s} | {'authors ms':>10s}{'img/s':>7s}{'ratio':>7s} | "
          f"{'lean ms':>8s}{'img/s':>7s}{'ratio':>7s} | {'fp32 ms':>8s}{'ratio':>7s}")

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for name in ("jigsaw-alexnet", "relative-patch-alexnet"):
        model = zoo.create(name)
        pretext = get_pretext(model.pretext, model)
        perms = model.head.permutations.numpy() if model.pretext == "jigsaw" else None
        rng = np.random.default_rng(0)

        def tensor_batch(step, dtype=dtype):
            batch = Batch.from_uint8(images_dev, torch.arange(len(images_dev)), model.data_config)
            return pretext.make_batch(batch, torch.Generator().manual_seed(step), dtype)

        def fp32_batch(step):
            return tensor_batch(step, torch.float32)

        def authors_batch(step):
            return authors_jigsaw(images_np, perms, rng) if perms is not None else authors_relpatch(images_np, rng)

        def lean_batch(step):
            return pil_jigsaw(images_np, perms, rng) if perms is not None else pil_relpatch(images_np, rng)

        sides = {"tensor": tensor_batch, "authors": authors_batch, "lean": lean_batch, "fp32": fp32_batch}
        shapes = {k: f(0)[0].shape for k, f in sides.items()}  # warm-up
        assert len(set(shapes.values())) == 1, shapes
        times: dict[str, list[float]] = {k: [] for k in sides}
        for step in range(args.repeats):  # alternate, so all sides see the same machine load
            for k, f in sides.items():
                sync(); t0 = time.perf_counter()
                f(step)
                sync(); times[k].append(time.perf_counter() - t0)
        t, a, p, f = (min(times[k]) for k in ("tensor", "authors", "lean", "fp32"))
        b = args.batch_size
        print(f"{model.pretext:16s}{1e3 * t:10.1f}{b / t:8.0f} | {1e3 * a:10.1f}{b / a:7.0f}{a / t:6.1f}x | "
              f"{1e3 * p:8.1f}{b / p:7.0f}{p / t:6.1f}x | {1e3 * f:8.1f}{a / f:6.1f}x")
    print("ratio = per-sample time / batched tensor time for the same batch (target >= 20x against the authors' loader);"
          "\nfp32 ratio = authors' time / the tensor side making float32 tiles")


if __name__ == "__main__":
    main()
