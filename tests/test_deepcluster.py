"""DeepCluster's plug-in: pseudo-labels by dataset position, uniform sampling over clusters, the
re-initialised top layer, the loss going down on one epoch's clusters, clear errors, and kill -9
after an epoch boundary then --resume giving the same bits."""
from __future__ import annotations

import json

import pytest
import torch

from sslzoo import zoo
from sslzoo.training import kmeans
from sslzoo.training.loop import TrainConfig, _generator, make_batch, make_optimizer, train_step
from sslzoo.training.pretexts import Batch, Run, get_pretext
from sslzoo.training.pretexts.deepcluster import nmi_table

from .conftest import assert_same_run, run_cli, train_killed_at


@pytest.fixture(scope="module")
def setup(fmnist_root):
    from sslzoo.training.data import load_fashion_mnist

    data = load_fashion_mnist("train", fmnist_root)
    torch.manual_seed(0)
    model = zoo.create("deepcluster-alexnet")
    pt = get_pretext(model.pretext, model)
    run = Run(model, data.images[:400], data.labels[:400], torch.device("cpu"), False, seed=3, log=lambda s: None)
    pt.begin(run)
    return model, pt, run


def test_epoch_start_clusters_and_reinitialises_the_top_layer(setup):
    model, pt, run = setup
    before = model.head.top.weight.clone()
    reset = pt.begin_epoch(run, 0)
    assert reset == [model.head.top.weight, model.head.top.bias]
    assert not torch.equal(model.head.top.weight, before) and torch.count_nonzero(model.head.top.bias) == 0
    assert abs(float(model.head.top.weight.detach().std()) - 0.01) < 0.002
    labels = pt.pseudo_labels
    assert labels.shape == (400,) and int(labels.max()) < pt.k
    # the assignment is k-means on the PCA-whitened, L2-normalised features of the images, in dataset order
    z, _ = kmeans.pca_whiten(pt.cluster_features(run), pt.pca_dim)
    again = kmeans.kmeans(kmeans.l2_normalize(z), pt.k, iters=pt.iters, seed=run.seed * 1_000_003 + 0)
    assert torch.equal(again.assign, labels)
    assert run.history["nmi_to_labels"][-1] == round(kmeans.nmi(labels, run.labels), 4)
    # targets are the pseudo-labels of the batch's dataset positions
    idx = torch.tensor([5, 0, 399, 17])
    _, targets = pt.make_batch(Batch.from_uint8(run.images[idx], idx, model.data_config), None, None)
    assert torch.equal(targets, labels[idx])
    # a second epoch: a new seed, NMI to the previous assignment recorded
    pt.begin_epoch(run, 1)
    assert len(run.history["nmi_to_previous_epoch"]) == 1 and 0 < run.history["nmi_to_previous_epoch"][0] <= 1


def test_epoch_order_samples_clusters_uniformly(setup):
    _, pt, _ = setup
    saved = pt.pseudo_labels
    # 1000 images: cluster 0 holds 900 of them, clusters 1..4 hold 25 each
    pt.pseudo_labels = torch.cat([torch.zeros(900, dtype=torch.long), torch.arange(1, 5).repeat_interleave(25)])
    try:
        order = pt.epoch_order(1000, 0, torch.Generator().manual_seed(0))
        counts = torch.bincount(pt.pseudo_labels[order], minlength=5)
        assert len(order) == 1000 and counts.sum() == 1000
        assert (counts == 200).all(), counts  # every non-empty cluster drawn 1000 / 5 times, whatever its size
        assert torch.equal(order, pt.epoch_order(1000, 0, torch.Generator().manual_seed(0)))
    finally:
        pt.pseudo_labels = saved


def test_a_few_steps_on_one_epochs_clusters_lower_the_loss(setup):
    model, pt, run = setup
    pt.begin_epoch(run, 2)
    model.train()
    opt = make_optimizer(model, TrainConfig(lr=0.1).with_defaults(pt.defaults))
    order = pt.epoch_order(len(run.images), 2, _generator(0, 2))
    losses = []
    for step in range(16):  # two batches of the epoch's order, in turn: their clusters get learnt
        idx = order[(step % 2) * 64:(step % 2 + 1) * 64]
        inputs, targets = make_batch(run.images[idx], idx, pt, model.data_config, 2, _generator(1, step))
        losses.append(train_step(model, opt, pt, inputs, targets, bf16=False)[1].item())
    assert losses[0] == pytest.approx(torch.log(torch.tensor(float(pt.k))).item(), abs=0.5)  # chance at the start
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3, losses


def test_nmi_table_matches_the_label_vectors_nmi():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randint(0, 7, (500,), generator=g), torch.randint(0, 4, (500,), generator=g)
    b[:250] = a[:250] % 4  # some dependence
    table = torch.bincount(a * 4 + b, minlength=28).view(7, 4)
    assert nmi_table(table) == pytest.approx(kmeans.nmi(a, b), abs=1e-9)


def test_too_few_images_is_one_error_before_training(tmp_path, fmnist_root):
    res = run_cli("train", "deepcluster-alexnet", "--limit", "200", "--batch-size", "16", "--out", tmp_path / "dc",
                  "--no-progress")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "200 training images cannot make 300 clusters" in res.stderr
    assert not (tmp_path / "dc" / "checkpoint.safetensors").exists()


TINY = ["deepcluster-alexnet", "--limit", "320", "--batch-size", "32", "--epochs", "2", "--warmup-steps", "2",
        "--eval-limit", "64", "--no-progress", "--precision", "fp32"]


def test_kill9_after_an_epoch_boundary_then_resume_is_bit_identical(tmp_path, fmnist_root):
    ref = tmp_path / "ref"
    run_cli("train", *TINY, "--out", ref, "--checkpoint-every", "100", check=True)
    run = tmp_path / "killed"
    ckpt = run / "checkpoint.safetensors"
    # 10 steps per epoch: killed inside the second epoch
    killed_at = train_killed_at([*TINY, "--out", run, "--checkpoint-every", "2"], ckpt, 12, tmp_path / "killed.log",
                                timeout=300)
    assert 12 <= killed_at < 20
    res = run_cli("train", *TINY, "--out", run, "--checkpoint-every", "2", "--resume", check=True)
    assert f"at step {killed_at}/20" in res.stdout and "epoch 1:" not in res.stdout  # no re-clustering on resume
    assert_same_run(ref, run)
    prov = {d: json.loads((d / "model" / "config.json").read_text())["provenance"] for d in (ref, run)}
    assert prov[ref]["history"] == prov[run]["history"] and len(prov[ref]["history"]["nmi_to_labels"]) == 2
