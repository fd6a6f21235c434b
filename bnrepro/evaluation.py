"""What a run measures at each evaluation point.

One inference-mode pass over the whole test set gives accuracy, loss and, from the same
forward pass, the tracked unit's activation input in every hidden layer (Figure 1(b, c)).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from bnrepro.models import MLP


class Evaluator:
    def __init__(self, test_x: Tensor, test_y: Tensor, unit: int, percentiles: list[float]) -> None:
        self.x, self.y, self.unit = test_x, test_y, unit  # x: (N, 784), y: (N,)
        self.percentiles = list(percentiles)
        self.q = torch.tensor([p / 100 for p in self.percentiles], device=test_x.device)

    @torch.no_grad()
    def __call__(self, model: MLP) -> tuple[dict[str, float], dict[str, Tensor]]:
        """Metrics of one evaluation point, and each layer's tracked-unit inputs (N,) for histograms."""
        was_training = model.training
        model.eval()  # Algorithm 2: BN uses its running statistics, never the test batch's
        act_inputs: list[Tensor] = []
        logits = model(self.x, act_inputs, self.unit)  # act_inputs: one (N,) per hidden layer
        model.train(was_training)

        tracked = torch.stack(act_inputs, dim=1)  # (N, layers)
        quantiles = torch.quantile(tracked.float(), self.q, dim=0).T.tolist()  # (layers, P)
        metrics = {
            "test_acc": (logits.argmax(dim=1) == self.y).float().mean().item(),
            "test_loss": F.cross_entropy(logits, self.y).item(),
        }
        units = {}
        for i, (name, values) in enumerate(zip(model.layer_names, quantiles)):
            units[name] = tracked[:, i]
            for p, v in zip(self.percentiles, values):
                metrics[f"act/{name}/p{p:g}"] = v
        return metrics, units


def bn_grad_norms(model: MLP) -> dict[str, float]:
    """L2 norm of each BN layer's gamma and beta gradient, as left by the last backward pass."""
    keys, grads = [], []
    for label, attr in (("gamma", "weight"), ("beta", "bias")):
        for name, norm in model.norms().items():
            if (param := getattr(norm, attr)) is not None:
                keys.append(f"grad_norm/{label}/{name}")
                grads.append(param.grad)
    if not grads or any(g is None for g in grads):  # before the first step
        return dict.fromkeys(keys, math.nan)
    # one stacked transfer instead of a device sync per parameter
    return dict(zip(keys, torch.stack([torch.linalg.vector_norm(g) for g in grads]).tolist()))
