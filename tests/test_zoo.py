"""zoo core: registry, model contract, Hub-layout save/load, transforms, the rotation pretext."""
import json
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from sslzoo import zoo
from sslzoo.zoo.pretexts import rotation


@pytest.fixture(scope="module")
def random_model():
    torch.manual_seed(0)
    return zoo.load("rotation-alexnet", pretrained=False)


def test_registry_lists_and_rejects():
    assert "rotation-alexnet" in zoo.list_models()
    assert zoo.list_models("nosuch-*") == []
    assert "rotation-alexnet.fmnist" in zoo.list_models(tags=True)
    with pytest.raises(zoo.ZooError, match="unknown model"):
        zoo.load("rotaton-alexnet", pretrained=False)
    with pytest.raises(zoo.ZooError, match="no tag"):
        zoo.load("rotation-alexnet.nope", pretrained=False)
    with pytest.raises(zoo.ZooError, match="not a model directory"):
        zoo.load("some/thing")  # a '/' that is no directory is an error, not a guess
    with pytest.raises(zoo.ZooError, match="hf-hub:ORG/NAME"):
        zoo.load("hf-hub:justaname")


def test_model_contract(random_model):
    m = random_model
    assert not m.training and m.pretext == "rotation"
    assert m.layers == ("conv1", "conv2", "conv3", "conv4", "conv5")
    c, h, w = m.data_config["input_size"]
    x = torch.randn(3, c, h, w)
    with torch.no_grad():
        feats = m.features(x, layers=m.layers)
        assert [f.shape[1] for f in feats.values()] == [64, 192, 384, 256, 256]
        assert all(f.dim() == 4 and f.shape[0] == 3 for f in feats.values())
        # a single early tap stops the trunk early and gives the same map
        assert torch.equal(m.features(x, layers="conv2")["conv2"], feats["conv2"])
        assert m.predict_pretext(x).shape == (3, 4)
    with pytest.raises(ValueError, match="unknown layer"):
        m.features(x, layers=("fc7",))
    with pytest.raises(ValueError, match="at least 63"):
        m.features(torch.randn(1, c, 28, 28))
    with pytest.raises(ValueError, match="no probe head"):
        m.classify(x, "conv3")


def test_alexnet_works_up_to_224():
    m = zoo.PretextModel({"architecture": "alexnet", "arch_args": {"in_chans": 3}, "pretext": "rotation",
                          "data_config": {"input_size": [3, 224, 224], "mean": [0.5] * 3, "std": [0.5] * 3}}).eval()
    with torch.no_grad():
        f = m.features(torch.randn(1, 3, 224, 224), m.layers)
        assert f["conv1"].shape[-1] == 55 and f["conv5"].shape[-1] == 13
        assert m.predict_pretext(torch.randn(2, 3, 224, 224)).shape == (2, 4)


def test_save_load_roundtrip(tmp_path, random_model):
    d = zoo.save_pretrained(random_model, tmp_path / "m", half=False)
    assert sorted(p.name for p in d.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    cfg = json.loads((d / "config.json").read_text())
    assert len(cfg["weights"]["sha256"]) == 64 and cfg["pretext"] == "rotation"
    assert (d / "README.md").read_text().startswith("---\n")
    loaded = zoo.load(d)
    x = torch.randn(2, *random_model.data_config["input_size"])
    with torch.no_grad():
        assert torch.equal(loaded.predict_pretext(x), random_model.predict_pretext(x))
        assert torch.equal(loaded.features(x, "conv4")["conv4"], random_model.features(x, "conv4")["conv4"])
    # float16 storage (the default for shipped models) loads back to float32 weights, close to the originals
    h = zoo.load(zoo.save_pretrained(random_model, tmp_path / "h"))
    w, w16 = random_model.trunk.conv2.conv.weight, h.trunk.conv2.conv.weight
    assert w16.dtype == torch.float32 and torch.allclose(w, w16, rtol=1e-3, atol=1e-4)
    assert (tmp_path / "h" / "model.safetensors").stat().st_size < 0.6 * (d / "model.safetensors").stat().st_size


def test_load_rejects_tampered_and_mismatched(tmp_path, random_model):
    d = zoo.save_pretrained(random_model, tmp_path / "m", half=False)
    state = load_file(d / "model.safetensors")
    state["trunk.conv1.conv.weight"] = state["trunk.conv1.conv.weight"] + 1
    save_file(state, d / "model.safetensors")
    with pytest.raises(zoo.ZooError, match="sha256"):
        zoo.load(d)
    # weights that do not fit the architecture: strict loading names the file
    cfg = json.loads((d / "config.json").read_text())
    cfg["weights"].pop("sha256")
    cfg["pretext_args"]["hidden"] = 256
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(zoo.ZooError, match="does not fit"):
        zoo.load(d)
    cfg["arch_args"]["in_chans"] = 3  # inconsistent with the 1-channel data config
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(zoo.ZooError, match="cannot build the model.*1 channel"):
        zoo.load(d)
    cfg["arch_args"]["in_chans"], cfg["pretext_args"]["hidden"] = 1, 512
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "model.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(zoo.ZooError, match="safetensors"):
        zoo.load(d)
    (d / "config.json").write_text("{broken")
    with pytest.raises(zoo.ZooError, match="not valid JSON"):
        zoo.load(d)


def test_hub_name_offline_without_cache_is_one_clear_error(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    code = "from sslzoo import zoo\ntry:\n zoo.load('hf-hub:someorg/somemodel@v1')\nexcept zoo.ZooError as e:\n print('ERR', e)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "ERR hf-hub:someorg/somemodel@v1: not in the Hugging Face cache" in out.stdout, out.stderr
    assert "sslzoo pull" in out.stdout


def test_transforms_follow_data_config(random_model):
    t = zoo.transforms(random_model)
    img = Image.new("RGB", (100, 50), (255, 255, 255))
    x = t(img)
    assert x.shape == (1, *random_model.data_config["input_size"][1:]) and x.dtype == torch.float32
    mean, std = random_model.data_config["mean"][0], random_model.data_config["std"][0]
    assert torch.allclose(x, torch.full_like(x, (1 - mean) / std))


def test_rotate_all_is_rotation_major_and_upright_inverts():
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).view(2, 1, 5, 5)
    inputs, targets = rotation.rotate_all(x)
    assert inputs.shape == (8, 1, 5, 5) and targets.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    # 90 degrees counter-clockwise: the top-right pixel moves to the top-left
    assert inputs[2, 0, 0, 0] == x[0, 0, 0, 4]
    assert torch.equal(inputs[5], torch.rot90(x[1], 2, dims=(-2, -1)))
    perfect = torch.nn.functional.one_hot(targets, 4).float()  # a model that is always right
    assert torch.equal(rotation.upright(inputs, perfect), x.repeat(4, 1, 1, 1))
    with pytest.raises(ValueError, match="square"):
        rotation.rotate_all(torch.zeros(1, 1, 4, 5))
