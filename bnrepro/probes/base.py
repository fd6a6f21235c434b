"""The probe contract: a measurement taken every `every` training steps, declared in config.

A probe is a subclass of `Probe`, named in `conf/probes/<name>.yaml` by `_target_` (the file's package puts it
under `probes.<name>`), with a `Config` dataclass holding at least `every`. At every step divisible by `every`
the loop hands it a `ProbeView` of each model, after the step's backward pass and before the optimizer moves
the weights, and writes the values it returns into that step's row of metrics.csv and W&B under the columns it
declared. A probe never changes the trajectory: whatever it moves (weights, BN running statistics, gradients,
RNG or optimizer state) it puts back bit for bit, so a run ends with the same metrics with or without it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor

from bnrepro.models.base import Model


class Optimizer(Protocol):
    """What a probe may read of the optimizer (bnrepro.training.optim.SGD): its groups, and what it is about to do."""

    param_groups: list[dict[str, Any]]

    def next_values(self) -> dict[Tensor, Tensor]:
        """Each parameter its next step moves -> the value that step gives it; nothing changes."""
        ...


@dataclass
class ProbeView:
    """One model at one training step, as a probe sees it."""

    step: int  # the training step just taken (its backward done, its update not yet applied)
    model: Model  # the model alone; in a stack only its structure (names, config) is current, not its weights
    grads: dict[str, Tensor | None]  # this step's gradient of every parameter, by the model's parameter names
    stacked: bool  # trained as one of a stack: only `grads` is live
    # a model alone only (None in a stack): the step's batch as the model took it, (inputs, targets); the task's
    # loss, (outputs, targets) -> mean over the batch; and the optimizer, its state as before this step's update
    batch: tuple[Any, Tensor] | None = None
    loss: Callable[[Tensor, Tensor], Tensor] | None = None
    optimizer: Optimizer | None = None


class Probe:
    Config: ClassVar[type]
    stackable: ClassVar[bool] = False  # True: measures from `grads` alone, so it runs inside a stack too

    def __init__(self, cfg: Any = None, **settings: Any) -> None:
        self.cfg = dataclasses.replace(cfg if cfg is not None else self.Config(), **settings)
        self.every: int = self.cfg.every

    def columns(self, model: Model) -> list[str]:
        """The metrics.csv columns this probe fills for `model`, in order."""
        raise NotImplementedError

    def measure(self, view: ProbeView) -> dict[str, float]:
        raise NotImplementedError


def norms_of(grads: dict[str, Tensor | None], params: dict[str, str]) -> dict[str, float]:
    """column -> L2 norm of the gradient of the parameter named `params[column]`; all NaN before a backward."""
    keys = [c for c, name in params.items() if name in grads]
    tensors = [grads[params[c]] for c in keys]
    if not tensors or any(g is None for g in tensors):
        return dict.fromkeys(keys, math.nan)
    # one stacked transfer instead of a device sync per parameter
    return dict(zip(keys, torch.stack([torch.linalg.vector_norm(g) for g in tensors]).tolist()))
