"""Retrieval: the Fashion-MNIST test images nearest to an image in a model's feature space.

    from sslzoo.zoo import _retrieval as rt
    positions, sims = rt.nearest(model, "conv5", pil_image, k=8)   # best first; cosine similarities

An *index* holds, for one (model, tap) and one gallery (default: the 10,000 Fashion-MNIST test
images, ``_fmnist.load_test``), each image's tap map global-average-pooled to C dims and
L2-normalised, so a dot product is a cosine similarity. The pseudo-tap ``pixels`` is the raw-pixel
baseline: the image as the model takes it (its size, channels and normalisation), area-averaged to
at most 32 x 32 (whole 3 x 3 blocks at 96 px, 5 x 5 at 160 px): an enlarged 28-px image holds no
more detail than that, and the index stays at 1,024 dims (40 MB) instead of 9,216-25,600 (0.4-1 GB).

Gallery images and queries go through the same preprocessing (``to_uint8_tensor``: the model's own
transforms, channels converted by ``convert_mode``), so a test image queried as a PNG finds itself
at rank 1 with similarity 1.

An index is built once per (trunk weights and data config, tap, gallery) and kept

* in memory, per process (least recently used ones dropped past ``MEMORY_BYTES``);
* on disk, one safetensors file per index under ``$SSLZOO_RETRIEVAL_CACHE`` (default
  ``~/.cache/sslzoo/retrieval``), written atomically, its key in its metadata. A file that cannot be
  read, was written for another key (copied, renamed) or has the wrong shape is rebuilt and
  overwritten, with one warning line on the logger ``sslzoo.retrieval``; an unwritable cache is a
  warning too, and the index then lives in memory only. Sizes: about 46 MB per AlexNet model (its five
  taps of 10,000 images, float32), 40 MB per raw-pixel index (one per data config); nothing evicts
  them (delete the folder to reclaim the space).

The key is the digest of the trunk's weights *as loaded* (``state_sha256``, as the probe's feature
cache) rather than of model.safetensors: a random-init model has no file, and saving probe heads
rewrites the file without changing a feature. A build streams the gallery in batches (memory: one
batch of inputs and maps, plus the N x D results) and computes, in the same pass, every tap of the
model with no cache file yet: a pass costs what the deepest tap costs, and the next tap is instant.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ._errors import ZooError
from ._extract import _device, _forward
from ._fmnist import Gallery, load_test
from ._hub import atomic_write, state_sha256
from ._images import TooLargeError
from ._transforms import normalize, to_uint8_tensor

PIXELS = "pixels"  # the raw-pixel baseline's pseudo-tap
PIXEL_GRID = 32  # px per side the pixel vectors are area-averaged to, at most
CACHE_ENV = "SSLZOO_RETRIEVAL_CACHE"
FORMAT = 1  # bump when the stored vectors' meaning changes
BATCH = 128  # gallery images per forward while building
MEMORY_BYTES = 512 * 2**20  # indexes kept in memory per process, at most (least recently used go)

log = logging.getLogger("sslzoo.retrieval")


@dataclass(frozen=True, eq=False)
class Index:
    """One tap's vectors of a gallery."""

    vectors: torch.Tensor  # N x D float32, rows L2-normalised (an all-zero feature stays a zero row)
    gallery: Gallery
    tap: str
    source: str  # where this call got it: "memory", "disk" or "built" (computed by this call)
    seconds: float  # what getting it took this call
    taps_built: tuple[str, ...] = ()  # "built": every tap the pass computed (this one and those not cached yet)

    def __len__(self) -> int:
        return len(self.vectors)


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "sslzoo" / "retrieval").expanduser()


_GALLERY: dict[int | None, Gallery] = {}


def default_gallery(limit: int | None = None) -> Gallery:
    """Fashion-MNIST's test split (its first ``limit`` images), read once per process."""
    if limit not in _GALLERY:
        _GALLERY[limit] = load_test(limit)
    return _GALLERY[limit]


def taps(model) -> tuple[str, ...]:
    """What an index can be built at: the model's taps, then ``PIXELS``."""
    return (*model.layers, PIXELS)


def fingerprint(model, tap: str) -> str:
    """What the vectors depend on besides the gallery: the data config, and for a model tap the
    trunk's weights (``PIXELS``: the data config alone, shared by every model taking that input)."""
    cfg = json.dumps(model.data_config, sort_keys=True)
    if tap == PIXELS:
        return hashlib.sha256(f"{PIXELS}-{PIXEL_GRID}:{cfg}".encode()).hexdigest()
    return state_sha256(model.trunk, salt=cfg)


def entry_path(cache_dir: Path, print_: str, tap: str, gallery: Gallery) -> Path:
    return Path(cache_dir) / f"v{FORMAT}" / f"{print_[:32]}-{gallery.sha256[:16]}" / f"{tap}.safetensors"


def _check_tap(model, tap: str) -> None:
    if tap not in taps(model):
        raise ZooError(f"{model.name} has no tap {tap!r}; pick one of {', '.join(taps(model))}")


