"""The one training loop every pretext runs through (nanoGPT-style: config dataclass in, weights out).

The loop never knows which pretext it runs: the plug-in (``training/pretexts``, protocol v2) turns
each step's ``Batch`` into (inputs, targets), scores the outputs and may hook the run (``begin``,
``begin_epoch``, ``epoch_order``, ``eval_set``). The optimiser and the recipe's defaults come from
the plug-in, overridable from the CLI.

Reproducible and resumable: the data order of epoch e comes from a generator seeded with
(seed, e), the augmentation of step s from one seeded with (seed, s), and checkpoints hold the
model, the plug-in's train-only state, the full optimiser state and the step, so ``resume``
continues a killed run to the same bits as an uninterrupted one (on CPU, same thread count).
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch

from sslzoo import zoo
from safetensors.torch import save_file

from sslzoo.zoo._hub import atomic_write, atomic_write_text, round_to_storage

from . import checkpoint
from ._precision import machine, resolved_precision, use_bf16
from .augment import random_crop_flip, random_zoom_out
from .data import load_dataset
from .pretexts import Batch, Pretext, Run, UntrainableModel, get_pretext

CHECKPOINT = "checkpoint.safetensors"
OPTIMIZERS = ("sgd", "adam")


class TrainingError(Exception):
    """Training cannot go on; the message says why and what was kept."""


@dataclass
class TrainConfig:
    model: str = "rotation-alexnet"  # registry entry (and tag) whose architecture is trained
    data: str | None = None  # fashion-mnist, photos[:PATH] or imagefolder:PATH; None: the pretext's default
    data_root: str | None = None
    out: str = ""  # run directory; "" -> runs/<model>
    # The recipe: None takes the pretext plug-in's default (``Pretext.defaults``).
    epochs: float | None = None
    batch_size: int | None = None  # source images per step; the pretext may multiply them (rotation: x4)
    optimizer: str | None = None  # sgd (Nesterov momentum) or adam
    lr: float | None = None
    momentum: float | None = None  # SGD momentum, or Adam's beta1
    weight_decay: float | None = None  # on conv / linear weights only, not on BN or biases
    warmup_steps: int | None = None
    crop_pad: int = 2  # random translation, in source pixels
    zoom_out: int = 0  # random zero border of 0..zoom_out source px per batch (scale jitter; 0: off)
    limit: int | None = None  # use only the first N training images
    checkpoint_every: int = 200  # steps
    seed: int = 0
    device: str = "cpu"
    precision: str = "auto"  # auto: bf16 autocast on CUDA or a CPU with native bf16; else fp32
    progress: bool = True
    eval_limit: int | None = None  # images for the final pretext metric (None: all)
    stop_after: int | None = None  # stop (with a checkpoint) after this many steps: for tests

    def __post_init__(self):
        self.out = self.out or f"runs/{self.model}"

    def with_defaults(self, defaults: dict) -> "TrainConfig":
        """This config with every recipe field left None taken from ``defaults``."""
        recipe = {f.name: defaults[f.name] for f in fields(self) if getattr(self, f.name) is None and f.name in defaults}
        return replace(self, **recipe)


# Fields that must match when resuming (the rest, e.g. progress or device, may change). Precision is
# checked as *used* (bf16 or fp32, the setting resolved on the hardware), not as set: "auto" is bf16
# on one machine and fp32 on another.
_RESUME_KEYS = ("model", "data", "epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay",
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


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The recipe's optimiser over the model's trainable parameters, in two groups: conv / linear
    weights with weight decay, BN parameters and biases without."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() > 1], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))
    raise TrainingError(f"--optimizer {cfg.optimizer!r}: use one of {', '.join(OPTIMIZERS)}")


def save_checkpoint(path: Path, model, pretext: Pretext, opt, step: int, cfg: TrainConfig, elapsed: float,
                    run: Run) -> None:
    tree = {"model": model.state_dict(), "pretext": pretext.state_dict(), "optimizer": opt.state_dict(),
            "history": run.history}
    meta = {"step": str(step), "config": json.dumps(asdict(cfg)), "elapsed": repr(elapsed),
            "precision_used": resolved_precision(cfg.precision, run.device), "machine": machine(run.device),
            "torch": torch.__version__}
    checkpoint.save(path, tree, meta)


def load_checkpoint(path: Path, model, pretext: Pretext, opt, cfg: TrainConfig, run: Run) -> tuple[int, float]:
    try:
        tree, meta = checkpoint.load(path, run.device)
    except checkpoint.CheckpointError as e:
        raise TrainingError(str(e)) from None
    saved = json.loads(meta.get("config", "{}"))
    diff = [f"{k}={saved[k]!r}" for k in _RESUME_KEYS if k in saved and saved[k] != getattr(cfg, k)]
    if diff:
        raise TrainingError(f"{path}: was written with different settings ({', '.join(diff)}); "
                            "resume with the same settings or use another --out")
    now = resolved_precision(cfg.precision, run.device)
    used = meta.get("precision_used") or resolved_precision(saved.get("precision", cfg.precision), run.device)
    if used != now:
        raise TrainingError(f"{path}: was trained in {used}, but --precision {cfg.precision} is {now} on this "
                            f"machine ({machine(run.device)}), so the run would not continue "
                            f"bit-identically; resume where {used} is available, or pass --precision {used} to force it")
    model.load_state_dict(tree["model"], strict=True)
    pretext.load_train_state(tree["pretext"])
    opt.load_state_dict(tree["optimizer"])
    run.history.update(tree.get("history") or {})
    return int(meta["step"]), float(meta.get("elapsed", "0"))


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[stats]}"), TimeRemainingColumn(), disable=not enabled, transient=False)


def input_dtype(bf16: bool) -> torch.dtype | None:
    """The dtype the pretext inputs are made in: bf16 when the model runs under bf16 autocast (its
    convolutions would cast them to bf16 anyway; made so, they cost half the memory traffic)."""
    return torch.bfloat16 if bf16 else None


def make_batch(x_uint8: torch.Tensor, index: torch.Tensor, pretext: Pretext, data_config: dict, crop_pad: int,
               gen: torch.Generator, zoom_out: int = 0, dtype: torch.dtype | None = None):
    """uint8 B x C x h x w source images (dataset positions ``index``) -> the pretext's (inputs,
    targets): crop/flip and zoom-out, then the plug-in's ``make_batch``, all batched tensor ops on
    the images' device (rotation: inputs 4B x C x H x W, targets 4B); inputs in ``dtype``."""
    x = random_zoom_out(random_crop_flip(x_uint8, crop_pad, gen), zoom_out, gen)
    inputs, targets = pretext.make_batch(Batch.from_uint8(x, index, data_config), gen, dtype)
    if isinstance(inputs, torch.Tensor) and inputs.is_cuda and inputs.dim() == 4:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    return inputs, targets


