"""Parts chosen by config: a model, a data set or a probe is a class named by its config's `_target_`.

Each part class carries its own typed schema, a dataclass called `Config` (its fields are the keys of
`conf/<group>/<name>.yaml`), whose optional `check()` raises ConfigError for values outside what is allowed.
`load_part` imports the class, fills the config into that schema (an unknown key or a wrong type is an error
naming the key) and runs the checks: all before any data loads. Parts from outside this package work the
same way: a YAML file with a `_target_` that Python can import, added with `--config-dir` or
`hydra.searchpath`.

This module imports nothing heavy, and nothing from the rest of bnrepro, so every layer can use it.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A config value outside what is allowed; its message is one line for the user."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"invalid config: {key}={value!r} (allowed: {allowed})")

    def under(self, prefix: str) -> ConfigError:
        """The same error with its key as seen from the run's config (a part names only its own keys)."""
        return ConfigError(f"{prefix}.{self.key}", self.value, self.allowed)


def check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(key, value, allowed)


def check_choice(value: Any, key: str, choices: tuple[str, ...]) -> None:
    check(value in choices, key, value, ", ".join(choices))


def part_class(target: str, key: str) -> type:
    """The class a `_target_` names; a one-line ConfigError when it cannot be imported."""
    module, _, name = str(target).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name) if module else None
    except ImportError as e:
        raise ConfigError(f"{key}._target_", target, f"an importable class ({type(e).__name__}: {e})") from e
    except AttributeError:
        cls = None
    if not isinstance(cls, type):
        raise ConfigError(f"{key}._target_", target, "the dotted path of an importable class, "
                          "e.g. bnrepro.models.mlp.MLP")
    return cls


def load_part(node: DictConfig, key: str, base: type | None = None) -> tuple[type, DictConfig]:
    """(the part's class, its config filled into the class's schema, `_target_` included), checked.

    key: where the node sits in the run's config (`model`, `data`, `probes.grad_norms`), for messages.
    base: the contract the class must keep (bnrepro.models.Model, ...), or None.
    """
    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise ConfigError(key, OmegaConf.to_container(node) if isinstance(node, DictConfig) else node,
                          "a config group option with a _target_ (see conf/" + key.split(".")[0] + "/)")
    cls = part_class(node._target_, key)
    if base is not None and not issubclass(cls, base):
        raise ConfigError(f"{key}._target_", node._target_, f"a subclass of {base.__module__}.{base.__name__}")
    schema = getattr(cls, "Config", None)
    if schema is None or not dataclasses.is_dataclass(schema):
        raise ConfigError(f"{key}._target_", node._target_, "a part class with a dataclass `Config` (its schema)")
    filled = OmegaConf.structured(schema)
    with_target = OmegaConf.create({"_target_": str(node._target_)})
    body = {k: v for k, v in node.items() if k != "_target_"}
    try:
        merged = OmegaConf.merge(filled, OmegaConf.create(body))
    except OmegaConfBaseException as e:
        bad = f"{key}.{e.full_key}" if getattr(e, "full_key", None) else key
        fields = ", ".join(f.name for f in dataclasses.fields(schema))
        value = OmegaConf.select(node, str(e.full_key)) if getattr(e, "full_key", None) else None
        raise ConfigError(bad, value, f"the keys of {cls.__module__}.{cls.__name__}.Config ({fields}), "
                          f"with their types: {str(e).splitlines()[0]}") from e
    settings = OmegaConf.to_object(merged)
    check_fn = getattr(settings, "check", None)
    if check_fn is not None:
        try:
            check_fn()
        except ConfigError as e:
            raise e.under(key) from None
    return cls, OmegaConf.merge(with_target, merged)


def build_part(node: DictConfig, key: str, **extra: Any) -> Any:
    """An instance of the part a validated config node names: its class called with the node's keys (and
    `extra`, e.g. a model's input shape)."""
    settings = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k != "_target_"}
    return part_class(node._target_, key)(**settings, **extra)
