"""Streaming feature extraction: equality with a direct forward, output formats, skipped inputs,
resume after an interruption and after kill -9, and the ``sslzoo extract`` command."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from sslzoo import zoo
from sslzoo.cli import app
from sslzoo.zoo._extract import extract, partial_dir, paths_file, read_npy
from sslzoo.zoo._images import open_image
from sslzoo.zoo._transforms import normalize, to_uint8_tensor

EXAMPLES = zoo.example_images()
# One intra-op thread, here and in the subprocesses: on 2 busy cores torch's spinning OpenMP
# threads, the decode threads and other jobs oversubscribe the CPU and a forward gets 10x slower.
ONE_THREAD = dict(os.environ, OMP_NUM_THREADS="1")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """An untrained model saved in Hub layout (the pretrained weights may not exist yet)."""
    directory = tmp_path_factory.mktemp("model")
    zoo.save_pretrained(zoo.load("rotation-alexnet", pretrained=False), directory, card="test model\n")
    return directory


@pytest.fixture(scope="module")
def model(model_dir):
    return zoo.load(model_dir)


def _read(path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    with safe_open(path, framework="numpy") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def _direct(model, paths, layers, pool) -> dict[str, torch.Tensor]:
    """The reference: preprocess every image, one forward, pool."""
    cfg = model.data_config
    x = normalize(torch.stack([to_uint8_tensor(open_image(p), cfg) for p in paths]), cfg)  # N x C x H x W
    with torch.inference_mode():
        maps = model.features(x, layers)
    pooled = {"avg": lambda t: t.mean((2, 3)), "max": lambda t: t.amax((2, 3)), "none": lambda t: t.flatten(1)}[pool]
    return {l: pooled(maps[l]) for l in layers}


def _bad_files(directory):
    (directory / "text.jpg").write_text("not an image\n")
    data = EXAMPLES[0].read_bytes()
    (directory / "cut.jpg").write_bytes(data[: len(data) // 3])
    return [directory / "text.jpg", directory / "cut.jpg"]


@pytest.mark.parametrize("pool", ["avg", "max", "none"])
def test_matches_direct_forward(model, tmp_path, pool):
    paths = EXAMPLES[::-1]  # not sorted: the output keeps the input order
    layers = ("conv2", "conv5")
    res = extract(model, paths, layers=layers, pool=pool, batch_size=3, out=tmp_path / "f.safetensors")
    tensors, meta = _read(res.out)
    want = _direct(model, paths, layers, pool)
    assert json.loads(meta["paths"]) == [str(p) for p in paths]
    assert json.loads(meta["layers"]) == list(layers) and meta["pool"] == pool and meta["model"] == model.name
    for l in layers:
        assert tensors[l].dtype == np.float32 and tensors[l].shape == tuple(want[l].shape) == (8, res.dims[l])
        np.testing.assert_allclose(tensors[l], want[l].numpy(), rtol=1e-4, atol=1e-5)
    assert res.n_done == 8 and res.skipped == [] and not partial_dir(res.out).exists()


def test_npy_and_skipped(model, tmp_path):
    bad = _bad_files(tmp_path)
    paths = [EXAMPLES[0], bad[0], *EXAMPLES[1:4], bad[1]]
    errors = []
    res = extract(model, paths, layers="conv4", out=tmp_path / "f.npy", batch_size=2, on_error=errors.append)
    assert [p for p, _ in res.skipped] == [str(b) for b in bad] == [e.path for e in errors]
    assert "not an image" in res.skipped[0][1] and "truncated" in res.skipped[1][1]
    arr, meta = read_npy(res.out)
    assert arr.shape == (4, 256) and arr.dtype == np.float32
    assert meta["paths"] == [str(p) for p in EXAMPLES[:4]] and meta["rows"] == 4 and meta["layer"] == "conv4"
    assert [p for p, _ in meta["skipped"]] == [str(b) for b in bad] and meta["recovered"] == []
    assert json.loads(paths_file(res.out).read_text(encoding="utf-8")) == meta
    np.testing.assert_array_equal(np.load(res.out), arr)
    np.testing.assert_allclose(arr, _direct(model, EXAMPLES[:4], ["conv4"], "avg")["conv4"].numpy(), rtol=1e-4, atol=1e-5)


def test_refusals(model, tmp_path):
    out = tmp_path / "f.npy"
    with pytest.raises(zoo.ZooError, match="one array"):
        extract(model, EXAMPLES, layers=("conv1", "conv5"), out=out)
    with pytest.raises(zoo.ZooError, match="no layer"):
        extract(model, EXAMPLES, layers=("fc7",), out=out)
    with pytest.raises(zoo.ZooError, match="no input"):
        extract(model, [], out=out)
    with pytest.raises(zoo.ZooError, match="none of the 2 inputs"):
        extract(model, _bad_files(tmp_path), out=out, on_error=lambda e: None)
    assert not out.exists() and not partial_dir(out).exists()


def test_resume_in_process(model, tmp_path):
    """An interrupted run keeps its finished chunks; a resume computes only the rest and checks
    that the inputs are the same."""
    out = tmp_path / "f.safetensors"
    paths = [*EXAMPLES[:4], *_bad_files(tmp_path)[:1], *EXAMPLES[4:]]  # the bad file is in chunk 1

    def interrupt(e):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract(model, paths, batch_size=4, out=out, on_error=interrupt)
    assert not out.exists() and (partial_dir(out) / "chunk-000000.safetensors").is_file()
    with pytest.raises(zoo.ZooError, match="different inputs"):
        extract(model, paths[::-1], batch_size=4, out=out, resume=True)
    with pytest.raises(zoo.ZooError, match="other options"):
        extract(model, paths, batch_size=4, pool="max", out=out, resume=True)
    res = extract(model, paths, batch_size=4, out=out, resume=True, on_error=lambda e: None)
    assert res.n_computed == 5 and res.n_done == 8 and len(res.skipped) == 1
    fresh = extract(model, paths, batch_size=4, out=tmp_path / "g.safetensors", on_error=lambda e: None)
    assert _read(res.out)[1]["paths"] == _read(fresh.out)[1]["paths"]
    np.testing.assert_array_equal(_read(res.out)[0]["conv5"], _read(fresh.out)[0]["conv5"])


def test_cli_skips_exit_3(model_dir, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    bad = _bad_files(images)
    (images / "readme.txt").write_text("directories keep image extensions only\n")
    out = tmp_path / "f.safetensors"
    result = CliRunner().invoke(app, ["extract", str(model_dir), str(images), "--examples", "--layer", "conv3",
                                      "--layer", "conv5", "--out", str(out), "--json", "--no-progress"])
    assert result.exit_code == 3, result.output
    summary = json.loads(result.stdout)
    assert summary["n_images"] == 8 and summary["layers"] == {"conv3": 384, "conv5": 256}
    assert sorted(s["path"] for s in summary["skipped"]) == sorted(str(b) for b in bad)
    _, meta = _read(out)
    assert json.loads(meta["paths"]) == [str(p) for p in EXAMPLES]


def test_cli_no_inputs(model_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["extract", str(model_dir), str(tmp_path / "empty"), "--out", str(tmp_path / "f.npy")])
    assert result.exit_code == 1 and "no input images" in result.output


def test_kill_9_then_resume(model, model_dir, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(300):
        src = EXAMPLES[i % len(EXAMPLES)]
        os.link(src, images / f"{i:03d}{src.suffix}")
    out = tmp_path / "feats.safetensors"
    cmd = [sys.executable, "-m", "sslzoo", "extract", str(model_dir), str(images), "--out", str(out),
           "--batch-size", "8", "--no-progress", "--json"]
    proc = subprocess.Popen(cmd, env=ONE_THREAD, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    chunk = partial_dir(out) / "chunk-000000.safetensors"
    deadline = time.monotonic() + 60
    while not chunk.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    still_running = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert still_running, f"extract ended before it could be killed: {proc.stderr.read().decode()}"
    assert chunk.exists() and not out.exists()

    done = subprocess.run(cmd + ["--resume"], env=ONE_THREAD, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["n_images"] == 300 and summary["n_computed"] < 300
    assert not partial_dir(out).exists()

    reference = extract(model, sorted(images.iterdir()), batch_size=8, out=tmp_path / "ref.safetensors")
    got, meta = _read(out)
    want, ref_meta = _read(reference.out)
    assert meta["paths"] == ref_meta["paths"]
    np.testing.assert_allclose(got["conv5"], want["conv5"], rtol=1e-5, atol=1e-6)
