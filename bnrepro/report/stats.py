"""Seed aggregation: curves over steps and scalar summaries, mean with min-max and std.

metrics.csv holds evaluation rows and may hold probe rows (a measurement every few steps) whose
test_acc, test_loss and act/ cells are empty; every reader here takes only the rows where the column
it reads has a value, so probe rows never count as an evaluation.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import pandas as pd

from bnrepro.report.thresholds import REACH_TOLERANCE

ACT_COLUMN = re.compile(r"^act/(?P<layer>[^/]+)/p(?P<q>[0-9.]+)$")
GRAD_COLUMN = re.compile(r"^grad_norm/(?P<param>gamma|beta)/(?P<layer>[^/]+)$")


def curve(metrics: pd.DataFrame, runs: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per step: mean, std, min, max and count of `column` over `runs`; empty when no run has it."""
    if column not in metrics:
        return pd.DataFrame(columns=["mean", "std", "min", "max", "count"])
    rows = metrics[metrics["run"].isin(runs["run"])][["step", column]].dropna()  # rows that measure `column`
    return rows.groupby("step")[column].agg(["mean", "std", "min", "max", "count"])


def first_step_reaching(metrics: pd.DataFrame, runs: pd.DataFrame, target: float) -> int | None:
    """First step at which the seed-mean test accuracy reaches `target`.

    Only steps every run reports count: after a run diverges its seed-mates alone would make a
    survivor-biased mean.
    """
    acc = curve(metrics, runs, "test_acc")
    acc = acc[acc["count"] == len(runs)]
    reached = acc.index[acc["mean"] >= target - REACH_TOLERANCE]
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
    if any(c not in rows for c in columns):
        return None
    rows = rows.dropna(subset=columns, how="all")  # probe rows do not measure activations
    if rows.empty:
        return None
    per_run = rows.groupby("run")
    low, mid, high = columns[0], columns[len(columns) // 2], columns[-1]
    median = per_run[mid].agg(lambda v: v.max() - v.min())
    spread = (rows[high] - rows[low]).groupby(rows["run"]).agg(lambda v: v.max() - v.min())
    return Drift(float(median.mean()), float(spread.mean()))


def taps(metrics: pd.DataFrame) -> list[str]:
    """Tracked layers (taps: h1, h2, h3 of the MLP; conv1, ..., fc1 of the CNN), in the model's order.

    metrics.csv lists a model's taps input to output, so the order of first appearance among the columns
    is the model's order (names alone do not sort that way: fc1 comes after conv2). Columns that only
    other runs' metrics.csv have are all empty in `metrics` of one slice and left out.
    """
    names = [m["layer"] for c in metrics.columns if (m := ACT_COLUMN.match(c)) and metrics[c].notna().any()]
    return list(dict.fromkeys(names))


def evaluations(metrics: pd.DataFrame) -> pd.DataFrame:
    """The evaluation rows: those with a test accuracy (probe rows leave it empty)."""
    return metrics[metrics["test_acc"].notna()] if "test_acc" in metrics else metrics.iloc[:0]


def percentiles(metrics: pd.DataFrame, layer: str) -> list[str]:
    """The percentile columns of one layer, lowest first."""
    matched = [(m, c) for c in metrics.columns if (m := ACT_COLUMN.match(c))]
    found = [(float(m["q"]), c) for m, c in matched if m["layer"] == layer]
    return [c for _, c in sorted(found)]
