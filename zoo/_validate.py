"""Checks on what comes from outside: a model directory, a Hub name, an authors' checkpoint.

A model directory (or Hub repo) is data from whoever published it, so everything here runs
*before* a tensor is built or read. A hostile or broken input ends in one ``ZooError`` naming
the file and the field (or tensor), never in a traceback, a hang or a huge allocation:

- ``read_json`` (with ``open_regular``): config.json must be a regular file (a FIFO, a device
  such as /dev/zero or a directory is refused without being read, so nothing blocks), at most
  ``MAX_CONFIG_BYTES``, valid UTF-8 JSON with finite numbers, nested at most ``MAX_DEPTH`` deep.
- ``check_config``: the schema, in plain Python (``sslzoo info`` needs nothing more): required
  keys, types, a range for every size, known names (architectures, pretexts, interpolation,
  channels), the arguments each builder and head takes.
- ``check_buildable``: the model the config describes, built on the meta device (shapes only, no
  memory): at most ``MAX_ELEMENTS`` parameters and buffers, an input the trunk accepts, probe
  heads that fit their taps.
- ``check_safetensors``: the weights file's header (read and bounded here, not by the loader)
  against that model: the same tensor names, shapes and compatible dtypes, sane offsets.
- ``check_weights``: tensor values, for ``load_dir`` and the converters alike: dense, not meta,
  floating where the model has floats, finite, BatchNorm ``running_var`` >= 0.
- ``check_name``, ``check_repo_id``, ``check_revision``, ``check_inside``: model names and
  ``hf-hub:ORG/NAME@REV`` (the Hub's own rules, and the snapshot must lie in the HF cache).
"""
from __future__ import annotations

import inspect
import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ._errors import ZooError
from ._frontends import FRONT_ENDS
from ._model import ARCHITECTURES, PretextModel
from ._sources import SOURCES
from ._transforms import _INTERP
from .pretexts import HEADS

MAX_CONFIG_BYTES = 1 << 20  # the shipped config.json files are ~4 KB
MAX_DEPTH = 32  # JSON nesting (the shipped ones: 4)
MAX_SIDE = 1024  # input px per side (the real models: 32..227)
MAX_CHANNELS = 4
MAX_WIDTH = 16384  # head widths (RotNet's ImageNet head: 4096)
MAX_PERMUTATIONS = 10000  # jigsaw sets (the paper: up to 1000); the greedy set takes ~1 s per 10000
MAX_CLASSES = 10000
MAX_ELEMENTS = 200_000_000  # parameters + buffers (800 MB float32; the largest real model, RotNet's AlexNet with its head: 57 M)
MAX_HEADER_BYTES = 16 << 20  # safetensors header (ResNet-50's: ~30 KB)
MAX_TEXT = 256  # names, class names

CHANNELS = {"L": 1, "RGB": 3}
INTERPOLATIONS = tuple(_INTERP)
# pretexts the zoo knows: those with a head here, and those whose converted trunks come without one
KNOWN_PRETEXTS = sorted(set(HEADS) | {s.pretext for s in SOURCES.values()})
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_ST_DTYPES = {"F64": (torch.float64, 8), "F32": (torch.float32, 4), "F16": (torch.float16, 2),
              "BF16": (torch.bfloat16, 2), "I64": (torch.int64, 8), "I32": (torch.int32, 4),
              "I16": (torch.int16, 2), "I8": (torch.int8, 1), "U8": (torch.uint8, 1), "BOOL": (torch.bool, 1)}


def _fail(where: str, field: str, problem: str):
    raise ZooError(f"{where}: {field}: {problem}")


