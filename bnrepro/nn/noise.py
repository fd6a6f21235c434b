"""Noisy BN's noise (Santurkar et al. 2018, Algorithm 1): after a BN layer, an affine noise that changes every step,
so that each unit's distribution moves from step to step ("covariate shift" put back in).

In training, per unit j (a conv layer's channel) at each step:
    mu_j ~ U(-n_mu, n_mu),  sigma_j ~ U(1, n_sigma);
then per sample i (and, for conv input, per position, which counts as part of the batch):
    m_ij ~ U(mu_j - r_mu, mu_j + r_mu),  s_ij ~ N(sigma_j, r_sigma),   a_ij <- s_ij * a_ij + m_ij.
The paper's constants: n_mu 0.5, n_sigma 1.25, r_mu = r_sigma = 0.1. In inference the layer is the identity.

The draws come from torch's global generator, as dropout's do: a run seeds it, and a checkpoint saves and restores it
(bnrepro/run/checkpoint.py), so a run with noise is reproducible and resumes bit for bit. Gradients flow through
s * a; the noise itself is a constant of the step.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class BatchNoise(nn.Module):
    def __init__(self, n_mu: float = 0.5, n_sigma: float = 1.25, r_mu: float = 0.1, r_sigma: float = 0.1) -> None:
        if n_mu < 0 or n_sigma < 1 or r_mu < 0 or r_sigma < 0:
            raise ValueError(f"noise needs n_mu, r_mu, r_sigma >= 0 and n_sigma >= 1, got {n_mu}, {n_sigma}, "
                             f"{r_mu}, {r_sigma}")
        super().__init__()
        self.n_mu, self.n_sigma, self.r_mu, self.r_sigma = n_mu, n_sigma, r_mu, r_sigma

    def extra_repr(self) -> str:
        return f"n_mu={self.n_mu}, n_sigma={self.n_sigma}, r_mu={self.r_mu}, r_sigma={self.r_sigma}"

    def forward(self, x: Tensor) -> Tensor:
        """x (N, C) or (N, C, *positions) -> s * x + m, the same shape; x itself in inference."""
        if not self.training:
            return x
        shape = [1, -1, *[1] * (x.dim() - 2)]  # per-unit (C,) draws broadcast over samples and positions
        mu = x.new_empty(x.shape[1]).uniform_(-self.n_mu, self.n_mu).view(shape)
        sigma = x.new_empty(x.shape[1]).uniform_(1.0, self.n_sigma).view(shape)
        shift = torch.rand_like(x).mul_(2 * self.r_mu).add_(mu - self.r_mu)  # U(mu - r_mu, mu + r_mu)
        scale = torch.randn_like(x).mul_(self.r_sigma).add_(sigma)  # N(sigma, r_sigma)
        return torch.addcmul(shift, scale, x)
