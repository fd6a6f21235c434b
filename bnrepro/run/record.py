"""One run's record: its folder (summary.json from the first moment, metrics.csv, checkpoints) and its W&B run.

A run trained alone and a run trained as one of K stacked models write the same record through this
class, so reports, resume and `wandb sync` cannot tell them apart.
"""

from __future__ import annotations

import secrets
import signal
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from bnrepro.run.checkpoint import CHECKPOINT_FILE, FINISHED, config_hash, load_checkpoint, save_checkpoint
from bnrepro.run.runlog import git_commit, package_versions, peak_memory_mib, write_metrics, write_summary
from bnrepro.run.wandb_run import WandbRun
from bnrepro.training.loop import LoopResult, LoopState


class RunRecord:
    def __init__(self, cfg: DictConfig, run_dir: Path, device: torch.device, wandb_mode: str,
                 wandb_group: str | None, prior: dict[str, Any] | None, **extra: Any) -> None:
        """Write the run's first summary (status running) and open its W&B run; `extra` goes into the summary."""
        self.run_dir = run_dir
        self.started = time.perf_counter()
        self.rows: list[dict[str, float]] = []
        self.summary: dict[str, Any] = {
            "status": "running", "steps_done": 0, "device": str(device), "torch_threads": torch.get_num_threads(),
            "config_hash": config_hash(cfg), "wandb_id": (prior or {}).get("wandb_id") or secrets.token_hex(4),
            "versions": package_versions(), "git_commit": git_commit(), **extra}
        write_summary(run_dir, self.summary)
        self.wb = WandbRun(mode=wandb_mode, project=cfg.wandb.project, entity=cfg.wandb.entity, group=wandb_group,
                           job_type=cfg.wandb.job_type or cfg.name, tags=list(cfg.wandb.tags),
                           name=f"{cfg.name}/{run_dir.name}", config=OmegaConf.to_container(cfg, resolve=True),
                           run_dir=run_dir, run_id=self.summary["wandb_id"], resume=prior is not None,
                           histogram_bins=cfg.tracking.histogram_bins if cfg.tracking.histograms else None)

    def on_row(self, step: int, row: dict[str, float | None], taps: dict[str, torch.Tensor]) -> None:
        """One row of metrics.csv (an evaluation point, a probe step or both) to the folder and to W&B."""
        self.rows.append(row)
        write_metrics(self.run_dir, self.rows)
        self.wb.log(step, row, taps)

    def resume(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> LoopState | None:
        """Load the folder's checkpoint into model and optimizer, if it has one; the loop's state to go on from."""
        if not (self.run_dir / CHECKPOINT_FILE).exists():
            return None
        state, self.rows[:] = load_checkpoint(self.run_dir, model, optimizer)
        self.summary["resumed_from_step"] = state.step
        write_metrics(self.run_dir, self.rows)  # a killed run may have written rows past its last checkpoint
        return state

    def checkpoint(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: LoopState) -> None:
        save_checkpoint(self.run_dir, model, optimizer, state, self.rows)

    def failed(self, error: BaseException) -> None:
        self.summary.update(status="failed", error=f"{type(error).__name__}: {error}",
                            wall_time_s=time.perf_counter() - self.started, **self._accuracy(final=False))
        write_summary(self.run_dir, self.summary)
        self.wb.finish(self.summary, exit_code=1)

    def finished(self, result: LoopResult, signum: int | None) -> dict[str, Any]:
        """The final summary, written and sent to W&B; a finished run's checkpoint is deleted."""
        self.summary.update(
            status=result.status, steps_done=result.steps_done, diverged_step=result.diverged_step,
            wall_time_s=time.perf_counter() - self.started, train_time_s=result.train_time_s,
            eval_time_s=result.eval_time_s,
            steps_per_s=result.steps_done / result.train_time_s if result.train_time_s > 0 else None,
            peak_memory_mib=peak_memory_mib(), **self._accuracy(final=result.status == "completed"))
        if signum is not None:
            self.summary["signal"] = signal.Signals(signum).name
        write_summary(self.run_dir, self.summary)
        self.wb.finish(self.summary, exit_code=0 if result.status != "interrupted" else 128 + signum)
        if result.status in FINISHED:
            (self.run_dir / CHECKPOINT_FILE).unlink(missing_ok=True)  # the run folder has all it measured
        return self.summary

    def _accuracy(self, final: bool) -> dict[str, Any]:
        """Final and best test accuracy; only a completed run has a final one, the others their best so far."""
        evaluated = [r for r in self.rows if r.get("test_acc") is not None]  # probe-only rows have none
        if not evaluated:
            return {"final_test_acc": None, "best_test_acc": None, "best_step": None}
        best = max(evaluated, key=lambda r: r["test_acc"])
        return {"final_test_acc": evaluated[-1]["test_acc"] if final else None,
                "best_test_acc": best["test_acc"], "best_step": best["step"]}
