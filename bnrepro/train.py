"""`bnrepro-train`: one training run (or, with -m, a sweep of them) from the Hydra configs in conf/.

Only Hydra and the config schema load before the config is validated: torch and wandb take
seconds to import, and a config mistake is reported before paying for them.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from bnrepro.config import ConfigError, register_configs, validate

if TYPE_CHECKING:
    from bnrepro.run.job import Job

register_configs()
# the configs ship inside the package: the same in a checkout, an editable install and a wheel. Users add their
# own experiments and parts with --config-dir DIR or hydra.searchpath=[file://DIR] (README: adding a model)
CONF_PATH = "pkg://bnrepro.conf"


def prepare(cfg: DictConfig) -> Job:
    """The job HydraConfig describes, checked before anything runs: a config mistake exits 2 with one line."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        cfg = validate(cfg)
        from bnrepro.run.checkpoint import prior_run
        from bnrepro.run.job import Job, default_threads, resolve_device, wandb_group
        from bnrepro.run.wandb_run import resolve_mode

        device = resolve_device(cfg.device)
        prior = prior_run(run_dir, cfg)
        wandb_mode = resolve_mode(cfg.wandb.mode, cfg.wandb.offline_fallback, cfg.wandb.connect_timeout_s)
    except ConfigError as e:
        # one line and a non-zero exit; no traceback for a config mistake
        print(f"bnrepro-train: {e}", file=sys.stderr)
        sys.exit(2)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    return Job(cfg=cfg, run_dir=run_dir, device=device, wandb_mode=wandb_mode,
               wandb_group=wandb_group(cfg, hydra_cfg), threads=cfg.train.num_threads or default_threads(hydra_cfg),
               prior=prior, progress=not multirun)


def report(job: Job, summary: dict[str, Any] | None) -> float | None:
    """The job's one-line outcome (summary None: skipped, the folder's run had finished); an interrupted run
    exits 128 + the signal's number, as a process killed by it would."""
    if summary is None:
        print(f"skipped: {job.run_dir} already holds this run, {job.prior['status']}")
        return job.prior["final_test_acc"]
    if summary["status"] == "interrupted":
        print(f"interrupted by {summary['signal']} at step {summary['steps_done']}; the same command with "
              f"hydra.run.dir={job.run_dir} (or, in a sweep, hydra.sweep.dir=) continues it", file=sys.stderr)
        sys.exit(128 + signal.Signals[summary["signal"]].value)
    print(f"{summary['status']}: final test accuracy {summary['final_test_acc']}, "
          f"best {summary['best_test_acc']} at step {summary['best_step']} ({job.run_dir})")
    return summary["final_test_acc"]


@hydra.main(version_base="1.3", config_path=CONF_PATH, config_name="config")
def main(cfg: DictConfig) -> float | None:
    job = prepare(cfg)
    if job.finished:
        return report(job, None)
    from bnrepro.run.job import train

    return report(job, train([job])[0])


def one_line(error: BaseException) -> str:
    """Hydra's multi-line config error (and its cause) as one line, without the object dumps."""
    parts = [str(error)] + ([str(error.__cause__)] if error.__cause__ else [])
    lines = [line.strip() for part in parts for line in part.splitlines()]
    drop = ("full_key:", "reference_type=", "object_type=", "To append to your config")
    return " ".join(dict.fromkeys(x for x in lines if x and not x.startswith(drop)))


def cli() -> None:
    """`bnrepro-train`: a config mistake is one line on stderr and exit code 2, not a traceback."""
    # Hydra then raises its errors instead of printing them over several lines itself
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except (HydraException, OmegaConfBaseException) as e:
        print(f"bnrepro-train: invalid config: {one_line(e)}", file=sys.stderr)
        sys.exit(2)
    except ValueError as e:
        if not _hydra_usage_error(e):
            raise
        print(f"bnrepro-train: invalid command line: {e}", file=sys.stderr)
        sys.exit(2)


def _hydra_usage_error(error: ValueError) -> bool:
    """Hydra refuses some flag combinations (e.g. -m with --cfg) with a plain ValueError from
    _run_hydra itself; a ValueError from inside a job would name a deeper frame last."""
    *_, (frame, _) = traceback.walk_tb(error.__traceback__)
    return frame.f_code.co_name == "_run_hydra" and "hydra" in Path(frame.f_code.co_filename).parts


if __name__ == "__main__":
    cli()
