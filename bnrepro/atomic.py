"""Atomic file writes: a reader (a report, a resumed run, a parallel job) sees the old file or the new one,
never half of one, even when the writer is killed mid-write."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """write() fills a unique temporary file beside path, which then replaces path in one rename.

    Whatever stops it (an error, a full disk, a signal's exception) removes the temporary file; an OSError names
    `path`: the writes that fail on a full disk know no file name, and the temporary one means nothing to a user."""
    # The name is chosen before the file exists (64 random bits: no other writer's), so that a signal's exception
    # raised anywhere from its creation on, even before os.open's result is bound, finds it to remove.
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # whatever the umask: shared caches and results stay readable to others
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if not isinstance(e, FileExistsError):  # that name was another writer's file, not ours to remove
            with contextlib.suppress(OSError):  # a folder that refused the file may refuse this too
                tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))
