"""Which jobs of a sweep train together as one stacked model, and training such a group.

Jobs stack when they differ only in what a stacked model keeps per model (seed, learning rate,
init, name and W&B settings); everything else, architecture and training length included, must match.
Each job still gets its own run record: folder, summary, metrics, checkpoints and W&B run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import nullcontext
from itertools import groupby
from typing import Any

import torch
from omegaconf import OmegaConf

from bnrepro.data import load_mnist
from bnrepro.evaluation import Evaluator
from bnrepro.interrupt import StopRequest
from bnrepro.models import MLP
from bnrepro.run import Job, run
from bnrepro.vectorized.loop import ModelSpec, StackedSGD, train_stacked
from bnrepro.vectorized.model import StackedMLP

# Kept per model; every other key (compute-neutral ones like train.progress too: the group runs one loop) is shared
PER_MODEL = ("name", "seed", "optim.lr", "model.init", "model.init_std", "wandb")


def group_key(job: Job) -> str | None:
    """Jobs with equal keys stack; None: this job trains alone (torch's BN layer has no stacked form)."""
    if job.cfg.model.bn != "none" and job.cfg.model.bn_impl != "bnrepro":
        return None
    values = OmegaConf.to_container(job.cfg, resolve=True)
    for key in PER_MODEL:
        *parents, leaf = key.split(".")
        node = values
        for parent in parents:
            node = node[parent]
        node.pop(leaf)
    return json.dumps({"cfg": values, "device": str(job.device), "threads": job.threads}, sort_keys=True)


def plan(jobs: Sequence[Job], max_models: int, n_workers: int) -> list[list[Job]]:
    """Stackable jobs in groups of at most max_models (jobs that cannot stack alone), in sweep order.

    While there are fewer groups than workers, the largest group is halved: two processes with K/2 models
    each beat one with K on two cores, and a model's numbers do not depend on its group.
    """
    keys = {id(job): group_key(job) for job in jobs}
    groups: list[list[Job]] = []
    for key, members in groupby(sorted(jobs, key=lambda j: keys[id(j)] or ""), key=lambda j: keys[id(j)]):
        members = list(members)
        if key is None:
            groups += [[job] for job in members]
        else:
            groups += [members[i:i + max_models] for i in range(0, len(members), max_models)]
    while len(groups) < n_workers and max(len(g) for g in groups) > 1:
        largest = max(groups, key=len)
        groups.remove(largest)
        half = (len(largest) + 1) // 2
        groups += [largest[:half], largest[half:]]
    order = {id(job): i for i, job in enumerate(jobs)}
    return sorted(groups, key=lambda g: order[id(g[0])])


def train_group(jobs: Sequence[Job], stop: StopRequest | None = None) -> list[dict[str, Any]]:
    """Train the group's jobs (compatible by group_key) as one stacked model; their final summaries.

    Ctrl-C/SIGTERM end it through `stop` (one of its own when None): every model checkpoints."""
    if len(jobs) == 1:
        return [run(jobs[0], stop)]
    first = jobs[0]
    if first.threads:
        torch.set_num_threads(first.threads)
    models, optimizers, records, states = [], [], [], []
    for job in jobs:  # each model initialised exactly as its single run: its seed, then MLP()
        torch.manual_seed(job.cfg.seed)
        records.append(job.record(vectorized={"models": len(jobs)}))
        models.append(MLP(**job.cfg.model).to(job.device))
        optimizers.append(torch.optim.SGD(models[-1].parameters(), lr=job.cfg.optim.lr,
                                          momentum=job.cfg.optim.momentum))
    try:
        for record, model, optimizer in zip(records, models, optimizers):
            states.append(record.resume(model, optimizer))
        cfg = first.cfg
        data = load_mnist(cfg.data.root, device=first.device, binarize=cfg.data.binarize,
                          threshold=cfg.data.threshold)
        evaluator = Evaluator(data.test_x, data.test_y, cfg.tracking.unit, list(cfg.tracking.percentiles))
        results: list[Any] = [None] * len(jobs)
        with nullcontext(stop) if stop else StopRequest() as stop:  # a caller's stays installed
            # models resumed from checkpoints of different steps stack in separate parts
            by_step = sorted(range(len(jobs)), key=lambda i: states[i].step if states[i] else -1)
            for _, part in groupby(by_step, key=lambda i: states[i].step if states[i] else -1):
                part = list(part)
                stacked = StackedMLP([models[i] for i in part])
                optimizer = StackedSGD(stacked.params, [jobs[i].cfg.optim.lr for i in part], cfg.optim.momentum)
                optimizer.buffers = _momentum_buffers([optimizers[i] for i in part], [models[i] for i in part])
                specs = [ModelSpec(seed=jobs[i].cfg.seed, on_eval=records[i].on_eval,
                                   on_checkpoint=_checkpointer(stacked, j, models[i], optimizers[i], records[i]),
                                   state=states[i]) for j, i in enumerate(part)]
                for i, result in zip(part, train_stacked(
                        stacked, optimizer, specs, data.train_x, data.train_y, evaluator, steps=cfg.train.steps,
                        batch_size=cfg.train.batch_size, eval_every=cfg.train.eval_every,
                        max_loss=cfg.train.max_loss, progress=cfg.train.progress,
                        checkpoint_every=cfg.train.checkpoint_every, stop=stop)):
                    results[i] = result
    except Exception as e:
        for record in records:
            record.failed(e)
        raise
    return [record.finished(result, stop.signum) for record, result in zip(records, results)]


def _checkpointer(stacked: StackedMLP, k: int, model: MLP, optimizer: torch.optim.SGD, record: Any):
    """Model k's checkpoint in a single run's format: any launcher can resume it."""

    def save(state: Any, buffers: list[torch.Tensor] | None) -> None:
        stacked.export(k, model)
        if buffers is not None:
            for p, buf in zip(model.parameters(), buffers):
                optimizer.state[p]["momentum_buffer"] = buf.reshape(p.shape).clone()
        record.checkpoint(model, optimizer, state)

    return save


def _momentum_buffers(optimizers: Sequence[torch.optim.SGD], models: Sequence[MLP]) -> list[torch.Tensor] | None:
    """The resumed models' SGD momentum buffers, stacked as StackedMLP stacks their parameters."""
    per_model = [[opt.state.get(p, {}).get("momentum_buffer") for p in m.parameters()]
                 for opt, m in zip(optimizers, models)]
    if any(b is None for bufs in per_model for b in bufs):
        return None
    return [torch.stack([bufs[i] for bufs in per_model]).view(len(models), *_stacked_shape(per_model[0][i]))
            for i in range(len(per_model[0]))]


def _stacked_shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape) if t.dim() == 2 else (1, *t.shape)

