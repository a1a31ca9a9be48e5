"""Linear probe (training/probe.py, `sslzoo probe`): solvers, feature cache, report, heads, card.

Everything runs on 2000 train / 500 test Fashion-MNIST images and an untrained model saved in a
temporary directory; features are extracted once per module and then come from the cache.
"""
from __future__ import annotations

import json
import os

import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image

from sslzoo import zoo
from sslzoo.training import _lbfgs, _precision, feature_cache, probe
from sslzoo.training.augment import to_model_input
from sslzoo.training.data import FMNIST_CLASSES, load_dataset

from .conftest import run_cli

N_TRAIN, N_TEST = 2000, 500


pytestmark = pytest.mark.usefixtures("one_thread")  # the seed solver's 192-row steps suffer most


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("features")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(123)  # not the random-init baseline's seed (0)
    d = tmp_path_factory.mktemp("probe") / "model"
    zoo.save_pretrained(zoo.load("rotation-alexnet", pretrained=False), d)
    return d


@pytest.fixture(scope="module")
def data(fmnist_root):
    train = load_dataset("fashion-mnist", "train", root=fmnist_root).subset(N_TRAIN)
    test = load_dataset("fashion-mnist", "test", root=fmnist_root).subset(N_TEST)
    return train, test


@pytest.fixture(scope="module")
def feats(model_dir, data, cache):
    """layer -> (standardised train features, mean, std, raw test features); fills the cache."""
    train, test = data
    model = zoo.load(model_dir)
    xs_train = probe.cached_features(model, train, model.layers, cache_dir=cache)
    xs_test = probe.cached_features(model, test, model.layers, cache_dir=cache)
    out = {}
    for layer in model.layers:
        mean, std = probe.standardiser(xs_train[layer])
        out[layer] = (probe.standardise_(xs_train[layer], mean, std), mean, std, xs_test[layer])
    return out


def _test_accuracy(fitted, layer_feats, labels) -> float:
    _, mean, std, x_test = layer_feats
    logits = torch.addmm(fitted.bias, (x_test - mean) / std, fitted.weight.T)  # M x K
    return (logits.argmax(1) == labels).float().mean().item()


def test_solvers_agree_on_a_small_subset(feats, data):
    """Tolerance: per tap <= 4 pt, mean over taps <= 2 pt. With 2000 images for 2304-4096 dims the
    problem is over-parametrised and the seed's 30 epochs (330 SGD steps) stop far from the optimum
    (objective ~0.1 vs ~0.03 for L-BFGS), so the two classifiers differ; one of 500 test images is
    0.2 pt and a tap's accuracy has a binomial standard error of ~1.6 pt. On the full 60k set the
    benchmark (benchmarks/bench_probe.py) holds them to 0.5 pt."""
    train, test = data
    diffs = {}
    for layer, f in feats.items():
        fast = probe.fit("fast", f[0], train.labels, 10)
        seed = probe.fit("seed", f[0], train.labels, 10)
        diffs[layer] = 100 * abs(_test_accuracy(fast, f, test.labels) - _test_accuracy(seed, f, test.labels))
        assert fast.objective <= seed.objective, layer  # converged vs stopped after 30 epochs
    assert max(diffs.values()) <= 4.0, diffs
    assert sum(diffs.values()) / len(diffs) <= 2.0, diffs


def test_fast_solver_reaches_a_lower_objective_than_a_few_sgd_epochs(feats, data):
    train, _ = data
    z = feats["conv3"][0]
    fast = probe.fit_lbfgs(z, train.labels, 10)
    few = probe.fit_sgd(z, train.labels, 10, probe.SGDProtocol(epochs=3, milestones=()))
    assert fast.objective <= few.objective
    assert fast.info["grad_norm_rel"] <= probe.LBFGSConfig().tol  # stopped on the gradient tolerance
    assert fast.objective == pytest.approx(probe.objective(z, train.labels, fast.weight, fast.bias, 5e-4))


