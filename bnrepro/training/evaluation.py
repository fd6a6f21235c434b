"""What a run measures at each evaluation point.

One inference-mode pass over the whole test set gives accuracy, loss and, from the same forward pass, the
tracked unit's activation input at every tap of the model (Figure 1(b, c)): percentiles over all test samples
(and, for a conv layer's channel, all positions). An evaluation runs every 500 of 50,000 steps and must stay
within a few percent of the run's time, so the model gets the test set in the form it evaluates fastest
(Model.prepare_inputs) and the reductions below run along contiguous memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from bnrepro.data.base import accuracy_and_loss
from bnrepro.models.base import Model, Stacked

if TYPE_CHECKING:
    from bnrepro.training.bn_inference import InferenceStatistics


Scores = Callable[[Tensor, Tensor], Tensor]  # (outputs (N, C), targets) -> (2,): test_acc, test_loss


@dataclass
class Evaluation:
    """One model's numbers at one evaluation point."""

    scores: dict[str, float]  # test_acc, test_loss
    percentiles: dict[str, float]  # act/<tap>/p<q>
    taps: dict[str, Tensor]  # each tap's tracked values, for histograms


class Evaluator:
    def __init__(self, model: Model, test_x: Tensor, test_y: Tensor, unit: int, percentiles: list[float],
                 inference: InferenceStatistics | None = None, scores: Scores = accuracy_and_loss) -> None:
        """model: the run's model (one of a stack's), which decides the test set's form and the chunk size.
        inference: BN's inference statistics measured as well (bn_inference.py; a model alone only).
        scores: the data set's (Dataset.scores): outputs and targets -> (test_acc, test_loss)."""
        self.inference, self.scores = inference, scores
        self.x = model.prepare_inputs(test_x, evaluation=True)  # once: the same test set at every evaluation
        self.y, self.unit, self.chunk = test_y, unit, model.eval_chunk  # y: (N,)
        self.tap_names = list(model.tap_names)
        self.percentiles = list(percentiles)
        self._quantiles: dict[int, Percentiles] = {}  # by number of values: a conv tap has N x positions

    @torch.no_grad()
    def __call__(self, model: Model | Stacked) -> list[Evaluation]:
        """One Evaluation for a model alone, K for a stack, each from the same ops on the same shapes as its
        model alone, so a stacked model's metrics have its single run's bits."""
        was_training = model.training
        model.eval()  # Algorithm 2: BN uses its running statistics, never the test batch's
        logits, taps = self._forward(model)  # (N, C) or (K, N, C); taps (M,) or (K, M) each
        extra = {}
        if self.inference is not None:
            if logits.dim() != 2:
                raise ValueError("BN's inference statistics are measured on a model alone, not in a stack")
            extra = self.inference(model, lambda: accuracy_and_loss(self._forward(model)[0], self.y).tolist())
        model.train(was_training)
        if logits.dim() == 2:  # one model: a stack of one
            logits, taps = logits[None], [t[None] for t in taps]
        scores = torch.stack([self.scores(lk, self.y) for lk in logits]).tolist()  # (K, 2)
        quantiles = [self._percentiles(t.shape[1])(t).tolist() for t in taps]  # per tap (K, P)
        results = []
        for k, (test_acc, test_loss) in enumerate(scores):
            pct = {f"act/{name}/p{p:g}": v for name, q in zip(self.tap_names, quantiles, strict=True)
                   for p, v in zip(self.percentiles, q[k], strict=True)}
            results.append(Evaluation({"test_acc": test_acc, "test_loss": test_loss, **extra}, pct,
                                      {name: t[k] for name, t in zip(self.tap_names, taps, strict=True)}))
        return results

    def _forward(self, model: Model | Stacked) -> tuple[Tensor, list[Tensor]]:
        """The whole test set, in chunks of model.eval_chunk samples where the model asks for them (memory)."""
        if self.chunk is None:
            taps: list[Tensor] = []
            return model(self.x, taps, self.unit), taps
        parts = []
        for start in range(0, self.x.shape[0], self.chunk):
            taps = []
            parts.append((model(self.x[start:start + self.chunk], taps, self.unit), taps))
        # logits (.., n, C) along the sample dim; a tap's values (.., n * positions) along the last
        return (torch.cat([p[0] for p in parts], dim=-2),
                [torch.cat(t, dim=-1) for t in zip(*(p[1] for p in parts))])

    def _percentiles(self, n: int) -> Percentiles:
        if n not in self._quantiles:
            self._quantiles[n] = Percentiles(n, self.percentiles)
        return self._quantiles[n]


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
