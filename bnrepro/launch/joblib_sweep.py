"""`hydra/launcher=joblib` as bnrepro runs it: hydra-joblib-launcher's jobs in loky worker processes, with the
launcher's signals and its end handled so that a stopped sweep loses nothing and leaves nothing behind.

- SIGINT or SIGTERM that reaches the launcher (a terminal's Ctrl-C, or `kill PID` to it alone) is passed on to each
  worker once: a training job checkpoints and records `interrupted`, queued jobs do not start, and the launcher
  waits for that, then exits 128 + the signal's number with one line saying how to continue. (joblib on its own
  kills the workers at once, mid-write, and idle ones stay behind when the launcher is killed.)
- Workers run in their own process groups, so that a terminal's signal reaches them once, through the launcher;
  they start with the two signals blocked, inherited from the launcher, until their handlers are in place.
- A worker dies with the launcher, whatever ends it (bnrepro.launch.lifeline), SIGKILL included.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, setup_globals
from hydra_plugins.hydra_joblib_launcher._core import execute_job, process_joblib_cfg
from joblib import Parallel, delayed
from joblib._parallel_backends import LokyBackend

from bnrepro.config import register_configs
from bnrepro.errors import EXIT_BUG, EXIT_SIGNAL
from bnrepro.interrupt import SIGNALS, Interrupted
from bnrepro.launch.lifeline import die_with_parent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerExit:
    """A job that ended as its process would have (a signal, a refused folder, a one-line failure) instead of
    returning: its exit code. The job printed its own line, if it had one."""

    code: int


# --- in the workers ----------------------------------------------------------------------------------------------

_stopped: int | None = None  # the first SIGINT/SIGTERM this worker received
_launcher: int | None = None


def init_worker(launcher: int) -> None:
    """loky's initializer, once in each worker before any job; SIGINT and SIGTERM are blocked until the end."""
    global _launcher
    _launcher = launcher
    register_configs()  # workers compose their jobs' configs too (and so hear the warning it quiets)
    for s in SIGNALS:
        signal.signal(s, _while_idle)
    os.setpgrp()  # signals come from the launcher only, once each
    die_with_parent(launcher)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)


def _record(signum: int) -> None:
    global _stopped
    _stopped = _stopped or signum


def _orphaned() -> bool:
    """The launcher has ended (False where jobs run in the launcher itself: joblib runs n_jobs=1 so)."""
    return _launcher is not None and os.getppid() != _launcher


def _while_idle(signum: int, frame: FrameType | None) -> None:
    # an idle worker stays, so that joblib does not take the pool for broken, and starts no further job; once the
    # launcher has ended (this is its death signal) nobody will send one
    _record(signum)
    if _orphaned():
        os._exit(EXIT_SIGNAL + signum)


def _during_job(signum: int, frame: FrameType | None) -> None:
    # before the training loop's own StopRequest is in place (and after it), a signal stops the job at once
    _record(signum)
    raise Interrupted(signum)


def run_job_in_worker(*args: Any) -> JobReturn | WorkerExit:
    """hydra-joblib-launcher's execute_job, unless this worker was stopped; a job's exit becomes a WorkerExit, so
    that joblib neither takes it for a crash nor kills the other workers."""
    if _stopped:
        return WorkerExit(EXIT_SIGNAL + _stopped)
    previous = {s: signal.signal(s, _during_job) for s in SIGNALS}
    try:
        return execute_job(*args)
    except Interrupted as e:
        _record(e.signum)
        return WorkerExit(e.exit_code)
    except SystemExit as e:
        return WorkerExit(e.code if isinstance(e.code, int) else EXIT_BUG)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if _stopped and _orphaned():  # nobody to return the result to
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_SIGNAL + _stopped)


# --- in the launcher ---------------------------------------------------------------------------------------------


class Relay:
    """While inside: SIGINT and SIGTERM reaching this process are recorded (`signum`, the first) and passed on to
    `workers()`, once each. Processes started inside inherit the two signals blocked, so that none can be killed by
    one before its handlers are in place (init_worker unblocks them then)."""

    def __init__(self, workers: Callable[[], Iterable[int]]) -> None:
        self.workers = workers
        self.signum: int | None = None

    def __enter__(self) -> Relay:
        self._done = threading.Event()
        # the one new thread with the signals unblocked: the kernel delivers them there, and Python runs the
        # handler in the main thread, whose own mask blocks them (and passes that on to every child it starts)
        self._receiver = threading.Thread(target=self._done.wait, name="bnrepro-signal-receiver", daemon=True)
        self._receiver.start()
        self._previous = {s: signal.signal(s, self._relay) for s in SIGNALS}
        self._mask = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        return self

    def _relay(self, signum: int, frame: FrameType | None) -> None:
        self.signum = self.signum or signum
        for pid in self.workers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def __exit__(self, *exc: object) -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)  # one still pending runs _relay now
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._done.set()


def _worker_pids(backend: LokyBackend) -> list[int]:
    # loky's executor keeps its worker processes by PID; no public API lists them (none while it is not running)
    executor = getattr(backend, "_workers", None)
    return list(getattr(executor, "_processes", None) or ())


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
    """hydra-joblib-launcher's launch, through run_job_in_worker and a Relay (see the module's docstring)."""
    setup_globals()
    assert launcher.config is not None and launcher.task_function is not None and launcher.hydra_context is not None
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    settings = dict(launcher.joblib)
    settings.pop("backend", None)  # always loky, as hydra-joblib-launcher's: with bnrepro's worker initializer
    process_joblib_cfg(settings)
    log.info("Joblib.Parallel(%s) is launching %d jobs", ",".join(f"{k}={v}" for k, v in settings.items()),
             len(job_overrides))
    log.info("Launching jobs, sweep output dir : %s", sweep_dir)
    for idx, overrides in enumerate(job_overrides):
        log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
    singleton_state = Singleton.get_state()
    backend = LokyBackend(initializer=init_worker, initargs=(os.getpid(),))
    with Relay(lambda: _worker_pids(backend)) as relay:

        def jobs() -> Iterator[Any]:  # joblib draws them as workers free up: none once a signal came
            for idx, overrides in enumerate(job_overrides):
                if relay.signum:
                    return
                yield delayed(run_job_in_worker)(initial_job_idx + idx, overrides, launcher.hydra_context,
                                                 launcher.config, launcher.task_function, singleton_state)

        runs = Parallel(backend=backend, **settings)(jobs())
    exits = [run.code for run in runs if isinstance(run, WorkerExit)]
    signum = relay.signum or next((code - EXIT_SIGNAL for code in exits if code > EXIT_SIGNAL), None)
    if signum:
        raise Interrupted(signum, f"interrupted by {signal.Signals(signum).name}: every running job checkpointed; "
                                  f"the same command with hydra.sweep.dir={sweep_dir} continues the sweep")
    if exits:
        raise SystemExit(max(exits))  # each such job said why in its own line
    return runs
