"""Linear probe on frozen features (``sslzoo probe``): pooled, cached taps -> one logistic regression per tap.

Protocol (DESIGN.md, "Evaluation protocol"): each tap (conv1..conv5) is average-pooled to the grid
``probe_grid`` picks (a few thousand dimensions), standardised with the training set's mean/std and
fed to a multinomial logistic regression, objective ``mean CE + (wd/2) * ||W||^2`` (bias not decayed).
Two solvers of that objective:

``seed``  the seed's SGD: momentum 0.9, weight decay 5e-4, lr 0.01, batch 192, 30 epochs, lr / 10 at
          epochs 10 and 20, a seeded shuffle.
``fast``  full-batch L-BFGS (``_lbfgs``) on the cached features (its passes over them in bfloat16 where
          the hardware has native bf16 products; elsewhere float32 products over an fp16 copy of the
          features, converted block by block; the report's ``solver_pass_dtype``): low-rank
          preconditioner (top principal directions of a row sample), exact line search on the kept
          logits, start at W = 0 (first step: whitened class means), stop when the gradient norm
          has dropped 100-fold.

Features are extracted once per (trunk weights, data config, dataset split and limit, layer, grid)
and cached as safetensors under ``$SSLZOO_CACHE`` (default ``~/.cache/sslzoo/features``, at most
``$SSLZOO_CACHE_GB`` GB, see ``feature_cache``), so re-probing a model, or a second solver, reuses them.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn.functional as F

from sslzoo import zoo
from sslzoo.zoo._hub import atomic_write, atomic_write_text, state_sha256
from sslzoo.zoo._probe_head import TARGET_DIMS, LinearProbe, pool_features, probe_grid

from . import feature_cache
from ._lbfgs import Fit, LBFGSConfig, fit_lbfgs, objective, release_workspace  # noqa: F401 - re-exported
from ._precision import machine
from .augment import to_model_input
from .feature_cache import CACHE_ENV, default_cache_dir, slug as _slug  # noqa: F401 - CACHE_ENV re-exported
from .data import ImageSet, load_dataset

REPORT_FILE = "probe_report.json"
PLOT_FILE = "probe_plot.png"
RANDOM_ROW = "random init (same probe)"
MIN_INPUT_SIZE = 64  # AlexNet's smallest workable input (pool5 still 1 x 1 at 64 px)
DATASET_NAMES = {"fashion-mnist": ("Fashion-MNIST", "fashion_mnist")}  # spec -> (card name, model-index id)

# Counts of images pushed through a trunk by ``extract_pooled``: lets tests see cache hits.
STATS = {"extracted_images": 0, "cache_hits": 0}


class ProbeError(ValueError):
    """The probe cannot run (unknown tap or solver, no held-out split); the message says why."""


# --------------------------------------------------------------------------- features + cache


def trunk_fingerprint(model: zoo.PretextModel) -> str:
    """sha256 over the data config and the trunk's state dict: what determines the features.

    The trunk, not the model file's sha256: saving probe heads rewrites model.safetensors (new
    sha256) without changing the features, and random-init models have no file at all.
    """
    return state_sha256(model.trunk, salt=json.dumps(model.data_config, sort_keys=True))


def layer_grid(model: zoo.PretextModel, layer: str) -> tuple[int, tuple[int, int]]:
    """(channels, probe grid) of a tap, found by running one blank input."""
    c, h, w = model.data_config["input_size"]
    with torch.inference_mode():
        fmap = model.features(torch.zeros(1, c, h, w), (layer,))[layer]  # 1 x C x H x W
    return fmap.shape[1], probe_grid(*fmap.shape[1:])


def extract_pooled(model: zoo.PretextModel, images_uint8: torch.Tensor, layers: Iterable[str],
                   batch_size: int = 256) -> dict[str, torch.Tensor]:
    """uint8 N x C x h x w images -> {layer: N x D float32} features pooled to each tap's probe grid."""
    shapes = {layer: layer_grid(model, layer) for layer in layers}  # layer -> (channels, grid)
    n = len(images_uint8)
    # allocated outside inference mode: callers standardise these in place
    out = {layer: torch.empty(n, c * g[0] * g[1]) for layer, (c, g) in shapes.items()}
    model.eval()
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            x = to_model_input(images_uint8[start:start + batch_size], model.data_config)  # B x C x H x W
            maps = model.features(x, tuple(shapes))  # layer -> B x C x H x W
            for layer, (_, grid) in shapes.items():
                out[layer][start:start + len(x)] = pool_features(maps[layer], grid)  # B x D
    STATS["extracted_images"] += n
    return out


