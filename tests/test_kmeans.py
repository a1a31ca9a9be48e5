"""training/kmeans.py: exact assignments (float32 and bf16 + float32 re-check), Lloyd steps against a
numpy reference, empty clusters re-seeded, determinism, PCA whitening, NMI against scikit-learn."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sslzoo.training import kmeans as km


def _blobs(n: int, d: int, centers: int, spread: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(centers, d, generator=g) * 3
    return (mu[torch.arange(n) % centers] + spread * torch.randn(n, d, generator=g)).float()


def _argmin64(x: torch.Tensor, c: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force float64 nearest centroid and the gap to the runner-up (N, N)."""
    x64, c64 = x.double().numpy(), c.double().numpy()
    d2 = ((x64[:, None, :] - c64[None, :, :]) ** 2).sum(-1)  # N x k
    order = np.sort(d2, axis=1)
    return d2.argmin(1), order[:, 1] - order[:, 0]


def _lloyd_step_np(x: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    d2 = ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)
    a = d2.argmin(1)
    new = np.stack([x[a == j].mean(0) for j in range(len(c))])
    return a, new, float(d2.min(1).sum())


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_assignment_equals_float64_bruteforce(precision):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3000, 48, generator=g)
    c = torch.randn(37, 48, generator=g)
    ref, gap = _argmin64(x, c)
    assert gap.min() > 1e-4  # no near-ties at float32's resolution in this data
    assert torch.equal(km.assign(x, c), torch.from_numpy(ref))
    # the same through kmeans(iters=0): one assignment pass to the initial centroids, small chunks
    res = km.kmeans(x, 37, iters=0, init=c, chunk=100, precision=precision)
    assert torch.equal(res.assign, torch.from_numpy(ref))
    assert res.stats["precision"] == precision


def test_bf16_near_ties_are_settled_in_float32():
    """Centroids 1e-3 apart: bf16 dot products (off by ~1e-2) cannot tell them apart, the float32
    re-check must, and the result must be the float64 argmin, as float32 gives."""
    g = torch.Generator().manual_seed(2)
    x = km.l2_normalize(torch.randn(2000, 64, generator=g))
    base = km.l2_normalize(torch.randn(4, 64, generator=g))
    c = base.repeat_interleave(6, 0) + 1e-3 * torch.randn(24, 64, generator=g)  # 24 x 64
    ref, gap = _argmin64(x, c)
    assert gap.min() > 1e-7
    naive = (c.pow(2).sum(1)[:, None] - 2 * (c.bfloat16() @ x.bfloat16().T).float()).argmin(0)
    assert (naive.numpy() != ref).sum() > 100  # bf16 alone gets many rows wrong
    res = km.kmeans(x, 24, iters=0, init=c, precision="bf16", chunk=256)
    assert res.stats["rows_rechecked_fp32"][0] > 1000  # the near-tie path ran for most rows
    assert torch.equal(res.assign, torch.from_numpy(ref))
    assert torch.equal(km.kmeans(x, 24, iters=0, init=c, precision="fp32").assign, res.assign)


def test_bf16_and_fp32_runs_agree():
    x = km.l2_normalize(_blobs(1500, 32, 12, 1.5, seed=3))
    a = km.kmeans(x, 20, iters=10, seed=4, precision="fp32")
    b = km.kmeans(x, 20, iters=10, seed=4, precision="bf16")
    assert torch.equal(a.assign, b.assign)
    assert torch.equal(a.centroids, b.centroids)


def test_one_lloyd_step_equals_numpy_reference():
    x = _blobs(600, 16, 5, 1.0, seed=5)
    init = km.initial_centroids(x, 7, seed=6)
    x64, c0 = x.double().numpy(), init.double().numpy()
    a0, c1, inertia0 = _lloyd_step_np(x64, c0)
    a1, _, inertia1 = _lloyd_step_np(x64, c1)
    res = km.kmeans(x, 7, iters=1, init=init)
    assert res.reseeded == [0]
    np.testing.assert_allclose(res.centroids.numpy(), c1, rtol=0, atol=1e-5)
    assert np.array_equal(res.assign.numpy(), a1)
    np.testing.assert_allclose(res.inertia_history, [inertia0, inertia1], rtol=1e-6)
    assert res.inertia == res.inertia_history[-1]
    assert torch.equal(res.sizes, torch.bincount(res.assign, minlength=7))
    assert torch.equal(res.init, init)


