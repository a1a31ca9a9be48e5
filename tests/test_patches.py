"""The patch pretexts: permutation sets, tile cutting, jigsaw / relative-patch heads and plug-ins."""
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sslzoo import zoo
from sslzoo.training.loop import TrainConfig, _generator, make_batch, make_optimizer, train_step
from sslzoo.training.pretexts import Batch, get_pretext
from sslzoo.zoo.pretexts import jigsaw, patches, relpatch

from .conftest import run_cli

CELL, TILE = patches.CELL, patches.TILE
GRID_PX = 3 * CELL


@pytest.fixture(scope="module")
def jigsaw_model():
    torch.manual_seed(0)
    return zoo.load("jigsaw-alexnet", pretrained=False)


@pytest.fixture(scope="module")
def relpatch_model():
    torch.manual_seed(0)
    return zoo.load("relative-patch-alexnet", pretrained=False)


# --- permutation sets ----------------------------------------------------------------------------

@pytest.mark.parametrize("size", [100, 1000])
def test_permutation_set_is_a_set_of_permutations(size):
    perms = jigsaw.permutation_set(size, seed=0)
    assert perms.shape == (size, 9) and perms.dtype == torch.int64
    assert torch.equal(perms.sort(-1).values, torch.arange(9).expand(size, 9))  # each row a permutation
    assert len({tuple(p) for p in perms.tolist()}) == size  # no repeats


def test_hamming_stats_match_brute_force():
    perms = jigsaw.permutation_set(100, seed=0)
    pairs = [sum(a != b for a, b in zip(p, q)) for p, q in itertools.combinations(perms.tolist(), 2)]
    assert jigsaw.hamming_stats(perms) == (min(pairs), pytest.approx(sum(pairs) / len(pairs)))
    big = jigsaw.permutation_set(1000, seed=0).numpy()
    d = (big[:, None, :] != big[None, :, :]).sum(-1)[np.triu_indices(1000, 1)]
    assert jigsaw.hamming_stats(big) == (d.min(), pytest.approx(d.mean()))


def test_greedy_set_is_reproducible_and_beats_a_random_set():
    a = jigsaw.permutation_set(100, seed=3)
    jigsaw._greedy_set.cache_clear()
    assert torch.equal(jigsaw.permutation_set(100, seed=3), a)  # recomputed, same bits
    assert not torch.equal(jigsaw.permutation_set(100, seed=4), a)
    # the greedy selection is exact: same picks as the plain rescore-everything algorithm
    cand = jigsaw.all_permutations()[np.random.default_rng(3).permutation(362880)]
    matches, picks = np.zeros(len(cand), np.int64), [0]
    for _ in range(29):
        matches += (cand == cand[picks[-1]]).sum(1)  # positions in common with the last pick
        matches[picks] = 1 << 40  # chosen already
        picks.append(int(matches.argmin()))
    assert torch.equal(torch.from_numpy(cand[picks].astype(np.int64)), jigsaw.permutation_set(30, seed=3))

    rand = torch.stack([torch.randperm(9, generator=torch.Generator().manual_seed(i)) for i in range(100)])
    (gmin, gmean), (rmin, rmean) = jigsaw.hamming_stats(a), jigsaw.hamming_stats(rand)
    assert gmean > rmean + 0.05 and gmin >= rmin
    with pytest.raises(ValueError, match="362880"):
        jigsaw.permutation_set(0)


# --- cutting ---------------------------------------------------------------------------------------

def _noise_images(b, c=1, seed=0):
    """Images already at the grid size (no resize), random so that every crop is unique."""
    return torch.randn(b, c, GRID_PX, GRID_PX, generator=torch.Generator().manual_seed(seed))


def _batch(x, input_size=None):
    """A plug-in's Batch of normalised images ``x`` (the data config's size: ``input_size`` or x's)."""
    size = input_size or list(x.shape[1:])
    return Batch(x, torch.arange(len(x)), {"input_size": size, "mean": [0.0] * x.shape[1], "std": [1.0] * x.shape[1]})


