"""Fashion-MNIST download: the real code path against a real HTTP server on 127.0.0.1."""
from __future__ import annotations

import functools
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