def _show(value: Any) -> str:
    """A hostile value, short and on one line."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


# --- files ---------------------------------------------------------------------------------------

def open_regular(path: str | Path, limit: int | None = None) -> tuple[BinaryIO, os.stat_result]:
    """Open ``path`` for reading only if it is a regular file (symlinks followed, as the HF cache
    uses them) of at most ``limit`` bytes. It is stat'ed before it is opened and opened with
    O_NONBLOCK, so a FIFO cannot block and a device (/dev/zero) is never read.
    FileNotFoundError passes through; the rest is ZooError."""
    path = Path(path)
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ZooError(f"{path}: not a regular file ({_file_kind(st.st_mode)}); refusing to read it")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as e:  # permissions, a name too long, a NUL in it, ...
        raise ZooError(f"{path}: cannot be read ({getattr(e, 'strerror', None) or e})") from None
    f = os.fdopen(fd, "rb")
    st = os.fstat(fd)  # what was opened (it may have been swapped since the stat)
    if not stat.S_ISREG(st.st_mode):
        f.close()
        raise ZooError(f"{path}: not a regular file ({_file_kind(st.st_mode)}); refusing to read it")
    if limit is not None and st.st_size > limit:
        f.close()
        raise ZooError(f"{path}: {st.st_size} bytes, more than the {limit} allowed; refusing to read it")
    return f, st


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a plain file"


def read_json(path: str | Path, limit: int = MAX_CONFIG_BYTES) -> Any:
    """Parse a small JSON file safely (see ``open_regular``): at most ``limit`` bytes, strict
    UTF-8, every number finite (Python's json takes NaN/Infinity and 1e999 -> inf, JSON does not),
    nested at most ``MAX_DEPTH`` deep. FileNotFoundError passes through; the rest is ZooError."""
    path = Path(path)
    f, _ = open_regular(path, limit)
    with f:
        data = f.read(limit + 1)
    if len(data) > limit:  # grew after the stat
        raise ZooError(f"{path}: more than {limit} bytes; refusing to read it")
    try:
        obj = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ZooError(f"{path}: not valid JSON (nested too deeply)") from None
    except UnicodeDecodeError as e:
        raise ZooError(f"{path}: not valid JSON (not UTF-8: {e.reason} at byte {e.start})") from None
    except ValueError as e:  # JSONDecodeError, and ints too long to convert
        raise ZooError(f"{path}: not valid JSON ({e})") from None
    _check_plain(obj, str(path), "", 0)
    return obj


def _field(parent: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    key = str(key)
    name = key if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", key) else _show(key)
    return f"{parent}.{name}" if parent else name


def _check_plain(obj: Any, where: str, field: str, depth: int) -> None:
    """No non-finite number anywhere, no nesting beyond MAX_DEPTH."""
    if depth > MAX_DEPTH:
        raise ZooError(f"{where}: {field or 'top level'}: nested more than {MAX_DEPTH} levels deep")
    if isinstance(obj, float) and not math.isfinite(obj):
        _fail(where, field or "top level", f"{obj} is not a JSON number (numbers must be finite)")
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in items:
        _check_plain(value, where, _field(field, key), depth + 1)


# --- the config schema ---------------------------------------------------------------------------

def _int(where: str, field: str, value: Any, lo: int, hi: int) -> int:
    if type(value) is not int:
        _fail(where, field, f"must be an integer, got {_kind(value)} {_show(value)}")
    if not lo <= value <= hi:
        _fail(where, field, f"must be in {lo}..{hi}, got {_show(value)}")
    return value


def _number(where: str, field: str, value: Any, lo: float, hi: float, what: str = "") -> float:
    if type(value) not in (int, float) or not math.isfinite(value):
        _fail(where, field, f"must be a finite number, got {_kind(value)} {_show(value)}")
    if not lo <= value <= hi:
        _fail(where, field, f"must be {what or f'in {lo:g}..{hi:g}'}, got {_show(value)}")
    return value


def _text(where: str, field: str, value: Any, choices=None, max_len: int = MAX_TEXT) -> str:
    if not isinstance(value, str):
        _fail(where, field, f"must be a string, got {_kind(value)} {_show(value)}")
    if choices is not None and value not in choices:
        _fail(where, field, f"unknown value {_show(value)}; known: {', '.join(sorted(choices))}")
    if not 0 < len(value) <= max_len or not value.isprintable():
        _fail(where, field, f"must be 1 to {max_len} printable characters, got {_show(value)}")
    return value


def _object(where: str, field: str, value: Any, *, nullable: bool = False) -> dict:
    if value is None and nullable:
        return {}
    if not isinstance(value, dict):
        _fail(where, field, f"must be an object{' or null' if nullable else ''}, got {_kind(value)} {_show(value)}")
    return value


def _array(where: str, field: str, value: Any, lo: int, hi: int) -> list:
    if not isinstance(value, list):
        _fail(where, field, f"must be an array, got {_kind(value)} {_show(value)}")
    if not lo <= len(value) <= hi:
        count = f"exactly {lo}" if lo == hi else f"{lo} to {hi}"
        _fail(where, field, f"must have {count} entries, got {len(value)}")
    return value


def _required(where: str, obj: dict, key: str, parent: str = "") -> Any:
    if key not in obj:
        _fail(where, _field(parent, key), f"missing (required{' in ' + parent if parent else ''})")
    return obj[key]


def _bool(where: str, field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        _fail(where, field, f"must be true or false, got {_kind(value)} {_show(value)}")
    return value


def _widths(where: str, field: str, value: Any) -> Any:
    if isinstance(value, list):
        for i, w in enumerate(_array(where, field, value, 1, 8)):
            _int(where, f"{field}[{i}]", w, 1, MAX_WIDTH)
        return value
    return _int(where, field, value, 1, MAX_WIDTH)


# Every argument a builder or head may get from config.json, and its range. An argument a builder
# or head takes but that has no rule here is refused: a new one needs its line (and its range).
_ARCH_ARGS: dict[str, Callable[[str, str, Any], Any]] = {
    "in_chans": lambda w, f, v: _int(w, f, v, 1, MAX_CHANNELS),
    "num_blocks": lambda w, f, v: _int(w, f, v, 3, 16),
    "avg_on_conv3": _bool,
    "front_end": lambda w, f, v: v if v is None else _text(w, f, v, tuple(FRONT_ENDS)),
    "layer4_stride": lambda w, f, v: _int(w, f, v, 1, 2),
    "width": lambda w, f, v: _number(w, f, v, 0.0625, 4, "a channel multiplier in 1/16..4"),
}
_PRETEXT_ARGS: dict[str, Callable[[str, str, Any], Any]] = {
    "hidden": lambda w, f, v: _int(w, f, v, 1, MAX_WIDTH),
    "num_classes": lambda w, f, v: _int(w, f, v, 1, MAX_CLASSES),
    "num_clusters": lambda w, f, v: _int(w, f, v, 2, 100_000),
    "num_permutations": lambda w, f, v: _int(w, f, v, 1, MAX_PERMUTATIONS),
    "permutation_seed": lambda w, f, v: _int(w, f, v, 0, 2**32 - 1),
    "tile_hidden": _widths,
    "cell": lambda w, f, v: _int(w, f, v, 1, MAX_SIDE),
    "tile": lambda w, f, v: _int(w, f, v, 1, MAX_SIDE),
    # reconstruction heads (zoo/pretexts/denoising.py, context_encoder.py)
    "decoder_width": lambda w, f, v: _int(w, f, v, 1, MAX_WIDTH),
    "noise": lambda w, f, v: _text(w, f, v, ("mask", "gaussian")),
    "noise_level": lambda w, f, v: _number(w, f, v, 0, 1, "in 0..1 (a drop probability or a sigma in [0, 1] pixel units)"),
    "mask": lambda w, f, v: _text(w, f, v, ("central", "random")),
    "overlap": lambda w, f, v: _int(w, f, v, 0, MAX_SIDE // 4),
    "overlap_weight": lambda w, f, v: _number(w, f, v, 0, 1000),
    "adversarial": lambda w, f, v: _number(w, f, v, 0, 1),
    # the multi-task head (zoo/pretexts/multi_task.py)
    "tasks": lambda w, f, v: _tasks(w, f, v),
    "weights": lambda w, f, v: _task_weights(w, f, v),
    "lasso": _bool,
    # colour heads (zoo/pretexts/colorization.py, split_brain.py)
    "grid": lambda w, f, v: _number(w, f, v, 2, 50, "the ab grid's step in Lab units, 2..50"),
    "neighbours": lambda w, f, v: _int(w, f, v, 1, 32),
    "sigma": lambda w, f, v: _number(w, f, v, 0.1, 100),
    "rebalance": lambda w, f, v: _number(w, f, v, 0, 1, "lambda in 0..1"),
    "temperature": lambda w, f, v: _number(w, f, v, 0.01, 10),
    "l_bins": lambda w, f, v: _int(w, f, v, 2, 1000),
    # the exemplar head (zoo/pretexts/exemplar.py)
    "loss": lambda w, f, v: _text(w, f, v, ("softmax", "triplet")),
    "embedding_dim": lambda w, f, v: _int(w, f, v, 1, MAX_WIDTH),
    "deformations": lambda w, f, v: _int(w, f, v, 1, 64),
    # the counting head (zoo/pretexts/counting.py)
    "count_dim": lambda w, f, v: _int(w, f, v, 1, MAX_WIDTH),
}


def _tasks(where: str, field: str, value: Any) -> dict:
    """A multi-task model's ``tasks``: {pretext: that pretext's head arguments}, each checked as a
    single-task model's ``pretext_args`` are."""
    tasks = _object(where, field, value)
    if not tasks:
        _fail(where, field, "must name at least one task")
    for task, args in tasks.items():
        if task not in HEADS or task == "multi-task":
            _fail(where, _field(field, task), f"not a task a multi-task model can have "
                  f"(known: {', '.join(sorted(set(HEADS) - {'multi-task'}))})")
        head = _arguments(where, _field(field, task), _object(where, _field(field, task), args), HEADS[task],
                          f"the {task} head", _PRETEXT_ARGS)
        if "tile" in head and head["tile"] > head["cell"]:
            _fail(where, _field(_field(field, task), "tile"), f"{head['tile']} is larger than its cell {head['cell']}")
    return tasks


