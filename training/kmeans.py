"""DeepCluster's clustering step: PCA-whitening, row L2 normalisation, k-means, NMI.

DeepCluster (Caron et al. 2018) re-clusters the whole training set at the start of every epoch:
trunk features in eval mode -> PCA to 256 dims with whitening -> rows L2-normalised -> k-means
(a new seed each epoch, 20 Lloyd iterations, empty clusters re-seeded) -> the assignment is the
epoch's pseudo-labels. The authors ran faiss (``faiss.Clustering``, niter 20); here it is torch on
the features' own device, so the training device does it with no extra dependency:

- :func:`pca_whiten` fits :class:`PCA` (covariance + ``torch.linalg.eigh``, as faiss' PCAMatrix
  with eigen_power -0.5), :meth:`PCA.apply` maps new rows (the demo maps one image).
- :func:`kmeans`: Lloyd's algorithm, faiss' defaults: init = ``k`` distinct rows drawn with the
  seed, an empty cluster takes half of a big one (faiss' ``split_clusters``). Assignments are
  exact (the true nearest centroid up to float32 near-ties) however they are computed:

  * distances by GEMM, ``|c|^2 - 2 c.x`` per chunk of rows (memory ~ chunk x k), centroid-major
    so the reductions over centroids vectorise on CPU; on a CPU the chunks are shared among
    torch.get_num_threads() Python threads, each running torch single-threaded (robust when
    other jobs load the cores, see ``_chunk_workers``);
  * ``precision="auto"``: the GEMM in bfloat16 where the hardware multiplies it natively (CUDA,
    CPUs with AVX512-BF16/AMX; ``training/_precision.py``), with a rigorous error bound: a row
    whose runner-up could be nearer than the chosen centroid within the bound is redone in
    float32, so the assignment is the float32 one;
  * centroid sums kept in float64 and updated with only the rows that changed cluster
    (``index_add_``), inertia from the sums (no pass over the data).

- :func:`nmi`: normalised mutual information (arithmetic mean, scikit-learn's default), for NMI
  to the labels and between successive epochs' assignments (the paper's Fig. 2).

Choice of k for Fashion-MNIST (60k training images, 10 classes): ``FMNIST_K = 300``, the zoo's
``deepcluster-alexnet.fmnist`` (``zoo/pretexts/deepcluster.py``, ``NUM_CLUSTERS``).
The paper's ImageNet setting, k = 10000 for 1.28M images of 1000 classes, reads two ways: ~128
images per cluster, or 10x more clusters than classes; it reports that this over-segmentation
beats k = 1000 (the number of classes), and it picked k by downstream accuracy, with the data set
fixed, so the two readings cannot be told apart. On a 10-class set of 60k images they disagree:
10x the classes is 100, ~128 images per cluster is ~470. 300 lies between them: 30x
over-segmentation, ~200 images per pseudo-class (enough members for the classifier head; with the
paper's uniform sampling over clusters each is drawn ~200 times per 60k-image epoch).
Fashion-MNIST's classes have less internal variety than ImageNet's, a reason not to go to the
per-image reading's ~470. Measured (``benchmarks/bench_kmeans.py --k-sweep``, 20 iterations,
seed 0, PCA-whitened to 256, L2-normalised; conv5 = the probe's pooled 4096-dim tap), NMI to the
labels:

    k                                   10     30    100    200    300    500   1000
    raw pixels                       0.442  0.469  0.472  0.446  0.433  0.420  0.402
    rotation-alexnet.fmnist conv5    0.540  0.516  0.507  0.480  0.465  0.446  0.424
    smallest cluster (raw pixels)     1983   1054    287    103     82     25      4
    median cluster (raw pixels)       3841   1664    566    291    191    116     58

NMI is highest at k <= 100 and falls slowly after it: its arithmetic normalisation charges for the
pseudo-labels' own entropy (log k), so it penalises over-segmentation by construction; read it as
a sanity check (the clusters carry label information at every k), not as the choice. At k = 1000
some clusters hold a handful of images. A linear-probe sweep over k in {100, 200, 500} once
DeepCluster trains here is the honest way to settle k (200 was the other candidate).
"""
from __future__ import annotations

import contextlib
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from ._precision import use_bf16

