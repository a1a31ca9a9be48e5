"""Exemplar CNN: deformations in the paper's ranges, batched in one grid_sample and equal to a
per-image torchvision reference, the identity giving the image back; seeds (near-duplicates
skipped, the same from any prefix of the data), targets by dataset position with non-seeds
ignored; the softmax and triplet (semi-hard, by hand) losses; a few real steps lowering the loss;
kill -9 + --resume bit-identical through the CLI, and `sslzoo evaluate` finding the same seeds; the
demo tab's function."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.overrides import TorchFunctionMode

from sslzoo import zoo
from sslzoo.training.loop import TrainConfig, evaluate, make_batch, make_optimizer, train_step
from sslzoo.training.pretexts import Batch, Run, get_pretext
from sslzoo.training.pretexts.exemplar import (Exemplar, choose_seeds, nearest_neighbour_hits,
                                               semi_hard_triplet_loss)
from sslzoo.zoo.pretexts import exemplar as ex

from .conftest import assert_same_run, run_cli, train_killed_at

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = {"input_size": [1, 96, 96], "mean": [0.2860], "std": [0.3530], "interpolation": "bilinear", "channels": "L"}
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def fmnist(fmnist_root):
    from sslzoo.training.data import load_fashion_mnist

    return load_fashion_mnist("train", root=fmnist_root)


# --- deformations -------------------------------------------------------------------------------------

def test_deformation_parameters_stay_in_the_papers_ranges_and_cover_them():
    d = ex.sample(20000, _gen(1))
    for name, (lo, hi) in {"scale": ex.SCALE, "angle": (-ex.ROTATION, ex.ROTATION), "shift": (-ex.SHIFT, ex.SHIFT),
                           "power": ex.POWER, "multiply": ex.MULTIPLY, "add": ex.ADD, "hue": ex.HUE,
                           "pca": ex.PCA_FACTOR}.items():
        v = getattr(d, name)
        assert lo <= float(v.min()) and float(v.max()) <= hi, name
        span = hi - lo
        assert float(v.min()) < lo + 0.01 * span and float(v.max()) > hi - 0.01 * span, name  # the whole range
    # zoom and power are log-uniform: as often above 1 as below
    assert abs(float((d.scale > 1).float().mean()) - 0.5) < 0.02 and abs(float((d.power > 1).float().mean()) - 0.5) < 0.02
    # drawn on the CPU from the generator alone: the same stream gives the same deformations
    again = ex.sample(20000, _gen(1))
    assert all(torch.equal(getattr(d, f), getattr(again, f)) for f in ("scale", "angle", "shift", "pca"))


@pytest.mark.parametrize("channels", [1, 3])
def test_the_identity_deformation_returns_the_image(channels):
    x = torch.rand(5, channels, 28, 28, generator=_gen())
    out = ex.deform(x, ex.Deformation.identity(5))
    assert out.shape == x.shape and torch.allclose(out, x, atol=1e-5)
    # at the model's size it is the plain bilinear resize (inside the one-pixel rim, where grid_sample
    # blends in the black outside and interpolate repeats the edge)
    big = ex.deform(x, ex.Deformation.identity(5), (96, 96))
    resized = F.interpolate(x, size=(96, 96), mode="bilinear", align_corners=False)
    assert torch.allclose(big[..., 2:-2, 2:-2], resized[..., 2:-2, 2:-2], atol=1e-5)


def test_geometry_zooms_turns_counter_clockwise_and_shifts_as_specified():
    # a small blob right of the centre; its centroid must land at s R(angle) q + 2 shift (normalised units)
    n = 101
    u = (torch.arange(n) * 2 + 1) / n - 1
    yy, xx = torch.meshgrid(u, u, indexing="ij")
    blob = torch.exp(-((xx - 0.3) ** 2 + (yy + 0.1) ** 2) / 0.002)[None, None]
    d = ex.Deformation.identity(1)
    d.scale[:], d.angle[:], d.shift[:] = 1.3, 15.0, torch.tensor([0.1, -0.05])
    out = ex.warp(blob, d)[0, 0]
    got = (float((out * xx).sum() / out.sum()), float((out * yy).sum() / out.sum()))
    a = math.radians(15)  # counter-clockwise on screen (y down): (x, y) -> (x cos + y sin, -x sin + y cos)
    want = (1.3 * (0.3 * math.cos(a) - 0.1 * math.sin(a)) + 0.2, 1.3 * (-0.3 * math.sin(a) - 0.1 * math.cos(a)) - 0.1)
    assert got == pytest.approx(want, abs=2e-3)


def test_the_sampling_grid_is_affine_grids():
    theta = ex.affine_theta(ex.sample(64, _gen(2)))
    for size in ((96, 96), (28, 28), (40, 64)):
        ref = F.affine_grid(theta, [64, 1, *size], align_corners=False)
        assert torch.allclose(ex.sampling_grid(theta, size), ref, atol=1e-6)


class _Count(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls: dict[str, int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        self.calls[name] = self.calls.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


def test_a_batch_is_one_grid_sample_call_and_equals_a_per_image_torchvision_reference():
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    x = torch.rand(32, 1, 28, 28, generator=_gen(3))
    d = ex.sample(32, _gen(4))
    with _Count() as count:
        out = ex.deform(x, d)
    assert count.calls.get("grid_sample") == 1 and "affine_grid" not in count.calls
    refs = []
    for i in range(32):  # one image at a time: m v^p + a, then torchvision's affine (its angle turns clockwise),
        # the outside black lit as the image is (affine's own fill= weighs the rim by its mask twice: not used)
        p, m, a = float(d.power[i, 1]), float(d.multiply[i, 1]), float(d.add[i, 1])
        lit, black = (m * x[i] ** p + a).clamp(0, 1), min(max(a, 0.0), 1.0)
        refs.append(TF.affine(lit - black, angle=-float(d.angle[i]), scale=float(d.scale[i]), shear=[0.0, 0.0],
                              translate=[float(d.shift[i, 0]) * 28, float(d.shift[i, 1]) * 28],
                              interpolation=InterpolationMode.BILINEAR) + black)
    assert torch.allclose(out, torch.stack(refs), atol=1e-4)
    # the same for colour images, against the batch's own rows deformed one by one
    rgb = torch.rand(8, 3, 28, 28, generator=_gen(5))
    dc = ex.sample(8, _gen(6))
    whole = ex.deform(rgb, dc, (40, 40))
    assert torch.allclose(whole, torch.cat([ex.deform(rgb[i:i + 1], dc[i], (40, 40)) for i in range(8)]), atol=1e-5)


def test_the_reused_grid_memory_never_reaches_an_autograd_graph():
    x = torch.rand(4, 1, 28, 28, generator=_gen(9), requires_grad=True)
    d = ex.sample(4, _gen(10))

    def grad(between: bool) -> torch.Tensor:
        x.grad = None
        out = ex.deform(x, d, (96, 96))
        if between:  # another batch of the same shape, as the next training step makes, before backward
            with torch.no_grad():
                ex.deform(torch.rand(4, 1, 28, 28), ex.sample(4, _gen(11)), (96, 96))
        out.square().sum().backward()
        return x.grad.clone()

    assert torch.equal(grad(False), grad(True))


def test_colour_steps_do_what_the_paper_says():
    x = torch.rand(4, 3, 16, 16, generator=_gen(7)) * 0.6 + 0.2
    # the same factor on every principal axis: contrast about the image's mean colour
    d = ex.Deformation.identity(4)
    d.pca[:] = 1.5
    mean = x.mean((2, 3), keepdim=True)
    assert torch.allclose(ex.recolour(x, d), (mean + 1.5 * (x - mean)).clamp(0, 1), atol=1e-5)
    # a hue shift moves the hue and keeps saturation and value
    d = ex.Deformation.identity(4)
    d.hue[:] = 0.07
    before, after = ex.rgb_to_hsv(x), ex.rgb_to_hsv(ex.recolour(x, d))
    assert torch.allclose(after[:, 1:], before[:, 1:], atol=1e-5)
    turned = (after[:, 0] - before[:, 0]) % 1.0
    assert torch.allclose(turned, torch.full_like(turned, 0.07), atol=1e-4)
    # power, multiplier and added value on S and V
    d = ex.Deformation.identity(4)
    d.power[:] = torch.tensor([2.0, 0.5])
    d.multiply[:] = torch.tensor([0.8, 1.2])
    d.add[:] = torch.tensor([0.05, -0.05])
    want = before.clone()
    want[:, 1] = (0.8 * before[:, 1] ** 2 + 0.05).clamp(0, 1)
    want[:, 2] = (1.2 * before[:, 2] ** 0.5 - 0.05).clamp(0, 1)
    assert torch.allclose(ex.rgb_to_hsv(ex.recolour(x, d))[:, 1:], want[:, 1:], atol=1e-4)
    with pytest.raises(ValueError, match="1- or 3-channel"):
        ex.recolour(torch.rand(2, 2, 8, 8), ex.Deformation.identity(2))


# --- seeds, targets, losses -------------------------------------------------------------------------

def test_seeds_skip_near_duplicates_and_a_prefix_gives_a_prefix(fmnist):
    images = fmnist.images[:400].clone()
    images[7] = (images[3].float() * 0.9).round().to(torch.uint8)  # a dimmer copy of image 3
    noise = torch.randint(-8, 9, images[5].shape, generator=_gen())
    images[11] = (images[5].int() + noise).clamp(0, 255).to(torch.uint8)  # image 5 with pixel noise
    images[13] = torch.roll(images[5], 2, dims=-1)  # image 5 two pixels to the right: not aligned, kept
    seeds = choose_seeds(images, 300)
    assert 3 in seeds and 5 in seeds and 13 in seeds and 7 not in seeds and 11 not in seeds
    assert len(seeds) == 300 and torch.equal(seeds, seeds.sort().values)
    assert torch.equal(choose_seeds(images[:200], 300), seeds[seeds < 200])  # what --limit 200 would choose
    assert torch.equal(choose_seeds(images, 300, chunk=64), seeds)  # chunking does not change the choice


def _plug(fmnist, n=64, classes=20, loss="softmax") -> tuple[Exemplar, Run]:
    pt = Exemplar(num_classes=classes, loss=loss, deformations=3)
    run = Run(None, fmnist.images[:n], fmnist.labels[:n], torch.device("cpu"), False, seed=0, log=lambda s: None)
    pt.begin(run)
    return pt, run


def test_targets_are_looked_up_by_dataset_position_and_only_seeds_are_sampled(fmnist):
    pt, run = _plug(fmnist)
    seeds = pt.seeds
    assert len(seeds) == 20 and torch.equal(pt.class_of[seeds], torch.arange(20))
    assert int((pt.class_of >= 0).sum()) == 20 and len(pt.class_of) == 64
    other = torch.tensor([i for i in range(64) if i not in seeds.tolist()][:2])
    idx = torch.stack([seeds[4], other[0], seeds[0], other[1]])
    x, t = pt.make_batch(Batch.from_uint8(run.images[idx], idx, CFG), _gen(), None)
    # only the seeds are deformed (the rest would be ignored), image-major
    assert x.shape == (6, 1, 96, 96) and t.tolist() == [4] * 3 + [0] * 3
    x, t = pt.make_batch(Batch.from_uint8(run.images[other], other, CFG), _gen(), None)
    assert x.shape == (6, 1, 96, 96) and t.tolist() == [-1] * 6  # no seed at all: kept, and ignored by the loss
    order = pt.epoch_order(64, 0, _gen())
    assert len(order) == 64 and set(order.tolist()) == set(seeds.tolist())
    assert sorted(torch.bincount(pt.class_of[order], minlength=20).tolist()) == [3] * 16 + [4] * 4  # passes over the seeds
    with pytest.raises(ValueError, match="beyond the 64 images"):
        pt.make_batch(Batch.from_uint8(run.images[:2], torch.tensor([0, 64]), CFG), _gen(), None)
    # the metric's set: the seeds, labelled with their classes; a plug-in that never ran begin finds them too
    for plug in (pt, Exemplar(num_classes=20)):
        ev = plug.eval_set(fmnist.subset(64), None)
        assert torch.equal(ev.images, run.images[seeds]) and torch.equal(ev.labels, torch.arange(20))


def test_the_loss_and_metrics_ignore_images_that_are_no_seeds():
    pt = Exemplar(num_classes=10)
    logits = torch.randn(8, 10, generator=_gen(), requires_grad=True)
    targets = torch.tensor([3, -1, 7, -1, 3, 0, -1, 9])
    keep = targets >= 0
    loss = pt.loss(logits, targets)
    assert torch.allclose(loss, F.cross_entropy(logits[keep], targets[keep]))
    loss.backward()
    assert torch.count_nonzero(logits.grad[~keep]) == 0 and torch.count_nonzero(logits.grad[keep]) > 0
    hits = float(((logits.argmax(-1) == targets) & keep).sum())
    assert pt.metrics(logits, targets) == {"accuracy": (hits, 5)}
    none = pt.loss(logits, torch.full((8,), -1))  # a batch without seeds: nothing to learn, not NaN
    assert float(none.detach()) == 0 and none.requires_grad


def _semi_hard_reference(e: torch.Tensor, t: torch.Tensor, margin: float) -> float:
    """TensorFlow's triplet_semihard_loss, spelled out pair by pair."""
    d = ((e[:, None] - e[None]) ** 2).sum(-1)
    losses = []
    for a in range(len(t)):
        negs = [float(d[a, n]) for n in range(len(t)) if t[n] != t[a]]
        for p in range(len(t)):
            if p == a or t[p] != t[a] or not negs:
                continue
            above = [v for v in negs if v > float(d[a, p])]
            losses.append(max(0.0, float(d[a, p]) - (min(above) if above else max(negs)) + margin))
    return sum(losses) / len(losses)


