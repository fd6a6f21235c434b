"""Per-layer weight-gradient norms: ||dL/dW|| of every linear and conv layer, every `every` steps.

Cheap (one norm per layer of gradients already computed) and a direct view of how BN rescales gradients
(Sec. 3.3): with BN, a layer's weight gradient scales as 1/|W| and stays level across depth.
"""

from __future__ import annotations

from dataclasses import dataclass

from bnrepro.models.base import Model
from bnrepro.parts import check
from bnrepro.probes.base import Probe, ProbeView, norms_of


@dataclass
class WeightGradNormsConfig:
    every: int = 100  # training steps between measurements

    def check(self) -> None:
        check(self.every > 0, "every", self.every, "a positive integer")


class WeightGradNorms(Probe):
    Config = WeightGradNormsConfig
    stackable = True

    def columns(self, model: Model) -> list[str]:
        return [f"grad_norm/weight/{layer}" for layer in model.weight_params()]

    def measure(self, view: ProbeView) -> dict[str, float]:
        params = {f"grad_norm/weight/{layer}": name for layer, name in view.model.weight_params().items()}
        return norms_of(view.grads, params)
