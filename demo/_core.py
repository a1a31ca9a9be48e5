"""Shared pieces of the demo's tab functions (no gradio here): cached models, which models fit
which tab, safe upload decoding, parsing the users' choices, tensor <-> PIL for display, model cards.

Besides the zoo's entries whose weights are on this machine, the demo offers the model directories
(Hub layout, e.g. the ``model/`` folder ``sslzoo train`` writes) listed in the environment variable
``SSLZOO_DEMO_MODELS`` (``os.pathsep``-separated: ``dir1:dir2`` on Linux); such a model's name in
the demo is its directory's path, which ``zoo.load`` accepts as a name."""
from __future__ import annotations

import functools
import logging
import os
import random
import re
import threading
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sslzoo import zoo
from sslzoo.zoo._images import ImageError, convert_mode, open_image
from sslzoo.zoo.pretexts.patches import GRID, cut_tiles

MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # also the server's max_file_size
DISPLAY = 256  # px of the square the tabs show (the model sees its own smaller input)
SCALE = 3  # the patch tabs' display tiles are SCALE x the model's tile size
GAP = 6  # px between displayed tiles
MODELS_ENV = "SSLZOO_DEMO_MODELS"  # extra model directories, os.pathsep-separated
SEED_MAX = 2**32 - 1

log = logging.getLogger("sslzoo.demo")


class DemoError(ValueError):
    """A problem the user can fix (bad upload, unknown model, ...): shown in the UI as one line."""


# --- models ----------------------------------------------------------------------------------------

_LOAD_LOCK = threading.Lock()


@functools.lru_cache(maxsize=None)
def _load(name: str) -> zoo.PretextModel:
    return zoo.load_dir(model_dir(name))


def get_model(name: str) -> zoo.PretextModel:
    """The model, loaded once per process (eval mode, CPU) and shared by all requests."""
    if not name:
        raise DemoError("pick a model first")
    with _LOAD_LOCK:  # two first requests for one model load it once
        try:
            return _load(name)
        except zoo.ZooError as e:
            raise DemoError(str(e)) from None


@functools.lru_cache(maxsize=None)
def model_config(name: str) -> dict:
    """config.json of a zoo entry (cheap: no weights are read)."""
    return zoo.read_config(model_dir(name))


@functools.lru_cache(maxsize=None)
def model_dir(name: str) -> Path:
    """The entry's local directory, resolved once per process (a Hub entry: one cache lookup)."""
    return zoo.resolve(name)


def pretext_model(name: str, pretext: str) -> zoo.PretextModel:
    """``get_model`` for a tab that asks the model to predict ``pretext`` (one of ``m.pretexts``)."""
    m = get_model(name)
    if pretext not in m.pretexts:
        raise DemoError(f"{name} is a {'/'.join(m.pretexts)} model; this tab needs a {pretext} model")
    return m.for_pretext(pretext)  # a multi-task model: the view with that task's head


def config_pretexts(cfg: dict) -> tuple[str, ...]:
    """What a model of this config can predict (its ``PretextModel.pretexts``), without building
    it; () for a converted trunk saved without its pretext head (``pretext_args`` None)."""
    if cfg.get("pretext_args", {}) is None or not cfg.get("pretext"):
        return ()
    tasks = (cfg.get("pretext_args") or {}).get("tasks") if cfg["pretext"] == "multi-task" else None
    return tuple(tasks) if isinstance(tasks, dict) else (cfg["pretext"],)


def extra_models() -> list[str]:
    """The model directories named in ``$SSLZOO_DEMO_MODELS`` (``os.pathsep``-separated), each
    once, in order; read at every call."""
    raw = os.environ.get(MODELS_ENV, "")
    return list(dict.fromkeys(p.strip() for p in raw.split(os.pathsep) if p.strip()))


_SKIPPED: set[str] = set()


def models_for(pretext: str | None = None, probes: bool = False) -> list[str]:
    """Models whose weights are on this machine and that fit a tab: the zoo's entries, then the
    directories in ``$SSLZOO_DEMO_MODELS``; those that can predict ``pretext`` (a model with
    several pretexts fits each of their tabs), or that have probe heads stored with them
    (``probes``). An entry without weights here (untrained, a Hub entry not in the local cache,
    a converted checkpoint not converted yet) or a listed directory that is no model is left out.
    For a ``pretext``, the models of that pretext alone come first (a tab opens on its own pretext's
    model), then those that answer it among others (multi-task), each group in the order above."""
    names, shared = [], []
    extra = extra_models()
    for name in [*zoo.list_models(), *extra]:
        try:
            cfg = model_config(name)
        except zoo.ZooError as e:  # no weights here (offline, untrained): not offered
            if name in extra and name not in _SKIPPED:
                _SKIPPED.add(name)
                log.warning("%s: %s is left out (%s)", MODELS_ENV, name, e)
            continue
        pretexts = config_pretexts(cfg)
        if pretext is not None and pretext not in pretexts:
            continue  # another pretext, or a converted trunk saved without its pretext head
        if probes and not (cfg.get("probe") or {}).get("heads"):
            continue
        (shared if pretext is not None and len(pretexts) > 1 else names).append(name)
    return names + shared


