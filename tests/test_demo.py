"""The Gradio demo (demo/): the functions behind each tab, bad uploads, the app's wiring, the
real server on 127.0.0.1 called through gradio_client, and no connection leaving the machine."""
from __future__ import annotations

import concurrent.futures
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

if importlib.util.find_spec("gradio") is None:  # not imported here: the demo sets its environment first
    pytest.skip("the demo needs gradio (pip install -e '.[dev]')", allow_module_level=True)

from sslzoo import zoo  # noqa: E402
from sslzoo.demo import _core  # noqa: E402
from sslzoo.demo.tabs import classify as classify_tab, jigsaw as jigsaw_tab, models as models_tab  # noqa: E402
from sslzoo.demo.tabs import relpatch as relpatch_tab, rotation as rotation_tab  # noqa: E402
from sslzoo.demo.tabs import clusters as clusters_tab, denoise as denoise_tab, inpaint as inpaint_tab  # noqa: E402
from sslzoo.demo._core import DemoError  # noqa: E402
from sslzoo.zoo.pretexts import context_encoder as cx, deepcluster as dc, denoising as dn, jigsaw as jg  # noqa: E402
from sslzoo.zoo.pretexts.decoder import to_unit  # noqa: E402
from sslzoo.zoo.pretexts.relpatch import POSITIONS  # noqa: E402

from . import _demo_server  # noqa: E402
from .conftest import run_cli  # noqa: E402

EX = {p.name: p for p in zoo.example_images()}
BOOT, TROUSER, CAT = EX["fmnist-0-ankle-boot.png"], EX["fmnist-2-trouser.png"], EX["chelsea.jpg"]
ROT, JIG, REL = "rotation-alexnet", "jigsaw-alexnet", "relative-patch-alexnet"
DEEPCLUSTER = "deepcluster-alexnet"
MT = "multi-task-alexnet"  # shipped; answers the rotation, jigsaw, relative-patch and exemplar tabs too
DENOISING, CONTEXT_ENCODER = "denoising-alexnet", "context-encoder-alexnet"


@pytest.fixture(scope="module", autouse=True)
def _threads_and_env(one_thread, tmp_path_factory):
    """One torch thread; an empty zoo store (converted models a user made must not change the
    pickers); and importing the app sets the demo's offline environment (HF_HUB_OFFLINE, ...) in
    this process: put os.environ back so later test modules (and their subprocesses) don't inherit it."""
    saved = dict(os.environ)
    os.environ["SSLZOO_HOME"] = str(tmp_path_factory.mktemp("empty-store"))  # servers started here inherit it
    os.environ.pop(_core.MODELS_ENV, None)  # no extra model directories but those a test lists
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    return _demo_server.shared(tmp_path_factory)


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server.url, verbose=False, download_files=False)


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    return _demo_server.bad_files(tmp_path_factory.mktemp("bad-uploads"))


def _same(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))


# --- models and cards ------------------------------------------------------------------------------

def test_pickers_offer_only_models_that_fit():
    # a tab's own pretext's model first, then the multi-task model that also answers it
    assert _core.models_for("rotation") == [ROT, MT]
    assert _core.models_for("jigsaw") == [JIG, MT]
    assert _core.models_for("relative-patch") == [REL, MT]
    assert _core.models_for("exemplar") == ["exemplar-alexnet", MT]
    assert MT not in _core.models_for("denoising") and MT in _core.models_for()
    for name in _core.models_for(probes=True):
        assert _core.model_config(name)["probe"]["heads"], name
    assert set(_core.models_for()) >= {ROT, JIG, REL}


def test_models_loaded_once_and_cached():
    m = _core.get_model(ROT)
    hits = _core._load.cache_info().hits
    assert _core.get_model(ROT) is m
    assert _core._load.cache_info().hits == hits + 1
    with pytest.raises(DemoError, match="unknown model"):
        _core.get_model("nope-alexnet")
    with pytest.raises(DemoError, match="pick a model"):
        _core.get_model("")


def test_models_tab_card_without_front_matter_and_plot():
    card, plot = models_tab.model_info(ROT)
    raw = (_core.model_dir(ROT) / "README.md").read_text()
    assert raw.startswith("---") and "model-index:" in raw
    assert card.startswith("# rotation-alexnet") and "model-index:" not in card and "\n---\n" not in card[:50]
    assert "## Linear probe" in card
    assert plot and Image.open(plot).size[0] > 100
    headers, rows = models_tab.models_table(_core.models_for())
    assert len(rows) == len(_core.models_for()) and all(len(r) == len(headers) for r in rows)
    assert headers[3:8] == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    rot_row = next(r for r in rows if r[0].startswith(ROT))
    assert rot_row[1] == "rotation" and rot_row[2].endswith("%")
    assert [c.endswith(" *") for c in rot_row[3:8]] == [False, True, False, False, False]  # conv2 is its best tap


