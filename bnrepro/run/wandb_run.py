"""One W&B run per job. The run folder is the record; W&B is a mirror that may fail."""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from torch import Tensor

from bnrepro.errors import EXIT_REFUSED, RunFailure
from bnrepro.parts import ConfigError

log = logging.getLogger(__name__)
DEFAULT_SERVER = "https://api.wandb.ai"
_online_runs = 0  # this process's online W&B runs not finished yet (a stack's K runs share the process)


def server_address() -> tuple[str, int, bool]:
    """(host, port, TLS) of the W&B server: $WANDB_BASE_URL, else W&B's cloud."""
    url = urlsplit(os.environ.get("WANDB_BASE_URL") or DEFAULT_SERVER)
    return url.hostname or "", url.port or (80 if url.scheme == "http" else 443), url.scheme != "http"


def probe_server(timeout_s: float) -> str | None:
    """None when the W&B server answers an HTTP request within timeout_s in all; else why not.

    An answer, not only a connection: a server (or a proxy) that accepts and stays silent would make wandb.init
    wait about 90 s and then give up on the run.
    """
    host, port, tls = server_address()
    deadline = time.monotonic() + timeout_s
    connection = (http.client.HTTPSConnection if tls else http.client.HTTPConnection)(host, port, timeout=timeout_s)
    try:
        connection.request("HEAD", "/")
        connection.sock.settimeout(max(deadline - time.monotonic(), 1e-3))
        connection.getresponse()
        return None
    except (OSError, http.client.HTTPException) as e:  # refused, timed out, TLS, not HTTP...
        return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    finally:
        connection.close()


def resolve_mode(mode: str, offline_fallback: bool, timeout_s: float) -> str:
    """The mode to hand to wandb.init: online only when its server answers within timeout_s.

    Checked before any training starts, and in seconds: an online wandb.init without network waits about 90 s
    before it fails.
    """
    if mode != "online":
        return mode
    host, port, _ = server_address()
    why = probe_server(timeout_s)
    if why is None:
        return mode
    if not offline_fallback:
        raise ConfigError("wandb.mode", mode, f"offline or disabled, or wandb.offline_fallback=true: the W&B server "
                          f"{host}:{port} is unreachable (no answer within {timeout_s:g} s: {why})")
    log.warning("W&B server %s:%s unreachable (no answer within %g s: %s): logging offline instead; `wandb sync` "
                "uploads later", host, port, timeout_s, why)
    return "offline"


def _wandb() -> Any:
    """The wandb module, imported by the first run that logs to W&B."""
    import wandb

    return wandb


def _quiet_usage_telemetry() -> None:
    """Turn off W&B's own usage telemetry for this process (the run's data is not concerned): its exporter threads
    post to the W&B server, and process exit waits for them, tens of seconds when the server stalls."""
    try:
        from wandb.analytics.opentelemetry import opentelemetry_proxy

        opentelemetry_proxy.disable()
    except (ImportError, AttributeError):  # a W&B version without it
        pass


class WandbRun:
    def __init__(self, *, mode: str, project: str, entity: str | None, group: str | None,
                 job_type: str | None, tags: list[str], name: str, config: dict[str, Any],
                 run_dir: Path, run_id: str, resume: bool, histogram_bins: int | None = None,
                 offline_fallback: bool = True, init_timeout_s: float = 10.0) -> None:
        """An online run that W&B cannot start within init_timeout_s logs offline instead (or, without
        offline_fallback, raises RunFailure: the run stops before training)."""
        self.histogram_bins = histogram_bins
        self._failed = False
        self.run = None
        self.online = False
        # mode is always explicit (see resolve_mode); a resumed run continues the same W&B run id
        kwargs = dict(project=project, entity=entity, group=group, job_type=job_type, tags=tags, name=name,
                      config=config, dir=str(run_dir), id=run_id, resume="allow" if resume else None,
                      reinit="create_new")
        if mode == "disabled":  # nothing to log: W&B is not even imported, a fraction of a second of every start
            return
        if mode == "online" and not self._start_online(kwargs, offline_fallback, init_timeout_s):
            mode = "offline"
        if self.run is None:
            self._guard("init", lambda: self._init(mode=mode, **kwargs))

    def _start_online(self, kwargs: dict[str, Any], offline_fallback: bool, timeout_s: float) -> bool:
        global _online_runs
        _quiet_usage_telemetry()
        try:
            self._init(mode="online", init_timeout=timeout_s, **kwargs)
            _online_runs += 1
            self.online = True
            return True
        except Exception as e:  # noqa: BLE001 - whatever stops W&B online, the run goes on as promised
            why = (str(e).strip().splitlines() or [type(e).__name__])[0]
            if not offline_fallback:
                host, port, _ = server_address()
                raise RunFailure(f"W&B could not start the run online within wandb.connect_timeout_s={timeout_s:g} "
                                 f"s ({host}:{port}: {why}): use wandb.mode=offline or disabled, or "
                                 f"wandb.offline_fallback=true", exit_code=EXIT_REFUSED) from e
            log.warning("W&B could not start the run online within %g s (%s): logging offline instead; `wandb sync` "
                        "uploads later", timeout_s, why)
            if _online_runs == 0:  # the failed run keeps its id in W&B's service, which the others may still use
                with contextlib.suppress(Exception):
                    _wandb().teardown()
            return False

    def _init(self, mode: str, init_timeout: float | None = None, **kwargs: Any) -> None:
        # W&B 0.31 keys its own usage telemetry to the process-wide settings, not the run's: left online,
        # an offline run's first log() imports OpenTelemetry (~0.1 s, inside the training loop) and starts
        # exporter threads that try the network every minute. The run's mode there turns that off offline.
        wandb = _wandb()
        wandb.setup(wandb.Settings(mode=mode))
        # the training loop owns this CPU: no stdout capture, no system-stats sampler
        settings = dict(console="off", x_disable_stats=True, x_disable_machine_info=True, silent=True)
        if init_timeout is not None:
            settings["init_timeout"] = init_timeout
        self.run = wandb.init(mode=mode, settings=wandb.Settings(**settings), **kwargs)

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
        if self.run is None:
            return
        data: dict[str, Any] = {k: v for k, v in row.items() if k != "step" and v is not None}
        if self.histogram_bins:
            for name, values in taps.items():
                counts, edges = np.histogram(values.cpu().numpy(), bins=self.histogram_bins)
                data[f"hist/{name}"] = _wandb().Histogram(np_histogram=(counts, edges))
        self._guard("log", lambda: self.run.log(data, step=step))

    def finish(self, summary: dict[str, Any], exit_code: int) -> None:
        global _online_runs
        if self.run is None:
            return
        self._guard("summary", lambda: self.run.summary.update(summary))
        self._guard("finish", lambda: self.run.finish(exit_code=exit_code))
        if self.online:
            self.online = False
            _online_runs -= 1
