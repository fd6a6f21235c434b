"""The loss landscape along the step's gradient (Santurkar et al. 2018, Sec. 3.2), every `every` steps.

At the step's weights w with the step's gradient g (of every parameter that has one: all of them move), on the
step's batch, at step sizes eta = lr x each of `points` evenly spaced factors in [low, high] (lr: the rate of the
update about to be applied), the weights w - eta g give:
- landscape/loss/min, landscape/loss/max: the range of the loss over the step sizes ("loss variation");
- landscape/grad_change/min, landscape/grad_change/max: the range of ||grad L(w - eta g) - g||_2 ("gradient
  predictiveness": the smaller, the better the gradient predicts the gradient a step away);
- landscape/beta: max over the step sizes of ||grad L(w - eta g) - g|| / ||eta g|| ("effective beta-smoothness").
The direction is the raw gradient, as in the paper, not the optimizer's update (with momentum the two differ):
the measure describes the landscape, not the optimizer. Gradients are of all parameters, as one vector.

Cost: one forward and backward per step size (bench: reports/bench/). Not stackable: it recomputes the step on
its batch (probes/replay.py), which only a model trained alone keeps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bnrepro.models.base import Model
from bnrepro.parts import check
from bnrepro.probes.base import Probe, ProbeView
from bnrepro.probes.replay import Replay, flat_norm

COLUMNS = ("loss/min", "loss/max", "grad_change/min", "grad_change/max", "beta")


@dataclass
class LandscapeConfig:
    # training steps between measurements: a probed step costs ~1.6 training steps of the paper's MLP per point,
    # ~13 with the default 8, so every 50 keeps the steps within ~1.25x of their time (bench: reports/bench/)
    every: int = 50
    low: float = 0.5  # the smallest step size, times the current learning rate (the paper's range: 0.5 to 4)
    high: float = 4.0  # the largest
    points: int = 8  # step sizes evenly spaced from low to high, both included

    def check(self) -> None:
        check(self.every > 0, "every", self.every, "a positive integer")
        check(self.low > 0, "low", self.low, "a positive multiple of the learning rate")
        check(self.high > self.low, "high", self.high, f"a multiple of the learning rate above low ({self.low})")
        check(self.points >= 2, "points", self.points, "an integer >= 2 (low and high both included)")


class Landscape(Probe):
    Config = LandscapeConfig

    def columns(self, model: Model) -> list[str]:
        return [f"landscape/{c}" for c in COLUMNS]

    def measure(self, view: ProbeView) -> dict[str, float]:
        if view.optimizer is None:
            raise ValueError("the landscape probe needs the optimizer's learning rate (a model trained alone)")
        replay = Replay(view)
        grads = {name: g for name, g in view.grads.items() if g is not None}
        if not grads:
            return dict.fromkeys(self.columns(view.model), math.nan)
        names, g = list(grads), list(grads.values())
        g_norm = flat_norm(g)
        lr = view.optimizer.param_groups[0]["lr"]
        losses, changes, betas = [], [], []
        for factor in torch.linspace(self.cfg.low, self.cfg.high, self.cfg.points, dtype=torch.float64).tolist():
            eta = lr * factor
            loss, moved = replay({n: replay.params[n] - eta * gn for n, gn in grads.items()}, names)
            change = flat_norm([a - b for a, b in zip(moved, g)])
            losses.append(loss)
            changes.append(change)
            betas.append(change / (eta * g_norm))
        loss, change = torch.stack(losses), torch.stack(changes)
        values = torch.stack([loss.min(), loss.max(), change.min(), change.max(), torch.stack(betas).max()])
        return dict(zip(self.columns(view.model), values.tolist()))
