"""A model directory, a Hub name or an authors' checkpoint is untrusted input (issue 14).

Each broken or hostile case is generated here from a copy of the shipped rotation-alexnet.fmnist
directory (its weights symlinked, not copied, where only config.json changes). Every case must end
in one ZooError naming the file and the field or tensor: `sslzoo info` exits 1 with one `error:`
line and no traceback, `zoo.load` raises ZooError, quickly (nothing hangs, nothing huge is
allocated before the refusal).
"""
from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from sslzoo import zoo
from sslzoo.cli import app
from sslzoo.zoo import _convert, _validate
from sslzoo.zoo._hub import parse_hub_name, sha256_file
from sslzoo.zoo._registry import list_models, lookup
from sslzoo.zoo._sources import SOURCES

from .conftest import run_cli

SHIPPED = Path(zoo.__file__).parent / "weights" / "rotation-alexnet.fmnist"
BASE = json.loads((SHIPPED / "config.json").read_text())
QUICK = 5.0  # seconds a refusal may take in process (they take milliseconds; the machine is shared)


def config(**changes) -> dict:
    """The shipped config with dotted-path changes: config(**{"data_config.std": [0]}); DROP removes."""
    cfg = json.loads(json.dumps(BASE))
    for path, value in changes.items():
        *parents, last = path.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        if value is DROP:
            del node[last]
        else:
            node[last] = value
    return cfg


DROP = object()
SHIPPED_TEXT = (SHIPPED / "config.json").read_text()

# id -> (config.json content: an object to dump, or raw bytes; the field the error must name)
CONFIG_CASES = {
    "array": (b"[1, 2, 3]", "top level"),
    "string": (b'"rotation-alexnet"', "top level"),
    "null": (b"null", "top level"),
    "number": (b"42", "top level"),
    "broken-json": (b'{"architecture": ', "not valid JSON"),
    "not-utf8": (b'{"name": "\xff"}', "not UTF-8"),
    "deep-nesting": (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),  # RecursionError in json
    "huge-int": (b'{"architecture": ' + b"9" * 5000 + b"}", "not valid JSON"),
    "too-big": (b"{" + b" " * (2 << 20) + b"}", "more than the"),
    "no-architecture": (config(architecture=DROP), "architecture: missing"),
    "no-pretext": (config(pretext=DROP), "pretext: missing"),
    "no-data-config": (config(data_config=DROP), "data_config: missing"),
    "no-input-size": (config(**{"data_config.input_size": DROP}), "data_config.input_size: missing"),
    "probe-string": (config(probe="yes"), "probe: must be an object"),
    "arch-args-list": (config(arch_args=[1]), "arch_args: must be an object"),
    "unknown-architecture": (config(architecture="vgg16"), "architecture: unknown value 'vgg16'"),
    "unknown-pretext": (config(pretext="inpainting"), "pretext: unknown value"),
    "unknown-arch-arg": (config(**{"arch_args.depth": 5}), "arch_args.depth: not an argument of alexnet"),
    "unknown-pretext-arg": (config(**{"pretext_args.foo": 1}), "pretext_args.foo: not an argument"),
    "markup-key": (config(**{"pretext_args.[/bold]": 1}), "pretext_args.'[/bold]': not an argument"),
    "negative-size": (config(**{"data_config.input_size": [1, -96, 96]}), "data_config.input_size[1]"),
    "size-not-int": (config(**{"data_config.input_size": [1, 96.5, 96]}), "data_config.input_size[1]: must be an integer"),
    "bool-in-chans": (config(**{"arch_args.in_chans": True}), "arch_args.in_chans: must be an integer"),
    "in-chans-mismatch": (config(**{"arch_args.in_chans": 3}), "arch_args.in_chans: cannot build the model"),
    # the memory denial-of-service sizes: refused by the schema before anything is built
    "hidden-1e9": (config(**{"pretext_args.hidden": 10**9}), "pretext_args.hidden: must be in 1..16384"),
    "in-chans-1e7": (config(**{"arch_args.in_chans": 10**7}), "arch_args.in_chans: must be in 1..4"),
    "input-1e5": (config(**{"data_config.input_size": [1, 100000, 100000]}), "data_config.input_size[1]: must be in 1..1024"),
    "probe-grid-1e6": (config(**{"probe.heads.conv1.grid": [10**6, 10**6]}), "probe.heads.conv1.grid[0]"),
    "probe-classes-str": (config(**{"probe.classes": "abc"}), "probe.classes: must be an array"),
    # values that gave exit 0 and NaN features, or were taken silently
    "std-zero": (config(**{"data_config.std": [0]}), "data_config.std[0]: must be a positive number"),
    "mean-nan": (SHIPPED_TEXT.replace('"mean": [\n      0.286', '"mean": [\n      NaN').encode(), "data_config.mean[0]"),
    "mean-infinity": (SHIPPED_TEXT.replace('"mean": [\n      0.286', '"mean": [\n      Infinity').encode(),
                      "data_config.mean[0]: inf is not a JSON number"),
    "std-1e999": (SHIPPED_TEXT.replace('"std": [\n      0.353', '"std": [\n      1e999').encode(), "data_config.std[0]"),
    "nan-in-provenance": (SHIPPED_TEXT.replace('"seconds": 4112.6', '"seconds": NaN').encode(), "provenance.seconds"),
    "crop-pct-negative": (config(**{"data_config.crop_pct": -1}), "data_config.crop_pct"),
    "no-mean": (config(**{"data_config.mean": DROP}), "data_config.mean: missing"),
    "mean-wrong-length": (config(**{"data_config.mean": [0.5, 0.5, 0.5]}), "data_config.mean: must be an array of 1"),
    "interpolation": (config(**{"data_config.interpolation": "lanczos9"}), "data_config.interpolation: unknown value"),
    "channels": (config(**{"data_config.channels": "CMYK"}), "data_config.channels: unknown value"),
    "channels-mismatch": (config(**{"data_config.channels": "RGB"}), "data_config.channels: 'RGB' gives 3-channel input"),
    "name-escape": (config(name="x\x1b[2J\x1b[31mpwned"), "name: must be 1 to 256 printable characters"),
    "accuracy-string": (config(**{"probe.accuracy.conv1": "high"}), "probe.accuracy.conv1: must be a finite number"),
    "pretext-accuracy-string": (config(**{"provenance.pretext_accuracy": "99%"}), "provenance.pretext_accuracy"),
    "sha256-not-hex": (config(**{"weights.sha256": "../../etc/passwd"}), "weights.sha256"),
}

