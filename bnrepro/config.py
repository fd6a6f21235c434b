"""Typed schema of every run's config, registered in Hydra's ConfigStore.

The YAML files in conf/ fill these dataclasses in; Hydra rejects unknown keys and
wrong types at compose time, and `validate` checks what types cannot express
(ranges, choices) before any data is loaded or any file is written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

ACTIVATIONS = ("sigmoid", "relu", "tanh")
BN_MODES = ("none", "before", "after")
BN_IMPLS = ("bnrepro", "torch")
INITS = ("gaussian", "torch")
WANDB_MODES = ("offline", "online", "disabled")
# Settings that do not change what a run computes (a group name covers all its keys): a run may
# continue under other values of these, and reports never split a configuration by them
COMPUTE_NEUTRAL = ("device", "data.root", "train.progress", "train.num_threads", "train.checkpoint_every",
                   "train.resume", "wandb")


@dataclass
class DataConfig:
    root: str = MISSING
    binarize: bool = True  # the paper feeds binary images (Sec. 4.1)
    threshold: float = 0.5  # on pixel/255


@dataclass
class ModelConfig:
    hidden: list[int] = field(default_factory=lambda: [100, 100, 100])
    activation: str = "sigmoid"
    bn: str = "none"  # none | before (the paper: Linear -> BN -> act) | after (Linear -> act -> BN)
    bn_impl: str = "bnrepro"  # ours, or torch's layer as the reference
    init: str = "gaussian"  # N(0, init_std) weights, zero biases; or torch's default init
    init_std: float = 0.05
    bn_eps: float = 1e-5
    bn_momentum: float | None = 0.1  # torch convention; None = cumulative average


@dataclass
class OptimConfig:
    lr: float = 0.1
    momentum: float = 0.0


@dataclass
class TrainConfig:
    steps: int = 50_000
    batch_size: int = 60
    eval_every: int = 500
    max_loss: float = 1e3  # a training loss above this (or NaN/inf) ends the run as diverged
    # torch threads. Matrix products split over threads round differently, so 1 gives the same bits
    # whatever the launcher or core count; None: the launcher's share of the cores, else torch's default
    num_threads: int | None = 1
    progress: bool = True
    checkpoint_every: int = 5000  # steps between checkpoints; 0: only on Ctrl-C/SIGTERM
    resume: bool = True  # a run folder holding a checkpoint continues from it; a finished run is skipped


@dataclass
class TrackingConfig:
    unit: int = 0  # which unit of each hidden layer stands for the paper's "typical" one
    percentiles: list[float] = field(default_factory=lambda: [15.0, 50.0, 85.0])
    histograms: bool = False  # full histograms of the tracked inputs to W&B as well
    histogram_bins: int = 64


@dataclass
class WandbConfig:
    mode: str = "offline"
    project: str = "bnrepro"
    entity: str | None = None
    group: str | None = None  # None: the sweep folder's name in a multirun, else no group
    job_type: str | None = None  # None: the experiment name
    tags: list[str] = field(default_factory=list)
    offline_fallback: bool = True  # online mode, W&B server unreachable: go offline, or stop before training
    connect_timeout_s: float = 3.0  # how long the reachability probe of online mode waits


@dataclass
class Config:
    name: str = "default"  # experiment name; the W&B job type and the report's title
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)


def register_configs() -> None:
    ConfigStore.instance().store(name="schema", node=Config)


class ConfigError(ValueError):
    """A config value outside what is allowed; its message is one line for the user."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        super().__init__(f"invalid config: {key}={value!r} (allowed: {allowed})")


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(key, value, allowed)


def _is_device(spec: str) -> bool:
    kind, _, index = spec.partition(":")
    return spec in ("auto", "cpu", "cuda") or (kind == "cuda" and index.isdigit())