def test_models_table_shows_each_models_own_taps(monkeypatch):
    """A probed ResNet-50 (taps conv1, res2..res5) gets its own columns, beside the AlexNets' conv1..conv5."""
    resnet = {"name": "rotation-resnet50.in1k", "pretext": "rotation",
              "probe": {"accuracy": {"conv1": 0.5, "res2": 0.6, "res3": 0.7, "res4": 0.8, "res5": 0.75}}}
    real = _core.model_config
    monkeypatch.setattr(models_tab, "model_config", lambda n: resnet if n == "resnet" else real(n))
    headers, rows = models_tab.models_table([ROT, "resnet"])
    assert headers[3:] == ["conv1", "conv2", "conv3", "conv4", "conv5", "res2", "res3", "res4", "res5",
                           "random init (best tap)"]
    res_row = dict(zip(headers, rows[1]))
    assert res_row["res4"] == "80.0 *" and res_row["conv1"] == "50.0" and res_row["conv5"] == ""
    assert dict(zip(headers, rows[0]))["res2"] == ""


# --- the tab functions -----------------------------------------------------------------------------

def test_rotation_finds_the_turn_and_turns_back():
    turned, label, upright, gallery, summary = rotation_tab.rotation(ROT, BOOT, "90°")
    assert next(iter(label)) == "90°" and label["90°"] > 0.9  # the model knows a turned Fashion-MNIST image
    assert abs(sum(label.values()) - 1) < 1e-4 and set(label) == set(rotation_tab.ANGLE_LABELS)
    base = gallery[0][0]
    assert _same(turned, base.rotate(90)) and _same(gallery[1][0], turned)
    assert _same(upright, base)  # predicted 90 -> turned back by 90 = the upload, upright
    assert [c.split(" →")[0] for _, c in gallery] == rotation_tab.ANGLE_LABELS
    assert "you turned it by 90°: right" in summary
    assert rotation_tab.parse_turn(270) == rotation_tab.parse_turn("270°") == 3 and rotation_tab.parse_turn(None) == 0
    with pytest.raises(DemoError, match="turn must be"):
        rotation_tab.rotation(ROT, BOOT, "45°")


def test_jigsaw_shuffles_by_the_chosen_permutation_and_reassembles():
    original, shuffled, fixed, label, idx, summary = jigsaw_tab.jigsaw(JIG, TROUSER, 7)
    perm = jg.permutations_of(_core.get_model(JIG))[7].tolist()
    assert idx == 7 and f"**#7** ({jigsaw_tab.perm_text(perm)}:" in summary
    # the displayed puzzle: position i shows the tile of cell perm[i] of the original
    side = (original.width - 2 * _core.GAP) // 3
    tiles = lambda img: [np.asarray(img)[r * (side + _core.GAP):r * (side + _core.GAP) + side,  # noqa: E731
                                         c * (side + _core.GAP):c * (side + _core.GAP) + side] for r in range(3) for c in range(3)]
    # the original, cut independently in cell order (not derived from the shuffled tiles)
    in_order = _core.display_tiles(_core.get_model(JIG), _core.load_upload(TROUSER), torch.arange(9))
    assert _same(original, _core.to_pil(jg.puzzle_image(in_order, _core.GAP, 1.0)))
    orig_t, shuf_t = tiles(original), tiles(shuffled)
    assert all(np.array_equal(shuf_t[i], orig_t[perm[i]]) for i in range(9))
    assert len(label) == 5 and all(v >= 0 for v in label.values())
    top = next(iter(label))
    assert top.startswith("✓ #7") == _same(fixed, original)  # solved <=> reassembly gives the original back
    _, _, _, _, drawn, _ = jigsaw_tab.jigsaw(JIG, TROUSER, None)
    assert 0 <= drawn < 1000
    for bad_index in (1000, -1, 2.5, "seven"):
        with pytest.raises(DemoError, match="permutation must be"):
            jigsaw_tab.jigsaw(JIG, TROUSER, bad_index)


def test_relative_patch_names_a_neighbour():
    pair, label, answer, truth, shown, summary = relpatch_tab.relpatch(REL, TROUSER, "left")
    assert shown == "left" and set(label) == set(POSITIONS) and abs(sum(label.values()) - 1) < 1e-4
    assert pair.width > 2 * pair.height - 1 and answer.size == truth.size
    assert f"**{next(iter(label))}**" in summary
    assert relpatch_tab.relpatch(REL, TROUSER, "random")[4] in POSITIONS
    with pytest.raises(DemoError, match="position must be"):
        relpatch_tab.relpatch(REL, TROUSER, "middle")


def test_classify_with_stored_probe_heads():
    label, view, plot, summary = classify_tab.classify(ROT, "conv2", BOOT)
    assert list(label)[0] == "Ankle boot" and len(label) == 3
    assert view.size == (192, 192) and plot.endswith("probe_plot.png") and "conv2" in summary
    for name in _core.models_for(probes=True):  # every probed model, every stored tap
        for layer in classify_tab.probe_layers(name):
            assert len(classify_tab.classify(name, layer, TROUSER)[0]) == 3
    with pytest.raises(DemoError, match="no probe head for 'conv9'"):
        classify_tab.classify(ROT, "conv9", BOOT)


def test_wrong_model_for_a_tab_is_a_message():
    with pytest.raises(DemoError, match="is a jigsaw model; this tab needs a rotation model"):
        rotation_tab.rotation(JIG, BOOT, 0)


