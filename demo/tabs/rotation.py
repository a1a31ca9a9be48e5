"""Rotation tab: turn the upload by a quarter turn, the model says by how much it was turned
(and the upload in all four turns with the model's guess for each)."""
from __future__ import annotations

import torch

from sslzoo.zoo.pretexts import rotation as rot

from . import Tab
from .._core import DemoError, load_upload, model_input, pct, pretext_model, probs_dict, square

ANGLE_LABELS = [f"{a}°" for a in rot.ANGLES]


def parse_turn(turn) -> int:
    """0/90/180/270 (int, "90", "90°") or None -> quarter turns 0..3."""
    if turn in (None, ""):
        return 0
    text = str(turn).strip().rstrip("°").strip()
    try:
        deg = int(float(text))
    except ValueError:
        raise DemoError(f"turn must be one of {', '.join(ANGLE_LABELS)}, got {turn!r}") from None
    if deg % 90:
        raise DemoError(f"turn must be one of {', '.join(ANGLE_LABELS)}, got {turn!r}")
    return (deg // 90) % 4


def rotation(model_name: str, upload, turn=0):
    """-> (the upload turned by ``turn``, {angle: p} the model gives it, that image turned upright
    by the model's prediction, gallery [(image, caption)] of the upload in its four rotations
    with the model's guess for each, summary)."""
    m = pretext_model(model_name, "rotation")
    k = parse_turn(turn)
    base = square(load_upload(upload))
    x = model_input(m, base)
    with torch.inference_mode():
        probs = torch.softmax(m.predict_pretext(rot.rotate_all(x[None])[0]).float(), -1)  # 4 x 4
    gallery = []
    for j in range(4):
        pj = int(probs[j].argmax())
        mark = "✓" if pj == j else "✗"
        gallery.append((base.rotate(90 * j), f"{ANGLE_LABELS[j]} → {ANGLE_LABELS[pj]} {mark}"))
    turned = base.rotate(90 * k)
    pred = int(probs[k].argmax())
    upright = turned.rotate(-90 * pred)
    verdict = "right" if pred == k else f"wrong (it was turned by {ANGLE_LABELS[k]})"
    summary = (f"**{model_name}** says this image is turned by **{ANGLE_LABELS[pred]}** counter-clockwise "
               f"({pct(float(probs[k, pred]))}); you turned it by {ANGLE_LABELS[k]}: {verdict}. "
               f"Turned back by {ANGLE_LABELS[pred]} it should stand upright. "
               f"Over the four turns the model is right {sum(int(probs[j].argmax()) == j for j in range(4))}/4 times.")
    return turned, probs_dict(probs[k], ANGLE_LABELS), upright, gallery, summary


def build() -> None:
    """Model, upload, turn -> the turned image, the model's scores, it turned back, all four turns."""
    from .._ui import examples, gr, missing, picker, run, scores, shown, upload

    names = TAB.models()
    if not names:
        return missing("rotation")
    with gr.Row():
        with gr.Column(scale=2):
            model = picker(names)
            image = upload("rotation")
            turn = gr.Radio(ANGLE_LABELS, value="0°", label="Rotate my upload (counter-clockwise) first",
                            elem_id="rotation-turn")
            go = gr.Button("Predict the rotation", variant="primary")
            examples("rotation", image)
        with gr.Column(scale=3):
            summary = gr.Markdown(elem_classes="result-summary", elem_id="rotation-summary")
            with gr.Row():
                turned = shown("Your image, turned", height=240)
                label = scores("Model: which turn is this?", num_top_classes=4, elem_id="rotation-label")
                upright = shown("Turned back by its guess", height=240)
            gallery = gr.Gallery(label="Your image in all four rotations: turn → the model's guess "
                                 "(✓ right, ✗ wrong)", columns=4, height="auto", format="png", object_fit="contain")
    run(go, rotation, [model, image, turn], [turned, label, upright, gallery, summary], "rotation")


TAB = Tab(id="rotation", title="Rotation", pretexts=("rotation",), build=build)
