"""``sslzoo demo``: the Gradio web demo (demo/app.py) as a typer command."""
from __future__ import annotations

import typer

from ._cli_common import EXIT_FAILED, err


def demo(
    host: str = typer.Option("127.0.0.1", help="interface to listen on (0.0.0.0: every interface)"),
    port: int = typer.Option(7860, min=1, max=65535, help="TCP port"),
    concurrency: int = typer.Option(2, min=1, help="requests computed at once; the rest wait in the queue"),
    open_browser: bool = typer.Option(False, "--open", help="open a browser on the page"),
):
    """Serve the Gradio web demo: rotation, jigsaw, relative patch, linear-probe classify, model cards.

    Offline: analytics off, no Hub access, never shared; needs `pip install 'sslzoo\\[demo]'`."""
    try:
        from sslzoo.demo.app import launch  # sets the offline environment, then imports gradio
    except ImportError as e:
        err.print(f"[bold red]error:[/] the demo needs gradio ({e}); pip install 'sslzoo\\[demo]'", soft_wrap=True)
        raise typer.Exit(EXIT_FAILED) from None
    try:
        launch(host=host, port=port, concurrency=concurrency, open_browser=open_browser)
    except OSError as e:
        err.print(f"[bold red]error:[/] cannot serve on {host}:{port}: {e}", soft_wrap=True)
        raise typer.Exit(EXIT_FAILED) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
