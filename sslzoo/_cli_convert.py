"""``sslzoo convert``: the authors' released checkpoints -> zoo models (zoo/_convert.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from ._cli_common import friendly_errors

out = Console(highlight=False)


def _source_help() -> str:
    from sslzoo.zoo._sources import SOURCES

    return "which release FILE is: " + ", ".join(f"{s.id} (-> {s.name})" for s in SOURCES.values())


def convert(
    source: str = typer.Argument(..., metavar="SOURCE", help=_source_help()),
    file: Path = typer.Argument(..., metavar="FILE", help="the downloaded checkpoint (or the release .tar.gz)"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="model directory to write (default: the zoo store, "
                                           "$SSLZOO_HOME/zoo/NAME or ~/.cache/sslzoo/zoo/NAME)"),
    half: bool = typer.Option(False, "--half", help="store conv/linear weights in float16 (default float32, exact)"),
):
    """Convert an author's checkpoint into a zoo model (Hub layout, card with provenance); checked by loading it back."""
    from sslzoo import zoo
    from sslzoo.zoo._sources import SOURCES

    with friendly_errors():
        directory = zoo.convert(source, file, out=out_dir, half=half)
        zoo.load(directory)  # the written directory loads strictly (sha256, names, shapes)
    name = SOURCES[source].name
    out.print(f"converted {file} ({source}) -> {directory}")
    if out_dir is None:
        out.print(f"load it with zoo.load({name!r}) (offline)")
    else:
        out.print(f"load it with zoo.load({str(directory)!r})")
