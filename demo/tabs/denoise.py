"""Denoise tab: the upload corrupted by the model's own noise (the kind it was trained with, at a
level and seed the user picks), restored by the model, beside the original, with the PSNR of the
corrupted and of the restored image against the original.

Everything is at the model's input size (what its trunk sees), shown enlarged by a whole factor;
the PSNRs are measured on the 8-bit images shown (``_core.as_shown``)."""
from __future__ import annotations

import torch

from sslzoo.zoo.pretexts import denoising as dn
from sslzoo.zoo.pretexts.decoder import psnr, to_unit

from . import Tab
from .._core import (DemoError, as_shown, display_factor, enlarge, load_upload, model_config, model_input, parse_seed,
                     pretext_model, to_pil)

NOISE_WORDS = {"mask": "masking noise: each pixel set to the mean with probability",
               "gaussian": "Gaussian noise of standard deviation (pixel units)"}


def trained_noise(cfg: dict) -> tuple[str, float]:
    """(noise kind, level) a denoising model was trained with, from its config's pretext_args."""
    args = cfg.get("pretext_args") or {}
    return args.get("noise", "mask"), float(args.get("noise_level", 0.5))


def parse_level(value, default: float) -> float:
    """The user's noise level in 0..1; None/"" -> ``default`` (the model's own)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return float(default)
    try:
        level = float(value)
    except (TypeError, ValueError):
        raise DemoError(f"noise level must be a number from 0 to 1, got {value!r}") from None
    if not 0.0 <= level <= 1.0:
        raise DemoError(f"noise level must be a number from 0 to 1, got {value!r}")
    return level


def denoise(model_name: str, upload, noise_level=None, seed=0):
    """-> (the upload corrupted, restored by the model, the original (as the model sees it),
    PSNR corrupted vs original (dB), PSNR restored vs original (dB), summary). ``noise_level``
    None: the model's own; the noise is drawn from ``torch.Generator().manual_seed(seed)``."""
    m = pretext_model(model_name, "denoising")
    noise, trained = m.head.noise, m.head.noise_level
    level, seed = parse_level(noise_level, trained), parse_seed(seed)
    x = model_input(m, load_upload(upload))  # C x H x W, normalised
    gen = torch.Generator().manual_seed(seed)
    noisy = dn.corrupt(x, noise, level, gen, m.data_config["std"])
    restored = dn.restore(m, noisy)
    cfg = m.data_config
    clean, shown, out = (as_shown(to_unit(t, cfg)) for t in (x, noisy, restored))
    psnr_in, psnr_out = round(psnr(shown, clean), 2), round(psnr(out, clean), 2)
    k = display_factor(clean.shape[-2])
    corrupted_img, restored_img, original_img = (enlarge(to_pil(t), k) for t in (shown, out, clean))
    h, w = clean.shape[-2:]
    gain = psnr_out - psnr_in
    verdict = (f"the restoration is **{gain:.2f} dB closer** to the original than the corrupted input" if gain >= 0
               else f"the restoration is **{-gain:.2f} dB further** from the original than the corrupted input")
    at = "the level it was trained at" if abs(level - trained) < 1e-9 else f"it was trained at {trained:g}"
    summary = (f"**{model_name}** restored your image from {NOISE_WORDS.get(noise, noise)} **{level:g}** ({at}; "
               f"seed {seed}), at its {w}x{h} px input: PSNR against the original **{psnr_in:.2f} dB** corrupted, "
               f"**{psnr_out:.2f} dB** restored: {verdict}.")
    return corrupted_img, restored_img, original_img, psnr_in, psnr_out, summary


def build() -> None:
    """Model, upload, noise level, seed -> corrupted, restored, original and both PSNRs."""
    from .._ui import gr, missing, reconstruction_panel

    names = TAB.models()
    if not names:
        return missing("denoising")

    def level_slider(name):
        noise, level = trained_noise(model_config(name))
        return gr.Slider(value=level, label=f"Noise level ({noise}; the model was trained at {level:g})")

    noise0, level0 = trained_noise(model_config(names[0]))
    reconstruction_panel(
        "denoise", names, denoise,
        lambda: gr.Slider(0, 1, value=level0, step=0.01, elem_id="denoise-level",
                          label=f"Noise level ({noise0}; the model was trained at {level0:g})"),
        level_slider, seed_label="Seed of the noise", button="Corrupt and restore",
        images=("Corrupted (the model's input)", "Restored by the model", "Original (as the model sees it)"),
        figures=(("PSNR corrupted vs original (dB)", "psnr-in"), ("PSNR restored vs original (dB)", "psnr-out")))


TAB = Tab(id="denoise", title="Denoise", pretexts=("denoising",), build=build)
