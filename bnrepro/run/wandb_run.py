"""One W&B run per job. The run folder is the record; W&B is a mirror that may fail."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import wandb
from torch import Tensor

from bnrepro.parts import ConfigError

log = logging.getLogger(__name__)
DEFAULT_SERVER = "https://api.wandb.ai"


def server_address() -> tuple[str, int]:
    url = urlsplit(os.environ.get("WANDB_BASE_URL") or DEFAULT_SERVER)
    return url.hostname or "", url.port or (80 if url.scheme == "http" else 443)


def resolve_mode(mode: str, offline_fallback: bool, timeout_s: float) -> str:
    """The mode to hand to wandb.init: online only when its server answers within timeout_s.

    An online wandb.init without network waits about 90 s before it fails; a TCP connect to the
    server tells the same in seconds, before any training starts.
    """
    if mode != "online":
        return mode
    host, port = server_address()
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
        return mode
    except OSError as e:
        if not offline_fallback:
            raise ConfigError("wandb.mode", mode, f"offline or disabled, or wandb.offline_fallback=true: the W&B "
                              f"server {host}:{port} is unreachable ({e})") from e
        log.warning("W&B server %s:%s unreachable (%s): logging offline instead; `wandb sync` uploads later",
                    host, port, e)
        return "offline"


class WandbRun:
    def __init__(self, *, mode: str, project: str, entity: str | None, group: str | None,
                 job_type: str | None, tags: list[str], name: str, config: dict[str, Any],
                 run_dir: Path, run_id: str, resume: bool, histogram_bins: int | None = None) -> None:
        self.histogram_bins = histogram_bins
        self._failed = False
        self.run = None
        # mode is always explicit (see resolve_mode); a resumed run continues the same W&B run id
        self._guard("init", lambda: self._init(mode=mode, project=project, entity=entity, group=group,
                    job_type=job_type, tags=tags, name=name, config=config, dir=str(run_dir), id=run_id,
                    resume="allow" if resume else None, reinit="create_new",
                    # the training loop owns this CPU: no stdout capture, no system-stats sampler
                    settings=wandb.Settings(console="off", x_disable_stats=True, x_disable_machine_info=True,
                                            silent=True)))

    def _init(self, **kwargs: Any) -> None:
        # W&B 0.31 keys its own usage telemetry to the process-wide settings, not the run's: left online,
        # an offline run's first log() imports OpenTelemetry (~0.1 s, inside the training loop) and starts
        # exporter threads that try the network every minute. The run's mode there turns that off offline.
        wandb.setup(wandb.Settings(mode=kwargs["mode"]))
        self.run = wandb.init(**kwargs)

    def _guard(self, what: str, call: Callable[[], object]) -> None:
        """W&B trouble is reported once and never stops training."""
        if self._failed:
            return
        try:
            call()
        except Exception as e:  # noqa: BLE001 - any W&B error must not cost the run
            self._failed = True
            log.warning("W&B %s failed, continuing without W&B (the run folder is complete): %s", what, e)

    def log(self, step: int, row: dict[str, float | None], taps: dict[str, Tensor]) -> None:
        data: dict[str, Any] = {k: v for k, v in row.items() if k != "step" and v is not None}
        if self.histogram_bins:
            for name, values in taps.items():
                counts, edges = np.histogram(values.cpu().numpy(), bins=self.histogram_bins)
                data[f"hist/{name}"] = wandb.Histogram(np_histogram=(counts, edges))
        self._guard("log", lambda: self.run.log(data, step=step))

    def finish(self, summary: dict[str, Any], exit_code: int) -> None:
        self._guard("summary", lambda: self.run.summary.update(summary))
        self._guard("finish", lambda: self.run.finish(exit_code=exit_code))