def _task_weights(where: str, field: str, value: Any) -> dict | None:
    if value is None:
        return None
    weights = _object(where, field, value)
    for task, w in weights.items():
        _number(where, _field(field, task), w, 0, 1000)
    return weights


def _parameters(fn: Callable) -> dict[str, inspect.Parameter]:
    params = dict(inspect.signature(fn).parameters)
    for given in ("trunk", "input_size"):  # a head builder's first arguments come from the model, not the config
        params.pop(given, None)
    return params


def _arguments(where: str, field: str, args: dict, fn: Callable, owner: str, rules: dict) -> dict[str, Any]:
    """Check ``args`` against what ``fn`` takes and ``rules``; return them with ``fn``'s defaults filled in."""
    params = _parameters(fn)
    for key, value in args.items():
        if key not in params or key not in rules:
            _fail(where, _field(field, key), f"not an argument of {owner} (it takes: {', '.join(params) or 'none'})")
        rules[key](where, _field(field, key), value)
    return {k: args.get(k, p.default) for k, p in params.items()}


def check_config(config: Any, where: str) -> dict[str, Any]:
    """The schema of config.json (``where`` names the file in messages): what building the model,
    its transforms, extraction and ``sslzoo info`` read. Unknown top-level keys and free-form ones
    (``provenance``, ``probe.baselines``, ...) pass, bounded by the file size. Returns ``config``."""
    if not isinstance(config, dict):
        _fail(where, "top level", f"must be a JSON object with architecture, pretext and data_config, got {_kind(config)}")
    arch = _text(where, "architecture", _required(where, config, "architecture"), ARCHITECTURES)
    arch_args = _arguments(where, "arch_args", _object(where, "arch_args", config.get("arch_args", {})),
                           ARCHITECTURES[arch], arch, _ARCH_ARGS)
    in_chans = arch_args.get("in_chans", 3)

    pretext = _text(where, "pretext", _required(where, config, "pretext"), KNOWN_PRETEXTS)
    pretext_args = config.get("pretext_args", {})
    if pretext_args is not None:
        if pretext not in HEADS:
            _fail(where, "pretext_args", f"{pretext} has no pretext head in the zoo; it must be null (trunk only)")
        head = _arguments(where, "pretext_args", _object(where, "pretext_args", pretext_args), HEADS[pretext],
                          f"the {pretext} head", _PRETEXT_ARGS)
        if "tile" in head and head["tile"] > head["cell"]:
            _fail(where, "pretext_args.tile", f"{head['tile']} is larger than pretext_args.cell {head['cell']}")

    data = _object(where, "data_config", _required(where, config, "data_config"))
    size = _array(where, "data_config.input_size", _required(where, data, "input_size", "data_config"), 3, 3)
    c = _int(where, "data_config.input_size[0]", size[0], 1, MAX_CHANNELS)
    for i in (1, 2):
        _int(where, f"data_config.input_size[{i}]", size[i], 1, MAX_SIDE)
    channels = _text(where, "data_config.channels", data.get("channels", "RGB"), CHANNELS)
    if CHANNELS[channels] != c:
        _fail(where, "data_config.channels", f"{channels!r} gives {CHANNELS[channels]}-channel input, but "
              f"data_config.input_size has {c} channel(s)" + ("" if "channels" in data else " (missing: it defaults to 'RGB')"))
    if c != in_chans:
        _fail(where, "arch_args.in_chans", f"cannot build the model: data_config.input_size has {c} channel(s) "
              f"but the trunk takes {in_chans}")
    for key, lo, hi, what in (("mean", -1e4, 1e4, "in -10000..10000"), ("std", 1e-4, 1e4, "a positive number in 0.0001..10000")):
        values = _required(where, data, key, "data_config")
        if not isinstance(values, list) or len(values) != c:
            _fail(where, f"data_config.{key}", f"must be an array of {c} number(s), one per input channel, got {_show(values)}")
        for i, v in enumerate(values):
            _number(where, f"data_config.{key}[{i}]", v, lo, hi, what)
    if "interpolation" in data:
        _text(where, "data_config.interpolation", data["interpolation"], INTERPOLATIONS)
    if "crop_pct" in data:
        _number(where, "data_config.crop_pct", data["crop_pct"], 0.25, 1.0, "in 0.25..1 (the centre crop's share)")

    if "name" in config:
        _text(where, "name", config["name"])
    if "layers" in config:
        for i, layer in enumerate(_array(where, "layers", config["layers"], 1, 64)):
            _text(where, f"layers[{i}]", layer)
    weights = _object(where, "weights", config.get("weights"), nullable=True)
    if weights.get("file") is not None:
        _text(where, "weights.file", weights["file"], ("model.safetensors",))
    if weights.get("sha256") is not None and not (isinstance(weights["sha256"], str)
                                                  and re.fullmatch(r"[0-9a-f]{64}", weights["sha256"])):
        _fail(where, "weights.sha256", f"must be 64 lowercase hex digits, got {_show(weights['sha256'])}")
    if weights.get("dtype") is not None:
        _text(where, "weights.dtype", weights["dtype"], ("float16", "bfloat16", "float32", "float64"))
    _check_probe(where, _object(where, "probe", config.get("probe"), nullable=True))
    provenance = _object(where, "provenance", config.get("provenance"), nullable=True)
    if provenance.get("pretext_accuracy"):  # models saved before the headline metric had one generic key
        pa = _object(where, "provenance.pretext_accuracy", provenance["pretext_accuracy"])
        _number(where, "provenance.pretext_accuracy.value", _required(where, pa, "value", "provenance.pretext_accuracy"), 0, 1)
        _text(where, "provenance.pretext_accuracy.split", _required(where, pa, "split", "provenance.pretext_accuracy"))
    if provenance.get("pretext_metric"):
        field = "provenance.pretext_metric"
        pm = _object(where, field, provenance["pretext_metric"])
        _text(where, f"{field}.name", _required(where, pm, "name", field))
        _number(where, f"{field}.value", _required(where, pm, "value", field), -1e6, 1e6)
        _text(where, f"{field}.split", _required(where, pm, "split", field))
        for k, v in _object(where, f"{field}.all", pm.get("all", {})).items():
            _text(where, f"{field}.all", k)
            _number(where, _field(f"{field}.all", k), v, -1e6, 1e6)
    return config


