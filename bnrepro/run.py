"""One training run: data, model, loop, checkpoints, run folder and W&B run, from a validated config."""

from __future__ import annotations

import os
import secrets
import signal
import time
from pathlib import Path
from typing import Any

import torch
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from bnrepro.checkpoint import CHECKPOINT_FILE, FINISHED, config_hash, load_checkpoint, save_checkpoint
from bnrepro.config import ConfigError
from bnrepro.data import load_mnist
from bnrepro.evaluation import Evaluator
from bnrepro.interrupt import StopRequest
from bnrepro.loop import LoopResult, train_loop
from bnrepro.models import MLP
from bnrepro.runlog import git_commit, package_versions, peak_memory_mib, write_metrics, write_summary
from bnrepro.wandb_run import WandbRun


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
    if "joblib" in target:
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


def run(cfg: DictConfig, run_dir: Path, device: torch.device, hydra_cfg: DictConfig, wandb_mode: str,
        prior: dict[str, Any] | None) -> dict[str, Any]:
    """Train one model, or go on from the folder's checkpoint; all it measured lands in run_dir and W&B."""
    started = time.perf_counter()
    threads = cfg.train.num_threads or default_threads(hydra_cfg)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    summary: dict[str, Any] = {"status": "running", "steps_done": 0, "device": str(device),
                               "torch_threads": torch.get_num_threads(), "config_hash": config_hash(cfg),
                               "wandb_id": (prior or {}).get("wandb_id") or secrets.token_hex(4),
                               "versions": package_versions(), "git_commit": git_commit()}
    write_summary(run_dir, summary)
    wb = WandbRun(mode=wandb_mode, project=cfg.wandb.project, entity=cfg.wandb.entity,
                  group=wandb_group(cfg, hydra_cfg), job_type=cfg.wandb.job_type or cfg.name,
                  tags=list(cfg.wandb.tags), name=f"{cfg.name}/{run_dir.name}",
                  config=OmegaConf.to_container(cfg, resolve=True), run_dir=run_dir,
                  run_id=summary["wandb_id"], resume=prior is not None,
                  histogram_bins=cfg.tracking.histogram_bins if cfg.tracking.histograms else None)
    rows: list[dict[str, float]] = []

    def on_eval(step: int, row: dict[str, float], units: dict[str, torch.Tensor]) -> None:
        rows.append(row)
        write_metrics(run_dir, rows)
        wb.log(step, row, units)

    try:
        data = load_mnist(cfg.data.root, device=device, binarize=cfg.data.binarize,
                          threshold=cfg.data.threshold)
        model = MLP(**cfg.model).to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum)
        state = None
        if (run_dir / CHECKPOINT_FILE).exists():
            state, rows[:] = load_checkpoint(run_dir, model, optimizer)
            summary["resumed_from_step"] = state.step
            write_metrics(run_dir, rows)  # a killed run may have written rows past its last checkpoint
        evaluator = Evaluator(data.test_x, data.test_y, cfg.tracking.unit, list(cfg.tracking.percentiles))
        with StopRequest() as stop:
            result: LoopResult = train_loop(
                model, optimizer, data.train_x, data.train_y, evaluator, on_eval, state=state,
                steps=cfg.train.steps, batch_size=cfg.train.batch_size, eval_every=cfg.train.eval_every,
                max_loss=cfg.train.max_loss, seed=cfg.seed, progress=cfg.train.progress, stop=stop,
                checkpoint_every=cfg.train.checkpoint_every,
                on_checkpoint=lambda s: save_checkpoint(run_dir, model, optimizer, s, rows))
    except Exception as e:
        summary.update(status="failed", error=f"{type(e).__name__}: {e}",
                       wall_time_s=time.perf_counter() - started, **_accuracy_summary(rows, final=False))
        write_summary(run_dir, summary)
        wb.finish(summary, exit_code=1)
        raise
    summary.update(
        status=result.status, steps_done=result.steps_done, diverged_step=result.diverged_step,
        wall_time_s=time.perf_counter() - started, train_time_s=result.train_time_s,
        eval_time_s=result.eval_time_s,
        steps_per_s=result.steps_done / result.train_time_s if result.train_time_s > 0 else None,
        peak_memory_mib=peak_memory_mib(),
        **_accuracy_summary(rows, final=result.status == "completed"),
    )
    if stop.signum is not None:
        summary["signal"] = signal.Signals(stop.signum).name
    write_summary(run_dir, summary)
    wb.finish(summary, exit_code=0 if result.status != "interrupted" else 128 + stop.signum)
    if result.status in FINISHED:
        (run_dir / CHECKPOINT_FILE).unlink(missing_ok=True)  # the run folder has all it measured
    return summary


def _accuracy_summary(rows: list[dict[str, float]], final: bool) -> dict[str, Any]:
    """Final and best test accuracy; only a completed run has a final one, the others their best so far."""
    if not rows:
        return {"final_test_acc": None, "best_test_acc": None, "best_step": None}
    best = max(rows, key=lambda r: r["test_acc"])
    return {"final_test_acc": rows[-1]["test_acc"] if final else None,
            "best_test_acc": best["test_acc"], "best_step": best["step"]}
