"""Colorize tab: the upload's L channel, the model's colouring of it (the annealed mean of its ab
distribution at a temperature the user picks) and the original side by side; for a split-brain
model also its other half's task, L predicted from the upload's ab alone.

The model sees the upload at its input size; its colours (predicted at 1/4 of that) are enlarged and
put on the displayed image's own L, as the paper shows them. A gray upload has no colours to compare:
the summary says so."""
from __future__ import annotations

import torch

from sslzoo.zoo._colour import rgb_to_lab
from sslzoo.zoo.pretexts import colorization as zc
from sslzoo.zoo.pretexts import split_brain as zs

from . import Tab
from .._core import DemoError, get_model, load_upload, model_config, square, to_pil, to_tensor

PRETEXTS = (zc.PRETEXT, zs.PRETEXT)
GRAY_CHROMA = 5.0  # mean ab magnitude below which an upload counts as gray


def parse_temperature(value, default: float) -> float:
    """The annealed mean's temperature in (0, 1]; None/"" -> ``default`` (the model's own)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return float(default)
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise DemoError(f"temperature must be a number above 0 and at most 1, got {value!r}") from None
    if not 0.0 < t <= 1.0:
        raise DemoError(f"temperature must be a number above 0 and at most 1, got {value!r}")
    return t


def trained_temperature(cfg: dict) -> float:
    return float((cfg.get("pretext_args") or {}).get("temperature", zc.TEMPERATURE))


def _chroma(rgb: torch.Tensor) -> float:
    """Mean ab magnitude (Lab units) of a 3 x H x W image in [0, 1]."""
    return float(rgb_to_lab(rgb[None])[0, 1:].norm(dim=0).mean())


def colorize(model_name: str, upload, temperature=None):
    """-> (L as a gray image, the model's colouring, the original, L predicted from ab (split-brain
    only, else None), the chroma its ab half sees (split-brain only, else None), mean ab error of the
    colouring against the original (Lab units; None for a gray upload), summary)."""
    m = get_model(model_name)
    if not set(PRETEXTS) & set(m.pretexts):
        raise DemoError(f"{model_name} is a {'/'.join(m.pretexts)} model; this tab needs a colorization or "
                        "split-brain model")
    T = parse_temperature(temperature, m.head.temperature)
    x = to_tensor(square(load_upload(upload)))  # 3 x 256 x 256 in [0, 1]
    out = zc.colorize(m, x, T)
    gray_upload = _chroma(x) < GRAY_CHROMA
    error = None if gray_upload else round(float((out["ab"] - rgb_to_lab(x[None])[0, 1:]).norm(dim=0).mean()), 2)
    from_ab = chroma = None
    words = (f"**{model_name}** coloured your image's L channel (temperature **{T:g}**; the paper uses "
             f"{zc.TEMPERATURE:g}). "
             f"Its colours have a mean chroma of **{_chroma(out['colorized']):.1f}** Lab units")
    words += (". Your image is gray (mean chroma below 5), so there are no original colours to compare."
              if gray_upload else f", the original's **{_chroma(x):.1f}**; mean ab error **{error:.1f}**.")
    if zs.PRETEXT in m.pretexts:
        half = zs.lightness_from_ab(m, x)
        from_ab, chroma = to_pil(half["predicted"]), to_pil(half["chroma"])
        l_error = float((half["L"] - rgb_to_lab(x[None])[0, 0]).abs().mean())
        words += (f" Its ab half predicted the lightness from the colours alone: mean |L error| **{l_error:.1f}**"
                  " (L in 0..100)" + (": a gray image gives it no colours to go on." if gray_upload else "."))
    return to_pil(out["gray"]), to_pil(out["colorized"]), to_pil(x), from_ab, chroma, error, words


def build() -> None:
    """Model, upload, temperature -> L, colouring, original; split-brain's L-from-ab; the ab error."""
    from .._ui import examples, gr, missing, picker, run, safe, shown, upload

    names = TAB.models()
    if not names:
        return missing("colorization or split-brain")

    def slider(name):
        t = trained_temperature(model_config(name))
        return gr.Slider(value=t, label=f"Temperature of the annealed mean (the model's {t:g}; 1: the mean, "
                                        "towards 0: the mode)")

    t0 = trained_temperature(model_config(names[0]))
    with gr.Row():
        with gr.Column(scale=2):
            model = picker(names)
            image = upload("colorize")
            temperature = gr.Slider(0.05, 1.0, value=t0, step=0.01, elem_id="colorize-temperature",
                                    label=f"Temperature of the annealed mean (the model's {t0:g}; 1: the mean, "
                                          "towards 0: the mode)")
            go = gr.Button("Colorize", variant="primary")
            examples("colorize", image)
        with gr.Column(scale=3):
            summary = gr.Markdown(elem_classes="result-summary", elem_id="colorize-summary")
            with gr.Row():
                pictures = [shown(c) for c in ("L channel (what the model sees)", "Coloured by the model", "Original")]
            with gr.Row():
                halves = [shown(c) for c in ("Split-brain: L predicted from ab", "Split-brain: the ab its other half sees")]
            error = gr.Number(label="Mean ab error vs the original (Lab units)", interactive=False,
                              elem_id="colorize-error")
    model.change(safe(slider), [model], [temperature], api_visibility="private")
    run(go, colorize, [model, image, temperature], [*pictures, *halves, error, summary], "colorize")


TAB = Tab(id="colorize", title="Colorize", pretexts=PRETEXTS, build=build)
