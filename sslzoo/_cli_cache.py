"""``sslzoo cache``: what the probe's feature cache holds, and clearing it."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from ._cli_common import EXIT_FAILED, err

out = Console(highlight=False)


def cache(
    clear: bool = typer.Option(False, "--clear", help="remove every cached feature file"),
    cache_dir: Optional[Path] = typer.Option(None, help="default $SSLZOO_CACHE or ~/.cache/sslzoo/features"),
    as_json: bool = typer.Option(False, "--json", help="print the entries as JSON"),
):
    """The linear probe's feature cache: one row per cached model and dataset split, most recently used first."""
    from sslzoo.training import feature_cache

    directory = (cache_dir or feature_cache.default_cache_dir()).expanduser()
    if clear:
        freed, failed = feature_cache.clear(directory) if directory.is_dir() else (0, 0)
        out.print(f"{directory}: removed {freed / 1e9:.2f} GB of cached features")
        if failed:
            err.print(f"[bold red]error:[/] {failed} file(s) in {directory} could not be removed (permissions?)")
            raise typer.Exit(EXIT_FAILED)
        return
    rows = feature_cache.entries(directory) if directory.is_dir() else []
    total, limit = sum(e["bytes"] for e in rows), feature_cache.limit_bytes()
    if as_json:
        print(json.dumps({"cache_dir": str(directory), "bytes": total, "limit_bytes": limit, "entries": rows}, indent=2))
        return
    groups: dict[str, list[dict]] = {}  # one folder per (trunk, dataset split): its taps
    for e in rows:
        groups.setdefault(str(Path(e["path"]).parent), []).append(e)
    table = Table("model", "data", "layers", "MB", "last used")
    for files in groups.values():  # most recently used first, as ``entries`` sorts
        table.add_row(files[0]["model"], files[0]["data"], " ".join(sorted(f["layer"] for f in files)),
                      f"{sum(f['bytes'] for f in files) / 1e6:.0f}",
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(files[0]["mtime"])))
    out.print(table)
    out.print(f"{directory}: {len(rows)} file(s), {total / 1e9:.2f} GB of at most {limit / 1e9:.1f} GB "
              f"(${feature_cache.LIMIT_ENV})")
