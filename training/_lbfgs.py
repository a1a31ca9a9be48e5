"""The probe's fast solver: full-batch L-BFGS on cached features (``probe``'s ``fast``).

Objective, shared with the seed's SGD: ``mean CE(z W^T + b) + (wd / 2) ||W||^2``, bias not decayed.
The cost is the passes over the N x D standardised features (``_PassFeatures``: in bfloat16 where
the hardware multiplies it natively, float32 elsewhere; ``LBFGSConfig.pass_dtype``): two per iteration, ``z dW^T`` for the new direction's logits and ``(softmax - onehot) @ z`` for the
gradient; everything else is K x N or K x (D + 1) with K classes. A low-rank preconditioner (the
top principal directions of a row sample) takes out the features' correlation, and the exact line
search runs on the kept logits without a pass.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ._precision import PRECISIONS, resolved_precision

PASS_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


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
    # dtype of the passes over the features: "auto" = bf16 where the features' device multiplies bf16
    # natively (``_precision.native_bf16``), else fp32; "bf16" / "fp32" force it (tests, benchmarks).
    # Without native bf16 (e.g. an AVX2-only CPU) PyTorch emulates bf16 products, ~100x slower than fp32.
    pass_dtype: str = "auto"

    def __post_init__(self):
        if self.pass_dtype not in PRECISIONS:
            raise ValueError(f"pass_dtype {self.pass_dtype!r}: use one of {', '.join(PRECISIONS)}")


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
        # the subspace only steers the solver: products in the passes' dtype (bf16 suffices where native)
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
    """The standardised features as the solver's passes read them: N x D in ``dtype`` (bfloat16 or
    float32, see ``LBFGSConfig.pass_dtype``).

    Each L-BFGS iteration makes two passes over them, ``z @ dW^T`` and ``r @ z``. In bfloat16 each
    pass moves half the bytes and, on a CPU with bf16 dot-product units (AVX512-BF16 / AMX), runs
    on them: a fit ~2x faster than in float32 there (60k x 4096, one thread: logits pass 31 vs 157 ms,
    gradient pass 100 vs 117 ms). Without them PyTorch emulates bf16 products, ~100x
    slower than float32 (29.7 s against 0.30 s for one pass on an AVX2-only EPYC): hence float32
    there. bf16 products accumulate in float32 and come back as float32; bf16 keeps ~3 significant
    digits of a standardised feature, so the logits, sums of thousands of such products, move by
    ~1e-3 of their spread. The objective reported and the test accuracy use the float32 features.

    float32: the caller's features themselves (no copy). bfloat16: a copy in a buffer reused from
    tap to tap (``_workspace``): filling freshly allocated memory costs a page fault per 4 KiB,
    which made the conversion ~5x slower than the copy itself (~0.3 s against 0.06 s for 60k x
    4096 features).
    """

    def __init__(self, z: torch.Tensor, dtype: torch.dtype):
        self.dtype = dtype
        if dtype == torch.float32:
            self.rows = z.float().contiguous()  # N x D, z itself when already float32 and contiguous
        else:
            self.rows = _workspace(z.numel(), dtype).view(z.shape).copy_(z)  # N x D

    def logits(self, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """z @ w^T + b, returned K x N float32 (classes first: the softmax over classes is then fast).

        As ``linear(w, z)``, the rows in the weight's place: oneDNN's path for a small input times a
        large weight reads z once, ~1.4x faster here than ``mm(z, w^T)`` (bf16: 18 vs 25 ms at
        60k x 4096; in float32 no slower)."""
        return F.linear(w.to(self.dtype), self.rows).float().add_(b[:, None])  # K x N

    def residual_grad(self, r: torch.Tensor) -> torch.Tensor:
        """r @ z: K x D float32 for r K x N (row-major r: ~1.3x faster than its transpose's view)."""
        return torch.mm(r.to(self.dtype), self.rows).float()


_WORKSPACE: list[torch.Tensor] = []  # at most one buffer (bf16 passes), grown on demand


def _workspace(numel: int, dtype: torch.dtype) -> torch.Tensor:
    """A flat ``dtype`` buffer of at least ``numel`` elements, kept for the next tap (see ``_PassFeatures``)."""
    if not _WORKSPACE or _WORKSPACE[0].numel() < numel or _WORKSPACE[0].dtype != dtype:
        _WORKSPACE[:] = []  # free the old one first
        _WORKSPACE.append(torch.empty(numel, dtype=dtype))
    return _WORKSPACE[0][:numel]


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
    each a single matmul for all classes in ``cfg.pass_dtype`` (see ``_PassFeatures``; recorded in
    ``info["pass_dtype"]``): ``z @ dW^T`` for the new
    direction and ``(softmax - onehot) @ z`` for the gradient. The K x N logits are kept up to
    date, so the line search along the direction is exact and costs no pass over z. Start: W = 0,
    b = log class priors (the optimum at W = 0), so the first step is along the preconditioned
    (whitened) class means.
    """
    start, cpu_start = time.perf_counter(), time.process_time()
    n, d = z.shape
    wd = cfg.weight_decay
    pass_dtype = resolved_precision(cfg.pass_dtype, z.device)  # "bf16" or "fp32"
    onehot = F.one_hot(y, num_classes).T.to(z.dtype).contiguous()  # K x N
    # floor 4 wd: the logistic curvature is <= 1/4, so below 4 wd the decay dominates
    precond = _Preconditioner(z, cfg.rank, cfg.sample, torch.Generator().manual_seed(cfg.seed), floor=4 * wd,
                              pass_dtype=PASS_DTYPES[pass_dtype])
    t_precond = time.perf_counter() - start

    feats = _PassFeatures(z, PASS_DTYPES[pass_dtype])
    theta = torch.zeros(num_classes, d + 1)  # [W | b]
    theta[:, d] = torch.log(onehot.mean(1).clamp_min(1e-12))
    logits = theta[:, d, None].expand(num_classes, n).clone()  # K x N, always W @ z^T + b
    st = _State(theta, logits, _gradient(feats, logits, onehot, theta, wd))
    g0 = st.grad.norm().item()
    st = _lbfgs(feats, onehot, st, precond, cfg, cfg.tol * g0)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start  # objective below: not timed
    w, b = st.theta[:, :d].contiguous(), st.theta[:, d].contiguous()
    info = {"grad_norm_rel": st.grad.norm().item() / g0, "preconditioner_s": round(t_precond, 3),
            "rank": precond.v.shape[1], "pass_dtype": pass_dtype}
    return Fit(w, b, "fast", objective(z, y, w, b, wd), seconds, cpu, st.iterations, info)
