"""Retrieval (zoo/_retrieval.py) and its demo tab: a test image finds itself first, in feature space
and in raw pixels; indexes come from memory or the disk cache without running the model again;
a corrupt, foreign or misshapen cache file is rebuilt with one warning line; the tab's function
gives 8 captioned images. Indexes here cover the first 500 test images (seconds each on one thread)."""
from __future__ import annotations

import logging
import shutil

import pytest
import torch
from PIL import Image

from sslzoo import zoo
from sslzoo.zoo import _fmnist
from sslzoo.zoo import _retrieval as rt
from sslzoo.zoo._images import open_image

N = 500
ROT = "rotation-alexnet"
BOOT = next(p for p in zoo.example_images() if p.name == "fmnist-0-ankle-boot.png")  # test image 0


@pytest.fixture(scope="module")
def gallery(fmnist_root):
    return _fmnist.load_test(N, root=fmnist_root)


@pytest.fixture(scope="module")
def model(one_thread):
    return zoo.load(ROT)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """A fresh disk cache (also the default one) and nothing in memory, for every test."""
    monkeypatch.setenv(rt.CACHE_ENV, str(tmp_path / "cache"))
    rt.clear_memory()
    yield tmp_path / "cache"
    rt.clear_memory()


class Forwards:
    """Counts the trunk's forward passes (batches) with a hook on its first layer: the real model runs."""

    def __init__(self, model):
        self.n = 0
        self.handle = model.trunk.conv1.register_forward_hook(self._hook)

    def _hook(self, *_):
        self.n += 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def as_png(gallery, i: int) -> Image.Image:
    return Image.fromarray(gallery.images[i, 0].numpy())  # 28 x 28 "L", what a PNG of it decodes to


@pytest.mark.parametrize("tap", ["conv1", "conv3", "conv5", rt.PIXELS])
def test_a_test_image_finds_itself_first(model, gallery, tap):
    for i in (0, 137, N - 1):
        positions, sims = rt.nearest(model, tap, as_png(gallery, i), k=8, gallery=gallery)
        assert positions.shape == sims.shape == (8,)
        assert int(positions[0]) == i and float(sims[0]) == pytest.approx(1.0, abs=1e-4), (tap, i)
        assert float(sims[1]) < float(sims[0]) and bool((sims[:-1] >= sims[1:]).all())  # best first
    positions, sims = rt.nearest(model, tap, open_image(BOOT), gallery=gallery)  # the shipped PNG of test image 0
    assert int(positions[0]) == 0 and float(sims[0]) == pytest.approx(1.0, abs=1e-4)


def test_random_init_and_rgb_input_find_themselves_too(gallery):
    """A random-init model (no weights file: keyed by its weights in memory) and a 3-channel input
    (the gray test images converted to RGB as a query would be)."""
    torch.manual_seed(0)
    random = zoo.create(ROT).eval()
    cfg = dict(random.config, data_config={**random.data_config, "input_size": [3, 96, 96], "channels": "RGB",
                                           "mean": [0.286] * 3, "std": [0.353] * 3}, arch_args={"in_chans": 3})
    rgb = zoo.PretextModel(cfg).eval()
    small = _fmnist.Gallery(gallery.images[:64], gallery.labels[:64], gallery.classes, "first 64", "x" * 64)
    for m in (random, rgb):
        for tap in ("conv4", rt.PIXELS):
            positions, sims = rt.nearest(m, tap, as_png(small, 5).convert("RGB"), gallery=small)
            assert int(positions[0]) == 5 and float(sims[0]) == pytest.approx(1.0, abs=1e-4), (m.name, tap)
    assert rt.fingerprint(random, "conv5") != rt.fingerprint(zoo.load(ROT), "conv5")