# --------------------------------------------------------------------------- vectors

def model_inputs(images: torch.Tensor, data_config: dict) -> torch.Tensor:
    """uint8 B x c x h x w gallery images -> uint8 B x C x H x W at the model's input, through PIL
    exactly as a query image is (``to_uint8_tensor``)."""
    out = []
    for img in images:  # c x h x w
        arr = img.permute(1, 2, 0).numpy()  # h x w x c
        out.append(to_uint8_tensor(Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr), data_config))
    return torch.stack(out)


def pixel_vectors(x_uint8: torch.Tensor, data_config: dict) -> torch.Tensor:
    """uint8 B x C x H x W model inputs -> B x C*h*w, normalised and area-averaged to <= PIXEL_GRID px a side."""
    x = normalize(x_uint8, data_config)  # B x C x H x W float
    grid = (min(x.shape[-2], PIXEL_GRID), min(x.shape[-1], PIXEL_GRID))
    return F.adaptive_avg_pool2d(x, grid).flatten(1)


def vectors(model, x_uint8: torch.Tensor, wanted, device: torch.device) -> dict[str, torch.Tensor]:
    """uint8 B x C x H x W model inputs -> {tap: B x D float32 on the CPU, rows L2-normalised}."""
    out = {}
    layers = [t for t in wanted if t != PIXELS]
    if layers:
        out.update(_forward(model, x_uint8, layers, "avg", device))  # global average pool: B x C
    if PIXELS in wanted:
        out[PIXELS] = pixel_vectors(x_uint8, model.data_config)
    return {t: F.normalize(out[t].float(), dim=1) for t in wanted}


def _model_device(model, device) -> torch.device:
    if device is not None:
        dev = _device(device)
        model.to(dev)
        return dev
    return next(model.parameters()).device


def _build(model, wanted: list[str], gallery: Gallery, batch_size: int, device) -> dict[str, torch.Tensor]:
    """{tap: N x D} for every tap in ``wanted``, one forward per batch of the gallery."""
    dev = _model_device(model, device)
    was_training = model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {t: [] for t in wanted}
    try:
        with torch.inference_mode():
            for start in range(0, len(gallery), batch_size):
                x = model_inputs(gallery.images[start:start + batch_size], model.data_config)  # B x C x H x W uint8
                for t, v in vectors(model, x, wanted, dev).items():
                    parts[t].append(v)
    finally:
        model.train(was_training)
    return {t: torch.cat(v) for t, v in parts.items()}


# --------------------------------------------------------------------------- memory and disk

_MEMORY: OrderedDict[tuple[str, str, str], torch.Tensor] = OrderedDict()
_MEMORY_LOCK = threading.Lock()
_BUILD_LOCKS: dict[tuple[str, str], threading.Lock] = {}


def _recall(key: tuple[str, str, str]) -> torch.Tensor | None:
    with _MEMORY_LOCK:
        v = _MEMORY.get(key)
        if v is not None:
            _MEMORY.move_to_end(key)
        return v


def _remember(key: tuple[str, str, str], v: torch.Tensor) -> None:
    with _MEMORY_LOCK:
        _MEMORY[key] = v
        _MEMORY.move_to_end(key)
        total = sum(t.nbytes for t in _MEMORY.values())
        while total > MEMORY_BYTES and len(_MEMORY) > 1:
            total -= _MEMORY.popitem(last=False)[1].nbytes


def clear_memory() -> None:
    """Forget every index held in memory (the disk cache stays)."""
    with _MEMORY_LOCK:
        _MEMORY.clear()


def _build_lock(key: tuple[str, str]) -> threading.Lock:
    """One lock per (model, gallery): two first requests build once; other models' queries go on."""
    with _MEMORY_LOCK:
        return _BUILD_LOCKS.setdefault(key, threading.Lock())


def _meta(model, print_: str, tap: str, gallery: Gallery) -> dict[str, str]:
    return {"format": str(FORMAT), "fingerprint": print_, "tap": tap, "data_sha256": gallery.sha256,
            "data": gallery.name, "model": model.name, "pool": "avg" if tap != PIXELS else f"area{PIXEL_GRID}"}


_KEYED = ("format", "fingerprint", "tap", "data_sha256")  # metadata that must match for a file to be used


