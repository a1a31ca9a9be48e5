"""Exemplar CNN (Dosovitskiy, Springenberg, Riedmiller & Brox, "Discriminative Unsupervised Feature
Learning with Convolutional Neural Networks", NIPS 2014, arXiv:1406.6909; journal version TPAMI
2016): N *seed* images, each its own surrogate class, are shown under random deformations and the
network says which seed it sees (an N-way softmax). Learning that forces features invariant to the
deformations and discriminative between images.

The deformations (the paper's ranges, REFERENCE.md):

- geometry: zoom by s in 1/sqrt2..sqrt2 (log-uniform), shift by up to +-0.25 of the side on each
  axis, rotation by up to +-20 degrees. A whole batch is warped by ONE ``grid_sample`` call (its
  grid ``affine_grid``'s, ``sampling_grid``), which also resizes the source to the model's input
  (one interpolation, not two); outside the source is black, Fashion-MNIST's background, as the
  photometric steps below recolour it;
- gray input: the paper's "contrast 2" on the pixel value v (its V of HSV): v -> m * v^p + a, power
  p in 1/4..4 (log-uniform), multiplier m in 0.7..1.4, added a in -0.1..0.1;
- colour input: "contrast 1", each pixel's projection on the principal colour axes (``RGB_PCA``)
  about the image's mean colour multiplied by a factor in 1/2..2 per axis (log-uniform), then
  "contrast 2" on S and V (power, multiplier, added value drawn for each), then "colour": a hue
  shift in -0.1..0.1 of the hue circle. RGB <-> HSV are batched tensor ops here.

Values are in [0, 1] pixel units and clamped there after each step. Every parameter is drawn on
the CPU from a ``torch.Generator`` (``sample``), so a run deforms the same on any device; the
images are deformed on their own device. ``Deformation.identity`` returns the image itself.

The head: pool5 -> Linear -> BN -> ReLU -> Linear to N logits (``loss="softmax"``, the paper's
form), or to an L2-normalised ``embedding_dim`` vector (``loss="triplet"``: the large-scale form of
Doersch & Zisserman, ICCV 2017, as Kolesnikov, Zhai & Beyer's "Revisiting" code runs it: triplet
loss with semi-hard negatives, margin 0.5; each row normalised on its own, not over the batch axis
as that code does). Seeds, targets and losses are in ``sslzoo.training.pretexts.exemplar``.
"""
from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass, fields
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._transforms import normalize

PRETEXT = "exemplar"
NUM_CLASSES = 6000  # Fashion-MNIST's N seed images (training/pretexts/exemplar.py says why)
LOSSES = ("softmax", "triplet")
DEFORMATIONS = 4  # K deformations of each seed in a training batch: 128 seeds x 4 = 512 inputs, rotation's 128 x 4

# The paper's ranges.
SCALE = (2 ** -0.5, 2 ** 0.5)  # zoom factor, log-uniform
SHIFT = 0.25  # of the side, each axis, uniform
ROTATION = 20.0  # degrees either way, uniform
POWER = (0.25, 4.0)  # exponent on S and V, log-uniform
MULTIPLY = (0.7, 1.4)
ADD = (-0.1, 0.1)
HUE = (-0.1, 0.1)  # of the hue circle
PCA_FACTOR = (0.5, 2.0)  # per principal colour axis, log-uniform
# Principal axes of natural images' RGB pixels (rows, unit length, largest variance first): the basis
# of AlexNet's "lighting" augmentation (Krizhevsky et al. 2012), a widely published fact.
RGB_PCA = ((-0.5675, -0.5808, -0.5836), (0.7192, -0.0045, -0.6948), (0.4009, -0.8140, 0.4203))


