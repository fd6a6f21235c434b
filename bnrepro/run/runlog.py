"""A run's own folder: metrics.csv and summary.json, never half-written.

Reports read these files, never W&B, so they must be complete and whole: summary.json, and
metrics.csv when it is first written or cut back, go to a temporary file in the same folder that
is renamed over the old one; a new metrics row is appended with a single write() of whole lines.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bnrepro.atomic import atomic_write_text
from bnrepro.errors import CorruptFile

METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
_PACKAGES = ("bnrepro", "torch", "torchvision", "hydra-core", "omegaconf", "wandb", "numpy")


@dataclass
class _Written:
    """What this process last wrote to one metrics.csv."""

    columns: list[str]
    count: int  # rows in the file
    last: dict[str, float]  # the last of them, the very object: the caller's list still ends with it
    synced: bool  # fsynced since the last append


_written: dict[Path, _Written] = {}


def write_metrics(run_dir: Path, rows: list[dict[str, float]]) -> None:
    """Make metrics.csv hold `rows`: one row per evaluation point, `step` first; the columns are the first
    row's keys.

    Called with all rows at every evaluation point. When the list only grew since this process last wrote
    the file, the new rows are appended (one write(), so the file always ends with a whole row; no fsync,
    see sync_metrics); otherwise (a first write, or rows cut back to a checkpoint's) it is rewritten atomically.
    Rewriting and fsyncing the whole file at every evaluation cost as much as the rest of the tracking.
    """
    path = run_dir / METRICS_FILE
    done = _written.get(path)
    if done is not None and len(rows) >= done.count and rows[done.count - 1] is done.last:
        if len(rows) > done.count:
            _append(path, _csv(done.columns, rows[done.count:], header=False))
            done.count, done.last, done.synced = len(rows), rows[-1], False
        return
    columns = list(rows[0])
    atomic_write_text(path, _csv(columns, rows, header=True))
    _written[path] = _Written(columns, len(rows), rows[-1], synced=True)


def sync_metrics(run_dir: Path) -> None:
    """fsync the rows this process appended to run_dir's metrics.csv, and forget them: the run is done with it."""
    done = _written.pop(run_dir / METRICS_FILE, None)
    if done is not None and not done.synced:
        fd = os.open(run_dir / METRICS_FILE, os.O_WRONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _csv(columns: list[str], rows: list[dict[str, float]], header: bool) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _append(path: Path, text: str) -> None:
    data = text.encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        end = os.lseek(fd, 0, os.SEEK_END)
        try:
            while data:  # a regular file takes it all in one call; a short write (disk full) goes on or raises
                data = data[os.write(fd, data):]
        except OSError as e:
            os.ftruncate(fd, end)  # the file keeps ending with a whole row
            raise OSError(e.errno, e.strerror, str(path)) from e
    finally:
        os.close(fd)


def _json_safe(value: Any) -> Any:
    # JSON has no NaN/inf; a diverged run's numbers become null rather than invalid JSON
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """Written last: metrics.csv is synced first, so a summary never claims rows a power cut could lose
    (a finished run's checkpoint, which holds them too, is deleted after its summary)."""
    sync_metrics(run_dir)
    atomic_write_text(run_dir / SUMMARY_FILE, json.dumps(_json_safe(summary), indent=2) + "\n")


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """The folder's summary; None without one (or for `null`); CorruptFile when it is not a JSON object."""
    path = run_dir / SUMMARY_FILE
    if not path.exists():
        return None
    try:
        summary = json.loads(path.read_bytes())
    except ValueError as e:  # not JSON, or not UTF-8
        reason = str(e)
    else:
        if summary is None or isinstance(summary, dict):
            return summary
        reason = f"a JSON {type(summary).__name__}, not an object"
    raise CorruptFile(f"{path} is not a run summary ({reason}): delete it, and this command continues the run from "
                      f"its checkpoint.pt (or starts it over without one)")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit() -> str | None:
    """The commit of the checkout this package runs from, '+dirty' when it has local changes."""
    repo = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                              timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def peak_memory_mib() -> float | None:
    """This process's peak resident memory. VmHWM, not getrusage: Linux carries a forked parent's
    peak over into the child's ru_maxrss, so a run started by a big process would report that one's."""
    status = Path("/proc/self/status")
    if not status.exists():
        return None
    for line in status.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return None
