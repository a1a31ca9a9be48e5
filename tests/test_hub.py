"""Hub publishing and loading through the real huggingface_hub client against a local test Hub.

tests/_hub_server.py serves the Hub API on 127.0.0.1; every client runs in a subprocess with
HF_ENDPOINT pointing at it (huggingface_hub reads it at import time) and HF_HOME under tmp_path,
so nothing here reaches the network or the user's cache and token.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sslzoo import zoo
from sslzoo.zoo._hub import sha256_file

from ._hub_server import HubServer
from .conftest import run_cli

TOKEN = "hf_test_token_0123456789"
MODEL = "rotation-alexnet"
REPO = "sslzoo-test/rotation-alexnet"

# Loads a model in a fresh process; writes its state dict and features on a fixed input to OUT.
LOAD_AND_DUMP = """
import sys, torch
from safetensors.torch import save_file
from sslzoo import zoo
name, out = sys.argv[1], sys.argv[2]
m = zoo.load(name)
torch.manual_seed(0)
x = torch.randn(4, *m.data_config["input_size"])
with torch.no_grad():
    feats = m.features(x, layers=m.layers)
    tensors = {f"feat.{k}": v.contiguous() for k, v in feats.items()}
    tensors["pretext"] = m.predict_pretext(x).contiguous()
tensors.update({f"state.{k}": v.contiguous() for k, v in m.state_dict().items()})
save_file(tensors, out)
print("LOADED", zoo.resolve(name))
"""


def hub_env(hub: HubServer, hf_home: Path, token: str | None = TOKEN, offline: bool = False) -> dict:
    """Environment for a client subprocess: only our HF_* settings, none inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(hf_home), HF_HUB_OFFLINE="1" if offline else "0",
               HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1", OMP_NUM_THREADS="1",
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    if token:
        env["HF_TOKEN"] = token
    return env


def cli(env: dict, *args, **kw) -> subprocess.CompletedProcess:
    return run_cli(*args, env=env, timeout=120, **kw)


def python(env: dict, code: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, capture_output=True, text=True, timeout=120)


def assert_one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert lines and lines[0].startswith("error:"), proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)


