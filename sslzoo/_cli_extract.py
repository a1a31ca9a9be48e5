"""``sslzoo extract``: features of image files at chosen layers, into one .safetensors or .npy."""
from __future__ import annotations

import errno
import json
import os
import stat
import sys
from enum import Enum
from pathlib import Path
from typing import Iterator, List, Optional

import typer

from ._cli_common import EXIT_SKIPPED, err, friendly_errors, shown


class Pool(str, Enum):  # sslzoo.zoo._extract.POOLS (not imported here: keeps --help fast)
    avg = "avg"
    max = "max"
    none = "none"


def _symlink_problem(path: Path, e: OSError) -> str:
    """Why a symlink the walk met cannot be followed."""
    if e.errno == errno.ELOOP:
        return "symlink loop (too many levels of symbolic links); not followed"
    try:
        target = repr(os.readlink(path))
    except OSError:
        target = "?"
    if isinstance(e, FileNotFoundError):
        return f"dangling symlink (points to {target}, which does not exist)"
    return f"symlink to {target} cannot be followed ({e.strerror or e})"


def walk_images(root: Path, skipped: list[tuple[str, str]]) -> list[Path]:
    """The files under directory ``root`` whose names have an image extension, recursively, in
    sorted order, following symlinks. What the walk cannot use is appended to ``skipped`` as
    ``(path, reason)``, never dropped silently: a sub-directory it cannot list, a symlink it
    cannot follow (dangling, looping; whatever its name, as it may have been a directory), a
    symlink back to a directory being walked (a loop). Non-regular files with an image name
    (FIFOs, sockets, devices) and unreadable files are returned: extraction reports each
    (``zoo._images.read_image`` never opens them for decoding)."""
    from sslzoo.zoo._images import IMAGE_EXTENSIONS

    found: list[Path] = []

    def listing(directory: Path) -> list | None:
        try:
            with os.scandir(directory) as it:
                return sorted(it, key=lambda e: e.name)
        except OSError as e:
            skipped.append((str(directory), f"cannot list this directory ({e.strerror or e}); "
                                            "the images in it are not included"))
            return None

    try:
        st = os.stat(root)
    except OSError as e:
        skipped.append((str(root), f"cannot stat ({e.strerror or e})"))
        return found
    # depth first, in sorted order, without recursion (a very deep tree must not overflow the stack)
    stack: list[tuple[Path, dict, Iterator]] = []
    entries = listing(root)
    if entries is not None:
        stack.append((root, {(st.st_dev, st.st_ino): root}, iter(entries)))
    while stack:
        directory, ancestors, it = stack[-1]
        entry = next(it, None)
        if entry is None:
            stack.pop()
            continue
        path = directory / entry.name
        try:
            is_dir = entry.is_dir()  # follows symlinks
            st = entry.stat() if is_dir else None
        except OSError as e:  # ELOOP: a symlink loop
            skipped.append((str(path), _symlink_problem(path, e) if entry.is_symlink()
                            else f"cannot stat ({e.strerror or e})"))
            continue
        if st is not None:
            key = (st.st_dev, st.st_ino)
            if key in ancestors:
                skipped.append((str(path), f"symlink loop: leads back to {ancestors[key]}, "
                                           "which is being walked already; not followed"))
            elif (sub := listing(path)) is not None:
                stack.append((path, {**ancestors, key: path}, iter(sub)))
        elif entry.is_symlink() and not os.path.exists(path):  # dangling or looping
            try:
                os.stat(path)
            except OSError as e:
                skipped.append((str(path), _symlink_problem(path, e)))
        elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
            found.append(path)
    return found


def collect_inputs(inputs: list[Path], examples: bool,
                   skipped: list[tuple[str, str]] | None = None) -> list[Path]:
    """Files as given; directories walked (``walk_images``: recursively, sorted, image
    extensions only; what a walk cannot use goes to ``skipped``); with ``examples`` the
    package's example images appended. A file given by name is kept whatever it is (missing,
    unreadable, a FIFO, ...), so it is reported as skipped like any other unusable input."""
    from sslzoo.zoo import example_images

    skipped = [] if skipped is None else skipped
    found: list[Path] = []
    for item in inputs:
        try:
            is_dir = stat.S_ISDIR(os.stat(item).st_mode)
        except OSError:
            is_dir = False  # missing, dangling, looping, unreadable parent: extraction says which
        if is_dir:
            found += walk_images(item, skipped)
        else:
            found.append(item)
    return found + (example_images() if examples else [])


