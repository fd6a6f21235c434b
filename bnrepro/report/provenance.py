"""How the runs were made: the bnrepro-train commands, package versions and git commits."""

from __future__ import annotations

import shlex
from collections import Counter
from pathlib import Path

import pandas as pd

from bnrepro.report.load import MULTIRUN, OVERRIDES, read_yaml

HYDRA_YAML = ".hydra/hydra.yaml"


def _command(task: list[str], hydra: list[str], multirun: bool) -> str:
    # Hydra records the mode (-m or not) among the overrides, and a sweep's job keeps its sweep's folder,
    # which a rerun of that job alone would not use; the rest (launcher, output folder) is the user's
    unused = ("hydra.mode=", "hydra.run." if multirun else "hydra.sweep.")
    args = [*task, *(o for o in hydra if not o.startswith(unused))]
    return shlex.join(["bnrepro-train", *(["-m"] if multirun else []), *args])


def sweep_command(sweep: Path) -> list[str]:
    """The command that started a sweep, and the sweep axes its experiment config added."""
    hydra = (read_yaml(sweep / MULTIRUN) or {}).get("hydra", {})
    overrides = hydra.get("overrides", {})
    lines = [_command(list(overrides.get("task") or []), list(overrides.get("hydra") or []), True)]
    params = (hydra.get("sweeper") or {}).get("params") or {}
    if params:
        lines.append("#   sweep axes from the config: " + " ".join(f"{k}={v}" for k, v in params.items()))
    return lines


def run_command(run_dir: Path) -> str:
    hydra = (read_yaml(run_dir / HYDRA_YAML) or {}).get("hydra", {})
    overrides = hydra.get("overrides") or {}
    task = overrides.get("task") if overrides else read_yaml(run_dir / OVERRIDES)
    return _command(list(task or []), list(overrides.get("hydra") or []), False)


def _shown(path: Path) -> Path:
    """A folder as the user would type it: relative to the working directory when it lies under it."""
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


def commands(run_dirs: list[Path], sweeps: list[Path]) -> list[str]:
    """One command per sweep, then one per distinct command of the runs that no sweep folder holds."""
    lines = []
    for sweep in sweeps:
        lines += [f"# {_shown(sweep)}", *sweep_command(sweep)]
    by_command: dict[str, list[Path]] = {}
    for run_dir in run_dirs:
        if not any(run_dir.is_relative_to(s) for s in sweeps):
            by_command.setdefault(run_command(run_dir), []).append(run_dir)
    for cmd, dirs in by_command.items():
        more = f" and {len(dirs) - 1} more run(s)" if len(dirs) > 1 else ""
        lines += [f"# {_shown(dirs[0])}{more}", cmd]
    return lines


def report_command(paths: list[Path], out: Path, base_lr: float | None, figure_seed: int = 0) -> str:
    return shlex.join(["bnrepro-report", *map(str, paths), "--out", str(out),
                       *(["--base-lr", f"{base_lr:g}"] if base_lr is not None else []),
                       *(["--seed", str(figure_seed)] if figure_seed != 0 else [])])


def _counts(values: pd.Series, missing: str) -> str:
    counts = Counter(missing if pd.isna(v) else str(v) for v in values)
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{v} ({n} runs)" for v, n in counts.most_common())


def versions(runs: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in runs.columns if c.startswith("versions.")]
    rows = [(c.removeprefix("versions."), _counts(runs[c], "not recorded")) for c in cols]
    return pd.DataFrame(rows, columns=["package", "version"])


def commits(runs: pd.DataFrame) -> str:
    if "git_commit" not in runs:
        return "not recorded"
    return _counts(runs["git_commit"], "not recorded (not a git checkout)")