FMNIST_K = 300  # clusters for Fashion-MNIST's 60k training images (see the module docstring)
PCA_DIM = 256  # the paper's PCA dimension
SPLIT_EPS = 1.0 / 1024  # faiss' relative perturbation when an empty cluster takes half of a big one

_U32 = 2.0 ** -24  # float32 unit roundoff
_U16 = 2.0 ** -8  # bfloat16 unit roundoff (8 significant bits)


class ClusteringError(ValueError):
    """Input that cannot be clustered / projected as asked; the message says what to change."""


# --------------------------------------------------------------------------------------------
# PCA whitening and normalisation


@dataclass
class PCA:
    """A fitted PCA-whitening: ``(x - mean) @ components * scale``."""
    mean: torch.Tensor  # D, float32
    components: torch.Tensor  # D x dim, float32; columns = principal axes, largest variance first
    scale: torch.Tensor  # dim, float32: 1 / sqrt(eigenvalue + eps)
    eigenvalues: torch.Tensor  # dim, float32: variance along each axis (before whitening)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Project rows ``x`` (N x D, or one row D) into the whitened space (N x dim / dim)."""
        if x.shape[-1] != self.mean.shape[0]:
            raise ClusteringError(f"PCA.apply: rows have {x.shape[-1]} dims, the PCA was fitted on "
                                  f"{self.mean.shape[0]}: pass features from the same layer and pooling")
        x = x.to(self.mean.device, torch.float32)
        return ((x - self.mean) @ self.components) * self.scale  # N x dim

    __call__ = apply

    def to(self, device) -> "PCA":
        return PCA(*(t.to(device) for t in (self.mean, self.components, self.scale, self.eigenvalues)))