def _read(path: Path, meta: dict[str, str], n: int) -> torch.Tensor | None:
    """The cached N x D vectors, or None when absent or unusable (then rebuilt, with a warning)."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            stored = f.metadata() or {}
            wrong = [k for k in _KEYED if stored.get(k) != meta[k]]
            v = f.get_tensor("vectors") if not wrong else None
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        problem = f"unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    else:
        if wrong:
            problem = f"written for another index (its {', '.join(wrong)} differ)"
        elif v.dtype != torch.float32 or v.dim() != 2 or len(v) != n or v.shape[1] < 1:
            problem = f"holds a {v.dtype} tensor of shape {list(v.shape)}, expected {n} x D float32"
        elif not bool(torch.isfinite(v).all()):
            problem = "holds non-finite values"
        else:
            return v
    log.warning("retrieval cache %s: %s; rebuilding it", path, problem)
    return None


def _write(path: Path, v: torch.Tensor, meta: dict[str, str]) -> None:
    try:
        atomic_write(path, lambda tmp: save_file({"vectors": v.contiguous()}, tmp, metadata=meta))
    except OSError as e:
        log.warning("retrieval cache %s: cannot write it (%s); the index stays in memory only", path, e)


# --------------------------------------------------------------------------- the API

def index(model, tap: str, gallery: Gallery | None = None, *, cache_dir: str | Path | None = None,
          batch_size: int = BATCH, device: str | torch.device | None = None) -> Index:
    """The index of ``gallery`` (default: the Fashion-MNIST test split) at ``tap`` of ``model``
    (a ``PretextModel``): from memory, else the disk cache, else built (see the module docstring).
    ``device``: where a build runs (the model is moved there; default: where it is)."""
    t0 = time.perf_counter()
    _check_tap(model, tap)
    if batch_size < 1:
        raise ZooError(f"batch size must be at least 1, got {batch_size}")
    gallery = gallery if gallery is not None else default_gallery()
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    fp = fingerprint(model, tap)  # the same for all of a model's taps
    siblings = [tap] if tap == PIXELS else list(model.layers)  # what one pass can build
    key = lambda t: (fp, t, gallery.sha256)  # noqa: E731
    path = lambda t: entry_path(cache, fp, t, gallery)  # noqa: E731

    def done(v: torch.Tensor, source: str, built=()) -> Index:
        return Index(v, gallery, tap, source, time.perf_counter() - t0, tuple(built))

    if (v := _recall(key(tap))) is not None:
        return done(v, "memory")
    with _build_lock((fp, gallery.sha256)):
        if (v := _recall(key(tap))) is not None:  # built by another request meanwhile
            return done(v, "memory")
        if (v := _read(path(tap), _meta(model, fp, tap, gallery), len(gallery))) is not None:
            _remember(key(tap), v)
            return done(v, "disk")
        wanted = [t for t in siblings if t == tap or (_recall(key(t)) is None and not path(t).is_file())]
        built = _build(model, wanted, gallery, batch_size, device)
        for t, v in built.items():
            _write(path(t), v, _meta(model, fp, t, gallery))
            _remember(key(t), v)
        return done(built[tap], "built", wanted)


def query_vector(model, tap: str, image: Image.Image) -> torch.Tensor:
    """A PIL image -> its D-dim L2-normalised vector at ``tap``, preprocessed as the gallery was."""
    _check_tap(model, tap)
    try:
        x = to_uint8_tensor(image, model.data_config)[None]  # 1 x C x H x W uint8
    except TooLargeError as e:
        raise ZooError(str(e)) from None
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return vectors(model, x, [tap], _model_device(model, None))[tap][0]
    finally:
        model.train(was_training)


def search(idx: Index, q: torch.Tensor, k: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions, cosine similarities) of the ``k`` rows of ``idx`` closest to the unit vector
    ``q`` (D), best first."""
    if not 1 <= k <= len(idx):
        raise ZooError(f"k must be from 1 to {len(idx)} (the gallery's size), got {k}")
    if q.shape != idx.vectors.shape[1:]:
        raise ZooError(f"a {tuple(q.shape)} query for an index of {idx.vectors.shape[1]}-dim vectors")
    sims = idx.vectors @ q.to(idx.vectors.dtype)  # N
    top = torch.topk(sims, k)
    return top.indices, top.values


def nearest(model, tap: str, image: Image.Image, k: int = 8, *, gallery: Gallery | None = None,
            cache_dir: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` gallery images (default: Fashion-MNIST test) most similar to ``image`` at ``tap``
    of ``model``: (positions in the gallery, cosine similarities), best first."""
    return search(index(model, tap, gallery, cache_dir=cache_dir), query_vector(model, tap, image), k)


def precision_at_k(idx: Index, k: int = 8, *, block: int = 1024, device: str | torch.device = "cpu") -> torch.Tensor:
    """Per image of the gallery, the share of its ``k`` nearest *other* images (itself excluded)
    that have its label: N floats. Similarities are computed ``block`` rows at a time (memory:
    block x N)."""
    n = len(idx)
    if not 1 <= k < n:
        raise ZooError(f"k must be from 1 to {n - 1} (the gallery's size less the query), got {k}")
    v = idx.vectors.to(device)
    labels = idx.gallery.labels.to(device)
    out = torch.empty(n)
    for start in range(0, n, block):
        rows = torch.arange(start, min(start + block, n), device=v.device)
        sims = v[rows] @ v.T  # B x N
        sims[torch.arange(len(rows), device=v.device), rows] = -float("inf")  # not itself
        top = torch.topk(sims, k, dim=1).indices  # B x k
        out[start:start + len(rows)] = (labels[top] == labels[rows, None]).float().mean(1).cpu()
    return out