def _check_probe(where: str, probe: dict) -> None:
    heads = _object(where, "probe.heads", probe.get("heads", {}))
    if heads or "classes" in probe:
        classes = _array(where, "probe.classes", _required(where, probe, "classes", "probe"), 1, MAX_CLASSES)
        for i, name in enumerate(classes):
            _text(where, f"probe.classes[{i}]", name)
    if len(heads) > 64:
        _fail(where, "probe.heads", f"{len(heads)} heads; a trunk has at most 64 taps")
    for layer, spec in heads.items():
        field = _field("probe.heads", layer)
        spec = _object(where, field, spec)
        _int(where, f"{field}.channels", _required(where, spec, "channels", field), 1, 65536)
        grid = _array(where, f"{field}.grid", _required(where, spec, "grid", field), 2, 2)
        for i in (0, 1):
            _int(where, f"{field}.grid[{i}]", grid[i], 1, MAX_SIDE)
    accuracy = _object(where, "probe.accuracy", probe.get("accuracy", {}))
    for layer, value in accuracy.items():
        _number(where, _field("probe.accuracy", layer), value, 0, 1)


# --- the model the config describes --------------------------------------------------------------

class _Shapes(TorchFunctionMode):
    """Inside ``torch.device("meta")``: random initialisers do nothing to meta tensors, and
    BatchNorm / LRN hand their input's shape through. Their meta kernels are Python
    decompositions whose first use imports torch._dynamo (~2 s); shapes and dtypes come out as a
    real build's. (Other Python-decomposed ops, e.g. in the Lab front end, still work, slower once.)"""

    SKIP = {torch.Tensor.normal_, torch.Tensor.uniform_}
    SAME_SHAPE = {F.batch_norm, torch.batch_norm, F.local_response_norm}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        first = args[0] if args else None
        if isinstance(first, torch.Tensor) and first.is_meta and (func in self.SKIP or func in self.SAME_SHAPE):
            return first
        return func(*args, **(kwargs or {}))


