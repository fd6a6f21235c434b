"""What the training loop drives: one model with torch's autograd and optimizer, or K stacked models.

Both keep the loop's Trainer interface (loop.py), so the loop's mechanics (batch order, evaluation points,
divergence, probes, checkpoints, signals, progress) exist once; a stack is a speed trick of its model
(Model.stack) that gives each model the bits it gets alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from bnrepro.models.base import Model
from bnrepro.probes.base import ProbeView, norms_of
from bnrepro.training.evaluation import Evaluation, Evaluator
from bnrepro.training.optim import SGD, StackedSGD

Loss = Callable[[Tensor, Tensor], Tensor]  # (outputs, targets) -> the batch's mean loss


def bn_columns(model: Model) -> dict[str, str]:
    """grad_norm/<gamma|beta>/<layer> -> the parameter's name, gamma's of every layer first."""
    names = dict(model.named_parameters())
    return {f"grad_norm/{label}/{layer}": f"{prefix}.{attr}"
            for label, attr in (("gamma", "weight"), ("beta", "bias"))
            for layer, prefix in model.norm_params().items() if f"{prefix}.{attr}" in names}


class SingleTrainer:
    """One model, trained with its own forward, autograd's backward and SGD: the path users extend."""

    k = 1

    def __init__(self, model: Model, optimizer: SGD, train_x: Tensor, train_y: Tensor,
                 evaluator: Evaluator, loss: Loss = F.cross_entropy) -> None:
        """loss: the task's, (outputs, targets) -> the batch's mean (Dataset.loss)."""
        self.model, self.optimizer, self.evaluator, self.loss = model, optimizer, evaluator, loss
        self.batch: tuple[Any, Tensor] | None = None  # the last step's (inputs, targets), for probes
        self.train_x, self.train_y = model.prepare_inputs(train_x, evaluation=False), train_y
        self.images = train_x  # (N, *input_shape): what an augmentation distorts before prepare_inputs
        self._bn_columns = bn_columns(model)
        model.train()

    def step(self, idx: Tensor, active: Sequence[bool], max_loss: float,
             augment: Callable[[Tensor], Tensor] | None = None) -> list[float]:
        if augment is None:
            x = self.train_x.index_select(0, idx)
        else:
            x = self.model.prepare_inputs(augment(self.images.index_select(0, idx)), evaluation=False)
        y = self.train_y.index_select(0, idx)
        self.batch = (x, y)
        loss = self.loss(self.model(x), y)
        value = loss.item()
        if active[0] and value <= max_loss:
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        return [value]

    def update(self) -> None:
        self.optimizer.step()

    def set_lr_scale(self, scale: float) -> None:
        # initial_lr: the configured rate, as torch's LR schedulers keep it; in the optimizer's state_dict, so a
        # resumed optimizer (whose lr is the scheduled one) still knows it
        for group in self.optimizer.param_groups:
            group["lr"] = group.setdefault("initial_lr", group["lr"]) * scale

    def lr(self, k: int) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def evaluate(self) -> list[Evaluation]:
        return self.evaluator(self.model)

    def _grads(self) -> dict[str, Tensor | None]:
        return {name: p.grad for name, p in self.model.named_parameters()}

    def grad_norms(self, k: int) -> dict[str, float]:
        return norms_of(self._grads(), self._bn_columns)

    def probe_view(self, k: int, step: int) -> ProbeView:
        return ProbeView(step, self.model, self._grads(), stacked=False, batch=self.batch, loss=self.loss,
                         optimizer=self.optimizer)

    def export(self, k: int) -> tuple[Model, SGD]:
        return self.model, self.optimizer


class StackedTrainer:
    """K models of one stackable class as one stacked model (Model.stack), with a learning rate per model.

    optimizers: the models' own SGDs (build_optimizer's), which export fills for checkpoints; the stack moves
    by a StackedSGD of the same momentum, weight_decay and nesterov."""

    def __init__(self, models: Sequence[Model], optimizers: Sequence[SGD], lrs: Sequence[float],
                 momentum: float, train_x: Tensor, train_y: Tensor, evaluator: Evaluator, *,
                 weight_decay: float = 0.0, nesterov: bool = False) -> None:
        self.models, self.optimizers, self.evaluator = list(models), list(optimizers), evaluator
        self.base_lrs, self._scale = list(lrs), 1.0
        self.k = len(models)
        stack = type(models[0]).stack(models)
        if stack is None:
            raise ValueError(f"{type(models[0]).__name__} does not stack")
        self.stack = stack.train()
        self.optimizer = StackedSGD(stack.params, lrs, momentum, weight_decay, nesterov)
        self.optimizer.buffers = _momentum_buffers(optimizers, models, stack.params)
        self.train_x, self.train_y = models[0].prepare_inputs(train_x, evaluation=False), train_y
        self._bn_columns = bn_columns(models[0])

    def step(self, idx: Tensor, active: Sequence[bool], max_loss: float,
             augment: Callable[[Tensor], Tensor] | None = None) -> list[float]:
        if augment is not None:
            raise ValueError("a stack does not augment its batches: jobs with data.augment train alone")
        # only the models still training take a gradient; the others' slices get zeros and stay put
        return self.stack.train_step(self.train_x, self.train_y, idx, active, max_loss)

    def update(self) -> None:
        self.optimizer.step()

    def set_lr_scale(self, scale: float) -> None:
        # each model's own rate times the schedule's factor, in double as SGD's group lr, then cast as SGD casts it
        self._scale = scale
        self.optimizer.set_lrs([lr * scale for lr in self.base_lrs])

    def lr(self, k: int) -> float:
        return self.base_lrs[k] * self._scale

    def evaluate(self) -> list[Evaluation]:
        return self.evaluator(self.stack)

    def grad_norms(self, k: int) -> dict[str, float]:
        return norms_of(self.stack.member_grads(k), self._bn_columns)

    def probe_view(self, k: int, step: int) -> ProbeView:
        return ProbeView(step, self.models[k], self.stack.member_grads(k), stacked=True)

    def export(self, k: int) -> tuple[Model, SGD]:
        """Model k in a single run's form (weights, BN statistics, momentum buffer): any launcher can resume it."""
        model, optimizer = self.models[k], self.optimizers[k]
        self.stack.export(k, model)
        if self.optimizer.buffers is not None:
            for p, buf in zip(model.parameters(), self.optimizer.buffers):
                optimizer.state[p]["momentum_buffer"] = buf[k].reshape(p.shape).clone()
        return model, optimizer


def _momentum_buffers(optimizers: Sequence[SGD], models: Sequence[Model],
                      params: Sequence[Tensor]) -> list[Tensor] | None:
    """The resumed models' SGD momentum buffers, stacked as the stack stacks their parameters."""
    per_model: list[list[Any]] = [[opt.state.get(p, {}).get("momentum_buffer") for p in m.parameters()]
                                  for opt, m in zip(optimizers, models)]
    if any(b is None for bufs in per_model for b in bufs):
        return None
    return [torch.stack([bufs[i] for bufs in per_model]).view(p.shape) for i, p in enumerate(params)]
