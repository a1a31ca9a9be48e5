"""On-disk cache of pooled probe features, bounded in size.

One safetensors file per (trunk fingerprint, dataset split and limit, layer, grid) under
``$SSLZOO_CACHE`` (default ``~/.cache/sslzoo/features``). Full Fashion-MNIST at 160 px is several
GB per model, so the cache keeps at most ``$SSLZOO_CACHE_GB`` (default 20) GB: after each write the
least recently used files go (a hit refreshes a file's mtime); the files of the current run never do.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Iterable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from sslzoo.zoo._hub import atomic_write

CACHE_ENV = "SSLZOO_CACHE"
LIMIT_ENV = "SSLZOO_CACHE_GB"
DEFAULT_LIMIT_GB = 20.0
FORMAT = 1  # bump when the cached tensors' meaning changes


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "sslzoo" / "features").expanduser()


def limit_bytes() -> int:
    raw = os.environ.get(LIMIT_ENV)
    try:
        gb = float(raw) if raw else DEFAULT_LIMIT_GB
    except ValueError:
        print(f"warning: {LIMIT_ENV}={raw!r} is not a number of GB; using {DEFAULT_LIMIT_GB}", file=sys.stderr)
        gb = DEFAULT_LIMIT_GB
    return int(max(gb, 0.0) * 1e9)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or "data"


def entry_path(cache_dir: Path, fingerprint: str, data_name: str, layer: str, grid: tuple[int, int]) -> Path:
    # data_name is the ImageSet's name, e.g. "fashion-mnist/train[:2000]": dataset, split and limit
    digest = hashlib.sha256(data_name.encode()).hexdigest()[:10]
    return (cache_dir / f"v{FORMAT}-{fingerprint[:24]}" / f"{slug(data_name)}-{digest}"
            / f"{layer}-{grid[0]}x{grid[1]}.safetensors")


def read(path: Path, n: int) -> torch.Tensor | None:
    """Cached N x D features, or None when absent or unusable (then they are recomputed)."""
    if not path.is_file():
        return None
    try:
        feats = load_file(path)["features"]
    except (SafetensorError, OSError, KeyError):
        return None  # corrupt or foreign file: extract again and overwrite it
    if feats.dim() != 2 or len(feats) != n:
        return None
    try:
        os.utime(path)  # recently used: the last to be evicted
    except OSError:
        pass
    return feats


def write(path: Path, feats: torch.Tensor, meta: dict[str, str]) -> bool:
    """Atomically; a read-only or full cache is a warning, never a failed probe."""
    try:
        atomic_write(path, lambda tmp: save_file({"features": feats}, tmp, metadata=meta))
        return True
    except OSError as e:
        print(f"warning: cannot cache features in {path.parent} ({e})", file=sys.stderr)
        return False


def _files(cache_dir: Path) -> list[tuple[Path, os.stat_result]]:
    """Every cached feature file (``entry_path``'s layout) with its stat; files gone meanwhile are skipped."""
    out = []
    for p in cache_dir.glob("v*-*/*/*.safetensors"):
        try:
            out.append((p, p.stat()))
        except OSError:
            continue
    return out


def _remove(p: Path) -> bool:
    """Delete one cached file and the folders it leaves empty; False if it could not be deleted."""
    try:
        p.unlink()
    except OSError:
        return False
    for d in (p.parent, p.parent.parent):
        try:
            d.rmdir()  # only when empty
        except OSError:
            break
    return True


def prune(cache_dir: Path, keep: Iterable[Path], limit: int | None = None) -> list[Path]:
    """Delete least recently used entries until the cache holds <= ``limit`` bytes; never ``keep``."""
    limit = limit_bytes() if limit is None else limit
    keep = {Path(p).resolve() for p in keep}
    files = _files(cache_dir)
    total = sum(st.st_size for _, st in files)
    removed = []
    for p, st in sorted(files, key=lambda f: f[1].st_mtime):
        if total <= limit:
            break
        if p.resolve() not in keep and _remove(p):
            total -= st.st_size
            removed.append(p)
    if removed:
        print(f"feature cache {cache_dir}: removed {len(removed)} least recently used file(s) to stay under "
              f"{limit / 1e9:.1f} GB (${LIMIT_ENV})", file=sys.stderr)
    return removed


def entries(cache_dir: Path) -> list[dict]:
    """Every cached file, most recently used first: path, model, data, layer, bytes, mtime."""
    out = []
    for p, st in _files(cache_dir):
        try:
            with safe_open(str(p), "pt") as f:  # reads the header only
                meta = f.metadata() or {}
        except (OSError, SafetensorError):
            meta = {"model": "(unreadable)"}
        out.append({"path": str(p), "model": meta.get("model", "?"), "data": meta.get("data", "?"),
                    "layer": meta.get("layer", p.stem), "bytes": st.st_size, "mtime": st.st_mtime})
    return sorted(out, key=lambda e: -e["mtime"])


def clear(cache_dir: Path) -> tuple[int, int]:
    """Remove every cached feature file and the emptied folders: (bytes freed, files that could not go)."""
    freed = failed = 0
    for p, st in _files(cache_dir):
        if _remove(p):
            freed += st.st_size
        else:
            failed += 1
    return freed, failed


def meta_for(model_name: str, data_name: str, layer: str, grid: tuple[int, int]) -> dict[str, str]:
    return {"model": model_name, "data": data_name, "layer": layer, "grid": json.dumps(grid)}