def _summary(model_name: str, res, pool: str, as_json: bool) -> None:
    rate = res.n_computed / res.seconds if res.seconds > 0 else 0.0
    if as_json:  # json.dumps escapes non-ASCII: any file name prints
        print(json.dumps({"out": str(res.out), "model": model_name, "n_images": res.n_done, "pool": pool,
                          "layers": res.dims, "skipped": [{"path": p, "reason": r} for p, r in res.skipped],
                          "recovered": [{"path": p, "reason": r} for p, r in res.recovered],
                          "recomputed_chunks": [{"path": p, "reason": r} for p, r in res.recomputed],
                          "n_computed": res.n_computed, "seconds": round(res.seconds, 3),
                          "images_per_s": round(rate, 1), "decode_wait_s": round(res.decode_wait, 3)}))
        return
    dims = ", ".join(f"{l} {d}" for l, d in res.dims.items())
    print(shown(f"{res.n_done} images -> {res.out}"))
    print(f"model {model_name}; layers (dims): {dims}; pool {pool}")
    print(f"skipped {len(res.skipped)}; recovered {len(res.recovered)}; "
          f"{res.n_computed} computed in {res.seconds:.1f} s ({rate:.1f} images/s)")


def extract(
    name: str = typer.Argument(..., help="zoo name, local model dir or hf-hub:ORG/NAME (optionally @REV)"),
    # readable=False: an unreadable file is skipped and named (exit 3) like one found by a walk, not a usage error
    inputs: Optional[List[Path]] = typer.Argument(None, help="image files and/or directories (recursed)",
                                                  readable=False),
    layer: List[str] = typer.Option(["conv5"], "--layer", "-l", help="tap to extract; repeat for several"),
    pool: Pool = typer.Option(Pool.avg, help="avg or max: global pooling to C per layer; none: the map flattened"),
    out: Path = typer.Option(..., "--out", "-o", help="output file: .safetensors (any layers) or .npy (one layer)"),
    batch_size: int = typer.Option(64, help="images per forward pass (and per resumable chunk)"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    resume: bool = typer.Option(False, "--resume", help="continue the work an interrupted run kept in OUT.partial/"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of the summary"),
    examples: bool = typer.Option(False, "--examples", help="add the example images shipped in the package"),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="progress bar (default: on a terminal)"),
):
    """Extract features of images at one or more layers. Each input left out (unreadable, not an
    image, a FIFO, a dangling symlink, too large, a folder the walk cannot list, ...) is named on
    stderr as "skipped PATH: reason" (exit code 3 when some were); each kept although PIL had to
    recover it (cut short, ...) as "recovered PATH: reason"."""
    from sslzoo import zoo
    from sslzoo.zoo._extract import extract as run

    def say(text: str) -> None:
        err.print(shown(text), markup=False, emoji=False, soft_wrap=True)

    with friendly_errors():
        walk_skipped: list[tuple[str, str]] = []
        paths = collect_inputs(list(inputs or []), examples, walk_skipped)
        for p, reason in walk_skipped:
            say(f"skipped {p}: {reason}")
        if not paths:
            left_out = f" ({len(walk_skipped)} skipped, named above)" if walk_skipped else ""
            raise zoo.ZooError(f"no input images{left_out}: give image files or directories holding some, "
                               "or --examples")
        model = zoo.load(name)  # on the CPU; extract checks --device, then moves it there
        try:
            res = run(model, paths, layers=layer, pool=pool.value, batch_size=batch_size, out=out, resume=resume,
                      device=device, on_error=lambda e: say(f"skipped {e}"),
                      on_recovered=lambda p, why: say(f"recovered {p}: {why}"), skipped_before=walk_skipped,
                      progress=sys.stderr.isatty() if progress is None else progress)
        except OSError as e:  # disk full, read-only directory, ...: one line, no traceback
            raise zoo.ZooError(f"{out}: cannot write ({e.strerror or e})") from None
        for chunk, problem in res.recomputed:
            say(f"recomputed {chunk}: {problem}")
    _summary(model.name, res, pool.value, as_json)
    if res.skipped:
        raise typer.Exit(EXIT_SKIPPED)
