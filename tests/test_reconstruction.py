"""The reconstruction pretexts (issue 15, items 2-3): denoising autoencoder and context encoder.
Masks and noise where and how much they say, losses on the clean image / the hole, head shapes,
PSNR by hand, the discriminator as train-only plug-in state, and the CLI end to end (kill -9 +
--resume bit-identical with the adversarial term)."""
from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from sslzoo import zoo
from sslzoo.training import checkpoint
from sslzoo.training.loop import TrainConfig, make_batch, make_optimizer, train_step
from sslzoo.training.pretexts import Batch, get_pretext
from sslzoo.training.pretexts.context_encoder import ContextEncoder
from sslzoo.training.pretexts.denoising import Denoising
from sslzoo.zoo.pretexts import context_encoder as ce
from sslzoo.zoo.pretexts import decoder, denoising

from .conftest import assert_same_run, run_cli, train_killed_at

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = {"input_size": [1, 96, 96], "mean": [0.2860], "std": [0.3530], "interpolation": "bilinear", "channels": "L"}
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # 2 busy cores: oversubscribed threads crawl


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(n: int = 8, seed: int = 0, size: int = 96, channels: int = 1) -> Batch:
    x = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=_gen(seed))
    cfg = dict(CFG, input_size=[channels, size, size], mean=CFG["mean"] * channels, std=CFG["std"] * channels)
    return Batch.from_uint8(x, torch.arange(n), cfg)


# --- masks and noise ---------------------------------------------------------------------------------

def test_central_hole_is_the_half_side_centre_square_filled_with_the_mean():
    mask = ce.central_mask(96, 96)
    expect = torch.zeros(96, 96, dtype=torch.bool)
    expect[24:72, 24:72] = True
    assert torch.equal(mask[0, 0], expect)
    assert ce.central_box(97, 64) == (24, 16, 48, 32)  # odd sides: half rounded down, the spare row below
    plugin = ContextEncoder("central", overlap=3, region=zoo.create("context-encoder-alexnet.fmnist-central").head.region,
                            data_config=CFG)
    batch = _batch(4)
    inputs, targets = plugin.make_batch(batch, _gen(), None)
    x = batch.resized()
    assert torch.equal(inputs[:, :, 24:72, 24:72], torch.zeros(4, 1, 48, 48))  # the mean, in normalised units
    assert torch.allclose(decoder.to_unit(inputs, CFG)[:, :, 24:72, 24:72], torch.full((4, 1, 48, 48), 0.2860))
    outside = ~mask.expand(4, 1, 96, 96)
    assert torch.equal(inputs[outside], x[outside])  # the context is untouched
    # the prediction covers the hole grown by 3 px; the loss weighs the hole 1, the 3-px band 10
    assert targets["target"].shape == (4, 1, 54, 54) and torch.equal(targets["target"], x[:, :, 21:75, 21:75])
    assert torch.equal(targets["hole"][0, 0], torch.nn.functional.pad(torch.ones(48, 48, dtype=torch.bool), (3,) * 4))
    w = targets["weight"][0, 0]
    assert w[3:51, 3:51].eq(1).all() and w[:3].eq(10).all() and w[:, -3:].eq(10).all()


def test_random_regions_cover_20_to_30_percent_seeded():
    masks = ce.random_masks(512, 96, 96, _gen(7))
    share = masks.float().mean((1, 2, 3))
    assert share.min() >= 0.2 and share.max() <= 0.3, (share.min(), share.max())
    assert torch.equal(masks, ce.random_masks(512, 96, 96, _gen(7)))  # seeded
    assert not torch.equal(masks[0], masks[1])  # one per image
    assert not torch.equal(masks, ce.random_masks(512, 96, 96, _gen(8)))
    for h, w in ((64, 64), (100, 80)):  # other sizes (a 2-px and a 4-px grid)
        s = ce.random_masks(64, h, w, _gen(1)).float().mean((1, 2, 3))
        assert s.min() >= 0.2 and s.max() <= 0.3
    # the plug-in: the hole filled with the mean, the target the whole image, the loss on hole + band
    plugin = ContextEncoder("random", overlap=3, data_config=CFG)
    batch = _batch(16)
    inputs, targets = plugin.make_batch(batch, _gen(3), torch.bfloat16)
    hole = targets["hole"]
    assert inputs.dtype == torch.bfloat16 and hole.shape == (16, 1, 96, 96)
    assert torch.equal(hole, ce.random_masks(16, 96, 96, _gen(3)))  # drawn from the step's generator
    assert inputs[hole].float().eq(0).all() and torch.equal(inputs[~hole], batch.resized()[~hole].bfloat16())
    ring = ce.band(hole, 3)
    assert torch.equal(targets["weight"], hole.float() + 10 * ring.float())
    assert not (ring & hole).any() and ring.any()


