"""The training loop: SGD on mini-batches drawn by index from tensors already on the device."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from bnrepro.evaluation import Evaluator, bn_grad_norms
from bnrepro.models import MLP

# (step, metrics row, tracked unit inputs per layer) -> None; called at every evaluation point
OnEval = Callable[[int, dict[str, float], dict[str, Tensor]], None]


@dataclass
class LoopResult:
    status: str  # completed | diverged
    steps_done: int  # optimizer updates applied
    diverged_step: int | None
    train_time_s: float  # the whole loop, evaluations included
    eval_time_s: float  # evaluation, tracking and logging at the evaluation points


def train_loop(model: MLP, optimizer: torch.optim.Optimizer, train_x: Tensor, train_y: Tensor,
               evaluator: Evaluator, on_eval: OnEval, *, steps: int, batch_size: int, eval_every: int,
               max_loss: float, seed: int, progress: bool = True) -> LoopResult:
    # Shuffled epochs without replacement: 60000 / 60 gives exactly 1000 steps an epoch.
    # The permutation comes from its own CPU generator so batches depend on the seed alone.
    generator = torch.Generator().manual_seed(seed)
    n = train_x.shape[0]
    steps_per_epoch = n // batch_size
    device = train_x.device

    eval_time = 0.0

    def evaluate(step: int, train_loss: float) -> None:
        nonlocal eval_time
        eval_start = time.perf_counter()
        metrics, units = evaluator(model)
        row = {"step": step, "test_acc": metrics.pop("test_acc"), "test_loss": metrics.pop("test_loss"),
               "train_loss": train_loss, **bn_grad_norms(model), **metrics}
        bar.set_postfix(test_acc=f"{row['test_acc']:.4f}", refresh=False)
        on_eval(step, row, units)
        eval_time += time.perf_counter() - eval_start

    model.train()
    bar = tqdm(total=steps, disable=not progress, unit="step", dynamic_ncols=True, mininterval=1.0)
    start = time.perf_counter()
    evaluate(0, math.nan)
    loss_sum, loss_count, perm = 0.0, 0, None
    for step in range(1, steps + 1):
        k = (step - 1) % steps_per_epoch
        if k == 0:
            perm = torch.randperm(n, generator=generator).to(device)
        idx = perm[k * batch_size:(k + 1) * batch_size]  # (B,) a view, no copy
        # index_select: one kernel; X[idx] goes through advanced indexing, several times slower here
        logits = model(train_x.index_select(0, idx))
        loss = F.cross_entropy(logits, train_y.index_select(0, idx))
        loss_value = loss.item()
        if not loss_value <= max_loss:  # NaN, inf or past the bound: a result, not a crash
            bar.close()
            return LoopResult("diverged", step - 1, step, time.perf_counter() - start, eval_time)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss_value
        loss_count += 1
        bar.update()
        if step % eval_every == 0 or step == steps:
            evaluate(step, loss_sum / loss_count)
            loss_sum, loss_count = 0.0, 0
    bar.close()
    return LoopResult("completed", steps, None, time.perf_counter() - start, eval_time)
