"""Multi-task: one trunk under the heads of rotation, relative patch, jigsaw and exemplar; each task's
view of the model; the lasso mix; a few real training steps; the CLI with kill -9 + resume; the
model in its tasks' demo tabs."""
from __future__ import annotations


import pytest
import torch
from safetensors.torch import load_file

from sslzoo import zoo
from sslzoo.training.loop import TrainConfig, make_batch, make_optimizer, train_step
from sslzoo.training.pretexts import Run, get_pretext
from sslzoo.zoo._errors import ZooError
from sslzoo.zoo._registry import MULTI_TASKS
from sslzoo.zoo._validate import check_config

from .conftest import assert_same_run, run_cli, train_killed_at

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
NAME = "multi-task-alexnet"


@pytest.fixture(scope="module")
def images(fmnist_root):
    from sslzoo.training.data import load_fashion_mnist

    ds = load_fashion_mnist("train", root=fmnist_root)
    return ds.images[:256], ds.labels[:256]


def _setup(name, images):
    torch.manual_seed(0)
    model = zoo.create(name).train()
    pt = get_pretext(model.pretext, model).train()
    x, y = images
    pt.begin(Run(model, x, y, torch.device("cpu"), False, 0, log=lambda s: None))
    return model, pt


def _batch(model, pt, x, n=16, seed=0):
    return make_batch(x[:n], torch.arange(n), pt, model.data_config, 0, torch.Generator().manual_seed(seed), 0)


