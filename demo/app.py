"""The Gradio app: one gr.Tab per entry of the tab registry (``demo/tabs``), in its order. This
module names no tab and no pretext: a tab is added in ``demo/tabs`` alone. Imports zoo only,
never training.

    from sslzoo.demo.app import build_app, launch
    launch(host="127.0.0.1", port=7860)        # blocks; never share=True

``_env`` is imported before gradio so analytics, the version check, Hub access and SSR are off.
"""
from __future__ import annotations

from . import _env  # noqa: F401  (must precede gradio)

import gradio as gr  # noqa: E402

from sslzoo.zoo._examples import EXAMPLES_DIR  # noqa: E402

from ._core import MAX_UPLOAD_BYTES, models_for, probe_plot  # noqa: E402
from ._ui import safe, upload_image  # noqa: E402,F401  (re-exported)
from .tabs import TABS, preload_models  # noqa: E402

DEFAULT_CONCURRENCY = 2  # requests computed at once (per event); the rest wait in the queue
MAX_QUEUE = 64
# system fonts only: the default theme would make the browser fetch Google Fonts
THEME = gr.themes.Soft(font=["system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"],
                       font_mono=["ui-monospace", "Menlo", "Consolas", "monospace"])
CSS = """
.result-summary { min-height: 3em; }
.upload img { width: 100% !important; height: 100% !important; object-fit: contain; }
.caption p { margin: 0 0 -0.4em 0.3em; font-weight: 600; font-size: 0.9em; }
"""
INTRO = """# sslzoo: what did the pretext models learn?
Classic self-supervised *pretext tasks* and linear probes on their frozen features. Each pretext's
tab poses its task on your image and shows what the zoo's models predict; *Classify* runs the
linear probes and *Models* shows the models' cards. Most of the zoo's models were trained on
**Fashion-MNIST** (28 px grayscale clothes, shown here upsampled) and see every image at their own
small input size, so natural photos are out of their training distribution. Everything runs on
this server, offline."""


def build_app() -> gr.Blocks:
    """gr.Blocks with one tab per registered tab (not launched, no queue settings)."""
    with gr.Blocks(title="sslzoo demo", analytics_enabled=False) as demo:
        gr.Markdown(INTRO)
        with gr.Tabs():
            for tab in TABS:
                with gr.Tab(tab.title, id=tab.id):
                    tab.build()
    return demo


def allowed_paths() -> list[str]:
    """Files the server may hand out besides its own cache: the examples and the probe plots."""
    plots = [probe_plot(n) for n in models_for()]
    return [str(EXAMPLES_DIR), *(p for p in plots if p)]


def launch(host: str = "127.0.0.1", port: int = 7860, concurrency: int = DEFAULT_CONCURRENCY,
           open_browser: bool = False, block: bool = True, quiet: bool = False):
    """Build, queue and serve the app on ``host:port`` (share is never on). With ``block=False``
    returns (demo, local_url) and serves from a background thread."""
    _env.configure(host, port)
    preload_models()  # every model a tab runs, loaded once now: no request pays for it
    demo = build_app()
    demo.queue(default_concurrency_limit=max(1, concurrency), max_size=MAX_QUEUE)
    _, url, _ = demo.launch(server_name=host, server_port=port, share=False, inbrowser=open_browser,
                            prevent_thread_lock=not block, quiet=quiet, max_file_size=MAX_UPLOAD_BYTES,
                            allowed_paths=allowed_paths(), show_error=False, ssr_mode=False, mcp_server=False,
                            pwa=False, enable_monitoring=False, theme=THEME, css=CSS, footer_links=["api"])
    return demo, url


__all__ = ["build_app", "launch", "upload_image", "safe"]
