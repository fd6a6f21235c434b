"""One run's record: its folder (summary.json from the first moment, metrics.csv, checkpoints) and its W&B run.

A run trained alone and a run trained as one of K stacked models write the same record through this
class, so reports, resume and `wandb sync` cannot tell them apart.
"""

from __future__ import annotations

import logging
import math
import secrets
import signal
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from bnrepro.errors import EXIT_BUG, EXIT_SIGNAL, describe
from bnrepro.interrupt import Interrupted
from bnrepro.run.checkpoint import (
    CHECKPOINT_FILE,
    FINISHED,
    config_hash,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from bnrepro.run.runlog import git_commit, package_versions, peak_memory_mib, write_metrics, write_summary
from bnrepro.run.wandb_run import WandbRun
from bnrepro.training.loop import LoopResult, LoopState
from bnrepro.training.optim import SGD

log = logging.getLogger(__name__)


class RunRecord:
    def __init__(self, cfg: DictConfig, run_dir: Path, device: torch.device, wandb_mode: str,
                 wandb_group: str | None, prior: dict[str, Any] | None, bn_path: str, **extra: Any) -> None:
        """Write the run's first summary (status running) and open its W&B run; `extra` goes into the summary.

        bn_path: the BN code this run's steps go through (bnrepro.run.job.bn_path), which decides their last bits.
        """
        self.run_dir = run_dir
        self.started = time.perf_counter()
        self.rows: list[dict[str, float]] = []
        self.digest, self.bn_path = config_hash(cfg), bn_path
        self.checkpoint_step: int | None = None  # the step of the checkpoint in the folder, once known
        self.closed = False  # the final summary is written: whatever comes after does not change the outcome
        self.summary: dict[str, Any] = {
            "status": "running", "steps_done": 0, "device": str(device), "torch_threads": torch.get_num_threads(),
            "bn_path": bn_path, "config_hash": self.digest,
            "wandb_id": (prior or {}).get("wandb_id") or secrets.token_hex(4),
            "versions": package_versions(), "git_commit": git_commit(), **extra}
        before = ((prior or {}).get("checkpoint") or {}).get("bn_path")
        if before is not None and before != bn_path:  # train.resume=force: the record says the bits may differ
            self.summary["resumed_bn_path"] = before
        write_summary(run_dir, self.summary)
        self.wb: WandbRun | None = None
        try:
            self.wb = WandbRun(
                mode=wandb_mode, project=cfg.wandb.project, entity=cfg.wandb.entity, group=wandb_group,
                job_type=cfg.wandb.job_type or cfg.name,
                tags=[*cfg.wandb.tags, *([cfg.variant] if cfg.variant else [])], name=f"{cfg.name}/{run_dir.name}",
                config=OmegaConf.to_container(cfg, resolve=True), run_dir=run_dir, run_id=self.summary["wandb_id"],
                resume=prior is not None, offline_fallback=cfg.wandb.offline_fallback,
                init_timeout_s=cfg.wandb.connect_timeout_s,
                histogram_bins=cfg.tracking.histogram_bins if cfg.tracking.histograms else None)
        except BaseException as e:
            self.ended(e)
            raise

    def on_row(self, step: int, row: dict[str, float | None], taps: dict[str, torch.Tensor]) -> None:
        """One row of metrics.csv (an evaluation point, a probe step or both) to the folder and to W&B."""
        self.rows.append(row)
        write_metrics(self.run_dir, self.rows)
        self.wb.log(step, row, taps)

    def resume(self, model: torch.nn.Module, optimizer: SGD) -> LoopState | None:
        """Load the folder's checkpoint into model and optimizer, if it has one; the loop's state to go on from."""
        payload = read_checkpoint(self.run_dir)
        if payload is None:
            return None
        state, self.rows[:] = load_checkpoint(payload, model, optimizer)
        self.checkpoint_step = self.summary["steps_done"] = state.step
        self.summary["resumed_from_step"] = state.step
        write_metrics(self.run_dir, self.rows)  # a killed run may have written rows past its last checkpoint
        return state

    def checkpoint(self, model: torch.nn.Module, optimizer: SGD, state: LoopState) -> None:
        save_checkpoint(self.run_dir, model, optimizer, state, self.rows, self.digest, self.bn_path)
        self.checkpoint_step = state.step

    def ended(self, error: BaseException) -> None:
        """Record how an exception ended the run: `interrupted` for a signal's, else `failed`."""
        if self.closed:
            return
        if isinstance(error, (Interrupted, KeyboardInterrupt)):
            self.interrupted(error.signum if isinstance(error, Interrupted) else signal.SIGINT)
        else:
            self.failed(error)

    def failed(self, error: BaseException) -> None:
        """Mark the run failed, with the error and its exit code, as far as the disk still allows (a full disk
        may refuse even the summary: the error itself is what the user needs then, not this one)."""
        failure = describe(error)
        # an anticipated failure's one line says what to do; a bug's exception says what went wrong
        self.summary.update(status="failed", error=failure[1] if failure else f"{type(error).__name__}: {error}",
                            exit_code=failure[0] if failure else EXIT_BUG,
                            wall_time_s=time.perf_counter() - self.started, **self._accuracy(final=False))
        self._write_summary_if_possible()
        self.closed = True
        if self.wb is not None:
            self.wb.finish(self.summary, exit_code=1)

    def interrupted(self, signum: int) -> None:
        """Mark the run interrupted by a signal that did not wait for the loop (during start-up, or a second one):
        it continues from the checkpoint in the folder, if any, so that is the step done."""
        self.summary.update(status="interrupted", signal=signal.Signals(signum).name,
                            steps_done=self._step_on_disk(), wall_time_s=time.perf_counter() - self.started,
                            **self._accuracy(final=False))
        self._write_summary_if_possible()
        self.closed = True
        if self.wb is not None:
            self.wb.finish(self.summary, exit_code=EXIT_SIGNAL + signum)

    def _step_on_disk(self) -> int:
        """The step of the checkpoint in the folder, read from it: a signal may land after a checkpoint has
        replaced the last one but before `checkpoint_step` says so. The last step this process knows of where the
        file cannot be read (a resume refuses such a file anyway)."""
        try:
            payload = read_checkpoint(self.run_dir)
        except Exception:  # noqa: BLE001 - recording an interruption must not fail over the checkpoint
            return self.checkpoint_step or 0
        return int(payload["loop"]["step"]) if payload is not None else 0

    def _write_summary_if_possible(self) -> None:
        try:
            write_summary(self.run_dir, self.summary)
        except OSError as e:
            log.warning("could not record the run's end in %s: %s", self.run_dir, e)

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
        self.closed = True
        if result.status in FINISHED:
            (self.run_dir / CHECKPOINT_FILE).unlink(missing_ok=True)  # the run folder has all it measured
        self.wb.finish(self.summary, exit_code=0 if result.status != "interrupted" else EXIT_SIGNAL + signum)
        return self.summary

    def _accuracy(self, final: bool) -> dict[str, Any]:
        """Final and best test accuracy; only a completed run has a final one, the others their best so far."""
        # probe-only rows have none; a regression data set's is NaN (no accuracy), so its runs have none either
        evaluated = [r for r in self.rows if r.get("test_acc") is not None and not math.isnan(r["test_acc"])]
        if not evaluated:
            return {"final_test_acc": None, "best_test_acc": None, "best_step": None}
        best = max(evaluated, key=lambda r: r["test_acc"])
        return {"final_test_acc": evaluated[-1]["test_acc"] if final else None,
                "best_test_acc": best["test_acc"], "best_step": best["step"]}
