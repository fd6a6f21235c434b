"""Batch Renormalization (Ioffe 2017, "Batch Renormalization: Towards Reducing Minibatch Dependence in
Batch-Normalized Models"): in training, BN's output corrected towards what the running statistics would give,

    y = gamma * (r * (x - mu_B) / sigma_B + d) + beta,
    r = clip(sigma_B / sigma, 1/r_max, r_max),   d = clip((mu_B - mu) / sigma, -d_max, d_max),

where mu, sigma are the running statistics (sigma = sqrt(running_var + eps)) and r, d are constants for backward
(stop-gradient). r = 1, d = 0 is BN; with r and d unclipped, training-mode output is the inference-mode output.
In inference nothing changes: the running statistics, as BN's Algorithm 2.

r and d are per-channel constants, so the layer is BN with gamma' = gamma * r and beta' = beta + gamma * d:

    y = gamma' * xhat + beta'.

The layer runs exactly that: our BN's forward and closed-form backward on (gamma', beta'), and the chain rule
through those two per-channel products (dgamma = r * dgamma' + d * dbeta', dbeta = dbeta'). That is BRN's
closed-form backward (the paper's Algorithm 1 gradients): dx = gamma * r / sigma_B * (dy - mean(dy) - xhat *
mean(dy * xhat)), the BN gradient with gamma * r. With r_max = 1 and d_max = 0, r is 1 and d is 0 exactly, so BRN
gives BN's numbers bit for bit.

Two paths run it. Where the C++ kernel runs (CPU), BN's one kernel call does it all (batchnorm_cpu.h's Renorm):
r and d from the batch statistics it computes for normalising, gamma' and beta' per channel, and in its backward
the chain rule, one autograd node in all. Elsewhere (CUDA, torch ops) r and d are torch ops below, and gamma' and
beta' two autograd-tracked products, given to BN as its parameters.

r_max and d_max follow the paper's schedule, read from the layer's own count of training batches
(num_batches_tracked, in its state_dict, so a resumed run continues the schedule): 1 and 0 for the first
`warmup_steps` batches, then relaxed linearly to reach r_max at `r_max_steps` and d_max at `d_max_steps` (the
paper: 5000, 40k and 25k steps, r_max 3, d_max 5).

The running statistics move as BN's do (the mean and the unbiased variance, by `momentum`); the paper keeps a
moving average of sigma_B instead, which differs only in where the square root is taken.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bnrepro.nn.batchnorm import BatchNorm1d, BatchNorm2d, _batch_norm, _BatchNorm, _kernel_for, _state


class _BatchRenorm(_BatchNorm):
    def __init__(self, num_features: int, r_max: float = 3.0, d_max: float = 5.0, warmup_steps: int = 5000,
                 r_max_steps: int = 40_000, d_max_steps: int = 25_000, **kwargs) -> None:
        if r_max < 1 or d_max < 0:
            raise ValueError(f"Batch Renormalization needs r_max >= 1 and d_max >= 0, got {r_max} and {d_max}")
        if not warmup_steps <= min(r_max_steps, d_max_steps):
            raise ValueError(f"warmup_steps {warmup_steps} must not exceed r_max_steps {r_max_steps} or "
                             f"d_max_steps {d_max_steps}")
        super().__init__(num_features, **kwargs)
        self.r_max, self.d_max, self.warmup_steps = r_max, d_max, warmup_steps
        self.r_max_steps, self.d_max_steps = r_max_steps, d_max_steps

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, r_max={self.r_max}, d_max={self.d_max}, warmup_steps={self.warmup_steps}, "
                f"r_max_steps={self.r_max_steps}, d_max_steps={self.d_max_steps}")

    def limits(self, t: int) -> tuple[float, float]:
        """(r_max, d_max) for the training batch after t batches: the schedule's values."""

        def ramp(end: float, start: float, at: int) -> float:
            if t >= at:
                return end
            if t < self.warmup_steps:
                return start
            return start + (end - start) * (t - self.warmup_steps) / (at - self.warmup_steps)

        return ramp(self.r_max, 1.0, self.r_max_steps), ramp(self.d_max, 0.0, self.d_max_steps)

    def forward(self, x: Tensor) -> Tensor:
        weight, bias, running_mean, running_var, num_batches = _state(self)
        if not self.training or running_mean is None or not self.track_running_stats or weight is None:
            # inference, or no running statistics to renormalise towards (or no gamma to fold r and d into):
            # BN itself
            return super().forward(x)
        layout = self._layouts.get(x.dim())
        if layout is None:
            raise ValueError(f"expected {self._expected} input (got {x.dim()}D input)")
        dims, keep = layout[0], layout[1]
        m = x.shape[0] if x.dim() == 2 else x.shape[0] * (x.numel() // (x.shape[0] * x.shape[1]))
        if m <= 1:  # BN's own error for a batch without variance
            return super().forward(x)
        r_max, d_max = self.limits(int(num_batches))
        if _kernel_for(x) is not None:  # r, d, gamma', beta' and the chain rule inside BN's kernel call
            return _batch_norm(x, weight, bias, running_mean, running_var, num_batches, True, self.momentum, self.eps,
                               m, layout, renorm=(r_max, d_max))
        # the batch statistics BN normalises by (two passes, as BN computes them), per channel (C,)
        mean = x.detach().sum(dims, keep).mul_(1 / m)
        centred = x.detach() - mean
        std_b = centred.mul_(centred).sum(dims).mul_(1 / m).add_(self.eps).sqrt_()
        if keep:
            mean = mean.view(-1)
        std = running_var.add(self.eps).sqrt_()
        r = std_b.div_(std).clamp_(1 / r_max, r_max)
        d = mean.sub_(running_mean).div_(std).clamp_(-d_max, d_max)
        # gamma' = gamma * r and beta' = beta + gamma * d carry autograd's chain rule back to gamma and beta
        folded_bias = weight * d if bias is None else torch.addcmul(bias, weight, d)
        return _batch_norm(x, weight * r, folded_bias, running_mean, running_var, num_batches, True, self.momentum,
                           self.eps, m, layout)


class BatchRenorm1d(_BatchRenorm, BatchNorm1d):
    """Batch Renormalization over (N, C) or (N, C, L) input, statistics per feature C."""


class BatchRenorm2d(_BatchRenorm, BatchNorm2d):
    """Batch Renormalization over (N, C, H, W) input, statistics per channel over batch and space."""
