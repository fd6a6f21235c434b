"""`bnrepro-train`: one training run (or, with -m, a sweep of them) from the Hydra configs in conf/.

The config is validated first, with only Hydra, the config schema and the chosen parts' modules (and so torch)
loaded: a config mistake is reported before any data set loads, any run folder is written or wandb (seconds to
import) loads.

Every anticipated failure ends the command with one line on stderr and its own exit code (bnrepro/errors.py,
README: "Reliability: guarantees and exit codes"); an unexpected one keeps its traceback.
"""

from __future__ import annotations

import os
import signal
import stat
import sys
import tempfile
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from bnrepro.config import ConfigError, register_configs, validate
from bnrepro.errors import EXIT_REFUSED, describe
from bnrepro.interrupt import Interrupted, signals_raise
from bnrepro.launch.lifeline import follow_launcher, mark_launcher

if TYPE_CHECKING:
    from bnrepro.run.job import Job

register_configs()
# the configs ship inside the package: the same in a checkout, an editable install and a wheel. Users add their
# own experiments and parts with --config-dir DIR or hydra.searchpath=[file://DIR] (README: adding a model)
CONF_PATH = "pkg://bnrepro.conf"


# a signal that came before the training loop could take it (start-up), or a second one
STOPPED = "interrupted by {}: the same command continues the run from its last checkpoint (or starts it, if none)"


def fail(exit_code: int, line: str) -> NoReturn:
    print(f"bnrepro-train: {line}", file=sys.stderr)
    raise SystemExit(exit_code)


@contextmanager
def one_line_failures() -> Iterator[None]:
    """Anticipated failures end the command here: one line on stderr, their exit code. Used inside the job, so that
    Hydra adds no line of its own ("Error executing job ..."); anything else propagates with its traceback."""
    try:
        yield
    except ConfigError as e:
        fail(EXIT_REFUSED, str(e))
    except Exception as e:
        if (failure := describe(e)) is None:
            raise
        fail(*failure)


def prepare(cfg: DictConfig) -> Job:
    """The job HydraConfig describes, checked before anything runs, its run folder locked: a config mistake or a
    folder that refuses the command exits 2 with one line, and writes nothing."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    lock = None
    try:
        with one_line_failures():
            task_cfg, cfg = cfg, validate(cfg)
            from bnrepro.run.checkpoint import prior_run, record_hydra_files
            from bnrepro.run.job import Job, check_resumable, default_threads, resolve_device, wandb_group
            from bnrepro.run.lock import FolderLock
            from bnrepro.run.wandb_run import resolve_mode

            if str(hydra_cfg.launcher.get("_target_", "")).endswith("submitit_launcher.LocalLauncher"):
                follow_launcher()  # submitit_local's job controllers outlive the launcher; its jobs do not
            device = resolve_device(cfg.device)
            lock = FolderLock.acquire(run_dir)
            prior = prior_run(run_dir, cfg)
            job = Job(cfg=cfg, run_dir=run_dir, device=device, wandb_mode="disabled",
                      wandb_group=wandb_group(cfg, hydra_cfg),
                      threads=cfg.train.num_threads or default_threads(hydra_cfg), prior=prior,
                      progress=hydra_cfg.mode != RunMode.MULTIRUN, lock=lock)
            if job.finished:
                return job  # skipped: nothing is written, nothing needs W&B
            if lock.write_error is not None:
                raise lock.write_error
            check_resumable(job)
            job.wandb_mode = resolve_mode(cfg.wandb.mode, cfg.wandb.offline_fallback, cfg.wandb.connect_timeout_s)
            lock.record_holder()
            record_hydra_files(run_dir, task_cfg, fresh=prior is None)
            return job
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def continue_hint(run_dir: Path) -> str:
    """How to continue an interrupted run: its folder, or in a sweep the sweep's folder."""
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return f"the same command with hydra.sweep.dir={HydraConfig.get().sweep.dir} continues the sweep"
    return f"the same command with hydra.run.dir={run_dir} continues it"


def report(job: Job, summary: dict[str, Any] | None) -> float | None:
    """The job's one-line outcome (summary None: skipped, the folder's run had finished); an interrupted run
    raises Interrupted, which ends the command with exit code 128 + the signal's number, as the signal would."""
    if summary is None:
        print(f"skipped: {job.run_dir} already holds this run, {job.prior['status']}")
        return job.prior["final_test_acc"]
    if summary["status"] == "interrupted":
        signum = signal.Signals[summary["signal"]].value
        raise Interrupted(signum, f"interrupted by {summary['signal']} at step {summary['steps_done']}; "
                                  f"{continue_hint(job.run_dir)}")
    print(f"{summary['status']}: final test accuracy {summary['final_test_acc']}, "
          f"best {summary['best_test_acc']} at step {summary['best_step']} ({job.run_dir})")
    return summary["final_test_acc"]