# Found only when the model is built on the meta device (zoo.load, not `sslzoo info`).
BUILD_CASES = {
    "input-too-small": (config(**{"data_config.input_size": [1, 32, 32]}), "data_config.input_size: [1, 32, 32] does not fit"),
    "probe-channels": (config(**{"probe.heads.conv1.channels": 65}), "probe.heads.conv1.channels: 65, but the conv1 tap has 64"),
    "probe-not-a-tap": (config(**{"probe.heads.fc7": {"channels": 4096, "grid": [1, 1]}}), "probe.heads.fc7: not a tap"),
    "probe-grid-too-big": (config(**{"probe.heads.conv5.grid": [50, 50]}), "probe.heads.conv5.grid"),
    # each size in range, together 4.3 G parameters: refused by the budget, before allocation
    "parameter-budget": (config(**{"pretext_args.hidden": 16384, "data_config.input_size": [1, 1024, 1024]}),
                         "parameters and buffers, more than the"),
    "layers": (config(layers=["conv1", "fc6"]), "layers:"),
}


def make_dir(root: Path, name: str, content, weights: Path | None = None) -> Path:
    d = root / name
    d.mkdir()
    (d / "model.safetensors").symlink_to(weights or SHIPPED / "model.safetensors")
    if content is not None:
        (d / "config.json").write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return d


def cli_info(directory: Path):
    """`sslzoo info DIR` in process (typer's runner; the real entry point is run in a subprocess below)."""
    result = CliRunner().invoke(app, ["info", str(directory)])
    assert isinstance(result.exception, SystemExit), result.exception  # typer.Exit, not an exception escaping
    return result


def assert_one_error(result, *needles: str) -> None:
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def assert_refused(directory: Path, *needles: str) -> None:
    start = time.monotonic()
    with pytest.raises(zoo.ZooError) as err:
        zoo.load(directory)
    assert time.monotonic() - start < QUICK, time.monotonic() - start
    for needle in needles:
        assert needle in str(err.value), (needle, str(err.value))


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_config_corpus_is_one_error_line(case, tmp_path):
    content, field = CONFIG_CASES[case]
    d = make_dir(tmp_path, case, content)
    result = cli_info(d)
    assert_one_error(result, str(d / "config.json"), field)
    assert_refused(d, "config.json", field)
    with pytest.raises(zoo.ZooError):
        zoo.load(d, pretrained=False)