def test_inertia_non_increasing_and_consistent():
    x = _blobs(2000, 24, 10, 2.0, seed=7)
    res = km.kmeans(x, 16, iters=15, seed=8)
    assert res.reseeded == [0] * 15  # Lloyd's monotonicity only holds without re-seeding
    hist = np.array(res.inertia_history)
    assert len(hist) == 16
    assert (np.diff(hist) <= 1e-9 * hist[0]).all(), hist
    direct = ((x.double() - res.centroids.double()[res.assign]) ** 2).sum().item()
    assert res.inertia == pytest.approx(direct, rel=1e-9)
    assert torch.equal(res.sizes, torch.bincount(res.assign, minlength=16))
    ref, _ = _argmin64(x, res.centroids)  # the returned assignment is to the returned centroids
    assert np.array_equal(res.assign.numpy(), ref)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_empty_clusters_are_reseeded_by_splitting(precision):
    # 6 groups of 8 points; k = 12 with 7 initial centroids on top of one another: the copies get
    # no points (ties go to the lowest index) and must be re-seeded by splitting big clusters
    g = torch.Generator().manual_seed(9)
    centers = torch.randn(6, 8, generator=g) * 5
    x = centers.repeat_interleave(8, 0) + 0.3 * torch.randn(48, 8, generator=g)  # 48 x 8
    init = torch.cat([x[[0] * 7], x[[8, 16, 24, 32, 40]]])  # 12 x 8
    res = km.kmeans(x, 12, iters=20, init=init, seed=0, precision=precision)
    assert res.reseeded[0] == 6
    assert sum(res.reseeded) >= 6
    assert res.sizes.min() > 0, res.sizes
    assert torch.equal(res.sizes, torch.bincount(res.assign, minlength=12))
    assert res.assign.unique().numel() == 12
    # k = N, every initial centroid on the same point: splitting sorts them out, one point each
    y = torch.randn(16, 8, generator=g)
    res = km.kmeans(y, 16, iters=30, init=y[[0] * 16], seed=1, precision=precision)
    assert res.reseeded[0] == 15
    assert sorted(res.sizes.tolist()) == [1] * 16


def test_split_follows_faiss():
    c = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [0.0, 0.0, 0.0]])
    sizes = torch.tensor([1, 9, 0])
    n = km._split_empty(c, sizes, torch.Generator().manual_seed(0))
    assert n == 1  # cluster 0 is a singleton: never split; cluster 1 is
    e = km.SPLIT_EPS
    torch.testing.assert_close(c[2], torch.tensor([4 * (1 + e), 5 * (1 - e), 6 * (1 + e)]))
    torch.testing.assert_close(c[1], torch.tensor([4 * (1 - e), 5 * (1 + e), 6 * (1 - e)]))
    torch.testing.assert_close(c[0], torch.tensor([1.0, 2.0, 3.0]))


def test_same_seed_same_result_other_seed_other_init():
    x = _blobs(800, 12, 6, 1.5, seed=10)
    a, b = km.kmeans(x, 9, seed=3), km.kmeans(x, 9, seed=3)
    assert torch.equal(a.init, b.init) and torch.equal(a.centroids, b.centroids)
    assert torch.equal(a.assign, b.assign) and a.inertia_history == b.inertia_history
    assert torch.equal(a.init, km.initial_centroids(x, 9, seed=3))
    c = km.kmeans(x, 9, seed=4)
    assert not torch.equal(a.init, c.init)
    # the init is k distinct rows of x
    rows = [int(((x - r).abs().sum(1) == 0).nonzero()[0]) for r in a.init]
    assert len(set(rows)) == 9