@hydra.main(version_base="1.3", config_path=CONF_PATH, config_name="config")
def main(cfg: DictConfig) -> float | None:
    job = prepare(cfg)
    try:
        with one_line_failures():
            if job.finished:
                return report(job, None)
            from bnrepro.run.job import train

            return report(job, train([job])[0])
    finally:
        job.release()


def one_line(error: BaseException) -> str:
    """Hydra's multi-line config error (and its cause) as one line, without the object dumps."""
    parts = [str(error)] + ([str(error.__cause__)] if error.__cause__ else [])
    lines = [line.strip() for part in parts for line in part.splitlines()]
    drop = ("full_key:", "reference_type=", "object_type=", "To append to your config")
    return " ".join(dict.fromkeys(x for x in lines if x and not x.startswith(drop)))


def redirect_unwritable_caches() -> None:
    """W&B and torch's C++ extension builder keep caches under ~/.cache. Where that cannot be written (a read-only
    home), W&B prints its own errors on every run and the C++ kernels cannot be built, so that BN would run on torch
    ops, with other last bits; those caches go to a private folder under the system's temporary folder instead."""
    try:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path("~/.cache").expanduser())
    except RuntimeError:  # no home at all: W&B and torch fail on their own terms, as they would without bnrepro
        return
    existing = next(p for p in (cache, *cache.parents) if p.exists())
    if os.access(existing, os.W_OK):
        return
    folder = Path(tempfile.gettempdir()) / f"bnrepro-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        mine = folder.lstat()
        if not stat.S_ISDIR(mine.st_mode) or mine.st_uid != os.getuid() or mine.st_mode & 0o077:
            raise PermissionError  # another user's folder: C++ kernels loaded from there could be anybody's code
    except OSError:
        folder = Path(tempfile.mkdtemp(prefix="bnrepro-"))
    variables = {"WANDB_CACHE_DIR": "wandb-cache", "WANDB_CONFIG_DIR": "wandb-config", "WANDB_DATA_DIR": "wandb-data",
                 "TORCH_EXTENSIONS_DIR": "torch_extensions"}
    moved = [name for name in variables if not os.environ.get(name)]
    for name in moved:
        os.environ[name] = str(folder / variables[name])
    if moved:
        print(f"bnrepro-train: {cache} is not writable: W&B's and torch's caches go to {folder} instead "
              f"({', '.join(moved)})", file=sys.stderr)


def cli() -> None:
    """`bnrepro-train`: every anticipated failure is one line on stderr and its exit code (bnrepro/errors.py), a
    signal 128 + its number, not a traceback."""
    # Hydra then raises its errors instead of printing them over several lines itself
    os.environ["HYDRA_FULL_ERROR"] = "1"
    mark_launcher()
    try:
        with signals_raise():  # the training loop installs its own (checkpoint first) while it runs
            redirect_unwritable_caches()
            main()
    except Interrupted as e:
        print(f"bnrepro-train: {e.message or STOPPED.format(e.name)}", file=sys.stderr)
        sys.exit(e.exit_code)
    except ConfigError as e:  # a sweep job's, checked before any job runs (hydra_plugins/bnrepro_sweeper)
        print(f"bnrepro-train: {e}", file=sys.stderr)
        sys.exit(EXIT_REFUSED)
    except (HydraException, OmegaConfBaseException) as e:
        print(f"bnrepro-train: invalid config: {one_line(e)}", file=sys.stderr)
        sys.exit(EXIT_REFUSED)
    except Exception as e:
        if isinstance(e, ValueError) and _hydra_usage_error(e):
            print(f"bnrepro-train: invalid command line: {e}", file=sys.stderr)
            sys.exit(EXIT_REFUSED)
        if (failure := describe(e)) is None:
            raise
        print(f"bnrepro-train: {failure[1]}", file=sys.stderr)
        sys.exit(failure[0])


def _hydra_usage_error(error: ValueError) -> bool:
    """Hydra refuses some flag combinations (e.g. -m with --cfg) with a plain ValueError from
    _run_hydra itself; a ValueError from inside a job would name a deeper frame last."""
    *_, (frame, _) = traceback.walk_tb(error.__traceback__)
    return frame.f_code.co_name == "_run_hydra" and "hydra" in Path(frame.f_code.co_filename).parts


if __name__ == "__main__":
    cli()
