"""Counting tab: the upload's views as a counting model sees them (the whole downsampled by 2, its
four tiles, all at the model's input size) and its count vectors: the counts of the whole against
the sum of the tiles' counts (the top active dimensions in a table), the distance between the two,
and for contrast the distance from another image's counts (a shipped example) to that same sum.

The model was trained to make the first distance small and the second large (Noroozi et al.,
ICCV 2017; ``sslzoo.zoo.pretexts.counting``)."""
from __future__ import annotations

import os

import torch

from sslzoo import zoo
from sslzoo.zoo._transforms import normalize, to_uint8_tensor
from sslzoo.zoo.pretexts import counting as ct
from sslzoo.zoo.pretexts.decoder import to_unit

from . import Tab
from .._core import DemoError, display_factor, enlarge, load_upload, pretext_model, to_pil

TOP = 10  # count dimensions shown in the table
DEFAULT_OTHER = "fmnist-2-trouser.png"  # the contrast the tab starts with
GAP = 4  # model px between the displayed tiles
TABLE_HEADERS = ["dimension", "whole φ(D x)", "Σ tiles φ(T x)", "top-left", "top-right", "bottom-left",
                 "bottom-right", "other image φ(D y)"]


def examples_by_name() -> dict[str, object]:
    return {p.name: p for p in zoo.example_images()}


def parse_method(value) -> str:
    """D's resize method (a ``counting.METHODS`` key); None/"" -> bilinear."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return "bilinear"
    method = str(value).strip().lower()
    if method not in ct.METHODS:
        raise DemoError(f"downsampling must be one of {', '.join(ct.METHODS)}, got {value!r}")
    return method


def parse_contrast(value, upload) -> tuple[str, object]:
    """(name, path) of the shipped example whose counts are the contrast; None/"" -> the first
    example that is not the upload itself."""
    examples = examples_by_name()
    if value is None or (isinstance(value, str) and not value.strip()):
        own = os.fspath(upload) if isinstance(upload, (str, os.PathLike)) else ""
        name = next(n for n, p in examples.items() if str(p) != own)
        return name, examples[name]
    name = str(value).strip()
    if name not in examples:
        raise DemoError(f"the other image must be one of the shipped examples ({', '.join(examples)}), got {value!r}")
    return name, examples[name]


def _source(m, img) -> torch.Tensor:
    """A PIL image -> normalised C x 2H x 2W: read at twice the model's side, its views are cut from it."""
    try:
        return normalize(to_uint8_tensor(img, ct.source_config(m)), m.data_config)
    except ValueError as e:  # e.g. a thin image too large once resized
        raise DemoError(str(e)) from None


def tile_grid(tiles: torch.Tensor, gap: int = GAP, fill: float = 1.0) -> torch.Tensor:
    """Four tiles (4 x C x H x W, row-major) laid out 2 x 2 with ``gap`` px of ``fill`` between them."""
    _, c, h, w = tiles.shape
    out = tiles.new_full((c, 2 * h + gap, 2 * w + gap), fill)
    for j, t in enumerate(tiles):
        r, col = divmod(j, 2)
        out[:, r * (h + gap):r * (h + gap) + h, col * (w + gap):col * (w + gap) + w] = t
    return out


def counting(model_name: str, upload, method="bilinear", contrast=None):
    """-> (D(x) as the model sees it, the four tiles 2 x 2 (same scale), table rows for the top active
    count dimensions [dimension, whole, tile sum, the four tiles, the other image's whole],
    |phi(D x) - sum phi(T x)|, |phi(D y) - sum phi(T x)| with y the other image, summary)."""
    m = pretext_model(model_name, ct.PRETEXT)
    method = parse_method(method)
    other_name, other_path = parse_contrast(contrast, upload)
    x = torch.stack([_source(m, load_upload(upload)), _source(m, load_upload(other_path))])  # 2 x C x 2H x 2W
    views = ct.views_for(m, x, method)  # 2 x 5 x C x H x W
    counts = ct.count(m, views)
    whole, tiles, tile_sum = counts["whole"][0], counts["tiles"][0], counts["tile_sum"][0]  # K, 4 x K, K
    other = counts["whole"][1]
    own_d, other_d = float(counts["distance"][0]), float((other - tile_sum).norm())

    cfg = m.data_config
    shown = to_unit(views[0], cfg)  # 5 x C x H x W in [0, 1]
    k = display_factor(shown.shape[-2])
    down_img, tiles_img = enlarge(to_pil(shown[0]), k), enlarge(to_pil(tile_grid(shown[1:])), k)

    active = (whole > 0) | (tiles > 0).any(0)  # K
    ranked = torch.argsort(torch.maximum(whole, tile_sum), descending=True)  # K, largest count first
    order = ranked[active[ranked]][:TOP].tolist()
    rows = [[i, round(float(whole[i]), 3), round(float(tile_sum[i]), 3), *(round(float(t), 3) for t in tiles[:, i]),
             round(float(other[i]), 3)] for i in order]
    closer = own_d < other_d
    verdict = ("closer to the sum over its tiles than the other image's counts are, as the model was trained to make them"
               if closer else "**not** closer to the sum over its tiles than the other image's counts are")
    summary = (f"**{model_name}** counts with **{int(active.sum())}** of its {whole.numel()} dimensions on your image "
               f"(D by {method} downsampling). |φ(D x) − Σ φ(T x)| = **{own_d:.3f}** against **{other_d:.3f}** for "
               f"the other image ({other_name}): your image's counts are {verdict}.")
    return down_img, tiles_img, rows, round(own_d, 4), round(other_d, 4), summary


def build() -> None:
    """Model, upload, D's resize method, the other image -> views, the counts table, the two distances."""
    from .._ui import examples, gr, missing, picker, run, shown, upload

    names = TAB.models()
    if not names:
        return missing("counting")
    choices = list(examples_by_name())
    with gr.Row():
        with gr.Column(scale=2):
            model = picker(names)
            image = upload("counting")
            method = gr.Radio(list(ct.METHODS), value="bilinear", label="Downsample the whole by",
                              elem_id="counting-method")
            other = gr.Dropdown(choices, value=DEFAULT_OTHER if DEFAULT_OTHER in choices else choices[0], elem_id="counting-other",
                                label="Other image (its counts are the contrast)")
            go = gr.Button("Count", variant="primary")
            examples("counting", image)
        with gr.Column(scale=3):
            summary = gr.Markdown(elem_classes="result-summary", elem_id="counting-summary")
            with gr.Row():
                down = shown("The whole, downsampled: D(x)", height=240)
                tiles = shown("Its four tiles: T₁..T₄(x)", height=240)
            with gr.Row():
                own = gr.Number(label="|φ(D x) − Σ φ(T x)|", interactive=False, elem_id="counting-own")
                far = gr.Number(label="|φ(D y) − Σ φ(T x)|, y the other image", interactive=False,
                                elem_id="counting-other-distance")
            table = gr.Dataframe(headers=TABLE_HEADERS, interactive=False, label="Top active count dimensions",
                                 elem_id="counting-table")
    run(go, counting, [model, image, method, other], [down, tiles, table, own, far, summary], "counting")


TAB = Tab(id="counting", title="Counting", pretexts=(ct.PRETEXT,), build=build)