def pca_whiten(x: torch.Tensor, dim: int = PCA_DIM, eps: float = 1e-5) -> tuple[torch.Tensor, PCA]:
    """Fit a PCA-whitening to rows ``x`` (N x D) on x's device and project them: (N x dim, PCA).

    The covariance (D x D, float32, of the centred rows) is diagonalised with ``torch.linalg.eigh``
    in float64 (cheap for D up to a few thousand; faiss' PCAMatrix also solves it in double); each
    of the ``dim`` leading axes is divided by sqrt(eigenvalue + eps), so the projected rows have
    (nearly) identity covariance. The sign of each axis is fixed (largest-magnitude loading
    positive) so the same data gives the same projection on any device.
    """
    if x.dim() != 2:
        raise ClusteringError(f"pca_whiten: expected N x D rows, got shape {tuple(x.shape)}")
    n, d = x.shape
    if dim < 1 or d < dim:
        raise ClusteringError(f"pca_whiten: dim={dim} asks for more dims than the features have ({d}): "
                              f"pass dim <= {d}, or features with more channels")
    if n <= dim:
        raise ClusteringError(f"pca_whiten: {n} rows cannot give {dim} whitened dims (the covariance of "
                              f"N rows has rank <= N - 1): pass at least {dim + 1} rows, or dim <= {max(n - 1, 1)}")
    x = x.to(torch.float32)
    mean = x.mean(0)  # D
    cov = torch.zeros(d, d, device=x.device, dtype=torch.float32)
    step = max(1, (1 << 24) // d)  # centred rows in chunks: memory ~ 64 MB whatever N
    for s in range(0, n, step):
        xc = x[s:s + step] - mean  # rows x D
        cov.addmm_(xc.T, xc)
    cov = cov.double().div_(n - 1)  # D x D
    evals, evecs = torch.linalg.eigh(cov)  # ascending
    evals, evecs = evals.flip(0)[:dim].clamp_min(0), evecs.flip(1)[:, :dim]  # dim, D x dim
    sign = evecs.gather(0, evecs.abs().argmax(0, keepdim=True)).sign()  # 1 x dim
    evecs = evecs * torch.where(sign == 0, 1.0, sign)
    pca = PCA(mean, evecs.float().contiguous(), (evals + eps).rsqrt().float(), evals.float())
    return pca.apply(x), pca


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Rows of ``x`` (N x d) divided by their L2 norm (a zero row stays zero)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


# --------------------------------------------------------------------------------------------
# k-means


@dataclass
class KMeansResult:
    centroids: torch.Tensor  # k x d float32, after the last update (and re-seeding)
    assign: torch.Tensor  # N int64: nearest centroid of each row (the pseudo-labels)
    inertia: float  # sum over rows of the squared distance to the assigned centroid
    sizes: torch.Tensor  # k int64: rows per cluster (bincount of assign)
    reseeded: list[int]  # empty clusters re-seeded after each update (one entry per iteration)
    inertia_history: list[float]  # inertia of each assignment pass (iters + 1 entries; the last = inertia)
    init: torch.Tensor  # k x d: the initial centroids
    stats: dict = field(default_factory=dict)  # how the passes went (rows recomputed, precision, ...)


def initial_centroids(x: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """``k`` distinct rows of ``x`` (N x d) drawn with ``seed`` (faiss' default init): k x d float32."""
    _check_rows(x, k)
    g = torch.Generator().manual_seed(seed)
    return x[torch.randperm(len(x), generator=g)[:k].to(x.device)].float().clone()


def _check_rows(x: torch.Tensor, k: int) -> None:
    if x.dim() != 2:
        raise ClusteringError(f"kmeans: expected N x d rows, got shape {tuple(x.shape)}")
    if k < 1:
        raise ClusteringError(f"kmeans: k={k}: pass k >= 1")
    if len(x) < k:
        raise ClusteringError(f"kmeans: {len(x)} rows cannot make {k} clusters: pass k <= {len(x)} "
                              f"or more rows")


def _gamma(n: int) -> float:
    """Higham's gamma_n for float32: relative error bound of an n-term dot product, any order."""
    return n * _U32 / (1 - n * _U32)


class _Assigner:
    """Nearest centroid of each row of ``x`` (N x d), chunk by chunk (memory ~ chunk x k floats).

    Squared distances up to the row's own ``|x|^2`` (the same for every centroid) are
    ``|c|^2 - 2 c.x``: one GEMM per chunk, laid out centroid-major (k x rows, padded to G groups
    of s ~ sqrt(k) centroids with +inf) so that every reduction over centroids runs elementwise
    across rows, where torch's CPU kernels vectorise (its argmin along the outer dimension is
    several times slower than the GEMM). The argmin: the minimum of each group, the first group
    holding the overall minimum, the first centroid in it that reaches it (lowest index, as
    torch.argmin does).

    bf16 mode: the GEMM takes bf16 operands and rounds its output to bf16, so each dot product is
    off by at most ``err |x| |c|`` (inputs 2u, output u, u = 2^-8, plus float32 accumulation). A
    row is settled when the runner-up's lower bound is above the chosen centroid's upper bound;
    the others (10-20 % of rows on whitened features) are redone in float32, so the result is the
    float32 one.
    """

    def __init__(self, x: torch.Tensor, k: int, chunk: int, bf16: bool, pool: ThreadPoolExecutor | None):
        self.x = x  # N x d float32
        self.pool = pool  # chunks run on its threads (see _chunk_workers), or in order
        self.n, self.d = x.shape
        self.k, self.chunk, self.bf16 = k, chunk, bf16
        self.xbt = x.T.bfloat16().contiguous() if bf16 else None  # d x N: chunks are column blocks
        self.xnorm = x.pow(2).sum(1).sqrt_()  # N: |x|
        self.s = math.isqrt(k - 1) + 1  # centroids per group, ~sqrt(k)
        self.G = -(-k // self.s)  # groups; G * s >= k
        dev = x.device
        self.wg = torch.arange(self.G, 0, -1, device=dev)[:, None]  # G x 1: G..1
        self.ws = torch.arange(self.s, 0, -1, device=dev)[:, None]  # s x 1: s..1
        self.offsets = torch.arange(self.s, device=dev)[:, None]  # s x 1
        self.a = torch.zeros(self.n, dtype=torch.long, device=dev)  # N
        self.rechecked: list[int] = []  # per pass (bf16): rows redone in float32

    def assign(self, c: torch.Tensor) -> torch.Tensor:
        """Nearest centroid (N int64, into ``self.a``) of every row for centroids ``c`` (k x d)."""
        cn2 = c.pow(2).sum(1)  # k: |c|^2
        starts = range(0, self.n, self.chunk)
        if not self.bf16:
            def chunk32(start):
                r = slice(start, min(start + self.chunk, self.n))
                self.a[r] = self._nearest(c, cn2, self.x[r].T)[0]
            self._map(chunk32, starts)
            return self.a
        # |error of c.x| <= err |x| |c| (the rounding of 2 c.x subtracted from |c|^2 included), and
        # |c|^2 is off by <= g |c|^2: a squared distance to c is off by <= |c| (2 err |x| + g cmax)
        cmax = cn2.max().sqrt().item() * (1 + 1e-6)
        err = 3 * _U16 + 4 * _U16 ** 2 + _gamma(self.d + 2)
        g = 2 * _gamma(self.d + 2)
        cb = c.bfloat16()  # k x d
        cnorm = cn2.sqrt()  # k

        def chunk16(start):
            r = slice(start, min(start + self.chunk, self.n))
            a, best, second, d2 = self._nearest(cb, cn2, self.xbt[:, r], runner_up=True)
            self.a[r] = a
            sigma = self.xnorm[r] * (2 * err) + g * cmax  # R: error bound of d2[j] is |c_j| sigma
            # rows where the runner-up may be nearer: first with cmax for every |c_j| ...
            rows = (second - best <= 2 * cmax * sigma).nonzero().squeeze(1)  # M
            if len(rows):  # ... then with each centroid's own |c_j|
                sig, ar = sigma[rows], a[rows]  # M, M
                lo = torch.addr(d2[:self.k].index_select(1, rows), cnorm, sig, alpha=-1)  # k x M lower bounds
                lo.scatter_(0, ar[None], math.inf)  # the chosen one is not its own rival
                rows = rows[lo.amin(0) < best[rows] + cnorm[ar] * sig]
            return rows + start

        unsure = torch.cat(self._map(chunk16, starts))  # runner-up may be nearest: float32 decides
        self.rechecked.append(len(unsure))

        def recheck(start):
            rows = unsure[start:start + self.chunk]
            self.a.index_copy_(0, rows, self._nearest(c, cn2, self.x.index_select(0, rows).T)[0])
        self._map(recheck, range(0, len(unsure), self.chunk))
        return self.a

    def _map(self, fn, starts) -> list:
        return list(self.pool.map(fn, starts)) if self.pool and len(starts) > 1 else [fn(s) for s in starts]

    def _nearest(self, c: torch.Tensor, cn2: torch.Tensor, xt: torch.Tensor, runner_up: bool = False):
        """Rows ``xt`` (d x R, transposed) against centroids ``c`` (k x d, same dtype), |c|^2 ``cn2``
        (k): (nearest centroid R, its |c|^2 - 2 c.x R) and with ``runner_up`` also (the runner-up's
        value R, every |c|^2 - 2 c.x, k (+ padding) x R)."""
        k, G, s, R = self.k, self.G, self.s, xt.shape[1]
        d2 = torch.empty(G * s, R, device=c.device)  # k (+ padding) x R
        d2[k:] = math.inf
        torch.add(cn2[:, None], torch.mm(c, xt), alpha=-2, out=d2[:k])  # k x R float32: |c|^2 - 2 c.x
        gmin = d2.view(G, s, R).amin(1)  # G x R: the nearest in each group
        best = gmin.amin(0)  # R
        gb = G - torch.where(gmin == best, self.wg, 0).amax(0)  # R: the first group at the minimum
        sub = d2.gather(0, gb * s + self.offsets)  # s x R: that group's values
        pos = s - torch.where(sub == best, self.ws, 0).amax(0)  # R: the first centroid in it at the minimum
        if not runner_up:
            return gb * s + pos, best
        sub.scatter_(0, pos[None], math.inf)  # the chosen one is not its own runner-up
        gmin.scatter_(0, gb[None], sub.amin(0)[None])
        return gb * s + pos, best, gmin.amin(0), d2


@contextlib.contextmanager
def _chunk_workers(device: torch.device):
    """A pool of T Python threads for the chunks on a CPU with T > 1 torch threads (else None),
    and torch single-threaded meanwhile (restored after). Each worker runs a whole chunk with
    single-threaded torch ops (torch releases the GIL in its kernels), as scikit-learn's k-means
    shares its chunks among OpenMP threads. Splitting every op of a chunk across the threads
    instead means one barrier per op: fine on idle cores, but when other jobs share the cores each
    barrier waits for a descheduled thread (measured: 10-30x slower at load 5-6 on 2 CPUs)."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads <= 1:
        yield None
        return
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(threads) as pool:
            yield pool
    finally:
        torch.set_num_threads(threads)


def _split_empty(c: torch.Tensor, sizes: torch.Tensor, g: torch.Generator) -> int:
    """faiss' ``split_clusters``: each empty cluster takes the centroid of a cluster drawn with
    probability proportional to (its size - 1) (never a singleton), both moved apart by a small
    symmetric perturbation (x (1 +- 1/1024) alternating over coordinates), and the drawn cluster's
    size is split evenly between them for the next draws. ``c`` (k x d) is changed in place."""
    empty = (sizes == 0).nonzero().squeeze(1).tolist()
    if not empty:
        return 0
    size = sizes.double().cpu()  # k, halved as clusters are split
    pert = torch.ones(c.shape[1], device=c.device)
    pert[0::2] += SPLIT_EPS
    pert[1::2] -= SPLIT_EPS  # d: (1+eps, 1-eps, 1+eps, ...)
    for ci in empty:
        w = (size - 1).clamp_min(0)  # k: draw weights
        if w.sum() <= 0:  # only (fractions of) singletons left to split: by size, as a last resort
            w = size.clamp_min(0)
        cj = int(torch.multinomial(w, 1, generator=g))
        c[ci] = c[cj] * pert
        c[cj] = c[cj] * (2 - pert)
        size[ci] = size[cj] / 2
        size[cj] -= size[ci]
    return len(empty)


def _default_chunk(k: int) -> int:
    return max(64, min(4096, (1 << 22) // k))  # k x chunk distances: <= 16 MB


def kmeans(x: torch.Tensor, k: int, iters: int = 20, seed: int = 0, chunk: int | None = None, *,
           init: torch.Tensor | None = None, precision: str = "auto") -> KMeansResult:
    """Lloyd's k-means of rows ``x`` (N x d) into ``k`` clusters on x's device.

    ``iters`` iterations of (assign, update the centroids, re-seed empty clusters), then a last
    assignment to the final centroids (DeepCluster's pseudo-labels), as faiss' Clustering + search
    and scikit-learn's KMeans do. ``seed`` draws the initial centroids (:func:`initial_centroids`)
    and the clusters split for empty ones: same seed, same result. ``init`` (k x d) replaces the
    drawn initial centroids. ``chunk``: rows per GEMM (memory ~ chunk x k floats; default <= 16 MB).
    ``precision``: "auto" (bf16 GEMM only where the device multiplies bf16 natively), "bf16" or
    "fp32"; the assignment is the nearest centroid in float32 either way (bf16 near-ties are
    settled in float32).
    """
    _check_rows(x, k)
    if iters < 0:
        raise ClusteringError(f"kmeans: iters={iters}: pass iters >= 0")
    x = x.float().contiguous()
    n, d = x.shape
    g = torch.Generator().manual_seed(seed)
    if init is None:
        c = x[torch.randperm(n, generator=g)[:k].to(x.device)].clone()  # k x d
    else:
        if tuple(init.shape) != (k, d):
            raise ClusteringError(f"kmeans: init has shape {tuple(init.shape)}, expected ({k}, {d})")
        c = init.to(x.device, torch.float32).clone()
    chunk = chunk or _default_chunk(k)
    with _chunk_workers(x.device) as pool:
        asg = _Assigner(x, k, chunk, use_bf16(precision, x.device), pool)
        return _lloyd(x, c, iters, g, asg)


def _lloyd(x: torch.Tensor, c: torch.Tensor, iters: int, g: torch.Generator, asg: "_Assigner") -> KMeansResult:
    """kmeans' iterations from centroids ``c`` (k x d)."""
    (n, d), k = x.shape, c.shape[0]
    if not torch.isfinite(asg.xnorm).all():  # |x| is inf / nan for a row with inf / nan (or > 1e19)
        raise ClusteringError("kmeans: the rows contain NaN or infinite values: check the features")
    init_c = c.clone()
    sums = torch.zeros(k, d, dtype=torch.float64, device=x.device)  # k x d: sum of each cluster's rows
    sizes = torch.zeros(k, dtype=torch.long, device=x.device)  # k
    a = torch.full((n,), -1, dtype=torch.long, device=x.device)  # N: -1 = not assigned yet
    xsq = sum(torch.linalg.vector_norm(x[s:s + 8192], dim=1, dtype=torch.float64).pow(2).sum().item()
              for s in range(0, n, 8192))  # sum |x|^2 in float64
    history, reseeded = [], []
    for it in range(iters + 1):
        new = asg.assign(c)  # N
        moved = (new != a).nonzero().squeeze(1)  # rows that changed cluster (all, the first time)
        for s in range(0, len(moved), 65536):  # float64 sums: add to the new cluster, take from the old
            rows = moved[s:s + 65536]
            xi = x.index_select(0, rows).double()  # rows x d
            sums.index_add_(0, new[rows], xi)
            sizes.index_add_(0, new[rows], torch.ones_like(rows))
            if it:
                sums.index_add_(0, a[rows], xi, alpha=-1)
                sizes.index_add_(0, a[rows], -torch.ones_like(rows))
        a = new.clone()
        # inertia from the sums: sum_j sum_{i in j} |x_i - c_j|^2 = sum |x|^2 - 2 c_j.S_j + n_j |c_j|^2
        cd = c.double()  # k x d
        history.append(max(0.0, xsq - 2 * (cd * sums).sum().item() + (sizes * cd.pow(2).sum(1)).sum().item()))
        if it == iters:
            break
        c = torch.where(sizes[:, None] > 0, (sums / sizes.clamp_min(1)[:, None]).float(), c)  # k x d
        reseeded.append(_split_empty(c, sizes, g))
    stats = {"precision": "bf16" if asg.bf16 else "fp32", "chunk": asg.chunk, "rows_rechecked_fp32": asg.rechecked}
    return KMeansResult(c, a, history[-1], sizes.clone(), reseeded, history, init_c, stats)


def assign(x: torch.Tensor, centroids: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """Nearest centroid (k x d) of each row of ``x`` (N x d), float32: N int64. E.g. one new
    image's cluster: ``assign(l2_normalize(pca.apply(features)), result.centroids)``."""
    k = centroids.shape[0]
    x = x.float().reshape(-1, centroids.shape[1]).contiguous()
    with _chunk_workers(x.device) as pool:
        asg = _Assigner(x, k, chunk or _default_chunk(k), False, pool)
        return asg.assign(centroids.to(x.device, torch.float32)).clone()


# --------------------------------------------------------------------------------------------
# normalised mutual information


def _entropy(counts: torch.Tensor, total: float) -> float:
    p = counts[counts > 0].double()
    return float(-(p / total * (p.log() - math.log(total))).sum())


def nmi(a: torch.Tensor, b: torch.Tensor) -> float:
    """Normalised mutual information of two labelings of the same N items (any integer labels):
    I(a; b) / mean(H(a), H(b)), as scikit-learn's ``normalized_mutual_info_score`` (arithmetic)
    including its limit cases (both single-cluster: 1.0; I = 0: 0.0). The contingency table's
    non-empty cells come from one ``torch.unique`` of the pair codes (memory ~ N, not ka x kb),
    its margins from ``bincount``."""
    a, b = torch.as_tensor(a).reshape(-1), torch.as_tensor(b).reshape(-1).to(torch.as_tensor(a).device)
    if len(a) != len(b):
        raise ClusteringError(f"nmi: labelings of different lengths ({len(a)} and {len(b)})")
    _, ai = torch.unique(a, return_inverse=True)  # N in 0..ka-1
    _, bi = torch.unique(b, return_inverse=True)  # N in 0..kb-1
    ka, kb = int(ai.max()) + 1 if len(a) else 0, int(bi.max()) + 1 if len(b) else 0
    if ka == kb and ka <= 1:
        return 1.0
    if ka == 1 or kb == 1:
        return 0.0
    cells, nij = torch.unique(ai * kb + bi, return_counts=True)  # non-empty cells, their counts
    pa = torch.bincount(ai, minlength=ka).double()  # ka
    pb = torch.bincount(bi, minlength=kb).double()  # kb
    total = float(len(a))
    nij = nij.double()
    outer = pa[cells // kb] * pb[cells % kb]  # cells
    terms = nij / total * (nij.log() - math.log(total) - outer.log() + 2 * math.log(total))
    terms = torch.where(terms.abs() < torch.finfo(torch.float64).eps, 0.0, terms)
    mi = max(0.0, float(terms.sum()))
    if mi == 0:
        return 0.0
    return mi / ((_entropy(pa, total) + _entropy(pb, total)) / 2)
