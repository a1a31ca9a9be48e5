"""Environment for a private, offline Gradio server. Import (and call ``configure``) before gradio.

Gradio reads these at import time: analytics and its version check post to api.gradio.app,
huggingface_hub may reach the Hub, SSR starts a Node server. Set them before ``import gradio``.
"""
from __future__ import annotations

import os

OFFLINE_ENV = {
    "GRADIO_ANALYTICS_ENABLED": "False",  # no telemetry, no version check against api.gradio.app
    "HF_HUB_OFFLINE": "1",  # zoo names resolve from package weights or the local Hub cache only
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "GRADIO_SSR_MODE": "False",  # no Node server
    "GRADIO_MCP_SERVER": "False",
    "DO_NOT_TRACK": "1",
}


def configure(host: str | None = None, port: int | None = None) -> None:
    """Force the offline settings; set GRADIO_SERVER_NAME/PORT when given (default: loopback)."""
    os.environ.update(OFFLINE_ENV)
    if host is not None:
        os.environ["GRADIO_SERVER_NAME"] = host
    else:
        os.environ.setdefault("GRADIO_SERVER_NAME", "127.0.0.1")
    if port is not None:
        os.environ["GRADIO_SERVER_PORT"] = str(port)


configure()  # importing this module is enough for the defaults
