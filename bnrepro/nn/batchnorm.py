"""Batch Normalization (Ioffe & Szegedy 2015), drop-in replacements for torch.nn.BatchNorm1d/2d.

Forward is Algorithm 1 (training: batch statistics) or Algorithm 2 (inference: running statistics);
backward is the paper's closed form, written by hand. Both live in one autograd.Function.

Speed: in the paper's MNIST MLP (batch 60, 100 features, CPU) each torch call costs more than its
arithmetic, so the code below is about issuing few, cheap ops: no var_mean (its CPU kernel is slow),
scalars passed as alpha=/value= or cached 0-dim tensors, results written over scratch memory.
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
    xhat, k = ctx.saved_tensors  # (N, C, ..) and gamma/sqrt(var + eps) as (C,) or (1, C, 1, ..)
    m, dims, keep, batch_stats = ctx.info
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    # With batch statistics dx needs both sums; otherwise they are only the parameters' gradients.
    dbeta = dy.sum(dims, keepdim=keep) if need_b or (need_x and batch_stats) else None
    prod = dy * xhat if need_w or (need_x and batch_stats) else None
    dgamma = prod.sum(dims, keepdim=keep) if prod is not None else None
    dx = None
    if need_x and batch_stats:
        # Closed form, using sum_j dxhat_j = gamma*dbeta and sum_j dxhat_j*xhat_j = gamma*dgamma:
        # dx = gamma*invstd * (dy - dbeta/m - xhat*dgamma/m), written over prod's memory
        dx = torch.addcmul(dy, xhat, dgamma, value=-1 / m, out=prod).sub_(dbeta, alpha=1 / m).mul_(k)
    elif need_x:  # running statistics are constants (Algorithm 2): BN is a per-channel affine map
        dx = dy * k
    if keep:  # (1, C, 1, ..) -> (C,), the parameters' shape
        dgamma = dgamma.view(-1) if dgamma is not None else None
        dbeta = dbeta.view(-1) if dbeta is not None else None
    return dx, dgamma if need_w else None, dbeta if need_b else None, None


_grads_once = once_differentiable(_grads)


class BatchNormFunction(torch.autograd.Function):
    """y = gamma * (x - mu) / sqrt(var + eps) + beta, statistics over every dim but 1 (the channel).

    cfg = (running_mean, running_var, batch_stats, factor, eps, m), packed in one argument because
    each argument of apply costs time in forward and backward. batch_stats: normalise with the batch
    mean and biased variance (Algorithm 1) and, if running_mean is not None, move the running
    statistics towards them by `factor` (running_var towards the unbiased variance, as torch does).
    Otherwise normalise with running_mean/running_var (Algorithm 2). m: values per channel.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor | None, bias: Tensor | None, cfg: tuple) -> Tensor:
        running_mean, running_var, batch_stats, factor, eps, m = cfg
        # x: (N, C) or (N, C, *spatial). For (N, C) per-channel (C,) tensors broadcast as they are;
        # otherwise they are (1, C, 1, ..) so x is never reshaped or permuted.
        keep = x.dim() > 2
        dims = (0, *range(2, x.dim())) if keep else 0
        shape = (1, -1) + (1,) * (x.dim() - 2) if keep else None
        dtype, device = x.dtype, x.device
        eps = _const(eps, dtype, device)
        if batch_stats:
            # Two passes (mean, then centred sum of squares), not torch.var_mean: its CPU kernel
            # costs ~40 us at (60, 100), several times all of these ops together.
            mean = x.sum(dims, keepdim=keep).mul_(_const(1 / m, dtype, device))
            xc = x - mean
            sq = xc * xc  # scratch (N, C, ..), reused below as the output's memory
            sumsq = sq.sum(dims, keepdim=keep)  # m * biased variance
            if running_mean is not None:  # forward runs under no_grad: buffers update in place
                mean1, sumsq1 = (mean.view(-1), sumsq.view(-1)) if keep else (mean, sumsq)
                running_mean.lerp_(mean1, factor)
                # (1 - f) * r + f * sumsq / (m - 1), the unbiased variance
                running_var.add_(running_var, alpha=-factor).add_(sumsq1, alpha=factor / (m - 1))
            invstd = torch.add(eps, sumsq, alpha=1 / m).rsqrt_()  # biased variance (Algorithm 1)
        else:
            mean, invstd = running_mean, torch.add(eps, running_var).rsqrt_()
            if keep:
                mean, invstd = mean.view(shape), invstd.view(shape)
            xc, sq = x - mean, None
        xhat = xc.mul_(invstd)
        if weight is None:
            y, k = xhat.clone(), invstd  # a fresh output, so xhat stays ours for backward
        else:
            w = weight.view(shape) if keep else weight
            if bias is None:
                y = torch.mul(xhat, w, out=sq)
            else:
                y = torch.addcmul(bias.view(shape) if keep else bias, xhat, w, out=sq)
            k = w * invstd  # dy/dx at fixed statistics
        ctx.save_for_backward(xhat, k)
        ctx.info = m, dims, keep, batch_stats
        return y

    @staticmethod
    def backward(ctx, dy: Tensor) -> tuple[Tensor | None, ...]:
        # The closed form is not differentiated again. once_differentiable, which says so if asked,
        # costs ~2 us a call, so it only wraps create_graph=True, the one case with grad mode on here.
        return (_grads_once if torch.is_grad_enabled() else _grads)(ctx, dy)


