"""Which statistics BN uses at inference, measured at every evaluation (Wu & Johnson 2021, "Rethinking 'Batch' in
BatchNorm"; the paper's Sec. 3.1 and Algorithm 2).

A run evaluates with BN's running statistics, exponential moving averages (EMA) of past batches' statistics
taken while the weights moved. With `tracking.*` set, each evaluation point also gives:

- `test_acc_precise`, `test_loss_precise` (tracking.precise_bn_batches = N): the test set with *precise* population
  statistics: each BN layer's running mean and variance replaced by the mean, over N fixed training batches of
  train.batch_size, of its input's batch mean and unbiased batch variance, computed in one pass of the current
  network with BN on batch statistics (as Algorithm 2 step 10 and fvcore's precise BN). The running statistics are
  put back afterwards, bit for bit.
- `test_acc_batch`, `test_loss_batch` (tracking.batch_stats_eval): each test batch of train.batch_size normalised
  by its own statistics, as in training (the test set's remainder of fewer samples left out).
- `train_acc`, `train_acc_batch`, `train_eval_gap` (tracking.gap_samples = M): a fixed subset of M training samples
  (rounded down to whole batches) classified in inference mode (running statistics) and in training mode (batch
  statistics, batches of train.batch_size); the gap is training-mode minus inference-mode accuracy.

"Training mode" here is BN's only: the BN layers normalise by the batch and move no running statistic; everything
else (dropout) stays in inference mode, and no random number is drawn, so the trajectory is the same with or
without these measurements. They need the model alone (not in a stack), and cost a forward pass of N batches, of
the test set and of 2 M samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from bnrepro import nn as bnn
from bnrepro.models.base import Model
from bnrepro.training.evaluation import accuracy_and_loss

# seeds of the fixed training samples, offset from the run's seed so that they are not its batch order's
PRECISE_SEED_OFFSET = 2_000_003
GAP_SEED_OFFSET = 3_000_017
NORM_TYPES = (bnn.BatchNorm1d, bnn.BatchNorm2d, nn.modules.batchnorm._BatchNorm)


def requested(tracking: Any) -> bool:
    """Whether `tracking` asks for any of these measurements (which need the model alone, not in a stack)."""
    return bool(tracking.precise_bn_batches or tracking.batch_stats_eval or tracking.gap_samples)


def norm_layers(model: nn.Module) -> list[nn.Module]:
    """The model's BN layers (ours, their ghost and renormalising forms, and torch's) that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, NORM_TYPES) and m.running_mean is not None]


@contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """The model in inference mode, except that its BN layers normalise by each batch's own statistics and leave
    their running statistics (and batch counts) alone: torch's rule for training without tracked statistics."""
    layers = norm_layers(model)
    was_training = model.training
    model.eval()
    for layer in layers:
        layer.training, layer.track_running_stats = True, False
    try:
        yield
    finally:
        for layer in layers:
            layer.training, layer.track_running_stats = False, True
        model.train(was_training)


def precise_statistics(model: nn.Module, batches: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
    """Each BN layer's (mean, unbiased variance) per channel, averaged over `batches` (inputs the model takes),
    from one pass with BN on batch statistics: what set_precise_statistics writes into the running statistics."""
    layers = norm_layers(model)
    sums: dict[nn.Module, list[Tensor]] = {}

    def record(layer: nn.Module, args: tuple) -> None:
        x = args[0]
        var, mean = torch.var_mean(x, [d for d in range(x.dim()) if d != 1], correction=1)
        if layer in sums:
            sums[layer][0] += mean
            sums[layer][1] += var
        else:
            sums[layer] = [mean, var]

    handles = [layer.register_forward_pre_hook(record) for layer in layers]
    try:
        with batch_statistics(model), torch.no_grad():
            for x in batches:
                model(x)
    finally:
        for handle in handles:
            handle.remove()
    return [(sums[layer][0] / len(batches), sums[layer][1] / len(batches)) for layer in layers]


class InferenceStatistics:
    """The measurements above for one model (`tracking.precise_bn_batches`, `batch_stats_eval`, `gap_samples`)."""

    def __init__(self, model: Model, train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, *,
                 batch_size: int, seed: int, precise_batches: int = 0, batch_stats_eval: bool = False,
                 gap_samples: int = 0) -> None:
        b = batch_size
        self.batch_stats_eval = batch_stats_eval
        self.precise: list[Tensor] = []  # N training batches, in the form the model takes in training
        if precise_batches:
            idx = _fixed_samples(len(train_y), precise_batches * b, seed + PRECISE_SEED_OFFSET)
            self.precise = list(model.prepare_inputs(train_x[idx.to(train_x.device)], evaluation=False).split(b))
        n_test = len(test_y) // b * b
        self.test = list(model.prepare_inputs(test_x[:n_test], evaluation=False).split(b)) if batch_stats_eval else []
        self.test_y = test_y[:n_test]
        self.gap: list[Tensor] = []
        if gap_samples:
            idx = _fixed_samples(len(train_y), gap_samples // b * b, seed + GAP_SEED_OFFSET)
            idx = idx.to(train_x.device)
            self.gap = list(model.prepare_inputs(train_x[idx], evaluation=False).split(b))
            self.gap_y = train_y[idx]

    def columns(self) -> list[str]:
        return [*(["test_acc_precise", "test_loss_precise"] if self.precise else []),
                *(["test_acc_batch", "test_loss_batch"] if self.batch_stats_eval else []),
                *(["train_acc", "train_acc_batch", "train_eval_gap"] if self.gap else [])]

    @torch.no_grad()
    def __call__(self, model: Model, test_scores: Callable[[], list[float]]) -> dict[str, float]:
        """test_scores: (accuracy, loss) of the test set with the model's current statistics, in inference mode."""
        scores: dict[str, float] = {}
        if self.precise:
            layers = norm_layers(model)
            saved = [(layer.running_mean.clone(), layer.running_var.clone()) for layer in layers]
            try:
                for layer, (mean, var) in zip(layers, precise_statistics(model, self.precise)):
                    layer.running_mean.copy_(mean)
                    layer.running_var.copy_(var)
                scores["test_acc_precise"], scores["test_loss_precise"] = test_scores()
            finally:
                for layer, (mean, var) in zip(layers, saved):
                    layer.running_mean.copy_(mean)
                    layer.running_var.copy_(var)
        if self.batch_stats_eval:
            with batch_statistics(model):
                logits = torch.cat([model(x) for x in self.test])
            scores["test_acc_batch"], scores["test_loss_batch"] = accuracy_and_loss(logits, self.test_y).tolist()
        if self.gap:
            was_training = model.training
            model.eval()
            eval_logits = torch.cat([model(x) for x in self.gap])
            model.train(was_training)
            with batch_statistics(model):
                batch_logits = torch.cat([model(x) for x in self.gap])
            acc_eval = accuracy_and_loss(eval_logits, self.gap_y)[0].item()
            acc_batch = accuracy_and_loss(batch_logits, self.gap_y)[0].item()
            scores.update(train_acc=acc_eval, train_acc_batch=acc_batch, train_eval_gap=acc_batch - acc_eval)
        return scores


def _fixed_samples(n: int, count: int, seed: int) -> Tensor:
    """`count` distinct sample indices out of n, the same for a seed on any device."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:count]
