"""Denoising autoencoder (Vincent et al., ICML 2008), training side: the images at the model's
size, corrupted as the model's configuration says (``mask``: each pixel set to the mean with
probability ``noise_level``; ``gaussian``: + N(0, noise_level^2) in [0, 1] pixel units), are the
input; the loss is the mean squared error to the *clean* images in normalised units.

Headline metric ``psnr``: PSNR of the restored images (clamped to [0, 1]) against the clean ones,
in [0, 1] pixel units, from the squared error pooled over the whole evaluation set; beside it
``input_psnr``, the same for the corrupted input (clamped, as an image shows it). The corruption
and the head are in ``sslzoo.zoo.pretexts.denoising``. ``Reconstruction`` (PSNR from pooled sums)
is shared with the context encoder.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from sslzoo.zoo.pretexts import denoising
from sslzoo.zoo.pretexts.decoder import psnr_from_mse, squared_error, to_unit

from ._protocol import Batch, Pretext, register


class Reconstruction(Pretext):
    """A plug-in whose metrics are (sum of squared errors in [0, 1] pixel units, number of values):
    a name ending in ``psnr`` becomes the PSNR (dB) of the *pooled* mean squared error over the
    whole set (not a mean of per-image PSNRs), any other the mean (``sum / count``)."""

    def __init__(self, data_config: dict | None = None):
        super().__init__()
        self.data_config = dict(data_config or {"mean": [0.0], "std": [1.0]})

    def summarize(self, sums: dict[str, tuple[Any, int]]) -> dict[str, float]:
        out = {}
        for name, (total, count) in sums.items():
            mean = float(total) / max(1, count)
            out[name] = psnr_from_mse(mean) if name.endswith("psnr") else mean
        return out


@register
class Denoising(Reconstruction):
    name = denoising.PRETEXT
    # Adam suits the autoencoder (BN everywhere, a pixel loss). 5 epochs = 2345 steps of 128 at 96 px:
    # 16-18 min at the 0.40-0.47 s/step measured (bf16 autocast, one thread of this shared 2-CPU machine).
    defaults = {**Pretext.defaults, "optimizer": "adam", "lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0,
                "epochs": 5.0, "batch_size": 128, "warmup_steps": 100}

    def __init__(self, noise: str = "mask", noise_level: float = 0.5, data_config: dict | None = None):
        super().__init__(data_config)
        denoising.check_noise(noise, noise_level)
        self.noise, self.noise_level = noise, float(noise_level)

    @classmethod
    def from_model(cls, model) -> "Denoising":
        return cls(model.head.noise, model.head.noise_level, model.data_config)

    def make_batch(self, batch: Batch, gen=None, dtype=None):
        # images at the model's size B x C x H x W -> inputs: corrupted (in dtype), targets: clean and
        # the corrupted input (float32, for input_psnr)
        clean = batch.resized()
        noisy = denoising.corrupt(clean, self.noise, self.noise_level, gen, self.data_config["std"])
        return (noisy if dtype is None else noisy.to(dtype)), {"clean": clean, "input": noisy}

    def loss(self, outputs: torch.Tensor, targets: dict) -> torch.Tensor:
        return F.mse_loss(outputs.float(), targets["clean"])

    def metrics(self, outputs: torch.Tensor, targets: dict) -> dict[str, tuple[Any, int]]:
        cfg = self.data_config
        clean = to_unit(targets["clean"], cfg)
        sse, n = squared_error(to_unit(outputs, cfg), clean)
        sse_in, _ = squared_error(to_unit(targets["input"], cfg), clean)
        return {"psnr": (float(sse), n), "input_psnr": (float(sse_in), n)}