def _synthetic_problem(n=4000, d=512, k=10, sep=0.15, seed=0):
    """Standardised, strongly correlated features of k overlapping Gaussian classes (not separable)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, k, (n,), generator=g)
    mix = torch.randn(d, d, generator=g) * 3 / d ** 0.5
    x = (torch.randn(n, d, generator=g) + sep * torch.randn(k, d, generator=g)[y]) @ mix
    mean, std = probe.standardiser(x)
    return probe.standardise_(x, mean, std), y


def test_bf16_and_fp32_passes_reach_the_same_objective():
    """The solver's pass dtype changes its arithmetic, not the problem: bf16, fp32 and fp16-storage
    (float16 storage, float32 products) all reach the optimum of a float32 reference run to 1e-6
    (objective within 1e-3 relative) and make the same predictions."""
    z, y = _synthetic_problem()
    ref = probe.fit_lbfgs(z, y, 10, probe.LBFGSConfig(pass_dtype="fp32", tol=1e-6, max_iter=500))
    assert ref.info["grad_norm_rel"] <= 1e-6
    fits = {dt: probe.fit_lbfgs(z, y, 10, probe.LBFGSConfig(pass_dtype=dt, tol=1e-4))
            for dt in ("fp32", "bf16", "fp16-storage")}
    for dt, f in fits.items():
        assert f.info["pass_dtype"] == dt
        assert f.info["grad_norm_rel"] <= 1e-4, dt  # converged, not stopped by max_iter
        assert f.objective == pytest.approx(ref.objective, rel=1e-3), dt
    pred = {dt: torch.addmm(f.bias, z, f.weight.T).argmax(1) for dt, f in fits.items()}
    assert (pred["fp32"] == pred["bf16"]).float().mean() >= 0.99
    assert (pred["fp32"] == pred["fp16-storage"]).float().mean() >= 0.99
    assert fits["fp32"].objective == pytest.approx(fits["bf16"].objective, rel=1e-3)
    assert fits["fp32"].objective == pytest.approx(fits["fp16-storage"].objective, rel=1e-3)


@pytest.mark.parametrize("block_rows", [1, 7, 128, 10_000])
def test_fp16_storage_passes_are_float32_products_on_the_rounded_features(block_rows):
    """fp16-storage: the blocks (the last one partial, or one block for all rows) cover every row
    once, and each pass equals the float32 product on the float16-rounded features."""
    z, _ = _synthetic_problem(n=1000, d=96)
    feats = _lbfgs._PassFeatures(z, "fp16-storage", block_rows)
    assert feats.mode == "fp16-storage" and feats.rows.dtype == torch.float16
    assert feats.block.dtype == torch.float32 and len(feats.block) == min(block_rows, 1000)
    zr = z.half().float()
    g = torch.Generator().manual_seed(1)
    w, b, r = torch.randn(10, 96, generator=g), torch.randn(10, generator=g), torch.randn(10, 1000, generator=g)
    torch.testing.assert_close(feats.logits(w, b), torch.addmm(b, zr, w.T).T, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(feats.residual_grad(r), r @ zr, rtol=1e-5, atol=1e-4)
    probe.release_workspace()


def test_fp16_storage_falls_back_to_float32_beyond_the_float16_range():
    """Standardised features fit float16 (|z| <= sqrt(N - 1)); unstandardised ones beyond 65504 would
    overflow, so that fit's passes read float32, and ``info`` says so."""
    z, y = _synthetic_problem(n=500, d=64)
    assert z.abs().max() <= (len(z) - 1) ** 0.5
    assert probe.fit_lbfgs(z, y, 10, probe.LBFGSConfig(pass_dtype="fp16-storage")).info["pass_dtype"] == "fp16-storage"
    big = z * 1e5  # up to ~5e5
    fitted = probe.fit_lbfgs(big, y, 10, probe.LBFGSConfig(pass_dtype="fp16-storage", max_iter=3))
    assert fitted.info["pass_dtype"] == "fp32"
    assert torch.isfinite(fitted.weight).all()
    probe.release_workspace()


