"""Streaming feature extraction: equality with a direct forward, output formats, skipped inputs,
resume after an interruption and after kill -9, and the ``sslzoo extract`` command; hostile inputs
(FIFOs, sockets, symlink loops, unreadable files and folders, thin images, files cut short, odd file
names), the .npy pair as one unit, and the resume's chunk checks."""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from typer.testing import CliRunner

from sslzoo import zoo
from sslzoo._cli_extract import collect_inputs, walk_images
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
        assert tensors[l].dtype == np.float32 and tensors[l].shape == tuple(want[l].shape) == (len(paths), res.dims[l])
        np.testing.assert_allclose(tensors[l], want[l].numpy(), rtol=1e-4, atol=1e-5)
    assert res.n_done == len(paths) and res.skipped == [] and not partial_dir(res.out).exists()


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
    assert res.n_computed == len(paths) - 4 and res.n_done == len(EXAMPLES) and len(res.skipped) == 1  # chunk 0 kept
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
    assert summary["n_images"] == len(EXAMPLES) and summary["layers"] == {"conv3": 384, "conv5": 256}
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


# --------------------------------------------------------------------------- hostile inputs (issue 14)

def _thin_png(path) -> None:
    """141 bytes: a 1 x 30000 gray PNG (passes PIL's pixel limit; 96 x 2,880,000 once resized)."""
    Image.new("L", (1, 30000), 128).save(path)


def _cut_png(path) -> None:
    data = EXAMPLES[3].read_bytes()  # a Fashion-MNIST PNG
    path.write_bytes(data[:-12])  # its IEND chunk gone: decodes, reported as recovered


