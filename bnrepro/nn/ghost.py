"""Ghost batch normalization (Hoffer, Hubara & Soudry 2017, "Train longer, generalize better"): in training, BN's
statistics come from sub-batches ("ghost batches") of `ghost_batch_size` samples instead of the whole batch, so a
large batch normalises with the noise of a small one. In inference nothing changes: the running statistics.

The layers subclass ours and change only which samples share statistics: a training batch of N = G x g samples is
G consecutive sub-batches, each normalised as the parent layer normalises it alone, and the outputs joined in
order. That is, exactly, BN applied to each sub-batch in turn, running statistics too: they move once per sub-batch
(G updates a step, so momentum acts G times; momentum=None averages over every sub-batch seen).

Two paths give those numbers. Where the C++ kernel runs (CPU), one call normalises all G sub-batches and one
autograd node backs them (batchnorm_cpu.h's sub-batches: the same loops on each sub-batch, the running statistics
moved in turn, the gradients of gamma and beta added in autograd's order), bit for bit the hand-split batch, without
G layer calls, G autograd nodes and a concatenation a step. Elsewhere (CUDA, torch ops) the batch is split by hand:
the parent's forward on each sub-batch, its outputs concatenated.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bnrepro.nn.batchnorm import BatchNorm1d, BatchNorm2d, _BatchNorm, _kernel_for


class _GhostBatchNorm(_BatchNorm):
    def __init__(self, num_features: int, ghost_batch_size: int, **kwargs) -> None:
        if ghost_batch_size < 2:  # one sample has no variance to normalise by
            raise ValueError(f"ghost_batch_size must be at least 2, got {ghost_batch_size}")
        super().__init__(num_features, **kwargs)
        self.ghost_batch_size = ghost_batch_size

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ghost_batch_size={self.ghost_batch_size}"

    def forward(self, x: Tensor) -> Tensor:
        g, n = self.ghost_batch_size, x.shape[0]
        if not self.training or n <= g:
            return super().forward(x)
        if n % g:
            raise ValueError(f"ghost_batch_size {g} does not divide the batch of {n} samples")
        if _kernel_for(x) is not None:
            return self._normalise(x, n // g)  # the kernel's sub-batches
        normalise = super().forward
        return torch.cat([normalise(chunk) for chunk in x.split(g)])


class GhostBatchNorm1d(_GhostBatchNorm, BatchNorm1d):
    """BatchNorm1d with statistics per ghost batch of `ghost_batch_size` samples in training."""


class GhostBatchNorm2d(_GhostBatchNorm, BatchNorm2d):
    """BatchNorm2d with statistics per ghost batch of `ghost_batch_size` images (and their positions) in training."""