def test_disk_cache_is_reused_without_running_the_model(model, gallery, cache):
    batches = -(-N // rt.BATCH)
    with Forwards(model) as fw:
        first = rt.index(model, "conv3", gallery)
        assert first.source == "built" and first.taps_built == model.layers  # every tap in one pass
        assert fw.n == batches and first.vectors.shape == (N, 384)
        assert torch.allclose(first.vectors.norm(dim=1), torch.ones(N))
        assert sorted(p.name for p in cache.rglob("*.safetensors")) == sorted(f"{t}.safetensors" for t in model.layers)
        again = rt.index(model, "conv3", gallery)
        assert again.source == "memory" and again.vectors is first.vectors
        rt.clear_memory()  # as a restarted demo: only the disk cache is left
        for tap in model.layers:
            got = rt.index(model, tap, gallery)
            assert got.source == "disk", tap
        assert fw.n == batches  # not one more forward
        assert torch.equal(rt.index(model, "conv3", gallery).vectors, first.vectors)
    reloaded = zoo.load(ROT)  # another model object with the same weights: the same key
    with Forwards(reloaded) as fw:
        rt.clear_memory()
        assert rt.index(reloaded, "conv5", gallery).source == "disk" and fw.n == 0


def test_second_build_is_much_faster(model, gallery):
    cold = rt.index(model, "conv5", gallery)
    rt.clear_memory()
    warm = rt.index(model, "conv5", gallery)
    assert cold.source == "built" and warm.source == "disk"
    assert warm.seconds < cold.seconds / 5, (cold.seconds, warm.seconds)


def _corrupt(path):
    path.write_bytes(path.read_bytes()[:100])


def _foreign(path):
    shutil.copyfile(path.with_name("conv3.safetensors"), path)  # another tap's index


def _misshapen(path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    save_file({"vectors": torch.ones(10, 256)}, str(path), metadata=meta)  # right key, 10 rows


def _not_safetensors(path):
    path.write_bytes(b"\x00" * 4096)


@pytest.mark.parametrize("damage, says", [(_corrupt, "unreadable"), (_not_safetensors, "unreadable"),
                                          (_foreign, "written for another index (its tap differ)"),
                                          (_misshapen, "expected 500 x D float32")])
def test_a_bad_cache_file_is_rebuilt_with_a_warning(model, gallery, cache, caplog, damage, says):
    good = rt.index(model, "conv5", gallery).vectors
    path = next(cache.rglob("conv5.safetensors"))
    damage(path)
    rt.clear_memory()
    with caplog.at_level(logging.WARNING, logger="sslzoo.retrieval"), Forwards(model) as fw:
        got = rt.index(model, "conv5", gallery)
    assert got.source == "built" and fw.n > 0 and torch.allclose(got.vectors, good, atol=1e-6)
    assert got.taps_built == ("conv5",)  # the other taps' files are fine
    [record] = caplog.records
    assert str(path) in record.getMessage() and says in record.getMessage()
    assert record.getMessage().endswith("; rebuilding it") and "\n" not in record.getMessage()
    assert not record.exc_info
    rt.clear_memory()
    assert rt.index(model, "conv5", gallery).source == "disk"  # the rebuilt file was written back


def test_unwritable_cache_is_a_warning_and_the_index_still_works(model, gallery, tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with caplog.at_level(logging.WARNING, logger="sslzoo.retrieval"):
        idx = rt.index(model, rt.PIXELS, gallery, cache_dir=blocker)
    assert idx.source == "built" and len(idx) == N
    assert any("cannot write it" in r.getMessage() and "memory only" in r.getMessage() for r in caplog.records)
    assert rt.index(model, rt.PIXELS, gallery, cache_dir=blocker).source == "memory"


def test_bad_input_is_one_clear_error(model, gallery, tmp_path):
    with pytest.raises(zoo.ZooError, match=r"has no tap 'fc7'; pick one of conv1, conv2, conv3, conv4, conv5, pixels"):
        rt.nearest(model, "fc7", as_png(gallery, 0), gallery=gallery)
    with pytest.raises(zoo.ZooError, match=r"k must be from 1 to 500"):
        rt.nearest(model, rt.PIXELS, as_png(gallery, 0), k=501, gallery=gallery)
    with pytest.raises(zoo.ZooError, match="apt-get install dataset-fashion-mnist"):
        _fmnist.load_test(root=tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"not idx")
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"not idx")
    with pytest.raises(zoo.ZooError, match="not an IDX file"):
        _fmnist.load_test(root=tmp_path)
    thin = Image.new("L", (1, 30000))
    with pytest.raises(zoo.ZooError, match="too large once resized"):
        rt.nearest(model, rt.PIXELS, thin, gallery=gallery)


def test_precision_at_k_leaves_the_query_out(model):
    """Four images in two labelled pairs of near-copies: each image's nearest *other* image is its pair."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randint(0, 248, (1, 1, 28, 28), generator=g, dtype=torch.uint8) for _ in range(2))
    noise = lambda: torch.randint(0, 8, (1, 1, 28, 28), generator=g, dtype=torch.uint8)  # noqa: E731
    images = torch.cat([a, a + noise(), b, b + noise()])  # 4 x 1 x 28 x 28
    pairs = _fmnist.Gallery(images, torch.tensor([0, 0, 1, 1]), ("a", "b"), "pairs", "p" * 64)
    idx = rt.index(model, rt.PIXELS, pairs)
    assert rt.precision_at_k(idx, k=1).tolist() == [1.0, 1.0, 1.0, 1.0]
    assert rt.precision_at_k(idx, k=3, block=3).tolist() == pytest.approx([1 / 3] * 4)
    with pytest.raises(zoo.ZooError, match="k must be from 1 to 3"):
        rt.precision_at_k(idx, k=4)


def test_demo_tab_returns_8_captioned_images(model, gallery):
    pytest.importorskip("gradio")
    from sslzoo.demo._core import DemoError
    from sslzoo.demo.tabs import retrieval as tab

    view, shown, summary = tab.retrieval(ROT, "conv5", BOOT, gallery=gallery)
    assert isinstance(view, Image.Image) and len(shown) == 8
    assert all(isinstance(img, Image.Image) and img.size == (112, 112) for img, _ in shown)
    assert shown[0][1] == "1. #0 Ankle boot · cos 1.000"  # test image 0 itself
    classes = set(_fmnist.CLASSES)
    for rank, (_, caption) in enumerate(shown, 1):
        head, cos = caption.split(" · cos ")
        assert head.startswith(f"{rank}. #") and head.split(" ", 2)[2] in classes and 0 <= float(cos) <= 1.0005
    assert "built just now" in summary and "conv5" in summary and "Ankle boot" in summary
    _, _, again = tab.retrieval(ROT, "conv5", BOOT, gallery=gallery)
    assert "Index from this process" in again
    _, shown, summary = tab.retrieval(ROT, rt.PIXELS, BOOT, gallery=gallery)
    assert len(shown) == 8 and "raw pixels" in summary
    assert [v for _, v in tab.tap_choices(ROT)] == [*model.layers, rt.PIXELS]
    with pytest.raises(DemoError, match="has no tap 'conv9'"):
        tab.retrieval(ROT, "conv9", BOOT, gallery=gallery)
    with pytest.raises(DemoError, match="upload an image first"):
        tab.retrieval(ROT, "conv5", None, gallery=gallery)
