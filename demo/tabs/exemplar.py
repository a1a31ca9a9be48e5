"""Exemplar tab: the upload under random deformations of the kind an Exemplar CNN learns to see
through (zoom, shift, turn, contrast, and colour for a colour model; a seed the user picks), and
the model's surrogate class for each. An Exemplar model was trained to give all deformations of
one seed image one class, so the tab shows whether it does that for the upload too: the share of
the deformations given the majority class (1.0: all in one class).

A triplet-form model has no classes: for it each deformation's cosine similarity to the undeformed
upload's embedding is shown, and their mean is the figure."""
from __future__ import annotations

import torch

from sslzoo.zoo.pretexts import exemplar as ex

from . import Tab
from .._core import display_factor, enlarge, load_upload, model_input, parse_seed, pct, pretext_model, to_pil

COUNT = 8  # deformations shown
SHOWN = 192  # px each deformation is enlarged to (about; by a whole factor)


def exemplar(model_name: str, upload, seed=0):
    """-> (the upload as the model sees it, gallery [(deformation, caption)] of ``COUNT`` seeded
    deformations with the model's answer for each, the figure (softmax: the share of the
    deformations in the majority class; triplet: their mean cosine similarity to the upload),
    summary)."""
    m = pretext_model(model_name, ex.PRETEXT)
    seed = parse_seed(seed)
    x = model_input(m, load_upload(upload))  # C x H x W, normalised
    unit = ex.to_unit(x, m.data_config).clamp(0, 1)  # C x H x W in [0, 1]
    views = ex.deformations_of(unit, COUNT, seed)  # COUNT x C x H x W in [0, 1]
    answer = ex.surrogate_classes(m, torch.cat([unit[None], views]))  # row 0: the upload itself
    factor = display_factor(x.shape[-2], SHOWN)
    view = enlarge(to_pil(unit), display_factor(x.shape[-2]))
    if "class" in answer:
        classes, probs = answer["class"].tolist(), answer["prob"].tolist()
        major, share = ex.agreement(answer["class"][1:])
        gallery = [(enlarge(to_pil(v), factor), f"#{i + 1}: class {c} ({pct(p)}){' ✓' if c == major else ''}")
                   for i, (v, c, p) in enumerate(zip(views, classes[1:], probs[1:]))]
        n_major = round(share * COUNT)
        verdict = ("all of them in **one class**" if n_major == COUNT else
                   f"**{n_major} of {COUNT}** in its majority class, the rest elsewhere")
        summary = (f"**{model_name}** puts {COUNT} random deformations of your image (seed {seed}) in its "
                   f"surrogate classes ({m.head.num_classes} training images, each a class): {verdict} "
                   f"(class {major}). The undeformed image goes to class {classes[0]} "
                   f"({pct(probs[0])}){', the same' if classes[0] == major else ''}. Trained to give every "
                   f"deformation of a training image that image's class, a model that generalises gives a new "
                   f"image's deformations one class too.")
        return view, gallery, round(share, 4), summary
    emb = answer["embedding"]
    sims = (emb[1:] @ emb[0]).tolist()  # cosine to the upload's own embedding (unit rows)
    gallery = [(enlarge(to_pil(v), factor), f"#{i + 1}: cos {s:.2f}") for i, (v, s) in enumerate(zip(views, sims))]
    mean = sum(sims) / len(sims)
    summary = (f"**{model_name}** is a triplet-form Exemplar model: it has no classes, only an embedding in "
               f"which deformations of one image lie close. The {COUNT} deformations of your image (seed {seed}) "
               f"have a mean cosine similarity of **{mean:.2f}** to the undeformed image (1: the same point).")
    return view, gallery, round(mean, 4), summary


def build() -> None:
    """Model, upload, seed -> the upload, its deformations with the model's class for each, agreement."""
    from .._ui import examples, gr, missing, picker, run, shown, upload

    names = TAB.models()
    if not names:
        return missing(ex.PRETEXT)
    with gr.Row():
        with gr.Column(scale=2):
            model = picker(names)
            image = upload("exemplar")
            seed = gr.Number(0, label="Seed of the deformations", precision=0, minimum=0, elem_id="exemplar-seed")
            go = gr.Button("Deform and classify", variant="primary")
            examples("exemplar", image)
        with gr.Column(scale=3):
            summary = gr.Markdown(elem_classes="result-summary", elem_id="exemplar-summary")
            with gr.Row():
                view = shown("Your image, as the model sees it", height=240)
                share = gr.Number(label="Share in the majority class (triplet models: mean cosine)", interactive=False,
                                  elem_id="exemplar-share")
            gallery = gr.Gallery(label=f"{COUNT} random deformations → the model's surrogate class (✓ the majority's)",
                                 columns=4, height="auto", format="png", object_fit="contain",
                                 elem_id="exemplar-gallery")
    run(go, exemplar, [model, image, seed], [view, gallery, share, summary], "exemplar")


TAB = Tab(id="exemplar", title="Exemplar", pretexts=(ex.PRETEXT,), build=build)
