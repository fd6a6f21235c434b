"""Batch Normalization (Ioffe & Szegedy 2015), drop-in replacements for torch.nn.BatchNorm1d/2d.

Forward is Algorithm 1 (training: batch statistics) or Algorithm 2 (inference: running statistics);
backward is the paper's closed form, written by hand. Both live in one autograd.Function, which also
serves batch_norm_stacked: K independent BatchNorm1d's over a (K, N, C) stack, whose slice k is, bit
for bit, BatchNorm1d on x[k] alone (so a vectorized sweep gives exactly the numbers of single runs).

Speed: in the paper's MNIST MLP (batch 60, 100 features, CPU) each torch call costs more than its
arithmetic. On CPU both directions are therefore one call each into batchnorm_cpu.cpp (the same formulas
as fused loops, see cpu_kernel.py); elsewhere (CUDA), or where that cannot be built, they are the torch
ops below, kept few and cheap: no var_mean (its CPU kernel is slow), scalars passed as alpha=/value= or
cached 0-dim tensors, results written over scratch memory, no nn.Module.__getattr__ on the hot path.
"""

from __future__ import annotations

import functools
import math
from types import ModuleType

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from bnrepro.nn import cpu_kernel

# Layouts: (reduced dims, keepdim, shape the (C,) parameters and buffers are viewed to, or None, grouped).
# (N, C): per-channel tensors are (C,) and broadcast as they are.
# (N, C, *spatial): they are (1, C, 1, ..), so x is never reshaped or permuted.
# (K, N, C), K stacked models (grouped): they are (K, 1, C), the stacked parameters' and buffers' own shape.
# sum(0) over (N, C) and sum(1, keepdim=True) over (K, N, C) add in the same order, and every other op
# is elementwise, so the stacked layout gives each model's numbers exactly; the CPU kernel runs each group
# through the same loops, to the same effect.
_LAYOUTS = {2: (0, False, None, False), 3: ((0, 2), True, (1, -1, 1), False),
            4: ((0, 2, 3), True, (1, -1, 1, 1), False)}
_STACKED = (1, True, None, True)
_KERNEL_DTYPES = (torch.float32, torch.float64)
_ONE = torch.tensor(1)  # num_batches_tracked += 1 without the scalar-to-tensor copy a python 1 costs


