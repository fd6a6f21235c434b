"""Accuracy per configuration (mean, std and t-interval over seeds), and whether BN beats its no-BN twin in
each beyond the seeds' spread."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import pandas as pd

from bnrepro.report import claims
from bnrepro.report.markdown import Section, cell, interval_cell
from bnrepro.report.outcomes import n_diverged, stalled
from bnrepro.report.sections import Context, section
from bnrepro.report.slices import BN, configurations, fixed_by, fmt_value, same, short_name
from bnrepro.report.stats import Interval, difference, mean_interval, stat
from bnrepro.report.thresholds import CONFIDENCE, STALL_ACC

Groups = list[tuple[dict[str, Any], pd.DataFrame]]


def _finals(runs: pd.DataFrame) -> list[float]:
    return runs["final_test_acc"].dropna().astype(float).tolist()


def bn_pairs(groups: Groups, varying: list[str], unnamed: Collection[str] = ()) -> list[tuple[str, Interval | None]]:
    """(a configuration with BN, the interval of its final accuracy minus its no-BN twin's) for each that has one;
    a configuration is named by its varying keys, `unnamed` (keys that its recipe's name decides) aside."""
    if BN not in varying:
        return []
    pairs = []
    for values, group in groups:
        twin = next((g for v, g in groups if v[BN] == "none" and values[BN] != "none"
                     and all(same(v[k], values[k]) for k in varying if k != BN)), None)
        if twin is None:
            continue
        # every pair is BN against no BN: name the BN mode only when it is not the paper's "before"
        name = ", ".join(f"{short_name(k, varying)}={fmt_value(v)}" for k, v in values.items()
                         if (k != BN or v != "before") and k not in unnamed) or "bn=before"
        if unnamed and "variant" in group:  # named configurations: two pairs may differ only in what names them
            name = f"{_variant(group)} vs {_variant(twin)}" + (f" ({name})" if name != "bn=before" else "")
        pairs.append((name, difference(_finals(group), _finals(twin))))
    return pairs


def _variant(group: pd.DataFrame) -> str:
    return " / ".join(dict.fromkeys(map(str, group["variant"])))


@section(order=60)
def accuracy_table(ctx: Context) -> Section:
    groups = configurations(ctx.runs, ctx.varying)
    rows = []
    ci = f"{CONFIDENCE:.0%} CI"
    for values, group in groups:
        final, best = stat(group["final_test_acc"]), stat(group["best_test_acc"])
        names = {short_name(k, ctx.varying): fmt_value(v) for k, v in values.items()}
        if ctx.named:  # runs that carry their configuration's name (recipe/) show it first
            names = {"configuration": _variant(group), **names}
        rows.append({**(names or {"configuration": "all runs"}), "n": len(group),
                     "diverged": n_diverged(group), "stalled": int(stalled(group).sum()),
                     "final mean (%)": cell(final.mean),
                     "final std": cell(final.std), f"final {ci} (%)": interval_cell(mean_interval(_finals(group))),
                     "best mean (%)": cell(best.mean), "best std": cell(best.std),
                     f"best {ci} (%)": interval_cell(mean_interval(group["best_test_acc"]))})
    caption = ("Test accuracy per configuration (the config values that vary across the run set, seed "
               "aside): mean, sample std and the "
               f"{ci} (Student's t over seeds) in percent; stalled: completed, but never above "
               f"{STALL_ACC:.0%} test accuracy. A diverged run has no final accuracy, so the final "
               "columns cover the runs that did not diverge; best is each run's highest evaluated accuracy.")
    unnamed = fixed_by(ctx.runs, ctx.varying) - {BN} if ctx.named else set()
    return Section("Accuracy per configuration", caption,
                   [claims.bn_beats_counterparts(bn_pairs(groups, ctx.varying, unnamed))], table=pd.DataFrame(rows))