def cached_features(model: zoo.PretextModel, data: ImageSet, layers: Iterable[str], *,
                    cache_dir: str | Path | None = None, batch_size: int = 256,
                    fingerprint: str | None = None) -> dict[str, torch.Tensor]:
    """``extract_pooled`` through the on-disk cache: only missing taps run through the trunk."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    fingerprint = fingerprint or trunk_fingerprint(model)
    grids = {layer: layer_grid(model, layer)[1] for layer in layers}
    paths = {layer: feature_cache.entry_path(cache_dir, fingerprint, data.name, layer, grid)
             for layer, grid in grids.items()}
    out, missing = {}, []
    for layer, path in paths.items():
        feats = feature_cache.read(path, len(data))
        if feats is None:
            missing.append(layer)
        else:
            out[layer] = feats
            STATS["cache_hits"] += 1
    if missing:
        fresh = extract_pooled(model, data.images, missing, batch_size)
        wrote = [feature_cache.write(paths[layer], fresh[layer],
                                     feature_cache.meta_for(model.name, data.name, layer, grids[layer]))
                 for layer in missing]
        if any(wrote):
            feature_cache.prune(cache_dir, keep=paths.values())
        out.update(fresh)
    return {layer: out[layer] for layer in grids}


# --------------------------------------------------------------------------- standardisation

STD_FLOOR = 1e-2  # std clamped to >= STD_FLOOR * (mean std): dead units must not blow up test features


def standardiser(train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Train-set mean and std (D each) of N x D features; std clamped away from 0."""
    mean = train.mean(0)
    std = train.std(0)
    floor = max(STD_FLOOR * std.mean().item(), 1e-8)
    return mean, std.clamp_min(floor)