def _member(module: nn.Module, name: str) -> Tensor | None:
    """module.<name> for a parameter or buffer, read from the dict when it is there: nn.Module.__getattr__
    costs ~0.4 us a call. Anything else (e.g. a parametrization's property) takes the normal route."""
    for store in (module._parameters, module._buffers):
        if name in store:
            return store[name]
    return getattr(module, name)


class _BatchNorm(nn.Module):
    """Constructor, parameters, buffers and state_dict keys as torch.nn's _BatchNorm."""

    _version = 2  # as torch's: state_dicts that carry num_batches_tracked

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

    def _check_input_dim(self, x: Tensor) -> None:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        running_mean, running_var = _member(self, "running_mean"), _member(self, "running_var")
        # torch's rules: batch statistics in training, or in eval when there are no buffers;
        # the running statistics move only in training with track_running_stats.
        batch_stats = self.training or running_mean is None
        factor = 0.0
        if self.training:
            num_batches = _member(self, "num_batches_tracked")
            if self.track_running_stats and num_batches is not None:
                num_batches.add_(1)
                # momentum=None: cumulative moving average, the plain mean over the batches seen
                factor = 1.0 / float(num_batches) if self.momentum is None else self.momentum
            else:
                running_mean = running_var = None
        m = x.shape[0] * math.prod(x.shape[2:])  # values per channel: N, N*L or N*H*W (Sec. 3.2)
        if batch_stats and m <= 1:
            if m == 1:  # batch variance 0, the unbiased one 0/0
                raise ValueError(
                    f"Expected more than 1 value per channel when training, got input size {x.size()}")
            m, running_mean, running_var = 1, None, None  # empty batch, as torch: statistics untouched
        cfg = (running_mean, running_var, batch_stats, factor, self.eps, m)
        return BatchNormFunction.apply(x, _member(self, "weight"), _member(self, "bias"), cfg)


class BatchNorm1d(_BatchNorm):
    """BN over (N, C) or (N, C, L) input, statistics per feature C (Algorithm 1)."""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() != 2 and x.dim() != 3:
            raise ValueError(f"expected 2D or 3D input (got {x.dim()}D input)")


class BatchNorm2d(_BatchNorm):
    """BN over (N, C, H, W) input, statistics per channel over batch and space (Sec. 3.2)."""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"expected 4D input (got {x.dim()}D input)")