def test_colour_photo_and_odd_modes(tmp_path):
    assert len(rotation_tab.rotation(ROT, CAT, 0)[3]) == 4
    rgba = tmp_path / "wide-rgba.png"
    Image.new("RGBA", (300, 40), (255, 0, 0, 128)).save(rgba)
    i16 = tmp_path / "deep.png"
    Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).save(i16)
    for path in (rgba, i16):
        assert relpatch_tab.relpatch(REL, path, 0)[4] == "top-left"


def test_bad_uploads_are_one_line_messages(bad, tmp_path, monkeypatch):
    calls = [lambda u: rotation_tab.rotation(ROT, u, 0), lambda u: jigsaw_tab.jigsaw(JIG, u, 1),
             lambda u: relpatch_tab.relpatch(REL, u, 0), lambda u: classify_tab.classify(ROT, "conv5", u)]
    for name, (path, words) in bad.items():
        for call in calls:
            with pytest.raises(DemoError) as e:
                call(str(path))
            msg = str(e.value)
            assert words in msg and msg.startswith(path.name + ":") and str(path.parent) not in msg, (name, msg)
    for call in calls:
        with pytest.raises(DemoError, match="upload an image first"):
            call(None)
    with pytest.raises(DemoError, match="no such file"):
        rotation_tab.rotation(ROT, str(tmp_path / "gone.png"), 0)
    monkeypatch.setattr(_core, "MAX_UPLOAD_BYTES", 1000)
    with pytest.raises(DemoError, match=r"too large \(.* MB; the limit is"):
        rotation_tab.rotation(ROT, str(CAT), 0)


# --- the reconstruction and cluster tabs -----------------------------------------------------------
# Their zoo entries are untrained (no weights: zoo.load fails), so these tests make small real models
# (random init, saved as Hub-layout directories) and name them by their directories.

DN, CE, CE_CENTRE, DC, DC_BARE = "denoising", "context-encoder", "context-encoder-centre", "deepcluster", "deepcluster-bare"
MEAN_BYTE = round(0.2860 * 255)  # the data set's mean as an 8-bit pixel: what a dropped pixel / the hole shows


