"""`bnrepro-train`'s exit codes, and the failures that end it with one line on stderr instead of a traceback.

Every failure a user can act on (a config mistake, a folder that refuses the command, a file that cannot be
written, a file that is there but broken, a signal) has its own exit code, so that a script or a scheduler can
tell them apart; README.md ("Reliability: guarantees and exit codes") lists them. Anything else is a bug: it keeps
its traceback and Python's exit code 1.

Only the standard library loads here: the entry point reports failures before torch is imported.
"""

from __future__ import annotations

import errno
import sys

EXIT_DONE = 0  # completed, diverged (a result, not an error) or skipped (the folder holds the finished run)
EXIT_BUG = 1  # an unexpected error, with its traceback
EXIT_REFUSED = 2  # a config mistake, or a run folder that refuses the command: nothing was written
EXIT_IO = 3  # a file or folder that cannot be written (permission, read-only file system, disk full)
EXIT_CORRUPT = 4  # a file that is there but broken or missing: checkpoint.pt, summary.json, the data cache
EXIT_SIGNAL = 128  # + the signal's number (SIGINT 130, SIGTERM 143): interrupted; the same command continues

DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


class RunFailure(Exception):
    """A failure the user can act on; its message is one line that names the file and says what to do."""

    exit_code = EXIT_IO

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class FolderRefused(RunFailure):
    """A run folder that refuses this command (another process holds it, it holds another run): left untouched."""

    exit_code = EXIT_REFUSED


class CorruptFile(RunFailure):
    """A file of a run folder or of the data cache that cannot be read as what it should be."""

    exit_code = EXIT_CORRUPT


def _os_error(error: BaseException) -> OSError | None:
    """The first file-system OSError in error's chain (a library may wrap one, e.g. logging's ValueError)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (*DISK_FULL, *NOT_WRITABLE, errno.EIO):
            return error
        error = error.__cause__ or error.__context__
    return None


def describe_os_error(error: OSError) -> str:
    """One line for a file-system error: what happened to which file, and what to do."""
    where = error.filename or "a file of the run"
    if error.errno == errno.EFBIG:
        return (f"file size limit reached writing {where} (ulimit -f): raise the limit, then run the same command "
                f"again; it continues from the last checkpoint")
    if error.errno in DISK_FULL:
        return (f"disk full writing {where}: free some space (or move the run folder), then run the same command "
                f"again; it continues from the last checkpoint")
    if error.errno == errno.EROFS:
        return (f"cannot write {where} (read-only file system): use a writable folder (runs: hydra.run.dir / "
                f"hydra.sweep.dir; the MNIST cache: $BNREPRO_DATA)")
    if error.errno in NOT_WRITABLE:
        return (f"cannot access {where} (permission denied): make it readable and writable for this user, or use "
                f"another folder (runs: hydra.run.dir / hydra.sweep.dir; the MNIST cache: $BNREPRO_DATA)")
    return f"I/O error on {where} ({error.strerror}): check the disk, then run the same command again"


def describe(error: BaseException) -> tuple[int, str] | None:
    """(exit code, one line) for an anticipated failure; None for a bug, which keeps its traceback."""
    if isinstance(error, RunFailure):
        return error.exit_code, str(error)
    data = sys.modules.get("bnrepro.data.base")  # loaded whenever a data set has raised
    if data is not None and isinstance(error, data.DataError):
        return EXIT_CORRUPT, str(error)
    if (os_error := _os_error(error)) is not None:
        return EXIT_IO, describe_os_error(os_error)
    return None
