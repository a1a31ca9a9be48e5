"""The one training loop every pretext runs through (nanoGPT-style: config dataclass in, weights out).

Reproducible and resumable: the data order of epoch e comes from a generator seeded with
(seed, e), the augmentation of step s from one seeded with (seed, s), and checkpoints hold the
model, the optimiser's momentum buffers and the step, so ``resume`` continues a killed run to the
same bits as an uninterrupted one (on CPU, same thread count).
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from sslzoo import zoo
from sslzoo.zoo._hub import atomic_write, round_to_storage

from ._precision import machine, resolved_precision, use_bf16
from .augment import random_crop_flip, random_zoom_out, to_model_input
from .data import load_dataset
from .pretexts import UntrainableModel, get_pretext

CHECKPOINT = "checkpoint.safetensors"


class TrainingError(Exception):
    """Training cannot go on; the message says why and what was kept."""


@dataclass
class TrainConfig:
    model: str = "rotation-alexnet"  # registry entry (and tag) whose architecture is trained
    data: str = "fashion-mnist"  # or imagefolder:PATH
    data_root: str | None = None
    out: str = ""  # run directory; "" -> runs/<model>
    epochs: float = 10.0
    batch_size: int = 128  # source images per step; the pretext multiplies them (rotation: x4)
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_steps: int = 100
    crop_pad: int = 2  # random translation, in source pixels
    zoom_out: int = 0  # random zero border of 0..zoom_out source px per batch (scale jitter; 0: off)
    limit: int | None = None  # use only the first N training images
    checkpoint_every: int = 200  # steps
    seed: int = 0
    device: str = "cpu"
    precision: str = "auto"  # auto: bf16 autocast on CUDA or a CPU with native bf16; else fp32
    progress: bool = True
    eval_limit: int | None = None  # test images for the final pretext accuracy (None: all)
    stop_after: int | None = None  # stop (with a checkpoint) after this many steps: for tests

    def __post_init__(self):
        self.out = self.out or f"runs/{self.model}"


# Fields that must match when resuming (the rest, e.g. progress or device, may change). Precision is
# checked as *used* (bf16 or fp32, the setting resolved on the hardware), not as set: "auto" is bf16
# on one machine and fp32 on another.
_RESUME_KEYS = ("model", "data", "epochs", "batch_size", "lr", "momentum", "weight_decay",
                "warmup_steps", "crop_pad", "zoom_out", "limit", "seed")


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * min(1.0, t)))


def _generator(*keys: int) -> torch.Generator:
    seed = 0
    for k in keys:
        seed = (seed * 1_000_003 + k) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


def _device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda asked for, but no CUDA device is available")
    return device


def _use_bf16(precision: str, device: torch.device) -> bool:
    try:
        return use_bf16(precision, device)
    except ValueError as e:
        raise TrainingError(str(e)) from None


def save_checkpoint(path: Path, model, opt, step: int, cfg: TrainConfig, elapsed: float) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for i, p in enumerate(opt.param_groups[0]["params"]):
        buf = opt.state.get(p, {}).get("momentum_buffer")
        if buf is not None:
            tensors[f"optim.{i}.momentum_buffer"] = buf.detach().cpu().contiguous()
    meta = {"step": str(step), "config": json.dumps(asdict(cfg)), "elapsed": repr(elapsed),
            "precision_used": resolved_precision(cfg.precision, next(model.parameters()).device)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_checkpoint(path: Path, model, opt, cfg: TrainConfig) -> tuple[int, float]:
    try:
        from safetensors import safe_open
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(path)
    except (SafetensorError, OSError) as e:
        raise TrainingError(f"{path}: not a readable checkpoint ({e}); delete it to start over") from None
    saved = json.loads(meta.get("config", "{}"))
    diff = [f"{k}={saved[k]!r}" for k in _RESUME_KEYS if k in saved and saved[k] != getattr(cfg, k)]
    if diff:
        raise TrainingError(f"{path}: was written with different settings ({', '.join(diff)}); "
                            "resume with the same settings or use another --out")
    device = next(model.parameters()).device
    now = resolved_precision(cfg.precision, device)
    used = meta.get("precision_used") or resolved_precision(saved.get("precision", cfg.precision), device)
    if used != now:
        raise TrainingError(f"{path}: was trained in {used}, but --precision {cfg.precision} is {now} on this "
                            f"machine ({machine(device)}), so the run would not continue "
                            f"bit-identically; resume where {used} is available, or pass --precision {used} to force it")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    for i, p in enumerate(opt.param_groups[0]["params"]):
        key = f"optim.{i}.momentum_buffer"
        if key in tensors:
            opt.state[p]["momentum_buffer"] = tensors[key].to(device)
    return int(meta["step"]), float(meta.get("elapsed", "0"))


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[stats]}"), TimeRemainingColumn(), disable=not enabled, transient=False)


@torch.no_grad()
def pretext_accuracy(model, pretext, images: torch.Tensor, data_config: dict, device, batch_size: int = 256,
                     bf16: bool = False) -> float:
    """Share of pretext targets predicted right on a uint8 image set (deterministic batches)."""
    model.eval()
    correct = total = 0
    for i in range(0, len(images), batch_size):
        x = pretext_input(images[i:i + batch_size].to(device), pretext, data_config)
        inputs, targets = pretext.make_batch(x, _generator(12345, i), input_dtype(bf16))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model.predict_pretext(inputs)
        correct += pretext.correct(out, targets)
        total += len(targets)
    return correct / max(1, total)


def evaluate(name_or_dir: str, *, data: str = "fashion-mnist", data_root: str | None = None,
             limit: int | None = None, device: str = "cpu", precision: str = "auto") -> dict:
    """Pretext accuracy of a model on the held-out split, measured as ``train`` measures it at
    the end (same deterministic puzzles / pairs / rotations), so a shipped model's recorded
    figure can be re-checked: {"model", "pretext", "split", "images", "accuracy", "precision"}."""
    dev = _device(device)
    model = zoo.load(name_or_dir, device=dev)
    pretext = get_pretext(model.pretext, model)
    test_set = load_dataset(data, "test", root=data_root, data_config=model.data_config).subset(limit)
    bf16 = _use_bf16(precision, dev)
    acc = pretext_accuracy(model, pretext, test_set.images, model.data_config, dev, bf16=bf16)
    return {"model": model.config.get("name", str(name_or_dir)), "pretext": model.pretext, "split": test_set.name,
            "images": len(test_set), "accuracy": acc, "precision": "bf16 autocast" if bf16 else "fp32"}


def pretext_input(x_uint8: torch.Tensor, pretext, data_config: dict) -> torch.Tensor:
    """uint8 B x C x h x w -> the normalised float batch a plug-in's ``make_batch`` takes: at the
    model's input size, or at the source size for plug-ins with ``resize_input = False`` (the
    patch pretexts: their tile cutter resizes each tile's source window to the grid itself, in one
    bilinear step, instead of a whole-image resize followed by a second one)."""
    return to_model_input(x_uint8, data_config, resize=getattr(pretext, "resize_input", True))


def input_dtype(bf16: bool) -> torch.dtype | None:
    """The dtype the pretext inputs are made in: bf16 when the model runs under bf16 autocast (its
    convolutions would cast them to bf16 anyway; made so, they cost half the memory traffic)."""
    return torch.bfloat16 if bf16 else None


def make_batch(x_uint8: torch.Tensor, pretext, data_config: dict, crop_pad: int, gen: torch.Generator,
               zoom_out: int = 0, dtype: torch.dtype | None = None):
    """uint8 B x C x h x w source images -> the pretext's (inputs, targets), all batched tensor ops
    on the images' device (rotation: inputs 4B x C x H x W, targets 4B); inputs in ``dtype``
    (``input_dtype``; None: float32)."""
    x = random_zoom_out(random_crop_flip(x_uint8, crop_pad, gen), zoom_out, gen)
    x = pretext_input(x, pretext, data_config)
    inputs, targets = pretext.make_batch(x, gen, dtype)
    if inputs.is_cuda and inputs.dim() == 4:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    return inputs, targets


def train_step(model, opt, pretext, inputs, targets, *, bf16: bool, weight_decay: float, wd_mask: list[bool]):
    """One SGD step. Returns (outputs, loss); (loss value, None) without stepping when the loss is
    not finite, so the caller stops with the last good checkpoint intact."""
    with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=bf16):
        outputs = model.predict_pretext(inputs)
    loss = pretext.loss(outputs, targets)
    if not torch.isfinite(loss):
        return loss.item(), None
    opt.zero_grad(set_to_none=True)
    loss.backward()
    with torch.no_grad():  # weight decay on conv/linear weights only, not BN or biases
        for p, decay in zip(opt.param_groups[0]["params"], wd_mask):
            if decay and p.grad is not None:
                p.grad.add_(p, alpha=weight_decay)
    opt.step()
    return outputs, loss


def _kept(ckpt: Path, step: int) -> str:
    return f"last good checkpoint {ckpt} (step {step}) kept" if ckpt.exists() else "no checkpoint was written yet"


def train(cfg: TrainConfig, *, resume: bool = False, log=print) -> Path:
    """Train ``cfg.model``'s architecture on its pretext; returns the saved model directory."""
    device = _device(cfg.device)
    out = Path(cfg.out)
    ckpt = out / CHECKPOINT
    if ckpt.exists() and not resume:
        raise TrainingError(f"{ckpt} exists: pass --resume to continue it, or choose another --out")

    bf16 = _use_bf16(cfg.precision, device)
    torch.manual_seed(cfg.seed)
    model = zoo.create(cfg.model).to(device)
    data_config = model.data_config
    try:
        pretext = get_pretext(model.pretext, model)  # refuses a model without a pretext head
    except UntrainableModel as e:
        raise TrainingError(str(e)) from None
    train_set = load_dataset(cfg.data, "train", root=cfg.data_root, data_config=data_config).subset(cfg.limit)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)

    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    no_decay = [p for n, p in model.named_parameters() if p.dim() <= 1]  # BN and biases
    opt = torch.optim.SGD([{"params": decay + no_decay}], lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    wd_mask = [p.dim() > 1 for p in decay + no_decay]

    steps_per_epoch = len(train_set) // cfg.batch_size
    if steps_per_epoch == 0:
        raise TrainingError(f"{train_set.name}: {len(train_set)} images is less than one batch of {cfg.batch_size}")
    total = max(1, int(cfg.epochs * steps_per_epoch))
    step, elapsed = 0, 0.0
    if resume and ckpt.exists():
        step, elapsed = load_checkpoint(ckpt, model, opt, cfg)
        log(f"resumed {ckpt} at step {step}/{total}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")

    images = train_set.images.to(device)
    perm, perm_epoch = None, -1
    prep_s = step_s = prep_total = step_total = 0.0
    reported = saved_step = step
    stats = ""
    model.train()
    t_start = time.perf_counter()
    with _progress(cfg.progress) as bar:
        task = bar.add_task(f"{model.pretext} {cfg.model}", total=total, completed=step, stats="")
        while step < total:
            epoch, pos = divmod(step, steps_per_epoch)
            if epoch != perm_epoch:
                perm, perm_epoch = torch.randperm(len(train_set), generator=_generator(cfg.seed, epoch)), epoch
            t0 = time.perf_counter()
            gen = _generator(cfg.seed, 1 << 20, step)
            idx = perm[pos * cfg.batch_size:(pos + 1) * cfg.batch_size].to(device)
            inputs, targets = make_batch(images[idx], pretext, data_config, cfg.crop_pad, gen, cfg.zoom_out,
                                         input_dtype(bf16))
            if device.type == "cuda":
                torch.cuda.synchronize()
            t1 = time.perf_counter()

            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, cfg)
            outputs, loss = train_step(model, opt, pretext, inputs, targets, bf16=bf16,
                                       weight_decay=cfg.weight_decay, wd_mask=wd_mask)
            if loss is None:
                raise TrainingError(f"non-finite loss ({outputs}) at step {step}; stopped, {_kept(ckpt, saved_step)}. "
                                    "Lower --lr or check the data.")
            step += 1
            if device.type == "cuda":
                torch.cuda.synchronize()
            t2 = time.perf_counter()
            prep_s += t1 - t0
            step_s += t2 - t0

            if step % 10 == 0 or step == total:
                acc = pretext.correct(outputs.detach(), targets) / len(targets)
                n = step - reported
                stats = (f"loss {loss.item():.3f} acc {acc:.3f} {n * cfg.batch_size / step_s:,.0f} img/s, "
                         f"batch prep {100 * prep_s / step_s:.1f}%")
                bar.update(task, completed=step, stats=stats)
                prep_total += prep_s
                step_total += step_s
                prep_s = step_s = 0.0
                reported = step
            stopping = cfg.stop_after is not None and step >= cfg.stop_after and step < total
            if step % cfg.checkpoint_every == 0 or step == total or stopping:
                bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
                if bad:  # e.g. BN running_var overflowed while the loss was still finite
                    raise TrainingError(f"non-finite weights ({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}) "
                                        f"at step {step}; stopped, {_kept(ckpt, saved_step)}. Lower --lr or check the data.")
                save_checkpoint(ckpt, model, opt, step, cfg, elapsed + time.perf_counter() - t_start)
                saved_step = step
                if cfg.progress and not bar.console.is_terminal:  # logs, not a live bar
                    log(f"step {step}/{total} {stats}")
            if stopping:
                log(f"stopped after step {step} (--stop-after), checkpoint {ckpt}; resume with --resume")
                return out
    elapsed += time.perf_counter() - t_start

    test_set = load_dataset(cfg.data, "test", root=cfg.data_root, data_config=data_config).subset(cfg.eval_limit)
    round_to_storage(model)  # the accuracy recorded is that of the weights as saved (float16 conv/linear)
    acc = pretext_accuracy(model, pretext, test_set.images, data_config, device, bf16=bf16)
    log(f"{model.pretext} accuracy on {test_set.name}: {100 * acc:.2f}%")
    model.config["provenance"] = {
        "trained_with": "sslzoo train",
        "command": " ".join(["sslzoo", *sys.argv[1:]]) if Path(sys.argv[0]).name == "sslzoo" else None,
        "train_config": asdict(cfg),
        "dataset": train_set.name,
        "train_images": len(train_set),
        "steps": total,
        "epochs": cfg.epochs,
        "seconds": round(elapsed, 1),
        "machine": machine(device),
        "torch": torch.__version__,
        "precision": "bf16 autocast" if bf16 else "fp32",
        "pretext_accuracy": {"split": test_set.name, "value": round(acc, 4)},
        "batch_prep_share": round(prep_total / max(step_total, 1e-9), 4),
    }
    model_dir = out / "model"
    zoo.save_pretrained(model.float().to(memory_format=torch.contiguous_format).cpu(), model_dir)
    log(f"saved {model_dir}")
    return model_dir
