"""Seed aggregation: curves over steps and scalar summaries, mean with min-max and std."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import pandas as pd

ACT_COLUMN = re.compile(r"^act/(?P<layer>[^/]+)/p(?P<q>[0-9.]+)$")
GRAD_COLUMN = re.compile(r"^grad_norm/(?P<param>gamma|beta)/(?P<layer>[^/]+)$")


def curve(metrics: pd.DataFrame, runs: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per step: mean, std, min, max and count of `column` over `runs`; empty when no run has it."""
    if column not in metrics:
        return pd.DataFrame(columns=["mean", "std", "min", "max", "count"])
    rows = metrics[metrics["run"].isin(runs["run"])][["step", column]].dropna()
    return rows.groupby("step")[column].agg(["mean", "std", "min", "max", "count"])


def first_step_reaching(metrics: pd.DataFrame, runs: pd.DataFrame, target: float) -> int | None:
    """First step at which the seed-mean test accuracy reaches `target`.

    Only steps every run reports count: after a run diverges its seed-mates alone would make a
    survivor-biased mean.
    """
    acc = curve(metrics, runs, "test_acc")
    acc = acc[acc["count"] == len(runs)]
    reached = acc.index[acc["mean"] >= target - 1e-12]
    return int(reached[0]) if len(reached) else None


def best_of_mean(metrics: pd.DataFrame, runs: pd.DataFrame) -> float | None:
    """The highest seed-mean test accuracy over steps every run reports (the paper's "best accuracy")."""
    acc = curve(metrics, runs, "test_acc")
    acc = acc[acc["count"] == len(runs)]
    return float(acc["mean"].max()) if len(acc) else None


@dataclass
class Stat:
    mean: float
    std: float  # sample std (ddof=1); NaN for a single value
    n: int  # values that exist; a diverged run has no final accuracy


def stat(values: pd.Series) -> Stat:
    v = pd.to_numeric(values, errors="coerce").dropna()
    return Stat(float(v.mean()) if len(v) else math.nan, float(v.std()) if len(v) > 1 else math.nan, len(v))


@dataclass
class Drift:
    median: float  # max - min over training of the middle percentile, seed mean
    spread: float  # max - min over training of (highest - lowest percentile), seed mean


def drift(metrics: pd.DataFrame, runs: pd.DataFrame, columns: list[str]) -> Drift | None:
    """How far one layer's tracked distribution moved during training (Figure 1(b, c) in numbers).

    Step 0 is left out: the net is untrained, and BN's running statistics still hold their initial
    values, so in inference mode BN does not normalise yet and step 0 would count as BN's own drift.
    """
    rows = metrics[metrics["run"].isin(runs["run"]) & (metrics["step"] > 0)]
    if rows.empty or any(c not in rows for c in columns):
        return None
    per_run = rows.groupby("run")
    low, mid, high = columns[0], columns[len(columns) // 2], columns[-1]
    median = per_run[mid].agg(lambda v: v.max() - v.min())
    spread = (rows[high] - rows[low]).groupby(rows["run"]).agg(lambda v: v.max() - v.min())
    return Drift(float(median.mean()), float(spread.mean()))


def layers(metrics: pd.DataFrame) -> list[str]:
    """Hidden layers with tracked activation inputs, first to last (h2 before h10)."""
    names = {m["layer"] for c in metrics.columns if (m := ACT_COLUMN.match(c))}
    return sorted(names, key=lambda s: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)])


def percentiles(metrics: pd.DataFrame, layer: str) -> list[str]:
    """The percentile columns of one layer, lowest first."""
    matched = [(m, c) for c in metrics.columns if (m := ACT_COLUMN.match(c))]
    found = [(float(m["q"]), c) for m, c in matched if m["layer"] == layer]
    return [c for _, c in sorted(found)]
