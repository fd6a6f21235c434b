"""Seed aggregation: curves over steps and scalar summaries, mean with min-max, std and t-intervals.

metrics.csv holds evaluation rows and may hold probe rows (a measurement every few steps) whose
test_acc, test_loss and act/ cells are empty; every reader here takes only the rows where the column
it reads has a value, so probe rows never count as an evaluation.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

import pandas as pd

from bnrepro.report.thresholds import CONFIDENCE, REACH_TOLERANCE

# a tracked unit's percentile: act/ at evaluations (inference mode), train_act/ from the train_acts probe
ACT_COLUMN = re.compile(r"^(?P<family>act|train_act)/(?P<layer>[^/]+)/p(?P<q>[0-9.]+)$")
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


def steps_per_run(metrics: pd.DataFrame, runs: pd.DataFrame, target: float) -> list[int | None]:
    """Each run's first evaluation step whose test accuracy reaches `target` (None: never), in run order."""
    acc = evaluations(metrics)
    out: list[int | None] = []
    for run in runs["run"]:
        mine = acc[acc["run"] == run]
        reached = mine["step"][mine["test_acc"] >= target - REACH_TOLERANCE]
        out.append(int(reached.min()) if len(reached) else None)
    return out


def step_span(steps: list[int | None]) -> str:
    """Per-seed first-reach steps as "8000-18500" (min-max; "never" for a seed that does not reach it)."""
    shown = ["never" if s is None else str(s) for s in sorted(steps, key=lambda s: math.inf if s is None else s)]
    return shown[0] if shown[0] == shown[-1] else f"{shown[0]}-{shown[-1]}"


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


def _t_pdf(x: float, df: float) -> float:
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_c - (df + 1) / 2 * math.log1p(x * x / df))


def _t_cdf_above_zero(x: float, df: float, pieces: int = 512) -> float:
    """P(0 <= T <= x) for Student's t with `df` degrees of freedom (Simpson's rule; error below 1e-7)."""
    h = x / pieces
    total = _t_pdf(0.0, df) + _t_pdf(x, df)
    total += sum((4 if i % 2 else 2) * _t_pdf(i * h, df) for i in range(1, pieces))
    return total * h / 3


@functools.lru_cache(maxsize=4096)
def t_quantile(df: float, confidence: float = CONFIDENCE) -> float:
    """The two-sided `confidence` quantile of Student's t with `df` (any real > 0) degrees of freedom.

    Computed here (bisection on the integrated density) rather than taken from scipy, which the project does
    not depend on; Welch's degrees of freedom are not integers, so a printed table would not do.
    """
    if df <= 0 or not math.isfinite(df):
        raise ValueError(f"degrees of freedom must be positive and finite, not {df}")
    half = confidence / 2
    low, high = 0.0, 1.0
    while _t_cdf_above_zero(high, df) < half:
        high *= 2
    for _ in range(48):
        mid = (low + high) / 2
        low, high = (mid, high) if _t_cdf_above_zero(mid, df) < half else (low, mid)
    return (low + high) / 2


@dataclass(frozen=True)
class Interval:
    """A mean or a difference of means with its two-sided CONFIDENCE interval (Student's / Welch's t)."""

    estimate: float
    low: float
    high: float

    def side(self) -> str:
        """"above" or "below" zero when the whole interval is, else "inside" (it contains zero)."""
        return "above" if self.low > 0 else "below" if self.high < 0 else "inside"

    def points(self, scale: float = 100.0, decimals: int = 2) -> str:
        """"+0.47 [+0.21, +0.73]": estimate and interval times `scale` (percentage points for accuracies)."""
        e, lo, hi = (scale * v for v in (self.estimate, self.low, self.high))
        return f"{e:+.{decimals}f} [{lo:+.{decimals}f}, {hi:+.{decimals}f}]"


def _clean(values: pd.Series | list[float]) -> pd.Series:
    return pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").dropna().astype(float)


def mean_interval(values: pd.Series | list[float]) -> Interval | None:
    """Student's t-interval of the mean; None with fewer than two values (no spread to judge by)."""
    v = _clean(values)
    if len(v) < 2:
        return None
    mean, half = float(v.mean()), t_quantile(len(v) - 1) * float(v.std()) / math.sqrt(len(v))
    return Interval(mean, mean - half, mean + half)


def difference(a: pd.Series | list[float], b: pd.Series | list[float], scale_b: float = 1.0) -> Interval | None:
    """Welch's t-interval of mean(a) - scale_b * mean(b); None unless each side has at least two values.

    `scale_b` compares a with a multiple of b (BN's drift against half the baseline's) on the same footing.
    Two groups without any spread give the difference itself as a zero-width interval.
    """
    a, b = _clean(a), _clean(b)
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = float(a.var()) / len(a), scale_b**2 * float(b.var()) / len(b)
    estimate = float(a.mean()) - scale_b * float(b.mean())
    if va + vb == 0:
        return Interval(estimate, estimate, estimate)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t_quantile(df) * math.sqrt(va + vb)
    return Interval(estimate, estimate - half, estimate + half)


@dataclass
class Drift:
    """How far one layer's tracked distribution moved during training, one value per run (Figure 1(b, c))."""

    median: pd.Series  # per run: max - min over training of the middle percentile
    spread: pd.Series  # per run: max - min over training of (highest - lowest percentile)


def drift(metrics: pd.DataFrame, runs: pd.DataFrame, columns: list[str]) -> Drift | None:
    """Each run's drift of one layer's tracked unit; runs are summarised only afterwards, never their units.

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
    return Drift(median.astype(float), spread.astype(float))


def taps(metrics: pd.DataFrame, family: str = "act") -> list[str]:
    """Tracked layers (taps: h1, h2, h3 of the MLP; conv1, ..., fc1 of the CNN), in the model's order.

    family: the evaluation's `act` columns, or the train_acts probe's `train_act` (the same unit in training mode).
    metrics.csv lists a model's taps input to output, so the order of first appearance among the columns
    is the model's order (names alone do not sort that way: fc1 comes after conv2). Columns that only
    other runs' metrics.csv have are all empty in `metrics` of one slice and left out.
    """
    names = [m["layer"] for c in metrics.columns
             if (m := ACT_COLUMN.match(c)) and m["family"] == family and metrics[c].notna().any()]
    return list(dict.fromkeys(names))


def evaluations(metrics: pd.DataFrame) -> pd.DataFrame:
    """The evaluation rows: those with a test accuracy or a test loss (probe rows leave both empty; a regression
    task's rows have a loss and a NaN accuracy)."""
    if "test_acc" not in metrics:
        return metrics.iloc[:0]
    measured = metrics["test_acc"].notna()
    return metrics[measured | metrics["test_loss"].notna()] if "test_loss" in metrics else metrics[measured]


def has_accuracy(metrics: pd.DataFrame) -> bool:
    """Whether the runs' evaluations measure a test accuracy; a regression task's (Dataset.regression) do not."""
    rows = evaluations(metrics)
    return rows.empty or bool(rows["test_acc"].notna().any())


def percentiles(metrics: pd.DataFrame, layer: str, family: str = "act") -> list[str]:
    """The percentile columns of one layer (of the `act` or `train_act` columns), lowest first."""
    matched = [(m, c) for c in metrics.columns if (m := ACT_COLUMN.match(c))]
    found = [(float(m["q"]), c) for m, c in matched if m["layer"] == layer and m["family"] == family]
    return [c for _, c in sorted(found)]
