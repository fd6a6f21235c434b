"""One W&B run per job. The run folder is the record; W&B is a mirror that may fail."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import wandb
from torch import Tensor

log = logging.getLogger(__name__)


class WandbRun:
    def __init__(self, *, mode: str, project: str, entity: str | None, group: str | None,
                 job_type: str | None, tags: list[str], name: str, config: dict[str, Any],
                 run_dir: Path, histogram_bins: int | None = None) -> None:
        self.histogram_bins = histogram_bins
        self._failed = False
        # mode is always explicit: an online init without network would wait ~90 s
        self.run = wandb.init(
            mode=mode, project=project, entity=entity, group=group, job_type=job_type, tags=tags,
            name=name, config=config, dir=str(run_dir), reinit="finish_previous",
            # the training loop owns this CPU: no stdout capture, no system-stats sampler
            settings=wandb.Settings(console="off", x_disable_stats=True, x_disable_machine_info=True,
                                    silent=True),
        )

    def _guard(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> None:
        """W&B trouble is reported once and never stops training."""
        if self._failed:
            return
        try:
            fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any W&B error must not cost the run
            self._failed = True
            log.warning("W&B %s failed, continuing without W&B (the run folder is complete): %s", what, e)

    def log(self, step: int, row: dict[str, float], units: dict[str, Tensor]) -> None:
        data: dict[str, Any] = {k: v for k, v in row.items() if k != "step"}
        if self.histogram_bins:
            for name, values in units.items():
                counts, edges = np.histogram(values.cpu().numpy(), bins=self.histogram_bins)
                data[f"hist/{name}"] = wandb.Histogram(np_histogram=(counts, edges))
        self._guard("log", self.run.log, data, step=step)

    def finish(self, summary: dict[str, Any], exit_code: int) -> None:
        self._guard("summary", self.run.summary.update, summary)
        self._guard("finish", self.run.finish, exit_code=exit_code)
