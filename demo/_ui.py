"""Gradio pieces every tab lays out with: the upload input, the error wrapper, the run-button wiring,
captioned outputs, the shipped examples, the model picker.

The tab modules import this inside their ``build()`` only, so their pure functions (what the tests
and benchmarks call) load without gradio. ``_env`` is imported before gradio so analytics, the
version check, Hub access and SSR are off; ``gr`` is re-exported for the tabs for the same reason.
"""
from __future__ import annotations

import functools
import logging
import types

from . import _env  # noqa: F401  (must precede gradio)

import gradio as gr  # noqa: E402

from sslzoo import zoo  # noqa: E402

from ._core import DemoError, model_label  # noqa: E402

log = logging.getLogger("sslzoo.demo")


def _pass_path(self, payload):
    """Image.preprocess replacement: the uploaded file's path, *not decoded* (the tab functions
    decode it with the zoo's ``open_image`` and turn every failure into a one-line message)."""
    if payload is None:
        return None
    if payload.path:
        return payload.path
    try:  # a data: URL (webcam / clipboard)
        return gr.Image.preprocess(self, payload)
    except Exception as e:  # noqa: BLE001
        raise gr.Error(f"could not read the image ({type(e).__name__}: {e})", print_exception=False) from None


def upload_image(**kwargs) -> gr.Image:
    """gr.Image input that hands the handler the upload's path without decoding it: gradio's own
    preprocessing would fail on a non-image with a bare "Error". (An instance override, not a
    subclass: gradio's component metaclass writes a .pyi next to any subclass's source file.)"""
    img = gr.Image(type="filepath", **kwargs)
    img.preprocess = types.MethodType(_pass_path, img)
    return img


def safe(fn):
    """User-fixable problems -> gr.Error with the reason; anything else -> a short gr.Error (the
    traceback goes to the server log, never to the page)."""

    @functools.wraps(fn)
    def wrapper(*args):
        try:
            return fn(*args)
        except gr.Error:
            raise
        except DemoError as e:
            raise gr.Error(str(e), print_exception=False) from None
        except Exception as e:  # noqa: BLE001
            log.exception("demo handler %s failed", fn.__name__)
            raise gr.Error(f"internal error ({type(e).__name__}); details are in the server log",
                           print_exception=False) from None

    return wrapper


def run(button: gr.Button, fn, inputs, outputs, api_name: str, keep=()):
    """button -> clear the outputs (so an error never sits on top of the previous image's results),
    then the tab function as the API endpoint ``api_name``; outputs in ``keep`` are not cleared."""
    cleared = [o for o in outputs if o not in keep]

    def clear():
        return [None] * len(cleared) if len(cleared) > 1 else None

    button.click(clear, None, cleared, queue=False, show_progress="hidden", api_visibility="private").then(
        safe(fn), inputs, outputs, api_name=api_name)


def upload(tab: str, label="Your image") -> gr.Image:
    """The tab's image input, element id ``<tab>-upload``."""
    return upload_image(label=label, sources=["upload", "clipboard"], height=260, elem_id=f"{tab}-upload",
                        elem_classes="upload")


def scores(caption: str, **kwargs) -> gr.Label:
    """A gr.Label of probabilities with its caption above it (a long label would cover the top class)."""
    with gr.Column(min_width=160):
        gr.Markdown(caption, elem_classes="caption")
        return gr.Label(show_label=False, **kwargs)


def shown(caption: str, **kwargs) -> gr.Image:
    """An output image with its caption above it (gradio's own label would cover the image's top)."""
    with gr.Column(min_width=160):
        gr.Markdown(caption, elem_classes="caption")
        return gr.Image(show_label=False, format="png", buttons=["download", "fullscreen"], **kwargs)


def examples(tab: str, upload_input: gr.Image) -> None:
    """The shipped example images under the tab's upload, element id ``<tab>-examples``."""
    gr.Examples(examples=[[str(p)] for p in zoo.example_images()], inputs=[upload_input], label="Shipped examples",
                examples_per_page=12, elem_id=f"{tab}-examples")


def picker(names, label="Model") -> gr.Dropdown:
    """A model dropdown, the first name selected (a model directory shown as ``<name> (<dir>)``)."""
    return gr.Dropdown(choices=[(model_label(n), n) for n in names], value=names[0] if names else None, label=label,
                       interactive=True)


def missing(what: str) -> None:
    """What a tab shows instead of its controls when no model fits it."""
    gr.Markdown(f"No {what} model is installed, so this tab has nothing to show.")


def reconstruction_panel(tab: str, names, fn, control, on_model, *, seed_label: str, button: str,
                         images: tuple[str, str, str], figures: tuple[tuple[str, str], tuple[str, str]]) -> None:
    """The reconstruction tabs' shared layout (Denoise, Inpaint): model, upload, the tab's own
    ``control()`` (built in place; ``on_model(name)`` updates it when the model changes), seed and
    button on the left; the summary, three images and two figures (``(label, element-id suffix)``)
    on the right. ``fn(model, upload, control, seed)`` -> the three images, the two figures and
    the summary, served as the API endpoint ``tab``."""
    with gr.Row():
        with gr.Column(scale=2):
            model = picker(names)
            image = upload(tab)
            setting = control()
            seed = gr.Number(0, label=seed_label, precision=0, minimum=0, elem_id=f"{tab}-seed")
            go = gr.Button(button, variant="primary")
            examples(tab, image)
        with gr.Column(scale=3):
            summary = gr.Markdown(elem_classes="result-summary", elem_id=f"{tab}-summary")
            with gr.Row():
                pictures = [shown(caption) for caption in images]
            with gr.Row():
                numbers = [gr.Number(label=label, interactive=False, elem_id=f"{tab}-{suffix}")
                           for label, suffix in figures]
    model.change(safe(on_model), [model], [setting], api_visibility="private")
    run(go, fn, [model, image, setting, seed], [*pictures, *numbers, summary], tab)
