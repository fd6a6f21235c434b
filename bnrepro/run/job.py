"""Jobs as a launcher prepares them, and training them: one model alone, or several that stack, through the one
training loop; data, models, optimizers, checkpoints, run folders and W&B runs, from validated configs."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from itertools import groupby
from pathlib import Path
from typing import Any

import torch
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from bnrepro import nn as bnn
from bnrepro.config import COMPUTE_NEUTRAL
from bnrepro.data.base import Dataset, Splits
from bnrepro.errors import FolderRefused
from bnrepro.interrupt import StopRequest
from bnrepro.models.base import Model
from bnrepro.nn import cpu_kernel
from bnrepro.parts import ConfigError, build_part, part_class
from bnrepro.probes.base import Probe
from bnrepro.run.checkpoint import CHECKPOINT_FILE, FINISHED
from bnrepro.run.lock import FolderLock
from bnrepro.run.record import RunRecord
from bnrepro.training import bn_inference
from bnrepro.training.bn_inference import InferenceStatistics
from bnrepro.training.evaluation import Evaluator
from bnrepro.training.loop import LoopState, Member, train_loop
from bnrepro.training.optim import build_optimizer, effective_lr, lr_schedule
from bnrepro.training.trainers import SingleTrainer, StackedTrainer


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device", spec, "auto or cpu: no CUDA GPU is visible")
    return torch.device(spec)


def default_threads(hydra_cfg: DictConfig) -> int | None:
    """Threads per job when train.num_threads is null, so that parallel jobs never oversubscribe the cores.

    Small models gain more from parallel single-thread processes than from threads,
    so a parallel launcher's job gets its share of the cores; a lone run keeps torch's default.
    """
    launcher = hydra_cfg.launcher
    target = launcher.get("_target_", "")
    if "n_jobs" in launcher:  # joblib, vectorized: n_jobs processes side by side
        n_jobs = launcher.n_jobs if launcher.n_jobs > 0 else os.cpu_count() or 1
        return max(1, (os.cpu_count() or 1) // n_jobs)
    if "submitit" in target:
        return int(launcher.get("cpus_per_task") or 1)
    return None


def wandb_group(cfg: DictConfig, hydra_cfg: DictConfig) -> str | None:
    """Every job of one sweep shares a W&B group named after the sweep folder."""
    if cfg.wandb.group is not None:
        return cfg.wandb.group
    if hydra_cfg.mode == RunMode.MULTIRUN:
        sweep = Path(hydra_cfg.sweep.dir)
        return f"{sweep.parent.name}_{sweep.name}"
    return None


@dataclass
class Job:
    """One run as a launcher prepared it: a validated config, the folder it writes and how it logs."""

    cfg: DictConfig
    run_dir: Path
    device: torch.device
    wandb_mode: str
    wandb_group: str | None
    threads: int | None  # torch threads; None: torch's default
    prior: dict[str, Any] | None  # the summary of the run this folder already holds, if any
    progress: bool = True  # a progress bar (a sweep shows its own line instead)
    lock: FolderLock | None = None  # the run folder's, held from prepare to the run's end

    @property
    def finished(self) -> bool:
        return self.prior is not None and self.prior["status"] in FINISHED

    def record(self, bn_path: str, **extra: Any) -> RunRecord:
        return RunRecord(self.cfg, self.run_dir, self.device, self.wandb_mode, self.wandb_group, self.prior,
                         bn_path, **extra)

    def release(self) -> None:
        """Let go of the run folder (the process may go on to other jobs: a joblib worker does)."""
        if self.lock is not None:
            self.lock.release()


def bn_path(model: torch.nn.Module, device: torch.device) -> str:
    """Which code computes the model's batch norm, and so the last bits of its numbers: `cpp_kernel` (bnrepro's
    layer through bnrepro/nn/batchnorm_cpu.cpp), `torch_ops` (bnrepro's layer on torch ops: on a GPU, or where the
    kernel cannot be built), `torch_layer` (torch.nn's BN) or `none`."""
    modules = list(model.modules())
    if any(isinstance(m, (bnn.BatchNorm1d, bnn.BatchNorm2d)) for m in modules):
        return "cpp_kernel" if device.type == "cpu" and cpu_kernel.kernel() is not None else "torch_ops"
    if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in modules):
        return "torch_layer"
    return "none"


