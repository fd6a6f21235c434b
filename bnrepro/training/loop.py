"""The training loop, written once: K models (one for a single run, K for a stack) in lockstep, each exactly as
it would train alone: its own batch order, divergence, evaluation rows, probes and checkpoints.

What differs between one model and a stack is only the `Trainer` the loop drives (trainers.py): how a step's
forward and backward run, how the weights move, and how the models are evaluated.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor
from tqdm import tqdm

from bnrepro.interrupt import StopRequest
from bnrepro.probes.base import Probe, ProbeView
from bnrepro.training.batches import batch_order
from bnrepro.training.evaluation import Evaluation
from bnrepro.training.optim import LrScale

# (step, metrics row, tracked tap values by name) -> None; called at every row: evaluation points and probe steps
OnRow = Callable[[int, dict[str, float | None], dict[str, Tensor]], None]
# (training images (B, *input_shape), generator) -> the same distorted: a data set's `augment` hook
Augment = Callable[[Tensor, torch.Generator], Tensor]
# the augmentation generator's seed is the run's seed plus this, so that its stream is not the batch order's
AUGMENT_SEED_OFFSET = 1_000_003


@dataclass
class LoopState:
    """Where one model's loop stands between two steps: with the model and optimizer, all it needs to go on
    bit for bit. Plain types and tensors only, so that a checkpoint loads with weights_only=True."""

    step: int = 0  # optimizer updates applied
    loss_sum: float = 0.0  # training loss since the last evaluation point
    loss_count: int = 0
    order: dict[str, Any] | None = None  # the batch order's state (EpochOrder.state)
    augment: Tensor | None = None  # the augmentation generator's state (with data.augment)
    train_time_s: float = 0.0  # the whole loop so far, evaluations included, over all resumed segments
    eval_time_s: float = 0.0  # evaluation, tracking and logging at the evaluation points


@dataclass
class LoopResult:
    status: str  # completed | diverged | interrupted
    steps_done: int
    diverged_step: int | None
    train_time_s: float
    eval_time_s: float


@dataclass
class Member:
    """One of the loop's models: where its rows and checkpoints go, and where it stands."""

    seed: int  # its batch order's seed
    on_row: OnRow
    on_checkpoint: Callable[[LoopState], None] | None
    state: LoopState = field(default_factory=LoopState)
    fresh: bool = True  # False: resumed, its step-0 row already written


class Trainer(Protocol):
    """K models trained in lockstep (trainers.py): one model, or a stack."""

    k: int
    train_x: Tensor  # (N, ...) the training split in the models' input form
    train_y: Tensor  # (N,)

    def step(self, idx: Tensor, active: Sequence[bool], max_loss: float,
             augment: Callable[[Tensor], Tensor] | None = None) -> list[float]:
        """Forward and backward, model k on rows idx[k*B:(k+1)*B]; each model's loss. Active models whose loss is
        at most max_loss get their gradients. augment: applied to the batch's images (one model only)."""

    def update(self) -> None:
        """Move the weights by the gradients (every model's: inactive ones have zero gradients)."""

    def set_lr_scale(self, scale: float) -> None:
        """Every model's rate from the next update on: its configured rate times `scale`."""

    def lr(self, k: int) -> float:
        """Model k's current rate."""

    def evaluate(self) -> list[Evaluation]: ...

    def grad_norms(self, k: int) -> dict[str, float]:
        """Model k's gamma/beta gradient norms, grad_norm/<gamma|beta>/<layer>."""

    def probe_view(self, k: int, step: int) -> ProbeView: ...

    def export(self, k: int) -> Any:
        """Model k's state as a single run's (what on_checkpoint saves)."""


def _row(step: int, evaluation: Evaluation, train_loss: float, grad_norms: dict[str, float],
         lr: float | None) -> dict[str, Any]:
    # the column order of metrics.csv; `lr` only under a schedule, so that a constant rate's file stays as it was
    scheduled = {} if lr is None else {"lr": lr}
    return {"step": step, **evaluation.scores, "train_loss": train_loss, **scheduled, **grad_norms,
            **evaluation.percentiles}


