"""Convert the authors' PyTorch checkpoints (``_sources.SOURCES``) into zoo models in Hub layout.

    zoo.convert("rotnet-alexnet", "ImageNet_RotNet_AlexNet.tar.gz")   # -> the zoo store
    zoo.load("rotation-alexnet.in1k")                                   # offline from then on

Files are read with ``torch.load(weights_only=True)`` only (a release ``.tar``/``.tar.gz`` is
opened and its one checkpoint member read from memory). What is read is bounded by
``checkpoint_limit``: a file, archive member or zip record that would inflate past it is refused
before it is read. The key names of each layout are mapped onto the zoo trunk that reimplements
the authors' network; every trunk tensor must be present with its exact shape, and anything
unknown is refused (heads and other known extras are dropped and listed in the provenance).
Values are checked as ``load_dir`` checks them (``_validate.check_weights``: dense floats,
finite, BatchNorm variances >= 0; nothing is cast silently). The model is saved in float32 by
default, so features equal the original's up to floating-point op order.
"""
from __future__ import annotations

import io
import os
import re
import tarfile
import zipfile
from zlib import error as zlib_error
from pathlib import Path
from typing import Any, Callable

import torch

from ._errors import ZooError
from ._hub import WEIGHTS_FILE, save_pretrained, sha256_file
from ._model import PretextModel
from ._sources import SOURCES, Source
from ._validate import check_config, check_weights, open_regular

STORE_ENV = "SSLZOO_HOME"
MIN_CHECKPOINT_LIMIT = 2 << 30  # bytes a checkpoint may inflate to, at least (see checkpoint_limit)
MAX_ARCHIVE_MEMBERS = 1000


# --- the local zoo store ------------------------------------------------------------------------

def store_root() -> Path:
    """``$SSLZOO_HOME/zoo`` or ``~/.cache/sslzoo/zoo``: where converted models live."""
    home = os.environ.get(STORE_ENV)
    return (Path(home).expanduser() if home else Path.home() / ".cache" / "sslzoo") / "zoo"


def stored(name: str) -> Path:
    """The store directory of a converted model, or a ZooError saying how to make it."""
    directory = store_root() / name
    if (directory / WEIGHTS_FILE).is_file():
        return directory
    alternatives = [s for s in SOURCES.values() if s.name == name]
    if not alternatives:
        raise ZooError(f"{name}: no converter produces this name")
    first, *more = alternatives
    also = "".join(f" Or, from {s.url}: `{s.command()}`." for s in more)
    raise ZooError(f"{name} is the authors' checkpoint and has not been converted on this machine yet "
                   f"(looked in {directory}). Download {first.url} and run `{first.command()}`; "
                   f"then zoo.load({name!r}) works offline.{also}")


# --- reading a checkpoint -----------------------------------------------------------------------

_MEMBER_HINT = re.compile(r"net_epoch(\d+)|checkpoint|\.pth|\.pt$|\.torch$")


def checkpoint_limit(source: Source | None = None) -> int:
    """The most bytes a checkpoint of ``source`` may take once inflated: 8x its model's float32
    size (a file also carries what is dropped: fc heads, DeepCluster's 10000-way top layer,
    optimizer state), and at least ``MIN_CHECKPOINT_LIMIT``. The model is sized on the meta device."""
    if source is None:
        return MIN_CHECKPOINT_LIMIT
    with torch.device("meta"):
        numel = sum(t.numel() for t in PretextModel(source.config()).state_dict().values())
    return max(MIN_CHECKPOINT_LIMIT, 8 * 4 * numel)


def _read_bounded(f, limit: int, what: str) -> bytes:
    """Read ``f`` in chunks, stopping with a ZooError as soon as it passes ``limit`` bytes."""
    chunks, total = [], 0
    while block := f.read(1 << 20):
        total += len(block)
        if total > limit:
            raise ZooError(f"{what}: inflates past {limit} bytes, more than a checkpoint of this model needs; not read")
        chunks.append(block)
    return b"".join(chunks)


def _check_zip(file, limit: int, what: str) -> None:
    """A zip-format torch checkpoint: its records must inflate to at most ``limit`` bytes in all
    (torch allocates each record's uncompressed size when it reads it)."""
    if not zipfile.is_zipfile(file):
        return
    try:
        with zipfile.ZipFile(file) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise ZooError(f"{what}: not a readable PyTorch checkpoint (damaged zip: {e})") from None
    total = sum(i.file_size for i in infos)
    if total > limit:
        raise ZooError(f"{what}: its records inflate to {total} bytes, more than the {limit} a checkpoint of this "
                       "model needs; not read")