def _nobody_prefix() -> list[str] | None:
    """Command prefix that runs a command as an unprivileged user, for permission tests: [] when
    not root (mode 000 already stops us), setpriv to nobody when root and it works, else None."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    probe = subprocess.run(prefix + [sys.executable, "-c", "import os; print(os.access('/', os.R_OK), os.geteuid())"],
                           capture_output=True, text=True)
    return prefix if probe.returncode == 0 and probe.stdout.split() == ["True", "65534"] else None


def test_cli_hostile_inputs(model_dir):
    """One `sslzoo extract` over a folder of everything a hostile user can put there, plus a FIFO
    and an unreadable file named on the command line: it must not block, each input it cannot
    use is named on stderr with its reason and in the JSON summary, exit 3; the file cut short is
    kept and named as recovered. Runs as nobody when the tests run as root (setpriv), so that
    permission bits bite; without setpriv the unreadable cases are left out."""
    prefix = _nobody_prefix()
    top = Path(tempfile.mkdtemp(prefix="sslzoo-hostile-"))  # outside pytest's 0700 tree: nobody must reach it
    try:
        top.chmod(0o755)
        model = top / "model"
        shutil.copytree(model_dir, model)
        model.chmod(0o755)
        for f in model.iterdir():
            f.chmod(0o644)
        images, outdir = top / "images", top / "out"
        (images / "sub").mkdir(parents=True)
        outdir.mkdir()
        outdir.chmod(0o777)
        shutil.copy(EXAMPLES[0], images / "a.jpg")
        shutil.copy(EXAMPLES[4], images / "sub" / "b.png")
        _cut_png(images / "cut.png")
        _thin_png(images / "thin.png")
        os.mkfifo(images / "fifo.png")
        os.mkfifo(top / "named-fifo.png")
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(images / "sock.png"))
        os.symlink("nowhere.png", images / "dangling.png")
        os.symlink("self.png", images / "self.png")
        os.symlink("..", images / "sub" / "up")  # a directory loop
        (images / "notes.txt").write_text("not an image name: ignored\n")
        reasons = {images / "fifo.png": "is a FIFO (named pipe), not a regular file (not read)",
                   top / "named-fifo.png": "is a FIFO (named pipe), not a regular file (not read)",
                   images / "sock.png": "is a socket, not a regular file (not read)",
                   images / "dangling.png": "dangling symlink (points to 'nowhere.png', which does not exist)",
                   images / "self.png": "symlink loop (too many levels of symbolic links); not followed",
                   images / "sub" / "up": f"symlink loop: leads back to {images}, which is being walked already; "
                                          "not followed",
                   images / "thin.png": "too large once resized: 1 x 30000 px (aspect ratio 30,000:1) would be scaled "
                                        "to 96 x 2,880,000 (276,480,000 pixels) to fill the 96 x 96 input; "
                                        "limit 89,478,485 pixels (PIL's Image.MAX_IMAGE_PIXELS)"}
        named = [top / "named-fifo.png"]
        if prefix is not None:
            (images / "locked").mkdir()
            shutil.copy(EXAMPLES[1], images / "locked" / "c.jpg")
            shutil.copy(EXAMPLES[2], images / "secret.jpg")
            shutil.copy(EXAMPLES[2], top / "named-secret.jpg")
            for p in (images / "locked", images / "secret.jpg", top / "named-secret.jpg"):
                p.chmod(0)
            named.append(top / "named-secret.jpg")
            reasons.update({images / "locked": "cannot list this directory (Permission denied); "
                                               "the images in it are not included",
                            images / "secret.jpg": "permission denied (cannot read the file)",
                            top / "named-secret.jpg": "permission denied (cannot read the file)"})
        out = outdir / "f.safetensors"
        cmd = [*(prefix or []), sys.executable, "-m", "sslzoo", "extract", str(model), str(images), *map(str, named),
               "--out", str(out), "--json", "--no-progress"]
        t0 = time.monotonic()
        done = subprocess.run(cmd, env=dict(ONE_THREAD, HOME=str(top)), capture_output=True, text=True, timeout=120)
        assert done.returncode == 3, done.stderr
        assert time.monotonic() - t0 < 60
        summary = json.loads(done.stdout)
        assert {s["path"]: s["reason"] for s in summary["skipped"]} == {str(p): r for p, r in reasons.items()}
        for p, r in reasons.items():
            assert f"skipped {p}: {r}\n" in done.stderr
        cut_note = "the file ends before its PNG end marker (cut short?); its pixels decoded, kept"
        assert summary["recovered"] == [{"path": str(images / "cut.png"), "reason": cut_note}]
        assert f"recovered {images / 'cut.png'}: {cut_note}\n" in done.stderr
        _, meta = _read(out)
        assert json.loads(meta["paths"]) == [str(images / n) for n in ("a.jpg", "cut.png", "sub/b.png")]
        assert json.loads(meta["recovered"]) == [[str(images / "cut.png"), cut_note]]
        assert {p for p, _ in json.loads(meta["skipped"])} == {str(p) for p in reasons}
    finally:
        if "sock" in locals():
            sock.close()
        for p in top.rglob("*"):
            if not p.is_symlink():
                p.chmod(0o700)
        shutil.rmtree(top, ignore_errors=True)


def test_walk_names_what_it_cannot_use(tmp_path):
    """The walk follows symlinked folders, keeps image names only, and names every dangling or
    looping symlink (whatever its name: it may have been a folder) instead of dropping it."""
    root = tmp_path / "data"
    (root / "b" / "deep").mkdir(parents=True)
    (root / "elsewhere").mkdir()
    for p in (root / "z.png", root / "b" / "deep" / "x.JPG", root / "elsewhere" / "y.png"):
        shutil.copy(EXAMPLES[3], p)
    (root / "readme.md").write_text("ignored\n")
    os.mkfifo(root / "pipe.png")  # kept: extraction names it (never opened)
    os.symlink("elsewhere", root / "a-link")  # a symlinked folder: walked
    os.symlink("missing-dir", root / "c-broken")  # no image name, still named: it could have been a folder
    os.symlink("../..", root / "b" / "deep" / "loop")
    skipped = []
    found = walk_images(root, skipped)
    assert found == [root / "a-link" / "y.png", root / "b" / "deep" / "x.JPG", root / "elsewhere" / "y.png",
                     root / "pipe.png", root / "z.png"]
    assert skipped == [(str(root / "b" / "deep" / "loop"),
                        f"symlink loop: leads back to {root}, which is being walked already; not followed"),
                       (str(root / "c-broken"), "dangling symlink (points to 'missing-dir', which does not exist)")]
    more = []
    assert collect_inputs([root / "z.png", root / "pipe.png", root / "c-broken"], False, more) == \
        [root / "z.png", root / "pipe.png", root / "c-broken"] and more == []  # named files: kept, reported later


def test_thin_image_skipped_quickly(model, tmp_path):
    thin = tmp_path / "thin.png"
    _thin_png(thin)
    assert thin.stat().st_size < 200
    errors = []
    t0 = time.perf_counter()
    res = extract(model, [EXAMPLES[0], thin], out=tmp_path / "f.safetensors", on_error=errors.append)
    assert time.perf_counter() - t0 < 10
    assert res.n_done == 1 and [e.path for e in errors] == [str(thin)]
    assert res.skipped == [(str(thin), errors[0].reason)]
    assert errors[0].reason.startswith("too large once resized: 1 x 30000")


def test_recovered_reported_and_kept(model, tmp_path):
    """A file cut after its pixel data is kept, and named: through on_recovered, in the result,
    in OUT's metadata, and again by a resume that finds it in a finished chunk."""
    cut = tmp_path / "cut.png"
    _cut_png(cut)
    out = tmp_path / "f.safetensors"
    paths = [cut, *EXAMPLES[:3], *_bad_files(tmp_path)[:1]]  # the cut file in chunk 0, the bad one in chunk 1

    def interrupt(e):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract(model, paths, batch_size=4, out=out, on_error=interrupt, on_recovered=lambda p, why: None)
    noted = []
    res = extract(model, paths, batch_size=4, out=out, resume=True, on_error=lambda e: None,
                  on_recovered=lambda p, why: noted.append((p, why)))
    assert res.n_computed == 1  # chunk 0 came from the interrupted run
    note = "the file ends before its PNG end marker (cut short?); its pixels decoded, kept"
    assert noted == res.recovered == [(str(cut), note)]
    tensors, meta = _read(out)
    assert json.loads(meta["recovered"]) == [[str(cut), note]] and tensors["conv5"].shape == (4, 256)
    np.testing.assert_allclose(tensors["conv5"][0], _direct(model, [EXAMPLES[3]], ["conv5"], "avg")["conv5"][0].numpy(),
                               rtol=1e-4, atol=1e-5)  # the same pixels as the whole file