def _where_cut(tile, image):
    """The cells of ``image`` (C x G x G) holding a crop whose per-tile normalisation is ``tile``."""
    windows = image.unfold(1, TILE, 1).unfold(2, TILE, 1).permute(1, 2, 0, 3, 4)  # n x n x C x t x t
    jitter = CELL - TILE + 1
    found = set()
    for cell in range(9):
        r, c = divmod(cell, 3)
        crops = patches.normalize_tiles(windows[r * CELL:r * CELL + jitter, c * CELL:c * CELL + jitter])
        if ((crops - tile).abs().amax((-3, -2, -1)) < 1e-4).any():
            found.add(cell)
    return found


def test_cut_tiles_positions_jitter_and_centre_mode():
    g = GRID_PX
    rows, cols = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
    x = torch.stack([rows, cols]).float()[None].repeat(4, 1, 1, 1)  # 4 x 2 x G x G: pixel = its (row, col)
    cells = torch.stack([torch.randperm(9, generator=torch.Generator().manual_seed(i)) for i in range(4)])
    tiles = patches.cut_tiles(x, gen=torch.Generator().manual_seed(0), cells=cells)
    assert tiles.shape == (4, 9, 2, TILE, TILE)
    tops, lefts = tiles[:, :, 0, 0, 0].long(), tiles[:, :, 1, 0, 0].long()
    cr, cc = cells // 3, cells % 3
    assert ((tops - cr * CELL >= 0) & (tops - cr * CELL <= CELL - TILE)).all()  # inside the cell asked for
    assert ((lefts - cc * CELL >= 0) & (lefts - cc * CELL <= CELL - TILE)).all()
    ar = torch.arange(TILE).float()
    assert torch.equal(tiles[:, :, 0], (tops[..., None, None] + ar[:, None]).float().expand_as(tiles[:, :, 0]))
    assert torch.equal(tiles[:, :, 1], (lefts[..., None, None] + ar[None, :]).float().expand_as(tiles[:, :, 1]))
    assert len(set((tops - cr * CELL).flatten().tolist())) > 3  # jittered
    centre = patches.cut_tiles(x)  # no generator: centre crops, all nine in row-major order
    margin = (CELL - TILE) // 2
    assert centre[0, :, 0, 0, 0].tolist() == [r * CELL + margin for r in range(3) for _ in range(3)]
    assert centre[0, :, 1, 0, 0].tolist() == [c * CELL + margin for _ in range(3) for c in range(3)]
    # any input size is resized to the grid first: a 3x3 block image keeps each cell's value inside the tile
    blocks = torch.arange(9.0).view(1, 1, 3, 3)
    small = patches.cut_tiles(F.interpolate(blocks, size=(28, 28), mode="nearest"))
    assert torch.allclose(small[0, :, 0, TILE // 2, TILE // 2], torch.arange(9.0))
    with pytest.raises(ValueError, match="tile <= cell"):
        patches.cut_tiles(x, cell=60, tile=64)


@pytest.mark.parametrize("size", [28, 64, 300])
def test_tiles_of_other_sizes_equal_resizing_to_the_grid_then_cropping(size):
    # the per-tile band matmuls must give what F.interpolate to the grid + crop gives, for up- and downsizing
    x = torch.randn(3, 2, size, size, generator=torch.Generator().manual_seed(size))
    cells = torch.stack([torch.randperm(9, generator=torch.Generator().manual_seed(i)) for i in range(3)])
    grid = F.interpolate(x, size=(GRID_PX, GRID_PX), mode="bilinear", align_corners=False)
    via_grid = patches.cut_tiles(grid, gen=torch.Generator().manual_seed(5), cells=cells)
    direct = patches.cut_tiles(x, gen=torch.Generator().manual_seed(5), cells=cells)
    assert torch.allclose(direct, via_grid, atol=1e-4)
    fused = patches.cut_tiles(x, gen=torch.Generator().manual_seed(5), cells=cells, normalize=True)
    assert torch.allclose(fused, patches.normalize_tiles(via_grid), atol=1e-3)
    flat = patches.cut_tiles(torch.full((1, 1, size, size), 0.3), normalize=True)  # blank: 0, not noise blown up
    assert torch.equal(flat, torch.zeros_like(flat))
    # bf16 tiles (training under bf16 autocast): the fp32 tiles to bf16 rounding, not a cast of something else
    half = patches.cut_tiles(x, gen=torch.Generator().manual_seed(5), cells=cells, normalize=True, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16 and half.shape == fused.shape
    assert torch.allclose(half.float(), fused, rtol=2e-2, atol=2e-2)
    assert (half.float() - fused).abs().mean() < 4e-3


def test_plugins_make_inputs_in_the_dtype_asked_for(jigsaw_model, relpatch_model):
    x = _noise_images(4)
    for pt in (get_pretext("jigsaw", jigsaw_model), get_pretext("relative-patch", relpatch_model), get_pretext("rotation")):
        ref, ref_targets = pt.make_batch(_batch(x), torch.Generator().manual_seed(2))
        half, targets = pt.make_batch(_batch(x), torch.Generator().manual_seed(2), torch.bfloat16)
        assert ref.dtype == torch.float32 and half.dtype == torch.bfloat16, pt.name
        assert torch.equal(targets, ref_targets) and torch.allclose(half.float(), ref, atol=3e-2), pt.name


def test_per_tile_normalisation_and_grayscale():
    t = torch.randn(2, 9, 3, 8, 8) * 5 + 3
    n = patches.normalize_tiles(t)
    assert torch.allclose(n.mean((-2, -1)), torch.zeros(2, 9, 3), atol=1e-5)
    assert torch.allclose(n.std((-2, -1), unbiased=False), torch.ones(2, 9, 3), atol=1e-4)
    flat = patches.normalize_tiles(torch.full((1, 1, 8, 8), 7.0))  # blank background stays 0, not inf
    assert torch.equal(flat, torch.zeros_like(flat))
    gray = patches.random_grayscale(t, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(gray[..., 0, :, :], gray[..., 1, :, :]) and torch.equal(gray[..., 1, :, :], gray[..., 2, :, :])
    assert torch.equal(patches.random_grayscale(t, 0.0), t)
    one = torch.randn(4, 1, 8, 8)
    assert patches.random_grayscale(one, 1.0) is one  # 1-channel: no-op


# --- jigsaw -----------------------------------------------------------------------------------------

def test_jigsaw_plugin_shuffles_tiles_by_the_target_permutation(jigsaw_model):
    pt = get_pretext("jigsaw", jigsaw_model)
    assert torch.equal(pt.permutations, jigsaw_model.head.permutations) and len(pt.permutations) == 1000
    x = _noise_images(2)
    inputs, targets = pt.make_batch(_batch(x), torch.Generator().manual_seed(1))
    assert inputs.shape == (2, 9, 1, TILE, TILE) and targets.shape == (2,)
    for b in range(2):
        perm = pt.permutations[targets[b]]
        for i in range(9):  # position i shows a (jittered, normalised) crop of cell perm[i], of no other cell
            assert _where_cut(inputs[b, i], x[b]) == {int(perm[i])}


def test_puzzle_predict_reassemble_round_trip(jigsaw_model):
    m = jigsaw_model
    image = torch.randn(1, 64, 64, generator=torch.Generator().manual_seed(2))
    in_place = patches.cut_tiles(image[None], normalize=True)[0]  # 9 x 1 x t x t, cell order
    tiles, index = jigsaw.make_puzzle(image, 123, m)
    assert index == 123 and tiles.shape == (9, 1, TILE, TILE)
    assert not torch.equal(tiles, in_place)
    perfect = F.one_hot(torch.tensor([index]), m.head.num_permutations).float()  # a model that is always right
    perm = jigsaw.predicted_permutation(perfect, m)[0]
    assert torch.equal(perm, m.head.permutations[123])
    assert torch.equal(jigsaw.reassemble(tiles, perm), in_place)
    assert torch.equal(jigsaw.reassemble(tiles[None], perm[None])[0], in_place)  # batched form
    with torch.no_grad():
        logits = m.predict_pretext(tiles[None])
    assert logits.shape == (1, 1000)
    guess = jigsaw.reassemble(tiles, jigsaw.predicted_permutation(logits, m)[0])
    assert guess.shape == tiles.shape
    picture = jigsaw.puzzle_image(jigsaw.make_puzzle(image, 5, m, normalize=False)[0], gap=4)
    assert picture.shape == (1, 3 * TILE + 8, 3 * TILE + 8)
    _, random_index = jigsaw.make_puzzle(image, None, m, gen=torch.Generator().manual_seed(0))
    assert 0 <= random_index < 1000
    with pytest.raises(ValueError, match="B x 9 x C"):
        m.predict_pretext(torch.randn(2, 1, 64, 64))
    with pytest.raises(ValueError, match="out of range"):
        jigsaw.make_puzzle(image, 1000, m)


def test_jigsaw_save_load_keeps_the_permutation_set(tmp_path, jigsaw_model):
    m = jigsaw_model
    assert torch.equal(m.head.permutations, jigsaw.permutation_set(1000, 0))
    assert m.config["pretext_args"]["num_permutations"] == 1000 and m.config["pretext_args"]["permutation_seed"] == 0
    own = m.head.permutations.flip(0).clone()  # a set no constructor would make: must come from the file
    m.head.permutations.copy_(own)
    try:
        loaded = zoo.load(zoo.save_pretrained(m, tmp_path / "j"))
    finally:
        m.head.permutations.copy_(own.flip(0))
    assert loaded.pretext == "jigsaw" and torch.equal(loaded.head.permutations, own)
    tiles = jigsaw.make_puzzle(torch.randn(1, 64, 64), 7, loaded)[0][None]
    with torch.no_grad():
        assert torch.allclose(loaded.predict_pretext(tiles), m.predict_pretext(tiles), atol=0.05)


def test_jigsaw_per_tile_mlp_widths():
    one = jigsaw.JigsawHead(256, num_permutations=100, tile_hidden=512)  # the paper's single fc6
    deep = jigsaw.JigsawHead(256, num_permutations=100, tile_hidden=[1024, 512])
    linears = lambda seq: [(m.in_features, m.out_features) for m in seq if isinstance(m, torch.nn.Linear)]
    assert linears(one.fc6) == [(256, 512)] and linears(deep.fc6) == [(256, 1024), (1024, 512)]
    assert linears(deep.classifier)[0] == (9 * 512, 512)  # the last width is what each tile contributes
    assert isinstance(deep.fc6[-1], torch.nn.ReLU)
    trunk = zoo.load("jigsaw-alexnet", pretrained=False).trunk
    deep.eval()
    with torch.no_grad():
        assert deep(trunk, torch.randn(2, 9, 1, 64, 64)).shape == (2, 100)
    for bad in (0, [], [512, 0]):
        with pytest.raises(ValueError, match="tile_hidden"):
            jigsaw.JigsawHead(256, num_permutations=100, tile_hidden=bad)


# --- relative patch location -------------------------------------------------------------------

def test_relpatch_plugin_pairs_centre_with_the_target_neighbour(relpatch_model):
    pt = get_pretext("relative-patch", relpatch_model)
    x = _noise_images(8)
    inputs, targets = pt.make_batch(_batch(x), torch.Generator().manual_seed(3))
    assert inputs.shape == (8, 2, 1, TILE, TILE) and set(targets.tolist()) <= set(range(8))
    for b in range(8):
        assert _where_cut(inputs[b, 0], x[b]) == {relpatch.CENTRE}
        assert _where_cut(inputs[b, 1], x[b]) == {relpatch.NEIGHBOURS[targets[b]]}
    image = torch.randn(1, 64, 64)
    pair, pos = relpatch.make_pair(image, 6, relpatch_model, normalize=False)
    centre = patches.cut_tiles(image[None])[0]
    assert pos == 6 and torch.equal(pair[0], centre[4]) and torch.equal(pair[1], centre[7])  # 6 = bottom
    with torch.no_grad():
        assert relpatch_model.predict_pretext(pair[None]).shape == (1, 8)
    with pytest.raises(ValueError, match="B x 2 x C"):
        relpatch_model.predict_pretext(torch.randn(1, 9, 1, 64, 64))


def test_relpatch_colour_steps():
    pairs = torch.randn(64, 2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    pairs = pairs + torch.tensor([0.0, 1, 2]).view(3, 1, 1)  # channels with different means
    out = relpatch.prepare_pairs(pairs, torch.Generator().manual_seed(1), colour_p=1.0)
    std = out.std((-2, -1))  # 64 x 2 x 3
    gray = (out[:, :, 0] == out[:, :, 1]).all(-1).all(-1) & (out[:, :, 1] == out[:, :, 2]).all(-1).all(-1)
    dropped = (std < 0.05).sum(-1) == 2  # two channels are faint noise, one is the normalised patch
    assert gray.any() and dropped.any() and (gray ^ dropped).all()
    one = torch.randn(4, 2, 1, 16, 16)
    assert torch.equal(relpatch.prepare_pairs(one, torch.Generator().manual_seed(0)), patches.normalize_tiles(one))


# --- training ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, pretext_args", [
    ("jigsaw-alexnet", {"num_permutations": 100}),  # the paper's smaller set: visibly learning in 20 small steps
    ("relative-patch-alexnet", {}),
])
def test_a_few_steps_decrease_the_loss(name, pretext_args, fmnist_root):
    from sslzoo.training.data import load_fashion_mnist
    from sslzoo.zoo._registry import lookup

    images = load_fashion_mnist("train", fmnist_root).images[:256]
    config = dict(lookup(name)[1].config)
    config["pretext_args"] = dict(config["pretext_args"], **pretext_args)
    torch.manual_seed(0)
    model = zoo.PretextModel(config).train()
    pt = get_pretext(model.pretext, model)
    chance = np.log(len(pt.permutations) if model.pretext == "jigsaw" else 8)
    opt = make_optimizer(model, TrainConfig(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4))
    losses = []
    for step in range(20):
        idx = torch.randint(0, len(images), (16,), generator=_generator(0, step))
        inputs, targets = make_batch(images[idx], idx, pt, model.data_config, 2, _generator(1, step))
        _, loss = train_step(model, opt, pt, inputs, targets, bf16=False)
        losses.append(loss.item())
    first, last = np.mean(losses[:4]), np.mean(losses[-4:])
    assert first == pytest.approx(chance, abs=0.3), losses  # chance level at the start
    assert last < first - 0.15, losses


def test_sslzoo_train_runs_jigsaw_through_the_loop(tmp_path, fmnist_root):
    out = tmp_path / "jig"
    run_cli("train", "jigsaw-alexnet", "--out", out, "--limit", "48", "--batch-size", "16", "--epochs", "1",
            "--warmup-steps", "1", "--eval-limit", "16", "--no-progress", "--precision", "fp32", check=True)
    m = zoo.load(out / "model")
    assert m.pretext == "jigsaw" and m.config["provenance"]["steps"] == 3
    assert torch.equal(m.head.permutations, jigsaw.permutation_set(1000, 0))


def test_patch_entries_load_without_weights():
    assert {"jigsaw-alexnet", "relative-patch-alexnet"} <= set(zoo.list_models())
    assert {"jigsaw-alexnet.fmnist", "relative-patch-alexnet.fmnist"} <= set(zoo.list_models(tags=True))
    for name, pretext in (("jigsaw-alexnet", "jigsaw"), ("relative-patch-alexnet", "relative-patch")):
        m = zoo.load(name, pretrained=False)
        # features and probes see the whole image at the grid size; the pretext head is sized for 64-px tiles
        assert m.pretext == pretext and m.data_config["input_size"] == [1, 160, 160]
        with torch.no_grad():
            assert m.features(torch.randn(2, 1, 160, 160), "conv5")["conv5"].shape == (2, 256, 9, 9)
            tiles = torch.randn(2, 9 if pretext == "jigsaw" else 2, 1, 64, 64)
            assert m.predict_pretext(tiles).shape == (2, 1000 if pretext == "jigsaw" else 8)
