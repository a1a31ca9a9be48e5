"""The probe's fast solver: full-batch L-BFGS on cached features (``probe``'s ``fast``).

Objective, shared with the seed's SGD: ``mean CE(z W^T + b) + (wd / 2) ||W||^2``, bias not decayed.
The cost is the passes over the N x D standardised features (``_PassFeatures``: in bfloat16 where
the hardware multiplies it natively; elsewhere float32 arithmetic on a float16 copy of the features,
converted block by block; ``LBFGSConfig.pass_dtype``): two per iteration, ``z dW^T`` for the new
direction's logits and ``(softmax - onehot) @ z`` for the gradient; everything else is K x N or
K x (D + 1) with K classes. A low-rank preconditioner (the top principal directions of a row sample)
takes out the features' correlation, and the exact line search runs on the kept logits without a pass.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ._precision import native_bf16

# pass mode -> (dtype the features are stored in for the passes, dtype the products are computed in)
PASS_DTYPES = {"bf16": (torch.bfloat16, torch.bfloat16), "fp32": (torch.float32, torch.float32),
               "fp16-storage": (torch.float16, torch.float32)}
PASS_MODES = ("auto", "bf16", "fp32", "fp16-storage")
FP16_MAX = torch.finfo(torch.float16).max  # 65504; a column standardised over N rows has |z| <= sqrt(N - 1)


def resolved_pass_dtype(pass_dtype: str, device: torch.device | str) -> str:
    """The pass mode used for ``pass_dtype`` on ``device``: as asked, or for "auto" "bf16" where the
    device multiplies bf16 natively, else "fp16-storage" on a CPU (float32 products on a float16
    copy: half the bytes of "fp32" per pass, no emulated bf16), "fp32" on other devices."""
    if pass_dtype not in PASS_MODES:
        raise ValueError(f"pass_dtype {pass_dtype!r}: use one of {', '.join(PASS_MODES)}")
    if pass_dtype != "auto":
        return pass_dtype
    if native_bf16(device):
        return "bf16"
    return "fp16-storage" if torch.device(device).type == "cpu" else "fp32"


def objective(z: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
              weight_decay: float) -> float:
    """Mean cross-entropy of ``z @ W^T + b`` plus ``(wd / 2) * ||W||^2`` (the bias is not decayed)."""
    logits = torch.addmm(bias, z, weight.T)  # N x K
    return F.cross_entropy(logits, y).item() + 0.5 * weight_decay * weight.pow(2).sum().item()


@dataclass
class Fit:
    """A fitted multinomial logistic regression and how it was obtained."""
    weight: torch.Tensor  # K x D
    bias: torch.Tensor  # K
    solver: str
    objective: float  # on the training features, the same formula for both solvers
    seconds: float  # wall clock
    cpu_seconds: float  # this process's CPU time: the fair measure on a machine shared with other jobs
    iterations: int  # L-BFGS iterations or SGD epochs
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class LBFGSConfig:
    weight_decay: float = 5e-4
    tol: float = 1e-2  # stop when ||grad|| <= tol * ||grad at the start|| (two orders of magnitude)
    max_iter: int = 100
    history: int = 10  # curvature pairs kept
    rank: int = 256  # top principal directions in the preconditioner
    sample: int = 2048  # training rows the preconditioner is estimated from
    seed: int = 0
    # the passes over the features (``_PassFeatures``): "auto" = bf16 where the features' device
    # multiplies bf16 natively (``_precision.native_bf16``), else fp16-storage (CPU) / fp32;
    # "bf16", "fp32" (float32 storage and products) and "fp16-storage" (float16 storage, float32
    # products) force it (tests, benchmarks). Without native bf16 (e.g. an AVX2-only CPU) PyTorch
    # emulates bf16 products, ~100x slower than fp32.
    pass_dtype: str = "auto"
    block_rows: int = 128  # fp16-storage: rows converted to float32 at a time (2 MiB of float32 at 4096 dims)

    def __post_init__(self):
        if self.pass_dtype not in PASS_MODES:
            raise ValueError(f"pass_dtype {self.pass_dtype!r}: use one of {', '.join(PASS_MODES)}")
        if self.block_rows < 1:
            raise ValueError(f"block_rows {self.block_rows}: must be >= 1")


class _Preconditioner:
    """Approximate inverse second moment of [z, 1], applied to K x (D + 1) matrices [W | b].

    On W: ``M^-1 = I / c + V diag(1/(ev + c) - 1/c) V^T``, with V (D x r) and ev the top principal
    directions and variances of a row sample (randomized subspace iteration) and c the r-th variance
    plus a floor (the tail is treated as flat). On b: 1 (the constant feature's second moment).
    Standardised CNN features are strongly correlated (top variance ~10^3 against a weight decay of
    5e-4): that is what makes plain L-BFGS crawl, and removing the top directions' scale fixes most of it.
    """

    def __init__(self, z: torch.Tensor, rank: int, sample: int, gen: torch.Generator, floor: float,
                 pass_dtype: torch.dtype = torch.float32):
        n, d = z.shape
        rows = z[torch.randperm(n, generator=gen)[:min(n, sample)]]  # m x D
        rank = max(1, min(rank, d, len(rows)) - 1)
        width = min(d, rank + 10)  # oversampling
        q = torch.randn(d, width, generator=gen)
        # the subspace only steers the solver: products in the passes' compute dtype (bf16 suffices
        # where native; fp16-storage computes in float32: this m x D sample is small and the products
        # with q are compute-bound, so a 16-bit copy of it would save nothing)
        rows_p = rows.to(pass_dtype)
        for _ in range(2):  # one range-finding pass, one power iteration
            q = _orthonormal((rows_p.T @ (rows_p @ q.to(pass_dtype))).float())  # D x width
        b = rows @ q  # m x width: the sample in the subspace
        ev, u = torch.linalg.eigh(b.T @ b / len(rows))  # ascending; width x width, not an m x width SVD
        ev, u = ev.flip(0)[:rank].clamp_min(0), u.flip(1)[:, :rank]
        self.v = q @ u  # D x r
        self.c = ev[-1].item() + floor  # floor: ~ where the weight decay dominates the curvature
        self.scale = (ev + self.c).reciprocal() - 1.0 / self.c  # r

    def __call__(self, a: torch.Tensor) -> torch.Tensor:
        w = a[:, :-1]  # K x D
        return torch.cat([w / self.c + ((w @ self.v) * self.scale) @ self.v.T, a[:, -1:]], dim=1)


def _orthonormal(y: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis of y's columns (D x w): Cholesky QR, the w x w Gram matrix and its Cholesky
    factor in float64 (~10x faster than Householder QR here); Householder QR if the Gram matrix is
    too ill-conditioned."""
    gram = (y.T @ y).double()
    chol, info = torch.linalg.cholesky_ex(gram + 1e-12 * gram.diagonal().max() * torch.eye(len(gram), dtype=gram.dtype))
    if info.item() != 0:
        return torch.linalg.qr(y).Q
    q = torch.linalg.solve_triangular(chol.T.to(y.dtype), y, upper=True, left=False)  # y R^-1
    return torch.linalg.qr(q).Q if not torch.isfinite(q).all() else q


def _line_search(logits: torch.Tensor, u: torch.Tensor, onehot: torch.Tensor, wd_dot: float, wd_dd: float,
                 max_iter: int = 30) -> float:
    """argmin_a  mean CE(logits + a u) + wd/2 ||W + a dW||^2 on K x N logits (no pass over the features).

    The 1-D function is convex: safeguarded Newton inside a bracket [lo, hi] on its derivative.
    ``wd_dot`` = wd * <W, dW>, ``wd_dd`` = wd * <dW, dW>.
    """
    def derivatives(a: float) -> tuple[float, float]:
        p = torch.softmax(logits + a * u, dim=0)  # K x N (over classes: dim 0 is ~30x faster than
        pu = (p * u).sum(0)  # N                     a softmax over the 10-wide last dim of N x K)
        d1 = (pu - (onehot * u).sum(0)).mean().item() + wd_dot + a * wd_dd
        d2 = ((p * u * u).sum(0) - pu * pu).mean().item() + wd_dd
        return d1, d2

    g0, _ = derivatives(0.0)
    if g0 >= 0:
        return 0.0  # not a descent direction (should not happen)
    lo, hi, a = 0.0, math.inf, 1.0
    for _ in range(max_iter):
        d1, d2 = derivatives(a)
        if abs(d1) <= 1e-4 * abs(g0):
            break
        if d1 < 0:
            lo = a
        else:
            hi = a
        newton = a - d1 / d2 if d2 > 0 else math.inf
        a = newton if lo < newton < hi else (2 * lo if math.isinf(hi) else 0.5 * (lo + hi))
    return a


def _two_loop(g: torch.Tensor, history: list, precond: _Preconditioner) -> torch.Tensor:
    """L-BFGS direction -H g from curvature pairs (s, y, 1/<s,y>), initial H = gamma * precond."""
    q = g.clone()
    alphas = []
    for s, y, rho in reversed(history):
        alphas.append(rho * (s * q).sum())
        q.sub_(y, alpha=alphas[-1].item())
    if history:
        s, y, rho = history[-1]
        gamma = (1.0 / rho) / (y * precond(y)).sum().item()
    else:
        gamma = 1.0
    r = precond(q).mul_(gamma)
    for (s, y, rho), a in zip(history, reversed(alphas)):
        r.add_(s, alpha=(a - rho * (y * r).sum()).item())
    return r.neg_()


class _PassFeatures:
    """The standardised features as the solver's passes read them (``LBFGSConfig.pass_dtype``):
    N x D stored in ``storage`` (float32, bfloat16 or float16), multiplied in ``compute``.

    Each L-BFGS iteration makes two passes over them, ``z @ dW^T`` and ``r @ z``, each 2 N D K flops
    for K classes. In bfloat16 each pass moves half the bytes and, on a CPU with bf16 dot-product
    units (AVX512-BF16 / AMX), runs on them: a fit ~2x faster than in float32 there (60k x 4096, one
    thread: logits pass 31 vs 157 ms, gradient pass 100 vs 117 ms). Without them PyTorch emulates
    bf16 products, ~100x slower than float32 (29.7 s against 0.30 s for one pass on an AVX2-only
    EPYC). bf16 products accumulate in float32 and come back as float32; bf16 keeps ~3 significant
    digits of a standardised feature, so the logits, sums of thousands of such products, move by
    ~1e-3 of their spread. The objective reported and the test accuracy use the float32 features.

    fp16-storage (``auto`` on a CPU without native bf16): the features stored in float16, converted
    ``block_rows`` rows at a time into a small float32 buffer that stays in cache, and multiplied in
    float32 (``linear`` / ``addmm`` per block): each pass reads half the bytes of float32 from memory
    and uses only float32 arithmetic, fast on any x86 CPU. float16 rather than bfloat16: the same bytes
    and conversion cost, 3 more mantissa bits (relative rounding 2^-11), and the range is no concern: a
    column standardised over N rows has |z| <= sqrt(N - 1) (245 at 60k) against a float16 maximum of
    65504; features beyond it (not standardised) fall back to float32 storage, which ``mode`` and
    ``Fit.info["pass_dtype"]`` then say. Measured (60k x 4096, one thread, CPU time, ``bench_probe.py
    --time-passes``, blocks of 128-256 rows, several runs on shared cores): logits pass 93-105 ms (fp32
    160, bf16 32), gradient pass 98-119 ms (fp32 115, bf16 100), of which the conversion is ~22 ms and
    the float32 products on a block in cache ~70 / ~80 ms: ~65 GFLOP/s, what MKL's sgemm reaches with 10
    columns on this core (~98 on a square product), the floor of a pass in float32. A plain streaming
    read of the 983 MB float32 matrix takes 27 ms, so the float32 passes were bound by those products
    and their slower streaming from memory, not by bandwidth alone; halving the bytes removes only the
    second part: ~1.4x fp32's speed per iteration (native bf16: 2.1x), whole fits on the 60k taps ~1.2x
    (the preconditioner computes in float32 in both). Blocks of 128 to 512 rows time alike;
    ``block.float()`` per block (a fresh buffer) as fast as the copy into the reused one; torch's own
    float16 products are slower (``linear`` ~180 ms, ``mm`` ~14 s: emulated).

    float32: the caller's features themselves (no copy). bfloat16 / float16: a copy in a buffer
    reused from tap to tap (``_workspace``): filling freshly allocated memory costs a page fault per
    4 KiB, which made the conversion ~5x slower than the copy itself (~0.3 s against 0.06 s for 60k x
    4096 features).
    """

    def __init__(self, z: torch.Tensor, mode: str, block_rows: int = 128):
        self.mode = mode
        self.storage, self.compute = PASS_DTYPES[mode]
        self.block = None  # float32 conversion buffer (fp16-storage only)
        if self.storage == torch.float16:
            # |z| > 65504 (features not standardised) would overflow float16, and a non-finite z is
            # left to float32: float32 storage then. aminmax reads z once, ~40 ms at 60k x 4096
            # (isfinite / isinf on the copy: 0.5-1.3 s)
            lo, hi = torch.aminmax(z)
            if not (-FP16_MAX <= lo.item() and hi.item() <= FP16_MAX):
                self.mode, self.storage, self.compute = "fp32", torch.float32, torch.float32
        if self.storage == torch.float32:
            self.rows = z.float().contiguous()  # N x D, z itself when already float32 and contiguous
            return
        self.rows = _workspace(z.numel(), self.storage).view(z.shape).copy_(z)  # N x D
        if self.compute != self.storage:
            self.block = torch.empty(min(block_rows, len(z)), z.shape[1], dtype=self.compute)

    def _blocks(self):
        """(start, float32 block) over the rows, each converted into the same buffer."""
        m = len(self.block)
        for i in range(0, len(self.rows), m):
            chunk = self.rows[i:i + m]
            yield i, self.block[:len(chunk)].copy_(chunk)

    def logits(self, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """z @ w^T + b, returned K x N float32 (classes first: the softmax over classes is then fast).

        As ``linear(w, z)``, the rows in the weight's place: oneDNN's path for a small input times a
        large weight reads z once, ~1.4x faster here than ``mm(z, w^T)`` (bf16: 18 vs 25 ms at
        60k x 4096; in float32 no slower; on a block in cache ~1.6x faster)."""
        if self.block is None:
            return F.linear(w.to(self.compute), self.rows).float().add_(b[:, None])  # K x N
        out = torch.empty(len(w), len(self.rows))
        for i, blk in self._blocks():
            out[:, i:i + len(blk)] = F.linear(w, blk)
        return out.add_(b[:, None])

    def residual_grad(self, r: torch.Tensor) -> torch.Tensor:
        """r @ z: K x D float32 for r K x N (row-major r: ~1.3x faster than its transpose's view;
        per block ``addmm`` into the K x D sum, the transposed product being ~5x slower)."""
        if self.block is None:
            return torch.mm(r.to(self.compute), self.rows).float()
        out = torch.zeros(len(r), self.rows.shape[1])
        for i, blk in self._blocks():
            out.addmm_(r[:, i:i + len(blk)], blk)
        return out


_WORKSPACE: list[torch.Tensor] = []  # at most one buffer (bf16 / fp16 copies), grown on demand


def _workspace(numel: int, dtype: torch.dtype) -> torch.Tensor:
    """A flat ``dtype`` buffer of at least ``numel`` elements, kept for the next tap (see
    ``_PassFeatures``). bfloat16 and float16 share its memory (a 2-byte buffer viewed as either), so
    alternating the two modes does not re-allocate (and re-fault) it."""
    if not _WORKSPACE or _WORKSPACE[0].dtype.itemsize != dtype.itemsize or _WORKSPACE[0].numel() < numel:
        _WORKSPACE[:] = []  # free the old one first
        _WORKSPACE.append(torch.empty(numel, dtype=dtype))
    return _WORKSPACE[0][:numel].view(dtype)


def release_workspace() -> None:
    """Free the solver's pass buffer (``probe_layers`` does when its taps are done)."""
    _WORKSPACE.clear()


@dataclass
class _State:
    """One L-BFGS run's iterate: theta = [W | b] (K x (D + 1)), its K x N logits and gradient."""
    theta: torch.Tensor
    logits: torch.Tensor
    grad: torch.Tensor
    iterations: int = 0


def _gradient(feats: _PassFeatures, logits: torch.Tensor, onehot: torch.Tensor, theta: torch.Tensor,
              wd: float) -> torch.Tensor:
    n, d = onehot.shape[1], theta.shape[1] - 1
    r = torch.softmax(logits, dim=0).sub_(onehot).div_(n)  # K x N
    gw = feats.residual_grad(r).add_(theta[:, :d], alpha=wd)  # K x D
    return torch.cat([gw, r.sum(1)[:, None]], dim=1)  # K x (D + 1)


def _lbfgs(feats: _PassFeatures, onehot: torch.Tensor, st: _State, precond: _Preconditioner,
           cfg: LBFGSConfig, stop_norm: float) -> _State:
    """Iterate from ``st`` until ||grad|| <= stop_norm: per iteration one ``dW @ z^T`` pass for the
    direction's logits, an exact line search on them (no pass), one ``r @ z`` pass for the gradient."""
    d, wd = st.theta.shape[1] - 1, cfg.weight_decay
    history: list[tuple[torch.Tensor, torch.Tensor, float]] = []  # (s, y, 1 / <s, y>)
    gnorm = st.grad.norm().item()
    while st.iterations < cfg.max_iter and gnorm > stop_norm:
        direction = _two_loop(st.grad, history, precond)  # K x (D + 1)
        dw = direction[:, :d]
        u = feats.logits(dw, direction[:, d])  # K x N: change of the logits per unit step
        step = _line_search(st.logits, u, onehot, wd * (st.theta[:, :d] * dw).sum().item(), wd * dw.pow(2).sum().item())
        if step == 0.0:
            break
        st.theta.add_(direction, alpha=step)
        st.logits.add_(u, alpha=step)
        new_g = _gradient(feats, st.logits, onehot, st.theta, wd)
        s, yy = direction.mul_(step), new_g - st.grad
        sy = (s * yy).sum().item()
        if sy > 1e-12:  # always, for this strictly convex objective and an exact line search
            history = (history + [(s, yy, 1.0 / sy)])[-cfg.history:]
        st.grad, gnorm = new_g, new_g.norm().item()
        st.iterations += 1
    return st


def fit_lbfgs(z: torch.Tensor, y: torch.Tensor, num_classes: int, cfg: LBFGSConfig = LBFGSConfig()) -> Fit:
    """Full-batch L-BFGS on z (N x D standardised features) for the objective of ``objective``.

    Parameters are one K x (D + 1) matrix theta = [W | b]. Per iteration exactly two passes over z,
    each a matmul for all classes (one, or one per block of rows in fp16-storage) in the mode of
    ``cfg.pass_dtype`` (see ``_PassFeatures``; the mode used is recorded in ``info["pass_dtype"]``):
    ``z @ dW^T`` for the new
    direction and ``(softmax - onehot) @ z`` for the gradient. The K x N logits are kept up to
    date, so the line search along the direction is exact and costs no pass over z. Start: W = 0,
    b = log class priors (the optimum at W = 0), so the first step is along the preconditioned
    (whitened) class means.
    """
    start, cpu_start = time.perf_counter(), time.process_time()
    n, d = z.shape
    wd = cfg.weight_decay
    pass_dtype = resolved_pass_dtype(cfg.pass_dtype, z.device)  # "bf16", "fp32" or "fp16-storage"
    onehot = F.one_hot(y, num_classes).T.to(z.dtype).contiguous()  # K x N
    # floor 4 wd: the logistic curvature is <= 1/4, so below 4 wd the decay dominates
    precond = _Preconditioner(z, cfg.rank, cfg.sample, torch.Generator().manual_seed(cfg.seed), floor=4 * wd,
                              pass_dtype=PASS_DTYPES[pass_dtype][1])
    t_precond = time.perf_counter() - start

    feats = _PassFeatures(z, pass_dtype, cfg.block_rows)
    theta = torch.zeros(num_classes, d + 1)  # [W | b]
    theta[:, d] = torch.log(onehot.mean(1).clamp_min(1e-12))
    logits = theta[:, d, None].expand(num_classes, n).clone()  # K x N, always W @ z^T + b
    st = _State(theta, logits, _gradient(feats, logits, onehot, theta, wd))
    g0 = st.grad.norm().item()
    st = _lbfgs(feats, onehot, st, precond, cfg, cfg.tol * g0)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start  # objective below: not timed
    w, b = st.theta[:, :d].contiguous(), st.theta[:, d].contiguous()
    info = {"grad_norm_rel": st.grad.norm().item() / g0, "preconditioner_s": round(t_precond, 3),
            "rank": precond.v.shape[1], "pass_dtype": feats.mode}
    return Fit(w, b, "fast", objective(z, y, w, b, wd), seconds, cpu, st.iterations, info)