def test_npy_names_with_newline_and_bad_utf8(model, tmp_path):
    """Row i of the .npy belongs to paths[i] whatever the names: a newline in one must not shift
    the rows after it, a non-UTF-8 name must not fail the run."""
    images = tmp_path / "images"
    images.mkdir()
    sources = [EXAMPLES[0], EXAMPLES[3], EXAMPLES[1], EXAMPLES[5]]
    names = ["a\nb.jpg", os.fsdecode(b"bad\xff\xfe.png"), 'quote"back\\slash.jpg', "plain.png"]
    paths = []
    for src, name in zip(sources, names):
        shutil.copy(src, images / name)
        paths.append(images / name)
    res = extract(model, paths, out=tmp_path / "f.npy", batch_size=3)
    arr, meta = read_npy(res.out)
    assert meta["paths"] == [str(p) for p in paths] and meta["rows"] == 4
    assert os.fsencode(meta["paths"][1]).endswith(b"bad\xff\xfe.png")
    text = paths_file(res.out).read_text(encoding="utf-8")  # valid UTF-8 JSON, one path per line
    assert text.count("\n") == len(text.splitlines()) and len(text.splitlines()) == 3 + 1 + len(paths) + 1
    np.testing.assert_allclose(arr, _direct(model, sources, ["conv5"], "avg")["conv5"].numpy(), rtol=1e-4, atol=1e-5)


