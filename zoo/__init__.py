"""sslzoo.zoo: load, inspect and save pretext-pretrained backbones.

    from sslzoo import zoo
    m = zoo.load("rotation-alexnet")          # nn.Module in eval mode
    feats = m.features(x, layers=("conv3", "conv5"))
"""
from __future__ import annotations

from pathlib import Path

import torch

from ._errors import ZooError
from ._convert import convert, sources as convert_sources, stored
from ._examples import example_images
from ._hub import download, load_dir, parse_hub_name, read_config, save_pretrained
from ._model import PretextModel
from ._publish import PublishResult, publish
from ._registry import PACKAGE_WEIGHTS, UNTRAINED, list_models, lookup
from ._transforms import transforms
from ._validate import check_buildable, check_name

__all__ = ["ZooError", "PretextModel", "list_models", "load", "resolve", "save_pretrained", "transforms", "create",
           "example_images", "publish", "PublishResult", "convert", "convert_sources"]


def resolve(name: str | Path) -> Path:
    """Name -> local model directory: a registry name (package weights or the Hub cache),
    ``hf-hub:org/name[@rev]``, or an existing local directory in Hub layout."""
    text = str(name)
    check_name(text)  # not empty (that would be the current directory), no NUL, not over the OS's limits
    if text.startswith("hf-hub:"):
        return download(*parse_hub_name(text))
    path = _local_dir(text)
    if path is not None:
        return path
    if "/" in text or text.startswith((".", "~")) or text.endswith(".json"):
        raise ZooError(f"{text!r}: not a model directory (no such directory) and not a zoo name; "
                       "use a registry name, a local directory in Hub layout, or hf-hub:ORG/NAME[@REV]")
    entry, weights = lookup(text)
    if weights.source.startswith("package:"):
        local = PACKAGE_WEIGHTS / weights.source[len("package:"):]
        if not (local / "model.safetensors").is_file():
            raise ZooError(f"{text}: weights are missing from the installed package ({local}); reinstall sslzoo")
        return local
    if weights.source == UNTRAINED:
        raise ZooError(f"{text}: no weights released yet (`sslzoo train {entry.name}.{weights.tag}` trains them; "
                       f"zoo.load({text!r}, pretrained=False) gives the model randomly initialised)")
    if weights.source.startswith("store:"):  # converted authors' checkpoint (sslzoo convert)
        return stored(weights.source[len("store:"):])
    return download(*parse_hub_name(weights.source), sha256=weights.sha256)


def _local_dir(text: str) -> Path | None:
    """``text`` as an existing directory, or None."""
    try:
        path = Path(text).expanduser()
        return path if path.is_dir() else None
    except (OSError, RuntimeError, ValueError) as e:  # too long, ~user without a home, ...
        raise ZooError(f"{text!r}: cannot be used as a path ({e})") from None


def create(name: str) -> PretextModel:
    """Randomly initialised model of a registry entry (same architecture, head and data config)."""
    entry, weights = lookup(name)
    config = dict(weights.config, name=f"{entry.name}.{weights.tag}", provenance={"init": "random"})
    return PretextModel(config)


def load(name: str | Path, pretrained: bool = True, device: str | torch.device = "cpu") -> PretextModel:
    """Load a model by registry name, ``hf-hub:org/name[@rev]`` or local directory; eval mode."""
    if not pretrained:
        text = str(name)
        check_name(text)
        if text.startswith("hf-hub:") or _local_dir(text) is not None:
            directory = resolve(name)
            config = read_config(directory)
            config = {k: v for k, v in config.items() if k not in ("weights", "probe")}
            check_buildable(config, str(directory / "config.json"))  # bounded size, fits its input (meta device)
            return PretextModel(dict(config, provenance={"init": "random"})).to(device).eval()
        return create(text).to(device).eval()
    return load_dir(resolve(name), device=device)