def standardise_(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """In place ``(x - mean) / std``: the arithmetic ``LinearProbe.forward`` does, to the same bits."""
    return x.sub_(mean).div_(std)


# --------------------------------------------------------------------------- solver (a): the seed's SGD

@dataclass(frozen=True)
class SGDProtocol:
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 192
    epochs: int = 30
    milestones: tuple[int, ...] = (10, 20)  # lr / 10 at each
    seed: int = 0


def fit_sgd(z: torch.Tensor, y: torch.Tensor, num_classes: int, p: SGDProtocol = SGDProtocol()) -> Fit:
    """The seed's protocol: a plain PyTorch loop (nn.Linear, torch.optim.SGD, MultiStepLR) over
    in-memory standardised features z (N x D), reshuffled each epoch by a seeded generator."""
    start, cpu_start = time.perf_counter(), time.process_time()
    n, d = z.shape
    gen = torch.Generator().manual_seed(p.seed)
    with torch.random.fork_rng():
        torch.manual_seed(p.seed)
        linear = torch.nn.Linear(d, num_classes)  # PyTorch's default init, reproducible
    opt = torch.optim.SGD([{"params": [linear.weight], "weight_decay": p.weight_decay},
                           {"params": [linear.bias], "weight_decay": 0.0}], lr=p.lr, momentum=p.momentum)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(p.milestones), gamma=0.1)
    for _ in range(p.epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, p.batch_size):
            idx = order[i:i + p.batch_size]
            loss = F.cross_entropy(linear(z[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    w, b = linear.weight.detach(), linear.bias.detach()
    return Fit(w, b, "seed", objective(z, y, w, b, p.weight_decay), seconds, cpu, p.epochs, {"pass_dtype": "fp32"})


# --------------------------------------------------------------------------- solver (b): fast L-BFGS (``_lbfgs``)


def fit(solver: str, z: torch.Tensor, y: torch.Tensor, num_classes: int, seed: int = 0,
        pass_dtype: str = "auto") -> Fit:
    """Fit one tap with the named solver ("fast" or "seed") under the protocol's settings.
    ``pass_dtype`` (auto, bf16, fp16-storage, fp32): the fast solver's passes (``LBFGSConfig.pass_dtype``); the
    seed's SGD always runs in float32."""
    if solver == "fast":
        return fit_lbfgs(z, y, num_classes, LBFGSConfig(seed=seed, pass_dtype=pass_dtype))
    if solver == "seed":
        return fit_sgd(z, y, num_classes, SGDProtocol(seed=seed))
    raise ProbeError(f"unknown solver {solver!r}: use fast, seed or both")


# --------------------------------------------------------------------------- heads + evaluation


def make_head(fitted: Fit, mean: torch.Tensor, std: torch.Tensor, channels: int, grid: tuple[int, int],
              storage_dtype: torch.dtype = torch.float32) -> LinearProbe:
    """The zoo's LinearProbe carrying a fit. ``storage_dtype``: round the weights the way the model
    file stores them (save_pretrained keeps 2-D weights in float16), so the accuracy measured with
    this head is the accuracy of the head a user loads."""
    head = LinearProbe(channels, grid, len(fitted.bias))
    with torch.no_grad():
        head.mean.copy_(mean)
        head.std.copy_(std)
        head.linear.weight.copy_(fitted.weight.to(storage_dtype).float())
        head.linear.bias.copy_(fitted.bias)
    return head.eval()


def head_accuracy(head: LinearProbe, pooled: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    """Top-1 of a head on raw pooled features (N x D), batch by batch with LinearProbe's own
    arithmetic, so ``model.classify`` on the same images gives the same predictions."""
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(pooled), batch_size):
            logits = head.pooled_logits(pooled[i:i + batch_size])  # B x K
            correct += (logits.argmax(1) == labels[i:i + batch_size]).sum().item()
    return correct / max(1, len(labels))


@dataclass
class LayerResult:
    channels: int
    grid: tuple[int, int]
    dims: int
    fits: dict[str, Fit]
    accuracy: dict[str, float]  # solver -> test top-1
    head: LinearProbe | None = None  # the primary solver's head


def probe_layers(model: zoo.PretextModel, train: ImageSet, test: ImageSet, layers: Iterable[str],
                 solvers: Iterable[str], *, primary: str, cache_dir: Path | None, batch_size: int = 256,
                 seed: int = 0, storage_dtype: torch.dtype = torch.float32,
                 log: Callable[[str], None] = lambda s: None) -> tuple[dict[str, LayerResult], float]:
    """Features (cached) -> standardise -> each solver per tap -> test top-1. Returns the results and
    the seconds spent getting the features."""
    layers, solvers = tuple(layers), tuple(solvers)
    start = time.perf_counter()
    fingerprint = trunk_fingerprint(model)
    log(f"{model.name}: features of {train.name} and {test.name} (cache {cache_dir or default_cache_dir()}, "
        f"trunk {fingerprint[:12]})")
    xs_train = cached_features(model, train, layers, cache_dir=cache_dir, batch_size=batch_size, fingerprint=fingerprint)
    xs_test = cached_features(model, test, layers, cache_dir=cache_dir, batch_size=batch_size, fingerprint=fingerprint)
    feature_s = time.perf_counter() - start
    log(f"{model.name}: features ready in {feature_s:.1f} s")
    num_classes = len(train.classes)
    out = {}
    for layer in layers:
        x_train, x_test = xs_train.pop(layer), xs_test.pop(layer)  # N x D, M x D (freed layer by layer)
        channels, grid = layer_grid(model, layer)
        mean, std = standardiser(x_train)
        z = standardise_(x_train, mean, std)  # in place: the raw train features are not needed again
        res = LayerResult(channels, grid, z.shape[1], {}, {})
        for solver in solvers:
            fitted = fit(solver, z, train.labels, num_classes, seed)
            head = make_head(fitted, mean, std, channels, grid, storage_dtype)
            res.fits[solver] = fitted
            res.accuracy[solver] = head_accuracy(head, x_test, test.labels, batch_size)
            if solver == primary:
                res.head = head
            log(f"{model.name} {layer} ({z.shape[1]} dims) {solver}: top-1 {100 * res.accuracy[solver]:.2f} %, "
                f"{fitted.seconds:.2f} s, objective {fitted.objective:.4f}")
        out[layer] = res
        del x_train, x_test, z
    release_workspace()
    return out, feature_s


# --------------------------------------------------------------------------- report, plot, run_probe


def protocol_text(solver: str, grids: dict[str, tuple[int, int]], dims: dict[str, int], n_train: int,
                  n_test: int, dataset: str, random_seed: int | None) -> str:
    """The exact protocol, as printed in the report and the model card."""
    sgd = SGDProtocol()
    lbfgs = LBFGSConfig()
    how = {
        "fast": (f"full-batch L-BFGS (history {lbfgs.history}, rank-{lbfgs.rank} preconditioner, exact line search) "
                 f"stopped at ||grad|| <= {lbfgs.tol:g} x its initial value"),
        "seed": (f"SGD (momentum {sgd.momentum}, weight decay 5e-4, lr {sgd.lr}, batch {sgd.batch_size}, "
                 f"{sgd.epochs} epochs, lr / 10 at epochs {' and '.join(map(str, sgd.milestones))})"),
    }
    solvers = ["fast", "seed"] if solver == "both" else [solver]
    taps = ", ".join(f"{k} {g[0]}x{g[1]} ({dims[k]})" for k, g in grids.items())
    text = (f"Frozen features, one classifier per tap. Each tap is average-pooled to a grid of at most "
            f"{TARGET_DIMS} dimensions ({taps}), standardised with the training set's mean and std, and fed to a "
            f"multinomial logistic regression minimising mean cross-entropy + (5e-4 / 2) ||W||^2 (bias not "
            f"decayed), fitted by {' and, for comparison, '.join(how[s] for s in solvers)} on {n_train} "
            f"{dataset} training images. Top-1 on {n_test} test images.")
    if random_seed is not None:
        text += (f" Random-init row: the same architecture randomly initialised (torch seed {random_seed}) "
                 "through the same probe.")
    return text


def probe_command(name: str, *, dataset: str, layers: list[str] | None, solver: str, train_limit: int | None,
                  test_limit: int | None, random_baseline: bool, save_heads: bool, input_size: int | None = None) -> str:
    """The ``sslzoo probe`` command line that reproduces a run (paths to local outputs left out)."""
    parts = ["sslzoo", "probe", str(name)]
    if dataset != "fashion-mnist":
        parts += ["--dataset", dataset]
    for layer in layers or ():
        parts += ["--layer", layer]
    if solver != "fast":
        parts += ["--solver", solver]
    if train_limit is not None:
        parts += ["--train-limit", str(train_limit)]
    if test_limit is not None:
        parts += ["--test-limit", str(test_limit)]
    if input_size is not None:
        parts += ["--input-size", str(input_size)]
    if not random_baseline:
        parts.append("--no-random")
    if not save_heads:
        parts.append("--no-save-heads")
    return " ".join(parts)


def plot_report(report: dict, path: Path) -> None:
    """Accuracy per tap: the model (each solver) and the random-init row; written atomically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = report["layers"]
    xs = range(len(layers))
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for solver, accs in report["results"]["model"].items():
        style = "-o" if solver == report["primary_solver"] else "--s"
        ax.plot(xs, [100 * accs[k]["top1"] for k in layers], style, label=f"{report['model']} ({solver})")
    for solver, accs in (report["results"].get("random") or {}).items():
        ax.plot(xs, [100 * accs[k]["top1"] for k in layers], ":^", color="gray", label=f"random init ({solver})")
    ax.set_xticks(list(xs), layers)
    ax.set_xlabel("tap (frozen features)")
    ax.set_ylabel(f"{report['dataset_name']} test top-1 (%)")
    ax.set_title(f"Linear probe: {report['model']} ({report['train_images']} train / {report['test_images']} test)",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


def _results_json(results: dict[str, LayerResult]) -> dict[str, dict[str, dict]]:
    """{solver: {layer: {top1, objective, seconds, iterations, ...}}}"""
    out: dict[str, dict[str, dict]] = {}
    for layer, res in results.items():
        for solver, fitted in res.fits.items():
            out.setdefault(solver, {})[layer] = {
                "top1": res.accuracy[solver], "objective": fitted.objective, "seconds": round(fitted.seconds, 3),
                "cpu_seconds": round(fitted.cpu_seconds, 3),
                "iterations": fitted.iterations, **fitted.info}
    return out


def _default_out_dir(name: str | Path, model: zoo.PretextModel, input_size: int | None = None) -> Path:
    """A local model directory the user named, when writable; else ./probe-<name> (never the
    package's shipped weights or the Hugging Face cache); ./probe-<name>-<S>px for a probe at
    another input size (its report is not the model's own)."""
    if input_size is not None:
        return Path.cwd() / f"probe-{_slug(model.name)}-{input_size}px"
    path = Path(str(name)).expanduser()
    if path.is_dir() and os.access(path, os.W_OK):
        return path
    return Path.cwd() / f"probe-{_slug(model.name)}"


def _at_input_size(model: zoo.PretextModel, side: int) -> None:
    """Feed ``model`` square images of ``side`` px instead of its data config's size (the trunk is
    convolutional; the pretext head, sized for the trained input, is not used by a probe)."""
    c = model.data_config["input_size"][0]
    model.data_config["input_size"] = [c, side, side]
    model.config["data_config"] = dict(model.data_config)


def _with_heads(model: zoo.PretextModel, heads: dict[str, LinearProbe], probe_cfg: dict) -> zoo.PretextModel:
    """The same model with ``config["probe"] = probe_cfg`` and exactly these probe heads."""
    new = zoo.PretextModel(dict(model.config, probe=probe_cfg))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("probes.")}
    missing, unexpected = new.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("probes.") for k in missing):
        raise RuntimeError(f"rebuilding {model.name} with probe heads lost weights: {missing} {unexpected}")
    for layer, head in heads.items():
        new.probes[layer].load_state_dict(head.state_dict())
    return new.eval()


def run_probe(model_dir_or_name: str | Path, *, dataset: str = "fashion-mnist", layers: Iterable[str] | None = None,
              solver: str = "fast", train_limit: int | None = None, test_limit: int | None = None,
              random_baseline: bool = True, save_heads: bool = True, out_dir: str | Path | None = None,
              data_root: str | Path | None = None, cache_dir: str | Path | None = None, seed: int = 0,
              batch_size: int = 256, input_size: int | None = None, log: Callable[[str], None] = lambda s: None) -> dict:
    """Probe a model (zoo name, local directory or hf-hub:...) tap by tap; write the report and plot.

    Writes ``probe_report.json`` and ``probe_plot.png`` into ``out_dir`` (default: the model
    directory when it is a local writable directory, else ./probe-<name>); with ``save_heads`` the
    primary solver's heads go into the model and the model (Hub layout, re-rendered card) is saved
    there too. ``input_size``: probe at square images of that side instead of the model's own (to
    compare models at one size); then no heads are saved (they belong to the model at its own size)
    and the report goes to ./probe-<name>-<S>px by default. Returns the report dict.
    """
    if solver not in ("fast", "seed", "both"):
        raise ProbeError(f"unknown solver {solver!r}: use fast, seed or both")
    t_start = time.perf_counter()
    model = zoo.load(model_dir_or_name)
    requested = list(layers) if layers else None
    layers = tuple(requested or model.layers)
    unknown = [k for k in layers if k not in model.layers]
    if unknown:
        raise ProbeError(f"{model.name} has no tap(s) {', '.join(unknown)}; its taps are {', '.join(model.layers)}")
    if input_size is not None:
        if input_size < MIN_INPUT_SIZE:
            raise ProbeError(f"--input-size {input_size}: the AlexNet trunks need at least {MIN_INPUT_SIZE} px")
        if input_size == model.data_config["input_size"][-1]:
            input_size = None  # the model's own size: an ordinary probe
        else:
            _at_input_size(model, input_size)
            save_heads = False
    out_dir = Path(out_dir).expanduser() if out_dir else _default_out_dir(model_dir_or_name, model, input_size)

    train = load_dataset(dataset, "train", root=data_root, data_config=model.data_config).subset(train_limit)
    test = load_dataset(dataset, "test", root=data_root, data_config=model.data_config).subset(test_limit)
    if train.name == test.name:
        raise ProbeError(f"{dataset}: no held-out split (imagefolder:PATH needs PATH/train and PATH/test)")
    dataset_name, dataset_id = DATASET_NAMES.get(dataset, (dataset, _slug(dataset.split(":")[0])))
    solvers = ("fast", "seed") if solver == "both" else (solver,)
    primary = "seed" if solver == "seed" else "fast"
    weights_dtype = (model.config.get("weights") or {}).get("dtype", "float16")
    storage = torch.float16 if weights_dtype == "float16" else torch.float32
    cache = Path(cache_dir).expanduser() if cache_dir else None
    common = dict(primary=primary, cache_dir=cache, batch_size=batch_size, seed=seed, storage_dtype=storage, log=log)

    results, feature_s = probe_layers(model, train, test, layers, solvers, **common)
    random_results, random_feature_s = None, 0.0
    if random_baseline:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            random_model = zoo.load(model_dir_or_name, pretrained=False)
        if input_size is not None:
            _at_input_size(random_model, input_size)
        random_model.config["name"] = f"{model.name} (random init)"
        random_results, random_feature_s = probe_layers(random_model, train, test, layers, solvers, **common)

    grids = {k: results[k].grid for k in layers}
    dims = {k: results[k].dims for k in layers}
    command = probe_command(model_dir_or_name, dataset=dataset, layers=requested, solver=solver,
                            train_limit=train_limit, test_limit=test_limit, random_baseline=random_baseline,
                            save_heads=save_heads, input_size=input_size)
    accuracy = {k: results[k].accuracy[primary] for k in layers}
    random_accuracy = {k: random_results[k].accuracy[primary] for k in layers} if random_results else None
    report = {
        "model": model.name, "model_source": str(model_dir_or_name), "dataset": dataset,
        "dataset_name": dataset_name, "dataset_id": dataset_id, "classes": list(train.classes),
        "train_images": len(train), "test_images": len(test), "input_size": list(model.data_config["input_size"]),
        "layers": list(layers),
        "solver": solver, "primary_solver": primary, "channels": {k: results[k].channels for k in layers},
        "grids": {k: list(g) for k, g in grids.items()}, "feature_dims": dims,
        "accuracy": accuracy, "random_accuracy": random_accuracy,
        "results": {"model": _results_json(results), "random": _results_json(random_results) if random_results else None},
        "timings": {"features_s": round(feature_s, 3), "random_features_s": round(random_feature_s, 3),
                    "fit_s": {s: round(sum(results[k].fits[s].seconds for k in layers), 3) for s in solvers}},
        "protocol": protocol_text(solver, grids, dims, len(train), len(test), dataset_name,
                                  seed if random_baseline else None),
        "command": command, "seed": seed, "torch": torch.__version__, "threads": torch.get_num_threads(),
        # dtype of each solver's passes over the features, as used (fast: bf16 only where native)
        "solver_pass_dtype": {s: results[layers[0]].fits[s].info["pass_dtype"] for s in solvers},
        "machine": machine("cpu"),
    }
    if solver == "both":
        diffs = [abs(results[k].accuracy["fast"] - results[k].accuracy["seed"]) for k in layers]
        report["agreement"] = {"max_abs_diff_pt": round(100 * max(diffs), 3),
                               "speedup": round(report["timings"]["fit_s"]["seed"] / report["timings"]["fit_s"]["fast"], 2)}

    if save_heads:
        probe_cfg = {
            "classes": list(train.classes), "dataset": dataset_name, "dataset_id": dataset_id,
            "heads": {k: {"channels": results[k].channels, "grid": list(grids[k])} for k in layers},
            "accuracy": accuracy, "baselines": {RANDOM_ROW: random_accuracy} if random_accuracy else {},
            "protocol": report["protocol"], "command": command, "solver": primary,
            "train_images": len(train), "test_images": len(test),
        }
        with_heads = _with_heads(model, {k: results[k].head for k in layers}, probe_cfg)
        zoo.save_pretrained(with_heads, out_dir, half=storage == torch.float16)
        report["saved_model_dir"] = str(out_dir)
    report["timings"]["total_s"] = round(time.perf_counter() - t_start, 3)
    report["report_path"] = str(out_dir / REPORT_FILE)
    report["plot_path"] = str(out_dir / PLOT_FILE)
    plot_report(report, out_dir / PLOT_FILE)
    atomic_write_text(out_dir / REPORT_FILE, json.dumps(report, indent=2) + "\n")
    return report
