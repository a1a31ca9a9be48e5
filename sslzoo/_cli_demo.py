"""``sslzoo demo``: the Gradio web demo (demo/app.py) as a typer command."""
from __future__ import annotations

import typer


def demo(
    host: str = typer.Option("127.0.0.1", help="interface to listen on (0.0.0.0: every interface)"),
    port: int = typer.Option(7860, min=1, max=65535, help="TCP port"),
    concurrency: int = typer.Option(2, min=1, help="requests computed at once; the rest wait in the queue"),
    open_browser: bool = typer.Option(False, "--open", help="open a browser on the page"),
):
    """Serve the Gradio web demo: rotation, jigsaw, relative patch, linear-probe classify, model cards.

    Offline: analytics off, no Hub access, never shared; needs `pip install 'sslzoo\\[demo]'`."""
    from sslzoo.demo.__main__ import main  # one implementation for both entry points

    argv = ["--host", host, "--port", str(port), "--concurrency", str(concurrency)] + (["--open"] * open_browser)
    raise typer.Exit(main(argv))