def check_resumable(job: Job) -> None:
    """Before anything is written: refuse a checkpoint that this environment would continue on another BN code path
    (check_bn_path). A model is built to see which path its layers take; train() builds its own."""
    if ((job.prior or {}).get("checkpoint") or {}).get("bn_path") is None or job.cfg.train.resume == "force":
        return
    check_bn_path(job, bn_path(build_model(job.cfg, build_part(job.cfg.data, "data")), job.device))


def check_bn_path(job: Job, path: str) -> None:
    """A checkpoint continues only on the BN code path it was computed on (train.resume=force: on any): the two
    paths differ in the last bits, and a resume is promised to be bit-identical."""
    before = ((job.prior or {}).get("checkpoint") or {}).get("bn_path")
    if before is None or before == path or job.cfg.train.resume == "force":
        return
    raise FolderRefused(f"{job.run_dir / CHECKPOINT_FILE} was computed with BN on {before}, and here it would run on "
                        f"{path} (bnrepro.run.job.bn_path): the result would not be bit-identical to an uninterrupted "
                        f"run; continue it where {before} runs, or pass train.resume=force to go on anyway "
                        f"(summary.json records both paths)")


# What may differ between the models of one stack besides the model's own stack_keys and the compute-neutral keys:
# the seed (initial weights, batch order), the learning rate (StackedSGD keeps one per model) and the name
PER_MODEL = ("name", "seed", "optim.lr")


def group_key(job: Job) -> str | None:
    """Jobs with equal keys train as one stack; None: this job trains alone (its model, probes, data augmentation
    or a regression data set cannot stack: a stacked step's loss is cross-entropy)."""
    model_cls = part_class(job.cfg.model._target_, "model")
    settings = OmegaConf.to_object(job.cfg.model)
    probes = [part_class(p._target_, "probes") for p in job.cfg.probes.values()]
    if (not model_cls.stackable(settings) or not all(p.stackable for p in probes) or job.cfg.data.get("augment")
            or part_class(job.cfg.data._target_, "data").regression or bn_inference.requested(job.cfg.tracking)):
        return None
    values = OmegaConf.to_container(job.cfg, resolve=True)
    for key in (*PER_MODEL, *COMPUTE_NEUTRAL, *(f"model.{k}" for k in model_cls.stack_keys)):
        *parents, leaf = key.split(".")
        node = values
        for parent in parents:
            node = node[parent]
        node.pop(leaf, None)
    return json.dumps({"cfg": values, "device": str(job.device), "threads": job.threads}, sort_keys=True)


def build_model(cfg: DictConfig, dataset: Dataset) -> Model:
    """The config's model for the data set's samples, initialised from torch's global RNG."""
    return build_part(cfg.model, "model", input_shape=dataset.input_shape, num_classes=dataset.num_classes)


def inference_statistics(model: Model, data: Splits, cfg: DictConfig) -> InferenceStatistics | None:
    """What `tracking` asks of BN's inference statistics (bn_inference.py), or None."""
    t = cfg.tracking
    if not bn_inference.requested(t):
        return None
    return InferenceStatistics(model, data.train_x, data.train_y, data.test_x, data.test_y,
                               batch_size=cfg.train.batch_size, seed=cfg.seed, precise_batches=t.precise_bn_batches,
                               batch_stats_eval=t.batch_stats_eval, gap_samples=t.gap_samples)


def build_probes(cfg: DictConfig) -> list[Probe]:
    return [build_part(node, f"probes.{name}") for name, node in cfg.probes.items()]


