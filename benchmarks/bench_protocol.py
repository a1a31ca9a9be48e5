"""What pretext protocol v2 costs: rotation's training step before and after, A/B in one run, and
the share of each pretext's step spent building its batch.

    python benchmarks/bench_protocol.py [--steps 20] [--batch-size 128] [--threads 2] [--device cuda]

"before" is the previous loop's step, kept here as the reference: resize + normalise the whole
batch, ``rotate_all``, one SGD parameter group with weight decay added to the gradients by hand.
"after" is today's loop: ``Batch`` -> the plug-in's ``make_batch``, the optimiser built from the
plug-in's recipe (two parameter groups, weight decay inside SGD). Both start from the same weights,
take the same batches and alternate step by step, so both see the same machine load; the weights
after the last step are compared too (the same arithmetic should give the same bits).
Then, for every trainable Fashion-MNIST model of the zoo, the batch construction's share of its
whole training step (target <= 5 %).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from sslzoo import zoo
from sslzoo.training.augment import random_crop_flip, to_model_input
from sslzoo.training._precision import machine
from sslzoo.training.data import load_fashion_mnist
from sslzoo.training.loop import (TrainConfig, _generator, _use_bf16, input_dtype, make_batch, make_optimizer,
                                  to_training_device, train_step)
from sslzoo.training.pretexts import Run, get_pretext, trainable_models
from sslzoo.zoo.pretexts import rotation


def sync(device: torch.device) -> None:
    """Wait for the GPU's queued work, so that a wall-clock interval covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def before_step(model, opt, x_uint8, dc, gen, bf16, weight_decay, wd_mask):
    """The previous loop's rotation step (the reference)."""
    device = x_uint8.device
    sync(device)
    t0 = time.perf_counter()
    x = to_model_input(random_crop_flip(x_uint8, 2, gen), dc, resize=True)
    inputs, targets = rotation.rotate_all(x.to(torch.bfloat16) if bf16 else x)
    sync(device)
    t1 = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        out = model.predict_pretext(inputs)
    loss = F.cross_entropy(out.float(), targets)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    with torch.no_grad():
        for p, decay in zip(opt.param_groups[0]["params"], wd_mask):
            if decay and p.grad is not None:
                p.grad.add_(p, alpha=weight_decay)
    opt.step()
    sync(device)
    return t1 - t0, time.perf_counter() - t0


def after_step(model, opt, pretext, x_uint8, idx, dc, gen, bf16):
    device = x_uint8.device
    sync(device)
    t0 = time.perf_counter()
    inputs, targets = make_batch(x_uint8, idx, pretext, dc, 2, gen, 0, input_dtype(bf16))
    sync(device)
    t1 = time.perf_counter()
    train_step(model, opt, pretext, inputs, targets, bf16=bf16)
    sync(device)
    return t1 - t0, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the GPU's kernels are timed to completion)")
    ap.add_argument("--only", default=None, help="comma-separated zoo names for the share table (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    bf16 = _use_bf16("auto", device)
    images = load_fashion_mnist("train").images.to(device)

    # --- A/B: rotation before and after -----------------------------------------------------------
    torch.manual_seed(0)
    base = to_training_device(zoo.create("rotation-alexnet").train(), device)
    pretext = get_pretext("rotation", base)
    cfg = TrainConfig(lr=0.01).with_defaults(pretext.defaults)
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    opt_a = torch.optim.SGD(list(a.parameters()), lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    wd_mask = [p.dim() > 1 for p in a.parameters()]
    opt_b = make_optimizer(b, cfg)
    times = {"before": [], "after": []}
    prep = {"before": [], "after": []}
    for step in range(args.steps + 3):  # 3 warm-up steps
        idx = torch.randint(0, len(images), (args.batch_size,), generator=_generator(1, step)).to(device)
        pa, ta = before_step(a, opt_a, images[idx], a.data_config, _generator(2, step), bf16, cfg.weight_decay, wd_mask)
        pb, tb = after_step(b, opt_b, pretext, images[idx], idx, b.data_config, _generator(2, step), bf16)
        if step >= 3:
            times["before"].append(ta), times["after"].append(tb)
            prep["before"].append(pa), prep["after"].append(pb)
    same = all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"rotation-alexnet, batch {args.batch_size} x 4 turns, {args.steps} steps each, alternating, "
          f"{'bf16 autocast' if bf16 else 'fp32'}, {machine(device)}")
    for k in ("before", "after"):
        print(f"  {k:7s} step {1e3 * med[k]:8.1f} ms (median)   batch construction {1e3 * statistics.median(prep[k]):6.2f} ms")
    print(f"  after / before: {med['after'] / med['before']:.3f} (target within 3 %: 0.97..1.03); "
          f"weights after {args.steps + 3} steps {'bit-identical' if same else 'DIFFER'}")

    # --- batch construction's share of the step, every trainable Fashion-MNIST model -------------
    # and the epoch-start hook's share of an epoch (DeepCluster's clustering pass: features of all
    # training images, PCA, k-means; target <= 20 %), the hook run once on the whole training set
    labels = load_fashion_mnist("train").labels.to(device)
    only = set(args.only.split(",")) if args.only else None
    print(f"\nbatch construction share of the training step ({args.steps} steps, batch {args.batch_size}, target <= 5 %),"
          f"\nepoch-start hook's share of an epoch ({len(images)} images; target <= 20 %)")
    for name in trainable_models():
        if not name.endswith(".fmnist") or (only and name not in only):
            continue
        torch.manual_seed(0)
        model = to_training_device(zoo.create(name).train(), device)
        pt = get_pretext(model.pretext, model).to(device)
        run = Run(model, images, labels, device, bf16, seed=0, log=lambda line: None)
        pt.begin(run)
        sync(device)
        t0 = time.perf_counter()
        pt.begin_epoch(run, 0)
        sync(device)
        hook_s = time.perf_counter() - t0
        model.train()
        opt = make_optimizer(model, TrainConfig().with_defaults(pt.defaults))
        prep_t, step_t = [], []
        for step in range(args.steps + 2):
            idx = torch.randint(0, len(images), (args.batch_size,), generator=_generator(1, step)).to(device)
            p, t = after_step(model, opt, pt, images[idx], idx, model.data_config, _generator(2, step), bf16)
            if step >= 2:
                prep_t.append(p), step_t.append(t)
        share = sum(prep_t) / sum(step_t)
        epoch_s = len(images) // args.batch_size * statistics.median(step_t)
        print(f"  {name:32s} step {1e3 * statistics.median(step_t):8.1f} ms   batch {1e3 * statistics.median(prep_t):6.2f} ms"
              f"   share {100 * share:5.2f} %   epoch-start hook {hook_s:6.1f} s = {100 * hook_s / (hook_s + epoch_s):5.1f} % "
              f"of an epoch")


if __name__ == "__main__":
    main()