@functools.lru_cache(maxsize=64)
def _consts(m: int, eps: float, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """eps and 1/m as 0-dim tensors: as operands they skip the scalar-to-tensor copy a python number costs.
    (1/m serves batch statistics, where m >= 1; eval, which may pass m = 0, does not use it.)"""
    return (torch.tensor(eps, dtype=dtype, device=device),
            torch.tensor(1 / max(m, 1), dtype=dtype, device=device))


def _grads(ctx, dy: Tensor) -> tuple[Tensor | None, ...]:
    xhat, k = ctx.saved_tensors  # like x, and gamma/sqrt(var + eps) like the per-channel statistics
    m, dims, keep, shape, batch_stats = ctx.info
    need_x, need_w, need_b, _ = ctx.needs_input_grad
    # With batch statistics dx needs both sums; otherwise they are only the parameters' gradients.
    dbeta = dy.sum(dims, keep) if need_b or (need_x and batch_stats) else None
    prod = dy * xhat if need_w or (need_x and batch_stats) else None
    dgamma = prod.sum(dims, keep) if prod is not None else None
    dx = None
    if need_x and batch_stats:
        # Closed form, using sum_j dxhat_j = gamma*dbeta and sum_j dxhat_j*xhat_j = gamma*dgamma:
        # dx = gamma*invstd * (dy - dbeta/m - xhat*dgamma/m), written over prod's memory
        dx = torch.addcmul(dy, xhat, dgamma, value=-1 / m, out=prod).sub_(dbeta, alpha=1 / m).mul_(k)
    elif need_x:  # running statistics are constants (Algorithm 2): BN is a per-channel affine map
        dx = dy * k
    if shape is not None:  # (1, C, 1, ..) -> (C,), the parameters' shape
        dgamma = dgamma.view(-1) if dgamma is not None else None
        dbeta = dbeta.view(-1) if dbeta is not None else None
    return dx, dgamma if need_w else None, dbeta if need_b else None, None


_grads_once = once_differentiable(_grads)


class BatchNormFunction(torch.autograd.Function):
    """y = gamma * (x - mu) / sqrt(var + eps) + beta, statistics over `dims` of x, one layout above.

    cfg = (running_mean, running_var, batch_stats, factor, eps, m, dims, keep, shape), packed in one
    argument because each argument of apply costs time in forward and backward. batch_stats: normalise
    with the batch mean and biased variance (Algorithm 1) and, if running_mean is not None, move the
    running statistics towards them by `factor` (running_var towards the unbiased variance, as torch
    does). Otherwise normalise with running_mean/running_var (Algorithm 2). m: values per channel.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor | None, bias: Tensor | None, cfg: tuple) -> Tensor:
        running_mean, running_var, batch_stats, factor, eps, m, dims, keep, shape = cfg
        eps, inv_m = _consts(m, eps, x.dtype, x.device)
        if shape is not None:
            weight = weight.view(shape) if weight is not None else None
            bias = bias.view(shape) if bias is not None else None
            running_mean = running_mean.view(shape) if running_mean is not None else None
            running_var = running_var.view(shape) if running_var is not None else None
        if batch_stats:
            # Two passes (mean, then centred sum of squares), not torch.var_mean: its CPU kernel
            # costs ~40 us at (60, 100), several times all of these ops together.
            mean = x.sum(dims, keep).mul_(inv_m)
            xc = x - mean
            sq = xc * xc  # scratch like x, reused below as the output's memory
            sumsq = sq.sum(dims, keep)  # m * biased variance
            if running_mean is not None:  # forward runs under no_grad: buffers update in place
                running_mean.lerp_(mean, factor)
                # (1 - f) * r + f * sumsq / (m - 1), the unbiased variance
                running_var.add_(running_var, alpha=-factor).add_(sumsq, alpha=factor / (m - 1))
            invstd = torch.add(eps, sumsq, alpha=1 / m, out=sumsq).rsqrt_()  # biased variance (Algorithm 1)
        else:
            xc, sq, invstd = x - running_mean, None, torch.add(eps, running_var).rsqrt_()
        xhat = xc.mul_(invstd)
        if weight is None:
            y, k = xhat.clone(), invstd  # a fresh output, so xhat stays ours for backward
        else:
            y = torch.mul(xhat, weight, out=sq) if bias is None else torch.addcmul(bias, xhat, weight, out=sq)
            k = invstd.mul_(weight)  # dy/dx at fixed statistics
        ctx.save_for_backward(xhat, k)
        ctx.info = m, dims, keep, shape, batch_stats
        return y

    @staticmethod
    def backward(ctx, dy: Tensor) -> tuple[Tensor | None, ...]:
        # The closed form is not differentiated again. once_differentiable, which says so if asked,
        # costs ~2 us a call, so it only wraps create_graph=True, the one case with grad mode on here.
        return (_grads_once if torch.is_grad_enabled() else _grads)(ctx, dy)


def _kernel_for(x: Tensor) -> ModuleType | None:
    """The C++ kernel (batchnorm_cpu.cpp) where it serves x: a CPU float32/float64 tensor, the kernel enabled and
    built. Else None: the torch ops."""
    return cpu_kernel.kernel() if x.is_cpu and x.dtype in _KERNEL_DTYPES else None


def _batch_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, running_mean: Tensor | None,
                running_var: Tensor | None, num_batches: Tensor | None, training: bool, momentum: float | None,
                eps: float, m: int, layout: tuple, ghosts: int = 1,
                renorm: tuple[float, float] | None = None) -> Tensor:
    """torch's rules, for the layers and the stacked models alike: batch statistics in training, or in eval
    without running statistics; in training the running statistics, if given, move and num_batches counts.

    Two training modes of the C++ kernel alone (where _kernel_for(x) gives it; ghost.py and renorm.py hold their
    torch-op paths): ghosts > 1, x's batch is that many consecutive sub-batches (ghost BN), each normalised as BN
    on it alone, the running statistics moving and num_batches counting once per sub-batch in turn (m: values per
    channel of one sub-batch); renorm = (r_max, d_max), Batch Renormalization's correction of BN."""
    batch_stats = training or running_mean is None
    factors = [0.0] * ghosts  # each sub-batch's weight in the running statistics' update
    if training:
        if num_batches is not None:
            num_batches.add_(_ONE if ghosts == 1 else ghosts)
        if running_mean is not None:
            # momentum=None: cumulative moving average, the plain mean over the (sub-)batches seen
            if momentum is None:
                seen = int(num_batches)
                factors = [1.0 / (seen - ghosts + i) for i in range(1, ghosts + 1)]
            else:
                factors = [momentum] * ghosts
    if batch_stats and m <= 1:
        if m == 1:  # batch variance 0, the unbiased one 0/0
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.size()}")
        m, running_mean, running_var = 1, None, None  # empty batch, as torch: statistics untouched
    dims, keep, shape, grouped = layout
    if (kernel := _kernel_for(x)) is not None:
        # the same formulas fused in C++, forward and closed-form backward (batchnorm_cpu.cpp)
        return kernel.batch_norm(x, weight, bias, running_mean, running_var, batch_stats, factors, eps, grouped,
                                 renorm)
    if ghosts != 1 or renorm is not None:
        raise ValueError("ghost batches and Batch Renormalization reach _batch_norm only where the C++ kernel runs")
    cfg = (running_mean, running_var, batch_stats, factors[0], eps, m, dims, keep, shape)
    return BatchNormFunction.apply(x, weight, bias, cfg)


