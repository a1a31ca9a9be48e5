"""Exemplar CNN (Dosovitskiy et al., NIPS 2014, arXiv:1406.6909), training side.

Seeds (``begin``): N training images, each its own surrogate class, chosen by ``choose_seeds``: the
training set in its own order, skipping every image that is a near-duplicate of an earlier one,
until N are found. Seed i is class i. The choice depends on the images alone (no run seed), so a
resume, ``sslzoo evaluate`` (which never runs ``begin``) and a run with ``--limit`` agree: a
shorter prefix of the set gives a prefix of the same seeds. The seeds and the dataset position ->
class table (``class_of``, -1 for an image that is no seed) are buffers: checkpointed with the run.

Batches: ``epoch_order`` yields seeds only (passes over them, each a new permutation, cut to the
epoch's length); ``make_batch`` turns B source images into B x K deformed inputs at the model's
size (``zoo.pretexts.exemplar.deform``: one ``grid_sample`` for the batch, parameters from the
loop's CPU generator), K from the model's head (``deformations``), targets looked up in
``class_of`` by dataset position. An image that is no seed gets target -1 and is left out of the
loss and the metrics, so a multi-task plug-in can hand this one random batches of all images.
The loop's crop / flip comes before: a seed is seen flipped too.

Losses: ``softmax`` (the paper): cross-entropy over the N classes; ``triplet`` (the large-scale
form of Doersch & Zisserman 2017): ``semi_hard_triplet_loss``, margin 0.5, over the seeds in
the batch. Headline metric, on ``eval_set`` = the training seeds (their labels are their classes):
``accuracy``, the surrogate-class accuracy on fresh deformations of every seed (deterministic: the
loop's per-batch generator), or for the triplet form ``nn_accuracy``, the share of deformations
whose nearest other input in the batch is a deformation of the same seed.

Why N = 6000 seeds of Fashion-MNIST's 60000 (the paper: 16000 of STL-10's 100000 unlabelled
images; measured here on the training set, one CPU thread, ~3 s):

- Near-duplicates. Fashion-MNIST's images are centred garments of ten kinds: many share one
  silhouette. Compared by ``signature`` (gray 14 x 14, mean removed, unit length), 1 - cos between
  an image and one of its own random deformations is 0.26 at the 5th percentile and 0.61 at the
  median; between different images far less is common: of the images at positions 18000-20000,
  5 % have an earlier image within 0.01, 21 % within 0.02, 38 % within 0.03 (positions 0-2000:
  0.6, 5.5 and 15 %). Pairs under 0.01, looked at side by side, are one garment or one silhouette
  with faint texture: surrogate classes nothing deformation-invariant can tell apart.
  ``NEAR_DUPLICATE`` = 0.01 skips them: 89 of the first 6089 images (1.5 %) give the 6000 seeds.
  The next tiers (one silhouette, other details) are hard classes, not duplicates, and skipping
  them would empty whole garment kinds; but their share grows with N, so more seeds buy mostly
  confusable classes.
- Head size. The N-way layer is 512 x N weights: 3.1 M at N = 6000, about the trunk's 2.5 M at
  96 px (the model in float16 ~12 MB, beside jigsaw's 13 MB); 16000 seeds would make it 8.2 M.
- Views per seed. One epoch of the loop is 60000 source draws, so each seed is drawn 10 times an
  epoch and seen in 10 K = 40 deformations: 400 in the recipe's 10 epochs (the paper: 150 fixed
  deformations per seed, shown over many epochs).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sslzoo.zoo._transforms import normalize
from sslzoo.zoo.pretexts import exemplar as ex

from ..data import ImageSet
from ._protocol import Batch, Pretext, Run, register

NEAR_DUPLICATE = 0.01  # 1 - cos of two signatures under which the later image is no seed
SIGNATURE_SIDE = 14  # signatures are gray images pooled to 14 x 14 (2 x 2 blocks of a 28-px image)
MARGIN = 0.5  # the triplet form's margin (Doersch & Zisserman 2017, on squared distances of unit vectors)


def signature(images: torch.Tensor) -> torch.Tensor:
    """uint8 n x C x h x w -> n x 196 float64 on the CPU: gray, average-pooled to 14 x 14, mean
    removed, unit length (a blank image: zeros). Brightness and pixel noise hardly change it, a
    shift does (1 px: 1 - cos ~0.16): near-duplicates must be aligned, as Fashion-MNIST's centred
    garments are."""
    x = images.cpu().double().mean(1, keepdim=True) / 255  # n x 1 x h x w
    x = F.adaptive_avg_pool2d(x, SIGNATURE_SIDE).flatten(1)  # n x 196
    return F.normalize(x - x.mean(1, keepdim=True), dim=1)


def choose_seeds(images: torch.Tensor, count: int, near_duplicate: float = NEAR_DUPLICATE,
                 chunk: int = 1024) -> torch.Tensor:
    """The first ``count`` images (dataset positions, ascending) that have no near-duplicate earlier
    in the set (1 - cos of their signatures < ``near_duplicate``); fewer if the set runs out.
    Walks the set in chunks and stops when enough are found; float64 on the CPU, so the choice
    is the same on every device."""
    n = len(images)
    found, sigs = [], []
    total = 0
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        sigs.append(signature(images[start:stop]))
        cos = sigs[-1] @ torch.cat(sigs).T  # chunk x stop
        earlier = torch.arange(stop)[None, :] < torch.arange(start, stop)[:, None]  # chunk x stop
        dup = ((cos > 1 - near_duplicate) & earlier).any(1)
        found.append(torch.arange(start, stop)[~dup])
        total += len(found[-1])
        if total >= count:
            break
    return torch.cat(found)[:count] if found else torch.empty(0, dtype=torch.long)


def semi_hard_triplet_loss(emb: torch.Tensor, labels: torch.Tensor, margin: float = MARGIN) -> torch.Tensor:
    """Triplet loss with semi-hard negatives (Schroff et al. 2015, as TensorFlow's
    ``triplet_semihard_loss``): for every anchor a and positive p (same label, a != p) the negative
    n is the closest one farther from a than p; if there is none, the farthest negative. Loss: the
    mean over (a, p) of max(0, d(a, p) - d(a, n) + margin), d the squared Euclidean distance.
    emb: B x D (unit rows), labels: B; rows labelled -1 are left out. No pair: 0 (with a graph)."""
    keep = labels >= 0
    e, t = emb[keep].float(), labels[keep]
    d = (2 - 2 * e @ e.T).clamp(min=0)  # B x B squared distances of unit vectors
    same = t[:, None] == t[None, :]
    pos = same & ~torch.eye(len(t), dtype=torch.bool, device=t.device)  # a x p
    neg = ~same  # a x n
    neg_sorted = torch.where(neg, d, torch.full_like(d, math.inf)).sort(1).values  # a x n: negatives first, ascending
    first_above = torch.searchsorted(neg_sorted.detach(), d.detach(), right=True)  # a x p: first negative > d(a, p)
    n_neg = neg.sum(1, keepdim=True)  # a x 1
    semi = neg_sorted.gather(1, first_above.clamp(max=len(t) - 1))  # a x p
    farthest = torch.where(neg, d, torch.full_like(d, -math.inf)).max(1, keepdim=True).values  # a x 1
    d_an = torch.where(first_above < n_neg, semi, farthest)  # a x p
    pairs = pos & (n_neg > 0)
    if not pairs.any():
        return emb.sum() * 0
    return (d - d_an + margin).clamp(min=0)[pairs].mean()


def nearest_neighbour_hits(emb: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
    """(inputs whose nearest other input has their label, inputs that have another of their label),
    over the rows labelled >= 0."""
    keep = labels >= 0
    e, t = emb[keep].float(), labels[keep]
    sim = e @ e.T
    sim.fill_diagonal_(-math.inf)
    has_pos = ((t[:, None] == t[None, :]).sum(1) > 1)
    hit = t[sim.argmax(1)] == t if len(t) > 1 else torch.zeros_like(has_pos)
    return float((hit & has_pos).sum()), int(has_pos.sum())


@register
class Exemplar(Pretext):
    name = ex.PRETEXT
    # The paper: SGD lr 0.01, weight decay 0.004, batch 128 (its own small net, no BN). Here the BN
    # trunk and head take the other classification pretexts' SGD recipe, and rotation's budget:
    # 128 seeds x K 4 = 512 inputs a step (rotation: 128 x 4 turns), 10 epochs = 4680 steps. Measured
    # on this shared 2-CPU machine, one thread, 512 x 96 px: 0.8-1.3 s/step with bf16 autocast, 1.7-2.5 s
    # in fp32, as the machine's load varied (building the batch: 16-22 ms of it); on an H200 (bf16):
    # ~8 ms/step, 16,000 source images/s, a third of it building the batch.
    defaults = {**Pretext.defaults, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
                "epochs": 10.0, "batch_size": 128, "warmup_steps": 100}

    def __init__(self, num_classes: int = ex.NUM_CLASSES, loss: str = "softmax", deformations: int = ex.DEFORMATIONS,
                 margin: float = MARGIN, near_duplicate: float = NEAR_DUPLICATE):
        super().__init__()
        ex.check_loss(loss, 1)
        self.num_classes, self.objective, self.k = int(num_classes), loss, int(deformations)
        self.margin, self.near_duplicate = float(margin), float(near_duplicate)
        self.register_buffer("seeds", torch.empty(0, dtype=torch.long))  # S dataset positions; seed i is class i
        self.register_buffer("class_of", torch.empty(0, dtype=torch.long))  # n: each position's class, -1 no seed

    @classmethod
    def from_model(cls, model) -> "Exemplar":
        head = model.head
        return cls(head.num_classes, head.loss, head.deformations)

    def set_seeds(self, seeds: torch.Tensor, n: int) -> None:
        """Make ``seeds`` (dataset positions) classes 0..S-1 of a set of ``n`` images."""
        device = self.class_of.device
        class_of = torch.full((n,), -1, dtype=torch.long)
        class_of[seeds] = torch.arange(len(seeds))
        self.seeds, self.class_of = seeds.to(device), class_of.to(device)

    def begin(self, run: Run) -> None:
        seeds = choose_seeds(run.images, self.num_classes, self.near_duplicate)
        self.set_seeds(seeds, len(run.images))
        n, full = len(run.images), len(seeds) == self.num_classes
        skipped = (int(seeds[-1]) + 1 if full else n) - len(seeds)  # among the images looked at
        short = "" if full else f" (the model has {self.num_classes} classes; the rest stay unused)"
        run.log(f"exemplar: {len(seeds)} seed images of {n}{short}, {skipped} near-duplicates skipped")

    def epoch_order(self, n: int, epoch: int, gen: torch.Generator) -> torch.Tensor:
        """n positions, seeds only: passes over the seeds, each a new permutation."""
        seeds = self.seeds.cpu()
        if not len(seeds):
            raise RuntimeError("exemplar: no seeds chosen (begin() was not run)")
        passes = math.ceil(n / len(seeds))
        return torch.cat([seeds[torch.randperm(len(seeds), generator=gen)] for _ in range(passes)])[:n]

    def eval_set(self, train: ImageSet, test: ImageSet) -> ImageSet:
        """The training seeds, labelled with their classes (chosen again from ``train`` when ``begin``
        did not run on it, e.g. in ``sslzoo evaluate``)."""
        seeds = self.seeds.cpu() if len(self.class_of) == len(train) else \
            choose_seeds(train.images, self.num_classes, self.near_duplicate)
        return ImageSet(train.images[seeds], torch.arange(len(seeds)), [f"seed #{p}" for p in seeds.tolist()],
                        f"{train.name} seeds ({len(seeds)} exemplar classes)")

    def targets(self, batch: Batch) -> torch.Tensor:
        """B surrogate classes: the batch's labels when it carries them (the metric's pass over
        ``eval_set``), else each dataset position's class (-1: no seed)."""
        if batch.labels is not None:
            return batch.labels
        if len(batch.index) and int(batch.index.max()) >= len(self.class_of):
            raise ValueError(f"exemplar: dataset position {int(batch.index.max())} beyond the {len(self.class_of)} "
                             "images the seeds were chosen from")
        return self.class_of[batch.index]

    def make_batch(self, batch: Batch, gen=None, dtype=None):
        # source images B x C x h x w -> inputs B*K x C x H x W at the model's size (image-major: rows
        # iK..iK+K-1 are image i's deformations), targets B*K (-1: no seed)
        cfg = batch.data_config
        unit = batch.unit if batch.unit is not None else ex.to_unit(batch.images, cfg)  # B x C x h x w in [0, 1]
        targets = self.targets(batch)  # B
        seed = targets >= 0
        if not bool(seed.all()) and bool(seed.any()):
            # a batch of any images (the multi-task model's): only the seeds are deformed, the rest
            # would be ignored by the loss anyway (~90 % of a random batch at 6000 of 60k)
            unit, targets = unit[seed], targets[seed]
        d = ex.sample(len(unit) * self.k, gen)
        x = ex.deform(unit.repeat_interleave(self.k, 0), d, cfg["input_size"][1:])  # B*K x C x H x W
        x = normalize(x, cfg)
        return (x if dtype is None else x.to(dtype)), targets.repeat_interleave(self.k)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.objective == "triplet":
            return semi_hard_triplet_loss(outputs, targets, self.margin)
        valid = (targets >= 0).sum().clamp(min=1)  # a tensor: no wait on the GPU
        return F.cross_entropy(outputs.float(), targets, ignore_index=-1, reduction="sum") / valid

    def metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict:
        if self.objective == "triplet":
            return {"nn_accuracy": nearest_neighbour_hits(outputs, targets)}
        valid = targets >= 0
        return {"accuracy": (float(((outputs.argmax(-1) == targets) & valid).sum()), int(valid.sum()))}
