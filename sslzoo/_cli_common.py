"""Shared CLI plumbing: exit codes and turning known errors into one clear line."""
from __future__ import annotations

import contextlib

import typer
from rich.console import Console

EXIT_OK = 0
EXIT_FAILED = 1  # nothing useful done: bad name, unreadable data, training stopped
EXIT_USAGE = 2  # typer/click: bad options
EXIT_SKIPPED = 3  # done, but some inputs were skipped (each reported)

err = Console(stderr=True, highlight=False)


@contextlib.contextmanager
def friendly_errors():
    """Print known failures as ``error: ...`` and exit 1, no traceback."""
    from sslzoo.training.data import DataError
    from sslzoo.training.loop import TrainingError
    from sslzoo.zoo import ZooError

    try:
        yield
    except (ZooError, DataError, TrainingError, FileNotFoundError, PermissionError, ValueError) as e:
        err.print(f"[bold red]error:[/] {e}", markup=True, soft_wrap=True)
        raise typer.Exit(EXIT_FAILED) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None
