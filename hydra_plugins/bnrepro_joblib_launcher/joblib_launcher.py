"""hydra-joblib-launcher's launcher with bnrepro's handling of signals and worker lifetimes
(bnrepro/launch/joblib_sweep.py): `hydra/launcher=joblib` selects it through conf/hydra/launcher/joblib.yaml."""

from __future__ import annotations

from collections.abc import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher


class BnreproJoblibLauncher(JoblibLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from bnrepro.launch.joblib_sweep import launch

        return launch(self, job_overrides, initial_job_idx)
