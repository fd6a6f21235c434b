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
from bnrepro.interrupt import StopRequest
from bnrepro.models import MLP

# (step, metrics row, tracked unit inputs per layer) -> None; called at every evaluation point
OnEval = Callable[[int, dict[str, float], dict[str, Tensor]], None]


@dataclass
class LoopState:
    """Where the loop stands between two steps: with the model and optimizer, all it needs to go on
    bit-for-bit. Plain types and tensors only, so that a checkpoint loads with weights_only=True."""

    step: int = 0  # optimizer updates applied
    loss_sum: float = 0.0  # training loss since the last evaluation point
    loss_count: int = 0
    perm: Tensor | None = None  # (N,) this epoch's batch order, on the CPU
    generator: Tensor | None = None  # the batch-order generator's state after drawing perm
    train_time_s: float = 0.0  # the whole loop so far, evaluations included, over all resumed segments
    eval_time_s: float = 0.0  # evaluation, tracking and logging at the evaluation points


@dataclass
class LoopResult:
    status: str  # completed | diverged | interrupted
    steps_done: int
    diverged_step: int | None
    train_time_s: float
    eval_time_s: float


def train_loop(model: MLP, optimizer: torch.optim.Optimizer, train_x: Tensor, train_y: Tensor,
               evaluator: Evaluator, on_eval: OnEval, *, steps: int, batch_size: int, eval_every: int,
               max_loss: float, seed: int, progress: bool = True, state: LoopState | None = None,
               checkpoint_every: int = 0, on_checkpoint: Callable[[LoopState], None] | None = None,
               stop: StopRequest | None = None) -> LoopResult:
    """Train from `state` (a fresh start when None) up to `steps`; checkpoint through on_checkpoint."""
    fresh = state is None
    state = state or LoopState()
    # Shuffled epochs without replacement: 60000 / 60 gives exactly 1000 steps an epoch.
    # The permutation comes from its own CPU generator so batches depend on the seed alone.
    generator = torch.Generator().manual_seed(seed)
    if state.generator is not None:
        generator.set_state(state.generator)
    n = train_x.shape[0]
    steps_per_epoch = n // batch_size
    device = train_x.device
    perm = None if state.perm is None else state.perm.to(device)
    segment_start, time_before = time.perf_counter(), state.train_time_s

    def evaluate(step: int, train_loss: float) -> None:
        eval_start = time.perf_counter()
        metrics, units = evaluator(model)
        row = {"step": step, "test_acc": metrics.pop("test_acc"), "test_loss": metrics.pop("test_loss"),
               "train_loss": train_loss, **bn_grad_norms(model), **metrics}
        bar.set_postfix(test_acc=f"{row['test_acc']:.4f}", refresh=False)
        on_eval(step, row, units)
        state.eval_time_s += time.perf_counter() - eval_start

    def end(status: str, diverged_step: int | None = None) -> LoopResult:
        bar.close()
        if status == "interrupted" and on_checkpoint is not None:
            checkpoint()
        state.train_time_s = time_before + time.perf_counter() - segment_start
        return LoopResult(status, state.step, diverged_step, state.train_time_s, state.eval_time_s)

    def checkpoint() -> None:
        state.perm = None if perm is None else perm.cpu()
        state.generator = generator.get_state()
        state.train_time_s = time_before + time.perf_counter() - segment_start
        on_checkpoint(state)

    model.train()
    bar = tqdm(total=steps, initial=state.step, disable=not progress, unit="step", dynamic_ncols=True,
               mininterval=1.0)
    if fresh:  # a resumed run has its step-0 row already, even when stopped before its first step
        evaluate(0, math.nan)
    for step in range(state.step + 1, steps + 1):
        if stop is not None and stop.signum is not None:
            return end("interrupted")
        k = (step - 1) % steps_per_epoch
        if k == 0:
            perm = torch.randperm(n, generator=generator).to(device)
        idx = perm[k * batch_size:(k + 1) * batch_size]  # (B,) a view, no copy
        # index_select: one kernel; X[idx] goes through advanced indexing, several times slower here
        logits = model(train_x.index_select(0, idx))
        loss = F.cross_entropy(logits, train_y.index_select(0, idx))
        loss_value = loss.item()
        if not loss_value <= max_loss:  # NaN, inf or past the bound: a result, not a crash
            return end("diverged", step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        state.step = step
        state.loss_sum += loss_value
        state.loss_count += 1
        bar.update()
        if step % eval_every == 0 or step == steps:
            evaluate(step, state.loss_sum / state.loss_count)
            state.loss_sum, state.loss_count = 0.0, 0
        if on_checkpoint is not None and checkpoint_every and step % checkpoint_every == 0 and step < steps:
            checkpoint()
    return end("completed")
