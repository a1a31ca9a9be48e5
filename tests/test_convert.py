"""Converters of the authors' checkpoints (zoo/_convert.py).

Each case writes a checkpoint with the original's exact key names, shapes and wrapper (random
values), converts it, loads it by its zoo name from the store, and compares the features at every
tap with a reference forward written here from the original's layer definitions: plain
torch.nn.functional calls on the raw checkpoint tensors (and scikit-image's rgb2lab for Lab).
"""
from __future__ import annotations

import math
import tarfile
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
import torch.nn.functional as F

from sslzoo import zoo
from tests.conftest import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")
EPS = 1e-5  # BatchNorm eps of every original
G = torch.Generator().manual_seed(0)


# --- random tensors with the originals' shapes ----------------------------------------------------

def _randn(*shape, std=1.0):
    return torch.randn(*shape, generator=G) * std


def conv_w(cout, cin, k):
    return _randn(cout, cin, k, k, std=math.sqrt(2.0 / (cin * k * k)))


def bn(prefix, c):
    return {f"{prefix}.weight": 1 + _randn(c, std=0.1), f"{prefix}.bias": _randn(c, std=0.1),
            f"{prefix}.running_mean": _randn(c, std=0.1), f"{prefix}.running_var": 0.5 + torch.rand(c, generator=G)}


def big(*shape):
    """A large tensor the converter drops (fc layers): right shape, tiny file."""
    return torch.zeros(1).expand(*shape)


# --- reference ops (from the originals' definitions) ---------------------------------------------

def ref_bn(x, sd, p):
    return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
                        False, 0.0, EPS)


def ref_lrn(x):
    """bbrattoli's LRN (Utils/Layers.py): x / (1 + 1e-4 * AvgPool3d((5,1,1), pad (2,0,0))(x^2)) ^ 0.75."""
    div = F.avg_pool3d(x.pow(2).unsqueeze(1), (5, 1, 1), stride=1, padding=(2, 0, 0)).squeeze(1)
    return x / div.mul(1e-4).add(1.0).pow(0.75)


def ref_lab_l(x):
    """L of CIE Lab (scikit-image, D65) minus 50, as VISSL's ImgPil2LabTensor feeds the trunk."""
    from skimage.color import rgb2lab

    lab = [torch.from_numpy(rgb2lab(img.permute(1, 2, 0).double().numpy())[..., 0]) for img in x]
    return (torch.stack(lab)[:, None] - 50.0).float()


def ref_alexnet(x, sd, convs, bns, strides_pads, groups, *, lrn=(False,) * 5, relu_only=(False,) * 5):
    """An AlexNet stack: conv_k (+ BN_k) -> ReLU -> [tap]; max-pool 3/2 after 1, 2, 5 (+ LRN after 1, 2)."""
    taps = {}
    for i in range(5):
        x = F.conv2d(x, sd[f"{convs[i]}.weight"], sd[f"{convs[i]}.bias"], stride=strides_pads[i][0],
                     padding=strides_pads[i][1], groups=groups[i])
        if bns[i] is not None:
            x = ref_bn(x, sd, bns[i])
        x = F.relu(x)
        taps[f"conv{i + 1}"] = x
        if i in (0, 1):
            x = F.max_pool2d(x, 3, 2)
            if lrn[i]:
                x = ref_lrn(x)
    return taps


ALEX_SP = [(4, 2), (1, 2), (1, 1), (1, 1), (1, 1)]  # conv1 11/4 pad 2 (RotNet, DeepCluster)
CAFFE_SP = [(2, 0), (1, 2), (1, 1), (1, 1), (1, 1)]  # conv1 11/2 pad 0 (jigsaw)
COLOR_SP = [(4, 0), (1, 2), (1, 1), (1, 1), (1, 1)]  # conv1 11/4 pad 0 (colorization)
VISSL_BLOCKS = [0, 2, 4, 5, 6]
KS = [11, 5, 3, 3, 3]