def check_buildable(config: dict[str, Any], where: str) -> PretextModel:
    """Build the model on the meta device (shapes, no memory; run after ``check_config``) and
    check what the schema alone cannot: its size (parameters + buffers <= ``MAX_ELEMENTS``), an
    input size the trunk takes, probe heads that match their taps, ``layers``. Returns the meta
    model: its ``state_dict()`` gives the names, shapes and dtypes the weights file must have."""
    arch, (c, h, w) = config["architecture"], config["data_config"]["input_size"]
    pretext_args = config.get("pretext_args", {})
    with torch.device("meta"), _Shapes(), torch.no_grad():
        try:
            trunk = ARCHITECTURES[arch](**config.get("arch_args", {}))
        except (TypeError, ValueError) as e:
            _fail(where, "arch_args", f"cannot build the {arch} trunk ({e})")
        try:  # the input the features, probes and (most) heads see
            taps, _ = trunk.forward_taps(torch.empty(1, c, h, w), trunk.layers)
        except (ValueError, RuntimeError) as e:
            _fail(where, "data_config.input_size", f"{[c, h, w]} does not fit the {arch} trunk ({e})")
        if pretext_args and "tile" in pretext_args:  # the patch pretexts' heads see one tile
            try:
                trunk(torch.empty(1, c, pretext_args["tile"], pretext_args["tile"]))
            except (ValueError, RuntimeError) as e:
                _fail(where, "pretext_args.tile", f"{pretext_args['tile']} px tiles do not fit the {arch} trunk ({e})")
        try:
            model = PretextModel(config)
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as e:
            raise ZooError(f"{where}: cannot build the model ({type(e).__name__}: {e})") from None
    total = sum(t.numel() for t in model.state_dict().values())
    if total > MAX_ELEMENTS:
        raise ZooError(f"{where}: the model it describes has {total:,} parameters and buffers, more than the "
                       f"{MAX_ELEMENTS:,} allowed (check pretext_args, data_config.input_size, probe)")
    for layer, spec in ((config.get("probe") or {}).get("heads") or {}).items():
        field = _field("probe.heads", layer)
        if layer not in taps:
            _fail(where, field, f"not a tap of {config['architecture']} (taps: {', '.join(model.layers)})")
        _, tc, th, tw = taps[layer].shape
        if spec["channels"] != tc:
            _fail(where, f"{field}.channels", f"{spec['channels']}, but the {layer} tap has {tc} channels")
        if spec["grid"][0] > th or spec["grid"][1] > tw:
            _fail(where, f"{field}.grid", f"{spec['grid']} is larger than the {layer} map ({th} x {tw})")
    if "layers" in config and list(config["layers"]) != list(model.layers):
        _fail(where, "layers", f"{config['layers']} are not the trunk's taps {list(model.layers)}")
    return model