def model_label(name: str) -> str:
    """How a model picker shows ``name``: itself for a zoo entry, ``<config name> (<dir>)`` for a
    model directory."""
    try:
        if not Path(name).expanduser().is_dir():
            return name
        return f"{model_config(name).get('name') or Path(name).name} ({name})"
    except (OSError, RuntimeError, ValueError, zoo.ZooError):
        return name


def probe_plot(name: str) -> str | None:
    """Path of the model's per-layer probe accuracy plot (written by ``sslzoo probe``), if any."""
    path = model_dir(name) / "probe_plot.png"
    return str(path) if path.is_file() else None


_FRONT_MATTER = re.compile(r"\A---\s*\n.*?\n---\s*(\n|\Z)", re.S)


def model_card(name: str) -> str:
    """The model's README.md without its YAML front matter (markdown to render)."""
    path = model_dir(name) / "README.md"
    if not path.is_file():
        return f"# {name}\n\n(no model card)"
    return _FRONT_MATTER.sub("", path.read_text(encoding="utf-8"), count=1).lstrip()


# --- the users' choices ----------------------------------------------------------------------------

def parse_index(value, size: int, what: str, rng: random.Random | None = None) -> int:
    """A user's index (int, float, numeric string) in 0..size-1; None/"" draws one at random."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "random")):
        return (rng or random).randrange(size)
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise DemoError(f"{what} must be a number from 0 to {size - 1}, got {value!r}") from None
    if f != int(f) or not 0 <= f < size:
        raise DemoError(f"{what} must be a whole number from 0 to {size - 1}, got {value!r}")
    return int(f)


def parse_seed(value) -> int:
    """A user's random seed (int, float, numeric string) in 0..SEED_MAX; None/"" -> 0."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return 0
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise DemoError(f"seed must be a whole number from 0 to {SEED_MAX}, got {value!r}") from None
    if not f.is_integer() or not 0 <= f <= SEED_MAX:
        raise DemoError(f"seed must be a whole number from 0 to {SEED_MAX}, got {value!r}")
    return int(f)


# --- uploads ---------------------------------------------------------------------------------------

def load_upload(upload) -> Image.Image:
    """An uploaded file (path) or an image -> decoded PIL image; ``DemoError`` with a reason for
    a missing, oversized, empty, non-image, truncated or corrupt upload (never a traceback)."""
    if upload is None or (isinstance(upload, str) and not upload):
        raise DemoError("upload an image first (or click one of the examples)")
    if isinstance(upload, Image.Image):
        return upload
    path = os.fspath(upload)
    label = Path(path).name or path  # the user's file name, not the server's temp dir
    try:
        size = os.path.getsize(path)
    except OSError:
        size = None
    if size is not None and size > MAX_UPLOAD_BYTES:
        raise DemoError(f"{label}: too large ({size / 2**20:.1f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB)")
    try:
        return open_image(path)
    except ImageError as e:
        raise DemoError(f"{label}: {e.reason}") from None


def square(img: Image.Image, size: int = DISPLAY) -> Image.Image:
    """Colour display copy: shorter side to ``size``, centre square (what the model sees, larger)."""
    img = convert_mode(img, "RGB")
    scale = size / min(img.size)
    w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
    img = img.resize((w, h), Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.LANCZOS)
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def model_input(m: zoo.PretextModel, img: Image.Image) -> torch.Tensor:
    """PIL -> the model's normalised C x H x W input."""
    return zoo.transforms(m)(img)


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> 3 x H x W float in [0, 1]."""
    arr = np.asarray(convert_mode(img, "RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def to_pil(x: torch.Tensor, size: int | None = None) -> Image.Image:
    """C x H x W float in [0, 1] -> PIL (nearest-neighbour upscaled to ``size`` if given)."""
    arr = (x.detach().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    if size and img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.NEAREST)
    return img


def as_shown(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] pixels -> the values an 8-bit image of them holds (float, in [0, 1]): what ``to_pil``
    shows, so a PSNR measured on these is the PSNR of the images on the page."""
    return (x.detach().float().clamp(0, 1) * 255).round() / 255


def enlarge(img: Image.Image, factor: int) -> Image.Image:
    """Nearest-neighbour enlargement by a whole ``factor`` (each pixel a factor x factor block)."""
    return img if factor <= 1 else img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)


def display_factor(side: int, target: int = DISPLAY) -> int:
    """The whole factor that brings a ``side``-px image closest to ``target`` px (at least 1)."""
    return max(1, round(target / max(1, side)))


def display_tiles(m: zoo.PretextModel, img: Image.Image, cells: torch.Tensor) -> torch.Tensor:
    """Colour tiles of ``img`` at ``cells`` of the 3 x 3 grid, in a patch model's tile geometry
    (its head's cell and tile), SCALE x larger, for display: K x 3 x t x t."""
    cell, tile = m.head.cell * SCALE, m.head.tile * SCALE
    disp = to_tensor(square(img, GRID * cell))[None]
    return cut_tiles(disp, cell=cell, tile=tile, cells=cells[None])[0]


def pct(p: float) -> str:
    return f"{100 * p:.1f} %"


def probs_dict(probs: torch.Tensor, labels: list[str], top: int | None = None) -> dict[str, float]:
    """1-D probabilities -> {label: probability}, best first (``top`` of them)."""
    p = probs.float()
    order = torch.argsort(p, descending=True)[:top]
    return {labels[i]: float(p[i]) for i in order.tolist()}