def test_every_task_trains_the_one_trunk_and_only_its_own_head(images, one_thread):
    model, pt = _setup(NAME, images)
    assert model.pretexts == tuple(MULTI_TASKS) and pt.weights == {t: 1.0 for t in MULTI_TASKS}
    inputs, targets = _batch(model, pt, images[0])
    assert set(inputs) == set(MULTI_TASKS)
    outputs = model.predict_pretext(inputs)
    for task in MULTI_TASKS:
        model.zero_grad(set_to_none=True)
        pt.tasks[task].loss(outputs[task], targets[task]).backward(retain_graph=True)
        trunk_grad = sum(p.grad.abs().sum() for p in model.trunk.parameters() if p.grad is not None)
        assert trunk_grad > 0, task  # the shared trunk gets this task's gradient
        for other, head in model.head.heads.items():
            got = any(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
            assert got == (other == task), (task, other)
    total = pt.loss(outputs, targets)
    assert torch.isclose(total, sum(pt.tasks[t].loss(outputs[t], targets[t]) for t in MULTI_TASKS))


def test_a_task_view_shares_the_trunk_and_answers_that_task(images):
    model, pt = _setup(NAME, images)
    model.eval()
    rot = model.for_pretext("rotation")
    assert rot.trunk is model.trunk and rot.pretexts == ("rotation",) and rot.name == model.name
    assert model.pretexts == tuple(MULTI_TASKS) and model.head.pretexts == tuple(MULTI_TASKS)  # the model is untouched
    x = torch.rand(4, 1, 96, 96)
    assert torch.equal(rot.predict_pretext(x), model.predict_pretext({"rotation": x})["rotation"])
    jig = model.for_pretext("jigsaw")
    assert torch.equal(jig.head.permutations, model.head.heads["jigsaw"].permutations) and jig.head.cell == 76
    assert get_pretext("jigsaw", jig).permutations.shape == (1000, 9)
    with pytest.raises(ValueError, match="cannot predict 'denoising'"):
        model.for_pretext("denoising")
    with pytest.raises(ValueError, match="no head for task"):
        model.predict_pretext({"counting": x})
    assert zoo.create("rotation-alexnet").for_pretext("rotation").pretexts == ("rotation",)


def test_config_checks_every_tasks_arguments():
    cfg = zoo.create(NAME).config
    bad_task = {**cfg, "pretext_args": {**cfg["pretext_args"], "tasks": {"rotation": {}, "multi-task": {}}}}
    with pytest.raises(ZooError, match="tasks.multi-task"):
        check_config(bad_task, "config.json")
    bad_arg = {**cfg, "pretext_args": {**cfg["pretext_args"], "tasks": {"rotation": {"hiden": 5}}}}
    with pytest.raises(ZooError, match="hiden"):
        check_config(bad_arg, "config.json")
    bad_weight = {**cfg, "pretext_args": {**cfg["pretext_args"], "weights": {"rotation": -1}}}
    with pytest.raises(ZooError, match="weights.rotation"):
        check_config(bad_weight, "config.json")
    with pytest.raises(ValueError, match="does not have"):
        from sslzoo.zoo.pretexts import multi_task
        multi_task.build_head(zoo.create("rotation-alexnet").trunk, (1, 96, 96), {"rotation": {}}, {"jigsaw": 2.0})


def test_lasso_starts_as_the_plain_model_and_its_penalty_is_in_the_loss(images, one_thread):
    model, pt = _setup(NAME + ".fmnist-lasso", images)
    model.eval()
    x = torch.rand(2, 1, 96, 96)
    mix = model.head.task_trunk(model.trunk, "rotation")
    assert torch.allclose(mix(x), model.trunk(x))  # alpha = (0, 0, 0, 0, 1): pool5 itself
    model.train()
    inputs, targets = _batch(model, pt, images[0])
    opt = make_optimizer(model, TrainConfig(warmup_steps=0).with_defaults(pt.defaults))
    alpha0 = model.head.mixers["jigsaw"].alpha.detach().clone()
    train_step(model, opt, pt, inputs, targets, bf16=False)
    assert not torch.equal(model.head.mixers["jigsaw"].alpha, alpha0)  # the mix learns
    with torch.no_grad():
        out = model.predict_pretext(inputs)
        plain = sum(pt.tasks[t].loss(out[t], targets[t]) for t in MULTI_TASKS)
        penalty = sum(m.alpha.abs().sum() for m in model.head.mixers.values())
        assert torch.isclose(pt.loss(out, targets), plain + 1e-3 * penalty)


def test_a_few_steps_lower_the_loss(images, one_thread):
    model, pt = _setup(NAME, images)
    opt = make_optimizer(model, TrainConfig(warmup_steps=0).with_defaults(pt.defaults))
    inputs, targets = _batch(model, pt, images[0], n=24)
    losses = [train_step(model, opt, pt, inputs, targets, bf16=False)[1].item() for _ in range(5)]
    assert losses[-1] < 0.8 * losses[0], losses
    pt.eval()
    inputs, targets = _batch(model, pt, images[0], n=24)
    assert "exemplar" not in inputs  # its classes are training images: not measured on a held-out split
    with torch.no_grad():
        metrics = pt.summarize(pt.metrics(model.eval().predict_pretext(inputs), targets))
    accs = [metrics[f"{t}/accuracy"] for t in ("rotation", "relative-patch", "jigsaw")]
    assert list(metrics)[0] == "mean_accuracy" and metrics["mean_accuracy"] == pytest.approx(sum(accs) / 3)


TINY = ["--limit", "96", "--batch-size", "8", "--epochs", "1", "--no-progress", "--precision", "fp32",
        "--eval-limit", "16"]


def test_cli_kill9_then_resume_is_bit_identical(tmp_path, fmnist_root):
    ref = tmp_path / "ref"
    run_cli("train", NAME, "--out", ref, "--checkpoint-every", "100", *TINY, env=ONE_THREAD, check=True)
    model = zoo.load(ref / "model")
    pm = model.config["provenance"]["pretext_metric"]
    assert pm["name"] == "mean_accuracy" and {"rotation/accuracy", "jigsaw/accuracy"} <= set(pm["all"])
    assert model.pretexts == tuple(MULTI_TASKS)
    ckpt_keys = load_file(ref / "checkpoint.safetensors")
    assert any(k.startswith("pretext/tasks.exemplar.") for k in ckpt_keys)  # the seeds travel with the run

    run = tmp_path / "killed"
    ckpt = run / "checkpoint.safetensors"
    killed_at = train_killed_at([NAME, "--out", run, "--checkpoint-every", "1", *TINY], ckpt, 3,
                                tmp_path / "killed.log", env=ONE_THREAD)
    assert 3 <= killed_at < 12 and not (run / "model").exists()
    res = run_cli("train", NAME, "--out", run, "--checkpoint-every", "1", "--resume", *TINY, env=ONE_THREAD,
                  check=True)
    assert f"resumed {ckpt} at step {killed_at}/12" in res.stdout
    assert_same_run(ref, run)


def test_the_model_is_offered_in_each_of_its_tasks_tabs(tmp_path, monkeypatch):
    from sslzoo.demo import _core
    from sslzoo.demo.tabs import jigsaw as jigsaw_tab
    from sslzoo.demo.tabs import rotation as rotation_tab

    torch.manual_seed(0)
    d = str(zoo.save_pretrained(zoo.create(NAME).eval(), tmp_path / "mt", card="# multi-task (made by the test)\n"))
    monkeypatch.setenv(_core.MODELS_ENV, d)
    for task in MULTI_TASKS:
        assert d in _core.models_for(task), task
    assert d not in _core.models_for("denoising")
    boot = zoo.example_images()[0]
    turned, probs, *_ = rotation_tab.rotation(d, boot, 90)
    assert set(probs) == set(rotation_tab.ANGLE_LABELS) and abs(sum(probs.values()) - 1) < 1e-4
    assert jigsaw_tab.TAB.models() and d in jigsaw_tab.TAB.models()
