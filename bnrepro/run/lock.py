"""One writer per run folder: an OS lock (flock) on a file in the folder, held for the run's whole life.

A second `bnrepro-train` aimed at a folder that a running one holds (the same command started twice, a sweep
submitted again while it runs) is refused with one line naming the holder's PID, before it writes anything. The
kernel drops a flock when the last descriptor of its open file closes, however the process ended, so a killed
run never leaves a stale lock behind: its resume takes the lock as if it had never been held.

Only the standard library and Hydra's callback base load here.
"""

from __future__ import annotations

import fcntl
import os
import sys
from multiprocessing import reduction
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from bnrepro.errors import NOT_WRITABLE, FolderRefused

LOCK_FILE = ".lock"


class FolderLock:
    """The lock of one run (or sweep) folder, held by this process (and by the worker processes it is handed to)."""

    def __init__(self, folder: Path, fd: int | None, write_error: OSError | None = None) -> None:
        self.folder, self.fd = folder, fd
        # why the folder cannot hold a lock file, when it cannot: a folder nobody can write needs no lock to be
        # read (a finished run is skipped), and any write into it would fail the same way
        self.write_error = write_error

    @classmethod
    def acquire(cls, folder: Path, what: str = "run folder", choose: str = "hydra.run.dir") -> FolderLock:
        """The folder's lock; FolderRefused (naming the holder) when another process holds it."""
        path = folder / LOCK_FILE
        write_error = None
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            if e.errno not in NOT_WRITABLE:
                raise
            write_error = e
            try:  # flock needs no write access: a read-only folder's existing lock file still excludes writers
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return cls(folder, None, write_error)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            if holder is None:
                who, stop = "another process", f"see {path} in /proc/locks"
            elif _alive(holder):
                who, stop = f"process {holder} (a bnrepro-train still running)", f"kill {holder}"
            else:  # a launcher that was killed: its workers hold the lock while they checkpoint
                who, stop = f"the workers of process {holder}, which has ended", "they end on their own"
            raise FolderRefused(f"{what} {folder} is being written by {who}: wait for it or stop it ({stop}), or "
                                f"choose another {choose}; it was left untouched") from None
        except BaseException:
            os.close(fd)
            raise
        return cls(folder, fd, write_error)

    def record_holder(self) -> None:
        """Write this process's PID into the lock file, for people and for refusals where /proc/locks is absent."""
        if self.fd is not None and self.write_error is None:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        """Close this process's descriptor. Never LOCK_UN: a worker process handed the lock shares its open file,
        and unlocking through one descriptor would unlock it for both."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __reduce__(self) -> tuple[Any, ...]:
        # handed to a spawned worker (the vectorized launcher's), the descriptor goes along: the worker holds the
        # same lock, so that the folder stays locked while the worker writes it, even if this process is killed
        dup = reduction.DupFd(self.fd) if self.fd is not None else None
        return _rebuild, (self.folder, dup, self.write_error)


def _rebuild(folder: Path, dup: Any, write_error: OSError | None) -> FolderLock:
    return FolderLock(folder, dup.detach() if dup is not None else None, write_error)


def _holder(fd: int) -> int | None:
    """The PID holding the flock on fd's file: from /proc/locks (Linux), else the PID the holder wrote."""
    st = os.fstat(fd)
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:  # "3: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; a waiter's line has "->" after "3:"
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == device and fields[4].isdigit():
            return int(fields[4])
    written = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(written) if written.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


class SweepLock(Callback):
    """Hydra callback (conf/config.yaml: hydra.callbacks.sweep_lock): a multirun holds its sweep folder's lock from
    start to end, so that the same sweep submitted again while it runs is refused before it writes anything, its
    multirun.yaml included. Each job's folder has its own lock besides (bnrepro.train.prepare)."""

    def __init__(self) -> None:
        self.lock: FolderLock | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {}  # launchers pickle callbacks into their job processes, which have nothing to hold

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.lock = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(str(config.hydra.sweep.dir))
        folder.mkdir(parents=True, exist_ok=True)
        try:
            self.lock = FolderLock.acquire(folder, "sweep folder", "hydra.sweep.dir")
        except FolderRefused as e:
            # Hydra turns a callback's Exception into a warning; SystemExit ends the command, as a refusal should
            print(f"bnrepro-train: {e}", file=sys.stderr)
            raise SystemExit(e.exit_code) from None
        self.lock.record_holder()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.lock is not None:
            self.lock.release()
