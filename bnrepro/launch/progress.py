"""A sweep's progress on stderr, under every Hydra launcher: jobs done of total, steps/s, ETA, last test accuracy.

A Hydra callback's `on_multirun_start` runs in the process that launches the sweep whatever the launcher (basic,
joblib, submitit_local, vectorized), while the jobs themselves may run in other processes. So the progress comes
from the files every run already writes into its folder of the sweep: `.hydra/config.yaml` (train.steps),
`metrics.csv` (one row per evaluation point, appended whole; `step` first, `test_acc` second) and `summary.json`
(replaced by atomic renames). A daemon thread reads them about once a second: only what changed since its last
look, and of metrics.csv only the tail.

Only the standard library, omegaconf and hydra load here: Hydra instantiates the callback in every job process
too, where it does nothing.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

# a folder holding one of these at the start of a sweep is skipped by its job (bnrepro's resume rule)
FINISHED = ("completed", "diverged")
# a job whose summary says one of these has ended its part of the sweep
ENDED = (*FINISHED, "failed", "interrupted")
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
JOB_CONFIG = Path(".hydra") / "config.yaml"
LINE_WIDTH = 119  # lines stay under 120 characters, also in a CI log
# metrics.csv is read from this many bytes before its end; more (up to MAX_TAIL_BYTES) only while no row with a
# test_acc is among them
TAIL_BYTES = 4096
MAX_TAIL_BYTES = 1 << 20
# how deep job folders may sit below the sweep folder: a subdir pattern or an override value may hold "/"
MAX_JOB_DEPTH = 4


@dataclass(frozen=True)
class SweepState:
    """The sweep as its folders show it at one poll."""

    total: int | None  # jobs the sweep launches; None when its sweeper's overrides cannot be counted
    seen: int  # job folders found so far
    done: int  # jobs that ended their part of the sweep, skipped ones included
    running: int
    ended: dict[str, int]  # done jobs by status (a skipped one by the status its folder holds)
    steps_done: int  # over all jobs, including steps done before the monitor started
    steps_left: int | None  # None while a job's length cannot be guessed
    new_steps: int  # steps done since the monitor started: the rate counts only these
    elapsed_s: float
    last_test_acc: float | None

    @property
    def jobs(self) -> int:
        """The job count to show: the sweep's, or the folders found so far when the sweeper cannot say."""
        return max(self.total or 0, self.seen)

    @property
    def steps_per_s(self) -> float | None:
        return self.new_steps / self.elapsed_s if self.new_steps > 0 and self.elapsed_s > 0 else None

    @property
    def eta_s(self) -> float | None:
        rate = self.steps_per_s
        return self.steps_left / rate if rate and self.steps_left is not None else None

    @property
    def fraction_done(self) -> float | None:
        if self.steps_left is None or self.steps_done + self.steps_left == 0:
            return None
        return self.steps_done / (self.steps_done + self.steps_left)


@dataclass(frozen=True)
class Poll:
    state: SweepState
    finished: list[str]  # one line per job seen ending since the previous poll


@dataclass
class _Job:
    """What the monitor knows of one job folder."""

    name: str  # the folder relative to the sweep folder, as Hydra named it
    path: Path
    steps: int | None = None  # train.steps of its config
    step: int = 0  # the last step it reached
    counted_step: int = 0  # step at the previous poll: steps past it are new
    summary: dict[str, Any] | None = None
    summary_sig: tuple[int, int, int] | None = None
    # the summary an earlier sweep left in an unfinished folder: its status says nothing of this sweep's job
    stale_sig: tuple[int, int, int] | None = None
    metrics_sig: tuple[int, int, int] | None = None
    metrics_step: int | None = None
    last_acc: tuple[int, float] | None = None  # (step, test_acc) of the newest row with a test_acc
    skipped: bool = False
    reported_sig: tuple[int, int, int] | None = None  # the summary whose line is already out

    @property
    def status(self) -> str | None:
        """The summary's status when it is this sweep's; None before the job wrote one."""
        if self.summary is None or self.summary_sig == self.stale_sig:
            return None
        return self.summary.get("status")

    @property
    def done(self) -> bool:
        return self.status in ENDED


