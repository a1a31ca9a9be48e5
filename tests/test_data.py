"""Fashion-MNIST download: the real code path against a real HTTP server on 127.0.0.1."""
from __future__ import annotations

import functools
import json
import http.server
import shutil
import socket
import threading

import pytest
import torch

from sslzoo.training.data import DataError, load_fashion_mnist


@pytest.fixture
def http_dir(tmp_path):
    """A directory served over HTTP on 127.0.0.1; yields (dir, base URL)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_download_matches_the_installed_files(fmnist_root, http_dir, tmp_path, monkeypatch):
    served, url = http_dir
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(fmnist_root / name, served / name)
    monkeypatch.setenv("SSLZOO_FMNIST_URL", url)
    root = tmp_path / "data"
    got = load_fashion_mnist("test", root)
    want = load_fashion_mnist("test", fmnist_root)
    assert got.images.shape == (10000, 1, 28, 28)
    assert torch.equal(got.images, want.images) and torch.equal(got.labels, want.labels)
    assert sorted(p.name for p in root.iterdir()) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    shutil.rmtree(served)  # a second load reads the downloaded files, no server needed
    served.mkdir()
    assert torch.equal(load_fashion_mnist("test", root).labels, want.labels)


def test_a_corrupt_download_is_an_error_and_leaves_nothing(fmnist_root, http_dir, tmp_path, monkeypatch):
    served, url = http_dir
    shutil.copy(fmnist_root / "t10k-images-idx3-ubyte.gz", served / "t10k-images-idx3-ubyte.gz")
    (served / "t10k-labels-idx1-ubyte.gz").write_bytes(b"<html>not found</html>")  # a captive portal, say
    monkeypatch.setenv("SSLZOO_FMNIST_URL", url)
    root = tmp_path / "data"
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.*dataset-fashion-mnist"):
        load_fashion_mnist("test", root)
    assert [p.name for p in root.iterdir()] == ["t10k-images-idx3-ubyte.gz"]  # the good one is kept


def test_no_server_is_an_error_naming_the_place(tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("SSLZOO_FMNIST_URL", f"http://127.0.0.1:{port}/")
    with pytest.raises(DataError, match=f"{tmp_path / 'data'}.*--data-root"):
        load_fashion_mnist("train", tmp_path / "data")


# --- channels and held-out splits ------------------------------------------------------------------

def test_convert_channels_is_pils_luma_and_a_repeat():
    import numpy as np
    from PIL import Image

    from sslzoo.zoo._transforms import convert_channels

    rgb = torch.randint(0, 256, (2, 3, 17, 23), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    rgb[0, :, 0, :3] = torch.tensor([[0, 255, 255], [0, 255, 0], [0, 255, 0]], dtype=torch.uint8)  # black, white, red
    gray = convert_channels(rgb, "L")
    want = np.stack([np.array(Image.fromarray(img.permute(1, 2, 0).numpy()).convert("L")) for img in rgb])
    assert gray.shape == (2, 1, 17, 23) and np.array_equal(gray[:, 0].numpy(), want)
    back = convert_channels(gray, "RGB")
    assert back.shape == (2, 3, 17, 23) and all(torch.equal(back[:, c], gray[:, 0]) for c in range(3))
    assert convert_channels(rgb, "RGB") is rgb


def test_normalize_refuses_a_gray_batch_for_a_colour_model():
    from sslzoo.zoo._transforms import normalize

    rgb_cfg = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "channels": "RGB"}
    with pytest.raises(ValueError, match="1-channel batch for a model that takes 3"):
        normalize(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), rgb_cfg)
    assert normalize(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), rgb_cfg).shape == (2, 3, 8, 8)


def test_fashion_mnist_comes_in_the_data_configs_channels(fmnist_root):
    from sslzoo.training.data import load_dataset

    gray = load_dataset("fashion-mnist", "test", root=fmnist_root, data_config={"channels": "L"})
    rgb = load_dataset("fashion-mnist", "test", root=fmnist_root, data_config={"channels": "RGB"})
    assert gray.images.shape[1:] == (1, 28, 28) and rgb.images.shape[1:] == (3, 28, 28)
    assert all(torch.equal(rgb.images[:, c], gray.images[:, 0]) for c in range(3))


def _folder(root, per_class=10):
    from PIL import Image

    for k, cls in enumerate(("cat", "dog")):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            Image.new("L", (8, 8), 10 * i + 100 * k).save(root / cls / f"{i}.png")
    return root


def test_imagefolder_without_test_holds_out_a_seeded_split(tmp_path):
    from sslzoo.training.data import load_dataset

    root = _folder(tmp_path / "imgs")
    cfg = {"input_size": [1, 8, 8], "channels": "L", "mean": [0.5], "std": [0.5]}
    train = load_dataset(f"imagefolder:{root}", "train", data_config=cfg)
    test = load_dataset(f"imagefolder:{root}", "test", data_config=cfg)
    assert len(train) == 18 and len(test) == 2  # 10 % of 20 held out
    assert "held-out 10% (seed 0)" in test.name and "all but the held-out" in train.name
    rows = lambda s: {tuple(x.flatten().tolist()) + (int(y),) for x, y in zip(s.images, s.labels)}  # noqa: E731
    assert not rows(train) & rows(test) and len(rows(train) | rows(test)) == 20  # disjoint, everything used
    again = load_dataset(f"imagefolder:{root}", "test", data_config=cfg)
    assert torch.equal(again.images, test.images)  # the same split every time


def test_imagefolder_with_train_and_test_uses_them(tmp_path):
    from sslzoo.training.data import load_dataset

    _folder(tmp_path / "imgs" / "train")
    _folder(tmp_path / "imgs" / "test", per_class=3)
    cfg = {"input_size": [1, 8, 8], "channels": "L", "mean": [0.5], "std": [0.5]}
    test = load_dataset(f"imagefolder:{tmp_path / 'imgs'}", "test", data_config=cfg)
    assert len(test) == 6 and "held-out" not in test.name


def test_train_on_an_imagefolder_never_calls_training_images_a_test_split(tmp_path):
    from .conftest import run_cli

    root = _folder(tmp_path / "imgs", per_class=40)
    out = tmp_path / "run"
    run_cli("train", "--data", f"imagefolder:{root}", "--out", out, "--batch-size", "16", "--epochs", "1",
            "--warmup-steps", "1", "--no-progress", "--precision", "fp32", check=True)
    prov = json.loads((out / "model" / "config.json").read_text())["provenance"]
    assert "held-out 10% (seed 0)" in prov["pretext_metric"]["split"]
    assert "all but the held-out" in prov["dataset"] and prov["train_images"] == 72
