"""Per-run summaries of probe columns and the BN vs no-BN verdicts built on them, shared by the ics and landscape
sections (this module registers nothing).

A probe column is measured every few steps; each run is summarised by the median over its probed steps (a few
exploding steps of a network without BN do not decide it; a NaN or inf, a loss that overflowed along the line
search, counts as +inf), and seeds are compared only through those per-run values, never pooled steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from bnrepro.report import claims
from bnrepro.report.slices import BN, matches
from bnrepro.report.stats import Interval, difference
from bnrepro.report.thresholds import CONFIDENCE

SANTURKAR = "Santurkar et al. 2018, How Does Batch Normalization Help Optimization?"
STYLE = {"none": ("tab:blue", "no BN"), "before": ("tab:red", "BN")}


def probe_rows(metrics: pd.DataFrame, runs: pd.DataFrame, column: str) -> pd.DataFrame:
    """(run, step, value) of every probed step of `column` (probes.<probe>.every of each run, the probe named by the
    column's first part), step 0 aside (no update yet); an empty, NaN or inf value as +inf (a loss that overflowed
    along the line search)."""
    every = f"probes.{column.split('/')[0]}.every"
    if column not in metrics or every not in runs:
        return pd.DataFrame(columns=["run", "step", column])
    steps = runs.set_index("run")[every].astype(float)
    rows = metrics[metrics["run"].isin(runs["run"])][["run", "step", column]]
    rows = rows[(rows["step"] > 0) & (rows["step"] % rows["run"].map(steps) == 0)].copy()
    values = pd.to_numeric(rows[column], errors="coerce").to_numpy(dtype=float)
    rows[column] = np.where(np.isfinite(values), values, math.inf)
    return rows


def per_run(metrics: pd.DataFrame, runs: pd.DataFrame, column: str) -> list[float]:
    """Each run's median of `column` over its probed steps (runs that never measured it left out)."""
    rows = probe_rows(metrics, runs, column)
    return rows.groupby("run")[column].median().astype(float).tolist() if len(rows) else []


def bn_groups(runs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The runs without BN and with BN before the nonlinearity, those present."""
    return {bn: g for bn in ("none", "before") if len(g := runs[matches(runs, BN, bn)])}


def log_difference(bn: Sequence[float], base: Sequence[float]) -> Interval | None:
    """The Welch interval of mean log10(BN) - mean log10(no BN) over runs; None unless both sides have two finite
    positive values (an infinite median has no log to average: such a run is reported, not compared)."""
    def logs(values: Sequence[float]) -> list[float]:
        return [math.log10(v) for v in values if 0 < v < math.inf]
    return difference(logs(bn), logs(base))


def parts_claim(where: str, quote: str, claim: str, parts: list[tuple[str, Interval | None]], wanted: str,
                rule: str, unit: str, contrast: str = "BN - no BN") -> claims.Claim:
    """One claim tested in several parts (layers, learning rates), each a Welch interval of `contrast` that should
    lie wholly on the `wanted` side ("above" or "below") of its bar: reproduced if every part does, partly if some
    do, not reproduced if none does and some lie wholly on the other side, else inconclusive."""
    tested = [(name, iv) for name, iv in parts if iv is not None]
    if not tested:
        return claims.Claim(where, quote, claim, "fewer than two seeds with and without BN in every part, so no "
                            "interval", claims.UNTESTABLE, rule, paraphrased=True)
    found = "; ".join(f"{name}: {iv.points(1.0, 3)} {unit}".rstrip() for name, iv in tested)
    found += f" ({CONFIDENCE:.0%} Welch intervals of {contrast})"
    held = [name for name, iv in tested if iv.side() == wanted]
    other = "below" if wanted == "above" else "above"
    against = [name for name, iv in tested if iv.side() == other]
    if len(held) == len(tested) == len(parts):
        verdict = claims.REPRODUCED
    elif held:
        verdict = claims.PARTLY
        found += f". It holds at {', '.join(held)}, not at {', '.join(n for n, _ in parts if n not in held)}"
    else:
        verdict = claims.NOT_REPRODUCED if against else claims.INCONCLUSIVE
    return claims.Claim(where, quote, claim, found, verdict, rule, paraphrased=True)


def band(ax: Axes, metrics: pd.DataFrame, runs: pd.DataFrame, low: str, high: str | None, color: str,
         label: str) -> None:
    """The seed mean of `low` over steps as a line, with a band: min-max over seeds (high None), or from the seed
    mean of `low` to the seed mean of `high` (a range the probe measured, e.g. the loss over the step sizes)."""
    rows = probe_rows(metrics, runs, low)
    if rows.empty:
        return
    if high is not None:
        rows = rows.merge(probe_rows(metrics, runs, high), on=["run", "step"])
    finite = rows.drop(columns="run").replace(math.inf, np.nan)
    stats = finite.groupby("step").agg(["mean", "min", "max"])
    top = stats[(high, "mean")] if high is not None else stats[(low, "max")]
    ax.plot(stats.index, stats[(low, "mean")], color=color, lw=1, label=f"{label} (n={rows['run'].nunique()})")
    ax.fill_between(stats.index, stats[(low, "mean" if high is not None else "min")], top, color=color, alpha=0.25,
                    lw=0)