def _release_member(path: Path, limit: int = MIN_CHECKPOINT_LIMIT) -> tuple[bytes, str] | None:
    """A release archive (.tar/.tar.gz holding a checkpoint): (member bytes, member name).
    None when ``path`` is no tar archive, or is PyTorch's own legacy tar format. Members are
    listed header by header; one declaring more than ``limit`` bytes stops the listing (so its
    data is never inflated), as do more than ``MAX_ARCHIVE_MEMBERS`` members."""
    try:
        if not tarfile.is_tarfile(path):
            return None
        with tarfile.open(path, "r:*") as tar:
            files, seen, total = [], 0, 0
            for m in tar:  # lazily: reaching the next header inflates only the members already checked
                seen += 1
                if seen > MAX_ARCHIVE_MEMBERS:
                    raise ZooError(f"{path}: an archive with more than {MAX_ARCHIVE_MEMBERS} members; "
                                   "extract the checkpoint and pass it instead")
                if not m.isfile():
                    continue
                total += m.size
                if m.size > limit or total > 2 * limit:
                    raise ZooError(f"{path}: archive member {m.name!r} inflates to {m.size} bytes, more than the "
                                   f"{limit} a checkpoint of this model needs; not read")
                files.append(m)
            names = {Path(m.name).name for m in files}
            if {"pickle", "storages", "tensors"} <= names:
                return None  # torch's pre-0.4 tar serialisation: torch.load reads it
            hits = [m for m in files if _MEMBER_HINT.search(Path(m.name).name)] or files
            if len(hits) > 1:  # RotNet releases: model_net_epochN; take the last epoch
                epochs = [int(e.group(1)) if (e := re.search(r"net_epoch(\d+)", m.name)) else -1 for m in hits]
                best = max(epochs)
                hits = [m for m, e in zip(hits, epochs) if e == best] if best >= 0 else hits
            if len(hits) != 1:
                listing = ", ".join(m.name for m in files[:10]) or "no files"
                raise ZooError(f"{path}: an archive, but not one with a single checkpoint inside ({listing}); "
                               "extract the checkpoint and pass it instead")
            with tar.extractfile(hits[0]) as f:
                return _read_bounded(f, limit, f"{path} (member {hits[0].name})"), hits[0].name
    except (tarfile.TarError, EOFError, OSError, zlib_error) as e:
        raise ZooError(f"{path}: a damaged archive ({type(e).__name__}: {e})") from None


def read_checkpoint(path: str | Path, limit: int = MIN_CHECKPOINT_LIMIT) -> tuple[Any, str]:
    """``torch.load(..., weights_only=True)`` of a file or of the checkpoint inside a release
    archive: (object, what was read). ``path`` must be a regular file; the file, an archive
    member, or the records of a zip checkpoint may hold at most ``limit`` bytes."""
    path = Path(path).expanduser()
    try:
        f, st = open_regular(path)  # a FIFO or a device is refused, never read
    except FileNotFoundError:
        raise ZooError(f"{path}: no such file") from None
    f.close()
    if st.st_size > limit:
        raise ZooError(f"{path}: {st.st_size} bytes, more than the {limit} a checkpoint of this model needs; not read")
    member = _release_member(path, limit)
    what = f"{path}" + (f" (member {member[1]})" if member else "")
    source = io.BytesIO(member[0]) if member else path
    _check_zip(source, limit, what)
    if member:
        source.seek(0)
    try:
        obj = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling errors come in many types; all mean "not a checkpoint"
        raise ZooError(f"{what}: not a readable PyTorch checkpoint ({_load_problem(e)})") from None
    return obj, what


def _load_problem(e: Exception) -> str:
    """torch.load's failure in one line (without its advice to drop weights_only)."""
    text = str(e)
    if "WeightsUnpickler error:" in text:
        detail = " ".join(text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0].split())
        return f"torch.load(weights_only=True) refused it: {detail[:200]}; sslzoo never unpickles arbitrary objects"
    if isinstance(e, EOFError) or not text.strip():
        return "empty or truncated file"
    return f"{type(e).__name__}: {text.strip().splitlines()[0][:200]}"


