"""Each configuration at its own best learning rate: the rule that picks it, shared by the tuned comparison in
every report and by the choice of the default learning rate (scripts/select_defaults.py).

The rule: among the rates at which every seed of the configuration trained (none diverged, none stalled below
thresholds.STALL_ACC), the one with the highest seed-mean final test accuracy; a tie (closer than
thresholds.FLOAT_TIE) goes to the smaller rate. The rule does not look at any other configuration's results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from bnrepro.report.outcomes import trained
from bnrepro.report.slices import LR, configurations, matches
from bnrepro.report.thresholds import FLOAT_TIE


@dataclass
class Tuned:
    values: dict[str, Any]  # the configuration: its values of the keys other than the learning rate
    lr: float  # its best learning rate
    runs: pd.DataFrame  # its runs at that rate
    ranking: list[tuple[float, float]]  # (lr, seed-mean final accuracy) of every rate where all seeds trained


def best_lr(runs: pd.DataFrame) -> tuple[float, list[tuple[float, float]]] | None:
    """(the best learning rate of one configuration's runs, every trained rate's seed-mean final accuracy), or
    None when no rate trained on every seed."""
    ranking = []
    for lr in sorted(runs[LR].astype(float).unique()):
        at = runs[matches(runs, LR, lr)]
        if len(at) and trained(at).all():
            ranking.append((float(lr), float(at["final_test_acc"].astype(float).mean())))
    if not ranking:
        return None
    top = max(acc for _, acc in ranking)
    return min(lr for lr, acc in ranking if acc >= top - FLOAT_TIE), ranking


def tune(runs: pd.DataFrame, keys: list[str]) -> list[Tuned]:
    """One Tuned per configuration of `keys` (learning rate excluded) that trained at some rate."""
    out = []
    for values, group in configurations(runs, [k for k in keys if k != LR]):
        found = best_lr(group)
        if found is not None:
            lr, ranking = found
            out.append(Tuned(values, lr, group[matches(group, LR, lr)], ranking))
    return out
