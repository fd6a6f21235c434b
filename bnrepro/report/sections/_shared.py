"""Caption pieces and run groups that several figure sections share (this module registers nothing)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from bnrepro.report import draw
from bnrepro.report.slices import BN, LR, describe, fmt_value, matches

BAND = "Lines: mean over seeds; band: min-max over seeds; n: number of runs (seeds)."
LABELS = {"none": "no BN", "before": "BN"}


def pinned_text(pinned: dict[str, Any]) -> str:
    """The caption's account of the settings a figure holds fixed."""
    return f" Runs with {describe(pinned)}." if pinned else ""


def fig1_groups(runs: pd.DataFrame) -> list[draw.Group]:
    """Figure 1's two curves: the runs without BN and with BN before the nonlinearity, when present."""
    return [(bn, LABELS[bn], g) for bn in ("none", "before") if len(g := runs[matches(runs, BN, bn)])]


def absent(groups: list[draw.Group]) -> list[str]:
    have = {bn for bn, _, _ in groups}
    return [f"no runs with bn={bn} in this slice" for bn in ("none", "before") if bn not in have]


def shared_lr(runs: pd.DataFrame) -> str:
    """The comparison label of a slice whose runs all share one learning rate: "shared lr 0.5"."""
    lrs = sorted({fmt_value(v) for v in runs[LR]}) if LR in runs else []
    return f"shared lr {lrs[0]}" if len(lrs) == 1 else "shared settings"
