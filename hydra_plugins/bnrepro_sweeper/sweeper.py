"""Hydra's basic sweeper, with every job of a sweep composed and checked once before any job trains
(conf/hydra/sweeper/basic.yaml selects it, so that it is every multirun's sweeper).

Hydra's BasicSweeper composes each job's config before launching (validate_batch_is_legal), which catches only a
config that cannot be composed; the launcher then composes each job again to run it. Here the check is also
bnrepro's own (bnrepro.config.validate: every value, part and range), so a bad value in a sweep's fifth job ends
the command with one line and exit 2 before its first job trains, not after four jobs have. And the configs
composed for the check are handed to the launcher, which does not compose them a second time.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict, read_write


class ComposedOnce:
    """A config loader that hands out the configs composed for the check: the next request for the same job's
    overrides gets that config itself (it is the launcher's, to change as it runs the job); every other call goes
    to the loader it wraps."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader
        self._composed: dict[tuple[str, ...], DictConfig] = {}

    def compose_for_check(self, master_config: DictConfig, overrides: Sequence[str]) -> DictConfig:
        cfg = self._loader.load_sweep_config(master_config=master_config, sweep_overrides=list(overrides))
        self._composed[tuple(overrides)] = cfg
        return cfg

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        cfg = self._composed.pop(tuple(sweep_overrides), None)
        if cfg is None:
            cfg = self._loader.load_sweep_config(master_config=master_config, sweep_overrides=sweep_overrides)
        return cfg

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # not yet set (unpickling in a launcher's worker): no recursion through _loader
            raise AttributeError(name)
        return getattr(self._loader, name)


class CheckedSweeper(BasicSweeper):
    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        loader = ComposedOnce(hydra_context.config_loader)
        super().setup(hydra_context=HydraContext(config_loader=loader, callbacks=hydra_context.callbacks),
                      task_function=task_function, config=config)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        from bnrepro.config import validate
        from bnrepro.parts import ConfigError

        assert self.hydra_context is not None and self.config is not None
        loader = self.hydra_context.config_loader
        assert isinstance(loader, ComposedOnce)
        for overrides in batch:
            # the config the job's task function will get (hydra.core.utils.run_job): without the hydra node
            task = copy.deepcopy(loader.compose_for_check(self.config, overrides))
            with read_write(task), open_dict(task):
                del task["hydra"]
            try:
                validate(task)
            except ConfigError as e:
                raise ConfigError(e.key, e.value, f"{e.allowed}; in the sweep's job {' '.join(overrides)}") from None