def test_npy_pair_is_one_unit(model, tmp_path, monkeypatch):
    """A run killed while committing leaves no OUT.npy beside a companion from another run, and
    read_npy refuses a pair that does not belong together."""
    out = tmp_path / "f.npy"
    extract(model, EXAMPLES[:3], out=out)
    assert read_npy(out)[0].shape[0] == 3
    real_replace = os.replace

    def killed_at_the_last_rename(src, dst):
        if Path(dst) == out:
            raise KeyboardInterrupt  # kill -9 between the companion's rename and OUT's
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_at_the_last_rename)
    with pytest.raises(KeyboardInterrupt):
        extract(model, EXAMPLES[3:5], out=out)
    monkeypatch.setattr(os, "replace", real_replace)
    companion = paths_file(out)
    assert not out.exists() and json.loads(companion.read_text(encoding="utf-8"))["rows"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(zoo.ZooError, match="missing|unreadable"):
        read_npy(out)

    extract(model, EXAMPLES[:3], out=out)
    old_companion = companion.read_text(encoding="utf-8")
    extract(model, EXAMPLES[3:5], out=out)
    assert read_npy(out)[1]["paths"] == [str(p) for p in EXAMPLES[3:5]]
    new_companion = companion.read_text(encoding="utf-8")
    companion.write_text(old_companion, encoding="utf-8")  # a hand-mixed pair: 2-row array, 3-row companion
    with pytest.raises(zoo.ZooError, match="do not belong together"):
        read_npy(out)
    head = json.loads(new_companion)
    data = bytearray(out.read_bytes())
    data[-1] ^= 0x01  # same shape, other values
    out.write_bytes(bytes(data))
    companion.write_text(new_companion, encoding="utf-8")
    with pytest.raises(zoo.ZooError, match="sha256 differs"):
        read_npy(out)
    assert read_npy(out, verify=False)[1] == head  # the shape check alone passes


def _interrupted_partial(model, tmp_path, out, paths, batch_size):
    """Run until the last input (a bad file) is reported, then stop: chunks 0..K-2 are on disk."""
    def interrupt(e):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract(model, paths, batch_size=batch_size, out=out, on_error=interrupt)


def test_resume_rechecks_chunks(model, tmp_path):
    """Resume re-hashes the chunks it keeps: flipped bytes in one, two chunk files swapped are
    recomputed (and named), never read as rows."""
    paths = [*EXAMPLES[:8], *EXAMPLES[:2], *_bad_files(tmp_path)[:1]]  # 11 inputs, batches of 2: the bad one in chunk 5
    fresh = extract(model, paths, batch_size=2, out=tmp_path / "fresh.safetensors", on_error=lambda e: None)
    want, want_meta = _read(fresh.out)
    out = tmp_path / "f.safetensors"
    for damage in ("flip", "swap"):
        _interrupted_partial(model, tmp_path, out, paths, 2)
        part = partial_dir(out)
        chunks = [part / f"chunk-{k:06d}.safetensors" for k in range(5)]
        assert all(c.is_file() for c in chunks)
        if damage == "flip":
            data = bytearray(chunks[1].read_bytes())
            data[-3] ^= 0x40  # a feature value, not the header: the file still parses
            chunks[1].write_bytes(bytes(data))
            bad = [chunks[1]]
        else:
            a, b = chunks[2].read_bytes(), chunks[3].read_bytes()
            chunks[2].write_bytes(b)
            chunks[3].write_bytes(a)
            bad = chunks[2:4]
        res = extract(model, paths, batch_size=2, out=out, resume=True, on_error=lambda e: None)
        assert [Path(p) for p, _ in res.recomputed] == bad, damage
        assert all("sha256 differs" in why for _, why in res.recomputed)
        assert res.n_computed == 2 * len(bad) + 1  # the damaged chunks and the last one
        got, meta = _read(out)
        assert meta["paths"] == want_meta["paths"]
        np.testing.assert_array_equal(got["conv5"], want["conv5"])


def test_npy_disk_full_keeps_the_old_pair(model_dir, tmp_path, monkeypatch):
    """Disk full while writing the new pair: one error line, the previous OUT and its companion
    untouched, no temporary files left."""
    from sslzoo.zoo import _extract

    out = tmp_path / "f.npy"
    args = ["extract", str(model_dir), *map(str, EXAMPLES[:3]), "--out", str(out), "--no-progress"]
    assert CliRunner().invoke(app, args).exit_code == 0
    before = read_npy(out)[1]
    real = _extract._write_npy

    def disk_full(f, *a):
        real(f, *a)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_extract, "_write_npy", disk_full)
    result = CliRunner().invoke(app, ["extract", str(model_dir), *map(str, EXAMPLES[3:5]), "--out", str(out),
                                      "--no-progress"])
    assert result.exit_code == 1 and f"error: {out}: cannot write (No space left on device)" in result.output
    assert read_npy(out)[1] == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
