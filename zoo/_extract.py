"""Streaming feature extraction: image files -> one ``.safetensors`` or ``.npy`` of features.

    res = extract(model, paths, layers=("conv3", "conv5"), pool="avg", out=Path("feats.safetensors"))

How it runs, and why:

* Memory stays flat in the number of inputs. Images are decoded by a small thread pool (PIL
  decodes and resizes with the GIL released) at most ``2 * workers + 2`` batches ahead of the model,
  and each batch's features go straight to disk as one chunk file in the sidecar directory
  ``OUT.partial/``. Nothing holds all the features; at the end the chunks are streamed, layer by
  layer and chunk by chunk, into ``OUT``.
* Speed. The model loop runs on the calling thread under ``torch.inference_mode`` while the
  decode threads work ahead, so decoding is hidden wherever a CPU core is free for it
  (``ExtractResult.decode_wait`` says how long the model waited). Where the model already uses
  every core it can get, decoding (about 0.1 ms of CPU per small PNG) adds to the model's time:
  see benchmarks/bench_extract.py.
* Crash safety. Chunks and ``OUT`` are written to a temporary file and renamed into place, so
  ``kill -9`` at any moment leaves either no ``OUT`` (or the previous one) or a complete one.
  ``resume=True`` keeps the chunks of an interrupted run (after checking that
  ``OUT.partial/manifest.json`` describes the same inputs, model and options) and computes only
  the missing ones. Each chunk's row range and sha256 are appended to
  ``OUT.partial/chunks.jsonl`` before the chunk is renamed into place; a resume re-hashes every
  chunk it keeps, and one whose bytes, rows or place do not match its record (flipped bytes, two
  chunk files swapped, a chunk from elsewhere) is recomputed and named in
  ``ExtractResult.recomputed``. Without ``resume`` an interrupted run's chunks are discarded.
  Two runs writing the same ``OUT`` at once are not supported.
* Bad inputs (see ``zoo._images.read_image``: missing, dangling symlinks, FIFOs and other
  non-regular files (never opened for reading), unreadable, not images, truncated, too many
  pixels, or too many once resized to the input: a 1 x 30000 px strip) are reported through
  ``on_error`` and left out of the output; ``ExtractResult.skipped`` lists them with the reason.
  Files PIL decoded but had to recover (cut after their pixel data, a TIFF directory PIL warned
  about) are kept, reported through ``on_recovered`` and listed in ``ExtractResult.recovered``.

Output formats:

``.safetensors``  one float32 tensor per layer, named by the layer (N x D), and string metadata
                  ``paths`` (JSON list of the N input paths, in input order, bad ones left out),
                  ``layers`` (JSON list), ``model``, ``pool``, ``skipped`` and ``recovered``
                  (JSON lists of [path, reason]). Safetensors caps its header at 100 MB: about a
                  million paths.
``.npy``          one layer only (N x D float32; several layers are refused: use .safetensors),
                  and beside it the companion ``OUT.paths.json`` that names its rows (read both
                  with ``read_npy(OUT)``, which checks that they belong together)::

                      {"format": "sslzoo-extract-npy", "version": 1, "npy": "feats.npy",
                       "rows": 2, "dim": 256, "npy_sha256": "<sha256 of OUT's bytes>",
                       "model": "...", "layer": "conv5", "pool": "avg",
                       "skipped": [["<path>", "<reason>"], ...], "recovered": [...],
                       "paths": [
                        "/data/a.png",
                        "/data/b\\nwith a newline.png"
                       ]}

                  One JSON document, UTF-8, one path per line. Row i of OUT is ``paths[i]``;
                  ``rows`` and ``npy_sha256`` bind the two files. Paths are JSON strings, so a
                  newline or quote in a file name cannot shift the rows; a name that is not
                  valid UTF-8 is written as Python's surrogateescape code points (``\\udcXX``
                  escapes: ``os.fsencode(path)`` gives the original bytes back).
                  Commit order: both files are written to temporaries, then the old ``OUT`` is
                  removed, the companion renamed into place, and ``OUT`` renamed last. ``OUT``
                  is the commit point: whenever it exists, the companion beside it is the one
                  written with it (a kill in between leaves a companion and no ``OUT``). An
                  ``OUT.paths.txt`` left by an older version is removed when ``OUT`` is written.

D is C (``pool="avg"`` / ``"max"``: global pooling of each C x H x W map) or C*H*W
(``pool="none"``: the map flattened in C, H, W order).
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from ._errors import ZooError
from ._hub import _UMASK, atomic_write, atomic_write_text, state_sha256
from ._images import ImageError, TooLargeError, read_image, warn_skipped
from ._transforms import normalize, to_uint8_tensor

POOLS = ("avg", "max", "none")
FORMATS = (".safetensors", ".npy")
MANIFEST = "manifest.json"
CHUNK_LOG = "chunks.jsonl"
NPY_FORMAT = "sslzoo-extract-npy"
_CHUNK = "chunk-{:06d}.safetensors"


@dataclass
class ExtractResult:
    n_done: int  # images whose features are in ``out``
    skipped: list[tuple[str, str]]  # (path, reason) of the inputs left out
    out: Path
    dims: dict[str, int] = field(default_factory=dict)  # layer -> feature size D
    n_computed: int = 0  # inputs run through the model by this call (a resume skips done chunks)
    seconds: float = 0.0  # wall time of this call
    decode_wait: float = 0.0  # seconds the model loop waited for decoded images (0: model-bound)
    recovered: list[tuple[str, str]] = field(default_factory=list)  # (path, note): kept, but PIL had to recover them
    recomputed: list[tuple[str, str]] = field(default_factory=list)  # (chunk file, problem): failed the resume check


def partial_dir(out: Path) -> Path:
    """Where an unfinished extraction to ``out`` keeps its chunks: ``OUT.partial/``."""
    return out.with_name(out.name + ".partial")


def paths_file(out: Path) -> Path:
    """The companion naming the rows of an ``.npy`` output: ``OUT.paths.json``."""
    out = Path(out)
    return out.with_name(out.name + ".paths.json")


def _legacy_paths_file(out: Path) -> Path:
    """What older versions wrote beside an ``.npy`` (one path per line, no check)."""
    return out.with_name(out.name + ".paths.txt")


def _sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _json_str(s: str) -> str:
    """A JSON string literal: UTF-8 text as is, surrogateescaped bytes (a non-UTF-8 file name) as
    \\udcXX escapes (the file stays valid UTF-8; Python's json gives the same str back)."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(s)
    return json.dumps(s, ensure_ascii=False)


def read_npy(out: str | os.PathLike, *, mmap_mode: str | None = None,
             verify: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """``(array, companion)`` of an ``.npy`` output: row i of ``array`` is ``companion["paths"][i]``.

    Raises ``ZooError`` unless the companion ``OUT.paths.json`` is the one written with ``OUT``:
    its ``rows`` must equal the array's and the number of paths, and (``verify``) its
    ``npy_sha256`` the hash of ``OUT``'s bytes (reads the whole file once).
    """
    out = Path(out)
    companion = paths_file(out)
    hint = f"; {out} and {companion} do not belong together (re-run the extraction)"
    try:
        meta = json.loads(companion.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ZooError(f"{companion}: missing; it names the rows of {out}") from None
    except (OSError, ValueError) as e:
        raise ZooError(f"{companion}: unreadable ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != NPY_FORMAT or not isinstance(meta.get("paths"), list):
        raise ZooError(f"{companion}: not an sslzoo extract companion (format {NPY_FORMAT!r} expected)")
    try:
        array = np.load(out, mmap_mode=mmap_mode, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ZooError(f"{out}: unreadable ({e})") from None
    if not (array.ndim == 2 and array.shape[0] == meta.get("rows") == len(meta["paths"])):
        raise ZooError(f"{out}: {array.shape[0] if array.ndim else '?'} rows, but {companion} records "
                       f"{meta.get('rows')} rows and {len(meta['paths'])} paths{hint}")
    if verify and _sha256_file(out) != meta.get("npy_sha256"):
        raise ZooError(f"{out}: sha256 differs from the one {companion} records{hint}")
    return array, meta


# --------------------------------------------------------------------------- checks and set-up

def _check_args(model, paths: Sequence[str], layers: tuple[str, ...], pool: str, batch_size: int, out: Path) -> None:
    if not paths:
        raise ZooError("no input images")
    if pool not in POOLS:
        raise ZooError(f"pool must be one of {', '.join(POOLS)}, got {pool!r}")
    if batch_size < 1:
        raise ZooError(f"batch size must be at least 1, got {batch_size}")
    if not layers:
        raise ZooError("no layers requested")
    unknown = [l for l in layers if l not in model.layers]
    if unknown:
        raise ZooError(f"{model.name} has no layer(s) {', '.join(unknown)}; its layers are {', '.join(model.layers)}")
    if len(set(layers)) != len(layers):
        raise ZooError(f"layer listed twice: {', '.join(layers)}")
    if out.suffix not in FORMATS:
        raise ZooError(f"{out}: output must end in .safetensors or .npy")
    if out.suffix == ".npy" and len(layers) > 1:
        raise ZooError(f"{out}: a .npy file holds one array, but {len(layers)} layers were asked for "
                       f"({', '.join(layers)}); write .safetensors (one tensor per layer) or ask for one layer")
    if out.is_dir():
        raise ZooError(f"{out}: is a directory; --out wants a file name")


def _device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ZooError(f"bad device {device!r} ({e})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ZooError(f"device {device!r} asked for, but no CUDA GPU is available here; use --device cpu")
    return dev


def _pool(x: torch.Tensor, pool: str) -> torch.Tensor:
    """B x C x H x W -> B x D float32 (D = C, or C*H*W for "none")."""
    if pool == "avg":
        x = x.mean(dim=(2, 3))
    elif pool == "max":
        x = x.amax(dim=(2, 3))
    else:
        x = x.flatten(1)
    return x.float()


def default_workers(device: torch.device) -> int:
    """Decode threads that leave the forward its cores: on the CPU, the CPUs torch's own threads
    do not use (at least 1, at most 4); with the model on a GPU, every CPU (at most 4). More
    decoders than free cores steal time from the forward's threads (bench_extract: on 2 CPUs with
    a 1-thread forward, 1 decoder keeps the model fed and 2 slow it down)."""
    cpus = os.cpu_count() or 1
    busy = 0 if device.type != "cpu" else torch.get_num_threads()
    return max(1, min(4, cpus - busy))


def _forward(model, x_uint8: torch.Tensor, layers, pool: str, device: torch.device) -> dict[str, torch.Tensor]:
    """uint8 B x C x H x W -> {layer: B x D float32 on the CPU}."""
    x = normalize(x_uint8.to(device, non_blocking=True), model.data_config)  # B x C x H x W float
    maps = model.features(x, layers)  # layer -> B x C x h x w
    return {l: _pool(maps[l], pool).cpu().contiguous() for l in layers}


def _feature_dims(model, layers, pool: str, device: torch.device) -> dict[str, int]:
    c, h, w = model.data_config["input_size"]
    zeros = torch.zeros(1, c, h, w, dtype=torch.uint8)
    return {l: t.shape[1] for l, t in _forward(model, zeros, layers, pool, device).items()}


# --------------------------------------------------------------------------- OUT.partial/

def _fill(tmp: str, write: Callable[[BinaryIO], Any]) -> None:
    """Write into the empty temporary file ``atomic_write`` made, *without truncating it*: on
    ext4 (auto_da_alloc) truncate-then-write forces block allocation at close, and with the
    ``discard`` mount option every later unlink of the chunk then costs milliseconds."""
    with open(tmp, "r+b") as f:
        write(f)


class _Partial:
    """The sidecar directory of one extraction: ``manifest.json`` (inputs and options), one
    ``chunk-K.safetensors`` per batch K (inputs ``[K*B, (K+1)*B)``): a float32 B' x D tensor
    per layer for the B' inputs that decoded, their indices (``kept``), the others with reasons
    (``skipped``) and the kept ones PIL recovered (``recovered``) in the metadata; and
    ``chunks.jsonl``, one line per chunk written, ``{"chunk": K, "start": K*B, "stop": ...,
    "rows": B', "sha256": ...}``, appended before the chunk is renamed into place (a torn last
    line is ignored). Chunks and the manifest are written atomically."""

    def __init__(self, directory: Path, manifest: dict[str, Any], resume: bool):
        self.dir = directory
        self.manifest = manifest
        if resume and (directory / MANIFEST).is_file():
            self._check_same(self._read_manifest())
        else:
            if directory.exists():
                shutil.rmtree(directory)
            directory.mkdir(parents=True)
            atomic_write_text(directory / MANIFEST, json.dumps(manifest) + "\n")
        for tmp in directory.glob(".*.tmp"):  # left by a run killed mid-write
            tmp.unlink(missing_ok=True)
        self._log: Any = None  # chunks.jsonl, opened for appending on the first write

    def _read_manifest(self) -> dict[str, Any]:
        try:
            return json.loads((self.dir / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ZooError(f"{self.dir / MANIFEST}: unreadable ({e}); delete {self.dir} to start over") from None

    def _check_same(self, saved: dict[str, Any]) -> None:
        hint = f"; resume with the same inputs and options, or run without --resume to start over (discards {self.dir})"
        mine, theirs = self.manifest["paths"], saved.get("paths", [])
        if mine != theirs:
            first = next((i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b), min(len(mine), len(theirs)))
            detail = (f"input #{first} is {mine[first]!r}, was {theirs[first]!r}" if first < min(len(mine), len(theirs))
                      else f"{len(mine)} inputs now, {len(theirs)} then")
            raise ZooError(f"{self.dir} was started with different inputs ({detail}){hint}")
        diff = [f"{k} {saved.get(k)!r} then, {v!r} now" for k, v in self.manifest.items()
                if k != "paths" and saved.get(k) != v]
        if diff:
            raise ZooError(f"{self.dir} was started with other options ({'; '.join(diff)}){hint}")

    def chunk_path(self, k: int) -> Path:
        return self.dir / _CHUNK.format(k)

    def _records(self) -> dict[int, list[dict[str, Any]]]:
        """chunk -> its records in chunks.jsonl (a chunk rewritten by a resume has several)."""
        records: dict[int, list[dict[str, Any]]] = {}
        try:
            lines = (self.dir / CHUNK_LOG).read_bytes().splitlines()
        except OSError:
            return records
        for line in lines:
            try:
                r = json.loads(line)
                records.setdefault(int(r["chunk"]), []).append(r)
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a kill
        return records

    def verified(self, chunks: range, bounds: Callable[[int], tuple[int, int]], layers: Sequence[str],
                 dims: dict[str, int]) -> tuple[dict[int, tuple], list[tuple[str, str]]]:
        """The chunks an earlier run finished that pass their check, as ``{k: (kept, skipped,
        recovered)}``, and ``[(chunk file, problem)]`` for those that fail it (recompute them).
        A chunk file without a record (killed between the two) is quietly recomputed."""
        records = self._records()
        good: dict[int, tuple] = {}
        bad: list[tuple[str, str]] = []
        for k in chunks:
            path = self.chunk_path(k)
            if k not in records or not path.is_file():
                continue
            problem = self._check(k, records[k], bounds(k), layers, dims)
            if isinstance(problem, str):
                bad.append((str(path), problem))
            else:
                good[k] = problem
        return good, bad

    def _check(self, k: int, records: list[dict[str, Any]], bounds: tuple[int, int], layers: Sequence[str],
               dims: dict[str, int]) -> tuple | str:
        path = self.chunk_path(k)
        try:
            digest = _sha256_file(path)
        except OSError as e:
            return f"unreadable ({e.strerror or e})"
        record = next((r for r in reversed(records) if r.get("sha256") == digest), None)
        if record is None:
            return "its sha256 differs from the one recorded when it was written (corrupt, or another chunk's file)"
        start, stop = bounds
        if (record.get("start"), record.get("stop")) != (start, stop):
            return f"recorded for inputs [{record.get('start')}, {record.get('stop')}), expected [{start}, {stop})"
        try:
            with safe_open(path, framework="numpy") as f:
                meta = f.metadata()
                shapes = {l: list(f.get_slice(l).get_shape()) for l in layers}
            kept = [int(i) for i in json.loads(meta["kept"])]
            skipped = [(int(i), str(r)) for i, r in json.loads(meta["skipped"])]
            recovered = [(int(i), str(r)) for i, r in json.loads(meta.get("recovered", "[]"))]
        except (OSError, SafetensorError, KeyError, ValueError, TypeError) as e:
            return f"unreadable ({e})"
        if sorted(kept + [i for i, _ in skipped]) != list(range(start, stop)) or \
                not {i for i, _ in recovered} <= set(kept):
            return f"its rows are not inputs [{start}, {stop})"
        want = {l: [len(kept), dims[l]] for l in layers}
        if shapes != want or record.get("rows") != len(kept):
            return f"tensor shapes {shapes}, expected {want}"
        return kept, skipped, recovered

    def write(self, k: int, bounds: tuple[int, int], feats: dict[str, torch.Tensor], kept: list[int],
              skipped: list[tuple[int, str]], recovered: list[tuple[int, str]]) -> None:
        blob = save(feats, metadata={"kept": json.dumps(kept), "skipped": json.dumps(skipped),
                                     "recovered": json.dumps(recovered)})
        record = {"chunk": k, "start": bounds[0], "stop": bounds[1], "rows": len(kept),
                  "sha256": hashlib.sha256(blob).hexdigest()}

        def fill(tmp: str) -> None:
            _fill(tmp, lambda f: f.write(blob))
            self._append(record)  # before the rename: a chunk in place always has its record

        atomic_write(self.chunk_path(k), fill)

    def _append(self, record: dict[str, Any]) -> None:
        if self._log is None:
            self._log = open(self.dir / CHUNK_LOG, "a", encoding="utf-8")
        self._log.write(json.dumps(record) + "\n")
        self._log.flush()

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def rows(self, k: int, layer: str) -> np.ndarray:
        with safe_open(self.chunk_path(k), framework="numpy") as f:
            return f.get_tensor(layer)  # B' x D float32

    def remove(self) -> None:
        self.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------- decoding

@dataclass
class _Batch:
    k: int
    x: torch.Tensor | None  # B' x C x H x W uint8 (None when no input of the batch decoded)
    kept: list[int]
    errors: list[tuple[int, ImageError]]
    recovered: list[tuple[int, str]]  # kept inputs PIL had to recover, with the note


def _decode_batch(k: int, start: int, paths: Sequence[str], data_config: dict) -> _Batch:
    """Decode and resize one batch (runs in a worker thread)."""
    tensors, kept, errors, recovered = [], [], [], []
    for i, p in enumerate(paths, start):
        try:
            img, note = read_image(p)
            tensors.append(to_uint8_tensor(img, data_config))  # C x H x W uint8
            kept.append(i)
            if note:
                recovered.append((i, note))
        except ImageError as e:
            errors.append((i, e))
        except TooLargeError as e:  # refused before the resize allocates
            errors.append((i, ImageError(p, str(e))))
        except Exception as e:  # noqa: BLE001 - a decoded image the conversion cannot handle
            errors.append((i, ImageError(p, f"cannot convert to the model's input ({type(e).__name__}: {e})")))
    return _Batch(k, torch.stack(tensors) if tensors else None, kept, errors, recovered)


class _Prefetch:
    """Iterates over ``_decode_batch(*job)`` results in order, keeping at most ``depth`` jobs in
    flight (bounded memory); ``waited`` is how long the consumer (the model loop) sat idle for
    want of a decoded batch: near 0 means the model, not decoding, sets the pace."""

    def __init__(self, pool: ThreadPoolExecutor, jobs: Iterable[tuple], depth: int):
        self.pool, self.jobs, self.depth, self.waited = pool, jobs, depth, 0.0

    def _take(self, pending: collections.deque) -> _Batch:
        t0 = time.perf_counter()
        batch = pending.popleft().result()
        self.waited += time.perf_counter() - t0
        return batch

    def __iter__(self) -> Iterator[_Batch]:
        pending: collections.deque = collections.deque()
        for job in self.jobs:
            pending.append(self.pool.submit(_decode_batch, *job))
            if len(pending) >= self.depth:
                yield self._take(pending)
        while pending:
            yield self._take(pending)


# --------------------------------------------------------------------------- writing OUT

def _write_safetensors(f: BinaryIO, part: _Partial, chunks: range, layers, dims: dict[str, int], n: int,
                       metadata: dict[str, str]) -> None:
    """The safetensors format written by hand so rows can stream chunk by chunk: 8-byte
    little-endian header length, JSON header (padded with spaces to 8 bytes), raw tensors."""
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for l in layers:
        nbytes = n * dims[l] * 4
        header[l] = {"dtype": "F32", "shape": [n, dims[l]], "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)
    for l in layers:
        for k in chunks:
            f.write(np.ascontiguousarray(part.rows(k, l), dtype="<f4").data)  # B' x D rows


class _Hashing:
    """A binary file that hashes what is written to it."""

    def __init__(self, f: BinaryIO):
        self.f, self.sha256 = f, hashlib.sha256()

    def write(self, data) -> int:
        self.sha256.update(data)
        return self.f.write(data)


def _write_npy(f: BinaryIO, part: _Partial, chunks: range, layer: str, dim: int, n: int) -> None:
    np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (n, dim)})
    for k in chunks:
        f.write(np.ascontiguousarray(part.rows(k, layer), dtype="<f4").data)  # B' x D rows


def _companion_text(head: dict[str, Any], lists: dict[str, list], paths: list[str]) -> str:
    """The companion JSON: the scalar fields on the first line, each list of [path, reason] on
    a line of its own, then one path per line."""
    lines = [json.dumps(head)[:-1]]  # without the closing brace
    lines += [f' "{k}": {json.dumps(v)}' for k, v in lists.items()]
    lines.append(' "paths": [' + "".join(f"\n {_json_str(p)}," for p in paths).rstrip(",") + "\n]}\n")
    return ",\n".join(lines)


def _commit_npy(out: Path, part: _Partial, chunks: range, layer: str, dim: int, kept: list[str],
                info: dict[str, str], lists: dict[str, list]) -> None:
    """Write ``out`` and its companion as one unit (see the module docstring: ``out`` is the
    commit point, removed first and renamed last)."""
    companion = paths_file(out)
    tmps: list[str] = []
    try:
        for target in (out, companion):
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=out.parent)
            os.close(fd)
            tmps.append(tmp)
        with open(tmps[0], "r+b") as f:  # no truncation: see _fill
            hashing = _Hashing(f)
            _write_npy(hashing, part, chunks, layer, dim, len(kept))
        head = {"format": NPY_FORMAT, "version": 1, "npy": out.name, "rows": len(kept), "dim": dim,
                "npy_sha256": hashing.sha256.hexdigest(), **info, "layer": layer}
        with open(tmps[1], "w", encoding="utf-8") as f:
            f.write(_companion_text(head, lists, kept))
        for tmp in tmps:
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the files normal permissions
        out.unlink(missing_ok=True)  # from here until the last rename there is no OUT
        _legacy_paths_file(out).unlink(missing_ok=True)
        os.replace(tmps[1], companion)
        os.replace(tmps[0], out)
    except BaseException:
        for tmp in tmps:
            Path(tmp).unlink(missing_ok=True)
        raise


class _NoProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def advance(self, task, n: int) -> None:
        pass


def _progress(enabled: bool, total: int, done: int):
    """(bar, task): a rich progress bar on stderr, or a no-op (without importing rich)."""
    if not enabled:
        return _NoProgress(), None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("[bold]extract"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=Console(stderr=True), transient=True)
    return bar, bar.add_task("extract", total=total, completed=done)


# --------------------------------------------------------------------------- the job

def warn_recovered(path: str, note: str) -> None:
    """Default ``on_recovered``: one line on stderr."""
    print(f"warning: recovered {path}: {note}", file=sys.stderr)


def extract(model, paths: Iterable[str | os.PathLike], *, layers: Sequence[str] = ("conv5",), pool: str = "avg",
            batch_size: int = 64, out: str | os.PathLike, resume: bool = False, device: str | torch.device = "cpu",
            on_error: Callable[[ImageError], None] | None = None, progress: bool = False,
            workers: int | None = None, on_recovered: Callable[[str, str], None] | None = None,
            skipped_before: Sequence[tuple[str, str]] = ()) -> ExtractResult:
    """Features of ``paths`` at ``layers`` of ``model`` (a ``PretextModel``), written to ``out``.

    ``pool``: "avg" / "max" (global pooling, D = C) or "none" (map flattened, D = C*H*W).
    ``on_error(ImageError)`` is called for each input left out (default: a line on stderr; on a
    resume, also for those left out by the interrupted run); ``on_recovered(path, note)`` for
    each input kept although PIL had to recover it (same default and resume rule).
    ``skipped_before``: ``(path, reason)`` of inputs left out before this call (a directory
    walk's unreadable folders, ...): listed first in OUT's ``skipped`` and the result's, not
    reported again. ``workers``: decode threads (default: ``default_workers``). The model runs
    in eval mode on ``device`` (it is moved there). Raises ``ZooError`` for bad arguments, a
    mismatched resume, or no decodable input.
    """
    t0 = time.perf_counter()
    out = Path(out)
    paths = [os.fspath(p) for p in paths]
    layers = (layers,) if isinstance(layers, str) else tuple(layers)
    _check_args(model, paths, layers, pool, batch_size, out)
    dev = _device(device)
    report = on_error or warn_skipped
    note = on_recovered or warn_recovered
    was_training = model.training
    weights_sha256 = state_sha256(model)  # before .to(dev): no copy back from the GPU to hash
    model.to(dev).eval()
    try:
        with torch.inference_mode():
            dims = _feature_dims(model, layers, pool, dev)
            manifest = {"format": 1, "model": model.name, "weights_sha256": weights_sha256,
                        "data_config": model.data_config, "layers": list(layers), "pool": pool,
                        "batch_size": batch_size, "paths": paths}
            out.parent.mkdir(parents=True, exist_ok=True)
            part = _Partial(partial_dir(out), json.loads(json.dumps(manifest)), resume)  # JSON: tuples -> lists
            chunks = range((len(paths) + batch_size - 1) // batch_size)
            bounds = lambda k: (k * batch_size, min((k + 1) * batch_size, len(paths)))  # noqa: E731
            metas, recomputed = part.verified(chunks, bounds, layers, dims) if resume else ({}, [])
            for k in sorted(metas):  # done by an earlier run
                for i, reason in metas[k][1]:
                    report(ImageError(paths[i], reason))
                for i, why in metas[k][2]:
                    note(paths[i], why)
            todo = [k for k in chunks if k not in metas]
            n_computed = sum(min(batch_size, len(paths) - k * batch_size) for k in todo)
            try:
                waited = _compute(model, part, paths, todo, metas, bounds, layers=layers, pool=pool, device=dev,
                                  dims=dims, workers=workers or default_workers(dev), report=report, note=note,
                                  progress=_progress(progress, len(paths), len(paths) - n_computed))
            finally:
                part.close()
    finally:
        model.train(was_training)
    kept = [paths[i] for k in chunks for i in metas[k][0]]
    skipped = [(os.fspath(p), r) for p, r in skipped_before] + \
        [(paths[i], reason) for k in chunks for i, reason in metas[k][1]]
    recovered = [(paths[i], why) for k in chunks for i, why in metas[k][2]]
    if not kept:
        part.remove()
        raise ZooError(f"none of the {len(paths)} inputs could be read as an image; nothing written")
    _finish(out, part, chunks, layers, dims, kept, skipped, recovered, {"model": model.name, "pool": pool})
    return ExtractResult(len(kept), skipped, out, dims, n_computed, time.perf_counter() - t0, waited,
                         recovered, recomputed)


def _compute(model, part: _Partial, paths: list[str], todo: list[int], metas: dict[int, tuple],
             bounds: Callable[[int], tuple[int, int]], *, layers: tuple[str, ...], pool: str, device: torch.device,
             dims: dict[str, int], workers: int, report: Callable[[ImageError], None],
             note: Callable[[str, str], None], progress) -> float:
    """Decode (in ``workers`` threads), forward and write chunks ``todo``, recording each in
    ``metas``; returns how long the model loop waited for decoded images."""
    bar, task = progress
    cfg = model.data_config
    jobs = ((k, bounds(k)[0], paths[slice(*bounds(k))], cfg) for k in todo)
    writes: collections.deque = collections.deque()  # chunk writes in flight (at most 2: bounded memory)
    with bar, ThreadPoolExecutor(workers, thread_name_prefix="sslzoo-decode") as decoders, \
            ThreadPoolExecutor(1, thread_name_prefix="sslzoo-write") as writer:
        decoded = _Prefetch(decoders, jobs, depth=2 * workers + 2)  # slack for decode jitter
        for batch in decoded:
            for _, e in batch.errors:
                report(e)
            for i, why in batch.recovered:
                note(paths[i], why)
            feats = (_forward(model, batch.x, layers, pool, device) if batch.x is not None
                     else {l: torch.zeros(0, d) for l, d in dims.items()})  # layer -> B' x D
            skipped = [(i, e.reason) for i, e in batch.errors]
            # serialising and writing the chunk runs beside the next forward, off the model's thread
            writes.append(writer.submit(part.write, batch.k, bounds(batch.k), feats, batch.kept, skipped,
                                        batch.recovered))
            if len(writes) > 2:
                writes.popleft().result()  # re-raises a failed write (disk full, ...)
            metas[batch.k] = (batch.kept, skipped, batch.recovered)
            bar.advance(task, len(batch.kept) + len(skipped))
        while writes:
            writes.popleft().result()
    return decoded.waited


def _finish(out: Path, part: _Partial, chunks: range, layers, dims, kept: list[str],
            skipped: list[tuple[str, str]], recovered: list[tuple[str, str]], info: dict[str, str]) -> None:
    """Stream the chunks into ``out`` (atomically), then drop ``OUT.partial/``."""
    for tmp in out.parent.glob(f".{out.name}.*.tmp"):  # left by a run killed while writing OUT (or its companion)
        tmp.unlink(missing_ok=True)
    if out.suffix == ".npy":
        _commit_npy(out, part, chunks, layers[0], dims[layers[0]], kept, info,
                    {"skipped": skipped, "recovered": recovered})
    else:
        metadata = dict(info, paths=json.dumps(kept), layers=json.dumps(list(layers)), skipped=json.dumps(skipped),
                        recovered=json.dumps(recovered))
        atomic_write(out, lambda tmp: _fill(tmp, lambda f: _write_safetensors(f, part, chunks, layers, dims, len(kept), metadata)))
    part.remove()
