"""Shared CLI plumbing: exit codes and turning known errors into one clear line."""
from __future__ import annotations

import contextlib

import typer
from rich.console import Console
from rich.text import Text

EXIT_OK = 0
EXIT_FAILED = 1  # nothing useful done: bad name, unreadable data, training stopped
EXIT_USAGE = 2  # typer/click: bad options
EXIT_SKIPPED = 3  # done, but some inputs were skipped (each reported)

err = Console(stderr=True, highlight=False)

# C0 controls and DEL (ESC starts terminal escape sequences) shown as escapes, never sent raw.
_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7f]} | {0x09: "\\t", 0x0a: "\\n", 0x0d: "\\r"}


def shown(text: str) -> str:
    """User text (file names, model names, messages quoting them) as one printable line: control
    characters (a newline or an ANSI escape in a name) as \\n, \\x1b, ...; a non-UTF-8 name's
    bytes (surrogates) as \\udcXX. Print it with markup off (or ``escape`` it) so that text like
    ``[/]`` in a path is not read as rich markup."""
    return text.translate(_CONTROL).encode("utf-8", "backslashreplace").decode("utf-8")


def error_line(message: str) -> Text:
    """``error: MESSAGE`` with the message as plain text (no markup, no control characters)."""
    return Text.assemble(("error:", "bold red"), " ", shown(message))


@contextlib.contextmanager
def friendly_errors():
    """Print known failures as ``error: ...`` and exit 1, no traceback."""
    from sslzoo.training.data import DataError
    from sslzoo.training.loop import TrainingError
    from sslzoo.zoo import ZooError

    try:
        yield
    except (ZooError, DataError, TrainingError, FileNotFoundError, PermissionError, ValueError) as e:
        err.print(error_line(str(e)), soft_wrap=True)
        raise typer.Exit(EXIT_FAILED) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None