def test_semi_hard_triplet_loss_on_a_hand_example():
    def at(*deg):
        return torch.tensor([[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in deg])

    def sq(deg):  # squared distance of two unit vectors deg degrees apart
        return 2 - 2 * math.cos(math.radians(deg))

    # A (0 deg) and P (40) of seed 0, N1 (20) and N2 (50) of seed 1, N3 (180) of seed 2. Semi-hard negative:
    # A->P: N2 (the closest beyond P: 50 > 40); P->A: N3; N1->N2: N3; N2->N1: A (50 > 30)
    emb, labels = at(0, 40, 20, 50, 180), torch.tensor([0, 0, 1, 1, 2])
    want = (max(0, sq(40) - sq(50) + 0.5) + 0 + 0 + max(0, sq(30) - sq(50) + 0.5)) / 4
    assert float(semi_hard_triplet_loss(emb, labels, 0.5)) == pytest.approx(want, abs=1e-5)
    # an image that is no seed (-1) is no negative, however close it lies
    with_other = torch.cat([emb, at(41)])
    assert float(semi_hard_triplet_loss(with_other, torch.tensor([0, 0, 1, 1, 2, -1]), 0.5)) == pytest.approx(want, abs=1e-5)
    # no negative beyond the positive: the farthest negative is taken
    assert float(semi_hard_triplet_loss(at(0, 180, 90), torch.tensor([0, 0, 1]), 0.5)) == pytest.approx(sq(180) - sq(90) + 0.5)
    # random batches against the pair-by-pair reference
    g = _gen(8)
    for _ in range(3):
        e = F.normalize(torch.randn(24, 5, generator=g), dim=1)
        t = torch.randint(0, 6, (24,), generator=g)
        assert float(semi_hard_triplet_loss(e, t, 0.5)) == pytest.approx(_semi_hard_reference(e, t, 0.5), abs=1e-5)
    # nearest-neighbour metric: rows 0 and 1 are each other's nearest and share a seed; 2 and 3 do not
    hits = nearest_neighbour_hits(at(0, 5, 90, 100, 270), torch.tensor([0, 0, 1, 2, 1]))
    assert hits == (2.0, 4)


def test_triplet_form_head_gives_unit_embeddings_and_trains(fmnist):
    cfg = dict(zoo.lookup("exemplar-alexnet")[1].config)
    cfg["pretext_args"] = dict(cfg["pretext_args"], loss="triplet", embedding_dim=32, num_classes=16)
    torch.manual_seed(0)
    model = zoo.PretextModel(cfg).train()
    pt = get_pretext(model.pretext, model).train()
    assert pt.objective == "triplet" and pt.k == 4
    pt.begin(Run(model, fmnist.images[:64], fmnist.labels[:64], torch.device("cpu"), False, 0, lambda s: None))
    idx = pt.seeds[:8]
    inputs, targets = make_batch(fmnist.images[idx], idx, pt, model.data_config, 0, _gen(), 0)
    out = model.predict_pretext(inputs)
    assert out.shape == (32, 32) and torch.allclose(out.norm(dim=1), torch.ones(32), atol=1e-5)
    assert list(pt.metrics(out, targets)) == ["nn_accuracy"]
    opt = make_optimizer(model, TrainConfig(warmup_steps=0).with_defaults(dict(pt.defaults, lr=0.02)))
    losses = [train_step(model, opt, pt, inputs, targets, bf16=False)[1].item() for _ in range(6)]
    assert losses[-1] < 0.8 * losses[0], losses


def test_a_few_steps_on_real_images_lower_the_loss(fmnist):
    torch.manual_seed(0)
    model = zoo.create("exemplar-alexnet").train()
    pt = get_pretext(model.pretext, model).train()
    assert (pt.num_classes, pt.k, pt.objective) == (6000, 4, "softmax")
    pt.begin(Run(model, fmnist.images[:64], fmnist.labels[:64], torch.device("cpu"), False, 0, lambda s: None))
    opt = make_optimizer(model, TrainConfig(warmup_steps=0).with_defaults(pt.defaults))
    idx = pt.seeds[:16]
    inputs, targets = make_batch(fmnist.images[idx], idx, pt, model.data_config, 2, _gen(), 0)  # 64 deformations
    losses = [train_step(model, opt, pt, inputs, targets, bf16=False)[1].item() for _ in range(8)]
    assert losses[0] == pytest.approx(math.log(6000), abs=0.5)  # chance at the start
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < math.log(16), losses


# --- the CLI: kill -9, resume, evaluate --------------------------------------------------------------

TINY = ["--limit", "160", "--batch-size", "16", "--epochs", "1", "--no-progress", "--precision", "fp32",
        "--eval-limit", "32"]


def test_kill9_then_resume_is_bit_identical_and_evaluate_finds_the_same_seeds(tmp_path, fmnist_root):
    ref = tmp_path / "ref"
    res = run_cli("train", "exemplar-alexnet", "--out", ref, "--checkpoint-every", "100", *TINY, env=ONE_THREAD,
                  check=True)
    assert "exemplar: 160 seed images of 160 (the model has 6000 classes; the rest stay unused)" in res.stdout
    pm = zoo.load(ref / "model").config["provenance"]["pretext_metric"]
    assert pm["name"] == "accuracy" and "seeds (160 exemplar classes)" in pm["split"] and 0 <= pm["value"] <= 1
    state = load_file(ref / "checkpoint.safetensors")
    assert state["pretext/seeds"].tolist() == list(range(160)) and state["pretext/class_of"].shape == (160,)
    assert not any("seeds" in k or "class_of" in k for k in load_file(ref / "model" / "model.safetensors"))

    run = tmp_path / "killed"
    ckpt = run / "checkpoint.safetensors"
    killed_at = train_killed_at(["exemplar-alexnet", "--out", run, "--checkpoint-every", "1", *TINY], ckpt, 3,
                                tmp_path / "killed.log", env=ONE_THREAD)
    assert 3 <= killed_at < 10 and not (run / "model").exists()
    res = run_cli("train", "exemplar-alexnet", "--out", run, "--checkpoint-every", "1", "--resume", *TINY,
                  env=ONE_THREAD, check=True)
    assert f"resumed {ckpt} at step {killed_at}/10" in res.stdout
    assert_same_run(ref, run)
    # `sslzoo evaluate` chooses the seeds from the whole training set: its first 32 are the run's
    got = evaluate(ref / "model", data_root=fmnist_root, limit=32, precision="fp32")
    assert got["metric"] == "accuracy" and got["value"] == pytest.approx(pm["value"], abs=1e-4)


# --- the demo ------------------------------------------------------------------------------------------

def test_demo_tab_shows_the_deformations_and_whether_the_model_agrees(tmp_path):
    import numpy as np
    from PIL import Image

    from sslzoo.demo import _core
    from sslzoo.demo.tabs import exemplar as tab

    torch.manual_seed(0)
    model_dir = str(zoo.save_pretrained(zoo.create("exemplar-alexnet"), tmp_path / "ex", card="# test\n"))
    upload = tmp_path / "shirt.png"
    Image.fromarray((np.indices((60, 40)).sum(0) % 7 * 30).astype(np.uint8)).save(upload)
    view, gallery, share, summary = tab.exemplar(model_dir, str(upload), 3)
    m = _core.get_model(model_dir)
    unit = ex.to_unit(zoo.transforms(m)(Image.open(upload)), m.data_config).clamp(0, 1)
    views = ex.deformations_of(unit, tab.COUNT, 3)
    with torch.no_grad():
        classes = m.predict_pretext(ex.normalize(views, m.data_config)).argmax(-1)
    major, want = ex.agreement(classes)
    assert view.size == (288, 288) and len(gallery) == tab.COUNT and share == pytest.approx(want, abs=1e-4)
    assert [cap.split(" (")[0] for _, cap in gallery] == [f"#{i + 1}: class {int(c)}" for i, c in enumerate(classes)]
    assert all(cap.endswith("✓") == (int(c) == major) for (_, cap), c in zip(gallery, classes))
    assert all(img.size == (192, 192) for img, _ in gallery) and f"(class {major})" in summary
    assert np.array_equal(np.asarray(gallery[0][0])[::2, ::2], np.asarray(_core.to_pil(views[0])))  # enlarged 2x
    assert tab.exemplar(model_dir, str(upload), 3)[2] == share  # seeded
    with pytest.raises(_core.DemoError, match="seed must be a whole number"):
        tab.exemplar(model_dir, str(upload), -1)
    assert ex.agreement(torch.tensor([4, 4, 2, 4])) == (4, 0.75)


def test_a_bad_head_argument_is_one_line():
    from sslzoo.zoo._validate import check_config

    cfg = dict(zoo.lookup("exemplar-alexnet")[1].config)
    with pytest.raises(zoo.ZooError, match=r"pretext_args.loss: unknown value 'hinge'; known: softmax, triplet"):
        check_config(dict(cfg, pretext_args=dict(cfg["pretext_args"], loss="hinge")), "config.json")
    with pytest.raises(zoo.ZooError, match=r"pretext_args.deformations: must be in 1..64"):
        check_config(dict(cfg, pretext_args=dict(cfg["pretext_args"], deformations=0)), "config.json")
