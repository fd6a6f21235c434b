"""Batch Normalization (Ioffe & Szegedy 2015) as drop-in replacements for torch.nn.BatchNorm1d/2d.

Forward is Algorithm 1 (training, batch statistics) or Algorithm 2 (inference, running statistics);
backward is the paper's closed form, written by hand in one autograd.Function.

On CPU at batch 60 x 100 features every torch call costs more than its arithmetic, so the hot path
is written to issue as few tensor ops as possible (fused var_mean/addcmul, in-place updates).
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable


@functools.lru_cache(maxsize=64)
def _const(value: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """0-dim tensor of `value`: as an operand it skips the scalar-to-tensor copy a python number costs."""
    return torch.tensor(value, dtype=dtype, device=device)


def _grads(ctx, dy: Tensor) -> tuple[Tensor | None, ...]:
    xhat, k, m, dims, keep = ctx.xhat, ctx.k, ctx.m, ctx.dims, ctx.keep
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    batch_stats = ctx.batch_stats
    # (C,) or (1, C, 1, ..): with batch statistics dx needs both sums, else they are only parameter grads
    dbeta = dy.sum(dims, keepdim=keep) if need_b or (need_x and batch_stats) else None
    prod = dy * xhat if need_w or (need_x and batch_stats) else None  # (N, C, ..)
    dgamma = prod.sum(dims, keepdim=keep) if prod is not None else None
    dx = None
    if need_x and batch_stats:
        # Closed form, with sum_j dxhat_j = gamma*dbeta and sum_j dxhat_j*xhat_j = gamma*dgamma:
        # dx = gamma*invstd * (dy - dbeta/m - xhat*dgamma/m), written over prod's memory
        dx = torch.addcmul(dy, xhat, dgamma, value=-1 / m, out=prod).sub_(dbeta, alpha=1 / m).mul_(k)
    elif need_x:  # running statistics are constants (Algorithm 2): BN is a per-channel affine map
        dx = dy * k
    if keep:  # (1, C, 1, ..) -> (C,) like the parameters
        dgamma = dgamma.view(-1) if dgamma is not None else None
        dbeta = dbeta.view(-1) if dbeta is not None else None
    return dx, dgamma if need_w else None, dbeta if need_b else None, None


_grads_once = once_differentiable(_grads)


class BatchNormFunction(torch.autograd.Function):
    """y = gamma * (x - mu) / sqrt(var + eps) + beta over all dims but dim 1 (the channel).

    batch_stats: normalise with the batch's mean and biased variance (Algorithm 1) and, if running_mean
    is given, move the running statistics towards them by `factor` (running_var gets the unbiased
    variance). Otherwise normalise with running_mean/running_var (Algorithm 2). m: values per channel.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, state) -> Tensor:
        running_mean, running_var, batch_stats, factor, eps, m = state
        # x: (N, C) or (N, C, *spatial). For (N, C) the per-channel (C,) tensors broadcast as they are;
        # otherwise they are viewed as (1, C, 1, ..) so no reshape/permute of x is ever needed.
        # Scalars go in alpha=/value= arguments or as cached 0-dim tensors: a python number operand
        # costs a scalar-to-tensor conversion, as much as one of these (tiny) kernels.
        keep = x.dim() > 2
        dims = (0, *range(2, x.dim())) if keep else 0
        shape = (1, -1) + (1,) * (x.dim() - 2) if keep else None
        eps = _const(eps, x.dtype, x.device)
        if batch_stats:
            # Two passes (mean, then centred sum of squares) rather than torch.var_mean: on CPU its
            # Welford kernel over dim 0 costs ~40 us at (60, 100), ten times these four ops together.
            mean = x.sum(dims, keepdim=keep).mul_(_const(1 / m, x.dtype, x.device))  # (C,) or (1, C, 1, ..)
            xc = x - mean
            sq = xc * xc  # (N, C, ..) scratch, reused below as the output's memory
            sumsq = sq.sum(dims, keepdim=keep)  # m * biased variance
            if running_mean is not None:  # forward runs under no_grad: buffers update in place
                mean1, sumsq1 = (mean.view(-1), sumsq.view(-1)) if keep else (mean, sumsq)
                running_mean.lerp_(mean1, factor)
                # (1 - f) * r + f * unbiased variance sumsq / (m - 1), which is what torch stores
                running_var.add_(running_var, alpha=-factor).add_(sumsq1, alpha=factor / (m - 1))
            invstd = torch.add(eps, sumsq, alpha=1 / m).rsqrt_()  # biased variance (Algorithm 1)
        else:
            mean, invstd = running_mean, torch.add(eps, running_var).rsqrt_()
            if keep:
                mean, invstd = mean.view(shape), invstd.view(shape)
            xc, sq = x - mean, None
        xhat = xc.mul_(invstd)
        if weight is not None:
            w = weight.view(shape) if keep else weight
            y = torch.addcmul(bias.view(shape) if keep else bias, xhat, w, out=sq)
            k = w * invstd  # d y / d x at fixed statistics
        else:
            y, k = xhat.clone(), invstd  # a fresh output: xhat is kept for backward
        # Intermediates (never inputs/outputs) go straight on ctx: cheaper than save_for_backward.
        ctx.xhat, ctx.k, ctx.m, ctx.dims, ctx.keep, ctx.batch_stats = xhat, k, m, dims, keep, batch_stats
        return y

    @staticmethod
    def backward(ctx, dy: Tensor) -> tuple[Tensor | None, ...]:
        # Double backward is not supported; once_differentiable (which says so) costs ~2 us a call,
        # so it only wraps the create_graph=True case, the only one where grad mode is on here.
        return (_grads_once if torch.is_grad_enabled() else _grads)(ctx, dy)