# --- weights -------------------------------------------------------------------------------------

def check_safetensors(path: str | Path, expected: Mapping[str, torch.Tensor], model: str) -> None:
    """Read the header of a safetensors file (8-byte length + JSON, bounded here) and check it
    describes exactly ``expected`` (a state dict; meta tensors do): the same names and shapes,
    a float dtype where the model has floats (stored float16 loads into float32) and the model's
    own dtype elsewhere, offsets inside the file. Nothing else of the file is read."""
    path = Path(path)
    most = 8 + MAX_HEADER_BYTES + sum(t.numel() * 8 for t in expected.values())
    try:
        f, st = open_regular(path, most)
    except FileNotFoundError:
        raise ZooError(f"{path}: missing") from None
    with f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 2 <= n <= min(MAX_HEADER_BYTES, st.st_size - 8):
            raise ZooError(f"{path}: not a readable safetensors file (header length {n} does not fit a "
                           f"{st.st_size}-byte file)")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (ValueError, RecursionError) as e:
            raise ZooError(f"{path}: not a readable safetensors file (header: {type(e).__name__})") from None
    if not isinstance(header, dict):
        raise ZooError(f"{path}: not a readable safetensors file (header is not an object)")
    header.pop("__metadata__", None)
    data_size, problems, end_max = st.st_size - 8 - n, [], 0
    for name, entry in header.items():
        try:
            dtype, itemsize = _ST_DTYPES[entry["dtype"]]
            shape, (begin, end) = entry["shape"], entry["data_offsets"]
            if not all(type(s) is int and s >= 0 for s in shape) or not 0 <= begin <= end <= data_size:
                raise ValueError
            if end - begin != math.prod(shape) * itemsize:
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise ZooError(f"{path}: not a readable safetensors file (bad header entry for {_show(name)}: "
                           f"{_show(entry)})") from None
        end_max = max(end_max, end)
        want = expected.get(name)
        if want is None:
            continue
        if list(shape) != list(want.shape):
            problems.append(f"{name} has shape {tuple(shape)}, expected {tuple(want.shape)}")
        elif (dtype not in FLOAT_DTYPES) if want.is_floating_point() else dtype != want.dtype:
            problems.append(f"{name} has dtype {entry['dtype']} ({dtype}), expected "
                            + ("a float dtype" if want.is_floating_point() else str(want.dtype)))
    missing = [k for k in expected if k not in header]
    extra = [k for k in header if k not in expected]
    if missing:
        problems.insert(0, f"missing {_listing(missing)}")
    if extra:
        problems.insert(0, f"unexpected {_listing(extra)}")
    if problems:
        raise ZooError(f"{path}: does not fit {model} described in config.json ({'; '.join(problems[:4])})")
    if end_max != data_size:
        raise ZooError(f"{path}: not a readable safetensors file ({data_size - end_max} bytes after the last tensor)")


