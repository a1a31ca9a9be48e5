"""``sslzoo extract``: features of image files at chosen layers, into one .safetensors or .npy."""
from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from ._cli_common import EXIT_SKIPPED, err, friendly_errors


class Pool(str, Enum):  # sslzoo.zoo._extract.POOLS (not imported here: keeps --help fast)
    avg = "avg"
    max = "max"
    none = "none"


def collect_inputs(inputs: list[Path], examples: bool) -> list[Path]:
    """Files as given; directories walked recursively (sorted), taking image extensions only;
    with ``examples`` the package's example images appended. A path that does not exist is
    kept, so it is reported as skipped like any other unreadable input."""
    from sslzoo.zoo import example_images
    from sslzoo.zoo._images import IMAGE_EXTENSIONS

    found: list[Path] = []
    for item in inputs:
        if item.is_dir():
            found += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        else:
            found.append(item)
    return found + (example_images() if examples else [])


def _summary(model_name: str, res, pool: str, as_json: bool) -> None:
    rate = res.n_computed / res.seconds if res.seconds > 0 else 0.0
    if as_json:
        print(json.dumps({"out": str(res.out), "model": model_name, "n_images": res.n_done, "pool": pool,
                          "layers": res.dims, "skipped": [{"path": p, "reason": r} for p, r in res.skipped],
                          "n_computed": res.n_computed, "seconds": round(res.seconds, 3),
                          "images_per_s": round(rate, 1), "decode_wait_s": round(res.decode_wait, 3)}))
        return
    dims = ", ".join(f"{l} {d}" for l, d in res.dims.items())
    print(f"{res.n_done} images -> {res.out}")
    print(f"model {model_name}; layers (dims): {dims}; pool {pool}")
    print(f"skipped {len(res.skipped)}; {res.n_computed} computed in {res.seconds:.1f} s ({rate:.1f} images/s)")


def extract(
    name: str = typer.Argument(..., help="zoo name, local model dir or hf-hub:ORG/NAME (optionally @REV)"),
    inputs: Optional[List[Path]] = typer.Argument(None, help="image files and/or directories (recursed)"),
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
    """Extract features of images at one or more layers; each input skipped as unreadable is named
    on stderr (exit code 3 when some were)."""
    from sslzoo import zoo
    from sslzoo.zoo._extract import extract as run

    def skipped(e) -> None:
        err.print(f"skipped {e}", markup=False, soft_wrap=True)

    with friendly_errors():
        paths = collect_inputs(list(inputs or []), examples)
        if not paths:
            raise zoo.ZooError("no input images: give image files or directories holding some, or --examples")
        model = zoo.load(name)  # on the CPU; extract checks --device, then moves it there
        try:
            res = run(model, paths, layers=layer, pool=pool.value, batch_size=batch_size, out=out, resume=resume,
                      device=device, on_error=skipped, progress=sys.stderr.isatty() if progress is None else progress)
        except OSError as e:  # disk full, read-only directory, ...: one line, no traceback
            raise zoo.ZooError(f"{out}: cannot write ({e.strerror or e})") from None
    _summary(model.name, res, pool.value, as_json)
    if res.skipped:
        raise typer.Exit(EXIT_SKIPPED)
