import os
import subprocess
import sys
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
