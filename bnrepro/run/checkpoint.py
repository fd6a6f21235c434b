"""Checkpoints, and what a run folder already holds when a command runs into it again.

A checkpoint has all a run needs to go on bit-for-bit on the same device: model (BN running statistics
included), optimizer, the loop's state, every RNG state and the metrics so far. It is written atomically
and read with torch.load(weights_only=True), so a checkpoint file cannot run code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from bnrepro.atomic import atomic_write
from bnrepro.config import COMPUTE_NEUTRAL
from bnrepro.parts import ConfigError
from bnrepro.run.runlog import read_summary
from bnrepro.training.loop import LoopState

CHECKPOINT_FILE = "checkpoint.pt"
# The first start's Hydra files: Hydra rewrites .hydra/ on every start, before any check can refuse one
FIRST_HYDRA_DIR = ".hydra-first"
FINISHED = ("completed", "diverged")


def config_hash(cfg: DictConfig) -> str:
    """A digest of everything that decides a run's numbers."""
    values = OmegaConf.to_container(cfg, resolve=True)
    for key in COMPUTE_NEUTRAL:
        *parents, leaf = key.split(".")
        node = values
        for parent in parents:
            node = node[parent]
        node.pop(leaf, None)
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def save_checkpoint(run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: LoopState,
                    rows: list[dict[str, float]]) -> None:
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "loop": dataclasses.asdict(state),
        "rows": rows,
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
    }
    atomic_write(run_dir / CHECKPOINT_FILE, lambda f: torch.save(payload, f))


def load_checkpoint(run_dir: Path, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer) -> tuple[LoopState, list[dict[str, float]]]:
    """Restore model, optimizer and RNGs in place; return the loop's state and the metrics rows so far."""
    payload = torch.load(run_dir / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    torch.set_rng_state(payload["rng"]["torch"])
    if payload["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["rng"]["cuda"])
    return LoopState(**payload["loop"]), payload["rows"]


def prior_run(run_dir: Path, cfg: DictConfig) -> dict[str, Any] | None:
    """The summary of the run this folder already holds, when this config may continue or skip it.

    None for a folder that holds no run. A folder holding another config's run is refused (its files
    stay as they were), as is any run when train.resume is false: nothing already written is lost.
    A run writes its summary, with the config's digest, before anything else, checkpoints included.
    """
    summary = read_summary(run_dir)
    if summary is None:
        first = run_dir / FIRST_HYDRA_DIR
        shutil.rmtree(first, ignore_errors=True)
        shutil.copytree(run_dir / ".hydra", first)
        return None
    if not cfg.train.resume or summary.get("config_hash") != config_hash(cfg):
        _restore_first_hydra_files(run_dir)
        why = ("train.resume=false" if cfg.train.resume is False
               else "it holds a run of another config")
        raise ConfigError("run folder", str(run_dir), f"a folder holding no run, or this config's own run to "
                          f"continue ({why}); choose another hydra.run.dir / hydra.sweep.dir")
    return summary


def _restore_first_hydra_files(run_dir: Path) -> None:
    first = run_dir / FIRST_HYDRA_DIR
    if first.is_dir():
        shutil.copytree(first, run_dir / ".hydra", dirs_exist_ok=True)
