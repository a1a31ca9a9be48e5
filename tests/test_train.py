"""The training loop: loss goes down, kill -9 + --resume gives the same bits, failures are clean."""
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from sslzoo import zoo
from sslzoo.training.augment import random_crop_flip, random_zoom_out
from sslzoo.training.loop import TrainConfig, evaluate, lr_at, train

from .conftest import assert_same_run, checkpoint_step, run_cli, train_killed_at

TINY = ["--limit", "640", "--batch-size", "16", "--epochs", "1", "--warmup-steps", "4",
        "--eval-limit", "64", "--no-progress", "--precision", "fp32"]


def test_loss_decreases_and_model_dir_is_written(tmp_path, fmnist_root):
    losses = []
    cfg = TrainConfig(out=str(tmp_path / "run"), limit=512, batch_size=32, epochs=3, lr=0.05, warmup_steps=2,
                      eval_limit=128, progress=False, checkpoint_every=1000)
    model_dir = train(cfg, log=losses.append)
    model = zoo.load(model_dir)
    prov = model.config["provenance"]
    pm = prov["pretext_metric"]
    assert pm["name"] == "accuracy" and pm["all"] == {"accuracy": pm["value"]} and pm["higher_is_better"]
    assert prov["steps"] == 48 and 0.25 < pm["value"] <= 1
    # the pretext is learnable from 48 small steps: well above chance (25 %) on held-out images
    assert pm["value"] > 0.5, losses
    # `sslzoo evaluate` re-measures the recorded figure from the saved files alone
    proc = run_cli("evaluate", model_dir, "--limit", "128", "--json", check=True)
    again = json.loads(proc.stdout)
    assert again["images"] == 128 and again["pretext"] == "rotation"
    assert again["metric"] == "accuracy" and round(again["value"], 4) == pm["value"]
    assert evaluate(model_dir, limit=128, precision="fp32")["precision"] == "fp32"


def test_evaluate_errors_are_one_line(tmp_path):
    proc = run_cli("evaluate", tmp_path / "nowhere")
    assert proc.returncode == 1 and proc.stderr.startswith("error:") and "Traceback" not in proc.stderr
    assert "nowhere" in proc.stderr


def test_kill9_then_resume_is_bit_identical(tmp_path, fmnist_root):
    ref = tmp_path / "ref"
    run_cli("train", "--out", ref, "--checkpoint-every", "40", *TINY, check=True)

    run = tmp_path / "killed"
    ckpt = run / "checkpoint.safetensors"
    killed_at = train_killed_at(["--out", run, "--checkpoint-every", "2", *TINY], ckpt, 6, tmp_path / "killed.log")
    assert 6 <= killed_at < 40
    assert not (run / "model").exists()

    res = run_cli("train", "--out", run, "--checkpoint-every", "2", "--resume", *TINY, check=True)
    assert f"resumed {ckpt} at step {killed_at}/40" in res.stdout
    assert_same_run(ref, run)


def test_resume_refuses_other_settings_and_existing_run(tmp_path, fmnist_root):
    out = tmp_path / "r"
    run_cli("train", "--out", out, "--stop-after", "2", "--checkpoint-every", "2", *TINY, check=True)
    again = run_cli("train", "--out", out, *TINY)
    assert again.returncode == 1 and "exists: pass --resume" in again.stderr
    other = run_cli("train", "--out", out, "--resume", *TINY[:-2], "--precision", "bf16")
    assert other.returncode == 1 and "was trained in fp32, but --precision bf16 is bf16" in other.stderr
    assert "Traceback" not in other.stderr
    more = run_cli("train", "--out", out, "--resume", *[("2" if a == "1" else a) for a in TINY])  # --epochs 2
    assert more.returncode == 1 and "different settings (epochs=1.0)" in more.stderr


