"""One model = one Hugging Face Hub repo layout: model.safetensors + config.json + README.md.

``save_pretrained`` writes such a directory (each file atomically), ``load_dir`` builds the model
from one (sha256 of the weights checked, strict state-dict loading), ``download`` resolves
``hf-hub:org/name[@rev]`` through huggingface_hub's download and cache.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ._errors import ZooError
from ._model import PretextModel
from ._validate import (check_buildable, check_config, check_inside, check_repo_id, check_revision, check_safetensors,
                        check_weights, open_regular, read_json)

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
HUB_FILES = [WEIGHTS_FILE, CONFIG_FILE, CARD_FILE]
_UMASK = os.umask(0)
os.umask(_UMASK)


def sha256_file(path: str | Path) -> str:
    """sha256 of a regular file (a FIFO or device is refused, not read: ZooError)."""
    h = hashlib.sha256()
    f, _ = open_regular(path)
    with f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def state_sha256(module: torch.nn.Module, salt: str = "") -> str:
    """sha256 of ``salt`` and a module's state dict (each tensor's name, dtype, size and bytes):
    the identity of the weights in memory (feature caches, resumable extraction)."""
    h = hashlib.sha256(salt.encode())
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous().reshape(-1)  # 1-D: 0-d tensors cannot be viewed as bytes
        h.update(f"{name}:{t.dtype}:{t.numel()}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def atomic_write(path: str | Path, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _stored_half(v: torch.Tensor, half: bool) -> bool:
    """Whether a state-dict tensor is stored in float16: with ``half``, conv/linear weights (halves
    the file); BN statistics, biases and probe standardisation stay float32."""
    return half and v.is_floating_point() and v.dim() >= 2


def _storage_dict(model: PretextModel, half: bool) -> dict[str, torch.Tensor]:
    """State dict as stored (see ``_stored_half``)."""
    out = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous()
        if _stored_half(v, half):
            v = v.half()
        out[k] = v
    return out


@torch.no_grad()
def round_to_storage(model: PretextModel, half: bool = True) -> PretextModel:
    """Round ``model``'s tensors, in place, to what ``save_pretrained`` stores (float16 conv/linear
    weights), so a figure measured on it is the figure the saved files give."""
    for k, v in model.state_dict().items():
        if _stored_half(v, half):
            v.copy_(v.half())
    return model


def save_pretrained(model: PretextModel, directory: str | Path, *, half: bool = True, card: str | None = None) -> Path:
    """Write ``model`` as a Hub-layout directory. ``card`` is the README.md text (rendered from
    cards/ by ``sslzoo.cards.render`` when None)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(_storage_dict(model, half), tmp, metadata={"format": "pt"}))
    config = dict(model.config)
    config["weights"] = {"file": WEIGHTS_FILE, "sha256": sha256_file(directory / WEIGHTS_FILE),
                         "dtype": "float16" if half else "float32"}
    model.config = config
    atomic_write_text(directory / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    if card is None:
        from ..cards import render_card  # sslzoo.cards: template + per-model card data
        card = render_card(config)
    atomic_write_text(directory / CARD_FILE, card)
    return directory


def read_config(directory: str | Path) -> dict[str, Any]:
    """config.json of a model directory, read safely and checked against the schema (``_validate``:
    a regular file of bounded size, finite numbers, required keys, types, ranges, known names);
    nothing is built. Any problem is one ZooError naming the file and the field."""
    path = Path(directory) / CONFIG_FILE
    try:
        config = read_json(path)
    except FileNotFoundError:
        raise ZooError(f"{path}: missing; a model directory needs {', '.join(HUB_FILES[:2])}") from None
    return check_config(config, str(path))


def load_dir(directory: str | Path, *, device: str | torch.device = "cpu", verify: bool = True) -> PretextModel:
    """Build the model a Hub-layout directory describes and load its weights strictly.

    Before any real tensor exists: the config is checked (``read_config``), the model is built on
    the meta device to bound its size and know its tensors, and the weights file's header must
    list exactly those tensors (``check_safetensors``); its sha256 must match config.json's.
    After reading: every value must be finite, every BatchNorm variance >= 0 (``check_weights``)."""
    directory = Path(directory)
    config = read_config(directory)
    skeleton = check_buildable(config, str(directory / CONFIG_FILE)).state_dict()  # meta: names, shapes, dtypes
    weights = directory / WEIGHTS_FILE
    described = f"{config['architecture']}/{config['pretext']}"
    check_safetensors(weights, skeleton, described)
    expected = (config.get("weights") or {}).get("sha256")
    if verify and expected and sha256_file(weights) != expected:
        raise ZooError(f"{weights}: sha256 does not match the one in {CONFIG_FILE} (corrupt or replaced file); "
                       "download or re-save the model")
    try:
        model = PretextModel(config)
    except (KeyError, TypeError, ValueError) as e:
        raise ZooError(f"{directory / CONFIG_FILE}: cannot build the model ({type(e).__name__}: {e})") from None
    try:
        state = load_file(weights)
    except (SafetensorError, OSError) as e:
        raise ZooError(f"{weights}: not a readable safetensors file ({e})") from None
    check_weights(state, skeleton, str(weights))
    own = model.state_dict()
    state = {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ZooError(f"{weights}: does not fit {described} "
                       f"({str(e).splitlines()[0]} ...)") from None
    return model.to(device).eval()


def parse_hub_name(name: str) -> tuple[str, str | None]:
    """'hf-hub:org/name@rev' -> ('org/name', 'rev' or None); ORG, NAME and REV are checked by the
    Hub's rules (``_validate.check_repo_id`` / ``check_revision``): nothing like '../x' gets through."""
    ref = name[len("hf-hub:"):]
    repo, at, rev = ref.partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ZooError(f"{name!r}: expected hf-hub:ORG/NAME[@REVISION]")
    check_repo_id(repo, repr(name))
    if at:
        check_revision(rev, repr(name))
    return repo, rev or None


def download(repo_id: str, revision: str | None = None, sha256: str | None = None) -> Path:
    """Snapshot the model files of a Hub repo into the Hugging Face cache; return the local dir.
    ``sha256`` (pinned in the registry): the downloaded model.safetensors must have it."""
    where = f"hf-hub:{repo_id}" + (f"@{revision}" if revision else "")
    check_repo_id(repo_id, where)
    if revision is not None:
        check_revision(revision, where)
    directory = _snapshot(repo_id, revision, where)
    if sha256:
        weights = directory / WEIGHTS_FILE
        if not weights.is_file():
            raise ZooError(f"{where}: the repository has no {WEIGHTS_FILE}")
        actual = sha256_file(weights)
        if actual != sha256:
            raise ZooError(f"{where}: {WEIGHTS_FILE} has sha256 {actual}, but the registry pins {sha256}; "
                           "the repository changed or the download is corrupt (not loaded)")
    return directory


def _snapshot(repo_id: str, revision: str | None, where: str) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    # the snapshot must lie in this repo's cache folder, whatever a revision or a refs/ file says
    snapshots = Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    try:
        return check_inside(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_FILES), snapshots, where)
    except LocalEntryNotFoundError:
        raise ZooError(f"{where}: not in the Hugging Face cache and the Hub cannot be reached "
                       "(offline or HF_HUB_OFFLINE=1). Connect once and run `sslzoo pull` for it, "
                       "or pass a local model directory instead.") from None
    except RevisionNotFoundError:
        raise ZooError(f"{where}: revision {revision!r} not found on the Hub") from None
    except RepositoryNotFoundError:
        raise ZooError(f"{where}: no such repository on the Hub (or it is private: log in with `hf auth login`)") from None
    except OSError as e:  # network failures surface as OSError subclasses
        raise ZooError(f"{where}: download failed ({type(e).__name__}: {e})") from None
    except ValueError as e:  # huggingface_hub's own validation (HFValidationError), should ours miss a case
        raise ZooError(f"{where}: refused by huggingface_hub ({type(e).__name__}: {e})") from None