def test_masking_noise_drops_half_the_pixels_to_the_mean():
    batch = _batch(32, channels=3)
    x = batch.resized()
    noisy = denoising.corrupt(x, "mask", 0.5, _gen(), std=[0.353] * 3)
    dropped = (noisy == 0).all(1)  # B x H x W: all channels of a pixel together
    assert abs(dropped.float().mean().item() - 0.5) < 0.01
    kept = ~dropped[:, None].expand_as(x)
    assert torch.equal(noisy[kept], x[kept])
    assert abs((denoising.corrupt(x, "mask", 0.2, _gen()) == 0).all(1).float().mean().item() - 0.2) < 0.01


def test_gaussian_noise_has_the_sigma_asked_for_in_pixel_units():
    batch = _batch(32)
    x = batch.resized()
    noisy = denoising.corrupt(x, "gaussian", 0.1, _gen(), std=CFG["std"])
    diff_unit = decoder.to_unit(noisy, CFG, clamp=False) - decoder.to_unit(x, CFG, clamp=False)
    assert abs(diff_unit.std().item() - 0.1) < 0.002 and abs(diff_unit.mean().item()) < 0.002
    assert abs((noisy - x).std().item() - 0.1 / 0.353) < 0.01  # in normalised units: sigma / std
    with pytest.raises(ValueError, match="unknown noise"):
        denoising.corrupt(x, "salt", 0.1)


def test_denoising_loss_is_on_the_clean_image():
    plugin = Denoising("mask", 0.5, CFG)
    batch = _batch(8)
    inputs, targets = plugin.make_batch(batch, _gen(), None)
    clean = batch.resized()
    assert torch.equal(targets["clean"], clean) and torch.equal(targets["input"], inputs)
    assert not torch.equal(inputs, clean)
    assert plugin.loss(clean, targets).item() == 0.0
    assert math.isclose(plugin.loss(inputs, targets).item(), torch.mean((inputs - clean) ** 2).item(), rel_tol=1e-6)


# --- heads -----------------------------------------------------------------------------------------

def test_heads_size_themselves_for_the_input():
    x = torch.zeros(2, 1, 96, 96)
    m = zoo.create("denoising-alexnet").eval()
    assert m.predict_pretext(x).shape == (2, 1, 96, 96)
    assert zoo.create("context-encoder-alexnet").eval().predict_pretext(x).shape == (2, 1, 96, 96)  # random holes
    assert zoo.create("context-encoder-alexnet.fmnist-central").eval().predict_pretext(x).shape == (2, 1, 54, 54)
    from sslzoo.zoo._model import PretextModel
    from sslzoo.zoo._registry import _alexnet

    for size, central in ((64, 32 + 6), (128, 64 + 6), (160, 80 + 6)):  # other inputs: pool5 1x1, 3x3, 4x4
        data = dict(CFG, input_size=[1, size, size])
        d = PretextModel(_alexnet("denoising", 1, data)).eval()
        c = PretextModel(_alexnet("context-encoder", 1, data, mask="central")).eval()
        y = torch.zeros(1, 1, size, size)
        assert d.predict_pretext(y).shape == (1, 1, size, size)
        assert c.predict_pretext(y).shape == (1, 1, central, central)
    assert decoder.plan((2, 2), (96, 96)) == (5, 3, 3) and decoder.plan((2, 2), (54, 54)) == (4, 4, 4)
    fc = ce.ChannelwiseFC(3, 4)  # per channel its own h*w -> h*w map, nothing across channels
    z = torch.zeros(1, 3, 2, 2)
    z[0, 1] = 1.0
    out = fc(z) - fc(torch.zeros_like(z))
    assert out[0, 0].abs().max() == 0 and out[0, 2].abs().max() == 0 and out[0, 1].abs().max() > 0
    with pytest.raises(ValueError, match="overlap"):
        ce.build_head(m.trunk, (1, 96, 96), mask="central", overlap=30)