class SweepMonitor:
    """Reads a sweep folder's job folders; `poll()` returns the sweep's state and the lines of jobs that ended.

    The first poll is the baseline: steps already done count as done but not towards the rate, an unfinished
    folder's old summary is ignored until its job replaces it, and a finished folder counts as a skipped job.
    """

    def __init__(self, sweep_dir: Path, total_jobs: int | None = None, default_steps: int | None = None,
                 started: float | None = None) -> None:
        self.sweep_dir = Path(sweep_dir)
        self.total_jobs = total_jobs
        self.default_steps = default_steps
        self.started = time.monotonic() if started is None else started
        self._jobs: dict[str, _Job] = {}
        self._polled = False
        self._new_steps = 0
        self._reported = 0
        self._last_acc: float | None = None

    def poll(self, now: float | None = None) -> Poll:
        now = time.monotonic() if now is None else now
        baseline = not self._polled
        self._polled = True
        for name in sorted(self._find_new_jobs(), key=_natural):
            self._jobs[name] = _Job(name, self.sweep_dir / name)
        finished = []
        newest_acc: tuple[int, float] | None = None  # (metrics mtime, acc): the newest file wins within a poll
        for job in self._jobs.values():
            acc_before = job.last_acc
            self._refresh(job, baseline)
            if baseline:
                job.counted_step = job.step
                job.skipped = job.status in FINISHED
            elif job.step > job.counted_step:
                self._new_steps += job.step - job.counted_step
            job.counted_step = job.step
            if not baseline and job.last_acc is not None and job.last_acc != acc_before:
                assert job.metrics_sig is not None
                if newest_acc is None or job.metrics_sig[1] >= newest_acc[0]:
                    newest_acc = (job.metrics_sig[1], job.last_acc[1])
            if job.done and job.reported_sig != job.summary_sig:
                job.reported_sig = job.summary_sig
                self._reported += 1
                finished.append(self._job_line(job))
        if newest_acc is not None:
            self._last_acc = newest_acc[1]
        return Poll(self._state(now), finished)

    def _find_new_jobs(self) -> list[str]:
        """Folders below the sweep folder holding a `.hydra` folder, not known yet; unknown ones are looked into
        again at every poll, as a job folder may be half made."""
        found: list[str] = []
        pending = [(self.sweep_dir, 0)]
        while pending:
            folder, depth = pending.pop()
            try:
                entries = list(os.scandir(folder))
            except OSError:  # not made yet, or removed meanwhile
                continue
            for entry in entries:
                if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                    continue
                name = os.path.relpath(entry.path, self.sweep_dir)
                if name in self._jobs:
                    continue
                if os.path.isdir(os.path.join(entry.path, ".hydra")):
                    found.append(name)
                elif depth + 1 < MAX_JOB_DEPTH:
                    pending.append((Path(entry.path), depth + 1))
        return found

    def _refresh(self, job: _Job, baseline: bool) -> None:
        if job.steps is None:
            job.steps = _configured_steps(job.path / JOB_CONFIG)
        sig = _signature(job.path / SUMMARY_FILE)
        if sig is not None and sig != job.summary_sig:
            summary = _read_json(job.path / SUMMARY_FILE)
            if summary is not None:
                job.summary, job.summary_sig = summary, sig
                if baseline and summary.get("status") not in FINISHED:
                    job.stale_sig = sig
        sig = _signature(job.path / METRICS_FILE)
        if sig is not None and sig != job.metrics_sig:
            step, acc = _metrics_tail(job.path / METRICS_FILE, sig[0])
            job.metrics_sig = sig
            if step is not None:
                job.metrics_step = step
                if acc is not None:
                    job.last_acc = (step, acc)
        steps_done = job.summary.get("steps_done") if job.done and job.summary else None
        job.step = int(steps_done) if isinstance(steps_done, int | float) else (job.metrics_step or 0)

    def _state(self, now: float) -> SweepState:
        jobs = list(self._jobs.values())
        done = [job for job in jobs if job.done]
        known_steps = [job.steps for job in jobs if job.steps is not None]
        assumed = round(sum(known_steps) / len(known_steps)) if known_steps else self.default_steps
        unseen = max(0, (self.total_jobs or 0) - len(jobs))
        steps_left: int | None = 0
        for job in jobs:
            if job.done:
                continue
            length = job.steps if job.steps is not None else assumed
            steps_left = None if length is None or steps_left is None else steps_left + max(0, length - job.step)
        if unseen and steps_left is not None:
            steps_left = None if assumed is None else steps_left + unseen * assumed
        ended = Counter(_status(job) for job in done)
        return SweepState(total=self.total_jobs, seen=len(jobs), done=len(done),
                          running=sum(job.status == "running" for job in jobs), ended=dict(ended),
                          steps_done=sum(job.step for job in jobs), steps_left=steps_left, new_steps=self._new_steps,
                          elapsed_s=max(0.0, now - self.started), last_test_acc=self._last_acc)

    def _job_line(self, job: _Job) -> str:
        s = job.summary or {}
        status = _status(job)
        final, best = s.get("final_test_acc"), s.get("best_test_acc")
        if job.skipped:
            detail = f"{status} earlier, skipped" + (f", final test acc {_pct(final)}" if final is not None else "")
        elif status == "completed":
            detail = f"completed, final test acc {_pct(final)}"
        elif status == "diverged":
            detail = f"diverged at step {s.get('diverged_step', job.step)}" + (
                f", best test acc {_pct(best)}" if best is not None else "")
        elif status == "interrupted":
            detail = f"interrupted at step {s.get('steps_done', job.step)}"
        else:
            detail = f"{status}: " + (str(s.get("error") or "see its folder").splitlines() or [""])[0]
        if not job.skipped and isinstance(s.get("wall_time_s"), int | float):
            detail += f", {_duration(s['wall_time_s'])}"
        prefix = f"[{self._reported}/{self.total_jobs or '?'}] "
        room = LINE_WIDTH - len(prefix) - 2 - min(len(detail), 60)
        return _shorten(f"{prefix}{_shorten(job.name, max(room, 20))}: {detail}", LINE_WIDTH)