class _BatchNorm(nn.Module):
    """Same constructor, parameters, buffers and state_dict keys as torch's _BatchNorm."""

    _version = 2  # torch's: state_dicts carry num_batches_tracked

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.empty(num_features, **factory))
            self.bias = nn.Parameter(torch.empty(num_features, **factory))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")

    def _check_input_dim(self, x: Tensor) -> None:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        # Plain dict reads: nn.Module.__getattr__ costs ~0.4 us per parameter/buffer access.
        params, buffers = self._parameters, self._buffers
        running_mean, running_var = buffers["running_mean"], buffers["running_var"]
        # Same decisions as torch: batch statistics in training, or in eval when there are no buffers;
        # running statistics move only in training with track_running_stats.
        batch_stats = self.training or running_mean is None
        factor = 0.0
        if self.training:
            num_batches = buffers["num_batches_tracked"]
            if self.track_running_stats and num_batches is not None:
                num_batches.add_(1)
                # momentum=None: cumulative moving average, i.e. the plain mean over batches seen
                factor = 1.0 / float(num_batches) if self.momentum is None else self.momentum
            else:
                running_mean = running_var = None
        m = x.shape[0] * math.prod(x.shape[2:])  # values per channel: N, N*L or N*H*W (Sec. 3.2)
        if batch_stats and m == 1:  # the batch variance would be 0 and the unbiased one undefined
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input size {x.size()}")
        return BatchNormFunction.apply(x, params["weight"], params["bias"], (running_mean, running_var,
                                       batch_stats, factor, self.eps, m))


class BatchNorm1d(_BatchNorm):
    """BN over (N, C) or (N, C, L) input: statistics per feature C (Algorithm 1)."""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() != 2 and x.dim() != 3:
            raise ValueError(f"expected 2D or 3D input (got {x.dim()}D input)")


class BatchNorm2d(_BatchNorm):
    """BN over (N, C, H, W) input: statistics per channel over batch and space (Sec. 3.2)."""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"expected 4D input (got {x.dim()}D input)")
