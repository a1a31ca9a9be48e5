"""Context encoder (Pathak et al., CVPR 2016), training side: per image a hole (the central square
of half the side, or a seeded union of random rectangles covering 20-30 % of the area) is filled
with the mean (0 in normalised units); the head paints the region (central: the hole grown by
``overlap`` px; random: the whole image).

Loss: L2 on the hole, and on the ``overlap``-px band of context around it weighted
``overlap_weight`` (the paper's 10x), as a weighted mean over those pixels; elsewhere (random
masks: the rest of the image) nothing. With ``adversarial`` = a > 0 the paper's joint loss
(1 - a) L2 + a L_adv (a = 0.001 in the paper): a DCGAN-style discriminator (train-only state of
this plug-in: checkpointed with the run, never shipped) tells the real region from the painted
one (random masks: the whole image, context kept, the hole painted). It has its own Adam (lr 2e-4,
beta1 0.5), stepped inside ``loss`` on the detached painting before the generator's term is taken;
that optimiser's state is checkpointed too, as the discriminator module's extra state.

Headline metric ``hole_psnr``: PSNR on the hole (the painting clamped to [0, 1]) in [0, 1] pixel
units, pooled over the set; beside it ``mean_fill_psnr`` (the hole filled with the mean, i.e. the
input itself) and ``hole_l2`` (mean squared error per hole value, [0, 1] units).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sslzoo.zoo.pretexts import context_encoder as ce
from sslzoo.zoo.pretexts.decoder import squared_error, to_unit

from ._protocol import Batch, Pretext, register
from .denoising import Reconstruction

ADVERSARIAL_LR = 2e-4
ADVERSARIAL_BETA1 = 0.5


class Discriminator(nn.Module):
    """DCGAN discriminator sized for its input: 4x4 stride-2 convolutions (``width`` doubling to
    ``max_width``), BatchNorm after all but the first, LeakyReLU 0.2, halving the side down to at
    most 4 px, then one convolution over what is left -> one logit per image."""

    def __init__(self, channels: int, size: Sequence[int], width: int = 16, max_width: int = 128):
        super().__init__()
        h, w = (int(s) // 2 for s in size)
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        cin = width
        while min(h, w) > 4:
            cout = min(2 * cin, max_width)
            layers += [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True)]
            cin, h, w = cout, h // 2, w // 2
        layers.append(nn.Conv2d(cin, 1, (h, w)))
        self.net = nn.Sequential(*layers)
        for m in self.modules():  # DCGAN's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()  # B logits


class Adversary(nn.Module):
    """The discriminator and its own Adam. The optimiser's state (moments, step counts) is this
    module's extra state, so ``state_dict`` / ``load_state_dict`` carry it with the parameters."""

    def __init__(self, channels: int, size: Sequence[int], lr: float = ADVERSARIAL_LR, beta1: float = ADVERSARIAL_BETA1):
        super().__init__()
        self.disc = Discriminator(channels, size)
        self.opt = torch.optim.Adam(self.disc.parameters(), lr=lr, betas=(beta1, 0.999))

    def get_extra_state(self) -> dict:
        return self.opt.state_dict()

    def set_extra_state(self, state: dict) -> None:
        self.opt.load_state_dict(state)

    def step(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """One discriminator step on real and (detached) painted images; returns its loss."""
        logits_real, logits_fake = self.disc(real), self.disc(fake.detach())
        loss = (F.binary_cross_entropy_with_logits(logits_real, torch.ones_like(logits_real))
                + F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake)))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()

    def generator_loss(self, fake: torch.Tensor) -> torch.Tensor:
        """The painter's adversarial term (fool the discriminator); no gradient reaches the
        discriminator's parameters (they are frozen while the graph is built)."""
        params = list(self.disc.parameters())
        for p in params:
            p.requires_grad_(False)
        try:
            logits = self.disc(fake)
        finally:
            for p in params:
                p.requires_grad_(True)
        return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


