"""Relative-patch tab: the centre tile and one of its eight neighbours; the model says where the
neighbour sits, shown on the grid beside where it really is."""
from __future__ import annotations

import random

import torch

from sslzoo.zoo.pretexts import relpatch as rp
from sslzoo.zoo.pretexts.patches import GRID, grid_image

from . import Tab
from .._core import (GAP, display_tiles, load_upload, model_input, parse_index, pct, pretext_model, probs_dict, square,
                     to_pil)


def parse_position(position, rng: random.Random | None = None) -> int:
    """A neighbour's name ("top-left", ...) or index 0..7; None / "" / "random" draws one."""
    if isinstance(position, str) and position.strip().lower() in rp.POSITIONS:
        return rp.POSITIONS.index(position.strip().lower())
    return parse_index(position, len(rp.POSITIONS), "position", rng)


def relpatch(model_name: str, upload, position=None):
    """-> (centre | neighbour pair, {position: p}, the model's answer on the grid, where the two
    patches really are, the position used, summary)."""
    m = pretext_model(model_name, "relative-patch")
    pos = parse_position(position)
    img = load_upload(upload)
    pair, _ = rp.make_pair(model_input(m, square(img)), pos, m)
    with torch.inference_mode():
        logits = m.predict_pretext(pair[None])[0]
    probs = torch.softmax(logits.float(), -1)
    pred = int(probs.argmax())
    tiles = display_tiles(m, img, torch.arange(GRID * GRID))  # 9 x 3 x t x t, row-major
    neighbour = rp.NEIGHBOURS[pos]
    blank = torch.full_like(tiles[0], 0.93)
    pair_img = torch.cat([tiles[rp.CENTRE], torch.ones(3, tiles.shape[-2], 3 * GAP), tiles[neighbour]], dim=-1)
    answer = torch.stack([blank] * 9)
    answer[rp.CENTRE], answer[rp.NEIGHBOURS[pred]] = tiles[rp.CENTRE], tiles[neighbour]
    truth = tiles * 0.25 + 0.75  # the other cells faded
    truth[rp.CENTRE], truth[neighbour] = tiles[rp.CENTRE], tiles[neighbour]
    verdict = "right" if pred == pos else f"wrong: it is the **{rp.POSITIONS[pos]}** neighbour"
    summary = (f"**{model_name}** puts the second patch **{rp.POSITIONS[pred]}** of the centre patch "
               f"({pct(float(probs[pred]))}): {verdict}.")
    return (to_pil(pair_img), probs_dict(probs, list(rp.POSITIONS)), to_pil(grid_image(answer, GAP, 1.0)),
            to_pil(grid_image(truth, GAP, 1.0)), rp.POSITIONS[pos], summary)


def build() -> None:
    """Model, upload, neighbour (or random) -> the pair, the model's scores, its answer and the truth."""
    from .._ui import examples, gr, missing, picker, run, scores, shown, upload

    names = TAB.models()
    if not names:
        return missing("relative-patch")
    with gr.Row():
        with gr.Column(scale=2):
            model = picker(names)
            image = upload("relpatch")
            position = gr.Radio(["random", *rp.POSITIONS], value="random", label="Which neighbour to show",
                                elem_id="relpatch-position")
            go = gr.Button("Where is this patch?", variant="primary")
            examples("relpatch", image)
        with gr.Column(scale=3):
            summary = gr.Markdown(elem_classes="result-summary", elem_id="relpatch-summary")
            with gr.Row():
                pair = shown("Centre patch | a neighbour (its input)")
                label = scores("Model: where is the neighbour?", num_top_classes=8, elem_id="relpatch-label")
            with gr.Row():
                answer = shown("The model's answer")
                truth = shown("Where they really are")
                neighbour = gr.Textbox(label="Neighbour shown", interactive=False)
    run(go, relpatch, [model, image, position], [pair, label, answer, truth, neighbour, summary], "relpatch")


TAB = Tab(id="relpatch", title="Relative patch", pretexts=("relative-patch",), build=build)