def format_progress(state: SweepState) -> str:
    """The one progress line, e.g. `sweep: 3/12 jobs done, 2 running | 41% of steps, 1,234 steps/s | ETA 4m 12s |
    last test acc 97.59%`."""
    jobs = f"sweep: {state.done}/{state.jobs}{'' if state.total is not None else '+'} jobs done"
    if state.running:
        jobs += f", {state.running} running"
    fraction, rate, eta = state.fraction_done, state.steps_per_s, state.eta_s
    steps = (f"{fraction:.0%} of steps, " if fraction is not None else "") + (
        f"{rate:,.0f} steps/s" if rate is not None else "- steps/s")
    parts = [jobs, steps, f"ETA {_duration(eta) if eta is not None else '-'}",
             f"last test acc {_pct(state.last_test_acc) if state.last_test_acc is not None else '-'}"]
    return _shorten(" | ".join(parts), LINE_WIDTH)


def format_final(state: SweepState, stopped: bool) -> str:
    """The last line: `sweep finished: 2/2 jobs done (2 completed) in 1m 05s | 1,234 steps/s | last test acc 97.59%`."""
    ended = ", ".join(f"{count} {status}" for status, count in sorted(state.ended.items()))
    parts = [f"sweep {'stopped' if stopped else 'finished'}: {state.done}/{state.jobs} jobs done"
             + (f" ({ended})" if ended else "") + f" in {_duration(state.elapsed_s)}"]
    if state.steps_per_s is not None:
        parts.append(f"{state.steps_per_s:,.0f} steps/s")
    if state.last_test_acc is not None:
        parts.append(f"last test acc {_pct(state.last_test_acc)}")
    return _shorten(" | ".join(parts), LINE_WIDTH)


