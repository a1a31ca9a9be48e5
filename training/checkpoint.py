"""Generic checkpoints (DINO style): any nest of dicts / lists / numbers / strings / tensors — the
model's state dict, the plug-in's train-only state, the *full* optimiser state (SGD momentum, Adam
moments and step counts) — in one safetensors file, no pickle.

Tensors go into the file under their path in the nest (``optimizer/state/3/exp_avg``); the nest's
shape goes into the file's metadata as JSON, with every tensor replaced by ``{"__tensor__": key}``
and every dict written as ``{"__dict__": [[key, value], ...]}`` so that integer keys (an
optimiser's parameter ids) come back as integers. Written atomically (``zoo._hub.atomic_write``).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from sslzoo.zoo._hub import atomic_write

TREE_KEY = "tree"


class CheckpointError(Exception):
    """A checkpoint that cannot be read; the message names the file."""


def flatten(tree: Any, tensors: dict[str, torch.Tensor], path: str = "") -> Any:
    """The JSON skeleton of ``tree``; its tensors are added to ``tensors`` (CPU, contiguous)."""
    if isinstance(tree, torch.Tensor):
        key = path or "tensor"
        tensors[key] = tree.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(tree, dict):
        return {"__dict__": [[k, flatten(v, tensors, f"{path}/{k}" if path else str(k))] for k, v in tree.items()]}
    if isinstance(tree, (list, tuple)):
        return [flatten(v, tensors, f"{path}/{i}") for i, v in enumerate(tree)]
    if isinstance(tree, float) and not math.isfinite(tree):
        return {"__float__": repr(tree)}
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return tree
    raise TypeError(f"cannot checkpoint a {type(tree).__name__} at {path or 'the top'}")


def unflatten(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__float__" in skeleton:
            return float(skeleton["__float__"])
        return {k: unflatten(v, tensors) for k, v in skeleton["__dict__"]}
    if isinstance(skeleton, list):
        return [unflatten(v, tensors) for v in skeleton]
    return skeleton


def save(path: str | Path, tree: dict[str, Any], meta: dict[str, str] | None = None) -> None:
    """Write ``tree`` (plus string ``meta``) to ``path`` atomically."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten(tree, tensors)
    metadata = {**(meta or {}), TREE_KEY: json.dumps(skeleton)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load(path: str | Path, device: torch.device | str = "cpu") -> tuple[dict[str, Any], dict[str, str]]:
    """-> (tree, meta) of a checkpoint written by ``save``; tensors on ``device``."""
    try:
        with safe_open(str(path), "pt") as f:
            meta = dict(f.metadata() or {})
        tensors = load_file(path, device=str(device))
        skeleton = json.loads(meta.pop(TREE_KEY))
    except (SafetensorError, OSError, KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e}); delete it to start over") from None
    return unflatten(skeleton, tensors), meta