def _listing(names: list[str]) -> str:
    return ", ".join(_show(k) if not re.fullmatch(r"[\w.-]{1,200}", str(k)) else k for k in names[:5]) + (
        f" and {len(names) - 5} more" if len(names) > 5 else "")


def check_weights(state: Mapping[str, Any], expected: Mapping[str, torch.Tensor], what: str,
                  labels: Mapping[str, str] | None = None) -> None:
    """Values of weights about to be loaded (``load_dir``: the safetensors file; the converters:
    the authors' checkpoint, after renaming). ``expected``: the model's state dict (meta is fine);
    names it lacks are held to the float rules. Each tensor must be dense, not meta, not
    quantized; where the model has a float: float16/bfloat16/float32/float64 (no int, bool or
    complex to be cast silently) with only finite values, and a BatchNorm ``running_var`` >= 0;
    elsewhere (counters, the jigsaw permutation set): the model's dtype and no negative values.
    ``labels``: how to name a tensor in messages (the converters add the checkpoint's own key)."""
    for name, t in state.items():
        label = f"{what}: {(labels or {}).get(name, name)}"
        if not isinstance(t, torch.Tensor):
            raise ZooError(f"{label} is a {type(t).__name__}, not a tensor")
        if t.is_meta:
            raise ZooError(f"{label} is a meta tensor (a shape without values)")
        if t.layout != torch.strided:
            raise ZooError(f"{label} is a sparse tensor ({t.layout}); weights must be dense")
        if t.is_quantized:
            raise ZooError(f"{label} is a quantized tensor ({t.dtype}); weights must be plain floats")
        want = expected.get(name)
        if want is None or want.is_floating_point():
            if t.dtype not in FLOAT_DTYPES:
                raise ZooError(f"{label} has dtype {t.dtype}; a weight must be float16, bfloat16, float32 or float64 "
                               "(not converted silently)")
            if not bool(torch.isfinite(t).all()):
                raise ZooError(f"{label} has non-finite values (NaN or inf): corrupted or diverged weights")
            if name.endswith("running_var") and bool((t < 0).any()):
                raise ZooError(f"{label} has negative values: a BatchNorm running variance is >= 0 (corrupted file?)")
        else:
            if t.dtype != want.dtype:
                raise ZooError(f"{label} has dtype {t.dtype}, expected {want.dtype}")
            if t.numel() and bool((t < 0).any()):
                raise ZooError(f"{label} has negative values (a counter or an index)")
            if name.endswith("permutations") and t.dim() == 2 and t.numel():
                if not torch.equal(t.sort(dim=1).values, torch.arange(t.shape[1]).expand_as(t)):
                    raise ZooError(f"{label}: every row must be a permutation of 0..{t.shape[1] - 1}")