def test_bf16_and_fp16_copies_share_the_workspace():
    """Alternating bf16 and fp16-storage (the benchmark does, tap by tap) reuses one 2-byte buffer."""
    z, y = _synthetic_problem(n=500, d=64)
    probe.release_workspace()
    _lbfgs._PassFeatures(z, "bf16")
    buf = _lbfgs._WORKSPACE[0]
    fp16 = _lbfgs._PassFeatures(z, "fp16-storage")
    assert fp16.rows.dtype == torch.float16 and fp16.rows.data_ptr() == buf.data_ptr()
    assert len(_lbfgs._WORKSPACE) == 1 and _lbfgs._WORKSPACE[0] is buf
    probe.release_workspace()


@pytest.mark.parametrize("native", [False, True])
def test_auto_pass_dtype_follows_the_hardware(native, monkeypatch):
    """auto: bf16 passes only where the CPU multiplies bf16 natively (emulated bf16 products are ~100x
    slower than float32 on an AVX2-only CPU); elsewhere fp16-storage, float32 products on a float16
    copy. fp32 passes read the caller's features, no 16-bit copy."""
    monkeypatch.setattr(_precision, "cpu_has_native_bf16", lambda: native)
    assert _lbfgs.resolved_pass_dtype("auto", "cpu") == ("bf16" if native else "fp16-storage")
    z, y = _synthetic_problem(n=500, d=64)
    probe.release_workspace()
    fitted = probe.fit("fast", z, y, 10)  # LBFGSConfig's default: auto
    assert fitted.info["pass_dtype"] == ("bf16" if native else "fp16-storage")
    assert [w.dtype for w in _lbfgs._WORKSPACE] == [torch.bfloat16 if native else torch.float16]
    probe.release_workspace()
    forced = probe.fit("fast", z, y, 10, pass_dtype="fp32" if native else "bf16")  # an explicit choice wins
    assert forced.info["pass_dtype"] == ("fp32" if native else "bf16")
    assert bool(_lbfgs._WORKSPACE) == (not native)
    probe.release_workspace()
    assert probe.fit("fast", z, y, 10, pass_dtype="fp32").info["pass_dtype"] == "fp32"
    assert not _lbfgs._WORKSPACE  # fp32 passes: the caller's features, no copy
    assert probe.fit("seed", z[:192], y[:192], 10).info["pass_dtype"] == "fp32"
    probe.release_workspace()


def test_unknown_pass_dtype_is_an_error():
    with pytest.raises(ValueError, match="^pass_dtype 'fp16': use one of auto, bf16, fp32, fp16-storage$"):
        probe.LBFGSConfig(pass_dtype="fp16")
    with pytest.raises(ValueError, match="block_rows 0: must be >= 1"):
        probe.LBFGSConfig(block_rows=0)


def test_features_cache_hit_skips_the_trunk(model_dir, data, tmp_path, monkeypatch):
    monkeypatch.setenv(probe.CACHE_ENV, str(tmp_path / "env-cache"))
    assert probe.default_cache_dir() == tmp_path / "env-cache"
    model = zoo.load(model_dir)
    small = data[0].subset(64)
    layers = ("conv1", "conv2")
    before = dict(probe.STATS)
    first = probe.cached_features(model, small, layers)
    assert probe.STATS["extracted_images"] == before["extracted_images"] + 64
    second = probe.cached_features(model, small, layers)
    assert probe.STATS["extracted_images"] == before["extracted_images"] + 64  # nothing recomputed
    assert probe.STATS["cache_hits"] == before["cache_hits"] + 2
    for layer in layers:
        assert torch.equal(first[layer], second[layer])
        assert first[layer].shape == (64, {"conv1": 4096, "conv2": 3072}[layer])
    files = sorted((tmp_path / "env-cache").rglob("*.safetensors"))
    assert len(files) == 2
    files[0].write_bytes(b"not safetensors")  # a corrupt entry is recomputed, not trusted
    probe.cached_features(model, small, layers)
    assert probe.STATS["extracted_images"] == before["extracted_images"] + 128
    probe.cached_features(model, data[0].subset(32), ("conv1",))  # another limit is another key
    assert probe.STATS["extracted_images"] == before["extracted_images"] + 160


