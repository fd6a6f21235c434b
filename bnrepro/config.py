"""Typed schema of every run's config, registered in Hydra's ConfigStore.

The YAML files in conf/ fill these dataclasses in; Hydra rejects unknown keys and wrong types at compose time.
The parts (`model`, `data`, each of `probes`) are chosen by config group and carry their own schemas (see
bnrepro/parts.py). `validate` checks what types cannot express (ranges, choices, a part against the others)
before any data is loaded or any file is written, and returns the config with every part's defaults filled in.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from bnrepro.parts import ConfigError, build_part, check, check_choice, load_part

__all__ = ["COMPUTE_NEUTRAL", "Config", "ConfigError", "OptimConfig", "register_configs", "validate"]

WANDB_MODES = ("offline", "online", "disabled")
# Settings that do not change what a run computes (a group name covers all its keys): a run may continue under
# other values of these, a stack may mix them, sweep job folders are not named after them, and reports never
# split a configuration by them. The one list of them.
COMPUTE_NEUTRAL = ("device", "data.root", "train.progress", "train.num_threads", "train.checkpoint_every",
                   "train.resume", "wandb")


@dataclass
class OptimConfig:
    lr: float = 5.0  # conf/optim/sgd.yaml's: the network without BN's best rate (reports/selection)
    momentum: float = 0.0
    weight_decay: float = 0.0  # L2 as torch's SGD adds it: gradient + weight_decay * parameter (every parameter)
    nesterov: bool = False  # Nesterov momentum (needs momentum > 0)
    # the rate of the update at step t (1-based): constant: lr; exponential: lr * gamma ** floor((t - 1) / every);
    # step: lr * gamma ** (the number of milestones below t). See bnrepro.training.optim.lr_schedule
    schedule: str = "constant"
    gamma: float = 0.96  # the decay factor of exponential and step
    every: int = 8000  # exponential: updates between two decays
    milestones: list[int] = field(default_factory=list)  # step: the update counts after which the rate drops
    # the rate at another batch size: lr * scale(train.batch_size / base_batch_size), scale = 1 (constant), the ratio
    # (linear; Goyal et al. 2017) or its square root (sqrt; Hoffer et al. 2017). See training.optim.effective_lr
    lr_scaling: str = "constant"
    base_batch_size: int = 60


@dataclass
class TrainConfig:
    steps: int = 50_000
    batch_size: int = 60
    eval_every: int = 500
    # in epochs (N // batch_size steps each, N the training set's size), which then decide steps and eval_every:
    # a study across batch sizes gives every run the same number of passes over the data
    epochs: float | None = None
    eval_every_epochs: float | None = None
    max_loss: float = 1e3  # a training loss above this (or NaN/inf) ends the run as diverged
    # torch threads. Matrix products split over threads round differently, so 1 gives the same bits
    # whatever the launcher or core count; None: the launcher's share of the cores, else torch's default
    num_threads: int | None = 1
    progress: bool = True  # a progress bar for a single run (a sweep shows one line for all its jobs instead)
    checkpoint_every: int = 5000  # steps between checkpoints; 0: only on Ctrl-C/SIGTERM
    # true: a run folder holding this config's unfinished run continues it, a finished one is skipped; false: any
    # run there refuses the command; "force": also continue a checkpoint made on another BN code path (C++ kernel
    # or torch ops, see bnrepro.run.job.bn_path), whose last bits differ. A bool or a string: typed Any
    resume: Any = True
    # batch order (bnrepro/training/batches.py): epoch (a new permutation each epoch) | fixed (one permutation, the
    # same batches every epoch) | shards (fixed shards of shard_size samples, their order reshuffled each epoch)
    shuffle: str = "epoch"
    shard_size: int = 600
    # iid (batches as `shuffle` draws them) | class_clustered: each batch holds samples of at most batch_classes
    # classes, batch_size / batch_classes of each (non-i.i.d. batches; reshuffled every epoch)
    batching: str = "iid"
    batch_classes: int = 2


@dataclass
class TrackingConfig:
    unit: int = 0  # which unit (or channel) of each tracked layer stands for the paper's "typical" one
    percentiles: list[float] = field(default_factory=lambda: [15.0, 50.0, 85.0])
    histograms: bool = False  # full histograms of the tracked inputs to W&B as well
    histogram_bins: int = 64
    # the first N test samples at every evaluation; None: the whole test set (every reported number). Fewer give a
    # quicker, noisier look (a smoke run, a test of the pipeline)
    test_samples: int | None = None
    # BN's inference statistics at every evaluation (bnrepro/training/bn_inference.py; the run trains alone):
    precise_bn_batches: int = 0  # > 0: the test set with precise statistics over this many fixed training batches
    batch_stats_eval: bool = False  # the test set in batches normalised by their own statistics
    gap_samples: int = 0  # > 0: a fixed training subset in inference vs training mode, the train/eval gap


@dataclass
class WandbConfig:
    mode: str = "offline"
    project: str = "bnrepro"
    entity: str | None = None
    group: str | None = None  # None: the sweep folder's name in a multirun, else no group
    job_type: str | None = None  # None: the experiment name
    tags: list[str] = field(default_factory=list)
    offline_fallback: bool = True  # online mode, W&B server unreachable: go offline, or stop before training
    # online mode: the W&B server must answer a probe within this, and wandb.init must start the run within it
    connect_timeout_s: float = 10.0


@dataclass
class Config:
    name: str = "default"  # experiment name; the W&B job type and the report's title
    # the configuration's name within the experiment (recipe/: "BN-x5"): a W&B tag and the report's row name
    variant: str = ""
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    data: Any = MISSING  # a part: conf/data/<name>.yaml
    model: Any = MISSING  # a part: conf/model/<name>.yaml
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    probes: dict[str, Any] = field(default_factory=dict)  # parts: conf/probes/<name>.yaml, by name


@functools.cache
def _schema() -> DictConfig:
    """Config as an OmegaConf schema, read-only: built once per process, though every composition (the job
    folder's name) and every validation reads it."""
    schema = OmegaConf.structured(Config)
    OmegaConf.set_readonly(schema, True)
    return schema


def neutral_leaf_keys() -> list[str]:
    """COMPUTE_NEUTRAL with each group spelled out as its keys: what Hydra's override_dirname excludes."""
    schema = _schema()
    keys = []
    for key in COMPUTE_NEUTRAL:
        node = OmegaConf.select(schema, key, throw_on_missing=False)
        keys += [f"{key}.{k}" for k in node] if isinstance(node, DictConfig) else [key]
    return keys


# conf/hydra/launcher/joblib.yaml and conf/hydra/sweeper/basic.yaml extend the plugins' schemas of the same names on
# purpose (bnrepro's subclasses); Hydra warns of that (deprecated) matching at every composition
EXTENDED_PLUGIN_SCHEMAS = ("hydra/launcher/joblib", "hydra/sweeper/basic")


def register_configs() -> None:
    ConfigStore.instance().store(name="schema", node=Config)
    for name in EXTENDED_PLUGIN_SCHEMAS:
        warnings.filterwarnings("ignore", message=rf"\s*'{name}' is validated against ConfigStore schema")
    if not OmegaConf.has_resolver("bnrepro.neutral_keys"):
        # conf/config.yaml names sweep job folders without these keys: the same list, never a copy
        OmegaConf.register_new_resolver("bnrepro.neutral_keys", lambda *more: [*more, *neutral_leaf_keys()])


def _is_device(spec: str) -> bool:
    kind, _, index = spec.partition(":")
    return spec in ("auto", "cpu", "cuda") or (kind == "cuda" and index.isdigit())


def _unknown_keys(cfg: DictConfig, schema: DictConfig, prefix: str = "") -> list[str]:
    """Keys a `+key=value` override appended outside the parts: the schema rejects all other unknown keys itself
    (a part's own keys are checked against its schema by load_part)."""
    unknown = []
    for key in cfg:
        if key == "hydra" or (not prefix and key in ("model", "data", "probes")):
            continue
        if key not in schema.keys():  # noqa: SIM118 - `in` is False for a MISSING value
            unknown.append(prefix + str(key))
        elif isinstance(cfg[key], DictConfig) and isinstance(schema[key], DictConfig):
            unknown += _unknown_keys(cfg[key], schema[key], f"{prefix}{key}.")
    return unknown


def validate(cfg: Any) -> DictConfig:
    """Raise ConfigError for the first value types cannot rule out, before any work starts; return the config
    with every part filled into its schema (defaults for keys its YAML leaves out), `hydra` left out."""
    from bnrepro.data.base import Dataset
    from bnrepro.models.base import Model
    from bnrepro.probes.base import Probe
    from bnrepro.training.batches import BATCHINGS, SHUFFLES
    from bnrepro.training.optim import LR_SCALINGS, SCHEDULES

    if unknown := _unknown_keys(cfg, _schema()):
        raise ConfigError(unknown[0], OmegaConf.select(cfg, unknown[0]), "only the keys of the schema in "
                          "bnrepro/config.py (see `bnrepro-train --cfg job`)")
    model_cls, model = load_part(cfg.model, "model", Model)
    _, data = load_part(cfg.data, "data", Dataset)
    dataset = build_part(data, "data")  # its sizes and shapes, which its Config may decide; nothing loads
    probes = {name: load_part(node, f"probes.{name}", Probe)[1] for name, node in cfg.probes.items()}
    t, o, tr = cfg.train, cfg.optim, cfg.tracking
    check(_is_device(cfg.device), "device", cfg.device, "auto, cpu, cuda or cuda:N")
    check(o.lr > 0 and math.isfinite(o.lr), "optim.lr", o.lr, "a positive finite number")
    check(0 <= o.momentum < 1, "optim.momentum", o.momentum, "0 <= momentum < 1")
    check(o.weight_decay >= 0 and math.isfinite(o.weight_decay), "optim.weight_decay", o.weight_decay,
          "a finite number >= 0")
    check(not o.nesterov or o.momentum > 0, "optim.nesterov", o.nesterov, "false, or true with optim.momentum > 0")
    check_choice(o.schedule, "optim.schedule", SCHEDULES)
    check(0 < o.gamma <= 1, "optim.gamma", o.gamma, "0 < gamma <= 1")
    check(o.every > 0, "optim.every", o.every, "a positive number of updates")
    milestones = list(o.milestones)
    check(all(0 < a < b for a, b in zip(milestones, milestones[1:] + [math.inf])) and
          (milestones or o.schedule != "step"), "optim.milestones", milestones,
          "strictly increasing positive update counts" + (", at least one for optim.schedule=step"
                                                          if o.schedule == "step" else ""))
    check_choice(o.lr_scaling, "optim.lr_scaling", LR_SCALINGS)
    check(o.base_batch_size > 0, "optim.base_batch_size", o.base_batch_size, "a positive integer")
    for key in ("epochs", "eval_every_epochs"):
        value = t[key]
        check(value is None or (value > 0 and math.isfinite(value)), f"train.{key}", value,
              "null or a positive number of epochs")
    if 0 < t.batch_size <= dataset.train_size:  # else the batch size check below says what is wrong
        steps_per_epoch = dataset.train_size // t.batch_size
        if t.epochs is not None:
            t.steps = max(1, round(t.epochs * steps_per_epoch))
        if t.eval_every_epochs is not None:
            t.eval_every = max(1, round(t.eval_every_epochs * steps_per_epoch))
    check(t.steps > 0, "train.steps", t.steps, "a positive integer")
    check(t.eval_every > 0, "train.eval_every", t.eval_every, "a positive integer")
    settings = OmegaConf.to_object(model)
    least = settings.min_batch_size() if hasattr(settings, "min_batch_size") else 1
    check(least <= t.batch_size <= dataset.train_size, "train.batch_size", t.batch_size,
          f"an integer from {least} to the {dataset.name} training set's {dataset.train_size}"
          + (" (batch norm's statistics need 2 samples)" if least > 1 else ""))
    if hasattr(settings, "check_input_shape"):  # what a model needs of the samples (a conv net: images to pool)
        settings.check_input_shape(dataset.input_shape, dataset.name)
    if hasattr(settings, "check_batch_size"):  # a model's own constraints on the batch (ghost batches)
        try:
            settings.check_batch_size(t.batch_size)
        except ConfigError as e:
            raise e.under("model") from None
    check(t.max_loss > 0, "train.max_loss", t.max_loss, "a positive number")
    check_choice(t.shuffle, "train.shuffle", SHUFFLES)
    check(0 < t.shard_size <= dataset.train_size, "train.shard_size", t.shard_size,
          f"an integer from 1 to the {dataset.name} training set's {dataset.train_size}")
    check_choice(t.batching, "train.batching", BATCHINGS)
    if t.batching == "class_clustered":
        check(not dataset.regression, "train.batching", t.batching, f"iid: {dataset.name} is a regression data set, "
              "its samples have no classes to cluster by")
        check(t.shuffle == "epoch", "train.shuffle", t.shuffle, "epoch with train.batching=class_clustered (which "
              "reshuffles every epoch itself)")
        check(0 < t.batch_classes <= dataset.num_classes and t.batch_size % t.batch_classes == 0,
              "train.batch_classes", t.batch_classes, f"a divisor of train.batch_size ({t.batch_size}) from 1 to "
              f"{dataset.name}'s {dataset.num_classes} classes")
    if data.get("augment", False):
        shape = dataset.input_shape
        check(len(shape) == 3 and data.shift < min(shape[1:]), "data.shift", data.shift,
              f"fewer pixels than the {dataset.name} images' height and width" if len(shape) == 3
              else f"none: {dataset.name}'s samples {shape} are not images (C, H, W), so data.augment must be false")
    check(isinstance(t.resume, bool) or t.resume == "force", "train.resume", t.resume, "true, false or force")
    check(t.checkpoint_every >= 0, "train.checkpoint_every", t.checkpoint_every,
          "0 (only on Ctrl-C/SIGTERM) or a positive integer")
    check(cfg.wandb.connect_timeout_s > 0, "wandb.connect_timeout_s", cfg.wandb.connect_timeout_s,
          "a positive number of seconds")
    check(t.num_threads is None or t.num_threads > 0, "train.num_threads", t.num_threads,
          "null or a positive integer")
    widths = settings.tap_widths() if hasattr(settings, "tap_widths") else []
    if widths:
        check(0 <= tr.unit < min(widths), "tracking.unit", tr.unit,
              f"0 <= unit < {min(widths)} (the narrowest tracked layer of {model_cls.__name__})")
    check(len(tr.percentiles) > 0 and all(0 <= p <= 100 for p in tr.percentiles), "tracking.percentiles",
          list(tr.percentiles), "a non-empty list of numbers in 0..100")
    check(tr.histogram_bins > 0, "tracking.histogram_bins", tr.histogram_bins, "a positive integer")
    check(0 <= tr.precise_bn_batches * t.batch_size <= dataset.train_size, "tracking.precise_bn_batches",
          tr.precise_bn_batches, f"0, or batches of train.batch_size ({t.batch_size}) that fit in {dataset.name}'s "
          f"{dataset.train_size} training samples")
    check(0 <= tr.gap_samples <= dataset.train_size and (tr.gap_samples == 0 or tr.gap_samples >= t.batch_size),
          "tracking.gap_samples", tr.gap_samples, f"0, or from train.batch_size ({t.batch_size}) to "
          f"{dataset.name}'s {dataset.train_size} training samples")
    for key in ("precise_bn_batches", "batch_stats_eval", "gap_samples") if dataset.regression else ():
        check(not tr[key], f"tracking.{key}", tr[key], f"off: it measures accuracies, which {dataset.name} (a "
              "regression data set) has not")
    if tr.precise_bn_batches or tr.batch_stats_eval or tr.gap_samples:  # they rewrite or bypass BN's variance
        measurable = getattr(settings, "measures_bn_statistics", lambda: True)()
        check(measurable, "model.norm", getattr(settings, "norm", None), "bn or brn with "
              "tracking.precise_bn_batches, batch_stats_eval or gap_samples (they measure BN's mean and variance, "
              "which the lp layers do not keep)")
    least_test = t.batch_size if tr.batch_stats_eval else 1  # batch-statistics evaluation needs one whole batch
    check(tr.test_samples is None or least_test <= tr.test_samples <= dataset.test_size, "tracking.test_samples",
          tr.test_samples, f"null (all), or from {least_test} to {dataset.name}'s {dataset.test_size} test samples"
          + (" (tracking.batch_stats_eval needs one batch of train.batch_size)" if tr.batch_stats_eval else ""))
    check_choice(cfg.wandb.mode, "wandb.mode", WANDB_MODES)
    body = {k: v for k, v in cfg.items() if k not in ("hydra", "model", "data", "probes")}
    return OmegaConf.merge(OmegaConf.create(body), {"model": model, "data": data, "probes": probes})