class ProgressPrinter:
    """Writes polls to a stream. On a terminal the progress line is rewritten in place, with a permanent line above
    it for each job that ends; elsewhere (a CI log, a pipe) nothing is rewritten: the progress line comes every
    `log_every_s` seconds (0: never, only the job lines and the final line).

    Other text on the same terminal (Hydra's log, a job's own lines) goes through a SharedTerminalStream, so that
    it never lands at the end of the progress line.
    """

    def __init__(self, stream: TextIO, log_every_s: float = 30.0, started: float | None = None) -> None:
        self.stream = stream
        self.tty = _isatty(stream)
        self.log_every_s = log_every_s
        self.lock = threading.RLock()  # the progress line, and the other text written around it, one at a time
        self._last_logged = time.monotonic() if started is None else started
        self._line_shown = False
        self._others_mid_line: set[int] = set()  # the streams whose other text has not ended its line yet
        self._finished = False

    def show(self, poll: Poll, now: float | None = None, progress: bool = True) -> None:
        """The lines of the jobs that ended, and the progress line when it is due (`progress` false: not now)."""
        now = time.monotonic() if now is None else now
        with self.lock:
            if self._finished:
                return
            if self.tty:
                # other text still writing its line (a bar redrawn with \r) keeps that line: a job's line goes
                # below it, and the progress line waits until that text ends its line
                text = "".join(f"\r\x1b[K{job_line}\n" for job_line in poll.finished)
                if text and self._others_mid_line:
                    text = "\n" + text
                draw = progress and not self._others_mid_line
                if draw:
                    text += f"\r\x1b[K{self._fit(format_progress(poll.state))}"
                if text:
                    self.write(text)
                    self._line_shown = draw
                return
            text = "".join(f"{job_line}\n" for job_line in poll.finished)
            if progress and self.log_every_s > 0 and now - self._last_logged >= self.log_every_s:
                self._last_logged = now
                text += format_progress(poll.state) + "\n"
            if text:
                self.write(text)

    def finish(self, poll: Poll, stopped: bool = False) -> None:
        """The jobs that ended since the last poll, then the final line, which ends the rewritten line.

        A sweep stopped before any job did anything (a config mistake exits with one line) gets no final line.
        """
        with self.lock:
            self.clear_line()
            self._finished = True
            idle = not (poll.finished or poll.state.done or poll.state.new_steps)
            if stopped and idle:
                return
            lines = [*poll.finished, format_final(poll.state, stopped)]
            self.write("".join(f"{line}\n" for line in lines))

    def clear_line(self) -> None:
        """Take the progress line off the terminal (it comes back at the next poll)."""
        with self.lock:
            if self._line_shown:
                self.write("\r\x1b[K")
                self._line_shown = False

    def other_text(self, stream: object, text: str) -> None:
        """Note where other text written to `stream` left the terminal's cursor."""
        if text:
            with self.lock:
                if text.endswith("\n"):
                    self._others_mid_line.discard(id(stream))
                else:
                    self._others_mid_line.add(id(stream))

    def _fit(self, line: str) -> str:
        # a line wider than the terminal wraps, and `\r` would then rewrite only its last part
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError, AttributeError):
            columns = shutil.get_terminal_size().columns
        # a pseudo-terminal without a size (`script`, some CI runners) reports 0 columns
        return _shorten(line, columns - 1 if columns > 20 else LINE_WIDTH)

    def write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: the sweep goes on without its progress line
            pass


