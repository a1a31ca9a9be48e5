"""Colorization and the split-brain autoencoder: the split trunk, the heads, the colour targets
and metrics, a few real training steps on crops of real photos (scikit-image's), the CLI on a
``photos:PATH`` folder with kill -9 + resume, and the Colorize tab's function."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from sslzoo import zoo
from sslzoo.training.loop import TrainConfig, make_batch, make_optimizer, train_step
from sslzoo.training.pretexts import Batch, Run, get_pretext
from sslzoo.training.pretexts.colorization import _cdf_counts, at_quarter
from sslzoo.zoo import _colour
from sslzoo.zoo.pretexts import colorization as zc
from sslzoo.zoo.pretexts import split_brain as zs

from .conftest import assert_same_run, run_cli, train_killed_at

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "retina")


def _skimage(name: str) -> np.ndarray:
    import skimage.data

    return getattr(skimage.data, name)()[..., :3]  # H x W x 3 uint8


@pytest.fixture(scope="module")
def crops() -> torch.Tensor:
    """32 random 128-px crops of real colour photos, uint8 N x 3 x 128 x 128."""
    rng = np.random.default_rng(0)
    out = []
    for name in PHOTOS[:4]:
        img = _skimage(name)
        for _ in range(8):
            y, x = rng.integers(0, img.shape[0] - 128), rng.integers(0, img.shape[1] - 128)
            out.append(torch.from_numpy(img[y:y + 128, x:x + 128].copy()).permute(2, 0, 1))
    return torch.stack(out)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _plugin(name: str, images: torch.Tensor):
    torch.manual_seed(0)
    model = zoo.create(name).train()
    pretext = get_pretext(model.pretext, model).train()
    pretext.begin(Run(model, images, torch.zeros(len(images), dtype=torch.long), torch.device("cpu"), False, 0,
                      log=lambda s: None))
    return model, pretext


# --- the split trunk ---------------------------------------------------------------------------------

def test_split_trunk_concatenates_two_half_width_halves_on_disjoint_channels():
    model = zoo.create("split-brain-alexnet").eval()
    trunk = model.trunk
    assert trunk.l.conv1.conv.out_channels == 32 and trunk.ab.conv5.conv.out_channels == 128
    x = torch.rand(2, 3, 96, 96)
    taps = model.features(x, model.layers)
    for n in ("conv1", "conv3", "conv5"):
        assert torch.equal(taps[n], torch.cat([taps[f"l_{n}"], taps[f"ab_{n}"]], 1))
    assert taps["conv5"].shape[1] == 256 and taps["conv3"].shape[1] == 384  # AlexNet's widths in all
    # the L half sees L only: the image's gray version (same L, no chroma) leaves it; the ab half sees it
    lab = _colour.rgb_to_lab(x)
    gray = _colour.lab_to_rgb(torch.cat([lab[:, :1], torch.zeros_like(lab[:, 1:])], 1))
    assert torch.allclose(_colour.rgb_to_lab(gray)[:, 0], lab[:, 0], atol=0.01)
    other = model.features(gray, ("l_conv2", "ab_conv2"))
    assert torch.allclose(other["l_conv2"], taps["l_conv2"], atol=1e-2)
    assert not torch.allclose(other["ab_conv2"], taps["ab_conv2"], atol=1e-2)
    # on gray input the ab half sees zero chroma: any two gray images look the same to it
    g1, g2 = torch.rand(1, 1, 96, 96).expand(1, 3, 96, 96), torch.rand(1, 1, 96, 96).expand(1, 3, 96, 96)
    f1, f2 = model.features(g1, ("ab_conv5", "l_conv5")), model.features(g2, ("ab_conv5", "l_conv5"))
    assert torch.equal(f1["ab_conv5"], f2["ab_conv5"])  # exactly: no L leaks through the conversion's rounding
    assert (model.trunk.ab.front(g1) == 0).all()
    assert not torch.allclose(f1["l_conv5"], f2["l_conv5"], atol=1e-2)
    # pool5 is both halves' pool5, and a tap of one half does not run the other
    assert trunk(x).shape == (2, 256, 2, 2)
    with pytest.raises(ValueError, match="unknown layer"):
        model.features(x, ("cd_conv1",))


def test_heads_predict_bins_at_a_quarter_of_the_input():
    x = torch.rand(2, 3, 96, 96)
    col = zoo.create("colorization-alexnet").eval()
    K = len(_colour.ab_bins())
    assert col.predict_pretext(x).shape == (2, K, 24, 24)
    sb = zoo.create("split-brain-alexnet").eval()
    out = sb.predict_pretext(x)
    assert out["ab"].shape == (2, K, 24, 24) and out["L"].shape == (2, 50, 24, 24)
    assert "bins" not in dict(col.state_dict())  # rebuilt from the grid, not stored with the weights
    with pytest.raises(ValueError, match="split trunk"):
        zs.build_head(col.trunk, (3, 96, 96))


# --- targets, loss, metrics ---------------------------------------------------------------------------

def test_targets_weights_and_the_prior(crops):
    model, pt = _plugin("colorization-alexnet", crops)
    assert torch.isclose(pt.prior.sum(), torch.tensor(1.0, dtype=torch.float64))
    p = _colour.smooth_prior(pt.prior, pt.bins)
    assert abs(float((p * pt.bin_weight.double()).sum()) - 1) < 1e-5  # E_p~[w] = 1
    gray = crops[:4].float().mean(1, keepdim=True).round().to(torch.uint8).expand(4, 3, 128, 128)
    x = torch.cat([crops[:4], gray])
    inputs, t = pt.make_batch(Batch.from_uint8(x, torch.arange(8), model.data_config), _gen(), None)
    assert inputs.shape == (8, 3, 96, 96) and t["index"].shape == (8, 5, 24, 24)
    assert torch.allclose(t["weight"].sum(1), torch.ones(8, 24, 24), atol=1e-5)
    assert (t["pixel_weight"][4:] == 0).all() and (t["pixel_weight"][:4] > 0).all()  # gray images weigh 0
    # the nearest bin of each pixel is the target's first, and its weight the largest
    lab = _colour.rgb_to_lab(inputs.float())
    assert torch.equal(t["index"][:, 0], _colour.nearest_bin(at_quarter(lab[:, 1:]), pt.bins))
    assert (t["weight"][:, 0] >= t["weight"][:, 1:].max(1).values - 1e-6).all()


def test_loss_and_metrics_on_a_hand_example(crops):
    model, pt = _plugin("colorization-alexnet", crops)
    inputs, t = pt.make_batch(Batch.from_uint8(crops[:4], torch.arange(4), model.data_config), _gen(), None)
    K = len(pt.bins)
    perfect = torch.full((4, K, 24, 24), -30.0).scatter_(1, t["index"][:, :1], 30.0)
    sums = pt.metrics(perfect, t)
    m = pt.summarize(sums)
    assert list(m)[0] == "ab_accuracy" and m["ab_accuracy"] == 1.0 and m["ab_accuracy_rebalanced"] == 1.0
    # the annealed mean of a one-bin distribution is that bin: every error <= 5 * sqrt(2) (half a cell's diagonal)
    assert m["ab_auc"] > 1 - 8 / 151 and 0 < m["prior_mode_auc"] < m["ab_auc"]
    # hand AuC: errors 0 and 10 of two pixels -> counts 1 at t < 10, 2 from t = 10; mean share
    cdf = _cdf_counts(torch.tensor([[[[0.0, 6.0]], [[0.0, 8.0]]]]), torch.zeros(1, 2, 1, 2))
    assert cdf[0] == 1 and cdf[9] == 1 and cdf[10] == 2 and cdf[150] == 2
    # the loss: soft cross-entropy, pixel-weighted: least for the soft targets themselves, more for a
    # uniform guess, most for a confident wrong one
    soft = _colour.densify(t["index"], t["weight"], K).clamp_min(1e-6).log()
    wrong = perfect.roll(7, dims=1)
    assert pt.loss(soft, t) < pt.loss(perfect, t) and pt.loss(soft, t) < pt.loss(torch.zeros_like(perfect), t) < pt.loss(wrong, t)
    t0 = dict(t, pixel_weight=torch.zeros_like(t["pixel_weight"]))
    assert pt.loss(wrong, t0) == 0  # all weight 0 (gray images): nothing to learn


@pytest.mark.parametrize("name", ["colorization-alexnet", "split-brain-alexnet"])
def test_a_few_steps_lower_the_loss_on_real_photos(name, crops, one_thread):
    model, pt = _plugin(name, crops)
    opt = make_optimizer(model, TrainConfig(warmup_steps=0).with_defaults(pt.defaults))
    inputs, targets = make_batch(crops[:16], torch.arange(16), pt, model.data_config, 0, _gen(), 0)
    losses = []
    for _ in range(6):  # the same batch: the loss must come down
        _, loss = train_step(model, opt, pt, inputs, targets, bf16=False)
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses
    if name == "split-brain-alexnet":  # each half learns from its own term only
        opt.zero_grad(set_to_none=True)
        ab_only = pt.ab_loss(model.predict_pretext(inputs)["ab"], targets)
        ab_only.backward()
        assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.trunk.ab.parameters())
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.trunk.l.parameters())


def test_begin_refuses_a_set_of_gray_images(crops):
    gray = crops[:8].float().mean(1, keepdim=True).round().to(torch.uint8).expand(8, 3, 128, 128).contiguous()
    with pytest.raises(ValueError, match="gray"):
        _plugin("colorization-alexnet", gray)


# --- the CLI on a photos:PATH folder, kill -9 + resume -----------------------------------------------

@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("my-photos")
    for name in PHOTOS:
        Image.fromarray(_skimage(name)).save(root / f"{name}.png")
    return root


TINY = ["--limit", "96", "--batch-size", "8", "--epochs", "1", "--no-progress", "--precision", "fp32",
        "--eval-limit", "16"]


@pytest.mark.parametrize("name", ["colorization-alexnet", "split-brain-alexnet"])
def test_cli_trains_on_a_photo_folder_and_kill9_then_resume_is_bit_identical(name, photo_folder, tmp_path):
    env = dict(ONE_THREAD, SSLZOO_DATA=str(tmp_path / "data"))
    data = ["--data", f"photos:{photo_folder}"]
    ref = tmp_path / "ref"
    run_cli("train", name, "--out", ref, "--checkpoint-every", "100", *data, *TINY, env=env, check=True)
    model = zoo.load(ref / "model")
    pm = model.config["provenance"]["pretext_metric"]
    assert pm["name"] == "ab_accuracy" and pm["split"] == f"photos:{photo_folder}/test[:16]" and 0 <= pm["value"] <= 1
    assert {"ab_accuracy_rebalanced", "ab_auc", "prior_mode_auc"} <= set(pm["all"])
    assert ("l_accuracy" in pm["all"]) == (name == "split-brain-alexnet")
    ckpt_keys = load_file(ref / "checkpoint.safetensors")
    assert "pretext/prior" in ckpt_keys and "pretext/bin_weight" in ckpt_keys  # plug-in state, checkpointed
    assert not any("prior" in k for k in load_file(ref / "model" / "model.safetensors"))  # never shipped

    run = tmp_path / "killed"
    ckpt = run / "checkpoint.safetensors"
    killed_at = train_killed_at([name, "--out", run, "--checkpoint-every", "1", *data, *TINY], ckpt, 3,
                                tmp_path / "killed.log", env=env)
    assert 3 <= killed_at < 12 and not (run / "model").exists()
    res = run_cli("train", name, "--out", run, "--checkpoint-every", "1", "--resume", *data, *TINY, env=env,
                  check=True)
    assert f"resumed {ckpt} at step {killed_at}/12" in res.stdout
    assert_same_run(ref, run)


# --- inference and the demo ---------------------------------------------------------------------------

def test_colorize_and_lightness_from_ab_keep_the_inputs_own_channels():
    torch.manual_seed(0)
    model = zoo.create("split-brain-alexnet").eval()
    x = torch.from_numpy(_skimage("coffee")[:200, :260].copy()).permute(2, 0, 1).float() / 255
    out = zc.colorize(model, x, 0.2)
    assert out["colorized"].shape == x.shape and out["ab"].shape == (2, 200, 260)
    lab_in, lab_out = _colour.rgb_to_lab(x[None]), _colour.rgb_to_lab(out["colorized"][None])
    inside = (out["colorized"] > 0.01).all(0) & (out["colorized"] < 0.99).all(0)  # not clipped by the gamut
    assert (lab_in[0, 0] - lab_out[0, 0]).abs()[inside].max() < 0.5  # the L is the input's own
    assert _colour.rgb_to_lab(out["gray"][None])[0, 1:].abs().max() < 0.5  # the L channel shown is gray
    half = zs.lightness_from_ab(model, x)
    assert half["L"].shape == (200, 260) and 0 <= half["L"].min() and half["L"].max() <= 100
    with pytest.raises(ValueError, match="temperature"):
        zc.colorize(model, x, 0.0)
    with pytest.raises(ValueError, match="split-brain"):
        zs.lightness_from_ab(zoo.create("colorization-alexnet"), x)