@dataclass
class Deformation:
    """Parameters of n deformations (one row per image), drawn on the CPU."""

    scale: torch.Tensor  # n: zoom factor (> 1 enlarges the content)
    angle: torch.Tensor  # n: degrees, counter-clockwise as displayed
    shift: torch.Tensor  # n x 2: (right, down) in fractions of the side
    power: torch.Tensor  # n x 2: exponent on (S, V); gray images use V's
    multiply: torch.Tensor  # n x 2: (S, V)
    add: torch.Tensor  # n x 2: (S, V)
    hue: torch.Tensor  # n: shift in fractions of the hue circle
    pca: torch.Tensor  # n x 3: factor on each principal colour axis

    def __len__(self) -> int:
        return len(self.scale)

    def __getitem__(self, index) -> "Deformation":
        """The deformations at ``index`` (an int keeps a row of one)."""
        index = [index] if isinstance(index, int) else index
        return Deformation(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def tensors(self) -> list[torch.Tensor]:
        """The fields in their order (``Deformation(*tensors)`` rebuilds it)."""
        return [getattr(self, f.name) for f in fields(self)]

    def repeat_interleave(self, k: int) -> "Deformation":
        return Deformation(**{f.name: getattr(self, f.name).repeat_interleave(k, 0) for f in fields(self)})

    @classmethod
    def identity(cls, n: int = 1) -> "Deformation":
        """n deformations that change nothing."""
        one, zero = torch.ones(n), torch.zeros(n)
        return cls(scale=one, angle=zero, shift=torch.zeros(n, 2), power=torch.ones(n, 2), multiply=torch.ones(n, 2),
                   add=torch.zeros(n, 2), hue=zero, pca=torch.ones(n, 3))


def _uniform(lo: float, hi: float, shape, gen: torch.Generator | None) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=gen)


def _log_uniform(lo: float, hi: float, shape, gen: torch.Generator | None) -> torch.Tensor:
    return _uniform(math.log(lo), math.log(hi), shape, gen).exp()


def sample(n: int, gen: torch.Generator | None = None) -> Deformation:
    """n random deformations in the paper's ranges, drawn on the CPU from ``gen`` in a fixed order
    (every field, whatever the images' channels: the stream does not depend on them)."""
    return Deformation(
        scale=_log_uniform(*SCALE, (n,), gen),
        angle=_uniform(-ROTATION, ROTATION, (n,), gen),
        shift=_uniform(-SHIFT, SHIFT, (n, 2), gen),
        power=_log_uniform(*POWER, (n, 2), gen),
        multiply=_uniform(*MULTIPLY, (n, 2), gen),
        add=_uniform(*ADD, (n, 2), gen),
        hue=_uniform(*HUE, (n,), gen),
        pca=_log_uniform(*PCA_FACTOR, (n, 3), gen),
    )


def _move(tensors: Sequence[torch.Tensor], device) -> list[torch.Tensor]:
    """Tensors of n rows each -> the same on ``device`` (float32), moved in ONE copy: a GPU step
    would otherwise wait on a small host-to-device copy per tensor."""
    if all(t.device == torch.device(device) for t in tensors):
        return [t.float() for t in tensors]
    flat = [t.reshape(len(t), -1).float() for t in tensors]  # n x k each
    moved = torch.cat(flat, 1).to(device).split([f.shape[1] for f in flat], 1)
    return [m.reshape(t.shape) for m, t in zip(moved, tensors)]


# --- geometry --------------------------------------------------------------------------------------

def affine_theta(d: Deformation, aspect: float = 1.0) -> torch.Tensor:
    """n x 2 x 3 ``affine_grid`` matrices: output position -> source position, in normalised
    coordinates (x right, y down, -1..1). The content moves as q -> s R q + 2 shift (R: the
    counter-clockwise turn on screen), so the source of output p is R^T (p - 2 shift) / s; the turn
    is done in square units when the output is ``aspect`` (W / H) wide."""
    rad = torch.deg2rad(d.angle.double())
    c, s = rad.cos(), rad.sin()
    turn_back = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # n x 2 x 2: R^T
    inv = turn_back / d.scale.double()[:, None, None]  # R^T / s
    to_square = torch.tensor([aspect, 1.0], dtype=torch.float64)  # normalised -> square units
    inv = inv * to_square[None, None, :] / to_square[None, :, None]  # diag(1/a, 1) inv diag(a, 1)
    t = -(inv @ (2 * d.shift.double())[:, :, None])  # n x 2 x 1
    return torch.cat([inv, t], -1).float()


_SCRATCH = threading.local()  # per thread: the last sampling grid's memory (see sampling_grid)


