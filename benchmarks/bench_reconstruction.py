"""Reconstruction pretexts: batch construction (the plug-ins' batched make_batch) against a
per-sample way (one image at a time: its own noise draw / its own hole), and the training step
time of every variant, side by side in one run.

    .venv/bin/python benchmarks/bench_reconstruction.py [--batch-size 128] [--steps 5] [--threads 2]

Prints per model: batch construction batched vs per sample (ms, ratio), the step (ms, median of
--steps after two warm-up steps, precision as ``auto`` resolves here unless --precision), and the
share of the step the batch construction takes.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from sslzoo import zoo
from sslzoo.training._precision import use_bf16
from sslzoo.training.data import load_fashion_mnist
from sslzoo.training.loop import TrainConfig, _generator, input_dtype, make_batch, make_optimizer, train_step
from sslzoo.training.pretexts import Batch, get_pretext
from sslzoo.zoo.pretexts import context_encoder as ce
from sslzoo.zoo.pretexts import denoising

MODELS = ("denoising-alexnet", "context-encoder-alexnet", "context-encoder-alexnet.fmnist-adv",
          "context-encoder-alexnet.fmnist-central", "context-encoder-alexnet.fmnist-central-adv")


def per_sample(pretext, batch: Batch, gen: torch.Generator):
    """The same inputs made one image at a time (what a Dataset.__getitem__ would do)."""
    x = batch.resized()
    inputs = []
    for i in range(len(x)):
        if pretext.name == denoising.PRETEXT:
            inputs.append(denoising.corrupt(x[i], pretext.noise, pretext.noise_level, gen, pretext.data_config["std"]))
        else:
            _, h, w = x[i].shape
            mask = ce.make_masks(pretext.mask, 1, h, w, gen)[0]
            ce.band(mask[None], pretext.overlap)
            inputs.append(ce.apply_mask(x[i], mask))
    return torch.stack(inputs)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    bf16 = use_bf16(args.precision, device)
    images = load_fashion_mnist("train").images
    print(f"batch {args.batch_size}, {args.steps} steps after 2 warm-up, {'bf16 autocast' if bf16 else 'fp32'}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'model':45s} {'batched':>9s} {'per-sample':>11s} {'ratio':>6s} {'step':>10s} {'share':>6s}")
    for name in args.models:
        torch.manual_seed(0)
        model = zoo.create(name).train()
        pretext = get_pretext(model.pretext, model).train()
        opt = make_optimizer(model, TrainConfig().with_defaults(pretext.defaults))
        cfg = model.data_config
        fast, slow, steps = [], [], []
        for step in range(args.steps + 2):
            idx = torch.randint(0, len(images), (args.batch_size,), generator=_generator(1, step))
            x = images[idx]
            batch = Batch.from_uint8(x, idx, cfg)
            batch.resized()  # both ways start from the resized images
            fast.append(timed(lambda: pretext.make_batch(batch, _generator(2, step), input_dtype(bf16))))
            slow.append(timed(lambda: per_sample(pretext, batch, _generator(2, step))))
            t0 = time.perf_counter()
            inputs, targets = make_batch(x, idx, pretext, cfg, 2, _generator(2, step), 0, input_dtype(bf16))
            train_step(model, opt, pretext, inputs, targets, bf16=bf16)
            steps.append(time.perf_counter() - t0)
        f, s, st = (statistics.median(v[2:]) for v in (fast, slow, steps))
        print(f"{name:45s} {1e3 * f:7.1f}ms {1e3 * s:9.1f}ms {s / f:5.1f}x {1e3 * st:8.0f}ms {100 * f / st:5.1f}%",
              flush=True)


if __name__ == "__main__":
    main()