def batch_norm_stacked(x: Tensor, weight: Tensor | None, bias: Tensor | None, running_mean: Tensor | None,
                       running_var: Tensor | None, *, training: bool, momentum: float | None,
                       num_batches_tracked: Tensor | None, eps: float) -> Tensor:
    """K independent BatchNorm1d's: x (K, N, C), statistics over N for each (k, c).

    weight, bias: (K, 1, C) leaves or None. running_mean, running_var: (K, 1, C) buffers or None, moved in
    place in training; num_batches_tracked: a 0-dim long tensor the K models share, +1 a training call,
    needed with momentum=None. Slice k of the output, of every gradient and of the running statistics is,
    bit for bit, what BatchNorm1d(C) gives on x[k] with the k-th parameters and buffers.
    """
    if training and running_mean is not None and momentum is None and num_batches_tracked is None:
        raise ValueError("momentum=None (the cumulative average) needs num_batches_tracked")
    return _batch_norm(x, weight, bias, running_mean, running_var, num_batches_tracked, training, momentum, eps,
                       x.shape[1], _STACKED)


def _state(module: nn.Module) -> tuple[Tensor | None, ...]:
    """weight, bias, running_mean, running_var, num_batches_tracked, read from the module's dicts:
    nn.Module.__getattr__ costs ~0.4 us a name. If one is not there (e.g. a parametrized weight is a
    property), all take the normal route."""
    params, buffers = module._parameters, module._buffers
    try:
        return (params["weight"], params["bias"], buffers["running_mean"], buffers["running_var"],
                buffers["num_batches_tracked"])
    except KeyError:
        return tuple(getattr(module, n) for n in ("weight", "bias", "running_mean", "running_var",
                                                  "num_batches_tracked"))


class _BatchNorm(nn.Module):
    """Constructor, parameters, buffers and state_dict keys as torch.nn's _BatchNorm."""

    _version = 2  # as torch's: state_dicts that carry num_batches_tracked
    _layouts: dict[int, tuple] = {}  # input dims accepted -> layout
    _expected = ""  # the same, for the error message

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device=None, dtype=None,
                 *, bias: bool = True) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        # register_parameter(name, None) keeps the name known, as torch does, for state_dict and hooks
        self.register_parameter("weight", None)
        self.register_parameter("bias", None)
        if affine:
            self.weight = nn.Parameter(torch.empty(num_features, **factory))
            if bias:
                self.bias = nn.Parameter(torch.empty(num_features, **factory))
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()
        # the C++ kernel loads (or, the first time in an environment, builds) now, not in the first forward,
        # which in a run is the step-0 evaluation
        cpu_kernel.kernel()

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            if self.bias is not None:
                nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")

    def forward(self, x: Tensor) -> Tensor:
        return self._normalise(x)

    def _normalise(self, x: Tensor, ghosts: int = 1) -> Tensor:
        """BN of x; ghosts > 1: of each of that many consecutive sub-batches in turn (_batch_norm's ghost BN)."""
        layout = self._layouts.get(x.dim())
        if layout is None:
            raise ValueError(f"expected {self._expected} input (got {x.dim()}D input)")
        weight, bias, running_mean, running_var, num_batches = _state(self)
        if self.training and not self.track_running_stats:  # as torch: buffers, if any, left alone
            running_mean = running_var = num_batches = None
        n = x.shape[0] // ghosts
        m = n if x.dim() == 2 else n * math.prod(x.shape[2:])  # N, N*L or N*H*W (Sec. 3.2)
        return _batch_norm(x, weight, bias, running_mean, running_var, num_batches, self.training, self.momentum,
                           self.eps, m, layout, ghosts)


class BatchNorm1d(_BatchNorm):
    """BN over (N, C) or (N, C, L) input, statistics per feature C (Algorithm 1)."""

    _layouts = {2: _LAYOUTS[2], 3: _LAYOUTS[3]}
    _expected = "2D or 3D"


class BatchNorm2d(_BatchNorm):
    """BN over (N, C, H, W) input, statistics per channel over batch and space (Sec. 3.2)."""

    _layouts = {4: _LAYOUTS[4]}
    _expected = "4D"
