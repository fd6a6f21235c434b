"""Caption pieces and run groups that several figure sections share (this module registers nothing)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from bnrepro.report import draw
from bnrepro.report.markdown import cell, interval_cell
from bnrepro.report.outcomes import n_diverged, stalled
from bnrepro.report.slices import BN, LR, describe, fmt_value, matches
from bnrepro.report.stats import mean_interval
from bnrepro.report.thresholds import CONFIDENCE

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


def named_study(ctx: Any, variants: tuple[str, ...], marks: tuple[str, ...]) -> dict[str, pd.DataFrame]:
    """The runs of one study of named configurations (config `variant`, recipe/), by variant in `variants`' order:
    those of the experiments (config `name`) that ran a variant in `marks`, so that the same variant names from other
    studies reported alongside ("no BN", "BN") stay out. Empty when no run is of a marking variant; ValueError (the
    reason a section is skipped) when marking runs come from several experiments."""
    runs = ctx.runs
    if "variant" not in runs or not runs["variant"].isin(marks).any():
        return {}
    if "name" in runs:
        names = set(runs.loc[runs["variant"].isin(marks), "name"])
        if len(names) > 1:  # e.g. the MLP's and the conv net's: one table would mix two networks
            raise ValueError(f"runs of several experiments ({', '.join(sorted(map(str, names)))}): report each on "
                             "its own")
        runs = runs[runs["name"].isin(names)]
    return {v: g for v in variants if len(g := runs[runs["variant"] == v])}


def variant_row(group: pd.DataFrame) -> dict[str, Any]:
    """A named configuration's table cells: runs, diverged and stalled ones, final test accuracy's seed mean and
    its interval (percent)."""
    finals = group["final_test_acc"].dropna().astype(float)
    return {"n": len(group), "diverged": n_diverged(group), "stalled": int(stalled(group).sum()),
            "final mean (%)": cell(float(finals.mean()) if len(finals) else None),
            f"final {CONFIDENCE:.0%} CI (%)": interval_cell(mean_interval(finals))}