@pytest.fixture(scope="module")
def hub():
    with HubServer(token=TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return zoo.resolve(MODEL)  # the package's rotation-alexnet.fmnist directory


@pytest.fixture(scope="module")
def published(hub, model_dir, tmp_path_factory):
    """rotation-alexnet published with the CLI, as a user would."""
    env = hub_env(hub, tmp_path_factory.mktemp("hf-publisher"))
    proc = cli(env, "publish", model_dir, "--repo", REPO, "--commit-message", "rotation-alexnet from the zoo", "--json",
               check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def reference(model_dir, one_thread):
    """State dict and features of the model loaded from its local directory, computed here as the
    dump script computes them in its process (one thread both sides)."""
    m = zoo.load(model_dir)
    torch.manual_seed(0)
    x = torch.randn(4, *m.data_config["input_size"])
    with torch.no_grad():
        out = {f"feat.{k}": v for k, v in m.features(x, layers=m.layers).items()}
        out["pretext"] = m.predict_pretext(x)
    out.update({f"state.{k}": v for k, v in m.state_dict().items()})
    return out


@pytest.fixture(scope="module")
def loaded_cache(hub, published, tmp_path_factory):
    """An HF_HOME into which a fresh process loaded hf-hub:REPO (and its dump)."""
    hf_home = tmp_path_factory.mktemp("hf-user")
    out = hf_home / "hub-load.safetensors"
    proc = python(hub_env(hub, hf_home, token=None), LOAD_AND_DUMP, f"hf-hub:{REPO}", out)
    assert proc.returncode == 0, proc.stderr
    return hf_home, out, proc.stdout


def test_publish_then_load_in_fresh_process_is_exact(hub, published, loaded_cache, reference, model_dir):
    assert published["repo_id"] == REPO and published["revision"] == "main"
    assert set(published["files"]) >= {"model.safetensors", "config.json", "README.md"}
    commits = hub.hub.commits_to(REPO)
    assert len(commits) == 1 and commits[0]["summary"] == "rotation-alexnet from the zoo"
    assert commits[0]["sha"] == published["commit"]
    assert set(commits[0]["paths"]) == set(published["files"])
    # what the Hub stores is byte-identical to the directory
    stored = hub.hub.repos[REPO].commits[published["commit"]]
    for name in published["files"]:
        assert stored[name] == (model_dir / name).read_bytes(), name

    hf_home, dump, stdout = loaded_cache
    cached = Path(stdout.split("LOADED", 1)[1].strip())
    assert cached.is_relative_to(hf_home) and cached.name == published["commit"]  # HF cache snapshot of that commit
    assert sorted(p.name for p in cached.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert sha256_file(cached / "model.safetensors") == sha256_file(model_dir / "model.safetensors")
    got = load_file(dump)
    assert got.keys() == reference.keys() and any(k.startswith("feat.conv5") for k in got)
    for k, v in reference.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k], v), k


def test_offline_cached_loads_and_uncached_is_one_clear_error(hub, loaded_cache, reference):
    hf_home, _, _ = loaded_cache
    env = hub_env(hub, hf_home, token=None, offline=True)
    before = len(hub.hub.requests)
    out = hf_home / "offline-load.safetensors"
    proc = python(env, LOAD_AND_DUMP, f"hf-hub:{REPO}", out)
    assert proc.returncode == 0, proc.stderr
    got = load_file(out)
    assert all(torch.equal(got[k], v) for k, v in reference.items())
    # also by the CLI
    info = cli(env, "info", f"hf-hub:{REPO}", "--json")
    assert info.returncode == 0 and json.loads(info.stdout)["pretext"] == "rotation", info.stderr
    assert len(hub.hub.requests) == before  # offline: the Hub was not asked anything

    uncached = cli(env, "pull", f"hf-hub:{REPO}@v9")  # a revision never fetched
    assert_one_error_line(uncached, f"hf-hub:{REPO}@v9: not in the Hugging Face cache", "sslzoo pull")
    assert len(hub.hub.requests) == before


def test_pull_revision_private_repo_then_offline(hub, model_dir, published, tmp_path):
    repo = "sslzoo-test/rotation-private"
    pub = cli(hub_env(hub, tmp_path / "pub"), "publish", model_dir, "--repo", repo, "--revision", "v1",
              "--private", "--json", check=True)
    res = json.loads(pub.stdout.strip().splitlines()[-1])
    assert res["revision"] == "v1" and hub.hub.repos[repo].private
    assert hub.hub.repos[repo].branches["v1"] == res["commit"] != hub.hub.repos[repo].branches["main"]

    # a private repo without a token: one clear error (the Hub answers as if it did not exist)
    anon = cli(hub_env(hub, tmp_path / "anon", token=None), "pull", f"hf-hub:{repo}@v1")
    assert_one_error_line(anon, "no such repository on the Hub", "hf auth login")

    hf_home = tmp_path / "user"
    pull = cli(hub_env(hub, hf_home), "pull", f"hf-hub:{repo}@v1")
    assert pull.returncode == 0, pull.stderr
    assert "cached at" in pull.stdout and str(hf_home) in pull.stdout and res["commit"] in pull.stdout
    assert (hf_home / "hub" / "models--sslzoo-test--rotation-private" / "refs" / "v1").read_text() == res["commit"]
    before = len(hub.hub.requests)
    offline = cli(hub_env(hub, hf_home, token=None, offline=True), "info", f"hf-hub:{repo}@v1", "--json")
    assert offline.returncode == 0, offline.stderr
    assert json.loads(offline.stdout)["weights"]["sha256"] == sha256_file(model_dir / "model.safetensors")
    assert len(hub.hub.requests) == before


# A registry entry whose weights live in a Hub repo, pinned by sha256 (right, then wrong).
PINNED = """
import sys
from sslzoo import zoo
from sslzoo.zoo._registry import Weights, lookup, register
repo, sha = sys.argv[1], sys.argv[2]
_, base = lookup("rotation-alexnet")
register("hubtest-alexnet", Weights("good", f"hf-hub:{repo}", base.config, sha256=sha),
         Weights("bad", f"hf-hub:{repo}", base.config, sha256="0" * 64))
m = zoo.load("hubtest-alexnet")
print("GOOD", zoo.resolve("hubtest-alexnet.good"))
try:
    zoo.load("hubtest-alexnet.bad")
    print("BAD LOADED")
except zoo.ZooError as e:
    print("ERR", e)
"""


def test_registry_hub_entry_checks_pinned_sha256(hub, published, model_dir, tmp_path):
    sha = sha256_file(model_dir / "model.safetensors")
    proc = python(hub_env(hub, tmp_path / "hf", token=None), PINNED, REPO, sha)
    assert proc.returncode == 0, proc.stderr
    assert "GOOD" in proc.stdout and str(tmp_path / "hf") in proc.stdout, proc.stdout
    err = proc.stdout.split("ERR", 1)[1]
    assert f"hf-hub:{REPO}" in err and sha in err and "0" * 64 in err and "registry pins" in err


def test_validation_failure_uploads_nothing(hub, model_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    weights = load_file(bad / "model.safetensors")
    from safetensors.torch import save_file

    weights["trunk.conv1.conv.weight"] = weights["trunk.conv1.conv.weight"] + 1
    save_file(weights, bad / "model.safetensors")  # config.json's sha256 no longer matches
    before = len(hub.hub.requests)
    proc = cli(hub_env(hub, tmp_path / "hf"), "publish", bad, "--repo", "sslzoo-test/never")
    assert_one_error_line(proc, "not published", "sha256", "does not match")
    assert len(hub.hub.requests) == before and "sslzoo-test/never" not in hub.hub.repos  # nothing sent at all

    # the other checks, in process (validation runs before any network code)
    def problems(directory) -> str:
        with pytest.raises(zoo.ZooError) as e:
            zoo._publish.validate(directory)
        return str(e.value)

    good = tmp_path / "good"
    shutil.copytree(model_dir, good)
    assert zoo._publish.validate(good)["pretext"] == "rotation"
    card = (good / "README.md").read_text()
    front, body = card.split("\n---\n", 1)
    (good / "README.md").write_text(front.split("model-index:")[0].replace("license: mit\n", "") + "\n---\n" + body)
    msg = problems(good)
    assert "no license" in msg and "no model-index" in msg and "no tags" not in msg
    (good / "README.md").write_text("---\nlicense: [mit\n---\n# card\n")
    assert "does not parse" in problems(good)
    (good / "README.md").write_text("# just text\n")
    assert "no YAML front matter" in problems(good)
    (good / "README.md").write_text(card)
    (good / "config.json").unlink()
    assert f"{good / 'config.json'}: missing" in problems(good)  # named by zoo.read_config, as every reader names it
    shutil.copy(model_dir / "config.json", good / "config.json")
    cfg = json.loads((good / "config.json").read_text())
    cfg["pretext_args"]["hidden"] = 256  # sha256 fine, but the weights do not fit the architecture
    (good / "config.json").write_text(json.dumps(cfg))
    assert "does not load" in problems(good)
    assert "not a directory" in problems(tmp_path / "nothing")


def test_publish_token_errors_are_clear(hub, model_dir, tmp_path):
    before = len(hub.hub.commits_to("sslzoo-test/no-token"))
    none = cli(hub_env(hub, tmp_path / "a", token=None), "publish", model_dir, "--repo", "sslzoo-test/no-token")
    assert_one_error_line(none, "none was found", "HF_TOKEN", "hf auth login")
    wrong = cli(hub_env(hub, tmp_path / "b", token="hf_wrong"), "publish", model_dir, "--repo", "sslzoo-test/no-token")
    assert_one_error_line(wrong, "refused the token")
    assert "sslzoo-test/no-token" not in hub.hub.repos and len(hub.hub.commits_to("sslzoo-test/no-token")) == before


def test_parse_repo():
    from sslzoo.zoo._publish import parse_repo

    assert parse_repo("org/name") == ("org/name", None)
    assert parse_repo("hf-hub:org/name@v2") == ("org/name", "v2")
    for bad in ("name", "a/b/c", "org/", "org/na me", "org/..x", "-org/x"):
        with pytest.raises(zoo.ZooError):
            parse_repo(bad)
