"""Optimizers from `optim.*`: torch's SGD for a model alone, the same update for K stacked models, and the
learning-rate schedule both follow."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence

import torch
from omegaconf import DictConfig
from torch import Tensor

SCHEDULES = ("constant", "exponential", "step")
# step (1-based, the update that makes it) -> the factor on each model's optim.lr for that update
LrScale = Callable[[int], float]


def build_optimizer(params: Iterable[Tensor], cfg: DictConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           nesterov=cfg.nesterov)


def lr_schedule(cfg: DictConfig) -> LrScale | None:
    """`optim.schedule` as the factor on optim.lr of the update at step t (1-based); None for a constant rate.

    exponential: gamma ** floor((t - 1) / every), a staircase: every `every` updates the rate drops by gamma (the
    first `every` updates at optim.lr). step: gamma ** (the number of milestones m < t): after m updates the rate
    drops by gamma. Both as torch's StepLR and MultiStepLR stepped once per update; computed from t alone, so a
    resumed run needs no schedule state.
    """
    gamma = cfg.gamma
    if cfg.schedule == "exponential":
        every = cfg.every
        return lambda step: gamma ** ((step - 1) // every)
    if cfg.schedule == "step":
        milestones = list(cfg.milestones)
        return lambda step: gamma ** bisect_left(milestones, step)
    if cfg.schedule == "constant":
        return None
    raise ValueError(f"unknown schedule {cfg.schedule!r}: one of {', '.join(SCHEDULES)}")


class StackedSGD:
    """torch.optim.SGD (momentum, L2 weight decay and Nesterov as torch computes them; no dampening) with a learning
    rate per model, over stacked parameters (K, rows, cols).

    addcmul(p, g, -lr) is bit-for-bit SGD's p.add_(g, alpha=-lr), so each model moves exactly as alone. Its other
    elementwise ops write into per-model strided outputs (`_per_model`), so each model's values come from the loop
    they get alone.
    """

    def __init__(self, params: Sequence[Tensor], lrs: Sequence[float], momentum: float, weight_decay: float = 0.0,
                 nesterov: bool = False) -> None:
        self.params, self.momentum = list(params), momentum
        self.weight_decay, self.nesterov = weight_decay, nesterov
        self.set_lrs(lrs)
        self.buffers: list[Tensor] | None = None  # momentum buffers, created at the first step as SGD does

    def set_lrs(self, lrs: Sequence[float]) -> None:
        """Each model's rate from here on (a schedule's); cast to float32 as SGD casts its alpha=-lr."""
        # (K, 1, 1): broadcasts over every stacked parameter, all of them (K, rows, cols)
        self.neg_lr = torch.tensor([-lr for lr in lrs], device=self.params[0].device).view(len(lrs), 1, 1)

    @torch.no_grad()
    def step(self) -> None:
        grads = [p.grad for p in self.params]
        if self.weight_decay:  # SGD: grad = grad.add(param, alpha=weight_decay)
            grads = [torch.add(g, p, alpha=self.weight_decay, out=_per_model(g)) for g, p in zip(grads, self.params)]
        if self.momentum:
            if self.buffers is None:
                self.buffers = [g.clone(memory_format=torch.contiguous_format) for g in grads]
            else:
                for buf, g in zip(self.buffers, grads):
                    buf.mul_(self.momentum).add_(g)
            if self.nesterov:  # SGD: grad = grad.add(buf, alpha=momentum)
                grads = [torch.add(g, buf, alpha=self.momentum, out=_per_model(g))
                         for g, buf in zip(grads, self.buffers)]
            else:
                grads = self.buffers
        for p, g in zip(self.params, grads):
            p.addcmul_(g, self.neg_lr)


# padding between the models' slices of an output, so that an elementwise op cannot merge the K slices into one loop
_PAD = 16


def _per_model(like: Tensor) -> Tensor:
    """An empty tensor of like's shape (K, ...) whose model slices are each contiguous but not adjacent: an
    elementwise op writing it runs one loop per model, the loop (vector body and scalar tail) it runs alone."""
    k, n = like.shape[0], like[0].numel()
    return like.new_empty(k, n + _PAD)[:, :n].view(like.shape)