def vissl_alexnet_sd(widths, cin, groups, with_bn):
    """``_feature_blocks.{0,2,4,5,6}.{0: conv, 1: BN}`` as RotNet and VISSL's AlexNet trunks name them."""
    sd, chans = {}, [cin, *widths]
    for i, b in enumerate(VISSL_BLOCKS):
        sd[f"_feature_blocks.{b}.0.weight"] = conv_w(chans[i + 1], chans[i] // groups[i], KS[i])
        sd[f"_feature_blocks.{b}.0.bias"] = _randn(chans[i + 1], std=0.1)
        if with_bn[i]:
            sd.update(bn(f"_feature_blocks.{b}.1", chans[i + 1]))
    return sd


def vissl_alexnet_ref(sd, sp, groups, with_bn, lrn=(False,) * 5):
    convs = [f"_feature_blocks.{b}.0" for b in VISSL_BLOCKS]
    bns = [f"_feature_blocks.{b}.1" if with_bn[i] else None for i, b in enumerate(VISSL_BLOCKS)]
    return lambda x: ref_alexnet(x, sd, convs, bns, sp, groups, lrn=lrn)


# --- the cases ------------------------------------------------------------------------------------

@dataclass
class Case:
    source: str
    size: int  # test input size
    build: Callable[[], tuple[object, Callable]]  # -> (checkpoint object, reference(x) -> taps)
    tol: float = 1e-4  # relative to the tap's largest magnitude


def rotnet_alexnet(head=True):
    sd = vissl_alexnet_sd((64, 192, 384, 256, 256), 3, (1,) * 5, (True,) * 5)
    if head:  # fc_block: Flatten, Linear(9216, 4096, bias=False), BN1d, ReLU, Linear(4096, 4096, bias=False), BN1d, ReLU
        sd["_feature_blocks.8.1.weight"] = _randn(4096, 9216, std=math.sqrt(2 / 9216))
        sd.update(bn("_feature_blocks.8.2", 4096))
        sd["_feature_blocks.8.4.weight"] = _randn(4096, 4096, std=math.sqrt(2 / 4096))
        sd.update(bn("_feature_blocks.8.5", 4096))
        sd["_feature_blocks.9.0.weight"] = _randn(4, 4096, std=0.01)
        sd["_feature_blocks.9.0.bias"] = _randn(4, std=0.1)
    return {"epoch": 50, "network": sd}, vissl_alexnet_ref(sd, ALEX_SP, (1,) * 5, (True,) * 5)


def rotnet_head_ref(sd, pool5):
    h = F.relu(ref_bn(F.linear(pool5.flatten(1), sd["_feature_blocks.8.1.weight"]), sd, "_feature_blocks.8.2"))
    h = F.relu(ref_bn(F.linear(h, sd["_feature_blocks.8.4.weight"]), sd, "_feature_blocks.8.5"))
    return F.linear(h, sd["_feature_blocks.9.0.weight"], sd["_feature_blocks.9.0.bias"])


def vissl_rotnet_alexnet():
    obj, ref = rotnet_alexnet(head=False)
    sd = obj["network"]
    sd["_feature_blocks.9.0.weight"], sd["_feature_blocks.9.0.bias"] = big(4, 4096), big(4)  # VISSL kept these
    return {"model_state_dict": sd}, ref


NIN_SPEC = [[(192, 5), (160, 1), (96, 1)], [(192, 5), (192, 1), (192, 1)], [(192, 3), (192, 1), (192, 1)],
            [(192, 3), (192, 1), (192, 1)]]


def rotnet_nin():
    sd, cin = {}, 3
    for b, units in enumerate(NIN_SPEC):
        for j, (cout, k) in enumerate(units):
            p = f"_feature_blocks.{b}.Block{b + 1}_ConvB{j + 1}.layers"
            sd[f"{p}.Conv.weight"] = conv_w(cout, cin, k)
            sd.update(bn(f"{p}.BatchNorm", cout))
            cin = cout
    sd["_feature_blocks.4.Classifier.weight"], sd["_feature_blocks.4.Classifier.bias"] = _randn(4, 192), _randn(4)

    def ref(x):
        taps = {}
        for b, units in enumerate(NIN_SPEC):
            for j, (_, k) in enumerate(units):
                p = f"_feature_blocks.{b}.Block{b + 1}_ConvB{j + 1}.layers"
                x = F.relu(ref_bn(F.conv2d(x, sd[f"{p}.Conv.weight"], padding=(k - 1) // 2), sd, f"{p}.BatchNorm"))
            if b == 0:
                x = F.max_pool2d(x, 3, 2, 1)
            elif b == 1:
                x = F.avg_pool2d(x, 3, 2, 1)
            taps[f"conv{b + 1}"] = x
        return taps
    return {"epoch": 200, "network": sd}, ref


DC_IDX = [(0, 1), (4, 5), (8, 9), (11, 12), (14, 15)]  # features.N of conv / BN in deepcluster's nn.Sequential


def deepcluster():
    sd, chans = {}, [2, 96, 256, 384, 384, 256]
    for i, (c, b) in enumerate(DC_IDX):
        sd[f"features.module.{c}.weight"] = conv_w(chans[i + 1], chans[i], KS[i])
        sd[f"features.module.{c}.bias"] = _randn(chans[i + 1], std=0.1)
        sd.update(bn(f"features.module.{b}", chans[i + 1]))
    sd["sobel.0.weight"] = torch.full((1, 3, 1, 1), 1 / 3) + _randn(1, 3, 1, 1, std=0.01)  # taken from the file
    sd["sobel.0.bias"] = torch.zeros(1)
    sd["sobel.1.weight"] = torch.tensor([[[[1., 0, -1], [2, 0, -2], [1, 0, -1]]], [[[1., 2, 1], [0, 0, 0], [-1, -2, -1]]]])
    sd["sobel.1.bias"] = torch.zeros(2)
    sd["classifier.1.weight"], sd["classifier.1.bias"] = big(4096, 9216), big(4096)
    sd["classifier.4.weight"], sd["classifier.4.bias"] = big(4096, 4096), big(4096)
    sd["top_layer.weight"], sd["top_layer.bias"] = big(10000, 4096), big(10000)
    obj = {"epoch": 500, "arch": "alexnet", "state_dict": sd,
           "optimizer": {"state": {}, "param_groups": [{"lr": 0.05, "momentum": 0.9, "params": [0, 1]}]}}

    def ref(x):
        x = F.conv2d(F.conv2d(x, sd["sobel.0.weight"], sd["sobel.0.bias"]), sd["sobel.1.weight"], sd["sobel.1.bias"],
                     padding=1)
        return ref_alexnet(x, sd, [f"features.module.{c}" for c, _ in DC_IDX],
                           [f"features.module.{b}" for _, b in DC_IDX], ALEX_SP, (1,) * 5)
    return obj, ref


def vissl_deepcluster():
    sd = vissl_alexnet_sd((96, 256, 384, 384, 256), 2, (1,) * 5, (True,) * 5)
    gray = torch.full((1, 3, 1, 1), 1 / 3)
    sobel = torch.tensor([[[[1., 0, -1], [2, 0, -2], [1, 0, -1]]], [[[1., 2, 1], [0, 0, 0], [-1, -2, -1]]]])
    inner = vissl_alexnet_ref(sd, ALEX_SP, (1,) * 5, (True,) * 5)
    return {"model_state_dict": sd}, lambda x: inner(F.conv2d(F.conv2d(x, gray), sobel, padding=1))


CAFFE_GROUPS = (1, 2, 1, 2, 2)


def vissl_jigsaw_alexnet():
    with_bn = (False, False, True, True, True)
    sd = vissl_alexnet_sd((96, 256, 384, 384, 256), 3, CAFFE_GROUPS, with_bn)
    return {"model_state_dict": sd}, vissl_alexnet_ref(sd, CAFFE_SP, CAFFE_GROUPS, with_bn, lrn=(True, True, False, False, False))


def vissl_colorization_alexnet():
    sd = vissl_alexnet_sd((96, 256, 384, 384, 256), 1, CAFFE_GROUPS, (True,) * 5)
    inner = vissl_alexnet_ref(sd, COLOR_SP, CAFFE_GROUPS, (True,) * 5)
    return {"model_state_dict": sd}, lambda x: inner(ref_lab_l(x))


def bbrattoli():
    sd, chans = {}, [3, 96, 256, 384, 384, 256]
    for i in range(5):
        sd[f"conv.conv{i + 1}_s1.weight"] = conv_w(chans[i + 1], chans[i] // CAFFE_GROUPS[i], KS[i])
        sd[f"conv.conv{i + 1}_s1.bias"] = _randn(chans[i + 1], std=0.1)
    sd["fc6.fc6_s1.weight"], sd["fc6.fc6_s1.bias"] = big(1024, 2304), big(1024)
    sd["fc7.fc7.weight"], sd["fc7.fc7.bias"] = big(4096, 9 * 1024), big(4096)
    sd["classifier.fc8.weight"], sd["classifier.fc8.bias"] = big(1000, 4096), big(1000)

    def ref(x):  # per-tile normalisation (JigsawImageLoader), then the conv tower
        m, s = x.flatten(2).mean(-1), x.flatten(2).std(-1)
        s = torch.where(s == 0, torch.ones_like(s), s)
        x = (x - m[..., None, None]) / s[..., None, None]
        return ref_alexnet(x, sd, [f"conv.conv{i + 1}_s1" for i in range(5)], [None] * 5, CAFFE_SP, CAFFE_GROUPS,
                           lrn=(True, True, False, False, False))
    return sd, ref


RN_BLOCKS = (3, 4, 6, 3)


def resnet_sd(cin, prefix):
    """torchvision ResNet-50 key names and shapes (VISSL builds its trunk from torchvision's classes)."""
    sd = {f"{prefix}conv1.weight": conv_w(64, cin, 7), **bn(f"{prefix}bn1", 64)}
    inplanes = 64
    for li, (planes, n) in enumerate(zip((64, 128, 256, 512), RN_BLOCKS)):
        for b in range(n):
            p = f"{prefix}layer{li + 1}.{b}"
            sd[f"{p}.conv1.weight"] = conv_w(planes, inplanes, 1)
            sd.update(bn(f"{p}.bn1", planes))
            sd[f"{p}.conv2.weight"] = conv_w(planes, planes, 3)
            sd.update(bn(f"{p}.bn2", planes))
            sd[f"{p}.conv3.weight"] = conv_w(planes * 4, planes, 1) * 0.3
            sd.update(bn(f"{p}.bn3", planes * 4))
            if b == 0:
                sd[f"{p}.downsample.0.weight"] = conv_w(planes * 4, inplanes, 1)
                sd.update(bn(f"{p}.downsample.1", planes * 4))
            inplanes = planes * 4
    return sd


def resnet_ref(sd, prefix, layer4_stride):
    def ref(x):
        x = F.relu(ref_bn(F.conv2d(x, sd[f"{prefix}conv1.weight"], stride=2, padding=3), sd, f"{prefix}bn1"))
        taps = {"conv1": x}
        x = F.max_pool2d(x, 3, 2, 1)
        for li, n in enumerate(RN_BLOCKS):
            for b in range(n):
                p = f"{prefix}layer{li + 1}.{b}"
                stride = 1 if b or li == 0 else (layer4_stride if li == 3 else 2)
                h = F.relu(ref_bn(F.conv2d(x, sd[f"{p}.conv1.weight"]), sd, f"{p}.bn1"))
                h = F.relu(ref_bn(F.conv2d(h, sd[f"{p}.conv2.weight"], stride=stride, padding=1), sd, f"{p}.bn2"))
                h = ref_bn(F.conv2d(h, sd[f"{p}.conv3.weight"]), sd, f"{p}.bn3")
                short = x if b else ref_bn(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=stride), sd,
                                           f"{p}.downsample.1")
                x = F.relu(h + short)
            taps[f"res{li + 2}"] = x
        return taps
    return ref


def vissl_jigsaw_rn50():  # Goyal'19 converted: model_state_dict, VISSL's _feature_blocks prefix
    sd = resnet_sd(3, "_feature_blocks.")
    return {"model_state_dict": sd}, resnet_ref(sd, "_feature_blocks.", 2)


def vissl_rotnet_rn50():  # trained with VISSL: classy_state_dict/base_model/model/trunk (+ heads)
    sd = resnet_sd(3, "_feature_blocks.")
    heads = {"0.clf.0.weight": _randn(4, 2048), "0.clf.0.bias": _randn(4)}
    obj = {"phase_idx": 125, "iteration": 1, "type": "consolidated",
           "classy_state_dict": {"base_model": {"model": {"trunk": sd, "heads": heads}, "meta": {}}}}
    return obj, resnet_ref(sd, "_feature_blocks.", 2)


def vissl_colorization_rn50():  # L input, LAYER4_STRIDE 1; plain torchvision key names
    sd = resnet_sd(1, "")
    inner = resnet_ref(sd, "", 1)
    return {"model_state_dict": sd}, lambda x: inner(ref_lab_l(x))


CASES = [
    Case("rotnet-alexnet", 224, rotnet_alexnet),
    Case("vissl-rotnet-alexnet", 224, vissl_rotnet_alexnet),
    Case("rotnet-nin", 32, rotnet_nin),
    Case("deepcluster-alexnet", 224, deepcluster),
    Case("vissl-deepcluster-alexnet", 224, vissl_deepcluster),
    Case("vissl-jigsaw-alexnet", 227, vissl_jigsaw_alexnet),
    Case("vissl-colorization-alexnet", 227, vissl_colorization_alexnet),
    Case("bbrattoli-jigsaw-alexnet", 75, bbrattoli),
    Case("vissl-jigsaw-resnet50", 64, vissl_jigsaw_rn50),
    Case("vissl-rotnet-resnet50", 64, vissl_rotnet_rn50),
    Case("vissl-colorization-resnet50", 64, vissl_colorization_rn50),
]


def tap_differences(case: Case, workdir, *, batch: int = 2):
    """Convert the case's checkpoint into the store, load it by name and compare every tap:
    {tap: (max |converted - reference|, max |reference|)}, plus the loaded model and checkpoint."""
    obj, ref = case.build()
    path = workdir / f"{case.source}.pth"
    torch.save(obj, path)
    directory = zoo.convert(case.source, path)
    name = zoo.convert_sources()[case.source].name
    assert directory.name == name
    model = zoo.load(name)
    x = torch.rand(batch, 3, case.size, case.size, generator=G)
    with torch.no_grad():
        got = model.features(x, model.layers)
        want = ref(x)
    assert list(got) == list(want) == list(model.layers)
    out = {}
    for tap in model.layers:
        assert got[tap].shape == want[tap].shape, (tap, got[tap].shape, want[tap].shape)
        out[tap] = ((got[tap] - want[tap]).abs().max().item(), want[tap].abs().max().item())
    return out, model, obj, x


@pytest.fixture(autouse=True)
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("SSLZOO_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "zoo"


@pytest.mark.parametrize("case", CASES, ids=[c.source for c in CASES])
def test_converted_features_match_reference(case, tmp_path):
    diffs, model, obj, x = tap_differences(case, tmp_path)
    for tap, (diff, scale) in diffs.items():
        assert scale > 0 and diff <= case.tol * max(1.0, scale), (tap, diff, scale)
    if case.source == "rotnet-alexnet":  # the rotation head is kept and predicts like the original
        with torch.no_grad():
            pool5 = F.max_pool2d(ref_alexnet_pool5(obj["network"], x), 3, 2)
            want = rotnet_head_ref(obj["network"], pool5)
            assert torch.allclose(model.predict_pretext(x), want, atol=1e-4, rtol=1e-4)
    else:
        with pytest.raises(ValueError, match="no pretext head"):
            model.predict_pretext(x)


def ref_alexnet_pool5(sd, x):
    return vissl_alexnet_ref(sd, ALEX_SP, (1,) * 5, (True,) * 5)(x)["conv5"]


def test_card_and_config_state_provenance(tmp_path):
    obj, _ = vissl_colorization_alexnet()
    torch.save(obj, tmp_path / "c.torch")
    out = zoo.convert("vissl-colorization-alexnet", tmp_path / "c.torch", out=tmp_path / "color")
    card = (out / "README.md").read_text()
    config = zoo.read_config(out)
    prov = config["provenance"]
    assert "arXiv:1603.08511" in card and "converted_alexnet_colorization_in1k_pretext.torch" in card
    assert "L - 50" in card and prov["source_file"] == "c.torch" and len(prov["source_sha256"]) == 64
    assert config["pretext_args"] is None and config["layers"] == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    from huggingface_hub import ModelCard

    assert ModelCard.load(out / "README.md").data.license == "other"
    assert zoo.load(out).name == "colorization-alexnet.in1k"  # a local directory loads too
    # a later save (as `sslzoo probe` does when it stores heads) re-renders the same provenance card
    again = zoo.save_pretrained(zoo.load(out), tmp_path / "resaved")
    assert (again / "README.md").read_text() == card


def test_release_tarball_through_cli(tmp_path, store):
    """The RotNet release is a .tar.gz: the CLI converts it as downloaded, in a fresh process."""
    obj, ref = rotnet_nin()
    torch.save(obj, tmp_path / "model_net_epoch200")
    with tarfile.open(tmp_path / "CIFAR10_RotNet_NIN4blocks.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "model_net_epoch200", "CIFAR10_RotNet_NIN4blocks/model_net_epoch200")
    proc = run_cli("convert", "rotnet-nin", tmp_path / "CIFAR10_RotNet_NIN4blocks.tar.gz",
                   env={"SSLZOO_HOME": str(store.parent), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "rotation-nin.cifar10" in proc.stdout
    m = zoo.load("rotation-nin.cifar10")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(m.features(x, "conv4")["conv4"], ref(x)["conv4"], atol=1e-5)
    assert zoo.read_config(store / "rotation-nin.cifar10")["provenance"]["source_file"].endswith(".tar.gz")


def test_unconverted_entry_says_where_to_download(store):
    with pytest.raises(zoo.ZooError) as err:
        zoo.load("deepcluster-alexnet.in1k")
    msg = str(err.value)
    assert "https://dl.fbaipublicfiles.com/deepcluster/alexnet/checkpoint.pth.tar" in msg
    assert "sslzoo convert deepcluster-alexnet FILE" in msg and str(store) in msg
    assert zoo.load("deepcluster-alexnet", pretrained=False).layers == ("conv1", "conv2", "conv3", "conv4", "conv5")
    proc = run_cli("info", "jigsaw-resnet50.in1k", env={"SSLZOO_HOME": str(store.parent)})
    assert proc.returncode == 1 and "sslzoo convert vissl-jigsaw-resnet50" in proc.stderr
    assert "Traceback" not in proc.stderr


def _bad_files(tmp_path):
    obj, _ = rotnet_alexnet(head=False)
    good = tmp_path / "good.pth"
    torch.save(obj, good)
    raw = good.read_bytes()
    missing = {"network": {k: v for k, v in obj["network"].items() if k != "_feature_blocks.4.0.weight"}}
    shape = {"network": dict(obj["network"], **{"_feature_blocks.0.0.weight": torch.zeros(96, 3, 11, 11)})}
    nan = {"network": dict(obj["network"], **{"_feature_blocks.5.1.running_var": torch.full((256,), float("nan"))})}
    nin, _ = rotnet_nin()
    cases = {
        "garbage.pth": (b"this is not a checkpoint\n", "not a readable PyTorch checkpoint"),
        "empty.pth": (b"", "not a readable PyTorch checkpoint"),
        "truncated.pth": (raw[: len(raw) // 2], "not a readable PyTorch checkpoint"),
        "missing.pth": (missing, r"missing keys .*conv3\.conv\.weight"),
        "shape.pth": (shape, r"shape mismatch .*\(96, 3, 11, 11\) \(expected \(64, 3, 11, 11\)\)"),
        "nan.pth": (nan, "non-finite"),
        "nin.pth": (nin, "unexpected keys .*Block1_ConvB1"),
        "list.pth": ([1, 2, 3], "not a checkpoint dictionary"),
        "other.pth": ({"foo": 1, "bar": "x"}, "not a checkpoint this converter knows"),
    }
    for name, (content, _) in cases.items():
        if isinstance(content, bytes):
            (tmp_path / name).write_bytes(content)
        else:
            torch.save(content, tmp_path / name)
    return {name: (tmp_path / name, pattern) for name, (_, pattern) in cases.items()}


def test_wrong_or_corrupted_files_give_clear_errors(tmp_path, store):
    for name, (path, pattern) in _bad_files(tmp_path).items():
        with pytest.raises(zoo.ZooError, match=pattern) as err:
            zoo.convert("rotnet-alexnet", path)
        assert str(path) in str(err.value), name
    assert not store.exists()  # nothing was written
    with pytest.raises(zoo.ZooError, match="unknown source 'rotnet'; known: rotnet-alexnet"):
        zoo.convert("rotnet", tmp_path / "garbage.pth")
    with pytest.raises(zoo.ZooError, match="no such file"):
        zoo.convert("rotnet-nin", tmp_path / "nope.pth")
    proc = run_cli("convert", "rotnet-alexnet", tmp_path / "shape.pth", env={"SSLZOO_HOME": str(store.parent)})
    assert proc.returncode == 1 and "shape mismatch" in proc.stderr and "Traceback" not in proc.stderr
