"""Classify tab: the linear probe stored with a model, on the frozen features of one tap, names
the upload's class (the probe dataset's classes, whatever the image shows)."""
from __future__ import annotations

import torch
from PIL import Image

from . import Tab
from .._core import (DemoError, get_model, load_upload, model_config, model_input, models_for, pct, probe_plot,
                     probs_dict, to_pil)


def probe_layers(model_name: str) -> list[str]:
    """Taps with a stored probe head, in network order."""
    heads = (model_config(model_name).get("probe") or {}).get("heads", {})
    return sorted(heads, key=lambda layer: (len(layer), layer))


def _view(m, x: torch.Tensor, size: int = 192) -> Image.Image:
    """The model's normalised input as the picture it sees (its size and mode, upscaled)."""
    cfg = m.data_config
    mean = torch.tensor(cfg["mean"]).view(-1, 1, 1)
    std = torch.tensor(cfg["std"]).view(-1, 1, 1)
    return to_pil(x * std + mean, size)


def classify(model_name: str, layer: str, upload, top: int = 3):
    """-> ({class: p} top ``top``, what the model sees, the model's probe plot path, summary)."""
    m = get_model(model_name)
    if not len(m.probes):
        raise DemoError(f"{model_name} has no probe heads (run `sslzoo probe {model_name}`)")
    if layer not in m.probes:
        raise DemoError(f"{model_name} has no probe head for {layer!r}; pick one of {', '.join(probe_layers(model_name))}")
    x = model_input(m, load_upload(upload))
    with torch.inference_mode():
        logits = m.classify(x[None], layer)[0]
    label = probs_dict(torch.softmax(logits.float(), -1), m.classes, top)
    probe = model_config(model_name).get("probe") or {}
    acc = (probe.get("accuracy") or {}).get(layer)
    dataset = probe.get("dataset", "its probe dataset")
    acc_text = f" (that probe's test top-1: {pct(acc)})" if acc is not None else ""
    best = max((probe.get("accuracy") or {}).items(), key=lambda kv: kv[1], default=None)
    best_text = f" The best tap of this model is {best[0]} ({pct(best[1])})." if best else ""
    summary = (f"Linear probe on frozen **{layer}** features of **{model_name}**, trained on {dataset}{acc_text}: "
               f"**{next(iter(label))}**.{best_text} The classes are {dataset}'s, whatever the image shows.")
    return label, _view(m, x), probe_plot(model_name), summary


def probed_models() -> list[str]:
    """The models with probe heads stored with them: what this tab offers, whatever their pretext."""
    return models_for(probes=True)


def build() -> None:
    """Model, tap, upload -> the top classes, what the model sees, the model's per-layer probe plot."""
    from .._ui import examples, gr, missing, picker, run, safe, scores, shown, upload

    names = TAB.models()
    if not names:
        return missing("probed (sslzoo probe)")
    layers = probe_layers(names[0])
    with gr.Row():
        with gr.Column(scale=2):
            model = picker(names)
            layer = gr.Radio(layers, value=layers[-1], label="Tap whose probe classifies")
            image = upload("classify")
            go = gr.Button("Classify", variant="primary")
            examples("classify", image)
        with gr.Column(scale=3):
            summary = gr.Markdown(elem_classes="result-summary", elem_id="classify-summary")
            with gr.Row():
                label = scores("Linear probe: top 3 classes", num_top_classes=3, elem_id="classify-label")
                view = shown("What the model sees", height=220)
            plot = shown("Linear-probe top-1 by layer: this model vs random init", value=probe_plot(names[0]))

    def pick(name):
        taps = probe_layers(name)
        return gr.Radio(choices=taps, value=taps[-1] if taps else None), probe_plot(name)

    model.change(safe(pick), [model], [layer, plot], api_visibility="private")
    run(go, classify, [model, layer, image], [label, view, plot, summary], "classify", keep=[plot])


TAB = Tab(id="classify", title="Classify (linear probe)", pretexts=None, build=build, runs=probed_models)