def train_step(model, opt, pretext: Pretext, inputs, targets, *, bf16: bool):
    """One optimiser step. Returns (outputs, loss); (loss value, None) without stepping when the loss
    is not finite, so the caller stops with the last good checkpoint intact."""
    with torch.autocast(model_device(model).type, dtype=torch.bfloat16, enabled=bf16):
        outputs = model.predict_pretext(inputs)
    loss = pretext.loss(outputs, targets)
    if not torch.isfinite(loss):
        return loss.item(), None
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return outputs, loss


def to_training_device(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` on ``device`` as the loop trains it: channels-last on a GPU (its convolutions'
    fast layout; the inputs follow in ``make_batch``)."""
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if device.type == "cuda" else model


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def pretext_metrics(model, pretext: Pretext, data, device, batch_size: int = 256, bf16: bool = False) -> dict[str, float]:
    """The plug-in's metrics over an image set (``ImageSet``; its labels ride along in the batches,
    for metrics against them), no augmentation, deterministic puzzles / pairs / masks (one seeded
    generator per batch): {name: value}, the headline first."""
    model.eval()
    pretext.eval()
    data_config = model.data_config
    sums: dict[str, tuple] = {}
    for i in range(0, len(data), batch_size):
        x = data.images[i:i + batch_size].to(device)
        batch = Batch.from_uint8(x, torch.arange(i, i + len(x), device=device), data_config,
                                 labels=data.labels[i:i + batch_size].to(device))
        inputs, targets = pretext.make_batch(batch, _generator(12345, i), input_dtype(bf16))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model.predict_pretext(inputs)
        for name, (total, count) in pretext.metrics(out, targets).items():
            before = sums.get(name, (0.0, 0))
            sums[name] = (before[0] + total, before[1] + count)
    return pretext.summarize(sums)


def headline(metrics: dict[str, float], pretext: Pretext, split: str) -> dict:
    """Provenance's one key for the headline metric (``pretext_metric``), all metrics beside it."""
    name, value = next(iter(metrics.items()))
    return {"name": name, "value": round(value, 4), "split": split, "higher_is_better": pretext.higher_is_better,
            "all": {k: round(v, 4) for k, v in metrics.items()}}


def evaluate(name_or_dir: str, *, data: str | None = None, data_root: str | None = None,
             limit: int | None = None, device: str = "cpu", precision: str = "auto") -> dict:
    """The pretext's headline metric (and the others) on the held-out split, measured as ``train``
    measures it at the end (same deterministic puzzles / pairs / rotations / masks), so a shipped
    model's recorded figure can be re-checked: {"model", "pretext", "split", "images", "metric",
    "value", "metrics", "precision"}."""
    dev = _device(device)
    bf16 = _use_bf16(precision, dev)
    model = zoo.load(name_or_dir, device=dev)
    pretext = get_pretext(model.pretext, model).to(dev)
    if data is None:  # the data the model was trained on, else the pretext's default
        trained_on = ((model.config.get("provenance") or {}).get("train_config") or {}).get("data")
        data = trained_on or pretext.defaults["data"]
    train_set, test_set = (load_dataset(data, split, root=data_root, data_config=model.data_config)
                           for split in ("train", "test"))
    eval_set = pretext.eval_set(train_set, test_set).subset(limit)
    metrics = pretext_metrics(model, pretext, eval_set, dev, bf16=bf16)
    name, value = next(iter(metrics.items()))
    return {"model": model.config.get("name", str(name_or_dir)), "pretext": model.pretext, "split": eval_set.name,
            "images": len(eval_set), "metric": name, "value": value, "metrics": metrics,
            "precision": "bf16 autocast" if bf16 else "fp32"}


def _kept(ckpt: Path, step: int) -> str:
    return f"last good checkpoint {ckpt} (step {step}) kept" if ckpt.exists() else "no checkpoint was written yet"


def train(cfg: TrainConfig, *, resume: bool = False, log=print) -> Path:
    """Train ``cfg.model``'s architecture on its pretext; returns the saved model directory."""
    device = _device(cfg.device)
    bf16 = _use_bf16(cfg.precision, device)
    out = Path(cfg.out)
    ckpt = out / CHECKPOINT
    if ckpt.exists() and not resume:
        raise TrainingError(f"{ckpt} exists: pass --resume to continue it, or choose another --out")

    torch.manual_seed(cfg.seed)
    model = zoo.create(cfg.model).to(device)
    data_config = model.data_config
    try:
        pretext = get_pretext(model.pretext, model).to(device)  # refuses a model without a pretext head
    except UntrainableModel as e:
        raise TrainingError(str(e)) from None
    cfg = cfg.with_defaults(pretext.defaults)
    model = to_training_device(model, device)
    opt = make_optimizer(model, cfg)  # before the data: a bad --optimizer fails at once
    train_set = load_dataset(cfg.data, "train", root=cfg.data_root, data_config=data_config).subset(cfg.limit)

    steps_per_epoch = len(train_set) // cfg.batch_size
    if steps_per_epoch == 0:
        raise TrainingError(f"{train_set.name}: {len(train_set)} images is less than one batch of {cfg.batch_size}")
    total = max(1, int(cfg.epochs * steps_per_epoch))
    images = train_set.images.to(device)
    run = Run(model, images, train_set.labels, device, bf16, cfg.seed, log)
    pretext.begin(run)  # data checks, priors: deterministic, so a resume redoes it before loading the state
    step, elapsed = 0, 0.0
    if resume and ckpt.exists():
        step, elapsed = load_checkpoint(ckpt, model, pretext, opt, cfg, run)
        log(f"resumed {ckpt} at step {step}/{total}")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "train_config.json", json.dumps(asdict(cfg), indent=2) + "\n")

    order, order_epoch = None, -1
    prep_s = step_s = prep_total = step_total = 0.0
    reported = saved_step = step
    stats = ""
    model.train()
    pretext.train()
    t_start = time.perf_counter()
    with _progress(cfg.progress) as bar:
        task = bar.add_task(f"{model.pretext} {cfg.model}", total=total, completed=step, stats="")
        while step < total:
            epoch, pos = divmod(step, steps_per_epoch)
            if epoch != order_epoch:
                if pos == 0:  # a new epoch (a resume inside one keeps the state its checkpoint holds)
                    for p in pretext.begin_epoch(run, epoch):
                        opt.state.pop(p, None)  # re-initialised in place: its momentum / moments start over
                    model.train()
                    pretext.train()
                order = pretext.epoch_order(len(train_set), epoch, _generator(cfg.seed, epoch))
                order_epoch = epoch
            t0 = time.perf_counter()
            gen = _generator(cfg.seed, 1 << 20, step)
            idx = order[pos * cfg.batch_size:(pos + 1) * cfg.batch_size].to(device)
            inputs, targets = make_batch(images[idx], idx, pretext, data_config, cfg.crop_pad, gen, cfg.zoom_out,
                                         input_dtype(bf16))
            if device.type == "cuda":
                torch.cuda.synchronize()
            t1 = time.perf_counter()

            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, cfg)
            outputs, loss = train_step(model, opt, pretext, inputs, targets, bf16=bf16)
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
                with torch.no_grad():
                    name, value = next(iter(pretext.summarize(pretext.metrics(outputs, targets)).items()))  # no_grad: no graph
                n = step - reported
                stats = (f"loss {loss.item():.3f} {name} {value:.3f} "
                         f"{n * cfg.batch_size / step_s:,.0f} img/s, batch prep {100 * prep_s / step_s:.1f}%")
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
                save_checkpoint(ckpt, model, pretext, opt, step, cfg, elapsed + time.perf_counter() - t_start, run)
                saved_step = step
                if cfg.progress and not bar.console.is_terminal:  # logs, not a live bar
                    log(f"step {step}/{total} {stats}")
            if stopping:
                log(f"stopped after step {step} (--stop-after), checkpoint {ckpt}; resume with --resume")
                return out
    elapsed += time.perf_counter() - t_start
    return finish(model, pretext, run, cfg, train_set, out, steps=total, elapsed=elapsed,
                  batch_prep_share=prep_total / max(step_total, 1e-9), log=log)


def _command() -> str | None:
    """The sslzoo command line this process runs (``sslzoo ...`` or ``python -m sslzoo ...``), else None."""
    exe = Path(sys.argv[0])
    return " ".join(["sslzoo", *sys.argv[1:]]) if exe.name == "sslzoo" or exe.parent.name == "sslzoo" else None


def finish(model, pretext: Pretext, run: Run, cfg: TrainConfig, train_set, out: Path, *, steps: int, elapsed: float,
           batch_prep_share: float | None, log=print, machine_name: str | None = None, torch_version: str | None = None,
           stopped: dict | None = None) -> Path:
    """The end of a run: the headline metric on the held-out split, provenance, OUT/model (Hub
    layout) and the plug-in's extra files. ``stopped`` ({"step", "of"}): the run was exported from
    a checkpoint before its last step (``sslzoo export``), and the provenance says so."""
    device = run.device
    test_set = load_dataset(cfg.data, "test", root=cfg.data_root, data_config=model.data_config)
    eval_set = pretext.eval_set(train_set, test_set).subset(cfg.eval_limit)
    round_to_storage(model)  # the metric recorded is that of the weights as saved (float16 conv/linear)
    metrics = pretext_metrics(model, pretext, eval_set, device, bf16=run.bf16)
    record = headline(metrics, pretext, eval_set.name)
    log(f"{model.pretext} {record['name']} on {eval_set.name}: {record['value']:.4f}")
    steps_per_epoch = len(train_set) // cfg.batch_size
    model.config["provenance"] = {
        "trained_with": "sslzoo train" + (" (exported from a checkpoint with sslzoo export)" if stopped else ""),
        "command": None if stopped else _command(),
        "train_config": asdict(cfg),
        "dataset": train_set.name,
        "train_images": len(train_set),
        "steps": steps,
        "epochs": cfg.epochs if not stopped else round(steps / steps_per_epoch, 2),
        **({"stopped_at": {**stopped, "exported_with": _command(), "note": f"the run was cut at step {stopped['step']} of {stopped['of']}: "
                           "its learning-rate schedule did not reach its end"}} if stopped else {}),
        "seconds": round(elapsed, 1),
        "machine": machine_name or machine(device),
        "torch": torch_version or torch.__version__,
        "precision": "bf16 autocast" if run.bf16 else "fp32",
        "pretext_metric": record,
        **({"history": run.history} if run.history else {}),
        **({"batch_prep_share": round(batch_prep_share, 4)} if batch_prep_share is not None else {}),
    }
    model_dir = out / "model"
    zoo.save_pretrained(model.float().to(memory_format=torch.contiguous_format).cpu(), model_dir)
    for file, tensors in pretext.extras(run).items():
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        atomic_write(model_dir / file, lambda tmp, t=tensors: save_file(t, tmp))
    log(f"saved {model_dir}")
    return model_dir


def export(run_dir: str | Path, *, device: str = "cpu", log=print) -> Path:
    """RUN_DIR/checkpoint.safetensors -> RUN_DIR/model, as ``train`` would have saved it at that
    step: a run cut before its end (out of time, killed) still gives a loadable, measured model,
    whose provenance records the step it stopped at."""
    out = Path(run_dir)
    ckpt, cfg_file = out / CHECKPOINT, out / "train_config.json"
    for f in (ckpt, cfg_file):
        if not f.is_file():
            raise TrainingError(f"{f}: not found; sslzoo export takes the --out directory of sslzoo train")
    try:
        cfg = TrainConfig(**json.loads(cfg_file.read_text()))
        tree, meta = checkpoint.load(ckpt, "cpu")
    except (ValueError, TypeError) as e:
        raise TrainingError(f"{cfg_file}: not a training configuration ({e})") from None
    except checkpoint.CheckpointError as e:
        raise TrainingError(str(e)) from None
    dev = _device(device)
    model = zoo.create(cfg.model)
    pretext = get_pretext(model.pretext, model)
    try:
        model.load_state_dict(tree["model"], strict=True)
        pretext.load_train_state(tree["pretext"])
    except (KeyError, RuntimeError) as e:
        raise TrainingError(f"{ckpt}: does not hold a {cfg.model} run ({str(e).splitlines()[0][:200]})") from None
    model, pretext = model.to(dev), pretext.to(dev)
    train_set = load_dataset(cfg.data, "train", root=cfg.data_root, data_config=model.data_config).subset(cfg.limit)
    run = Run(model, train_set.images.to(dev), train_set.labels, dev, _use_bf16(cfg.precision, dev), cfg.seed, log)
    run.history.update(tree.get("history") or {})
    step = int(meta["step"])
    total = max(1, int(cfg.epochs * (len(train_set) // cfg.batch_size)))
    model.eval()
    return finish(model, pretext, run, cfg, train_set, out, steps=step, elapsed=float(meta.get("elapsed", "0")),
                  batch_prep_share=None, log=log, machine_name=meta.get("machine"), torch_version=meta.get("torch"),
                  stopped={"step": step, "of": total} if step < total else None)
