"""Rotation training: share of the step spent building the pretext batch (target <= 5 %).

Times the loop's own ``make_batch`` (crop/flip, resize, normalise, four rotations; batched
tensor ops) against the whole ``make_batch`` + ``train_step`` in the same run, on real
Fashion-MNIST images. Also prints a per-sample PIL version of the same batch construction
for scale.

    python benchmarks/bench_train_rotation.py [--steps 20] [--batch-size 128] [--device cpu]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image

from sslzoo import zoo
from sslzoo.training.data import load_fashion_mnist
from sslzoo.training.loop import (TrainConfig, _generator, _use_bf16, input_dtype, make_batch, make_optimizer,
                                  to_training_device, train_step)
from sslzoo.training.pretexts import get_pretext


def pil_batch(images: torch.Tensor, data_config: dict, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-sample way (torchvision-style loaders): PIL crop/flip/resize/rotate image by image."""
    _, h, w = data_config["input_size"]
    mean, std = data_config["mean"][0], data_config["std"][0]
    xs, ys = [], []
    for img in images[:, 0].numpy():
        pil = Image.fromarray(img)
        oy, ox = (int(v) for v in torch.randint(0, 5, (2,), generator=gen))
        pil = Image.fromarray(np.pad(img, 2)).crop((ox, oy, ox + 28, oy + 28))
        if torch.rand(1, generator=gen) < 0.5:
            pil = pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        pil = pil.resize((w, h), Image.Resampling.BILINEAR)
        for k in range(4):
            arr = np.asarray(pil.rotate(90 * k), dtype=np.float32) / 255
            xs.append(torch.from_numpy((arr - mean) / std)[None])
            ys.append(k)
    return torch.stack(xs), torch.tensor(ys)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)

    data = load_fashion_mnist("train")
    torch.manual_seed(0)
    model = to_training_device(zoo.create("rotation-alexnet"), device).train()
    pretext, dc = get_pretext("rotation"), model.data_config
    cfg = TrainConfig(device=args.device)
    bf16 = _use_bf16(cfg.precision, device)
    opt = make_optimizer(model, cfg.with_defaults(pretext.defaults))
    images = data.images.to(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    prep = total = 0.0
    for step in range(args.steps + 3):  # 3 warm-up steps
        idx = torch.randint(0, len(images), (args.batch_size,), generator=_generator(1, step)).to(device)
        sync(); t0 = time.perf_counter()
        inputs, targets = make_batch(images[idx], idx, pretext, dc, 2, _generator(2, step), dtype=input_dtype(bf16))
        sync(); t1 = time.perf_counter()
        train_step(model, opt, pretext, inputs, targets, bf16=bf16)
        sync(); t2 = time.perf_counter()
        if step >= 3:
            prep += t1 - t0
            total += t2 - t0

    t0 = time.perf_counter()
    n_pil = 3
    for step in range(n_pil):
        pil_batch(data.images[:args.batch_size], dc, _generator(3, step))
    pil = (time.perf_counter() - t0) / n_pil

    per_step, per_prep = total / args.steps, prep / args.steps
    print(f"device {device}, {'bf16 autocast' if bf16 else 'fp32'}, batch {args.batch_size} images x 4 rotations, "
          f"{args.steps} steps, {torch.get_num_threads()} threads")
    print(f"{'':34s}{'ms/step':>10s}{'images/s':>12s}")
    print(f"{'whole training step':34s}{1e3 * per_step:10.1f}{args.batch_size / per_step:12.0f}")
    print(f"{'  of which batch construction':34s}{1e3 * per_prep:10.1f}{args.batch_size / per_prep:12.0f}")
    print(f"{'per-sample PIL batch construction':34s}{1e3 * pil:10.1f}{args.batch_size / pil:12.0f}")
    print(f"batch construction share of the step: {100 * per_prep / per_step:.2f} % (target <= 5 %)")
    print(f"tensor batch construction vs per-sample PIL: {pil / per_prep:.1f}x faster")


if __name__ == "__main__":
    main()
