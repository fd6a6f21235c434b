"""Atomic file writes: a reader (a report, a resumed run, a parallel job) sees the old file or the new one,
never half of one, even when the writer is killed mid-write."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """write() fills a unique temporary file beside path, which then replaces path in one rename.

    Whatever stops it (an error, a full disk, a signal's exception) removes the temporary file; an OSError names
    `path`: the writes that fail on a full disk know no file name, and the temporary one means nothing to a user."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from e
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide shared caches and results from other users
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))
