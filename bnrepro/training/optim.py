"""Optimizers from `optim.*`: torch's SGD for a model alone, and the same update for K stacked models."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from omegaconf import DictConfig
from torch import Tensor


def build_optimizer(params: Iterable[Tensor], cfg: DictConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)


class StackedSGD:
    """torch.optim.SGD (no dampening, nesterov or weight decay) with a learning rate per model, over stacked
    parameters (K, rows, cols).

    addcmul(p, g, -lr) is bit-for-bit SGD's p.add_(g, alpha=-lr), so each model moves exactly as alone.
    """

    def __init__(self, params: Sequence[Tensor], lrs: Sequence[float], momentum: float) -> None:
        self.params, self.momentum = list(params), momentum
        # (K, 1, 1): broadcasts over every stacked parameter, all of them (K, rows, cols)
        self.neg_lr = torch.tensor([-lr for lr in lrs], device=self.params[0].device).view(len(lrs), 1, 1)
        self.buffers: list[Tensor] | None = None  # momentum buffers, created at the first step as SGD does

    @torch.no_grad()
    def step(self) -> None:
        grads = [p.grad for p in self.params]
        if self.momentum:
            if self.buffers is None:
                self.buffers = [g.clone() for g in grads]
            else:
                for buf, g in zip(self.buffers, grads):
                    buf.mul_(self.momentum).add_(g)
            grads = self.buffers
        for p, g in zip(self.params, grads):
            p.addcmul_(g, self.neg_lr)