def _write_clusters(directory, size_of, k=dc.NUM_CLUSTERS, g=8, side=28, seed=0):
    """A clusters.safetensors in the training side's layout: cluster c has size_of(c) images, its first
    min(size, g) slots hold distinct dataset positions and random 28 px images, the rest -1 and zeros."""
    from safetensors.torch import save_file

    sizes = torch.tensor([size_of(c) for c in range(k)], dtype=torch.int64)
    slot = torch.arange(g)
    valid = slot[None] < sizes[:, None]
    index = torch.where(valid, torch.arange(k)[:, None] * 100 + slot, -1)
    members = torch.randint(0, 256, (k, g, 1, side, side), generator=torch.Generator().manual_seed(seed),
                            dtype=torch.uint8) * valid[..., None, None, None]
    save_file({"sizes": sizes, "index": index, "members": members}, str(directory / dc.CLUSTERS_FILE))
    return sizes, index, members


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Model directories of the three pretexts (random init; the decoders' output layers scaled up so
    a fill differs from the mean); the DeepCluster one with a clusters file, a copy without."""
    root = tmp_path_factory.mktemp("made-models")
    dirs = {}
    for key, name in ((DN, "denoising-alexnet"), (CE, "context-encoder-alexnet"),
                      (CE_CENTRE, "context-encoder-alexnet.fmnist-central"), (DC, "deepcluster-alexnet"),
                      (DC_BARE, "deepcluster-alexnet")):
        torch.manual_seed(len(dirs))
        m = zoo.create(name)
        if hasattr(m.head, "decoder"):
            with torch.no_grad():
                m.head.decoder.out.weight.mul_(20)
                m.head.decoder.out.bias.fill_(0.3)
        dirs[key] = str(zoo.save_pretrained(m, root / key, card=f"# {name} (made by the test)\n"))
    _write_clusters(root / DC, lambda c: (7 * c) % 13)
    return dirs


def _arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float64) / 255


def _psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    """By hand: 10 log10(1 / MSE) on [0, 1] pixels, over all values or those ``where`` says."""
    d = (a - b) ** 2
    mse = d[where].mean() if where is not None else d.mean()
    return 100.0 if mse <= 1e-10 else 10 * np.log10(1 / mse)


def _small(img: Image.Image, k: int) -> np.ndarray:
    """An image enlarged k x by nearest neighbour -> its pixels (checking that it is such an image)."""
    a = np.asarray(img)
    small = a[::k, ::k]
    assert np.array_equal(a, np.kron(small, np.ones((k, k), dtype=a.dtype))), "not a whole-factor enlargement"
    return small


def _model_view(name: str, upload) -> tuple[zoo.PretextModel, torch.Tensor]:
    m = _core.get_model(name)
    return m, zoo.transforms(m)(_core.load_upload(upload))


def test_untrained_entries_are_not_offered_and_listed_directories_are(made, monkeypatch, tmp_path):
    from sslzoo.demo import tabs

    from sslzoo.zoo._registry import UNTRAINED

    by_id = {t.id: t for t in tabs.TABS}
    shipped = {}  # pretext -> the zoo entry offered by its tab (an entry with released weights)
    for pretext, tab, entry in (("denoising", "denoise", "denoising-alexnet"),
                                ("context-encoder", "inpaint", "context-encoder-alexnet"),
                                ("deepcluster", "clusters", "deepcluster-alexnet")):
        assert entry in zoo.list_models()
        if zoo.lookup(entry)[1].source == UNTRAINED:
            assert _core.models_for(pretext) == [] and by_id[tab].models() == []
            with pytest.raises(zoo.ZooError, match="no weights released yet"):
                zoo.load(entry)
        else:
            shipped[pretext] = [entry]
            assert _core.models_for(pretext) == [entry] == by_id[tab].models()
    junk = tmp_path / "not-a-model"
    junk.mkdir()
    monkeypatch.setenv(_core.MODELS_ENV, os.pathsep.join([made[DN], str(junk), "", made[CE], made[CE_CENTRE], made[DC],
                                                          made[DC_BARE], str(tmp_path / "gone"), made[DN]]))
    assert _core.extra_models()[0] == made[DN] and len(_core.extra_models()) == 7  # each once, empties dropped
    assert _core.models_for("denoising") == shipped.get("denoising", []) + [made[DN]] == by_id["denoise"].models()
    assert (_core.models_for("context-encoder") == shipped.get("context-encoder", []) + [made[CE], made[CE_CENTRE]]
            == by_id["inpaint"].models())
    assert (_core.models_for("deepcluster") == shipped.get("deepcluster", []) + [made[DC], made[DC_BARE]]
            == by_id["clusters"].models())
    assert _core.models_for("rotation") == [ROT, MT]
    assert {made[k] for k in made} <= set(_core.models_for()) and str(junk) not in _core.models_for()
    assert _core.model_label(made[DN]) == f"denoising-alexnet.fmnist ({made[DN]})" and _core.model_label(ROT) == ROT
    headers, rows = models_tab.models_table([made[DC]])  # the Models tab lists them too
    assert rows[0][:2] == ["deepcluster-alexnet.fmnist", "deepcluster"]


def test_denoise_corrupts_with_the_models_noise_and_restores(made):
    corrupted, restored, original, psnr_in, psnr_out, summary = denoise_tab.denoise(made[DN], BOOT, 0.3, 7)
    assert corrupted.size == restored.size == original.size == (288, 288)  # 96 px input, shown 3x
    c, r, o = (_small(img, 3) for img in (corrupted, restored, original))
    m, x = _model_view(made[DN], BOOT)
    assert np.array_equal(o, np.asarray(_core.to_pil(to_unit(x, m.data_config))))  # the original as the model sees it
    dropped = c != o  # masking noise: a dropped pixel shows the mean
    assert np.all(c[dropped] == MEAN_BYTE) and abs(dropped.mean() - 0.3) < 0.03
    noisy = dn.corrupt(x, "mask", 0.3, torch.Generator().manual_seed(7), m.data_config["std"])
    with torch.no_grad():
        by_hand = to_unit(m.predict_pretext(noisy[None])[0], m.data_config)
    assert np.array_equal(r, np.asarray(_core.to_pil(by_hand)))  # restored = the model's output on that input
    assert np.array_equal(c, np.asarray(_core.to_pil(to_unit(noisy, m.data_config))))
    assert psnr_in == pytest.approx(_psnr(_arr(corrupted), _arr(original)), abs=0.006)
    assert psnr_out == pytest.approx(_psnr(_arr(restored), _arr(original)), abs=0.006)
    assert f"**{psnr_in:.2f} dB** corrupted" in summary and f"**{psnr_out:.2f} dB** restored" in summary
    assert "**0.3**" in summary and "it was trained at 0.5" in summary and "seed 7" in summary
    again = denoise_tab.denoise(made[DN], BOOT, 0.3, 7)
    assert _same(again[0], corrupted) and not _same(denoise_tab.denoise(made[DN], BOOT, 0.3, 8)[0], corrupted)
    own = denoise_tab.denoise(made[DN], BOOT, None, None)  # the model's own level, seed 0
    assert "**0.5** (the level it was trained at; seed 0)" in own[5]
    clean = denoise_tab.denoise(made[DN], BOOT, 0, 1)
    assert _same(clean[0], clean[2]) and clean[3] == 100.0
    assert denoise_tab.trained_noise(_core.model_config(made[DN])) == ("mask", 0.5)
    for level in (1.5, -0.1, "lots"):
        with pytest.raises(DemoError, match="noise level must be a number from 0 to 1"):
            denoise_tab.denoise(made[DN], BOOT, level, 0)
    for seed in (-1, 2.5, "abc", 2**32):
        with pytest.raises(DemoError, match="seed must be a whole number"):
            denoise_tab.denoise(made[DN], BOOT, 0.5, seed)
    with pytest.raises(DemoError, match="is a context-encoder model; this tab needs a denoising model"):
        denoise_tab.denoise(made[CE], BOOT, 0.5, 0)


def test_inpaint_fills_the_hole_and_measures_it_against_the_mean(made):
    m, x = _model_view(made[CE], TROUSER)
    for name, mask, seed in ((made[CE], "random", 5), (made[CE], "centre", 0), (made[CE_CENTRE], "centre", 3)):
        masked, filled, original, model_psnr, mean_psnr, summary = inpaint_tab.inpaint(name, TROUSER, mask, seed)
        assert masked.size == filled.size == original.size == (288, 288)
        mk, fl, og = (_small(img, 3) for img in (masked, filled, original))
        assert np.array_equal(og, np.asarray(_core.to_pil(to_unit(x, m.data_config))))
        hole = cx.make_masks("random" if mask == "random" else "central", 1, 96, 96,
                             torch.Generator().manual_seed(seed))[0, 0].numpy()
        if mask == "centre":
            assert hole[24:72, 24:72].all() and hole.sum() == 48 * 48 and "the centre 48x48 px square" in summary
        else:
            assert 0.2 <= hole.mean() <= 0.3 and "random rectangles (seed 5)" in summary
        assert np.all(mk[hole] == MEAN_BYTE) and np.array_equal(mk[~hole], og[~hole])  # the hole at the mean
        assert np.array_equal(fl[~hole], og[~hole]) and (fl[hole] != MEAN_BYTE).mean() > 0.5  # the model paints the hole
        by_hand = cx.inpaint(_core.get_model(name), x, torch.from_numpy(hole))["filled"]
        assert np.array_equal(fl, np.asarray(_core.to_pil(by_hand)))
        big = np.kron(hole, np.ones((3, 3), dtype=bool))
        assert model_psnr == pytest.approx(_psnr(_arr(filled), _arr(original), big), abs=0.006)
        assert mean_psnr == pytest.approx(_psnr(_arr(masked), _arr(original), big), abs=0.006)
        assert model_psnr != mean_psnr and f"PSNR on the hole **{model_psnr:.2f} dB**" in summary
        assert f"({mean_psnr:.2f} dB)" in summary
    a, b = inpaint_tab.inpaint(made[CE], TROUSER, "random", 9), inpaint_tab.inpaint(made[CE], TROUSER, "random", 9)
    assert _same(a[0], b[0]) and not _same(a[0], inpaint_tab.inpaint(made[CE], TROUSER, "random", 10)[0])
    assert "random rectangles" in inpaint_tab.inpaint(made[CE], TROUSER, None, 1)[5]  # the model's own kind
    assert "centre" in inpaint_tab.inpaint(made[CE_CENTRE], TROUSER, None, 1)[5]
    with pytest.raises(DemoError, match="trained to fill the centre hole .* pick the centre mask"):
        inpaint_tab.inpaint(made[CE_CENTRE], TROUSER, "random", 1)
    with pytest.raises(DemoError, match="mask must be one of centre, random"):
        inpaint_tab.inpaint(made[CE], TROUSER, "left half", 1)
    with pytest.raises(DemoError, match="seed must be a whole number"):
        inpaint_tab.inpaint(made[CE], TROUSER, "random", -3)


def test_clusters_shows_the_members_of_the_predicted_cluster(made, tmp_path):
    from safetensors.torch import load_file

    view, top, gallery, size_text, summary = clusters_tab.clusters(made[DC], BOOT)
    m, x = _model_view(made[DC], BOOT)
    with torch.no_grad():
        probs = torch.softmax(m.predict_pretext(x[None])[0], -1)
    c = int(probs.argmax())
    assert view.size == (288, 288) and np.array_equal(_small(view, 3), np.asarray(_core.to_pil(to_unit(x, m.data_config))))
    assert list(top) == [f"cluster {i}" for i in torch.argsort(probs, descending=True)[:3].tolist()]
    assert next(iter(top)) == f"cluster {c}" and top[f"cluster {c}"] == pytest.approx(float(probs[c]))
    assert f"**cluster {c}** of its 300" in summary
    directory = Path(made[DC])

    def members_per_file(gallery) -> int:
        """The gallery is exactly the file's members of cluster c (positions, pixels, in order)."""
        f = load_file(str(directory / dc.CLUSTERS_FILE))
        want = [(p, f["members"][c, g, 0].numpy()) for g, p in enumerate(f["index"][c].tolist()) if p >= 0]
        assert [cap for _, cap in gallery] == [f"#{p}" for p, _ in want]
        assert all(img.size == (112, 112) and np.array_equal(_small(img, 4), member)  # 28 px shown 4x
                   for (img, _), (_, member) in zip(gallery, want))
        return int(f["sizes"][c])

    size = members_per_file(gallery)
    assert size == (7 * c) % 13 and len(gallery) == min(size, 8)
    if size:
        shown = " (shown)" if size == 1 else " (all shown)" if size <= 8 else "; 8 of them shown"
        assert size_text == (f"Cluster {c} held **{size:,}** training image{'s' if size != 1 else ''} in the model's "
                             f"last clustering{shown}.")
    # the same model with other files: a big cluster, one image, an empty cluster, no file, a file that does not fit
    _write_clusters(directory, lambda i: 12_345 if i == c else 0, seed=1)
    _, _, gallery, size_text, _ = clusters_tab.clusters(made[DC], BOOT)
    assert members_per_file(gallery) == 12_345 and len(gallery) == 8
    assert size_text == f"Cluster {c} held **12,345** training images in the model's last clustering; 8 of them shown."
    _write_clusters(directory, lambda i: 1 if i == c else 3)
    _, _, gallery, size_text, _ = clusters_tab.clusters(made[DC], BOOT)
    assert members_per_file(gallery) == 1 and [cap for _, cap in gallery] == [f"#{c * 100}"]
    assert size_text == f"Cluster {c} held **1** training image in the model's last clustering (shown)."
    _write_clusters(directory, lambda i: 5 if i == c else 3)
    _, _, gallery, size_text, _ = clusters_tab.clusters(made[DC], BOOT)
    assert members_per_file(gallery) == 5 and len(gallery) == 5
    assert size_text == f"Cluster {c} held **5** training images in the model's last clustering (all shown)."
    _write_clusters(directory, lambda i: 0 if i == c else 3)
    _, _, gallery, size_text, _ = clusters_tab.clusters(made[DC], BOOT)
    assert gallery == [] and size_text == f"Cluster {c} held no training images in the model's last clustering."
    _write_clusters(directory, lambda i: 2, k=10)
    _, top, gallery, size_text, _ = clusters_tab.clusters(made[DC], BOOT)
    assert gallery == [] and "does not fit this model's 300 clusters" in size_text and "\n" not in size_text
    assert next(iter(top)) == f"cluster {c}"
    (directory / dc.CLUSTERS_FILE).write_bytes(b"not a safetensors file at all")
    _, _, gallery, size_text, _ = clusters_tab.clusters(made[DC], BOOT)
    assert gallery == [] and "clusters.safetensors cannot be read" in size_text and "\n" not in size_text
    _write_clusters(directory, lambda i: (7 * i) % 13)  # as the fixture made it
    bare = clusters_tab.clusters(made[DC_BARE], BOOT)  # no file: said in one line, the cluster still shown
    assert bare[2] == [] and bare[3].endswith("training images cannot be shown: no clusters.safetensors ships with "
                                              "this model.") and "\n" not in bare[3]
    assert len(bare[1]) == 3 and "**cluster " in bare[4]