def train(jobs: Sequence[Job], stop: StopRequest | None = None) -> list[dict[str, Any]]:
    """Train the jobs (one, or several with equal group_key, as one stack) or go on from their folders'
    checkpoints; everything they measure lands in their folders and W&B runs. Returns their final summaries.

    Ctrl-C/SIGTERM end it through `stop` (one of its own when None): every model checkpoints."""
    first = jobs[0]
    cfg = first.cfg
    if first.threads:
        torch.set_num_threads(first.threads)
    extra = {"vectorized": {"models": len(jobs)}} if len(jobs) > 1 else {}
    # the data first: a missing or broken data set fails before any run folder is touched
    dataset = build_part(cfg.data, "data")
    data = dataset.load(first.device)
    if (n_test := cfg.tracking.test_samples) is not None:
        data = replace(data, test_x=data.test_x[:n_test], test_y=data.test_y[:n_test])
    models, optimizers = [], []
    for job in jobs:  # each model initialised as its single run: its seed, then its constructor
        torch.manual_seed(job.cfg.seed)
        models.append(build_model(job.cfg, dataset).to(first.device))
        optimizers.append(build_optimizer(models[-1].parameters(), job.cfg.optim, lr=effective_lr(
            job.cfg.optim, job.cfg.train.batch_size)))
    paths = [bn_path(model, first.device) for model in models]
    for job, path in zip(jobs, paths):
        check_bn_path(job, path)
    records: list[RunRecord] = []
    results: list[Any] = [None] * len(jobs)
    try:
        for job, path in zip(jobs, paths):
            records.append(job.record(bn_path=path, model_name=part_class(job.cfg.model._target_, "model").__name__,
                                      data_name=dataset.name, **extra))
        states = [record.resume(model, optimizer) for record, model, optimizer in zip(records, models, optimizers)]
        evaluator = Evaluator(models[0], data.test_x, data.test_y, cfg.tracking.unit, list(cfg.tracking.percentiles),
                              inference_statistics(models[0], data, cfg), scores=dataset.scores)
        probes = build_probes(cfg)
        probe_columns = [c for p in probes for c in p.columns(models[0])]
        with nullcontext(stop) if stop else StopRequest() as stop:  # a caller's stays installed
            # models resumed from checkpoints of different steps train in separate parts
            by_step = sorted(range(len(jobs)), key=lambda i: states[i].step if states[i] else -1)
            for _, part in groupby(by_step, key=lambda i: states[i].step if states[i] else -1):
                part = list(part)
                if len(part) == 1:
                    i = part[0]
                    trainer = SingleTrainer(models[i], optimizers[i], data.train_x, data.train_y, evaluator,
                                            loss=dataset.loss)
                else:
                    trainer = StackedTrainer([models[i] for i in part], [optimizers[i] for i in part],
                                             [effective_lr(jobs[i].cfg.optim, cfg.train.batch_size) for i in part],
                                             cfg.optim.momentum,
                                             data.train_x, data.train_y, evaluator,
                                             weight_decay=cfg.optim.weight_decay, nesterov=cfg.optim.nesterov)
                members = [Member(seed=jobs[i].cfg.seed, on_row=records[i].on_row,
                                  on_checkpoint=_checkpointer(trainer, j, records[i]),
                                  state=states[i] or LoopState(), fresh=states[i] is None)
                           for j, i in enumerate(part)]
                for i, result in zip(part, train_loop(
                        trainer, members, steps=cfg.train.steps, batch_size=cfg.train.batch_size,
                        eval_every=cfg.train.eval_every, max_loss=cfg.train.max_loss, probes=probes,
                        probe_columns=probe_columns, progress=cfg.train.progress and first.progress,
                        checkpoint_every=cfg.train.checkpoint_every, stop=stop, shuffle=cfg.train.shuffle,
                        shard_size=cfg.train.shard_size, batching=cfg.train.batching,
                        batch_classes=cfg.train.batch_classes, lr_scale=lr_schedule(cfg.optim),
                        augment=dataset.augment if cfg.data.get("augment") else None)):
                    results[i] = result
        return [record.finished(result, stop.signum) for record, result in zip(records, results)]
    except BaseException as e:  # a failure, or a signal that did not wait (start-up, a second one): say so
        for record in records:
            record.ended(e)
        raise


def _checkpointer(trainer: SingleTrainer | StackedTrainer, k: int, record: RunRecord):
    """Model k's checkpoint in a single run's format: any launcher can resume it."""

    def save(state: LoopState) -> None:
        record.checkpoint(*trainer.export(k), state)

    return save
