"""The Gradio app: five tabs over the tab functions in ``_tabs`` (imports zoo only, never training).

    from sslzoo.demo.app import build_app, launch
    launch(host="127.0.0.1", port=7860)        # blocks; never share=True

``_env`` is imported before gradio so analytics, the version check, Hub access and SSR are off.
"""
from __future__ import annotations

import functools
import logging
import types

from . import _env  # noqa: F401  (must precede gradio)

import gradio as gr  # noqa: E402

from sslzoo import zoo  # noqa: E402
from sslzoo.zoo._examples import EXAMPLES_DIR  # noqa: E402
from sslzoo.zoo.pretexts.relpatch import POSITIONS  # noqa: E402

from . import _tabs  # noqa: E402
from ._core import MAX_UPLOAD_BYTES, DemoError, get_model, models_for, probe_plot  # noqa: E402

log = logging.getLogger("sslzoo.demo")

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
Classic self-supervised *pretext tasks* (predict the rotation, solve a jigsaw, locate a patch)
and linear probes on their frozen features. The zoo's models were trained on **Fashion-MNIST**
(28 px grayscale clothes, shown here upsampled); they see every image in grayscale at their input size,
so natural photos are out of their training distribution. Everything runs on this server, offline."""


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


def _run(button: gr.Button, fn, inputs, outputs, api_name: str, keep=()):
    """button -> clear the outputs (so an error never sits on top of the previous image's results),
    then the tab function as the API endpoint ``api_name``."""
    cleared = [o for o in outputs if o not in keep]

    def clear():
        return [None] * len(cleared) if len(cleared) > 1 else None

    button.click(clear, None, cleared, queue=False, show_progress="hidden", api_visibility="private").then(
        safe(fn), inputs, outputs, api_name=api_name)


def _upload(tab: str, label="Your image"):
    return upload_image(label=label, sources=["upload", "clipboard"], height=260, elem_id=f"{tab}-upload",
                        elem_classes="upload")


def _scores(caption: str, **kwargs) -> gr.Label:
    """A gr.Label of probabilities with its caption above it (a long label would cover the top class)."""
    with gr.Column(min_width=160):
        gr.Markdown(caption, elem_classes="caption")
        return gr.Label(show_label=False, **kwargs)


def _shown(caption: str, **kwargs) -> gr.Image:
    """An output image with its caption above it (gradio's own label would cover the image's top)."""
    with gr.Column(min_width=160):
        gr.Markdown(caption, elem_classes="caption")
        return gr.Image(show_label=False, format="png", buttons=["download", "fullscreen"], **kwargs)


def _examples(tab: str, upload):
    gr.Examples(examples=[[str(p)] for p in zoo.example_images()], inputs=[upload], label="Shipped examples",
                examples_per_page=12, elem_id=f"{tab}-examples")


def _picker(names, label="Model"):
    return gr.Dropdown(choices=names, value=names[0] if names else None, label=label, interactive=True)


def _missing(what):
    gr.Markdown(f"No {what} model is installed, so this tab has nothing to show.")


def _rotation_tab():
    names = models_for("rotation")
    if not names:
        return _missing("rotation")
    with gr.Row():
        with gr.Column(scale=2):
            model = _picker(names)
            upload = _upload("rotation")
            turn = gr.Radio(_tabs.ANGLE_LABELS, value="0°", label="Rotate my upload (counter-clockwise) first",
                            elem_id="rotation-turn")
            go = gr.Button("Predict the rotation", variant="primary")
            _examples("rotation", upload)
        with gr.Column(scale=3):
            summary = gr.Markdown(elem_classes="result-summary", elem_id="rotation-summary")
            with gr.Row():
                turned = _shown("Your image, turned", height=240)
                label = _scores("Model: which turn is this?", num_top_classes=4, elem_id="rotation-label")
                upright = _shown("Turned back by its guess", height=240)
            gallery = gr.Gallery(label="Your image in all four rotations: turn → the model's guess (✓ right, ✗ wrong)", columns=4,
                                 height="auto", format="png", object_fit="contain")
    _run(go, _tabs.rotation, [model, upload, turn], [turned, label, upright, gallery, summary], "rotation")


def _jigsaw_tab():
    names = models_for("jigsaw")
    if not names:
        return _missing("jigsaw")
    with gr.Row():
        with gr.Column(scale=2):
            model = _picker(names)
            upload = _upload("jigsaw")
            perm = gr.Number(label="Permutation index in the model's set (empty: random)", precision=0,
                             minimum=0, value=None)
            with gr.Row():
                shuffle = gr.Button("Shuffle randomly and solve", variant="primary")
                solve = gr.Button("Solve this permutation")
            _examples("jigsaw", upload)
        with gr.Column(scale=3):
            summary = gr.Markdown(elem_classes="result-summary", elem_id="jigsaw-summary")
            with gr.Row():
                original = _shown("Original (tiles in place)")
                shuffled = _shown("Shuffled (what the model gets)")
                fixed = _shown("Reassembled by its top guess")
            label = _scores("Model: its top permutations (✓ = the true one)", num_top_classes=5,
                                elem_id="jigsaw-label")
    outputs = [original, shuffled, fixed, label, perm, summary]
    _run(solve, _tabs.jigsaw, [model, upload, perm], outputs, "jigsaw", keep=[perm])

    def jigsaw_random(model_name, upload):
        return _tabs.jigsaw(model_name, upload, None)

    _run(shuffle, jigsaw_random, [model, upload], outputs, "jigsaw_random", keep=[perm])


def _relpatch_tab():
    names = models_for("relative-patch")
    if not names:
        return _missing("relative-patch")
    with gr.Row():
        with gr.Column(scale=2):
            model = _picker(names)
            upload = _upload("relpatch")
            position = gr.Radio(["random", *POSITIONS], value="random", label="Which neighbour to show",
                                elem_id="relpatch-position")
            go = gr.Button("Where is this patch?", variant="primary")
            _examples("relpatch", upload)
        with gr.Column(scale=3):
            summary = gr.Markdown(elem_classes="result-summary", elem_id="relpatch-summary")
            with gr.Row():
                pair = _shown("Centre patch | a neighbour (its input)")
                label = _scores("Model: where is the neighbour?", num_top_classes=8, elem_id="relpatch-label")
            with gr.Row():
                answer = _shown("The model's answer")
                truth = _shown("Where they really are")
                shown = gr.Textbox(label="Neighbour shown", interactive=False)
    _run(go, _tabs.relpatch, [model, upload, position], [pair, label, answer, truth, shown, summary], "relpatch")


def _classify_tab():
    names = models_for(probes=True)
    if not names:
        return _missing("probed (sslzoo probe)")
    layers = _tabs.probe_layers(names[0])
    with gr.Row():
        with gr.Column(scale=2):
            model = _picker(names)
            layer = gr.Radio(layers, value=layers[-1], label="Tap whose probe classifies")
            upload = _upload("classify")
            go = gr.Button("Classify", variant="primary")
            _examples("classify", upload)
        with gr.Column(scale=3):
            summary = gr.Markdown(elem_classes="result-summary", elem_id="classify-summary")
            with gr.Row():
                label = _scores("Linear probe: top 3 classes", num_top_classes=3, elem_id="classify-label")
                view = _shown("What the model sees", height=220)
            plot = _shown("Linear-probe top-1 by layer: this model vs random init", value=probe_plot(names[0]))

    def pick(name):
        taps = _tabs.probe_layers(name)
        return gr.Radio(choices=taps, value=taps[-1] if taps else None), probe_plot(name)

    model.change(safe(pick), [model], [layer, plot], api_visibility="private")
    _run(go, _tabs.classify, [model, layer, upload], [label, view, plot, summary], "classify", keep=[plot])


def _models_tab():
    names = models_for()
    if not names:
        return _missing("")
    headers, rows = _tabs.models_table(names)
    gr.Dataframe(value=rows, headers=headers, interactive=False, wrap=True,
                 label="The zoo on this machine: linear-probe top-1 (%) on frozen features per tap, best tap *")
    model = _picker(names, "Model card")
    card, plot = _tabs.model_info(names[0])
    with gr.Row():
        with gr.Column(scale=3):
            card_md = gr.Markdown(card, elem_id="model-card")
        with gr.Column(scale=2):
            plot_img = _shown("Linear-probe top-1 by layer", value=plot)
    model.change(safe(_tabs.model_info), [model], [card_md, plot_img], api_name="model_info")


def build_app() -> gr.Blocks:
    """The five-tab gr.Blocks (not launched, no queue settings)."""
    with gr.Blocks(title="sslzoo demo", analytics_enabled=False) as demo:
        gr.Markdown(INTRO)
        with gr.Tabs():
            with gr.Tab("Rotation", id="rotation"):
                _rotation_tab()
            with gr.Tab("Jigsaw", id="jigsaw"):
                _jigsaw_tab()
            with gr.Tab("Relative patch", id="relpatch"):
                _relpatch_tab()
            with gr.Tab("Classify (linear probe)", id="classify"):
                _classify_tab()
            with gr.Tab("Models", id="models"):
                _models_tab()
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
    offered = {*models_for("rotation"), *models_for("jigsaw"), *models_for("relative-patch"), *models_for(probes=True)}
    for name in sorted(offered):  # load every model a tab runs once, now: no request pays for it
        get_model(name)
    demo = build_app()
    demo.queue(default_concurrency_limit=max(1, concurrency), max_size=MAX_QUEUE)
    _, url, _ = demo.launch(server_name=host, server_port=port, share=False, inbrowser=open_browser,
                            prevent_thread_lock=not block, quiet=quiet, max_file_size=MAX_UPLOAD_BYTES,
                            allowed_paths=allowed_paths(), show_error=False, ssr_mode=False, mcp_server=False,
                            pwa=False, enable_monitoring=False, theme=THEME, css=CSS, footer_links=["api"])
    return demo, url


__all__ = ["build_app", "launch", "upload_image", "safe"]
