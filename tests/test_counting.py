"""Counting (Noroozi et al., ICCV 2017): the views are what they say (D = the whole at half size, the
tiles its quadrants) and agree with the direct F.interpolate way, the loss by hand with the hinge
over the whole count vector (not per dimension), the metrics, the head's one trunk pass over the
stacked views, a few steps on Fashion-MNIST, kill -9 + --resume bit-identical through the CLI, and
the demo tab's function."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sslzoo import zoo
from sslzoo.training.loop import TrainConfig, make_batch, make_optimizer, train_step
from sslzoo.training.pretexts import Batch, get_pretext
from sslzoo.training.pretexts.counting import Counting
from sslzoo.zoo._transforms import normalize
from sslzoo.zoo.pretexts import counting as ct

from .conftest import assert_same_run, run_cli, train_killed_at

pytestmark = pytest.mark.usefixtures("one_thread")

NAME = "counting-alexnet"
CFG = {"input_size": [1, 96, 96], "mean": [0.2860], "std": [0.3530], "interpolation": "bilinear", "channels": "L"}
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
QUADRANTS = (0.1, 0.4, 0.7, 0.9)  # top-left, top-right, bottom-left, bottom-right


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _quadrant_image(side: int) -> torch.Tensor:
    """1 x 1 x side x side, each quadrant one value (QUADRANTS, row-major)."""
    x = torch.empty(1, 1, side, side)
    h = side // 2
    for j, v in enumerate(QUADRANTS):
        r, c = divmod(j, 2)
        x[..., r * h:(r + 1) * h, c * h:(c + 1) * h] = v
    return x


# --- the views ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", list(ct.METHODS))
def test_tiles_are_the_quadrants_and_d_is_the_whole_at_half_size(method):
    x = _quadrant_image(192)  # already at twice the 96-px input: the enlargement is the identity
    views = ct.make_views(x, (96, 96), method)
    assert views.shape == (1, 5, 1, 96, 96)
    for j, v in enumerate(QUADRANTS):  # tile j is quadrant j, exactly
        assert torch.allclose(views[0, 1 + j], torch.full((1, 96, 96), v), atol=1e-6), j
    d = views[0, 0, 0]  # the whole at half size: quadrant j is the 48 x 48 block j (away from the seams)
    for j, v in enumerate(QUADRANTS):
        r, c = divmod(j, 2)
        block = d[r * 48:(r + 1) * 48, c * 48:(c + 1) * 48][2:-2, 2:-2]
        assert torch.allclose(block, torch.full_like(block, v), atol=1e-6), (method, j)
    if method in ("area", "nearest"):  # no blending across a seam that falls between output pixels
        assert torch.equal(torch.unique(d.round(decimals=5)), torch.tensor(QUADRANTS))


def test_views_of_a_small_source_match_the_direct_way_and_the_methods_differ():
    x = torch.rand(6, 1, 28, 28, generator=_gen())  # Fashion-MNIST size, enlarged to 192 first
    downs = {}
    for method in ct.METHODS:
        views = ct.make_views(x, (96, 96), method)
        assert torch.allclose(views, ct.reference_views(x, (96, 96), method), atol=1e-5), method
        assert views.transpose(0, 1).is_contiguous()  # view-major: the head stacks them without a copy
        downs[method] = views[:, 0]
        assert torch.equal(views[:, 1:], ct.make_views(x, (96, 96), "bilinear")[:, 1:])  # tiles never depend on D's method
    assert all((downs[m] - downs["bilinear"]).abs().max() > 0.02 for m in ("bicubic", "area", "nearest"))
    # normalising before or after is the same (the resizes are linear, rows summing to 1), and bf16 is close
    before = ct.make_views(normalize(x, CFG), (96, 96), "bicubic")
    assert torch.allclose(before, normalize(ct.make_views(x, (96, 96), "bicubic"), CFG), atol=1e-5)
    half = ct.make_views(normalize(x, CFG), (96, 96), "bicubic", dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16 and (half.float() - before).abs().max() < 0.05  # ~2/255 of a pixel
    with pytest.raises(ValueError, match="unknown resize method 'lanczos'"):
        ct.make_views(x, (96, 96), "lanczos")


def test_the_plugin_draws_ds_method_per_step_and_refuses_a_batch_of_one():
    plugin = Counting().train()
    x = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8, generator=_gen())
    batch = Batch.from_uint8(x, torch.arange(4), CFG)
    picks = set()
    for seed in range(12):
        views, pick = plugin.make_batch(batch, _gen(seed), None)
        method = plugin.methods[int(pick)]
        assert torch.equal(views, ct.make_views(normalize(batch.unit, CFG), (96, 96), method))
        picks.add(method)
    assert picks == set(ct.METHODS)  # every method gets drawn
    assert torch.equal(plugin.make_batch(batch, _gen(3), None)[0], plugin.make_batch(batch, _gen(3), None)[0])
    one = Batch.from_uint8(x[:1], torch.arange(1), CFG)
    with pytest.raises(ValueError, match="batch of at least 2 images"):
        plugin.make_batch(one, _gen(), None)
    plugin.eval().make_batch(one, _gen(), None)  # the last evaluation batch may hold one image


# --- the loss and the metrics --------------------------------------------------------------------------

def _hand_counts() -> torch.Tensor:
    """B=2 images x 5 views x K=4 counts. Image 0: whole [1,0,2,0], tiles sum [1,1,1,0]; image 1: whole
    [3,0,0,0], tiles all 0. Dimension 3 never counts."""
    phi = torch.zeros(2, 5, 4)
    phi[0, 0] = torch.tensor([1.0, 0, 2, 0])
    phi[0, 1] = torch.tensor([0.5, 1, 0, 0])
    phi[0, 4] = torch.tensor([0.5, 0, 1, 0])
    phi[1, 0] = torch.tensor([3.0, 0, 0, 0])
    return phi


def test_loss_by_hand_with_the_hinge_over_the_whole_vector():
    phi = _hand_counts()
    # image 0: own |[1,0,2,0] - [1,1,1,0]|^2 = 2; other = image 1's whole: |[3,0,0,0] - [1,1,1,0]|^2 = 6 -> hinge 10 - 6 = 4
    # image 1: own |[3,0,0,0] - 0|^2 = 9; other = image 0's whole: |[1,0,2,0]|^2 = 5 -> hinge 10 - 5 = 5
    own, other = ct.squared_distances(phi)
    assert own.tolist() == [2.0, 9.0] and other.tolist() == [6.0, 5.0]
    plugin = Counting()
    assert plugin.loss(phi) == pytest.approx(((2 + 4) + (9 + 5)) / 2)  # 10
    # the per-dimension hinge (the public port's bug) would give sum_k max(0, 10 - d_k^2):
    # image 0: d = [2,-1,-1,0] -> 6 + 9 + 9 + 10 = 34; image 1: d = [1,0,2,0] -> 9 + 10 + 6 + 10 = 35
    per_dim = ((2 + 34) + (9 + 35)) / 2
    assert per_dim == 40 and plugin.loss(phi) != pytest.approx(per_dim)
    # far apart: the hinge is 0 and only the own term is left
    far = phi.clone()
    far[1, 0, 3] = 10.0  # image 1's whole moves 10 away along an unused dimension
    own, other = ct.squared_distances(far)
    assert plugin.loss(far) == pytest.approx((own + torch.clamp(10 - other, min=0)).mean().item())
    assert plugin.loss(far) == pytest.approx((2 + 0 + 109 + 5) / 2)


def test_metrics_by_hand_and_active_dimensions_over_the_set():
    plugin = Counting()
    phi = _hand_counts()
    m = plugin.metrics(phi, None)
    assert list(m) == ["counting_accuracy", "active_dims", "count_distance", "other_distance"]
    got = plugin.summarize(m)
    assert got["counting_accuracy"] == 0.5  # image 0: 2 < 6 yes; image 1: 9 < 5 no
    assert got["active_dims"] == 3  # dimension 3 never counts
    assert got["count_distance"] == pytest.approx((math.sqrt(2) + 3) / 2)
    assert got["other_distance"] == pytest.approx((math.sqrt(6) + math.sqrt(5)) / 2)
    # summed over two batches as the loop sums them: a dimension alive in either batch counts once
    second = torch.zeros(3, 5, 4)
    second[:, 2, 3] = 1.0  # only dimension 3, only in a tile
    sums = {}
    for batch in (phi, second):
        for name, (total, count) in plugin.metrics(batch, None).items():
            before = sums.get(name, (0.0, 0))
            sums[name] = (before[0] + total, before[1] + count)
    total = plugin.summarize(sums)
    assert total["active_dims"] == 4 and total["counting_accuracy"] == pytest.approx(1 / 5)  # ties are failures
    assert plugin.summarize(plugin.metrics(torch.zeros(2, 5, 4), None))["counting_accuracy"] == 0.0  # all dead


# --- the head -------------------------------------------------------------------------------------------

def test_head_runs_the_trunk_once_on_the_stacked_views():
    torch.manual_seed(0)
    model = zoo.create(NAME).eval()
    assert model.pretext == "counting" and model.config["pretext_args"] == {"hidden": 512, "count_dim": 1000}
    calls = []
    hook = model.trunk.register_forward_hook(lambda mod, args, out: calls.append(tuple(args[0].shape)))
    views = ct.make_views(torch.rand(3, 1, 28, 28, generator=_gen()), (96, 96), "area")
    with torch.no_grad():
        phi = model.predict_pretext(views)
    hook.remove()
    assert calls == [(15, 1, 96, 96)]  # one pass, B * 5 images
    assert phi.shape == (3, 5, 1000) and bool((phi >= 0).all()) and bool((phi > 0).any())  # ReLU counts
    with torch.no_grad():  # eval mode: each view's counts are those of that view alone
        alone = model.head.phi(model.trunk(views[:, 2].contiguous()))
    assert torch.allclose(phi[:, 2], alone, atol=1e-4)
    whole, tile_sum, other = ct.split_counts(phi)
    assert torch.equal(other, phi[:, 0].roll(1, 0)) and torch.allclose(tile_sum, phi[:, 1:].sum(1))
    with pytest.raises(ValueError, match="B x 5 x C x H x W"):
        model.predict_pretext(views[:, :4])


def test_count_dim_is_validated():
    from sslzoo.zoo._errors import ZooError
    from sslzoo.zoo._validate import check_config

    config = zoo.lookup(NAME)[1].config
    assert check_config(config, "config.json") is config
    with pytest.raises(ZooError, match="pretext_args.count_dim"):
        check_config({**config, "pretext_args": {"hidden": 512, "count_dim": 0}}, "config.json")


# --- training ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fmnist_images(fmnist_root):
    from sslzoo.training.data import load_fashion_mnist

    return load_fashion_mnist("train", root=fmnist_root).images[:24]


def test_a_few_steps_lower_the_loss_on_fashion_mnist(fmnist_images):
    torch.manual_seed(0)
    model = zoo.create(NAME).train()
    pretext = get_pretext(model.pretext, model).train()
    opt = make_optimizer(model, TrainConfig(warmup_steps=0).with_defaults(pretext.defaults))  # the recipe's lr
    idx = torch.arange(len(fmnist_images))
    inputs, targets = make_batch(fmnist_images, idx, pretext, model.data_config, 0, _gen(), 0)
    losses = []
    for _ in range(6):  # the same batch: the loss must come down
        _, loss = train_step(model, opt, pretext, inputs, targets, bf16=False)
        losses.append(loss.item())
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.9 * losses[0], losses


TINY = ["--limit", "160", "--batch-size", "16", "--epochs", "1", "--no-progress", "--precision", "fp32",
        "--eval-limit", "32"]


def test_kill9_then_resume_is_bit_identical(tmp_path, fmnist_root):
    ref = tmp_path / "ref"
    run_cli("train", NAME, "--out", ref, "--checkpoint-every", "100", *TINY, env=ONE_THREAD, check=True)
    model = zoo.load(ref / "model")
    pm = model.config["provenance"]["pretext_metric"]
    assert pm["name"] == "counting_accuracy" and pm["higher_is_better"]
    assert list(pm["all"]) == ["counting_accuracy", "active_dims", "count_distance", "other_distance"]
    assert 0 <= pm["value"] <= 1 and 0 <= pm["all"]["active_dims"] <= 1000
    assert model.config["provenance"]["train_config"]["lr"] == 1e-4  # the recipe's

    run = tmp_path / "killed"
    ckpt = run / "checkpoint.safetensors"
    killed_at = train_killed_at([NAME, "--out", run, "--checkpoint-every", "1", *TINY], ckpt, 3,
                                tmp_path / "killed.log", env=ONE_THREAD)
    assert 3 <= killed_at < 10 and not (run / "model").exists()
    res = run_cli("train", NAME, "--out", run, "--checkpoint-every", "1", "--resume", *TINY, env=ONE_THREAD, check=True)
    assert f"resumed {ckpt} at step {killed_at}/10" in res.stdout
    a = assert_same_run(ref, run)
    assert any("momentum_buffer" in k for k in a)  # SGD's momentum is in the checkpoint


def test_batch_size_one_is_a_one_line_error(tmp_path, fmnist_root):
    res = run_cli("train", NAME, "--out", tmp_path / "one", "--limit", "4", "--batch-size", "1", "--epochs", "1",
                  "--no-progress", "--precision", "fp32", env=ONE_THREAD)
    assert res.returncode != 0 and "batch of at least 2 images" in res.stderr + res.stdout
    assert "Traceback" not in res.stderr


# --- the demo --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def made(tmp_path_factory):
    torch.manual_seed(0)
    return str(zoo.save_pretrained(zoo.create(NAME), tmp_path_factory.mktemp("made") / "counting",
                                   card="# counting-alexnet (made by the test)\n"))


def test_demo_shows_the_views_and_the_counts(made):
    pytest.importorskip("gradio")
    from sslzoo.demo import _core
    from sslzoo.demo.tabs import counting as tab
    from sslzoo.zoo._transforms import to_uint8_tensor
    from sslzoo.zoo.pretexts.decoder import to_unit

    examples = {p.name: p for p in zoo.example_images()}
    boot = examples["fmnist-0-ankle-boot.png"]
    down, tiles, rows, own, other, summary = tab.counting(made, boot, "area", "fmnist-2-trouser.png")
    assert down.size == (288, 288) and tiles.size == (3 * (2 * 96 + tab.GAP),) * 2  # 96-px views shown 3x

    m = _core.get_model(made)
    x = torch.stack([normalize(to_uint8_tensor(_core.load_upload(p), ct.source_config(m)), m.data_config)
                     for p in (boot, examples["fmnist-2-trouser.png"])])
    views = ct.make_views(x, (96, 96), "area")
    by_hand = ct.count(m, views)
    shown = _core.enlarge(_core.to_pil(to_unit(views[0, 0], m.data_config)), 3)
    assert np.array_equal(np.asarray(down), np.asarray(shown))  # D(x) as the model sees it
    top_left = np.asarray(tiles)[:288, :288]
    assert np.array_equal(top_left, np.asarray(_core.enlarge(_core.to_pil(to_unit(views[0, 1], m.data_config)), 3)))
    assert own == pytest.approx(float(by_hand["distance"][0]), abs=1e-4)
    assert other == pytest.approx(float((by_hand["whole"][1] - by_hand["tile_sum"][0]).norm()), abs=1e-4)
    assert 1 <= len(rows) <= tab.TOP and len(rows[0]) == len(tab.TABLE_HEADERS)
    for dim, whole, tile_sum, *four, other_whole in rows:
        assert whole == pytest.approx(float(by_hand["whole"][0, dim]), abs=1e-3)
        assert tile_sum == pytest.approx(sum(four), abs=5e-3)  # the sum column is the four tiles' sum
        assert other_whole == pytest.approx(float(by_hand["whole"][1, dim]), abs=1e-3)
    biggest = [max(r[1], r[2]) for r in rows]
    assert biggest == sorted(biggest, reverse=True)  # the most active dimensions first
    assert "fmnist-2-trouser.png" in summary and f"{own:.3f}" in summary

    # defaults: bilinear, and the first shipped example that is not the upload itself
    assert tab.parse_contrast(None, examples["astronaut.jpg"])[0] != "astronaut.jpg"
    assert tab.counting(made, boot)[3] == pytest.approx(tab.counting(made, boot, "bilinear", None)[3])
    for bad, match in (({"method": "lanczos"}, "downsampling must be one of"),
                       ({"contrast": "nope.png"}, "must be one of the shipped examples")):
        with pytest.raises(_core.DemoError, match=match):
            tab.counting(made, boot, bad.get("method", "area"), bad.get("contrast"))
    with pytest.raises(_core.DemoError, match="this tab needs a counting model"):
        tab.counting("rotation-alexnet", boot)
