"""lp normalisation (Santurkar et al. 2018, "How Does Batch Normalization Help Optimization?", Sec. 4): BN's
centring, then division by an lp measure of the centred batch instead of its standard deviation, per unit (per
channel over batch x positions for conv input), then gamma and beta:

    y = gamma * (x - mu_B) / (s_p + eps) + beta,    s_p = ||x - mu_B||_p / m^(1/p)   over the m values of a unit,

the "average lp norm" of the centred values: s_1 is their mean absolute deviation, s_2 their root mean square (BN's
biased standard deviation, so l2 is BN with eps added to the scale instead of to the variance), s_inf their largest
absolute value. Dividing the norm by m^(1/p) keeps the output's scale independent of the batch size, as BN's.

Inference, as BN's Algorithm 2: the running mean and a running scale, moved towards each training batch's mu_B and
s_p by `momentum` (None: the cumulative average over the batches seen), with no unbiasing factor (s_1 and s_inf have
no simple one; s_2's would be sqrt(m / (m - 1))). eps (1e-5, BN's) keeps a unit whose batch values are all equal
finite; it is added to the scale, where all three measures have the units of x.

Forward and backward are torch ops and autograd: these layers serve the lp experiments, not speed, and autograd's
gradient of the formula is the one a hand-written backward would have to match. The layers subclass nothing of
torch's or our BN: they keep a running scale, not a running variance, so code that reads or rewrites BN's variance
(precise statistics, bnrepro/training/bn_inference.py) cannot take them for BN layers.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

LP_ORDERS = {"l1": 1.0, "l2": 2.0, "linf": math.inf}  # model.norm's lp choices -> p


class _LpNorm(nn.Module):
    _input_dims: tuple[int, ...] = ()  # the input dims each layer accepts

    def __init__(self, num_features: int, p: float, eps: float = 1e-5, momentum: float | None = 0.1) -> None:
        if p not in LP_ORDERS.values():
            raise ValueError(f"p must be one of {sorted(LP_ORDERS.values())}, got {p}")
        super().__init__()
        self.num_features, self.p, self.eps, self.momentum = num_features, p, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))  # gamma
        self.bias = nn.Parameter(torch.zeros(num_features))  # beta
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_scale", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def extra_repr(self) -> str:
        return f"{self.num_features}, p={self.p}, eps={self.eps}, momentum={self.momentum}"

    def forward(self, x: Tensor) -> Tensor:
        """x (N, C) or (N, C, *positions) -> the same shape; statistics per C over N and the positions."""
        if x.dim() not in self._input_dims:
            raise ValueError(f"expected {' or '.join(f'{d}D' for d in self._input_dims)} input (got {x.dim()}D input)")
        dims = [d for d in range(x.dim()) if d != 1]
        shape = [1, -1, *[1] * (x.dim() - 2)]  # per-channel (C,) tensors broadcast over x
        if self.training:
            m = x.numel() // x.shape[1]  # values per channel: N, or N x positions
            if m <= 1:
                raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.size()}")
            mean = x.mean(dims, keepdim=True)
            centred = x - mean
            # vector_norm's gradient at a zero norm is 0, where sqrt(mean(square)) would give inf * 0
            scale = torch.linalg.vector_norm(centred, self.p, dims, keepdim=True) / m ** (1 / self.p)
            self._track(mean.detach().view(-1), scale.detach().view(-1))
        else:
            centred, scale = x - self.running_mean.view(shape), self.running_scale.view(shape)
        return centred / (scale + self.eps) * self.weight.view(shape) + self.bias.view(shape)

    @torch.no_grad()
    def _track(self, mean: Tensor, scale: Tensor) -> None:
        """Move the running statistics towards this batch's, as BN moves its own."""
        self.num_batches_tracked.add_(1)
        factor = 1.0 / int(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean, factor)
        self.running_scale.lerp_(scale, factor)


class LpNorm1d(_LpNorm):
    """lp normalisation over (N, C) or (N, C, L) input, statistics per feature C."""

    _input_dims = (2, 3)


class LpNorm2d(_LpNorm):
    """lp normalisation over (N, C, H, W) input, statistics per channel over batch and positions."""

    _input_dims = (4,)