def sampling_grid(theta: torch.Tensor, size: Sequence[int], reuse: bool = False) -> torch.Tensor:
    """n x 2 x 3 matrices -> the n x H x W x 2 source positions of the output pixel centres, as
    ``F.affine_grid(theta, (n, C, H, W), align_corners=False)`` gives them, built by broadcasting
    one row term and one column term (affine_grid's batched 3-term products cost several times as
    much on a CPU: 40-100 ms for 512 x 96 x 96, one thread). ``reuse`` (CPU): write into this
    thread's buffer from the last call of that shape: the grid of a training batch is 38 MB, a
    block the C allocator maps afresh every time, and its page faults were half of the batch's
    deformation time (13 of 25 ms); only for a grid nobody keeps (no autograd graph)."""
    h, w = (int(v) for v in size)
    xs = (torch.arange(w, device=theta.device, dtype=theta.dtype) * 2 + 1) / w - 1  # W pixel centres, -1..1
    ys = (torch.arange(h, device=theta.device, dtype=theta.dtype) * 2 + 1) / h - 1  # H
    cols = theta[:, :, 0, None] * xs  # n x 2 x W
    rows = theta[:, :, 1, None] * ys + theta[:, :, 2, None]  # n x 2 x H
    shape = (len(theta), 2, h, w)
    out = None
    if reuse and theta.device.type == "cpu":
        out = getattr(_SCRATCH, "grid", None)
        if out is None or out.shape != shape or out.dtype != theta.dtype:
            out = _SCRATCH.grid = torch.empty(shape, dtype=theta.dtype)
    grid = torch.add(rows[:, :, :, None], cols[:, :, None, :], out=out)  # n x 2 x H x W
    return grid.permute(0, 2, 3, 1)  # n x H x W x 2 (a view)


def _size(x: torch.Tensor, size: Sequence[int] | None) -> tuple[int, int]:
    return tuple(int(v) for v in (size or x.shape[-2:]))


def warp(x: torch.Tensor, d: Deformation, size: Sequence[int] | None = None,
         theta: torch.Tensor | None = None) -> torch.Tensor:
    """The geometric part: x (n x C x h x w) -> n x C x H x W (``size`` (H, W), default h x w),
    bilinear, zeros outside the source; one ``grid_sample`` call for all n. ``theta``: d's
    ``affine_theta`` already on x's device, if at hand."""
    h, w = _size(x, size)
    if theta is None:
        theta = affine_theta(d, w / h).to(x.device)  # n x 2 x 3 (computed on the CPU, in float64)
    keep = torch.is_grad_enabled() and (x.requires_grad or theta.requires_grad)  # autograd would save the grid
    grid = sampling_grid(theta.to(x.dtype), (h, w), reuse=not keep)  # n x H x W x 2
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# --- photometry --------------------------------------------------------------------------------------