def find_state_dict(obj: Any, what: str) -> dict[str, torch.Tensor]:
    """The weights inside the known checkpoint wrappers: RotNet ``{'epoch', 'network'}``,
    DeepCluster ``{'state_dict', 'arch', ...}``, VISSL ``{'model_state_dict'}`` or
    ``{'classy_state_dict': {'base_model': {'model': {'trunk': ...}}}}``, or a bare state_dict."""
    if not isinstance(obj, dict):
        raise ZooError(f"{what}: not a checkpoint dictionary (got {type(obj).__name__})")
    state = None
    if "classy_state_dict" in obj:
        try:
            state = obj["classy_state_dict"]["base_model"]["model"]["trunk"]
        except (KeyError, TypeError):
            raise ZooError(f"{what}: a VISSL checkpoint without classy_state_dict/base_model/model/trunk") from None
    else:
        for key in ("network", "state_dict", "model_state_dict"):
            if key in obj:
                state = obj[key]
                break
    if state is None:
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            state = obj
        else:
            keys = ", ".join(map(str, list(obj)[:8]))
            raise ZooError(f"{what}: not a checkpoint this converter knows (top-level keys: {keys}); expected "
                           "'network', 'state_dict', 'model_state_dict', 'classy_state_dict' or a bare state_dict")
    if not isinstance(state, dict) or not state:
        raise ZooError(f"{what}: the checkpoint's weights are empty or not a dictionary")
    out = {}
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise ZooError(f"{what}: entry {k!r} is a {type(v).__name__}, not a tensor")
        k = str(k).replace(".module.", ".")
        for prefix in ("module.", "trunk.base_model.", "trunk.", "base_model."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


# --- key layouts: original name -> zoo name (None: a known extra that is dropped) ----------------

_ALEX_BLOCKS = {"0": "conv1", "2": "conv2", "4": "conv3", "5": "conv4", "6": "conv5"}
_ROTNET_HEAD = {"8.1": "1", "8.2": "2", "8.4": "4", "8.5": "5", "9.0": "7"}  # fc_block / classifier -> head.mlp
_CONV_BN = {"0": "conv", "1": "bn"}
_DC_FEATURES = {"0": "conv1.conv", "1": "conv1.bn", "4": "conv2.conv", "5": "conv2.bn", "8": "conv3.conv",
                "9": "conv3.bn", "11": "conv4.conv", "12": "conv4.bn", "14": "conv5.conv", "15": "conv5.bn"}


def _sobel(key: str) -> str | None:
    m = re.fullmatch(r"sobel\.([01])\.(weight|bias)", key)
    return f"trunk.stem.{m[1]}.{m[2]}" if m else None


def _vissl_alexnet(key: str) -> str | None | bool:
    """``_feature_blocks.{0,2,4,5,6}.{0,1}.*`` (RotNet's own layout, which VISSL adopted)."""
    if (s := _sobel(key)):
        return s
    m = re.fullmatch(r"_feature_blocks\.(\d+)\.(\d+)\.(\w+)", key)
    if not m:
        return False
    block, sub, param = m.groups()
    if block in _ALEX_BLOCKS and sub in _CONV_BN:
        return f"trunk.blocks.{_ALEX_BLOCKS[block]}.{_CONV_BN[sub]}.{param}"
    if f"{block}.{sub}" in _ROTNET_HEAD:
        return f"head.mlp.{_ROTNET_HEAD[f'{block}.{sub}']}.{param}"
    return None if int(block) >= 7 else False  # pool5 / fc / classifier blocks: dropped


def _deepcluster(key: str) -> str | None | bool:
    """``features.N.*`` (N = the nn.Sequential index), ``sobel.{0,1}.*``, classifier, top_layer."""
    if (s := _sobel(key)):
        return s
    if key.startswith(("classifier.", "top_layer.")):
        return None
    m = re.fullmatch(r"features\.(\d+)\.(\w+)", key)
    return f"trunk.blocks.{_DC_FEATURES[m[1]]}.{m[2]}" if m and m[1] in _DC_FEATURES else False


def _nin(key: str) -> str | None | bool:
    """``_feature_blocks.B.Block{B+1}_ConvB{J}.layers.{Conv,BatchNorm}.*``; the classifier block is dropped."""
    m = re.fullmatch(r"_feature_blocks\.(\d+)\.Block(\d+)_ConvB(\d)\.layers\.(Conv|BatchNorm)\.(\w+)", key)
    if m and int(m[2]) == int(m[1]) + 1:
        kind = "conv" if m[4] == "Conv" else "bn"
        return f"trunk.blocks.conv{m[2]}.{int(m[3]) - 1}.{kind}.{m[5]}"
    return None if re.fullmatch(r"_feature_blocks\.\d+\.Classifier\.(weight|bias)", key) else False


def _resnet(key: str) -> str | None | bool:
    """torchvision layout (``conv1``, ``bn1``, ``layerK.*``, ``fc``), optionally under ``_feature_blocks.``."""
    key = key.removeprefix("_feature_blocks.")
    if key.startswith("fc."):
        return None
    if key.startswith("conv1."):
        return "trunk.blocks.conv1.conv." + key[len("conv1."):]
    if key.startswith("bn1."):
        return "trunk.blocks.conv1.bn." + key[len("bn1."):]
    m = re.fullmatch(r"layer([1-4])\.(.+)", key)
    return f"trunk.blocks.res{int(m[1]) + 1}.{m[2]}" if m else False


def _bbrattoli(key: str) -> str | None | bool:
    """``conv.conv{K}_s1.*``; fc6 / fc7 / classifier (fc8) are dropped."""
    if key.startswith(("fc6.", "fc7.", "classifier.")):
        return None
    m = re.fullmatch(r"conv\.conv([1-5])_s1\.(weight|bias)", key)
    return f"trunk.blocks.conv{m[1]}.conv.{m[2]}" if m else False


LAYOUTS: dict[str, Callable[[str], str | None | bool]] = {
    "vissl_alexnet": _vissl_alexnet, "deepcluster": _deepcluster, "nin": _nin, "resnet": _resnet,
    "bbrattoli": _bbrattoli,
}


def map_state_dict(source: Source, state: dict[str, torch.Tensor], what: str):
    """(zoo state dict, dropped original keys); ZooError on keys the layout does not know."""
    rename = LAYOUTS[source.layout]
    mapped, dropped, unknown = {}, [], []
    for key, value in state.items():
        new = rename(key)
        if new is False:
            unknown.append(key)
        elif new is None or (new.startswith("head.") and source.head is None):
            dropped.append(key)
        else:
            mapped[new] = value
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise ZooError(f"{what}: unexpected keys for a {source.title} checkpoint: {shown} "
                       f"(is this the right file for `sslzoo convert {source.id}`?)")
    return mapped, sorted(dropped)


def _fit(model: PretextModel, mapped: dict[str, torch.Tensor], source: Source, what: str,
         origin: dict[str, str] | None = None) -> None:
    """Check names, shapes and values against the model, then load strictly. ``origin``: zoo key
    -> the checkpoint's key, to name both in messages."""
    own = model.state_dict()

    def optional(k: str) -> bool:  # BN counters (absent before torch 0.4); a fixed front end (VISSL's
        return k.endswith("num_batches_tracked") or k.startswith("trunk.stem.")  # DeepCluster has no Sobel)

    missing = [k for k in own if k not in mapped and not optional(k)]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ZooError(f"{what}: missing keys for a {source.title} checkpoint: {shown} (truncated or wrong file?)")
    extra = [k for k in mapped if k not in own]
    if extra:
        shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        raise ZooError(f"{what}: keys the {source.title} model does not have: {shown}")
    wrong = [f"{k} {tuple(v.shape)} (expected {tuple(own[k].shape)})" for k, v in mapped.items()
             if v.shape != own[k].shape]
    if wrong:
        raise ZooError(f"{what}: shape mismatch for a {source.title} checkpoint: {'; '.join(wrong[:4])}")
    labels = {k: f"{k} ({o} in the checkpoint)" for k, o in (origin or {}).items() if o != k}
    check_weights(mapped, own, what, labels)  # dense floats, finite, running_var >= 0: refused, never cast silently
    full = dict(own)
    for k, v in mapped.items():
        full[k] = v.to(own[k].dtype)
    model.load_state_dict(full, strict=True)


def convert(source: str, file: str | Path, out: str | Path | None = None, *, half: bool = False) -> Path:
    """Convert the authors' checkpoint ``file`` of ``source`` (see ``sources()``) into a Hub-layout
    model directory: ``out`` or the zoo store (then ``zoo.load(<its name>)`` finds it). Returns it."""
    if source not in SOURCES:
        raise ZooError(f"unknown source {source!r}; known: {', '.join(SOURCES)}")
    src = SOURCES[source]
    obj, what = read_checkpoint(file, checkpoint_limit(src))
    state = find_state_dict(obj, what)
    mapped, dropped = map_state_dict(src, state, what)
    config = src.config()
    if src.head is not None and not any(k.startswith("head.") for k in mapped):
        config["pretext_args"] = None  # a copy of the release without its head (e.g. VISSL's)
    path = Path(file).expanduser()
    config["name"] = src.name
    config["provenance"] = {
        "source": f"{src.title}, {src.url}", "title": src.title, "url": src.url, "license_id": src.license,
        "dataset": src.dataset, "converted_with": src.command(path.name), "converter": src.id,
        "source_file": path.name, "source_sha256": sha256_file(path), "repo": src.repo, "paper": src.paper,
        "license": src.license_note, "input_convention": src.input_convention, "dropped_keys": dropped,
        "notes": list(src.notes), "torch": torch.__version__,
    }
    check_config(config, f"the {src.id} converter's config")  # what is written must load back (load_dir checks it)
    model = PretextModel(config)
    config["layers"] = list(model.layers)
    rename = LAYOUTS[src.layout]
    _fit(model, mapped, src, what, origin={new: k for k in state if isinstance(new := rename(k), str)})
    directory = Path(out).expanduser() if out is not None else store_root() / src.name
    save_pretrained(model.eval(), directory, half=half)  # card: cards/converted.md, from the provenance
    return directory


def sources() -> dict[str, Source]:
    """Source id -> what it converts (name, download URL, paper, licence, input convention)."""
    return dict(SOURCES)


__all__ = ["convert", "sources", "stored", "store_root", "read_checkpoint", "find_state_dict", "checkpoint_limit"]