@register
class ContextEncoder(Reconstruction):
    name = ce.PRETEXT
    # The paper's solver (Adam, lr 2e-4, beta1 0.5). 5 epochs = 2345 steps of 128 at 96 px: 15-37 min at
    # the 0.38-0.96 s/step measured for random holes, L2, bf16 autocast, on one thread of this shared
    # 2-CPU machine (benchmarks/bench_reconstruction.py when it was quieter; a one-epoch run under load;
    # the central hole 0.38-0.73 s); the adversarial term costs ~1.2x the step (central) to ~2x (random
    # holes: the whole image is judged).
    defaults = {**Pretext.defaults, "optimizer": "adam", "lr": 2e-4, "momentum": 0.5, "weight_decay": 0.0,
                "epochs": 5.0, "batch_size": 128, "warmup_steps": 100}

    def __init__(self, mask: str = "random", overlap: int = 3, overlap_weight: float = 10.0, adversarial: float = 0.0,
                 region: Sequence[int] | None = None, input_size: Sequence[int] = (1, 96, 96),
                 data_config: dict | None = None):
        super().__init__(data_config)
        if mask not in ce.MASKS:
            raise ValueError(f"unknown mask {mask!r}; known: {', '.join(ce.MASKS)}")
        self.mask, self.overlap = mask, int(overlap)
        self.overlap_weight, self.adversarial = float(overlap_weight), float(adversarial)
        c, h, w = (int(s) for s in input_size)
        self.region = tuple(region) if region is not None else (0, 0, h, w)  # top, left, height, width
        self.adversary = Adversary(c, self.region[2:]) if self.adversarial > 0 else None

    @classmethod
    def from_model(cls, model) -> "ContextEncoder":
        head = model.head
        return cls(head.mask, head.overlap, head.overlap_weight, head.adversarial, head.region, head.input_size,
                   model.data_config)

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        top, left, rh, rw = self.region
        return x[..., top:top + rh, left:left + rw]

    def make_batch(self, batch: Batch, gen=None, dtype=None):
        # images at the model's size B x C x H x W -> inputs: the hole filled with the mean (in dtype);
        # targets: the region's pixels, its hole (bool) and the loss weights (B x 1 x rh x rw)
        x = batch.resized()
        b, _, h, w = x.shape
        if self.mask == "central":
            one = ce.central_mask(h, w, x.device)  # the same hole for every image: its band once
            mask, ring = one.expand(b, 1, h, w), ce.band(one, self.overlap).expand(b, 1, h, w)
        else:
            mask = ce.random_masks(b, h, w, gen, device=x.device)
            ring = ce.band(mask, self.overlap)
        inputs = ce.apply_mask(x, mask)
        hole = self._crop(mask)
        weight = hole.float() + self.overlap_weight * self._crop(ring).float()
        targets = {"target": self._crop(x), "hole": hole, "weight": weight}
        return (inputs if dtype is None else inputs.to(dtype)), targets

    def loss(self, outputs: torch.Tensor, targets: dict) -> torch.Tensor:
        out, target, weight = outputs.float(), targets["target"], targets["weight"]
        rec = (weight * (out - target).square()).sum() / (weight.sum() * out.shape[1]).clamp_min(1e-12)
        if self.adversary is None:
            return rec
        # what the discriminator judges: the painted region (central), or the image with its hole painted
        fake = out if self.mask == "central" else torch.where(targets["hole"], out, target)
        if self.training and torch.is_grad_enabled():
            self.adversary.step(target, fake.detach())
        return (1 - self.adversarial) * rec + self.adversarial * self.adversary.generator_loss(fake)

    def metrics(self, outputs: torch.Tensor, targets: dict) -> dict[str, tuple[Any, int]]:
        cfg = self.data_config
        target, hole = to_unit(targets["target"], cfg), targets["hole"]
        sse, n = squared_error(to_unit(outputs, cfg), target, hole)
        sse_mean, _ = squared_error(to_unit(torch.zeros_like(targets["target"]), cfg), target, hole)
        return {"hole_psnr": (float(sse), n), "mean_fill_psnr": (float(sse_mean), n), "hole_l2": (float(sse), n)}