def test_resume_checks_the_precision_used_not_the_setting(tmp_path, fmnist_root, monkeypatch):
    """A run in bf16 (--precision auto on a CPU with native bf16) resumed where auto means fp32 would
    no longer be bit-identical: refused, naming both; forcing --precision bf16 continues it."""
    from sslzoo.training import _precision
    from sslzoo.training.loop import TrainingError

    cfg = dict(out=str(tmp_path / "run"), limit=128, batch_size=16, epochs=1, warmup_steps=2, eval_limit=16,
               progress=False, checkpoint_every=100, precision="auto")
    monkeypatch.setattr(_precision, "cpu_has_native_bf16", lambda: True)
    train(TrainConfig(**cfg, stop_after=2))
    with safe_open(str(tmp_path / "run" / "checkpoint.safetensors"), "pt") as f:
        assert f.metadata()["precision_used"] == "bf16"
    monkeypatch.setattr(_precision, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(TrainingError, match="was trained in bf16, but --precision auto is fp32"):
        train(TrainConfig(**cfg, stop_after=4), resume=True)
    train(TrainConfig(**dict(cfg, precision="bf16"), stop_after=4), resume=True)
    assert checkpoint_step(tmp_path / "run" / "checkpoint.safetensors") == 4


def test_stop_after_leaves_a_checkpoint_at_that_step_and_export_makes_it_a_model(tmp_path, fmnist_root):
    out = tmp_path / "s"
    res = run_cli("train", "--out", out, "--stop-after", "3", "--checkpoint-every", "100", *TINY, check=True)
    assert checkpoint_step(out / "checkpoint.safetensors") == 3 and "resume with --resume" in res.stdout
    assert not (out / "model").exists()
    res = run_cli("export", out, check=True)
    model = zoo.load(out / "model")  # the checkpoint's weights, measured and saved as train would
    ckpt = load_file(out / "checkpoint.safetensors")
    convs = {k[len("model/"):]: v for k, v in ckpt.items() if k.startswith("model/") and v.dim() == 4}
    assert convs and all(torch.equal(v.half().float(), model.state_dict()[k]) for k, v in convs.items())
    prov = model.config["provenance"]
    assert prov["steps"] == 3 and prov["stopped_at"]["step"] == 3 and prov["stopped_at"]["of"] == 640 // 16
    assert prov["command"] is None and prov["stopped_at"]["exported_with"].startswith("sslzoo export")
    assert prov["pretext_metric"]["split"].startswith("fashion-mnist/test") and "saved" in res.stdout
    bad = run_cli("export", tmp_path / "nowhere")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "nowhere" in bad.stderr + bad.stdout
    cfg = json.loads((out / "train_config.json").read_text())
    (out / "train_config.json").write_text(json.dumps(dict(cfg, model="jigsaw-alexnet")))  # not this checkpoint's model
    bad = run_cli("export", out)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "does not hold a jigsaw-alexnet run" in bad.stderr + bad.stdout


@pytest.mark.parametrize("name", ["jigsaw-alexnet.in1k", "rotation-resnet50.in1k"])
def test_train_refuses_a_model_without_pretext_head_up_front(tmp_path, name):
    """Converted trunks saved without their pretext head: one error line naming what can be trained,
    before any data is read (the data root here does not exist) or anything is written."""
    out = tmp_path / "run"
    res = run_cli("train", name, "--out", out, "--data-root", tmp_path / "no-data", "--no-progress")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.startswith("error:") and res.stderr.strip().count("\n") == 0, res.stderr
    assert "no pretext head" in res.stderr and "rotation-alexnet.fmnist" in res.stderr
    assert name not in res.stderr.split("trainable:")[1]
    assert not out.exists()


def test_train_out_defaults_to_the_models_own_run_dir(tmp_path, fmnist_root):
    run_cli("train", "relative-patch-alexnet", "--stop-after", "1", *TINY, check=True, cwd=tmp_path)
    assert (tmp_path / "runs" / "relative-patch-alexnet" / "checkpoint.safetensors").is_file()
    assert not (tmp_path / "runs" / "rotation-alexnet").exists()


def test_created_model_is_wholly_in_train_mode():
    for name in ("rotation-alexnet", "jigsaw-alexnet", "relative-patch-alexnet"):
        m = zoo.create(name)
        assert all(mod.training for mod in m.modules()), [n for n, mod in m.named_modules() if not mod.training]


def _blow_up(out, checkpoint_every: int):
    """lr ramps by 1 per step (warm-up of 1e8 steps to 1e8): finite at first, then it blows up. In
    training mode BN's running_var overflows (~step 26-28) before the loss turns NaN (~step 31)."""
    res = run_cli("train", "--out", out, "--limit", "512", "--batch-size", "16", "--epochs", "2", "--lr", "1e8",
                  "--warmup-steps", "100000000", "--checkpoint-every", str(checkpoint_every), "--no-progress",
                  "--precision", "fp32")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    state = load_file(out / "checkpoint.safetensors")
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert f"(step {checkpoint_step(out / 'checkpoint.safetensors')}) kept" in res.stderr.replace("\n", "")
    return res.stderr


def test_non_finite_weights_stop_before_a_checkpoint_and_keep_the_last_good_one(tmp_path, fmnist_root):
    err = _blow_up(tmp_path / "nan", checkpoint_every=2)  # a checkpoint is due while the weights are inf
    assert "non-finite weights" in err and "last good checkpoint" in err


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, fmnist_root, monkeypatch):
    """The loss turns NaN at step 6 (injected: which of BN statistics or the loss overflows first under a
    huge lr depends on the torch build): the loop stops there and keeps the step-4 checkpoint."""
    from sslzoo.training.loop import TrainingError
    from sslzoo.training.pretexts import Rotation

    calls = []
    real_loss = Rotation.loss

    def loss(self, outputs, targets):
        calls.append(1)
        value = real_loss(self, outputs, targets)
        return value * float("nan") if len(calls) > 6 else value

    monkeypatch.setattr(Rotation, "loss", loss)
    out = tmp_path / "nan"
    cfg = TrainConfig(out=str(out), limit=256, batch_size=16, epochs=1, warmup_steps=2, progress=False,
                      checkpoint_every=2, precision="fp32")
    with pytest.raises(TrainingError, match=r"non-finite loss \(nan\) at step 6; stopped, last good checkpoint .* \(step 6\) kept"):
        train(cfg)
    assert checkpoint_step(out / "checkpoint.safetensors") == 6 and not (out / "model").exists()
    state = load_file(out / "checkpoint.safetensors")
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_missing_dataset_is_a_clear_error(tmp_path):
    res = run_cli("train", "--out", tmp_path / "x", "--data-root", tmp_path / "nothing-here", "--limit", "64")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "apt-get install dataset-fashion-mnist" in res.stderr


