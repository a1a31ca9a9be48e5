"""Colour science of the colour pretexts (zoo/_colour.py) against scikit-image and brute force."""
import math
import warnings

import numpy as np
import pytest
import torch
from skimage.color import lab2rgb, rgb2lab

from sslzoo.zoo import _colour as C

pytestmark = pytest.mark.usefixtures("one_thread")

EDGES = [(0, 0, 0), (1, 1, 1), (1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 1, 1), (1, 0, 1), (1, 1, 0), (0.5, 0.5, 0.5),
         (0.001, 0.002, 0.0005), (0.04045, 0.04, 0.041), (0.01, 0.0, 0.99), (1.0, 0.5, 0.0)]


def nchw(hwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(hwc.transpose(0, 3, 1, 2)))


def colours(seed: int = 0, shape=(4, 3, 16, 20)) -> torch.Tensor:
    """Random sRGB float32 B x 3 x H x W, with the edge colours in the first image's first row."""
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(seed))
    x[0, :, 0, :len(EDGES)] = torch.tensor(EDGES, dtype=torch.float32).T
    return x


@pytest.fixture(scope="module")
def bins() -> torch.Tensor:
    return C.ab_bins()


def brute_knn(ab: torch.Tensor, bins: torch.Tensor, k: int):
    """Squared distances and indices of the k nearest bins, P x k, float64 brute force (pixels in b, h, w order)."""
    points = ab.double().permute(0, 2, 3, 1).reshape(-1, 2)
    return torch.cdist(points, bins.double()).square().topk(k, dim=1, largest=False)


def test_rgb_to_lab_matches_skimage_on_random_and_edge_colours():
    x = colours()
    lab = C.rgb_to_lab(x)
    assert lab.shape == x.shape and lab.dtype == torch.float32
    ref = rgb2lab(x.permute(0, 2, 3, 1).double().numpy())  # B x H x W x 3
    assert np.abs(lab.permute(0, 2, 3, 1).double().numpy() - ref).max() < 1e-3
    edges = lab[0, :, 0, :8].T  # black, white, R, G, B, C, M, Y
    assert torch.allclose(edges[0], torch.zeros(3), atol=1e-3)
    # white: a, b off zero by 0.002-0.005 as in skimage (the matrix's rows sum to the D65 white to 1e-4 only)
    assert torch.allclose(edges[1], torch.tensor([100.0, 0, 0]), atol=1e-2)
    assert edges[2, 1] > 80 and edges[3, 1] < -80 and edges[4, 2] < -100 and edges[7, 2] > 90  # red, green, blue, yellow


def test_lab_to_rgb_matches_skimage_in_and_out_of_gamut():
    x = colours(1)
    lab64 = rgb2lab(x.permute(0, 2, 3, 1).double().numpy())  # in gamut
    rgb = C.lab_to_rgb(nchw(lab64).float())
    assert rgb.dtype == torch.float32
    assert np.abs(rgb.permute(0, 2, 3, 1).double().numpy() - lab2rgb(lab64)).max() < 1e-3
    # out of gamut (clipped the same way, b far above what L allows included)
    g = torch.Generator().manual_seed(2)
    wild = torch.stack([torch.rand(2, 12, 12, generator=g) * 100, torch.rand(2, 12, 12, generator=g) * 256 - 128,
                        torch.rand(2, 12, 12, generator=g) * 256 - 128], 1).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skimage warns about the negative Z it clips
        ref = lab2rgb(wild.permute(0, 2, 3, 1).numpy())
    out = C.lab_to_rgb(wild.float()).permute(0, 2, 3, 1).double().numpy()
    assert out.min() >= 0 and out.max() <= 1
    assert np.abs(out - ref).max() < 1e-3


def test_srgb_transfer_curve():
    x = torch.cat([torch.linspace(0, 0.06, 601), torch.rand(1000, generator=torch.Generator().manual_seed(12))]).double()
    xn = x.numpy()
    ref = np.where(xn <= 0.04045, xn / 12.92, ((xn + 0.055) / 1.055) ** 2.4)  # IEC 61966-2-1
    assert np.abs(C.srgb_to_linear(x).numpy() - ref).max() < 1e-7
    assert (C.linear_to_srgb(C.srgb_to_linear(x)) - x).abs().max() < 1e-6
    assert torch.allclose(C.srgb_to_linear(torch.tensor([-0.5, 1.5])), torch.tensor([0.0, 1.0]), atol=1e-7)  # clipped


