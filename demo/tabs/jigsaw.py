"""Jigsaw tab: shuffle the upload's 3 x 3 tiles by one of the model's permutations (chosen or
drawn), the model names the permutation, and its guess puts the tiles back."""
from __future__ import annotations

import torch

from sslzoo.zoo.pretexts import jigsaw as jg

from . import Tab
from .._core import GAP, display_tiles, load_upload, model_input, parse_index, pct, pretext_model, square, to_pil


def perm_text(perm) -> str:
    return "".join(str(int(v)) for v in perm)


def jigsaw(model_name: str, upload, perm_index=None, top: int = 5):
    """-> (original, shuffled puzzle, puzzle reassembled by the top prediction,
    {"#index (perm)": p} for the top permutations, the permutation index used, summary)."""
    m = pretext_model(model_name, "jigsaw")
    perms = jg.permutations_of(m)
    idx = parse_index(perm_index, len(perms), "permutation")
    img = load_upload(upload)
    base = square(img)
    tiles, _ = jg.make_puzzle(model_input(m, base), idx, m)
    with torch.inference_mode():
        logits = m.predict_pretext(tiles[None])[0]
    probs = torch.softmax(logits.float(), -1)
    best = int(probs.argmax())
    shown = display_tiles(m, img, perms[idx])  # position i shows cell perms[idx][i]
    shuffled = to_pil(jg.puzzle_image(shown, GAP, 1.0))
    fixed = to_pil(jg.puzzle_image(jg.reassemble(shown, perms[best]), GAP, 1.0))
    original = to_pil(jg.puzzle_image(jg.reassemble(shown, perms[idx]), GAP, 1.0))
    order = torch.argsort(probs, descending=True)[:top].tolist()
    label = {f"{'✓ ' if j == idx else ''}#{j} ({perm_text(perms[j])})": float(probs[j]) for j in order}
    in_place = int((perms[best] == perms[idx]).sum())
    verdict = "solved it" if best == idx else f"guessed #{best}: {in_place}/9 tiles land in the right place"
    rank = int((probs > probs[idx]).sum()) + 1
    summary = (f"Shuffled with permutation **#{idx}** ({perm_text(perms[idx])}: position i shows tile perm[i]) "
               f"of the model's {len(perms)}. **{model_name}** {verdict} "
               f"({pct(float(probs[best]))}); the true permutation is its rank {rank} ({pct(float(probs[idx]))}).")
    return original, shuffled, fixed, label, idx, summary


def jigsaw_random(model_name: str, upload):
    """``jigsaw`` with a permutation drawn at random (the "Shuffle randomly" button)."""
    return jigsaw(model_name, upload, None)


def build() -> None:
    """Model, upload, permutation index (or random) -> original, shuffled, reassembled, top guesses."""
    from .._ui import examples, gr, missing, picker, run, scores, shown, upload

    names = TAB.models()
    if not names:
        return missing("jigsaw")
    with gr.Row():
        with gr.Column(scale=2):
            model = picker(names)
            image = upload("jigsaw")
            perm = gr.Number(label="Permutation index in the model's set (empty: random)", precision=0,
                             minimum=0, value=None)
            with gr.Row():
                shuffle = gr.Button("Shuffle randomly and solve", variant="primary")
                solve = gr.Button("Solve this permutation")
            examples("jigsaw", image)
        with gr.Column(scale=3):
            summary = gr.Markdown(elem_classes="result-summary", elem_id="jigsaw-summary")
            with gr.Row():
                original = shown("Original (tiles in place)")
                shuffled = shown("Shuffled (what the model gets)")
                fixed = shown("Reassembled by its top guess")
            label = scores("Model: its top permutations (✓ = the true one)", num_top_classes=5,
                           elem_id="jigsaw-label")
    outputs = [original, shuffled, fixed, label, perm, summary]
    run(solve, jigsaw, [model, image, perm], outputs, "jigsaw", keep=[perm])
    run(shuffle, jigsaw_random, [model, image], outputs, "jigsaw_random", keep=[perm])


TAB = Tab(id="jigsaw", title="Jigsaw", pretexts=("jigsaw",), build=build)
