"""Internal covariate shift as Santurkar et al. (2018, Definition 2.1) measure it, per layer, every `every` steps.

For layer i (Model.weight_params, first to last): G is this step's gradient of the loss w.r.t. its weight W_i;
G' the gradient w.r.t. W_i on the same batch after the parameters of layers 1..i-1 (Model.layer_params: weights,
biases, BN's gamma and beta) have taken this step's update, exactly as the optimizer is about to apply it
(SGD.next_values: momentum, weight decay, Nesterov, the current rate), layers i..L at their current values.
Columns: ics/l2/<layer> = ||G - G'||_2 and ics/cos/<layer> = cos(G, G'). Layer 1 has no layer before it: G' = G,
so 0 and 1 without an evaluation.

Cost: one forward and backward per layer after the first (bench: reports/bench/). Not stackable: it recomputes the
step on its batch (probes/replay.py), which only a model trained alone keeps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bnrepro.models.base import Model
from bnrepro.parts import check
from bnrepro.probes.base import Probe, ProbeView
from bnrepro.probes.replay import Replay


@dataclass
class ICSConfig:
    # training steps between measurements: a probed step costs ~3 training steps of the paper's MLP, so every 20
    # keeps its steps within ~1.15x of their time, well inside 1.5x (bench: reports/bench/)
    every: int = 20

    def check(self) -> None:
        check(self.every > 0, "every", self.every, "a positive integer")


class ICS(Probe):
    Config = ICSConfig

    def columns(self, model: Model) -> list[str]:
        layers = list(model.weight_params())
        return [f"ics/l2/{layer}" for layer in layers] + [f"ics/cos/{layer}" for layer in layers]

    def measure(self, view: ProbeView) -> dict[str, float]:
        if view.optimizer is None:
            raise ValueError("the ics probe needs the optimizer (a model trained alone)")
        replay = Replay(view)
        names = {p: name for name, p in view.model.named_parameters()}
        updated = {names[p]: value for p, value in view.optimizer.next_values().items()}
        weights, layers = view.model.weight_params(), view.model.layer_params()
        moved: dict[str, torch.Tensor] = {}  # the layers before the current one, at their updated values
        l2, cos = {}, {}
        for layer, weight in weights.items():
            g = view.grads.get(weight)
            if g is None:
                l2[layer] = cos[layer] = math.nan
            elif not moved:  # nothing before it moves: G' is G
                l2[layer], cos[layer] = torch.zeros(()), torch.ones(())
            else:
                _, (g_moved,) = replay(moved, [weight])
                l2[layer] = torch.linalg.vector_norm(g - g_moved)
                cos[layer] = torch.nn.functional.cosine_similarity(g.flatten(), g_moved.flatten(), dim=0, eps=0.0)
            moved |= {name: updated[name] for name in layers[layer] if name in updated}
        values = [*l2.values(), *cos.values()]
        return dict(zip(self.columns(view.model), (float(v) for v in values)))