@pytest.mark.parametrize("shape", [(3, 3, 160, 170), (1, 3, 300, 250)])  # > 64k pixels: the CPU's chunked path
def test_large_batches_match_skimage(shape):
    """Several whole images per step, and pieces of one image per step."""
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(13))
    lab = C.rgb_to_lab(x)
    ref = rgb2lab(x.permute(0, 2, 3, 1).double().numpy())
    assert np.abs(lab.permute(0, 2, 3, 1).double().numpy() - ref).max() < 1e-3
    assert np.abs(C.lab_to_rgb(lab).permute(0, 2, 3, 1).double().numpy() - lab2rgb(ref)).max() < 1e-3


def test_round_trip():
    x = colours(3)
    assert (C.lab_to_rgb(C.rgb_to_lab(x)) - x).abs().max() < 1e-4
    lab = C.rgb_to_lab(x)
    assert (C.rgb_to_lab(C.lab_to_rgb(lab)) - lab).abs().max() < 2e-3  # Lab units, float32


def test_rgb_to_lab_has_gradients():
    """The trunk front ends call rgb_to_lab inside a model's forward."""
    x = (torch.rand(1, 3, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 0.9 + 0.05)
    assert torch.autograd.gradcheck(C.rgb_to_lab, (x.requires_grad_(),))


def test_ab_bins_are_the_cells_8_bit_colours_hit(bins):
    assert bins.shape == (261, 2) and bins.dtype == torch.float32
    cells = bins / 10
    assert torch.equal(cells, cells.round()), "bin centres on the 10-unit grid"
    assert len({tuple(c) for c in cells.long().tolist()}) == 261
    assert torch.equal(bins, C.ab_bins())  # cached, and a copy each call
    # independently: skimage's Lab of every 3rd 8-bit level (86^3 colours) hits exactly these cells
    levels = np.arange(0, 256, 3) / 255.0
    rgb = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(1, -1, 3)
    ab = rgb2lab(rgb)[0, :, 1:]
    hit = {tuple(c) for c in np.unique(np.round(ab / 10).astype(int), axis=0).tolist()}
    assert hit == {tuple(c) for c in cells.long().tolist()}
    # so every in-gamut colour's nearest lattice point is a bin, and no bin is out of gamut
    assert ab[:, 0].min() > bins[:, 0].min() - 5 and ab[:, 1].max() < bins[:, 1].max() + 5


def test_soft_encode_sums_to_one_peaks_at_nearest_and_matches_brute_force(bins):
    ab = C.rgb_to_lab(colours(5))[:, 1:]  # B x 2 x H x W float32
    ab[0, :, 0, 0] = torch.tensor([150.0, -150.0])  # beyond every bin
    ab[0, :, 0, 1] = torch.tensor([-1e4, 3e4])  # so far that only the nearest bin's weight survives
    enc = C.soft_encode(ab, bins)
    B, _, H, W = ab.shape
    assert enc.shape == (B, 261, H, W) and enc.dtype == torch.float32
    assert (enc.sum(1) - 1).abs().max() < 1e-5
    nonzero = (enc > 0).sum(1)
    assert nonzero[0, 0, 1] == 1 and (nonzero.flatten()[torch.arange(B * H * W) != 1] == 5).all()
    d2, idx = brute_knn(ab, bins, 5)
    assert torch.equal(enc.argmax(1).flatten(), idx[:, 0])  # peaks at the nearest bin
    w = torch.softmax(-d2 / (2 * 5.0 ** 2), 1)  # exp(-d^2 / 2 sigma^2), normalised (stable form)
    flat = enc.permute(0, 2, 3, 1).reshape(-1, 261).double()
    assert (flat.gather(1, idx) - w).abs().max() < 1e-5  # the Gaussian over the 5 nearest, nothing else
    index, weight = C.soft_encode_knn(ab, bins)
    assert torch.equal(index[:, 0], C.nearest_bin(ab, bins))
    assert torch.equal(C.densify(index, weight, 261), enc)


def test_soft_encode_on_irregular_bins_and_other_k():
    """The candidate search is exact for any bin set, not only colorization's grid."""
    g = torch.Generator().manual_seed(6)
    bins = torch.randn(40, 2, generator=g) * 30
    ab = torch.randn(3, 2, 9, 11, generator=g) * 40
    for k in (1, 3, 7):
        index, weight = C.soft_encode_knn(ab, bins, k=k, sigma=8.0)
        d2, idx = brute_knn(ab, bins, k)
        assert torch.equal(index.permute(0, 2, 3, 1).reshape(-1, k), idx)
        w = torch.softmax(-d2 / (2 * 8.0 ** 2), 1)
        assert (weight.permute(0, 2, 3, 1).reshape(-1, k).double() - w).abs().max() < 1e-5


def test_annealed_mean_mode_and_mean(bins):
    g = torch.Generator().manual_seed(7)
    probs = torch.softmax(torch.randn(2, 261, 5, 6, generator=g) * 3, 1)
    mean = torch.einsum("bkhw,kc->bchw", probs, bins)
    out = C.annealed_mean(probs, bins, T=1.0)
    assert out.shape == (2, 2, 5, 6) and out.dtype == torch.float32
    assert (out - mean).abs().max() < 1e-3
    mode = bins[probs.argmax(1)].permute(0, 3, 1, 2)  # B x 2 x H x W
    assert (C.annealed_mean(probs, bins, T=1e-3) - mode).abs().max() < 1e-3
    # in between: further from the mean than T = 1, closer to the mode (more saturated)
    mid = C.annealed_mean(probs, bins, T=0.38)
    assert (mid - mode).norm(dim=1).mean() < (mean - mode).norm(dim=1).mean()


def test_rebalance_weights(bins):
    g = torch.Generator().manual_seed(8)
    counts = (torch.rand(261, generator=g) ** 6 * 1e5).long()  # skewed: some bins rare, some common
    counts[:10] = 0
    p = C.smooth_prior(counts, bins)
    assert p.shape == (261,) and abs(float(p.sum()) - 1) < 1e-9 and (p > 0).all()  # smoothing reaches empty bins
    w = C.rebalance_weights(counts, bins=bins)
    assert w.shape == (261,) and w.dtype == torch.float32
    assert abs(float((p * w.double()).sum()) - 1) < 1e-5  # E_p~[w] = 1
    order = p.argsort()
    assert (w[order].diff() <= 1e-6).all() and w[order[0]] > 1.5 * w[order[-1]]  # rarer -> larger
    const = w.double() * (0.5 * p + 0.5 / 261)  # w ~ ((1 - lam) p~ + lam / K)^-1
    assert (const / const.mean() - 1).abs().max() < 1e-5
    assert torch.allclose(C.rebalance_weights(counts, lam=1.0, bins=bins), torch.ones(261))  # uniform mix: flat
    # probabilities in, same weights out
    assert torch.allclose(C.rebalance_weights(counts / counts.sum(), bins=bins), w, rtol=1e-5)


def test_smoothing_is_a_gaussian_over_the_ab_plane(bins):
    centre = int(((bins - torch.tensor([0.0, 0.0])).norm(dim=1)).argmin())  # (0, 0): all 8 neighbours in gamut
    one = torch.zeros(261)
    one[centre] = 1
    p = C.smooth_prior(one, bins, sigma=5.0)
    d2 = (bins - bins[centre]).square().sum(1).double()
    assert torch.allclose(p / p[centre], torch.exp(-d2 / 50), atol=1e-12)  # exp(-d^2 / 2 sigma^2)
    assert abs(float(p.sum()) - 1) < 1e-12


def test_ab_prior_counts_nearest_bins(bins):
    g = torch.Generator().manual_seed(9)
    a, b = C.rgb_to_lab(torch.rand(2, 3, 8, 8, generator=g))[:, 1:], C.rgb_to_lab(torch.rand(3, 3, 5, 7, generator=g))[:, 1:]
    counts = C.ab_prior(a, bins)
    assert counts.shape == (261,) and counts.sum() == 2 * 8 * 8
    assert torch.equal(counts, torch.bincount(brute_knn(a, bins, 1)[1][:, 0], minlength=261))
    assert torch.equal(C.ab_prior(iter([a, b]), bins), counts + C.ab_prior(b, bins))


def test_quantize_l():
    L = torch.tensor([0.0, 1.99, 2.0, 50.0, 99.99, 100.0, -3.0, 104.0])
    assert C.quantize_l(L).tolist() == [0, 0, 1, 25, 49, 49, 0, 49]
    centres = C.l_centres()
    assert centres.shape == (50,) and torch.equal(C.quantize_l(centres), torch.arange(50))
    x = torch.rand(2, 1, 6, 7, generator=torch.Generator().manual_seed(10)) * 100
    q = C.quantize_l(x)
    assert q.shape == x.shape and q.dtype == torch.long
    assert (centres[q] - x).abs().max() <= 1.0 + 1e-5
    assert C.quantize_l(torch.tensor([99.0]), bins=100).item() == 99 and math.isclose(C.l_centres(4)[0].item(), 12.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_same_on_cuda(bins):
    x = colours(11)
    lab = C.rgb_to_lab(x)
    assert (C.rgb_to_lab(x.cuda()).cpu() - lab).abs().max() < 1e-3
    assert (C.lab_to_rgb(lab.cuda()).cpu() - C.lab_to_rgb(lab)).abs().max() < 1e-4
    index, weight = C.soft_encode_knn(lab[:, 1:].cuda(), bins.cuda())
    ref_index, ref_weight = C.soft_encode_knn(lab[:, 1:], bins)
    assert (index.cpu() == ref_index).float().mean() > 0.999 and (weight.cpu() - ref_weight).abs().max() < 1e-3