@pytest.fixture(scope="module")
def probed(model_dir, feats, cache):
    """run_probe on the saved model (its features already cached by ``feats``)."""
    before = probe.STATS["extracted_images"]
    report = probe.run_probe(model_dir, train_limit=N_TRAIN, test_limit=N_TEST, cache_dir=cache)
    return report, probe.STATS["extracted_images"] - before


def test_probe_reuses_cached_features(probed):
    _, extracted = probed
    assert extracted == N_TRAIN + N_TEST  # only the random-init baseline ran through a trunk


def test_report_json_and_plot(probed, model_dir):
    report, _ = probed
    on_disk = json.loads((model_dir / probe.REPORT_FILE).read_text())
    assert on_disk == json.loads(json.dumps(report))
    layers = ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert report["layers"] == layers and report["train_images"] == N_TRAIN and report["test_images"] == N_TEST
    # 96 px: conv1 23x23 (64 ch), conv2 11x11 (192), conv3..5 5x5 (384, 256, 256), each pooled to the
    # largest grid of at most 4096 dims: 8x8, 4x4, 3x3, 4x4, 4x4
    assert report["feature_dims"] == {"conv1": 4096, "conv2": 3072, "conv3": 3456, "conv4": 4096, "conv5": 4096}
    for accs in (report["accuracy"], report["random_accuracy"]):
        assert set(accs) == set(layers) and all(0.5 < a <= 1.0 for a in accs.values())  # 10 classes: chance is 0.1
    assert report["command"] == f"sslzoo probe {model_dir} --train-limit {N_TRAIN} --test-limit {N_TEST}"
    assert "L-BFGS" in report["protocol"] and "5e-4" in report["protocol"] and "Random-init" in report["protocol"]
    assert report["timings"]["fit_s"]["fast"] > 0
    used = "bf16" if _precision.native_bf16("cpu") else "fp16-storage"
    assert _lbfgs.resolved_pass_dtype("auto", "cpu") == used
    assert report["solver_pass_dtype"] == {"fast": used}
    assert all(r["pass_dtype"] == used for r in report["results"]["model"]["fast"].values())
    assert report["machine"] == _precision.machine("cpu")
    with Image.open(model_dir / probe.PLOT_FILE) as img:
        assert img.format == "PNG" and img.width >= 400 and img.height >= 300
        img.verify()


def test_saved_heads_reproduce_the_reported_accuracy(probed, model_dir, data):
    report, _ = probed
    _, test = data
    m = zoo.load(model_dir)  # sha256 of the re-saved weights checked
    assert sorted(m.probes) == report["layers"] and m.classes == FMNIST_CLASSES
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(test), 256):  # the extraction's batches: same features to the bit
            x = to_model_input(test.images[i:i + 256], m.data_config)
            correct += (m.classify(x, "conv3").argmax(1) == test.labels[i:i + 256]).sum().item()
    assert correct / len(test) == report["accuracy"]["conv3"]


