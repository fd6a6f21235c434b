"""Checkpoints, and what a run folder already holds when a command runs into it again.

A checkpoint has all a run needs to go on bit-for-bit on the same device: model (BN running statistics
included), optimizer, the loop's state, every RNG state and the metrics so far, and what it was computed with: the
config's digest and the BN code path. It is written atomically and read with torch.load(weights_only=True), so a
checkpoint file cannot run code.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from bnrepro.atomic import atomic_write, atomic_write_text
from bnrepro.config import COMPUTE_NEUTRAL
from bnrepro.errors import CorruptFile, FolderRefused
from bnrepro.run.runlog import read_summary
from bnrepro.training.loop import LoopState
from bnrepro.training.optim import SGD

CHECKPOINT_FILE = "checkpoint.pt"
HYDRA_DIR = ".hydra"
# The first start's Hydra files; .hydra/ holds the latest start's (a resume may change compute-neutral keys)
FIRST_HYDRA_DIR = ".hydra-first"
FINISHED = ("completed", "diverged")
_PAYLOAD_KEYS = {"model", "optimizer", "loop", "rows", "rng"}


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


def save_checkpoint(run_dir: Path, model: torch.nn.Module, optimizer: SGD, state: LoopState,
                    rows: list[dict[str, float]], digest: str, bn_path: str) -> None:
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "loop": dataclasses.asdict(state),
        "rows": rows,
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        "config_hash": digest,
        "bn_path": bn_path,
    }
    # serialized in memory first: torch.save into a file that hits a full disk fails with "unexpected pos ...",
    # a plain write() with ENOSPC and the file's name
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write(run_dir / CHECKPOINT_FILE, lambda f: f.write(buffer.getbuffer()))


def read_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """The folder's checkpoint, None without one; CorruptFile (one line: what to do) when it cannot be read."""
    path = run_dir / CHECKPOINT_FILE
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM, errno.EIO):  # the file may be whole: it cannot be read
            raise
        broken = e  # torch's zip reader on a cut-off file
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:
        broken = e
    else:
        if isinstance(payload, dict) and payload.keys() >= _PAYLOAD_KEYS:
            return payload
        broken = None
    reason = (str(broken).strip().splitlines() or [type(broken).__name__])[0] if broken else "not a checkpoint"
    raise CorruptFile(f"checkpoint {path} is truncated or corrupt ({reason}): delete it, and this command starts the "
                      f"run over") from broken


def load_checkpoint(payload: dict[str, Any], model: torch.nn.Module,
                    optimizer: SGD) -> tuple[LoopState, list[dict[str, float]]]:
    """Restore model, optimizer and RNGs in place from read_checkpoint's payload; return the loop's state and the
    metrics rows so far."""
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    torch.set_rng_state(payload["rng"]["torch"])
    if payload["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["rng"]["cuda"])
    return LoopState(**payload["loop"]), payload["rows"]


def prior_run(run_dir: Path, cfg: DictConfig) -> dict[str, Any] | None:
    """What this folder already holds, when this config may continue or skip it: its summary, with `checkpoint`
    (the checkpoint's config digest, BN path and step, or None) added.

    None for a folder that holds no run. A folder holding another config's run (by its summary's digest or by its
    checkpoint's, whichever it has) is refused, as is any run when train.resume is false: nothing already written
    is lost, and the refused command writes nothing.
    """
    summary = read_summary(run_dir)
    payload = read_checkpoint(run_dir)
    if summary is None and payload is None:
        return None
    checkpoint = None if payload is None else {"config_hash": payload.get("config_hash"),
                                               "bn_path": payload.get("bn_path"), "step": payload["loop"]["step"]}
    digest = config_hash(cfg)
    other = [name for name, held in (("summary.json", summary), (CHECKPOINT_FILE, checkpoint))
             if held and held.get("config_hash") not in (None, digest)]
    if cfg.train.resume is False or other:
        why = "train.resume=false" if cfg.train.resume is False else f"it holds a run of another config ({other[0]})"
        raise FolderRefused(f"invalid config: run folder={str(run_dir)!r} (allowed: a folder holding no run, or this "
                            f"config's own run to continue ({why}); choose another hydra.run.dir / hydra.sweep.dir)")
    # a checkpoint without a summary (deleted, or cut off before it was written) continues as an unfinished run
    return {"status": None, **(summary or {}), "checkpoint": checkpoint}


def record_hydra_files(run_dir: Path, task_cfg: DictConfig, fresh: bool) -> None:
    """Write this start's Hydra files into run_dir/.hydra (and, on a run's first start, .hydra-first): the config,
    Hydra's own config and the overrides. Hydra's own writing of them is off (conf/config.yaml: output_subdir),
    so that a command refused by its folder changes nothing there."""
    hydra_cfg = HydraConfig.instance().cfg
    files = {"config.yaml": task_cfg, "hydra.yaml": hydra_cfg, "overrides.yaml": hydra_cfg.hydra.overrides.task}
    folder = run_dir / HYDRA_DIR
    folder.mkdir(exist_ok=True)
    for name, node in files.items():
        atomic_write_text(folder / name, OmegaConf.to_yaml(node))
    if fresh:
        shutil.rmtree(run_dir / FIRST_HYDRA_DIR, ignore_errors=True)
        shutil.copytree(folder, run_dir / FIRST_HYDRA_DIR)
