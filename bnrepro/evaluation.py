"""What a run measures at each evaluation point.

One inference-mode pass over the whole test set gives accuracy, loss and, from the same
forward pass, the tracked unit's activation input in every hidden layer (Figure 1(b, c)).
An evaluation runs every 500 of 50,000 steps and must stay within a few percent of the run's time,
so the test set is kept sparse (the first layer skips the zero pixels) and the reductions below
run along contiguous memory.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bnrepro.models import MLP, SparseRows

if TYPE_CHECKING:
    from bnrepro.vectorized.model import StackedMLP


class Evaluator:
    def __init__(self, test_x: Tensor, test_y: Tensor, unit: int, percentiles: list[float]) -> None:
        self.x = SparseRows.from_dense(test_x)  # (N, 784) once: the same test set at every evaluation
        self.y, self.unit = test_y, unit  # y: (N,)
        self.percentiles = list(percentiles)
        self.quantiles = Percentiles(test_x.shape[0], self.percentiles)

    def __call__(self, model: MLP) -> tuple[dict[str, float], dict[str, Tensor]]:
        """Metrics of one evaluation point, and each layer's tracked-unit inputs (N,) for histograms."""
        return self.per_model(model)[0]

    @torch.no_grad()
    def per_model(self, model: MLP | StackedMLP) -> list[tuple[dict[str, float], dict[str, Tensor]]]:
        """__call__'s pair for each model: one for an MLP, K for a StackedMLP, each from the same ops on the
        same shapes as its model alone, so a stacked model's metrics have its single run's bits."""
        was_training = model.training
        model.eval()  # Algorithm 2: BN uses its running statistics, never the test batch's
        act_inputs: list[Tensor] = []
        logits = model(self.x, act_inputs, self.unit)  # (N, 10) or (K, N, 10); act_inputs: (N,) or (K, N) each
        model.train(was_training)
        if logits.dim() == 2:  # one model: a stack of one
            logits, act_inputs = logits[None], [a[None] for a in act_inputs]
        k, layers = logits.shape[0], len(act_inputs)
        tracked = torch.stack(act_inputs, dim=1)  # (K, layers, N)
        scores = torch.stack([accuracy_and_loss(lk, self.y) for lk in logits]).tolist()  # (K, 2)
        quantiles = self.quantiles(tracked.view(k * layers, -1)).view(k, layers, -1).tolist()  # (K, layers, P)
        results = []
        for (test_acc, test_loss), model_quantiles, model_tracked in zip(scores, quantiles, tracked, strict=True):
            metrics = {"test_acc": test_acc, "test_loss": test_loss}
            for name, values in zip(model.layer_names, model_quantiles, strict=True):
                for p, v in zip(self.percentiles, values, strict=True):
                    metrics[f"act/{name}/p{p:g}"] = v
            results.append((metrics, dict(zip(model.layer_names, model_tracked, strict=True))))
        return results


def accuracy_and_loss(logits: Tensor, y: Tensor) -> Tensor:
    """logits (N, C), labels y (N,) -> (2,): accuracy and mean cross-entropy, as (logits.argmax(1) == y)
    .float().mean() and F.cross_entropy(logits, y), the loss up to float rounding."""
    # log-softmax over the classes of (C, N): along N it vectorizes, ~15x faster than along rows of C = 10
    log_probs = F.log_softmax(logits.t().contiguous(), dim=0)
    return torch.stack([(logits.argmax(dim=1) == y).float().mean(), -log_probs.gather(0, y[None]).mean()])


class Percentiles:
    """torch.quantile(values, q, dim=1).T for values (M, N) -> (M, P), bit for bit, from a partial sort:
    np.partition places only the few order statistics needed, O(N) per row instead of a full sort."""

    def __init__(self, n: int, percentiles: list[float]) -> None:
        # torch.quantile's linear interpolation and arithmetic: the percentile at rank r = q (N - 1), q in
        # float32 and r in float64, lies between the order statistics floor(r) and ceil(r), at r - floor(r)
        ranks = torch.tensor([p / 100 for p in percentiles]).double() * (n - 1)
        below, above = ranks.long(), ranks.ceil().long()
        self.weights = (ranks - below).float()  # (P,)
        self.order = sorted({*below.tolist(), *above.tolist()})  # the order statistics needed, ascending
        self.below = [self.order.index(k) for k in below.tolist()]
        self.above = [self.order.index(k) for k in above.tolist()]

    def __call__(self, values: Tensor) -> Tensor:
        """values (M, N) on any device -> (M, P) float32 on the CPU."""
        rows = values.float().cpu().numpy()
        stats = torch.from_numpy(np.partition(rows, self.order, axis=1)[:, self.order])  # (M, len(order))
        result = torch.lerp(stats[:, self.below], stats[:, self.above], self.weights)
        # torch.quantile gives NaN for a row with any NaN; np.partition would only sort NaN last
        result[torch.from_numpy(np.isnan(rows).any(axis=1))] = math.nan
        return result


def bn_grad_norms(model: MLP) -> dict[str, float]:
    """L2 norm of each BN layer's gamma and beta gradient, as left by the last backward pass."""
    keys, grads = [], []
    norms = model.norms()
    for label, attr in (("gamma", "weight"), ("beta", "bias")):
        for name, norm in norms.items():
            if (param := getattr(norm, attr)) is not None:
                keys.append(f"grad_norm/{label}/{name}")
                grads.append(param.grad)
    if not grads or any(g is None for g in grads):  # before the first step
        return dict.fromkeys(keys, math.nan)
    # one stacked transfer instead of a device sync per parameter
    return dict(zip(keys, torch.stack([torch.linalg.vector_norm(g) for g in grads]).tolist()))