class SharedTerminalStream:
    """Stands in for sys.stdout or sys.stderr while a progress line is on their terminal: text written there first
    takes the line away, and the line comes back, at the next poll, only once that text has ended its own line.

    Everything but writing is the wrapped stream's (isatty, fileno, encoding, buffer, flush...). Once the printer has
    finished, it only passes text on: a logging handler may keep it after the sweep.
    """

    def __init__(self, stream: TextIO, printer: ProgressPrinter) -> None:
        self.wrapped = stream
        self._printer = printer

    def write(self, text: str) -> int:
        with self._printer.lock:
            self._printer.clear_line()
            written = self.wrapped.write(text)
            self._printer.other_text(self, text)
        return written

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


class SweepProgress(Callback):
    """Hydra callback (conf/config.yaml: hydra.callbacks.sweep_progress): a multirun's progress on stderr.

    `interval_s`: seconds between polls of the sweep folder; `log_every_s`: seconds between progress lines when
    stderr is not a terminal; `enabled: false` turns it off.
    """

    def __init__(self, enabled: bool = True, interval_s: float = 1.0, log_every_s: float = 30.0) -> None:
        self.enabled, self.interval_s, self.log_every_s = enabled, interval_s, log_every_s
        self.monitor: SweepMonitor | None = None
        self.printer: ProgressPrinter | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one poll at a time: the thread's, or the final one
        self._thread: threading.Thread | None = None
        self._shared: list[tuple[str, TextIO, SharedTerminalStream]] = []  # (sys attribute, its stream, stand-in)

    def __getstate__(self) -> dict[str, Any]:
        # launchers that run jobs in other processes (joblib, submitit) pickle Hydra's callbacks along with the
        # jobs: the copy there gets the settings only (no thread, no lock), and has nothing to monitor
        return {"enabled": self.enabled, "interval_s": self.interval_s, "log_every_s": self.log_every_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled:
            return
        started = time.monotonic()
        self.monitor = SweepMonitor(Path(str(config.hydra.sweep.dir)).absolute(), total_jobs=count_jobs(config),
                                    default_steps=_int_or_none(OmegaConf.select(config, "train.steps", default=None)),
                                    started=started)
        self.printer = ProgressPrinter(sys.stderr, self.log_every_s, started=started)
        if self.printer.tty:
            self._shared = [share for name in ("stdout", "stderr") if (share := self._share(name, self.printer))]
        # the baseline: what the folder held before this sweep. Its progress line waits for the first tick, after
        # the launcher's own first lines, which would otherwise land at the end of it on a terminal
        self._tick(progress=False)
        self._thread = threading.Thread(target=self._run, name="sweep-progress", daemon=True)
        self._thread.start()
        # a sweep cut short (Ctrl-C, an interrupted job's exit) skips on_multirun_end but not atexit
        atexit.register(self._finish, stopped=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._finish(stopped=False)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._tick()

    def _tick(self, progress: bool = True) -> None:
        with self._lock:
            if self.monitor is None or self.printer is None or self._stop.is_set():
                return
            try:
                self.printer.show(self.monitor.poll(), progress=progress)
            except Exception as error:  # a progress line is not worth failing a sweep for
                self.printer.write(f"\nsweep progress off: {type(error).__name__}: {error}\n")
                self.monitor = None

    def _finish(self, stopped: bool) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5 * self.interval_s + 5)
        with self._lock:
            monitor, printer, self.monitor = self.monitor, self.printer, None
            if monitor is not None and printer is not None:
                try:
                    printer.finish(monitor.poll(), stopped=stopped)
                except Exception as error:  # the sweep's own outcome matters more than its last progress line
                    printer.write(f"\nsweep progress: {type(error).__name__}: {error}\n")
        for name, stream, shared in self._shared:
            if getattr(sys, name) is shared:  # not when someone replaced it since
                setattr(sys, name, stream)
        self._shared = []
        atexit.unregister(self._finish)

    @staticmethod
    def _share(name: str, printer: ProgressPrinter) -> tuple[str, TextIO, SharedTerminalStream] | None:
        """Put a SharedTerminalStream in place of sys.stdout or sys.stderr when it is a terminal too.

        Hydra's launchers configure their logging after this, so their log handlers write through it as well, as
        do print() and warnings; text written straight to the file descriptor (worker processes) does not.
        """
        stream = getattr(sys, name)
        if not _isatty(stream):
            return None
        shared = SharedTerminalStream(stream, printer)
        setattr(sys, name, shared)
        return name, stream, shared


def count_jobs(config: DictConfig) -> int | None:
    """The jobs Hydra's BasicSweeper makes of `hydra.sweeper.params` and the task overrides, counted as it counts
    them (its subclasses too); None for another sweeper, or overrides it would refuse."""
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.utils import get_class

        # the basic sweeper, or a subclass of it (bnrepro's own, hydra_plugins/bnrepro_sweeper), which splits alike
        if not issubclass(get_class(str(OmegaConf.select(config, "hydra.sweeper._target_"))), BasicSweeper):
            return None
        params = OmegaConf.select(config, "hydra.sweeper.params", default=None)
        arguments = [f"{key}={value}" for key, value in (OmegaConf.to_container(params) if params else {}).items()]
        arguments += OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
        # the config loader lets glob() sweeps over config groups list the group's options
        hydra = GlobalHydra.instance()
        parser = OverridesParser.create(config_loader=hydra.config_loader() if hydra.is_initialized() else None)
        batches = BasicSweeper.split_arguments(parser.parse_overrides(arguments), max_batch_size=None)
        return sum(len(batch) for batch in batches)
    except Exception:  # the sweeper reports a bad override itself, in its own words
        return None


def _metrics_tail(path: Path, size: int) -> tuple[int | None, float | None]:
    """The last row's step and the newest non-empty test_acc, from the end of a metrics.csv of `size` bytes.

    The bytes after the last newline are a row still being written; the first line of a window that starts
    mid-file may be cut. The window grows only when it holds no row with a test_acc.
    """
    window = TAIL_BYTES
    step: int | None = None
    try:
        with path.open("rb") as f:
            while True:
                start = max(0, size - window)
                f.seek(start)
                lines = f.read(size - start).split(b"\n")[:-1]
                if start > 0:
                    lines = lines[1:]
                step = None
                for line in reversed(lines):
                    fields = line.split(b",", 2)
                    try:
                        row_step = int(float(fields[0]))
                    except (ValueError, OverflowError):  # the header, or no step
                        continue
                    step = row_step if step is None else step
                    # a regression task's test_acc is nan: it has no accuracy to show
                    if len(fields) > 1 and fields[1].strip() not in (b"", b"nan"):
                        try:
                            return step, float(fields[1])
                        except ValueError:
                            continue
                if start == 0 or window >= MAX_TAIL_BYTES:
                    return step, None
                window *= 8
    except OSError:  # replaced or removed between stat and open: the next poll reads the new one
        return step, None


def _configured_steps(path: Path) -> int | None:
    """train.steps of a job's saved config; None while Hydra is still writing it."""
    try:
        return _int_or_none(OmegaConf.select(OmegaConf.load(path), "train.steps", default=None))
    except Exception:
        return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _signature(path: Path) -> tuple[int, int, int] | None:
    """Changes whenever the file does: a rename over it brings a new inode, an append a new size."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino


def _status(job: _Job) -> str:
    status = job.summary.get("status") if job.summary else None
    return str(status) if status else "unknown"


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _pct(acc: Any) -> str:
    return f"{float(acc):.2%}" if isinstance(acc, int | float) else "n/a"


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def _shorten(text: str, width: int) -> str:
    """text cut in the middle to `width` characters: a job name's start (its number) and end both tell."""
    if len(text) <= width:
        return text
    head = (width - 3) // 2
    return text[:head] + "..." + text[len(text) - (width - 3 - head):]


def _natural(name: str) -> list[Any]:
    # job 10 after job 9
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False