def test_pca_whitening_identity_covariance_and_apply():
    g = torch.Generator().manual_seed(11)
    mix = torch.randn(40, 40, generator=g) * torch.logspace(0, -2, 40)  # anisotropic
    x = torch.randn(20000, 40, generator=g) @ mix.T + 5.0
    z, pca = km.pca_whiten(x, dim=24)
    assert z.shape == (20000, 24) and z.dtype == torch.float32
    cov = torch.cov(z.double().T)
    eye = torch.eye(24, dtype=torch.float64)
    scale = pca.eigenvalues.double() / (pca.eigenvalues.double() + 1e-5)  # what eps leaves of 1
    torch.testing.assert_close(cov, torch.diag(scale), rtol=0, atol=2e-4)
    torch.testing.assert_close(cov, eye, rtol=0, atol=1e-2)
    assert (pca.eigenvalues[:-1] >= pca.eigenvalues[1:]).all()
    torch.testing.assert_close(pca.apply(x[:10]), z[:10], rtol=0, atol=1e-5)
    torch.testing.assert_close(pca(x[3]), z[3], rtol=0, atol=1e-5)  # one row
    u = km.l2_normalize(z)
    torch.testing.assert_close(u.norm(dim=1), torch.ones(20000))
    assert km.l2_normalize(torch.zeros(2, 3)).abs().sum() == 0
    with pytest.raises(km.ClusteringError, match="fitted on 40"):
        pca.apply(torch.zeros(2, 39))


def test_errors_say_the_numbers():
    x = torch.randn(10, 5)
    with pytest.raises(km.ClusteringError, match=r"10 rows cannot make 12 clusters: pass k <= 10"):
        km.kmeans(x, 12)
    with pytest.raises(ValueError):  # a ValueError subclass
        km.initial_centroids(x, 11)
    with pytest.raises(km.ClusteringError, match=r"100 rows cannot give 256 whitened dims.*at least 257 rows"):
        km.pca_whiten(torch.randn(100, 300))
    with pytest.raises(km.ClusteringError, match=r"dim=256 .* features have \(64\)"):
        km.pca_whiten(torch.randn(1000, 64))
    with pytest.raises(km.ClusteringError, match="NaN"):
        km.kmeans(torch.full((10, 2), float("nan")), 2)
    with pytest.raises(km.ClusteringError, match=r"init has shape \(2, 5\), expected \(3, 5\)"):
        km.kmeans(x, 3, init=torch.zeros(2, 5))


def test_nmi_matches_sklearn():
    from sklearn.metrics import normalized_mutual_info_score as sk_nmi

    g = torch.Generator().manual_seed(12)
    for n, ka, kb in [(1000, 10, 300), (500, 3, 3), (2000, 50, 7), (30, 30, 2)]:
        a = torch.randint(0, ka, (n,), generator=g) * 7 - 3  # arbitrary integer labels
        b = torch.randint(0, kb, (n,), generator=g)
        assert km.nmi(a, b) == pytest.approx(sk_nmi(a.numpy(), b.numpy()), abs=1e-12)
        b2 = torch.where(torch.rand(n, generator=g) < 0.7, a, b)  # correlated
        assert km.nmi(a, b2) == pytest.approx(sk_nmi(a.numpy(), b2.numpy()), abs=1e-12)
    a = torch.randint(0, 20, (700,), generator=g)
    assert km.nmi(a, a) == pytest.approx(1.0, abs=1e-12)
    assert km.nmi(a, (a * 13 + 5) % 20 + 100) == pytest.approx(1.0, abs=1e-12)  # relabelled
    for a, b in [([0, 0, 0], [1, 1, 1]), ([0, 0, 0, 0], [0, 1, 2, 3]), ([0, 1, 0, 1], [5, 5, 5, 5])]:
        assert km.nmi(torch.tensor(a), torch.tensor(b)) == sk_nmi(a, b)
    with pytest.raises(km.ClusteringError, match="different lengths"):
        km.nmi(torch.zeros(3), torch.zeros(4))