def _col(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """n (or n x k) parameters -> broadcastable over n x [k x] H x W, on ``like``'s device and dtype."""
    t = t.to(like.device, like.dtype)
    return t.reshape(*t.shape, *([1] * (like.dim() - t.dim())))


def _contrast(v: torch.Tensor, power: torch.Tensor, multiply: torch.Tensor, add: torch.Tensor) -> torch.Tensor:
    """The paper's contrast 2 on values in [0, 1]: m * v^p + a, clamped."""
    return torch.addcmul(_col(add, v), _col(multiply, v), v.clamp(0, 1).pow_(_col(power, v))).clamp_(0, 1)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """n x 3 x H x W RGB in [0, 1] -> HSV, each in [0, 1] (hue as a fraction of the circle)."""
    r, g, b = x.unbind(1)
    v, _ = x.max(1)
    chroma = v - x.min(1).values
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    s = torch.where(v > 0, chroma / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))
    h = torch.where(v == r, (g - b) / safe, torch.where(v == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    h = torch.where(chroma > 0, (h / 6) % 1.0, torch.zeros_like(h))
    return torch.stack([h, s, v], 1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """n x 3 x H x W HSV in [0, 1] -> RGB in [0, 1]."""
    h, s, v = hsv.unbind(1)
    k = torch.stack([(5 + 6 * h) % 6, (3 + 6 * h) % 6, (1 + 6 * h) % 6], 1)  # n x 3 x H x W, for R, G, B
    return v[:, None] - (v * s)[:, None] * (torch.minimum(k, 4 - k)).clamp(0, 1)


@functools.lru_cache(maxsize=8)
def _pca_basis(device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """``RGB_PCA`` made exactly orthonormal (the nearest orthonormal matrix, U V^T of its SVD; the
    published axes have four decimals), so factors of 1 give the image back; kept per device."""
    u, _, vh = torch.linalg.svd(torch.tensor(RGB_PCA, dtype=torch.float64))
    return (u @ vh).float().to(device)


def recolour(x: torch.Tensor, d: Deformation) -> torch.Tensor:
    """The photometric part on n x C x H x W in [0, 1] (C 1: contrast 2 on the value; C 3: PCA
    contrast, then contrast 2 on S and V, then the hue shift), clamped to [0, 1]."""
    c = x.shape[1]
    if c == 1:
        return _contrast(x, d.power[:, 1], d.multiply[:, 1], d.add[:, 1])
    if c != 3:
        raise ValueError(f"exemplar deformations take 1- or 3-channel images, got {c} channels")
    basis = _pca_basis(x.device).to(x.dtype)  # 3 axes x 3 (RGB)
    mean = x.mean((2, 3), keepdim=True)  # n x 3 x 1 x 1
    coeff = torch.einsum("kc,nchw->nkhw", basis, x - mean) * _col(d.pca, x)  # n x 3 x H x W, scaled per axis
    x = (mean + torch.einsum("kc,nkhw->nchw", basis, coeff)).clamp(0, 1)
    hsv = rgb_to_hsv(x)
    h = (hsv[:, 0] + _col(d.hue, hsv[:, 0])) % 1.0
    sv = _contrast(hsv[:, 1:], d.power, d.multiply, d.add)  # n x 2 x H x W
    return hsv_to_rgb(torch.cat([h[:, None], sv], 1))


def deform(x: torch.Tensor, d: Deformation, size: Sequence[int] | None = None) -> torch.Tensor:
    """x: n x C x h x w in [0, 1] (float, any device) -> its n deformations, n x C x H x W in [0, 1]
    (``size`` (H, W), default h x w). ``recolour`` runs on the source (12 x fewer pixels than the
    96-px output of a 28-px image), then ``warp``, with the outside taking the colour black was
    given (so the frame leaves no edge): warp(y - fill) + fill, the bilinear weights summing to 1."""
    if x.dim() != 4 or len(d) != x.shape[0]:
        raise ValueError(f"deform takes n x C x h x w images and n deformations, got {tuple(x.shape)} and {len(d)}")
    h, w = _size(x, size)
    n, c = x.shape[:2]
    # the per-image numbers, made where the parameters are (the CPU) and moved together
    theta = affine_theta(d, w / h)  # n x 2 x 3
    fill = recolour(torch.zeros(n, c, 1, 1, device=d.scale.device), d)  # n x C x 1 x 1: what black becomes
    theta, fill, *params = _move([theta, fill, *d.tensors()], x.device)
    d = Deformation(*params)
    out = warp(recolour(x, d) - fill.to(x.dtype), d, (h, w), theta)  # n x C x H x W
    return out.add_(fill).clamp_(0, 1)  # in place: one n x C x H x W in memory


# --- the head ----------------------------------------------------------------------------------------

def check_loss(loss: str, embedding_dim: int) -> None:
    if loss not in LOSSES:
        raise ValueError(f"unknown exemplar loss {loss!r}; known: {', '.join(LOSSES)}")
    if int(embedding_dim) < 1:
        raise ValueError(f"embedding_dim must be at least 1, got {embedding_dim}")


class ExemplarHead(nn.Module):
    """pool5 -> Linear -> BN -> ReLU -> N surrogate-class logits (``softmax``) or an L2-normalised
    embedding of ``embedding_dim`` (``triplet``). The paper's head is one 512-unit layer before the
    softmax (Exemplar-CNN 64c5-128c5-256c5-512f); here the trunk is the zoo's AlexNet."""

    def __init__(self, num_features: int, num_classes: int = NUM_CLASSES, hidden: int = 512, loss: str = "softmax",
                 embedding_dim: int = 128, deformations: int = DEFORMATIONS):
        super().__init__()
        check_loss(loss, embedding_dim)
        if int(deformations) < 1:
            raise ValueError(f"deformations must be at least 1, got {deformations}")
        self.num_classes, self.loss, self.embedding_dim = int(num_classes), loss, int(embedding_dim)
        self.deformations = int(deformations)  # K per seed in a training batch (the training side reads it)
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(num_features, hidden, bias=False), nn.BatchNorm1d(hidden),
                                 nn.ReLU(inplace=True))
        self.out = nn.Linear(hidden, self.num_classes if loss == "softmax" else self.embedding_dim)

    def forward(self, trunk: nn.Module, x: torch.Tensor) -> torch.Tensor:
        # x: B x C x H x W -> logits B x N (softmax) or unit-length embeddings B x D (triplet)
        z = self.out(self.mlp(trunk(x)))
        return z if self.loss == "softmax" else F.normalize(z.float(), dim=1)


def build_head(trunk: nn.Module, input_size: Sequence[int], num_classes: int = NUM_CLASSES, hidden: int = 512,
               loss: str = "softmax", embedding_dim: int = 128, deformations: int = DEFORMATIONS) -> ExemplarHead:
    """The head for ``trunk`` at the model's input size: it sees the whole (deformed) image's pool5.
    ``num_classes``: the number of seed images (surrogate classes), also in the triplet form;
    ``deformations``: K, how many of each seed a training batch holds (recorded with the model)."""
    from . import flat_features

    return ExemplarHead(flat_features(trunk, input_size), num_classes=num_classes, hidden=hidden, loss=loss,
                        embedding_dim=embedding_dim, deformations=deformations)


# --- inference helpers (the demo) ----------------------------------------------------------------------

def _head(model) -> ExemplarHead:
    head = getattr(model, "head", None)
    inner = getattr(head, "inner", head)  # a multi-task model's task view
    if not isinstance(inner, ExemplarHead):
        raise ValueError(f"expected an exemplar model, got {getattr(model, 'name', type(model).__name__)}")
    return inner


def to_unit(x: torch.Tensor, data_config: dict) -> torch.Tensor:
    """Normalised images (the model's mean / std) -> [0, 1] pixel units."""
    mean = torch.as_tensor(data_config["mean"], dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
    std = torch.as_tensor(data_config["std"], dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
    return x * std + mean


def deformations_of(x: torch.Tensor, n: int = 8, seed: int = 0, data_config: dict | None = None) -> torch.Tensor:
    """One image x (C x H x W; in [0, 1], or normalised when ``data_config`` says how) -> n seeded
    random deformations of it, n x C x H x W in [0, 1] at its own size."""
    unit = to_unit(x, data_config) if data_config else x
    d = sample(n, torch.Generator().manual_seed(seed))
    return deform(unit.float()[None].expand(n, -1, -1, -1), d)


@torch.no_grad()
def surrogate_classes(model, unit: torch.Tensor) -> dict[str, torch.Tensor]:
    """Images in [0, 1] (n x C x H x W, the model's size) -> the model's answer for each: for a
    softmax model "class" (n, argmax) and "prob" (n, its probability); for a triplet model
    "embedding" (n x D) and "similarity" (n, cosine to the images' mean direction)."""
    head = _head(model)
    out = model.predict_pretext(normalize(unit, model.data_config)).float()
    if head.loss == "softmax":
        probs = out.softmax(-1)
        prob, cls = probs.max(-1)
        return {"class": cls, "prob": prob}
    centre = F.normalize(out.mean(0), dim=0)
    return {"embedding": out, "similarity": out @ centre}


def agreement(classes: torch.Tensor) -> tuple[int, float]:
    """(the majority class, the share of the images given it): 1.0 when the model puts every
    deformation in one class; ties go to the smaller class id."""
    values, counts = torch.unique(classes, return_counts=True)
    best = int(counts.argmax())
    return int(values[best]), float(counts[best]) / len(classes)