def train_loop(trainer: Trainer, members: Sequence[Member], *, steps: int, batch_size: int, eval_every: int,
               max_loss: float, probes: Sequence[Probe] = (), probe_columns: Sequence[str] = (),
               progress: bool = True, checkpoint_every: int = 0, stop: StopRequest | None = None,
               shuffle: str = "epoch", shard_size: int = 0, batching: str = "iid", batch_classes: int = 1,
               lr_scale: LrScale | None = None, augment: Augment | None = None) -> list[LoopResult]:
    """Train the K models from their states (all fresh, or all resumed at one step) up to `steps`.

    probe_columns: every column the probes fill, so the step-0 row (whose keys are metrics.csv's columns)
    names them. shuffle, shard_size, batching, batch_classes: the batch order (batches.py). lr_scale: the
    learning-rate schedule (optim.lr_schedule), None for a constant rate; with one, every evaluation row has the
    column `lr`, the rate of the update that made its step (the step-0 row: the first update's). augment: the data
    set's hook, applied to every training batch with a generator of the model's own (a single model only)."""
    k_models = len(members)
    states = [m.state for m in members]
    start_step = states[0].step
    device = trainer.train_x.device
    orders = []
    for m in members:
        order = batch_order(shuffle, trainer.train_x.shape[0], batch_size, m.seed, device, shard_size, batching,
                            trainer.train_y, batch_classes)
        if m.state.order is not None:
            order.load(m.state.order)
        orders.append(order)
    distort = None  # the single model's batch augmentation, its generator bound
    if augment is not None:
        if k_models > 1:
            raise ValueError("stacked models do not augment their batches: jobs with data.augment train alone")
        augment_generator = torch.Generator().manual_seed(members[0].seed + AUGMENT_SEED_OFFSET)
        if states[0].augment is not None:
            augment_generator.set_state(states[0].augment)

        def distort(images: Tensor) -> Tensor:
            return augment(images, augment_generator)
    active = list(range(k_models))  # models neither diverged nor done
    results: list[LoopResult | None] = [None] * k_models
    segment_start, times_before = time.perf_counter(), [s.train_time_s for s in states]
    probed: list[dict[str, float]] = [{} for _ in range(k_models)]  # this step's probe values

    def elapsed(k: int) -> float:
        return times_before[k] + time.perf_counter() - segment_start

    def write_rows(step: int, evaluate: bool) -> None:
        eval_start = time.perf_counter()
        evaluations = trainer.evaluate() if evaluate else None
        for k in active:
            if evaluations is not None:
                s = states[k]
                train_loss = s.loss_sum / s.loss_count if s.loss_count else math.nan
                row = _row(step, evaluations[k], train_loss, trainer.grad_norms(k),
                           None if lr_scale is None else trainer.lr(k))
                if step == 0:
                    row |= dict.fromkeys(probe_columns)
                taps = evaluations[k].taps
            else:
                row, taps = {"step": step}, {}
            members[k].on_row(step, row | probed[k], taps)
            probed[k] = {}
        if evaluations is not None:
            scores = evaluations[active[0]].scores  # a regression's test_acc is NaN: its loss says more
            shown = ("test_acc", "test_loss")[math.isnan(scores["test_acc"])]
            bar.set_postfix({shown: f"{scores[shown]:.4f}"}, refresh=False)
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
        if members[k].on_checkpoint is None:
            return
        state = states[k]
        state.order = orders[k].state()
        if distort is not None:
            state.augment = augment_generator.get_state()
        state.train_time_s = elapsed(k)
        members[k].on_checkpoint(state)

    bar = tqdm(total=steps, initial=start_step, disable=not progress, unit="step", dynamic_ncols=True,
               mininterval=1.0)
    scale = None if lr_scale is None else lr_scale(start_step + 1)
    if scale is not None:
        trainer.set_lr_scale(scale)
    if members[0].fresh:  # a resumed run has its step-0 row already, even when stopped before its first step
        write_rows(0, evaluate=True)
    for step in range(start_step + 1, steps + 1):
        if stop is not None and stop.signum is not None:
            for k in active:
                end(k, "interrupted")
            active = []
        if not active:
            break
        # index_select: one kernel; X[idx] goes through advanced indexing, several times slower here
        idx = orders[0].batch(step) if k_models == 1 else torch.cat([o.batch(step) for o in orders])
        losses = trainer.step(idx, [k in active for k in range(k_models)], max_loss, distort)
        for k in list(active):
            if not losses[k] <= max_loss:  # NaN, inf or past the bound: a result, not a crash
                end(k, "diverged", step)
                active.remove(k)
        if not active:
            break
        # the update's rate is set before the probes, so that a probe sees the optimizer as it is about to step
        if lr_scale is not None and (now := lr_scale(step)) != scale:
            scale = now
            trainer.set_lr_scale(scale)
        due = [p for p in probes if step % p.every == 0]
        for k in active if due else ():
            view = trainer.probe_view(k, step)
            for probe in due:
                probed[k] |= probe.measure(view)
        trainer.update()
        for k in active:
            state = states[k]
            state.step = step
            state.loss_sum += losses[k]
            state.loss_count += 1
        bar.update()
        evaluate = step % eval_every == 0 or step == steps
        if evaluate or due:
            write_rows(step, evaluate)
        if evaluate:
            for s in states:
                s.loss_sum, s.loss_count = 0.0, 0
        if checkpoint_every and step % checkpoint_every == 0 and step < steps:
            for k in active:
                checkpoint(k)
    bar.close()
    for k in active:
        end(k, "completed")
    return results  # type: ignore[return-value]