def test_new_tabs_bad_uploads_are_one_line_messages(made, bad):
    calls = [lambda u: denoise_tab.denoise(made[DN], u, 0.5, 0), lambda u: inpaint_tab.inpaint(made[CE], u, "centre", 0),
             lambda u: clusters_tab.clusters(made[DC], u)]
    for name, (path, words) in bad.items():
        for call in calls:
            with pytest.raises(DemoError) as e:
                call(str(path))
            msg = str(e.value)
            assert words in msg and msg.startswith(path.name + ":") and "\n" not in msg, (name, msg)
    for call in calls:
        with pytest.raises(DemoError, match="upload an image first"):
            call(None)
    for call in calls:  # a colour photo is fine (the models see its luminance)
        call(CAT)


# --- the app ---------------------------------------------------------------------------------------

def test_tab_registry_in_display_order():
    from sslzoo.demo import tabs

    assert [(t.id, t.title) for t in tabs.TABS] == [("rotation", "Rotation"), ("jigsaw", "Jigsaw"),
                                                    ("relpatch", "Relative patch"), ("denoise", "Denoise"),
                                                    ("inpaint", "Inpaint"), ("colorize", "Colorize"), ("exemplar", "Exemplar"), ("counting", "Counting"), ("clusters", "Clusters"),
                                                    ("retrieval", "Retrieval"), ("classify", "Classify (linear probe)"), ("models", "Models")]
    by_id = {t.id: t for t in tabs.TABS}
    assert [by_id[i].models() for i in ("rotation", "jigsaw", "relpatch")] == [[ROT, MT], [JIG, MT], [REL, MT]]
    assert by_id["relpatch"].pretexts == ("relative-patch",)
    assert [by_id[i].pretexts for i in ("denoise", "inpaint", "clusters")] == [("denoising",), ("context-encoder",),
                                                                              ("deepcluster",)]
    # every shipped entry is offered by its tab (entries without weights would not be)
    assert [by_id[i].models() for i in ("denoise", "inpaint", "clusters")] == [[DENOISING], [CONTEXT_ENCODER],
                                                                              [DEEPCLUSTER]]
    assert by_id["classify"].pretexts is None and by_id["classify"].models() == _core.models_for(probes=True)
    assert by_id["retrieval"].pretexts is None and by_id["retrieval"].models() == _core.models_for()  # any pretext
    assert by_id["models"].pretexts is None and by_id["models"].models() == []  # reads cards, loads nothing
    assert tabs.offered_models() == sorted({ROT, JIG, REL, DENOISING, CONTEXT_ENCODER, DEEPCLUSTER,
                                            *_core.models_for(probes=True)})
    assert tabs.preload_models() == tabs.offered_models()


