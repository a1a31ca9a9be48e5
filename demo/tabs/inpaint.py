"""Inpaint tab: a hole cut in the upload (the centre square, or seeded random rectangles), filled
by the context encoder, beside the original, with the PSNR on the hole of the model's fill and of
the plain fill with the data set's mean (what the model gets).

Everything is at the model's input size (what its trunk sees), shown enlarged by a whole factor;
the PSNRs are measured on the 8-bit images shown (``_core.as_shown``)."""
from __future__ import annotations

import torch

from sslzoo.zoo.pretexts import context_encoder as cx
from sslzoo.zoo.pretexts.decoder import psnr

from . import Tab
from .._core import (DemoError, as_shown, display_factor, enlarge, load_upload, model_config, model_input, parse_seed,
                     pct, pretext_model, to_pil)

MASK_LABELS = {"central": "centre", "random": "random"}  # the head's mask kind -> the radio's label
MASK_CHOICES = list(MASK_LABELS.values())


def parse_mask(value, default: str) -> str:
    """"centre" / "center" / "central" / "random" (any case) -> the head's kind; None/"" -> ``default``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    text = str(value).strip().lower()
    if text in ("centre", "center", "central"):
        return "central"
    if text == "random":
        return "random"
    raise DemoError(f"mask must be one of {', '.join(MASK_CHOICES)}, got {value!r}")


def trained_mask(cfg: dict) -> str:
    """The mask kind a context-encoder model was trained with, from its config's pretext_args."""
    return (cfg.get("pretext_args") or {}).get("mask", "random")


def inpaint(model_name: str, upload, mask=None, seed=0):
    """-> (the upload with the hole filled with the mean (what the model gets), filled by the model,
    the original (as the model sees it), PSNR on the hole of the model's fill (dB), of the mean fill
    (dB), summary). ``mask``: "centre" or "random" (None: the model's own kind); a random hole comes
    from ``torch.Generator().manual_seed(seed)``. A model trained on the centre hole predicts only
    that square, so it is given the centre hole only."""
    m = pretext_model(model_name, "context-encoder")
    head = m.head
    kind, seed = parse_mask(mask, head.mask), parse_seed(seed)
    if kind == "random" and head.mask == "central":
        raise DemoError(f"{model_name} was trained to fill the centre hole (its decoder paints only that square): "
                        "pick the centre mask")
    x = model_input(m, load_upload(upload))  # C x H x W, normalised
    _, H, W = head.input_size
    hole = cx.make_masks(kind, 1, H, W, torch.Generator().manual_seed(seed))
    result = cx.inpaint(m, x, hole)
    clean, masked, filled = (as_shown(result[k]) for k in ("clean", "masked", "filled"))
    where = result["mask"][None].expand_as(clean)
    model_psnr, mean_psnr = round(psnr(filled, clean, where), 2), round(psnr(masked, clean, where), 2)
    k = display_factor(H)
    masked_img, filled_img, original_img = (enlarge(to_pil(t), k) for t in (masked, filled, clean))
    gain = model_psnr - mean_psnr
    verdict = (f"**{gain:.2f} dB better** than filling it with the mean" if gain >= 0
               else f"**{-gain:.2f} dB worse** than filling it with the mean")
    hole_text = (f"the centre {int(result['mask'].any(0).sum())}x{int(result['mask'].any(1).sum())} px square"
                 if kind == "central" else f"random rectangles (seed {seed})")
    summary = (f"**{model_name}** filled a hole of {hole_text}, {pct(float(result['mask'].float().mean()))} of its "
               f"{W}x{H} px input: PSNR on the hole **{model_psnr:.2f} dB**, {verdict} ({mean_psnr:.2f} dB). "
               f"It was trained on {MASK_LABELS.get(head.mask, head.mask)} holes.")
    return masked_img, filled_img, original_img, model_psnr, mean_psnr, summary


def build() -> None:
    """Model, upload, mask, seed -> masked, filled, original and the hole's PSNRs."""
    from .._ui import gr, missing, reconstruction_panel

    names = TAB.models()
    if not names:
        return missing("context-encoder")

    def mask_radio(name):
        kind = trained_mask(model_config(name))
        return gr.Radio(value=MASK_LABELS.get(kind, "random"),
                        label=f"Hole (the model was trained on {MASK_LABELS.get(kind, kind)} holes)")

    kind0 = trained_mask(model_config(names[0]))
    reconstruction_panel(
        "inpaint", names, inpaint,
        lambda: gr.Radio(MASK_CHOICES, value=MASK_LABELS.get(kind0, "random"), elem_id="inpaint-mask",
                         label=f"Hole (the model was trained on {MASK_LABELS.get(kind0, kind0)} holes)"),
        mask_radio, seed_label="Seed of the random hole", button="Cut a hole and fill it",
        images=("Masked (the model's input)", "Hole filled by the model", "Original (as the model sees it)"),
        figures=(("PSNR on the hole: the model's fill (dB)", "psnr-model"),
                 ("PSNR on the hole: the mean fill (dB)", "psnr-mean")))


TAB = Tab(id="inpaint", title="Inpaint", pretexts=("context-encoder",), build=build)
