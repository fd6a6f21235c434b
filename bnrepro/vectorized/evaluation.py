"""Evaluation points of K stacked models: each model's metrics and tracked units as its own run would record them."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from bnrepro.vectorized.model import StackedMLP


class StackedEvaluator:
    def __init__(self, test_x: Tensor, test_y: Tensor, unit: int, percentiles: list[float]) -> None:
        self.x, self.y, self.unit = test_x, test_y, unit  # x: (N, 784), y: (N,)
        self.percentiles = list(percentiles)
        self.q = torch.tensor([p / 100 for p in self.percentiles], device=test_x.device)

    @torch.no_grad()
    def __call__(self, model: StackedMLP) -> list[tuple[dict[str, float], dict[str, Tensor]]]:
        model.eval()
        act_inputs: list[Tensor] = []
        logits = model(self.x, act_inputs, self.unit)  # (K, N, 10); act_inputs: one (K, N) per hidden layer
        model.train()
        out = []
        for k in range(model.k):
            tracked = torch.stack([a[k] for a in act_inputs], dim=1)  # (N, layers)
            quantiles = torch.quantile(tracked.float(), self.q, dim=0).T.tolist()
            metrics = {"test_acc": (logits[k].argmax(dim=1) == self.y).float().mean().item(),
                       "test_loss": F.cross_entropy(logits[k], self.y).item()}
            units = {}
            for i, (name, values) in enumerate(zip(model.layer_names, quantiles)):
                units[name] = tracked[:, i]
                for p, v in zip(self.percentiles, values):
                    metrics[f"act/{name}/p{p:g}"] = v
            out.append((metrics, units))
        return out


def stacked_bn_grad_norms(model: StackedMLP) -> list[dict[str, float]]:
    """Each model's bn_grad_norms: the L2 norm of its gamma and beta gradients from the last backward pass."""
    keys, grads = [], []
    for label, attr in (("gamma", "weight"), ("beta", "bias")):
        for i, name in enumerate(model.layer_names):
            if (param := model.tensors.get(f"hidden.{i}.norm.{attr}")) is not None:
                keys.append(f"grad_norm/{label}/{name}")
                grads.append(param.grad)
    if not grads or any(g is None for g in grads):
        return [dict.fromkeys(keys, math.nan) for _ in range(model.k)]
    norms = torch.stack([torch.linalg.vector_norm(g, dim=(1, 2)) for g in grads], dim=1).tolist()  # (K, keys)
    return [dict(zip(keys, row)) for row in norms]