def test_lr_schedule_and_crop_flip():
    cfg = TrainConfig(lr=0.1, warmup_steps=10)
    assert lr_at(0, 100, cfg) == pytest.approx(0.01) and lr_at(9, 100, cfg) == pytest.approx(0.1)
    assert lr_at(55, 100, cfg) == pytest.approx(0.05) and lr_at(100, 100, cfg) == pytest.approx(0.0)
    x = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).repeat(64, 1, 1, 1)
    y = random_crop_flip(x, 1, torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    # every output is a shifted (and maybe mirrored) copy: each output row is a window of an input row
    flipped = (y[:, 0, 1:3, 1:3] == x[:, 0, 1:3, 1:3].flip(-1)).all(-1).all(-1)
    assert flipped.any() and (~flipped).any()
    assert torch.equal(random_crop_flip(x, 1, torch.Generator().manual_seed(0)), y)


def test_zoom_out_borders_the_batch_and_off_is_a_no_op():
    x = torch.full((8, 1, 28, 28), 200, dtype=torch.uint8)
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    assert random_zoom_out(x, 0, gen) is x and torch.equal(gen.get_state(), state)  # off: no draw either
    sizes = set()
    for _ in range(40):
        y = random_zoom_out(x, 3, gen)
        p = (y.shape[-1] - 28) // 2
        sizes.add(p)
        assert y.shape == (8, 1, 28 + 2 * p, 28 + 2 * p)
        assert torch.equal(y[:, :, p:p + 28, p:p + 28], x)  # the image, unscaled, in the middle
        assert int(y.sum()) == int(x.sum())  # and only zeros around it
    assert sizes == {0, 1, 2, 3}
