"""A run's own folder: metrics.csv and summary.json, written atomically.

Reports read these files, never W&B, so they must be complete and never half-written:
every write goes to a temporary file in the same folder and is renamed over the old one.
"""

from __future__ import annotations

import csv
import io
import json
import math
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from bnrepro.atomic import atomic_write_text

METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
_PACKAGES = ("bnrepro", "torch", "torchvision", "hydra-core", "omegaconf", "wandb", "numpy")


def write_metrics(run_dir: Path, rows: list[dict[str, float]]) -> None:
    """One row per evaluation point, `step` first; the columns are the first row's keys."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(run_dir / METRICS_FILE, buf.getvalue())


def _json_safe(value: Any) -> Any:
    # JSON has no NaN/inf; a diverged run's numbers become null rather than invalid JSON
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    atomic_write_text(run_dir / SUMMARY_FILE, json.dumps(_json_safe(summary), indent=2) + "\n")


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / SUMMARY_FILE
    return json.loads(path.read_text()) if path.exists() else None


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