@pytest.mark.parametrize("case", list(BUILD_CASES))
def test_build_corpus_is_refused_before_allocation(case, tmp_path):
    content, field = BUILD_CASES[case]
    d = make_dir(tmp_path, case, content)
    assert_refused(d, str(d / "config.json"), field)
    if not case.startswith("probe"):  # pretrained=False drops the probe heads (they are weights)
        with pytest.raises(zoo.ZooError, match="config.json"):
            zoo.load(d, pretrained=False)


def test_config_that_is_no_regular_file(tmp_path):
    """A directory, /dev/zero, a FIFO (whose open() would block forever) as config.json: refused
    without reading, by `sslzoo info` (real entry point) and zoo.load, each within seconds."""
    cases = {"directory": "a directory", "dev-zero": "a character device", "fifo": "a FIFO", "dangling": "missing"}
    for name in cases:
        d = make_dir(tmp_path, name, None)
        target = d / "config.json"
        if name == "directory":
            target.mkdir()
        elif name == "dev-zero":
            target.symlink_to("/dev/zero")
        elif name == "fifo":
            os.mkfifo(target)
        else:
            target.symlink_to(tmp_path / "nowhere.json")
    code = ("import sys, time\nfrom sslzoo import zoo\nfor d in sys.argv[1:]:\n t = time.monotonic()\n"
            " try:\n  zoo.load(d)\n except zoo.ZooError as e:\n  print('REFUSED', round(time.monotonic() - t, 2), e)\n")
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code, *(str(tmp_path / n) for n in cases)], capture_output=True,
                          text=True, timeout=120)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0 and len(lines) == len(cases), proc.stderr
    for line, (name, kind) in zip(lines, cases.items()):
        took = float(line.split()[1])
        assert took < QUICK and f"{tmp_path / name / 'config.json'}: " in line and kind in line, line
    fifo = run_cli("info", tmp_path / "fifo", timeout=120)
    assert time.monotonic() - start < 120
    assert fifo.returncode == 1 and "Traceback" not in fifo.stderr
    lines = [line for line in fifo.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "config.json: not a regular file (a FIFO)" in lines[0]


# --- weights ---------------------------------------------------------------------------------------

def weights_dir(root: Path, name: str, change, *, keep_sha: bool) -> Path:
    """A directory with the shipped config and a model.safetensors changed by ``change(state)``;
    config.json's sha256 updated to the new file (keep_sha) or removed."""
    d = root / name
    d.mkdir()
    state = load_file(SHIPPED / "model.safetensors")
    change(state)
    save_file(state, d / "model.safetensors")
    cfg = config()
    if keep_sha:
        cfg["weights"]["sha256"] = sha256_file(d / "model.safetensors")
    else:
        del cfg["weights"]["sha256"]
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def _set(key, fn):
    return lambda state: state.__setitem__(key, fn(state[key]))


WEIGHT_CASES = {  # id -> (change, keep the sha256 in config.json, what the error names)
    "nan-sha-matches": (_set("trunk.conv2.conv.weight", lambda t: t.index_fill(0, torch.tensor([3]), float("nan"))), True,
                        ["trunk.conv2.conv.weight", "non-finite"]),
    "inf-no-sha": (_set("head.mlp.1.weight", lambda t: t.index_fill(0, torch.tensor([0]), float("inf"))), False,
                   ["head.mlp.1.weight", "non-finite"]),
    "negative-running-var": (_set("trunk.conv3.bn.running_var", lambda t: -t), True,
                             ["trunk.conv3.bn.running_var", "negative"]),
    "int64-weight": (_set("trunk.conv1.conv.weight", lambda t: t.long()), False, ["trunk.conv1.conv.weight", "dtype"]),
    "bool-weight": (_set("trunk.conv1.bn.weight", lambda t: t > 0), True, ["trunk.conv1.bn.weight", "dtype"]),
    "shape": (_set("trunk.conv4.bn.bias", lambda t: t[:10]), False, ["does not fit alexnet/rotation", "trunk.conv4.bn.bias"]),
    "extra-tensor": (lambda s: s.__setitem__("evil", torch.zeros(3)), False, ["does not fit", "unexpected evil"]),
    "missing-tensor": (lambda s: s.pop("trunk.conv5.bn.running_mean"), False, ["missing trunk.conv5.bn.running_mean"]),
}


@pytest.mark.parametrize("case", list(WEIGHT_CASES))
def test_bad_weights_are_refused_naming_the_tensor(case, tmp_path):
    change, keep_sha, needles = WEIGHT_CASES[case]
    d = weights_dir(tmp_path, case, change, keep_sha=keep_sha)
    assert_refused(d, str(d / "model.safetensors"), *needles)


def test_weights_file_that_is_not_a_model(tmp_path):
    header = json.dumps({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    bad = {
        "huge-header-length": ((2**60).to_bytes(8, "little") + b"{}", "header length"),
        "header-lies-about-size": (len(header).to_bytes(8, "little") + header, "bad header entry"),
        "huge-file": (b"\0" * 64, None),  # replaced below by a sparse file far larger than the model
    }
    for name, (content, needle) in bad.items():
        d = make_dir(tmp_path, name, None, weights=tmp_path / f"{name}.safetensors")
        (d / "config.json").write_text(json.dumps(config(**{"weights.sha256": None})))
        with open(tmp_path / f"{name}.safetensors", "wb") as f:
            f.write(content)
            if name == "huge-file":
                f.truncate(64 << 30)  # sparse: 64 GiB of nothing on disk
        assert_refused(d, str(d / "model.safetensors"), *([needle] if needle else ["more than the"]))
    d = make_dir(tmp_path, "weights-dev-zero", json.dumps(config()).encode(), weights=Path("/dev/zero"))
    assert_refused(d, "not a regular file (a character device)")


def test_weights_fifo_does_not_hang(tmp_path):
    d = tmp_path / "fifo"
    d.mkdir()
    (d / "config.json").write_text(SHIPPED_TEXT)
    os.mkfifo(d / "model.safetensors")
    code = "import sys\nfrom sslzoo import zoo\ntry:\n zoo.load(sys.argv[1])\nexcept zoo.ZooError as e:\n print('REFUSED', e)"
    proc = subprocess.run([sys.executable, "-c", code, str(d)], capture_output=True, text=True, timeout=120)
    assert "REFUSED" in proc.stdout and "model.safetensors: not a regular file (a FIFO)" in proc.stdout, proc.stderr


def test_memory_dos_cases_stay_small_in_a_fresh_process(tmp_path):
    """The hostile sizes, all in one fresh process: each refused in well under a second, and the
    process never grows much past what loading one small model takes (~0.6 GB here)."""
    cases = ["hidden-1e9", "in-chans-1e7", "input-1e5", "probe-grid-1e6"]
    dirs = [make_dir(tmp_path, c, CONFIG_CASES[c][0]) for c in cases]
    dirs.append(make_dir(tmp_path, "parameter-budget", BUILD_CASES["parameter-budget"][0]))
    # peak RSS from /proc/self/status VmHWM: it starts afresh at exec, where getrusage's ru_maxrss keeps the
    # forking parent's size (a pytest process that has run the whole suite is ~2 GB by then)
    code = ("import sys, time\nfrom sslzoo import zoo\nzoo.load('rotation-alexnet')\n"
            "for d in sys.argv[1:]:\n t = time.monotonic()\n try:\n  zoo.load(d); print('LOADED', d)\n"
            " except zoo.ZooError as e:\n  print('REFUSED', round(time.monotonic() - t, 2))\n"
            "hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM:'))\n"
            "print('RSS_MB', int(hwm.split()[1]) // 1024)\n")
    proc = subprocess.run([sys.executable, "-c", code, *map(str, dirs)], capture_output=True, text=True, timeout=180,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0 and len(lines) == len(dirs) + 1, (proc.stdout, proc.stderr)
    assert all(line.startswith("REFUSED") and float(line.split()[1]) < QUICK for line in lines[:-1]), lines
    assert int(lines[-1].split()[1]) < 1500, lines[-1]


# --- names -----------------------------------------------------------------------------------------

def test_names_that_are_not_models():
    for name, needle in [("", "empty model name"), ("  ", "empty model name"), ("a" * 300, "name too long"),
                         ("x/" + "b" * 256, "name too long"), ("a\0b", "NUL"),
                         ("hf-hub:../x", "not a valid Hub repo id"), ("hf-hub:org/../x", "expected hf-hub:ORG/NAME"),
                         ("hf-hub:-org/x", "not a valid Hub repo id"), ("hf-hub:org/x.", "not a valid Hub repo id"),
                         ("hf-hub:org/a--b", "not a valid Hub repo id"), ("hf-hub:org/" + "n" * 97, "not a valid Hub repo id"),
                         ("hf-hub:org/name@../../x", "not a valid revision"), ("hf-hub:org/name@/etc", "not a valid revision"),
                         ("hf-hub:org/name@a\\b", "not a valid revision"), ("hf-hub:org/name@v1\n", "not a valid revision"),
                         ("hf-hub:org/name@" + "r" * 201, "not a valid revision"), ("hf-hub:org/name@", "not a valid revision")]:
        start = time.monotonic()
        with pytest.raises(zoo.ZooError, match=needle):
            zoo.load(name)
        with pytest.raises(zoo.ZooError, match=needle):
            zoo.load(name, pretrained=False)
        assert time.monotonic() - start < QUICK
    assert parse_hub_name("hf-hub:my-org/rotation_alexnet.v2@refs/pr/3") == ("my-org/rotation_alexnet.v2", "refs/pr/3")
    assert parse_hub_name("hf-hub:org/name@" + "0" * 40) == ("org/name", "0" * 40)
    result = cli_info("")
    assert_one_error(result, "empty model name")


# Loads hf-hub names offline against an HF cache laid out under HF_HOME (set before the hub is imported).
HUB_PROBE = """
import sys
from sslzoo import zoo
for name in sys.argv[1:]:
    try:
        print("LOADED", zoo.resolve(name))
    except zoo.ZooError as e:
        print("REFUSED", e)
"""


def test_hub_revision_cannot_leave_the_cache(tmp_path):
    """`hf-hub:org/name@../../../../evil/ref` used to load a model directory outside the HF cache
    (the revision walks out of refs/, the file it reaches names a 'commit' that walks out of
    snapshots/); a poisoned refs/main does the same with a valid revision."""
    hub = tmp_path / "hf" / "hub"
    repo = hub / "models--org--name"
    (repo / "refs").mkdir(parents=True)
    (repo / "snapshots").mkdir()
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "model").symlink_to(SHIPPED)
    (evil / "ref").write_text("../../../../evil/model")
    (repo / "refs" / "main").write_text("../../../../evil/model")
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    env.pop("HF_HUB_CACHE", None)
    names = ["hf-hub:org/name@../../../../evil/ref", "hf-hub:org/name", "hf-hub:org/name@main"]
    proc = subprocess.run([sys.executable, "-c", HUB_PROBE, *names], capture_output=True, text=True, timeout=120, env=env)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0 and len(lines) == 3, proc.stderr
    assert lines[0].startswith("REFUSED") and "not a valid revision" in lines[0], lines[0]
    for line in lines[1:]:
        assert line.startswith("REFUSED") and "outside the Hugging Face cache" in line, line


# --- the schema accepts what is real -------------------------------------------------------------

def test_every_real_config_passes():
    for name in list_models(tags=True):
        cfg = lookup(name)[1].config
        _validate.check_config(cfg, name)
        _validate.check_buildable(cfg, name)
    for source in SOURCES.values():
        _validate.check_buildable(_validate.check_config(source.config(), source.id), source.id)
    for d in (SHIPPED.parent).iterdir():
        assert zoo.read_config(d)["name"] == d.name
    assert math.isclose(zoo.load(SHIPPED).data_config["std"][0], 0.353)


# --- converters ------------------------------------------------------------------------------------

def _rotnet_alexnet_state() -> dict[str, torch.Tensor]:
    from .test_convert import rotnet_alexnet

    return rotnet_alexnet(head=False)[0]["network"]


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("SSLZOO_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "zoo"


@pytest.mark.filterwarnings("ignore:Validating sparse tensor invariants")
def test_converter_refuses_tensors_it_would_have_cast(tmp_path, store):
    good = _rotnet_alexnet_state()
    w, rv = "_feature_blocks.2.0.weight", "_feature_blocks.4.1.running_var"
    cases = {
        "int64": ({w: good[w].long()}, "dtype torch.int64"),
        "bool": ({w: good[w] > 0}, "dtype torch.bool"),
        "complex": ({w: good[w].to(torch.complex64)}, "dtype torch.complex64"),
        "sparse": ({w: good[w].to_sparse()}, "sparse"),
        "meta": ({w: torch.empty(good[w].shape, device="meta")}, "meta tensor"),
        "negative-var": ({rv: -good[rv] - 1}, "negative"),
        "inf": ({rv: torch.full_like(good[rv], float("inf"))}, "non-finite"),
    }
    for name, (change, needle) in cases.items():
        path = tmp_path / f"{name}.pth"
        torch.save({"network": dict(good, **change)}, path)
        with pytest.raises(zoo.ZooError) as err:
            zoo.convert("rotnet-alexnet", path)
        msg = str(err.value)
        assert str(path) in msg and needle in msg, (name, msg)
        zoo_key = "trunk.blocks.conv2.conv.weight" if w in change else "trunk.blocks.conv3.bn.running_var"
        assert f"{zoo_key} ({w if w in change else rv} in the checkpoint)" in msg, msg
    assert not store.exists()


def _tar_gz_declaring(path: Path, member: str, size: int, data: bytes = b"") -> None:
    """A .tar.gz whose one member's header declares ``size`` bytes but holds only ``data``: what a
    member inflating to ``size`` looks like up to its header, without inflating it here."""
    info = tarfile.TarInfo(member)
    info.size = size
    raw = info.tobuf(format=tarfile.GNU_FORMAT) + data.ljust(512, b"\0")
    import gzip

    path.write_bytes(gzip.compress(raw))


def test_archive_and_zip_bombs_are_refused_before_inflating(tmp_path, store, monkeypatch):
    bomb = tmp_path / "ImageNet_RotNet_AlexNet.tar.gz"
    _tar_gz_declaring(bomb, "ImageNet_RotNet_AlexNet/model_net_epoch50", 6 << 30)  # a 6 GiB member
    start = time.monotonic()
    with pytest.raises(zoo.ZooError, match=r"member .*model_net_epoch50.* inflates to 6442450944 bytes, more than"):
        zoo.convert("rotnet-alexnet", bomb)
    assert time.monotonic() - start < QUICK
    proc = run_cli("convert", "rotnet-alexnet", bomb, env={"SSLZOO_HOME": str(store.parent)}, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "inflates to 6442450944" in proc.stderr

    # with a small limit, real gzip and zip inflation is refused too (the checks do not trust file sizes)
    monkeypatch.setattr(_convert, "checkpoint_limit", lambda source: 1 << 20)
    zeros = tmp_path / "model_net_epoch50"
    zeros.write_bytes(b"\0" * (2 << 20))
    with tarfile.open(tmp_path / "zeros.tar.gz", "w:gz") as tar:
        tar.add(zeros, "model_net_epoch50")
    assert (tmp_path / "zeros.tar.gz").stat().st_size < 1 << 20
    with pytest.raises(zoo.ZooError, match="inflates to 2097152 bytes"):
        zoo.convert("rotnet-alexnet", tmp_path / "zeros.tar.gz")
    small = {"network": {k: v[:1].clone() for k, v in list(_rotnet_alexnet_state().items())[:2]}}
    torch.save(small, tmp_path / "zip.pth")
    with zipfile.ZipFile(tmp_path / "zip.pth", "a", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data/99", b"\0" * (2 << 20))  # a deflated record inflating past the limit
    with pytest.raises(zoo.ZooError, match="records inflate to"):
        zoo.convert("rotnet-alexnet", tmp_path / "zip.pth")
    (tmp_path / "big.pth").write_bytes(b"\0" * (2 << 20))
    with pytest.raises(zoo.ZooError, match="more than the 1048576 a checkpoint of this model needs"):
        zoo.convert("rotnet-alexnet", tmp_path / "big.pth")
    os.mkfifo(tmp_path / "fifo.pth")
    with pytest.raises(zoo.ZooError, match="not a regular file"):
        zoo.convert("rotnet-alexnet", tmp_path / "fifo.pth")
    assert not store.exists()


def test_bounded_read_stops_past_the_limit():
    with pytest.raises(zoo.ZooError, match="inflates past 10 bytes"):
        _convert._read_bounded(io.BytesIO(b"x" * 11), 10, "m")
    assert _convert._read_bounded(io.BytesIO(b"x" * 10), 10, "m") == b"x" * 10


def test_publish_refuses_a_fifo_config_without_reading_it(tmp_path):
    """`sslzoo publish` validates through zoo.read_config: a FIFO config.json is named, not read
    (an open() of it would block forever), and nothing is sent."""
    d = tmp_path / "fifo-publish"
    d.mkdir()
    for name in ("model.safetensors", "README.md"):
        (d / name).write_bytes((SHIPPED / name).read_bytes())
    os.mkfifo(d / "config.json")
    proc = run_cli("publish", d, "--repo", "org/name", timeout=120,
                   env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "x"})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "not published" in proc.stderr and "config.json: not a regular file (a FIFO)" in proc.stderr
