import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

FMNIST = Path("/usr/share/datasets/fashion-mnist")
REPO = Path(__file__).resolve().parents[1]


def run_cli(*args, check=False, env=None, timeout=300, **kw) -> subprocess.CompletedProcess:
    """Run ``python -m sslzoo ARGS`` in a fresh process (the real entry point)."""
    full_env = dict(os.environ, **(env or {}))
    full_env.setdefault("COLUMNS", "200")
    proc = subprocess.run([sys.executable, "-m", "sslzoo", *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"sslzoo {' '.join(map(str, args))} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a test module: on 2 busy cores torch's spinning OpenMP threads fight
    other jobs (decode threads, other tests) and small ops get many times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def fmnist_root() -> Path:
    if not (FMNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    return FMNIST


def checkpoint_step(ckpt) -> int:
    """The step a training checkpoint was written at (its metadata). Read through one open file:
    a running training replaces the checkpoint (atomically, by rename) while this polls it, and a
    reader that opens the path twice (safetensors' safe_open does) can see two different files."""
    with open(ckpt, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))  # safetensors: 8-byte header length, then the JSON header
        return int(json.loads(f.read(size))["__metadata__"]["step"])


def assert_same_run(ref: Path, run: Path) -> dict:
    """The resumed run ``run`` ended exactly as the uninterrupted ``ref``: the same checkpoint keys,
    every tensor equal, the exported model.safetensors byte-identical. Returns ref's checkpoint
    tensors, for a test's own checks of what the checkpoint holds."""
    import torch
    from safetensors.torch import load_file

    a, b = load_file(ref / "checkpoint.safetensors"), load_file(run / "checkpoint.safetensors")
    assert a.keys() == b.keys(), sorted(a.keys() ^ b.keys())
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    assert (ref / "model" / "model.safetensors").read_bytes() == (run / "model" / "model.safetensors").read_bytes()
    return a


def train_killed_at(args, ckpt: Path, at_least: int, log: Path, timeout: float = 120, env=None) -> int:
    """Run ``sslzoo train ARGS`` in a fresh process, kill -9 it once ``ckpt`` holds step >= ``at_least``,
    and return the step of the checkpoint it left (asserting it really died by the signal)."""
    proc = subprocess.Popen([sys.executable, "-m", "sslzoo", "train", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=open(log, "w"), env=dict(os.environ, **(env or {})))
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists() and checkpoint_step(ckpt) >= at_least:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    assert proc.wait() == -signal.SIGKILL, Path(log).read_text()
    return checkpoint_step(ckpt)
