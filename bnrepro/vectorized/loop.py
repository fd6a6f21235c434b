"""The training loop of K stacked models: bnrepro.loop.train_loop's steps, for each model exactly as it would run
alone (its own batch order, learning rate, divergence, evaluation rows and checkpoints), on all K at once."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm import tqdm

from bnrepro.evaluation import Evaluator
from bnrepro.interrupt import StopRequest
from bnrepro.loop import LoopResult, LoopState, OnEval
from bnrepro.vectorized.model import StackedMLP


@dataclass
class ModelSpec:
    """What may differ between the stacked models of one group; all else is the group's."""

    seed: int
    on_eval: OnEval
    on_checkpoint: Callable[[LoopState, Tensor | None], None] | None  # (loop state, model's momentum buffers)
    state: LoopState | None = None  # where a resumed model stands


class StackedSGD:
    """torch.optim.SGD (no dampening, nesterov or weight decay) with a learning rate per model.

    addcmul(p, g, -lr) is bit-for-bit SGD's p.add_(g, alpha=-lr), so each model moves exactly as alone.
    """

    def __init__(self, params: Sequence[Tensor], lrs: Sequence[float], momentum: float) -> None:
        self.params, self.momentum = list(params), momentum
        # (K, 1, 1): broadcasts over every stacked parameter, all of them (K, rows, cols)
        self.neg_lr = torch.tensor([-lr for lr in lrs], device=self.params[0].device).view(len(lrs), 1, 1)
        self.buffers: list[Tensor] | None = None  # momentum buffers, created at the first step as SGD does

    @torch.no_grad()
    def step(self) -> None:
        grads = [p.grad for p in self.params]
        if self.momentum:
            if self.buffers is None:
                self.buffers = [g.clone() for g in grads]
            else:
                for buf, g in zip(self.buffers, grads):
                    buf.mul_(self.momentum).add_(g)
            grads = self.buffers
        for p, g in zip(self.params, grads):
            p.addcmul_(g, self.neg_lr)


def train_stacked(model: StackedMLP, optimizer: StackedSGD, specs: Sequence[ModelSpec], train_x: Tensor,
                  train_y: Tensor, evaluator: Evaluator, *, steps: int, batch_size: int, eval_every: int,
                  max_loss: float, progress: bool = True, checkpoint_every: int = 0,
                  stop: StopRequest | None = None) -> list[LoopResult]:
    """Train the K models from their states (all fresh, or all resumed at one step) up to `steps`."""
    k_models = len(specs)
    states = [spec.state or LoopState() for spec in specs]
    fresh = specs[0].state is None
    start_step = states[0].step
    n = train_x.shape[0]
    steps_per_epoch = n // batch_size
    device = train_x.device
    # each model's batch order from its own CPU generator, as in a single run: batches depend on its seed alone
    generators = []
    for spec, state in zip(specs, states):
        generator = torch.Generator().manual_seed(spec.seed)
        if state.generator is not None:
            generator.set_state(state.generator)
        generators.append(generator)
    perms = None if states[0].perm is None else torch.stack([s.perm for s in states]).to(device)  # (K, N)
    active = list(range(k_models))  # models neither diverged nor done
    results: list[LoopResult | None] = [None] * k_models
    segment_start, times_before = time.perf_counter(), [s.train_time_s for s in states]

    def elapsed(k: int) -> float:
        return times_before[k] + time.perf_counter() - segment_start

    def evaluate(step: int, train_losses: list[float]) -> None:
        eval_start = time.perf_counter()
        per_model = evaluator.per_model(model)
        grad_norms = model.bn_grad_norms()
        for k in active:
            metrics, units = per_model[k]
            row = {"step": step, "test_acc": metrics.pop("test_acc"), "test_loss": metrics.pop("test_loss"),
                   "train_loss": train_losses[k], **grad_norms[k], **metrics}
            specs[k].on_eval(step, row, units)
        spent = time.perf_counter() - eval_start
        for k in active:
            states[k].eval_time_s += spent

    def end(k: int, status: str, diverged_step: int | None = None) -> None:
        state = states[k]
        if status == "interrupted":
            checkpoint(k)
        state.train_time_s = elapsed(k)
        results[k] = LoopResult(status, state.step, diverged_step, state.train_time_s, state.eval_time_s)

    def checkpoint(k: int) -> None:
        if specs[k].on_checkpoint is None:
            return
        state = states[k]
        state.perm = None if perms is None else perms[k].cpu()
        state.generator = generators[k].get_state()
        state.train_time_s = elapsed(k)
        buffers = None if optimizer.buffers is None else [b[k] for b in optimizer.buffers]
        specs[k].on_checkpoint(state, buffers)

    model.train()
    bar = tqdm(total=steps, initial=start_step, disable=not progress, unit="step", dynamic_ncols=True,
               mininterval=1.0)
    if fresh:
        evaluate(0, [math.nan] * k_models)
    for step in range(start_step + 1, steps + 1):
        if stop is not None and stop.signum is not None:
            for k in active:
                end(k, "interrupted")
            active = []
        if not active:
            break
        j = (step - 1) % steps_per_epoch
        if j == 0:
            perms = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(device)
        idx = perms[:, j * batch_size:(j + 1) * batch_size].reshape(-1)  # (K*B,) model-major
        # only the models still training take a gradient; the others' slices get zeros and stay put
        values = model.train_step(train_x, train_y, idx, [k in active for k in range(k_models)], max_loss)
        for k in list(active):
            if not values[k] <= max_loss:  # NaN, inf or past the bound: a result, not a crash
                end(k, "diverged", step)
                active.remove(k)
        if not active:
            break
        optimizer.step()
        for k in active:
            state = states[k]
            state.step = step
            state.loss_sum += values[k]
            state.loss_count += 1
        bar.update()
        if step % eval_every == 0 or step == steps:
            evaluate(step, [s.loss_sum / s.loss_count if s.loss_count else math.nan for s in states])
            for s in states:
                s.loss_sum, s.loss_count = 0.0, 0
        if checkpoint_every and step % checkpoint_every == 0 and step < steps:
            for k in active:
                checkpoint(k)
    bar.close()
    for k in active:
        end(k, "completed")
    return results  # type: ignore[return-value]