def test_inference_helpers_for_the_demo():
    img = _batch(1).resized()[0]
    out = denoising.corrupt_and_restore(zoo.create("denoising-alexnet").eval(), img, _gen())
    assert out["restored"].shape == img.shape and 0 <= out["restored"].min() and out["restored"].max() <= 1
    assert out["input_psnr"] == decoder.psnr(out["corrupted"], out["clean"])
    for name in ("context-encoder-alexnet", "context-encoder-alexnet.fmnist-central"):
        model = zoo.create(name).eval()
        res = ce.inpaint(model, img, gen=_gen())
        hole = res["mask"]
        assert res["filled"].shape == img.shape
        assert torch.equal(res["filled"][:, ~hole], res["clean"][:, ~hole])  # the context is kept
        assert torch.allclose(res["masked"][:, hole], torch.tensor(0.2860))
        assert res["mean_fill_psnr"] == decoder.psnr(res["masked"], res["clean"], hole.expand_as(img))


# --- PSNR by hand ---------------------------------------------------------------------------------

def test_psnr_is_pooled_over_the_set_and_matches_a_hand_computation():
    plugin = Denoising("mask", 0.5, CFG)
    std = CFG["std"][0]
    sums: dict = {}
    errors = (0.1, 0.02)  # a constant error per batch, in [0, 1] pixel units
    for i, e in enumerate(errors):
        clean = torch.full((4, 1, 96, 96), (0.5 - 0.286) / std)
        noisy = clean.clone()
        noisy[:, :, :48] = (0.25 - 0.286) / std  # input error 0.25 on half the pixels
        outputs = clean + e / std
        for k, (s, c) in plugin.metrics(outputs, {"clean": clean, "input": noisy}).items():
            sums[k] = (sums.get(k, (0.0, 0))[0] + s, sums.get(k, (0.0, 0))[1] + c)
    got = plugin.summarize(sums)
    assert list(got) == ["psnr", "input_psnr"]
    mse = sum(e * e for e in errors) / 2  # same pixel count per batch
    assert math.isclose(got["psnr"], 10 * math.log10(1 / mse), abs_tol=1e-3)
    assert math.isclose(got["input_psnr"], 10 * math.log10(1 / (0.25**2 / 2)), abs_tol=1e-3)
    assert math.isclose(plugin.summarize(plugin.metrics(clean + 0.1 / std, {"clean": clean, "input": noisy}))["psnr"],
                        20.0, abs_tol=1e-3)
    assert decoder.psnr_from_mse(0.0) == decoder.MAX_PSNR

    # context encoder: only the hole counts; the mean fill against the same pixels
    plugin = ContextEncoder("random", data_config=CFG)
    target = torch.full((2, 1, 8, 8), (0.6 - 0.286) / std)
    hole = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    hole[:, :, :2] = True  # 16 of 64 pixels per image
    outputs = target.clone()
    outputs[hole] += 0.05 / std
    outputs[~hole] += 0.5 / std  # off the hole: not counted
    got = plugin.summarize(plugin.metrics(outputs, {"target": target, "hole": hole, "weight": hole.float()}))
    assert list(got) == ["hole_psnr", "mean_fill_psnr", "hole_l2"]
    assert math.isclose(got["hole_psnr"], 10 * math.log10(1 / 0.05**2), abs_tol=1e-3)
    assert math.isclose(got["hole_l2"], 0.05**2, rel_tol=1e-4)
    assert math.isclose(got["mean_fill_psnr"], 10 * math.log10(1 / (0.6 - 0.286) ** 2), abs_tol=1e-3)


# --- training ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fmnist_images(fmnist_root):
    from sslzoo.training.data import load_fashion_mnist

    return load_fashion_mnist("train", root=fmnist_root).images[:24]


@pytest.mark.parametrize("name", ["denoising-alexnet", "context-encoder-alexnet", "context-encoder-alexnet.fmnist-central-adv"])
def test_a_few_steps_lower_the_loss_on_fashion_mnist(name, fmnist_images):
    torch.manual_seed(0)
    model = zoo.create(name).train()
    pretext = get_pretext(model.pretext, model).train()
    opt = make_optimizer(model, TrainConfig(warmup_steps=0).with_defaults(dict(pretext.defaults, lr=1e-3)))
    idx = torch.arange(len(fmnist_images))
    inputs, targets = make_batch(fmnist_images, idx, pretext, model.data_config, 0, _gen(), 0)
    losses = []
    for _ in range(6):  # the same batch: the loss must come down
        _, loss = train_step(model, opt, pretext, inputs, targets, bf16=False)
        losses.append(loss.item())
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.9 * losses[0], losses


