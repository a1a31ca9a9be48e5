"""Colorization (Zhang, Isola & Efros, ECCV 2016), training side. The head and read-out are in
``sslzoo.zoo.pretexts.colorization``; the colour science in ``sslzoo.zoo._colour``.

Per batch, on tensors on the training device: the images at the model's size (RGB in [0, 1]; the
trunk sees their L) -> Lab; ab subsampled by 4 (the head predicts at 1/4) -> each pixel's 5 nearest
bins with Gaussian weights (sigma 5; ``soft_encode_knn``, the compact form: indices + weights, no
dense B x K map) and its class-rebalancing weight, looked up at its nearest bin. An image whose ab
never leaves [-5, 5] is gray and weighs 0 (the authors' non-gray mask).

Rebalancing: the empirical prior of the training set's ab (every training image at the model's
size, subsampled as the targets are) is counted once in ``begin`` and kept as plug-in state (a
buffer: checkpointed with the run, never shipped); weights (1 - lambda) p~ + lambda / K)^-1,
normalised so E_p~[w] = 1 (``_colour.rebalance_weights``, lambda 0.5, p~ the prior smoothed by sigma 5).

Loss: per pixel -sum_k q_k log p_k over the soft targets q, times the pixel's weight, averaged over
the pixels. Metrics on the photo test split (ab at 1/4): ``ab_accuracy`` (argmax = the true pixel's
nearest bin), ``ab_accuracy_rebalanced`` (the same with each pixel weighted by 1 / the frequency of
its true bin, i.e. the mean of the per-bin accuracies, as the paper's rebalanced metrics weight
pixels), ``ab_auc`` (the paper's AuC: the share of pixels whose annealed-mean ab lies within t of the
truth, averaged over t = 0..150 Lab units) and ``prior_mode_auc`` (the same for predicting the
prior's most frequent bin everywhere).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from sslzoo.zoo import _colour
from sslzoo.zoo.pretexts import colorization as zc

from ._protocol import Batch, Pretext, Run, register

GRAY_AB = 5.0  # an image whose |a| and |b| stay within this everywhere is gray (weight 0)
AUC_THRESHOLDS = torch.arange(151, dtype=torch.float32)  # 0..150 Lab units, step 1
PRIOR_CHUNK = 256  # training images per step when counting the prior


def at_quarter(x: torch.Tensor) -> torch.Tensor:
    """B x C x H x W -> every 4th pixel (the centre-most of each 4 x 4 cell), B x C x H/4 x W/4: the head's grid."""
    s = zc.STRIDE
    return x[..., s // 2::s, s // 2::s]


class ColourTargets(Pretext):
    """What colorization and split-brain's L -> ab half share: bins, prior, targets, ab loss and metrics."""

    defaults = {**Pretext.defaults, "data": "photos", "optimizer": "adam", "lr": 1e-3, "momentum": 0.9,
                "weight_decay": 1e-4, "epochs": 30.0, "batch_size": 64, "warmup_steps": 50}

    def __init__(self, grid: float = 10.0, neighbours: int = 5, sigma: float = 5.0, rebalance: float = 0.5,
                 temperature: float = zc.TEMPERATURE):
        super().__init__()
        self.neighbours, self.sigma, self.rebalance, self.temperature = int(neighbours), float(sigma), float(rebalance), float(temperature)
        bins = _colour.ab_bins(grid)
        self.register_buffer("bins", bins, persistent=False)  # K x 2, rebuilt from the grid
        # the training set's ab histogram over the bins and the per-bin loss weights (begin)
        self.register_buffer("prior", torch.zeros(len(bins), dtype=torch.float64))
        self.register_buffer("bin_weight", torch.ones(len(bins)))

    @classmethod
    def from_model(cls, model) -> "ColourTargets":
        h = model.head
        return cls(h.grid, h.neighbours, h.sigma, h.rebalance, h.temperature)

    def begin(self, run: Run) -> None:
        """Count the training set's prior over the bins (every image once, at the model's size, non-gray
        images only) and turn it into the rebalancing weights."""
        counts = torch.zeros(len(self.bins), dtype=torch.long, device=self.bins.device)
        cfg = run.model.data_config
        for i in range(0, len(run.images), PRIOR_CHUNK):
            x = Batch.from_uint8(run.images[i:i + PRIOR_CHUNK].to(self.bins.device), torch.arange(0), cfg).resized()
            ab = at_quarter(_colour.rgb_to_lab(x.float())[:, 1:])
            ab = ab[self._colourful(ab)]
            if len(ab):
                counts += torch.bincount(_colour.nearest_bin(ab, self.bins).flatten(), minlength=len(self.bins))
        if counts.sum() == 0:
            raise ValueError("every training image is gray (|a|, |b| <= 5 everywhere): colour pretexts need colour images")
        self.prior.copy_(counts.double() / counts.sum())
        self.bin_weight.copy_(_colour.rebalance_weights(self.prior, self.rebalance, self.sigma, self.bins).float())
        used = int((counts > 0).sum())
        run.log(f"colour prior: {int(counts.sum()):,} pixels of {len(run.images):,} images, {used} of "
                f"{len(self.bins)} ab bins used; rebalancing weights {float(self.bin_weight.min()):.2f}.."
                f"{float(self.bin_weight.max()):.2f} (lambda {self.rebalance})")
        run.history["colour_prior_bins_used"] = used

    @staticmethod
    def _colourful(ab: torch.Tensor) -> torch.Tensor:
        """B bools: the image's ab leaves [-GRAY_AB, GRAY_AB] somewhere (the authors' non-gray mask)."""
        return (ab.abs() > GRAY_AB).flatten(1).any(1)

    def colour_targets(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """RGB in [0, 1], B x 3 x H x W -> the ab targets at 1/4: {"index", "weight"} (B x k x h x w, the k
        nearest bins first-nearest first and their soft weights), "pixel_weight" (B x h x w: rebalancing x
        non-gray) and "ab" (B x 2 x h x w, for the AuC); plus "lab" (B x 3 x H x W) for the caller."""
        lab = _colour.rgb_to_lab(x.float())
        ab = at_quarter(lab[:, 1:])
        index, weight = _colour.soft_encode_knn(ab, self.bins, self.neighbours, self.sigma)
        pixel_weight = self.bin_weight[index[:, 0]] * self._colourful(ab)[:, None, None]
        return {"index": index, "weight": weight, "pixel_weight": pixel_weight, "ab": ab, "lab": lab}

    def ab_loss(self, logits: torch.Tensor, t: dict) -> torch.Tensor:
        # logits B x K x h x w; soft targets on k bins per pixel -> weighted cross-entropy, mean over pixels
        logp = F.log_softmax(logits.float(), dim=1)
        ce = -(t["weight"] * logp.gather(1, t["index"])).sum(1)  # B x h x w
        return (t["pixel_weight"] * ce).mean()

    def ab_metrics(self, logits: torch.Tensor, t: dict) -> dict[str, tuple[Any, int]]:
        truth = t["index"][:, 0]  # B x h x w: the nearest bin
        correct = logits.argmax(1) == truth
        K, n = len(self.bins), truth.numel()
        per_bin = torch.stack([torch.bincount(truth.flatten(), correct.flatten().double(), K),
                               torch.bincount(truth.flatten(), minlength=K).double()])  # 2 x K: correct, pixels
        ab = t["ab"].float()
        pred = _colour.annealed_mean(logits.float().softmax(1), self.bins, self.temperature)  # B x 2 x h x w
        mode = self.bins[self.prior.argmax()].view(1, 2, 1, 1)
        return {"ab_accuracy": (float(correct.sum()), n), "ab_accuracy_rebalanced": (per_bin.cpu(), n),
                "ab_auc": (_cdf_counts(pred, ab), n), "prior_mode_auc": (_cdf_counts(mode.expand_as(ab), ab), n)}

    def summarize(self, sums: dict[str, tuple[Any, int]]) -> dict[str, float]:
        out = {}
        for name, (total, count) in sums.items():
            if name.endswith("_rebalanced"):  # mean over the bins present of each bin's accuracy
                correct, pixels = total
                seen = pixels > 0
                out[name] = float((correct[seen] / pixels[seen]).mean()) if seen.any() else 0.0
            elif name.endswith("_auc"):  # area under the cumulative error curve, normalised to 0..1
                out[name] = float((total / max(1, count)).mean())
            else:
                out[name] = float(total) / max(1, count)
        return out


def _cdf_counts(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """How many pixels have an ab error (Euclidean, Lab units) <= each of ``AUC_THRESHOLDS`` (151, CPU float64)."""
    err = (pred.float() - truth.float()).norm(dim=1).flatten()  # P
    hist = torch.bincount(err.ceil().clamp_max(len(AUC_THRESHOLDS)).long(), minlength=len(AUC_THRESHOLDS) + 1)
    return hist[:len(AUC_THRESHOLDS)].cumsum(0).double().cpu()  # error <= t  <=>  ceil(error) <= t


@register
class Colorization(ColourTargets):
    name = zc.PRETEXT

    def make_batch(self, batch: Batch, gen=None, dtype=None):
        # RGB in [0, 1] at the model's size, B x 3 x H x W -> inputs: the same (the trunk takes its L);
        # targets: the ab targets at 1/4 (colour_targets)
        x = batch.resized()
        t = self.colour_targets(x)
        del t["lab"]
        return (x if dtype is None else x.to(dtype)), t

    def loss(self, logits: torch.Tensor, targets: dict) -> torch.Tensor:
        return self.ab_loss(logits, targets)

    def metrics(self, logits: torch.Tensor, targets: dict) -> dict[str, tuple[Any, int]]:
        return self.ab_metrics(logits, targets)
