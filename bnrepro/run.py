"""One training run: data, model, loop, checkpoints, run folder and W&B run, from a validated config."""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.types import RunMode
from omegaconf import DictConfig

from bnrepro.checkpoint import FINISHED
from bnrepro.config import ConfigError
from bnrepro.data import load_mnist
from bnrepro.evaluation import Evaluator
from bnrepro.interrupt import StopRequest
from bnrepro.loop import train_loop
from bnrepro.models import MLP
from bnrepro.record import RunRecord


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

    @property
    def finished(self) -> bool:
        return self.prior is not None and self.prior["status"] in FINISHED

    def record(self, **extra: Any) -> RunRecord:
        return RunRecord(self.cfg, self.run_dir, self.device, self.wandb_mode, self.wandb_group, self.prior,
                         **extra)


def run(job: Job, stop: StopRequest | None = None) -> dict[str, Any]:
    """Train one model, or go on from the folder's checkpoint; all it measured lands in its folder and W&B.

    Ctrl-C/SIGTERM end it through `stop` (one of its own when None) with a checkpoint."""
    cfg = job.cfg
    if job.threads:
        torch.set_num_threads(job.threads)
    torch.manual_seed(cfg.seed)
    record = job.record()
    try:
        data = load_mnist(cfg.data.root, device=job.device, binarize=cfg.data.binarize,
                          threshold=cfg.data.threshold)
        model = MLP(**cfg.model).to(job.device)
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum)
        state = record.resume(model, optimizer)
        evaluator = Evaluator(data.test_x, data.test_y, cfg.tracking.unit, list(cfg.tracking.percentiles))
        with nullcontext(stop) if stop else StopRequest() as stop:  # a caller's stays installed
            result = train_loop(
                model, optimizer, data.train_x, data.train_y, evaluator, record.on_eval, state=state,
                steps=cfg.train.steps, batch_size=cfg.train.batch_size, eval_every=cfg.train.eval_every,
                max_loss=cfg.train.max_loss, seed=cfg.seed, progress=cfg.train.progress, stop=stop,
                checkpoint_every=cfg.train.checkpoint_every,
                on_checkpoint=lambda s: record.checkpoint(model, optimizer, s))
    except Exception as e:
        record.failed(e)
        raise
    return record.finished(result, stop.signum)
