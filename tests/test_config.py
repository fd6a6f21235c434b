"""The configs through Hydra's compose API: defaults, schema checks, experiments, validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from bnrepro.config import ConfigError, register_configs, validate

CONF = str(Path(__file__).resolve().parent.parent / "conf")
EXPERIMENTS = sorted(p.stem for p in Path(CONF, "experiment").glob("*.yaml"))


def _compose(*overrides: str, multirun: bool = False):
    register_configs()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=multirun)


def test_default_config_is_the_papers_setup() -> None:
    cfg = _compose()
    validate(cfg)
    assert list(cfg.model.hidden) == [100, 100, 100]
    assert cfg.model.activation == "sigmoid" and cfg.model.bn == "none"
    assert cfg.train.steps == 50_000 and cfg.train.batch_size == 60
    assert cfg.data.binarize is True
    assert cfg.wandb.mode == "offline"


def test_schema_rejects_unknown_keys_and_wrong_types() -> None:
    with pytest.raises(ConfigCompositionException, match="nope"):
        _compose("model.nope=1")
    with pytest.raises((ConfigCompositionException, ValidationError)):
        _compose("train.steps=many")


@pytest.mark.parametrize("override, key", [
    ("optim.lr=0", "optim.lr"),
    ("optim.lr=-1", "optim.lr"),
    ("train.steps=0", "train.steps"),
    ("train.eval_every=-5", "train.eval_every"),
    ("model.activation=softplus", "model.activation"),
    ("model.bn=middle", "model.bn"),
    ("model.hidden=[100,0]", "model.hidden"),
    ("wandb.mode=sometimes", "wandb.mode"),
    ("device=tpu", "device"),
    ("tracking.percentiles=[15,150]", "tracking.percentiles"),
    ("tracking.test_samples=0", "tracking.test_samples"),
    ("tracking.test_samples=10001", "tracking.test_samples"),
    ("train.checkpoint_every=-1", "train.checkpoint_every"),
    ("train.resume=maybe", "train.resume"),
])
def test_validate_names_the_key_and_the_value(override: str, key: str) -> None:
    cfg = _compose(override)
    value = override.split("=", 1)[1]
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    message = str(err.value)
    assert key in message and "allowed" in message and "\n" not in message
    assert value.strip("[]").split(",")[0] in message


def test_batch_of_one_is_refused_only_with_bn() -> None:
    validate(_compose("train.batch_size=1"))
    with pytest.raises(ConfigError, match="train.batch_size"):
        validate(_compose("train.batch_size=1", "model.bn=before"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_sweeps_seeds(name: str) -> None:
    cfg = _compose(f"experiment={name}", multirun=True)
    validate(cfg)
    assert cfg.name == name
    params = cfg.hydra.sweeper.params
    assert "seed" in params
    if name not in ("smoke", "sec42_tuning"):  # a smoke test, and a sweep that only picks a rate for the others
        assert len(str(params.seed).split(",")) >= 3


def test_experiment_settings_stay_overridable() -> None:
    cfg = _compose("experiment=fig1", "train.steps=123", "train.eval_every=7")
    assert cfg.train.steps == 123 and cfg.train.eval_every == 7 and cfg.name == "fig1"


def test_appended_keys_are_refused() -> None:
    for override, key in (("+foo=1", "foo"), ("+model.depth=4", "model.depth")):
        with pytest.raises(ConfigError, match=key):
            validate(_compose(override))
