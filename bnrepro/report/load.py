"""Run folders -> two tables: one row per run (config + summary), one row per evaluation point.

A run is any folder holding summary.json; a folder with a Hydra config or metrics but no
summary.json is a run that never finished writing, reported as incomplete rather than guessed at.
Runs that failed, were interrupted or are still running (summary.json is written at the start)
are loaded and counted, but only finished ones (completed or diverged) enter figures and tables.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

SUMMARY = "summary.json"
METRICS = "metrics.csv"
CONFIG = ".hydra/config.yaml"
OVERRIDES = ".hydra/overrides.yaml"
MULTIRUN = "multirun.yaml"
FINISHED = ("completed", "diverged")


@dataclass
class RunSet:
    runs: pd.DataFrame  # one row per run: `run` (its folder), dotted config keys, summary keys
    config_keys: list[str]  # the columns of `runs` that come from .hydra/config.yaml
    metrics: pd.DataFrame  # one row per (run, evaluation step); columns as in metrics.csv plus `run`
    sweeps: list[Path] = field(default_factory=list)  # folders holding multirun.yaml
    problems: list[str] = field(default_factory=list)  # one line per run that could not be used

    @property
    def finished(self) -> pd.DataFrame:
        return self.runs[self.runs["status"].isin(FINISHED)] if "status" in self.runs else self.runs.iloc[:0]


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'model': {'bn': 'none'}} -> {'model.bn': 'none'}; lists become tuples so they can be grouped on."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = tuple(value) if isinstance(value, list) else value
    return flat


def read_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.exists() else None


def _walk(path: Path, runs: list[Path], incomplete: list[Path], sweeps: list[Path]) -> None:
    if (path / MULTIRUN).exists():
        sweeps.append(path)
    if (path / SUMMARY).exists():
        runs.append(path)
    elif (path / CONFIG).exists() or (path / METRICS).exists():
        incomplete.append(path)
    for child in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        _walk(child, runs, incomplete, sweeps)


def find_runs(paths: list[Path]) -> tuple[list[Path], list[Path], list[Path]]:
    """(run folders, incomplete run folders, sweep folders) under `paths`, each once, in path order."""
    runs: list[Path] = []
    incomplete: list[Path] = []
    sweeps: list[Path] = []
    for path in paths:
        if not path.is_dir():
            raise FileNotFoundError(f"not a folder: {path}")
        _walk(path.resolve(), runs, incomplete, sweeps)
    # overlapping arguments (a sweep and one of its jobs) would list a run twice
    return list(dict.fromkeys(runs)), list(dict.fromkeys(incomplete)), list(dict.fromkeys(sweeps))


def _mapping(value: Any, path: Path) -> dict[str, Any]:
    """A file's content that must be a mapping (a run's config or summary), else ValueError naming the file."""
    if not isinstance(value, dict):
        raise ValueError(f"{path.name} holds {type(value).__name__}, not a mapping")
    return value


def _load_run(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any], pd.DataFrame]:
    config = flatten(_mapping(read_yaml(run_dir / CONFIG) or {}, run_dir / CONFIG))
    summary = flatten(_mapping(json.loads((run_dir / SUMMARY).read_text()), run_dir / SUMMARY))
    # the summary's `device` is what the config's `device: auto` became; keep both
    summary = {f"summary.{k}" if k in config else k: v for k, v in summary.items()}
    row = {"run": str(run_dir), **config, **summary}
    row["overrides"] = tuple(read_yaml(run_dir / OVERRIDES) or ())
    metrics = pd.read_csv(run_dir / METRICS) if (run_dir / METRICS).exists() else pd.DataFrame()
    return config, row, metrics.assign(run=str(run_dir))


def load_runs(paths: list[Path]) -> RunSet:
    run_dirs, incomplete, sweeps = find_runs(paths)
    problems = [f"incomplete run (no {SUMMARY}): {p}" for p in incomplete]
    rows, curves, config_keys = [], [], {}
    for run_dir in run_dirs:
        try:
            config, row, metrics = _load_run(run_dir)
        # one unreadable run, whatever the shape of the damage, must not sink the report: it is listed instead
        except (OSError, ValueError, TypeError, KeyError, UnicodeDecodeError, yaml.YAMLError,
                pd.errors.ParserError) as err:
            problems.append(f"unreadable run: {run_dir}: {err}")
            continue
        if metrics.empty:
            problems.append(f"run without {METRICS} (no curves): {run_dir}")
        else:
            curves.append(metrics)
        rows.append(row)
        config_keys.update(dict.fromkeys(config))
        if row.get("status") not in FINISHED:
            why = f": {row['error']}" if row.get("error") else ""
            problems.append(f"{row.get('status')} run, left out of figures and tables: {run_dir}{why}")
    metrics = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame({"step": [], "run": []})
    return RunSet(pd.DataFrame(rows, columns=["run"] if not rows else None), list(config_keys), metrics,
                  sweeps, problems)