def test_discriminator_is_train_only_state_with_its_optimiser(fmnist_images, tmp_path):
    torch.manual_seed(0)
    model = zoo.create("context-encoder-alexnet.fmnist-adv").train()
    pretext = get_pretext(model.pretext, model).train()
    opt = make_optimizer(model, TrainConfig().with_defaults(pretext.defaults))
    idx = torch.arange(16)
    inputs, targets = make_batch(fmnist_images[:16], idx, pretext, model.data_config, 0, _gen(), 0)
    before = {k: v.clone() for k, v in pretext.state_dict().items() if torch.is_tensor(v)}
    train_step(model, opt, pretext, inputs, targets, bf16=False)
    state = pretext.state_dict()
    disc = [k for k in state if k.startswith("adversary.disc.")]
    assert disc and any(not torch.equal(state[k], before[k]) for k in disc if k.endswith("weight"))  # it stepped
    adam = state["adversary._extra_state"]
    assert set(adam["state"]) == set(range(len(list(pretext.adversary.disc.parameters()))))  # int keys
    assert adam["param_groups"][0]["lr"] == 2e-4 and tuple(adam["param_groups"][0]["betas"]) == (0.5, 0.999)
    assert not any("adversary" in k or "disc" in k for k in model.state_dict())  # never shipped
    assert not any(p is q for p in pretext.parameters() for g in opt.param_groups for q in g["params"])

    # the checkpoint's nest round-trips it, integer keys included, and training goes on the same
    checkpoint.save(tmp_path / "c.safetensors", {"pretext": state})
    tree, _ = checkpoint.load(tmp_path / "c.safetensors")
    other = get_pretext(model.pretext, model).train()
    other.load_train_state(tree["pretext"])
    got = other.state_dict()["adversary._extra_state"]
    assert set(got["state"]) == set(adam["state"]) and all(isinstance(k, int) for k in got["state"])
    for k, s in adam["state"].items():
        assert all(torch.equal(s[n], got["state"][k][n]) for n in s)
    assert got["param_groups"] == [dict(g, betas=list(g["betas"])) for g in adam["param_groups"]]
    with torch.no_grad():
        fake = model.predict_pretext(inputs).float()
    real = targets["target"]
    fake = torch.where(targets["hole"], fake, real)
    pretext.adversary.step(real, fake)
    other.adversary.step(real, fake)
    a, b = pretext.state_dict(), other.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if torch.is_tensor(a[k]))


def test_cli_trains_the_denoiser_end_to_end(tmp_path, fmnist_root):
    out = tmp_path / "d"
    run_cli("train", "denoising-alexnet", "--out", out, "--limit", "64", "--batch-size", "16", "--epochs", "1",
            "--no-progress", "--precision", "fp32", "--eval-limit", "32", env=ONE_THREAD, check=True)
    model = zoo.load(out / "model")
    pm = model.config["provenance"]["pretext_metric"]
    assert pm["name"] == "psnr" and list(pm["all"]) == ["psnr", "input_psnr"] and pm["higher_is_better"]
    assert 0 < pm["value"] < 60 and 5 < pm["all"]["input_psnr"] < 20
    assert model.config["pretext_args"]["noise"] == "mask"
    assert "dB" in run_cli("info", out / "model", check=True).stdout


TINY_CE = ["--limit", "160", "--batch-size", "16", "--epochs", "1", "--no-progress", "--precision", "fp32",
           "--eval-limit", "32"]


def test_context_encoder_with_the_adversarial_term_kill9_then_resume_is_bit_identical(tmp_path, fmnist_root):
    name = "context-encoder-alexnet.fmnist-adv"
    ref = tmp_path / "ref"
    run_cli("train", name, "--out", ref, "--checkpoint-every", "100", *TINY_CE, env=ONE_THREAD, check=True)
    pm = zoo.load(ref / "model").config["provenance"]["pretext_metric"]
    assert pm["name"] == "hole_psnr" and list(pm["all"]) == ["hole_psnr", "mean_fill_psnr", "hole_l2"]
    assert not any("adversary" in k for k in load_file(ref / "model" / "model.safetensors"))  # not shipped
    assert any(k.startswith("pretext/adversary.disc.") for k in load_file(ref / "checkpoint.safetensors"))

    run = tmp_path / "killed"
    ckpt = run / "checkpoint.safetensors"
    killed_at = train_killed_at([name, "--out", run, "--checkpoint-every", "1", *TINY_CE], ckpt, 3,
                                tmp_path / "killed.log", env=ONE_THREAD)
    assert 3 <= killed_at < 10 and not (run / "model").exists()

    res = run_cli("train", name, "--out", run, "--checkpoint-every", "1", "--resume", *TINY_CE, env=ONE_THREAD,
                  check=True)
    assert f"resumed {ckpt} at step {killed_at}/10" in res.stdout
    a = assert_same_run(ref, run)
    assert any("_extra_state/state/" in k for k in a)  # the discriminator's Adam moments