def _unknown_keys(cfg: DictConfig, schema: DictConfig, prefix: str = "") -> list[str]:
    """Keys a `+key=value` override appended: the schema rejects all other unknown keys itself."""
    unknown = []
    for key in cfg:
        if key == "hydra":
            continue
        if key not in schema.keys():  # noqa: SIM118 - `in` is False for a MISSING value
            unknown.append(prefix + str(key))
        elif isinstance(cfg[key], DictConfig) and isinstance(schema[key], DictConfig):
            unknown += _unknown_keys(cfg[key], schema[key], f"{prefix}{key}.")
    return unknown


def validate(cfg: Any) -> None:
    """Raise ConfigError for the first value types cannot rule out, before any work starts."""
    if unknown := _unknown_keys(cfg, OmegaConf.structured(Config)):
        raise ConfigError(unknown[0], OmegaConf.select(cfg, unknown[0]), "only the keys of the schema in "
                          "bnrepro/config.py (see `bnrepro-train --cfg job`)")
    m, t, o, tr = cfg.model, cfg.train, cfg.optim, cfg.tracking
    _check(_is_device(cfg.device), "device", cfg.device, "auto, cpu, cuda or cuda:N")
    _check(0.0 <= cfg.data.threshold < 1.0, "data.threshold", cfg.data.threshold, "0 <= threshold < 1")
    _check(len(m.hidden) > 0 and all(h > 0 for h in m.hidden), "model.hidden", list(m.hidden),
           "a non-empty list of positive integers")
    _check(m.activation in ACTIVATIONS, "model.activation", m.activation, ", ".join(ACTIVATIONS))
    _check(m.bn in BN_MODES, "model.bn", m.bn, ", ".join(BN_MODES))
    _check(m.bn_impl in BN_IMPLS, "model.bn_impl", m.bn_impl, ", ".join(BN_IMPLS))
    _check(m.init in INITS, "model.init", m.init, ", ".join(INITS))
    _check(m.init_std > 0, "model.init_std", m.init_std, "a positive number")
    _check(m.bn_eps > 0, "model.bn_eps", m.bn_eps, "a positive number")
    _check(m.bn_momentum is None or 0.0 <= m.bn_momentum <= 1.0, "model.bn_momentum", m.bn_momentum,
           "null (cumulative average) or 0 <= momentum <= 1")
    _check(o.lr > 0 and math.isfinite(o.lr), "optim.lr", o.lr, "a positive finite number")
    _check(o.momentum >= 0, "optim.momentum", o.momentum, "momentum >= 0")
    _check(t.steps > 0, "train.steps", t.steps, "a positive integer")
    _check(t.eval_every > 0, "train.eval_every", t.eval_every, "a positive integer")
    _check(t.batch_size > (1 if m.bn != "none" else 0), "train.batch_size", t.batch_size,
           "an integer >= 2 with batch norm (its statistics need 2 samples), >= 1 without")
    _check(t.max_loss > 0, "train.max_loss", t.max_loss, "a positive number")
    _check(t.checkpoint_every >= 0, "train.checkpoint_every", t.checkpoint_every,
           "0 (only on Ctrl-C/SIGTERM) or a positive integer")
    _check(cfg.wandb.connect_timeout_s > 0, "wandb.connect_timeout_s", cfg.wandb.connect_timeout_s,
           "a positive number of seconds")
    _check(t.num_threads is None or t.num_threads > 0, "train.num_threads", t.num_threads,
           "null or a positive integer")
    _check(0 <= tr.unit < min(m.hidden), "tracking.unit", tr.unit,
           f"0 <= unit < {min(m.hidden)} (the narrowest hidden layer)")
    _check(len(tr.percentiles) > 0 and all(0 <= p <= 100 for p in tr.percentiles), "tracking.percentiles",
           list(tr.percentiles), "a non-empty list of numbers in 0..100")
    _check(tr.histogram_bins > 0, "tracking.histogram_bins", tr.histogram_bins, "a positive integer")
    _check(cfg.wandb.mode in WANDB_MODES, "wandb.mode", cfg.wandb.mode, ", ".join(WANDB_MODES))