def test_a_model_is_offered_by_every_tab_of_its_pretexts(monkeypatch):
    """A model that can predict two pretexts (a composite head) is in both tabs, and runs in both."""
    from sslzoo.demo import tabs

    real = _core.config_pretexts
    monkeypatch.setattr(_core, "config_pretexts",
                        lambda cfg: ("rotation", "jigsaw") if cfg.get("name", "").startswith(ROT) else real(cfg))
    monkeypatch.setattr(_core.get_model(ROT), "pretexts", ("rotation", "jigsaw"))
    by_id = {t.id: t for t in tabs.TABS}
    assert ROT in by_id["rotation"].models() and ROT in by_id["jigsaw"].models()
    assert by_id["relpatch"].models() == [REL, MT]
    assert by_id["jigsaw"].models() == [JIG, MT, ROT]  # its own pretext's model first, then the shared ones (zoo order)
    assert tabs.Tab("both", "Both", ("rotation", "jigsaw"), build=lambda: None).models().count(ROT) == 1
    assert _core.pretext_model(ROT, "jigsaw") is _core.get_model(ROT)
    with pytest.raises(DemoError, match="is a rotation/jigsaw model; this tab needs a relative-patch model"):
        _core.pretext_model(ROT, "relative-patch")


def test_app_names_no_pretext_and_tab_modules_load_without_gradio():
    import subprocess
    import sys
    from pathlib import Path

    from sslzoo.demo import app, tabs
    from sslzoo.zoo._validate import KNOWN_PRETEXTS

    source = Path(app.__file__).read_text(encoding="utf-8").lower()
    words = {*KNOWN_PRETEXTS, "relative", "relpatch", *(t.id for t in tabs.TABS if t.pretexts)}
    assert not sorted(w for w in words if w in source)
    check = "import sys, sslzoo.demo.tabs; assert 'gradio' not in sys.modules, 'importing the tabs loaded gradio'"
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_offline_environment_and_error_wrapper():
    from sslzoo.demo import app

    import gradio as gr
    from gradio import analytics

    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False" and os.environ["HF_HUB_OFFLINE"] == "1"
    assert not analytics.analytics_enabled()

    def user_problem():
        raise DemoError("notes.png: not an image")

    def bug():
        raise KeyError("secret internals")

    with pytest.raises(gr.Error, match="notes.png: not an image"):
        app.safe(user_problem)()
    with pytest.raises(gr.Error) as e:
        app.safe(bug)()
    assert "internal error (KeyError)" in str(e.value) and "secret" not in str(e.value)


