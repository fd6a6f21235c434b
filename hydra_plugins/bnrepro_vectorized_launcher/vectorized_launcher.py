"""A Hydra launcher that prepares every job of a sweep (config checks, run folder) before any training, then
hands the jobs to bnrepro.vectorized, which trains compatible ones as stacked models."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)


class VectorizedLauncher(Launcher):
    def __init__(self, n_jobs: int = -1, max_models: int = 64) -> None:
        self.n_jobs, self.max_models = n_jobs, max_models
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        # the task function (bnrepro.train.main) trains one job; this launcher trains groups of them itself
        self.config, self.hydra_context = config, hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from bnrepro.errors import EXIT_BUG, RunFailure
        from bnrepro.launch.vectorized import train_jobs
        from bnrepro.train import prepare, report

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(f"Vectorized launcher: {len(job_overrides)} jobs, sweep output dir: {sweep_dir}")
        returns = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
                sweep_config.hydra.job.num = idx
            HydraConfig.instance().set_config(sweep_config)
            # every job's config and folder are checked (a mistake exits 2) before any job trains
            returns.append(run_job(hydra_context=self.hydra_context, task_function=prepare, config=sweep_config,
                                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir"))
        jobs = [ret.return_value for ret in returns]  # re-raises a failed preparation
        try:
            outcomes = train_jobs(jobs, n_jobs=self.n_jobs, max_models=self.max_models)
        finally:
            for job in jobs:
                job.release()
        for ret, job, summary in zip(returns, jobs, outcomes):
            # as the basic launcher records a job: its final accuracy, or its error (an interrupt exits here)
            if summary is not None and summary["status"] not in ("completed", "diverged", "interrupted"):
                error = summary.get("error", "its worker process ended before the run did")
                if summary.get("exit_code", EXIT_BUG) != EXIT_BUG:  # an anticipated failure: its one line and code
                    failed = sum(s is not None and s["status"] == "failed" for s in outcomes)
                    raise RunFailure(f"{job.run_dir}: {error} ({failed} job(s) failed; each summary.json says why)",
                                     exit_code=summary["exit_code"])
                ret.return_value, ret.status = RuntimeError(f"{job.run_dir}: {error}"), JobStatus.FAILED
            else:
                ret.return_value = report(job, summary)
        return returns