def test_card_has_the_probe_table_and_model_index(probed, model_dir):
    report, _ = probed
    text = (model_dir / "README.md").read_text()
    row = " | ".join(f"{100 * report['accuracy'][k]:.2f}" for k in report["layers"])
    assert f"| **{report['model']}** (Fashion-MNIST test) | {row} |" in text
    assert f"| {probe.RANDOM_ROW} | " in text and report["command"] in text
    results = {r.metric_name: r.metric_value for r in ModelCard.load(model_dir / "README.md").data.eval_results}
    assert results == {f"top-1 ({k})": round(100 * a, 2) for k, a in report["accuracy"].items()}
    config = json.loads((model_dir / "config.json").read_text())
    assert config["probe"]["heads"]["conv1"] == {"channels": 64, "grid": [8, 8]}
    assert config["probe"]["dataset_id"] == "fashion_mnist"


def test_unknown_layer_is_a_clear_error(model_dir):
    with pytest.raises(probe.ProbeError, match=r"no tap\(s\) conv9; its taps are conv1, conv2"):
        probe.run_probe(model_dir, layers=["conv9"])


def test_probe_at_another_input_size(model_dir, tmp_path, monkeypatch):
    """--input-size: the features come from images of that side (new feature-cache entries), the
    report says so and goes beside the working directory, and the model keeps its own heads."""
    monkeypatch.chdir(tmp_path)
    cache, own = tmp_path / "cache", (model_dir / "config.json").read_bytes()
    kw = dict(layers=["conv1"], train_limit=300, test_limit=100, random_baseline=False, cache_dir=cache)
    at_96 = probe.run_probe(model_dir, out_dir=tmp_path / "own", **kw)  # its own size
    files_96 = set(cache.rglob("*.safetensors"))
    at_160 = probe.run_probe(model_dir, input_size=160, **kw)
    assert at_96["input_size"] == [1, 96, 96] and at_160["input_size"] == [1, 160, 160]
    assert len(set(cache.rglob("*.safetensors")) - files_96) == 2  # train and test features at 160 px
    out = tmp_path / f"probe-{probe._slug(at_160['model'])}-160px"
    assert at_160["report_path"] == str(out / probe.REPORT_FILE) and (out / probe.REPORT_FILE).is_file()
    assert not (out / "model.safetensors").exists() and "saved_model_dir" not in at_160  # heads stay at 96 px
    assert at_160["command"].endswith("--train-limit 300 --test-limit 100 --input-size 160 --no-random --no-save-heads")
    assert (model_dir / "config.json").read_bytes() == own
    same = probe.run_probe(model_dir, input_size=96, out_dir=tmp_path / "again", **kw)  # its own size: a plain probe
    assert same["accuracy"] == at_96["accuracy"] and "--input-size" not in same["command"]
    with pytest.raises(probe.ProbeError, match="--input-size 32: the AlexNet trunks need at least 64 px"):
        probe.run_probe(model_dir, input_size=32, **kw)


def _cli_args(model_dir, cache) -> list[str]:
    return [str(model_dir), "--layer", "conv5", "--train-limit", str(N_TRAIN), "--test-limit", str(N_TEST),
            "--no-random", "--cache-dir", str(cache)]


def test_cli_prints_the_table_and_saves_a_probed_copy(model_dir, feats, cache, tmp_path):
    proc = run_cli("probe", *_cli_args(model_dir, cache), "--out", tmp_path / "out", check=True)
    assert "model top-1 (fast)" in proc.stdout and "random top-1" in proc.stdout and "delta" in proc.stdout
    assert "conv5" in proc.stdout and f"report: {tmp_path / 'out' / probe.REPORT_FILE}" in proc.stdout
    assert f"plot:   {tmp_path / 'out' / probe.PLOT_FILE}" in proc.stdout
    used = "bf16" if _precision.native_bf16("cpu") else "fp16-storage"
    assert f"solver passes over the features: fast {used} (" in proc.stdout
    assert zoo.load(tmp_path / "out").probes.keys() == {"conv5"}  # a probed copy; the source dir is untouched