def test_cli_entry_points():
    from typer.testing import CliRunner

    from sslzoo.cli import app
    from sslzoo.demo.__main__ import parse_args

    result = CliRunner().invoke(app, ["demo", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "--host" in result.output and "--port" in result.output
    args = parse_args(["--host", "0.0.0.0", "--port", "8123"])
    assert (args.host, args.port, args.concurrency) == ("0.0.0.0", 8123, 2)


def test_port_in_use_is_an_error_not_a_hang():
    import socket

    from sslzoo.demo import app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(OSError, match="port"):
            app.launch("127.0.0.1", port, block=False, quiet=True)
        cli = run_cli("demo", "--port", port, timeout=120)  # the typer command, a fresh process
    assert cli.returncode == 1 and f"cannot serve on 127.0.0.1:{port}" in cli.stderr
    assert "Traceback" not in cli.stderr


# --- the real server -------------------------------------------------------------------------------

def test_api_every_endpoint(client):
    from gradio_client import handle_file

    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    # a tab whose zoo entries have shipped weights has its endpoint; one whose entries are all still
    # untrained shows its "no model installed" line instead (test_api_new_tabs serves the first three)
    new_tabs = {"/denoise": ("denoising",), "/inpaint": ("context-encoder",), "/clusters": ("deepcluster",),
                "/colorize": ("colorization", "split-brain"), "/exemplar": ("exemplar",), "/counting": ("counting",)}
    shipped = {e for e, pretexts in new_tabs.items() if any(_core.models_for(p) for p in pretexts)}
    assert set(api) == {"/rotation", "/jigsaw", "/jigsaw_random", "/relpatch", "/classify", "/model_info", "/retrieval",
                        *shipped}
    texts = " ".join(str(c.get("props", {}).get("value")) for c in client.config["components"])
    for endpoint, pretexts in new_tabs.items():
        line = f"No {' or '.join(pretexts)} model is installed, so this tab has nothing to show."
        assert (line in texts) == (endpoint not in shipped), endpoint
    turned, label, upright, gallery, summary = client.predict(ROT, handle_file(str(BOOT)), "270°", api_name="/rotation")
    assert label["label"] == "270°" and len(gallery) == 4 and "you turned it by 270°: right" in summary
    assert os.path.isfile(upright["path"] if isinstance(upright, dict) else upright)
    *images, label, idx, summary = client.predict(JIG, handle_file(str(TROUSER)), 3, api_name="/jigsaw")
    assert idx == 3 and len(label["confidences"]) == 5 and len(images) == 3
    *_, idx, _ = client.predict(JIG, handle_file(str(TROUSER)), api_name="/jigsaw_random")
    assert 0 <= idx < 1000
    *_, shown, summary = client.predict(REL, handle_file(str(TROUSER)), "bottom", api_name="/relpatch")
    assert shown == "bottom" and "centre patch" in summary
    label, view, plot, summary = client.predict(ROT, "conv2", handle_file(str(BOOT)), api_name="/classify")
    assert label["label"] == "Ankle boot" and [c["label"] for c in label["confidences"]][0] == "Ankle boot"
    card, plot = client.predict(JIG, api_name="/model_info")
    assert card.startswith("# jigsaw-alexnet") and plot
    from sslzoo.demo.tabs import colorize as colorize_tab

    shipped_colour = [n for n in ("colorization-alexnet", "split-brain-alexnet") if n in _core.models_for("colorization")
                      + _core.models_for("split-brain")]
    assert bool(shipped_colour) == ("/colorize" in shipped)
    for name in shipped_colour:  # the shipped colour models, served: a colour photo, then a gray garment
        *images, error, summary = client.predict(name, handle_file(str(EX["opencv-board.jpg"])), 0.38,
                                                 api_name="/colorize")
        assert error == colorize_tab.colorize(name, EX["opencv-board.jpg"], 0.38)[5] and error > 0
        assert all(images[:3]) and bool(images[3]) == name.startswith("split-brain") and "mean ab error" in summary
        *_, error, summary = client.predict(name, handle_file(str(BOOT)), 0.38, api_name="/colorize")
        assert error is None and "Your image is gray" in summary


def test_api_new_tabs(made, monkeypatch, bad):
    """The Denoise, Inpaint and Clusters tabs with models (directories listed in SSLZOO_DEMO_MODELS),
    served for real (in this process) and called through gradio_client: every tab has its endpoint."""
    from gradio_client import Client, handle_file

    from sslzoo.demo import app

    monkeypatch.setenv(_core.MODELS_ENV, os.pathsep.join(made[k] for k in (DN, CE, CE_CENTRE, DC, DC_BARE)))
    demo, url = app.launch("127.0.0.1", _demo_server.free_port(), block=False, quiet=True)
    try:
        client = Client(url, verbose=False, download_files=False)
        api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
        assert {"/rotation", "/jigsaw", "/jigsaw_random", "/relpatch", "/denoise", "/inpaint", "/clusters", "/classify",
                "/model_info", "/retrieval"} <= set(api) <= {"/rotation", "/jigsaw", "/jigsaw_random", "/relpatch",
                                                             "/denoise", "/inpaint", "/clusters", "/classify", "/model_info",
                                                             "/retrieval", "/colorize", "/exemplar", "/counting"}
        *images, psnr_in, psnr_out, summary = client.predict(made[DN], handle_file(str(BOOT)), 0.25, 4, api_name="/denoise")
        local = denoise_tab.denoise(made[DN], BOOT, 0.25, 4)
        assert len(images) == 3 and (psnr_in, psnr_out) == local[3:5] and summary == local[5]
        *images, model_psnr, mean_psnr, summary = client.predict(made[CE], handle_file(str(TROUSER)), "random", 2,
                                                                 api_name="/inpaint")
        assert (model_psnr, mean_psnr) == inpaint_tab.inpaint(made[CE], TROUSER, "random", 2)[3:5]
        with pytest.raises(Exception, match="pick the centre mask"):
            client.predict(made[CE_CENTRE], handle_file(str(TROUSER)), "random", 2, api_name="/inpaint")
        view, top, gallery, size_text, summary = client.predict(made[DC], handle_file(str(BOOT)), api_name="/clusters")
        local = clusters_tab.clusters(made[DC], BOOT)
        assert top["label"] == next(iter(local[1])) and len(top["confidences"]) == 3
        assert [g["caption"] for g in gallery] == [cap for _, cap in local[2]] and size_text == local[3]
        bare = client.predict(made[DC_BARE], handle_file(str(BOOT)), api_name="/clusters")
        assert bare[2] == [] and "no clusters.safetensors ships with this model" in bare[3]
        path, words = bad["not an image"]
        for args, endpoint in (((made[DN], 0.5, 0), "/denoise"), ((made[CE], "centre", 0), "/inpaint"), ((made[DC],), "/clusters")):
            with pytest.raises(Exception) as e:
                client.predict(args[0], handle_file(str(path)), *args[1:], api_name=endpoint)
            assert words in str(e.value) and "Traceback" not in str(e.value)
    finally:
        demo.close()


def test_api_bad_uploads_answer_and_server_survives(client, server, bad):
    from gradio_client import handle_file

    for name, (path, words) in bad.items():
        with pytest.raises(Exception) as e:
            client.predict(ROT, handle_file(str(path)), "0°", api_name="/rotation")
        assert words in str(e.value) and "Traceback" not in str(e.value), (name, str(e.value))
    with pytest.raises(Exception, match="permutation must be"):
        client.predict(JIG, handle_file(str(TROUSER)), 5000, api_name="/jigsaw")
    assert server.alive()
    assert client.predict(ROT, handle_file(str(BOOT)), "0°", api_name="/rotation")[1]["label"] == "0°"


def test_api_concurrent_clients_queue(server):
    from gradio_client import Client, handle_file

    def one(i):
        c = Client(server.url, verbose=False, download_files=False)
        turn = rotation_tab.ANGLE_LABELS[i % 4]
        return turn, c.predict(ROT, handle_file(str(TROUSER)), turn, api_name="/rotation")[1]["label"]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(4)))
    assert all(got == want for want, got in results), results


def test_no_connection_leaves_the_machine(server, client):
    import urllib.request

    from gradio_client import handle_file

    with urllib.request.urlopen(server.url, timeout=60) as r:  # the page and its config
        assert b"sslzoo demo" in r.read()
    client.predict(REL, handle_file(str(CAT)), "top", api_name="/relpatch")
    client.predict(ROT, "conv1", handle_file(str(CAT)), api_name="/classify")
    records = server.connections()
    assert any(r["event"] == "socket.connect" for r in records), "the audit hook saw no connect at all"
    outside = [r for r in records if not _demo_server.is_local(r)]
    assert not outside, f"non-loopback connections or lookups: {outside}"