# --- names ---------------------------------------------------------------------------------------

def check_name(text: str) -> None:
    """A model name or path as ``zoo.load`` / ``zoo.resolve`` take it: not empty (which would
    mean the current directory), no NUL, within the OS's limits (255 bytes a path component)."""
    if not text.strip():
        raise ZooError("empty model name; give a registry name (`sslzoo list`), a model directory, "
                       "or hf-hub:ORG/NAME[@REV] (use '.' for the current directory)")
    if "\0" in text:
        raise ZooError(f"{_show(text)}: a model name cannot contain a NUL character")
    if len(text.encode("utf-8", "surrogateescape")) > 4096 or any(
            len(part.encode("utf-8", "surrogateescape")) > 255 for part in text.split("/")):
        raise ZooError(f"{_show(text)}: name too long ({len(text)} characters; a path component is at most 255 bytes)")


_REPO_PART = re.compile(r"[A-Za-z0-9._-]{1,96}")


def check_repo_id(repo_id: str, where: str) -> None:
    """ORG/NAME by the Hub's rules: letters, digits, '-', '_', '.'; no '--' or '..'; neither
    part starts or ends with '-' or '.'; each at most 96 characters."""
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts):
        raise ZooError(f"{where}: expected hf-hub:ORG/NAME[@REVISION]")
    for part in parts:
        if (not _REPO_PART.fullmatch(part) or ".." in part or "--" in part or part[0] in "-." or part[-1] in "-."):
            raise ZooError(f"{where}: {_show(part)} is not a valid Hub repo id part (1-96 letters, digits, '-', '_', "
                           "'.'; no '--' or '..'; not starting or ending with '-' or '.')")


def check_revision(revision: str, where: str) -> None:
    """A branch, tag or commit as git allows it (check-ref-format), so it cannot walk out of the
    cache's refs/ and snapshots/ folders: no '..', no leading '/', no backslash, no control or
    space characters, none of ~^:?*[, at most 200 characters."""
    bad = (not 1 <= len(revision) <= 200 or not revision.isprintable() or any(ch.isspace() or ch in "\\~^:?*[" for ch in revision)
           or ".." in revision or "@{" in revision or "//" in revision or "/." in revision
           or revision.startswith(("/", ".", "-")) or revision.endswith(("/", ".", ".lock")))
    if bad:
        raise ZooError(f"{where}: {_show(revision)} is not a valid revision (a branch, tag or commit: no '..', no leading "
                       "'/' or '.', no backslash, spaces or control characters, at most 200 characters)")


def check_inside(directory: str | Path, root: str | Path, where: str) -> Path:
    """``directory`` (symlinks resolved) must lie inside ``root``; returns it."""
    directory = Path(directory)
    if not directory.resolve().is_relative_to(Path(root).resolve()):
        raise ZooError(f"{where}: resolved to {directory}, outside the Hugging Face cache folder of the repo "
                       f"({root}); refusing to load it")
    return directory


__all__ = ["check_buildable", "check_config", "check_inside", "check_name", "check_repo_id", "check_revision",
           "check_safetensors", "check_weights", "open_regular", "read_json"]
