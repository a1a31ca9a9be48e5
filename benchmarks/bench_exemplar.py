"""Exemplar's deformations on tensors against a per-image torchvision.transforms.v2 pipeline with the
same ranges, same images, one run.

    python benchmarks/bench_exemplar.py [--threads 1] [--device cpu] [--batch 512] [--repeats 5]

Both sides turn B source images of 28 x 28 in [0, 1] (Fashion-MNIST's first B, gray; and B random
colour images) into B deformed 96 x 96 inputs: zoom 1/sqrt2..sqrt2, shift +-0.25 of the side,
rotation +-20 degrees, then the photometric steps (gray: v -> m v^p + a; colour: PCA-axis contrast,
S and V power / multiplier / added value, hue shift).

- batched (what training runs): ``exemplar.sample`` (all parameters from one CPU generator) and
  ``exemplar.deform``: one ``grid_sample`` for the batch, resize included, then the photometric
  steps on the whole batch, on ``--device``;
- per image (a data loader's way): ``v2.Resize(96)``, ``v2.RandomAffine`` with the same ranges,
  then the photometric steps as per-image ``v2.Lambda`` transforms drawing their own parameters
  (gray: ``v2.functional.adjust_gamma`` for power and multiplier, then the added value; colour:
  the PCA step, ``v2.functional.adjust_hue``, S and V through HSV), image by image on the CPU.

Timed best-of-``--repeats``, the two sides alternating so both see the same machine load; only the
ratio measured in this run is the result (the milliseconds are shown next to it). Target >= 10x.
"""
from __future__ import annotations

import argparse
import math

import torch

from _timing import best_time


def per_image_pipeline(channels: int, size: int):
    """The v2 pipeline for one C x h x w image in [0, 1] -> C x size x size."""
    from torchvision.transforms import InterpolationMode, v2
    from torchvision.transforms.v2 import functional as TF

    from sslzoo.zoo.pretexts import exemplar as ex

    def uniform(lo, hi, log=False):
        u = float(torch.rand(()))
        return math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))) if log else lo + u * (hi - lo)

    def contrast(img):  # v -> m v^p + a (adjust_gamma: gain * v^gamma, clamped)
        img = TF.adjust_gamma(img, uniform(*ex.POWER, log=True), uniform(*ex.MULTIPLY))
        return (img + uniform(*ex.ADD)).clamp(0, 1)

    basis = ex._pca_basis()  # 3 axes x 3

    def pca(img):
        mean = img.mean((1, 2), keepdim=True)
        f = torch.tensor([uniform(*ex.PCA_FACTOR, log=True) for _ in range(3)])
        coeff = torch.einsum("kc,chw->khw", basis, img - mean) * f[:, None, None]
        return (mean + torch.einsum("kc,khw->chw", basis, coeff)).clamp(0, 1)

    def saturation_value(img):
        hsv = ex.rgb_to_hsv(img[None])[0]
        for ch in (1, 2):
            hsv[ch] = (uniform(*ex.MULTIPLY) * hsv[ch] ** uniform(*ex.POWER, log=True) + uniform(*ex.ADD)).clamp(0, 1)
        return ex.hsv_to_rgb(hsv[None])[0]

    steps = [v2.Resize((size, size), interpolation=InterpolationMode.BILINEAR, antialias=False),
             v2.RandomAffine(degrees=ex.ROTATION, translate=(ex.SHIFT, ex.SHIFT), scale=ex.SCALE,
                             interpolation=InterpolationMode.BILINEAR)]
    if channels == 1:
        steps.append(v2.Lambda(contrast))
    else:
        steps += [v2.Lambda(pca), v2.Lambda(saturation_value), v2.Lambda(lambda img: TF.adjust_hue(img, uniform(*ex.HUE)))]
    return v2.Compose(steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (both sides)")
    ap.add_argument("--device", default="cpu", help="where the batched side runs (cpu, cuda)")
    ap.add_argument("--batch", type=int, default=512, help="images per batch (training: 128 seeds x 4)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from sslzoo.training._precision import machine
    from sslzoo.zoo.pretexts import exemplar as ex

    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    gen = torch.Generator().manual_seed(0)
    try:
        from sslzoo.training.data import load_fashion_mnist
        gray = load_fashion_mnist("train").images[:args.batch].float() / 255
        what = "Fashion-MNIST"
    except Exception:  # noqa: BLE001  (not installed: random gray images, the same for both sides)
        gray = torch.rand(args.batch, 1, 28, 28, generator=gen)
        what = "random"
    colour = torch.rand(args.batch, 3, 28, 28, generator=gen)
    print(f"torch {torch.__version__}, {args.threads} thread(s), batched side on {dev} ({machine(dev)}), per-image side "
          f"on the CPU; {args.batch} images 28 -> 96 px; best of {args.repeats}")

    for name, x in ((f"gray ({what})", gray), ("colour (random)", colour)):
        pipeline = per_image_pipeline(x.shape[1], 96)
        xd = x.to(dev)
        sample_gen = torch.Generator().manual_seed(1)

        def batched():
            return ex.deform(xd, ex.sample(len(xd), sample_gen), (96, 96))

        def per_image():
            return torch.stack([pipeline(img) for img in x])

        batched(), per_image()  # warm-up (first-call allocations, CUDA context)
        t_ref = t_ours = float("inf")
        for _ in range(args.repeats):  # alternate, so both see the same machine load
            t_ref = min(t_ref, best_time(per_image, 1))
            t_ours = min(t_ours, best_time(batched, 1, sync))
        out = batched()
        assert out.shape == (args.batch, x.shape[1], 96, 96) and float(out.min()) >= 0 and float(out.max()) <= 1
        print(f"{name}: batched deformations {t_ref / t_ours:.1f}x faster than the per-image v2 pipeline "
              f"({t_ours * 1e3:.1f} ms vs {t_ref * 1e3:.1f} ms for {args.batch}; target >= 10x)")


if __name__ == "__main__":
    main()
