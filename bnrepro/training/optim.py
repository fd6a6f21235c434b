"""Optimizers from `optim.*`: SGD for a model alone, the same update for K stacked models, and the learning-rate
schedule both follow."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor

SCHEDULES = ("constant", "exponential", "step")
LR_SCALINGS = ("constant", "linear", "sqrt")
# step (1-based, the update that makes it) -> the factor on each model's optim.lr for that update
LrScale = Callable[[int], float]


class SGD:
    """torch.optim.SGD, bit for bit: its update (the single-tensor path: L2 weight decay, momentum, Nesterov; no
    dampening), param_groups, state and state_dict format, so a checkpoint loads into either.

    Not torch.optim itself because its first use imports torch._dynamo (for torch.compile, which bnrepro does not
    use): over a second of CPU at the start of every run and every job of a sweep, as long as torch's own import.
    """

    def __init__(self, params: Iterable[Tensor], lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False) -> None:
        # the keys of torch's SGD group, so that its load_state_dict accepts ours
        self.param_groups: list[dict[str, Any]] = [{
            "params": list(params), "lr": lr, "momentum": momentum, "dampening": 0, "weight_decay": weight_decay,
            "nesterov": nesterov, "maximize": False, "foreach": None, "differentiable": False, "fused": None}]
        self.state: defaultdict[Tensor, dict[str, Tensor]] = defaultdict(dict)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    if set_to_none:
                        p.grad = None
                    else:
                        p.grad.detach_().zero_()

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:  # as torch: a parameter without a gradient does not move
                    p.add_(self._direction(group, p, commit=True), alpha=-group["lr"])

    @torch.no_grad()
    def next_values(self) -> dict[Tensor, Tensor]:
        """Each parameter the next step() moves -> the value that step gives it, bit for bit (the same ops, out of
        place); the parameters, their gradients and the momentum buffers stay as they are (for probes)."""
        return {p: p.add(self._direction(group, p, commit=False), alpha=-group["lr"])
                for group in self.param_groups for p in group["params"] if p.grad is not None}

    def _direction(self, group: dict[str, Any], p: Tensor, commit: bool) -> Tensor:
        """What step() moves p along, times -lr: the gradient with L2 weight decay, momentum and Nesterov as torch
        computes them. commit: update the momentum buffer (step), else compute the same values apart."""
        momentum, weight_decay = group["momentum"], group["weight_decay"]
        grad = p.grad
        if weight_decay != 0:
            grad = grad.add(p, alpha=weight_decay)
        if momentum != 0:
            # .get, not self.state[p]: a lookup must not add an entry to the defaultdict (and to state_dict)
            buf = self.state.get(p, {}).get("momentum_buffer")
            if buf is None:  # the first step's buffer is the gradient itself, as torch's
                buf = grad.detach().clone()
                if commit:
                    self.state[p]["momentum_buffer"] = buf
            elif commit:
                buf.mul_(momentum).add_(grad)
            else:
                buf = buf.mul(momentum).add(grad)
            grad = grad.add(buf, alpha=momentum) if group["nesterov"] else buf
        return grad

    def state_dict(self) -> dict[str, Any]:
        """torch's format: parameters as their indices in group order, state keyed by those indices."""
        index: dict[Tensor, int] = {}
        groups = []
        for group in self.param_groups:
            ids = [index.setdefault(p, len(index)) for p in group["params"]]
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
        return {"state": {index[p]: dict(s) for p, s in self.state.items() if p in index}, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups) or any(
                len(g["params"]) != len(own["params"]) for g, own in zip(groups, self.param_groups)):
            raise ValueError("loaded state dict has a different number of parameter groups or parameters")
        params = {i: p for g, own in zip(groups, self.param_groups) for i, p in zip(g["params"], own["params"])}
        self.state = defaultdict(dict)
        for i, s in state_dict["state"].items():
            p = params[int(i)]  # buffers take the parameter's dtype and device, as torch casts them
            self.state[p] = {k: v.to(dtype=p.dtype, device=p.device) if isinstance(v, Tensor) else v
                             for k, v in s.items()}
        for g, own in zip(groups, self.param_groups):
            own.update({k: v for k, v in g.items() if k != "params"})


def effective_lr(cfg: DictConfig, batch_size: int) -> float:
    """optim.lr at this batch size under optim.lr_scaling: lr times 1, the ratio batch_size / base_batch_size, or its
    square root (exactly optim.lr at the base batch size, and under constant scaling at any)."""
    scaling = cfg.get("lr_scaling", "constant")
    if scaling == "constant":
        return cfg.lr
    ratio = batch_size / cfg.base_batch_size
    if scaling == "linear":
        return cfg.lr * ratio
    if scaling == "sqrt":
        return cfg.lr * math.sqrt(ratio)
    raise ValueError(f"unknown lr_scaling {scaling!r}: one of {', '.join(LR_SCALINGS)}")


def build_optimizer(params: Iterable[Tensor], cfg: DictConfig, lr: float | None = None) -> SGD:
    """optim.* as an SGD; lr: the rate, when not optim.lr itself (effective_lr's)."""
    return SGD(params, lr=cfg.lr if lr is None else lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
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
