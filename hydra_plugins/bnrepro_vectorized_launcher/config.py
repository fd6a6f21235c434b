"""`hydra/launcher=vectorized`: train a sweep's compatible jobs as stacked models (bnrepro.vectorized)."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class VectorizedLauncherConf:
    _target_: str = "hydra_plugins.bnrepro_vectorized_launcher.vectorized_launcher.VectorizedLauncher"
    # processes training groups side by side; -1: one per CPU core
    n_jobs: int = -1
    # the most models stacked in one process (memory, and the last bit of speed, favour a cap)
    max_models: int = 64


ConfigStore.instance().store(group="hydra/launcher", name="vectorized", node=VectorizedLauncherConf,
                             provider="bnrepro")