def test_cli_json_and_errors(model_dir, feats, cache, tmp_path):
    from typer.testing import CliRunner

    from sslzoo.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["probe", *_cli_args(model_dir, cache), "--no-save-heads", "--json", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)  # progress lines go to stderr
    assert report["layers"] == ["conv5"] and report["random_accuracy"] is None
    assert (tmp_path / probe.REPORT_FILE).is_file() and not (tmp_path / "model.safetensors").exists()
    res = runner.invoke(app, ["probe", str(tmp_path / "missing")])
    assert res.exit_code == 1 and "error:" in res.stderr and "missing" in res.stderr
    res = runner.invoke(app, ["probe", str(model_dir), "--solver", "sgd"])
    assert res.exit_code == 2  # bad usage


@pytest.mark.slow
def test_full_fashion_mnist_solvers_agree(tmp_path, fmnist_root):
    """The protocol on all 60k/10k images, both solvers (~8 min on 2 cores): within 0.5 pt."""
    torch.manual_seed(0)
    d = zoo.save_pretrained(zoo.load("rotation-alexnet", pretrained=False), tmp_path / "model")
    report = probe.run_probe(d, solver="both", random_baseline=False, data_root=fmnist_root, cache_dir=tmp_path / "cache")
    assert report["agreement"]["max_abs_diff_pt"] <= 0.5, report["results"]["model"]


def _cached_limits(cache):
    """The subset sizes (the last number of each entry's data name) of the cached files."""
    return sorted(int(p.parent.name.rsplit("-", 1)[0].rsplit("_", 1)[1]) for p in cache.rglob("*.safetensors"))


def test_feature_cache_stays_under_its_limit(model_dir, data, tmp_path, monkeypatch):
    """Least recently used entries go once the cache passes $SSLZOO_CACHE_GB; a hit counts as a use."""
    model = zoo.load(model_dir)
    cache = tmp_path / "bounded"
    probe.cached_features(model, data[0].subset(16), ("conv1",), cache_dir=cache)
    probe.cached_features(model, data[0].subset(17), ("conv1",), cache_dir=cache)
    (entry_a,), (entry_b,) = (cache.glob(f"*/*_{n}-*/*.safetensors") for n in (16, 17))
    os.utime(entry_a, (1, 1))
    os.utime(entry_b, (2, 2))
    probe.cached_features(model, data[0].subset(16), ("conv1",), cache_dir=cache)  # hit: a is now the newest
    size = entry_a.stat().st_size
    monkeypatch.setenv(feature_cache.LIMIT_ENV, str(2.5 * size / 1e9))  # room for two entries, not three
    probe.cached_features(model, data[0].subset(18), ("conv1",), cache_dir=cache)
    assert _cached_limits(cache) == [16, 18]  # b, the least recently used, went
    monkeypatch.setenv(feature_cache.LIMIT_ENV, "0")  # the current run's files are never evicted
    feats = probe.cached_features(model, data[0].subset(19), ("conv1", "conv2"), cache_dir=cache)
    assert _cached_limits(cache) == [19, 19]
    assert feats["conv2"].shape[0] == 19


def test_cli_cache_lists_and_clears(model_dir, data, tmp_path):
    model = zoo.load(model_dir)
    cache = tmp_path / "listed"
    probe.cached_features(model, data[0].subset(20), ("conv1", "conv2"), cache_dir=cache)
    proc = run_cli("cache", "--cache-dir", cache, check=True)
    assert model.name in proc.stdout and "conv1 conv2" in proc.stdout and "2 file(s)" in proc.stdout
    listed = json.loads(run_cli("cache", "--cache-dir", cache, "--json", check=True).stdout)
    assert sorted(e["layer"] for e in listed["entries"]) == ["conv1", "conv2"]
    assert listed["bytes"] == sum(p.stat().st_size for p in cache.rglob("*.safetensors")) > 0
    assert "removed" in run_cli("cache", "--cache-dir", cache, "--clear", check=True).stdout
    assert list(cache.rglob("*")) == []  # files and their folders gone
